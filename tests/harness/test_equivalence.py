"""Verdicts against a practical margin, and Holm's adjustment of a family."""

import numpy as np
import pytest
from scipy import stats

from harness.config import ConfigError, parse_config
from harness.equivalence import holm, verdict


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.02, 0.20, "equivalent"),  # excludes zero, but inside a 0.5% margin
        (-0.3, 0.4, "equivalent"),
        (0.6, 2.0, "better"),
        (-2.0, -0.6, "worse"),
        (0.1, 0.9, "small better"),
        (-0.9, -0.1, "small worse"),
        (-0.2, 1.5, "inconclusive"),
        (float("nan"), float("nan"), "inconclusive"),
    ],
)
def test_verdict_reads_an_interval_against_the_margin(low, high, expected):
    assert verdict(low, high, margin=0.5) == expected


def test_holm_matches_a_hand_computation():
    p = [0.01, 0.04, 0.03, 0.005, float("nan")]
    adjusted, divisor = holm(p)
    # Sorted: 0.005 (x4), 0.01 (x3), 0.03 (x2), 0.04 (x1), each at least the previous.
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert np.isnan(adjusted[4])
    assert divisor.tolist() == [3, 1, 2, 4, 1]
    # The adjusted interval at 1 - 0.05 / divisor is wider than the 95% one.
    t95, t_adjusted = stats.t.ppf(0.975, 9), stats.t.ppf(1 - 0.05 / (2 * divisor[3]), 9)
    assert t_adjusted > t95


TEXT = """
name: margins
scenarios: [{simulator: online_services}]
splits: [{scheme: random, folds: 2}]
estimators: [pooled_ols]
metrics: [rmse, log_loss, brier]
"""


def test_margins_and_primary_metrics_come_from_the_config():
    default = parse_config(TEXT)
    assert default.margin("rmse") == 0.005 and default.margin("rmse@seen") == 0.005
    assert default.primary_metric("binomial") == "log_loss"
    config = parse_config(
        TEXT + "margin: {default: 0.01, log_loss: 0.02}\nprimary: {binomial: brier}\n"
    )
    assert config.margin("rmse") == 0.01 and config.margin("log_loss@unseen") == 0.02
    assert config.primary_metric("binomial") == "brier"
    assert config.primary_metric("gaussian") == "rmse"
    with pytest.raises(ConfigError, match=r"margin: expected a relative margin"):
        parse_config(TEXT + "margin: 5\n")
    with pytest.raises(ConfigError, match=r"margin.mse: not one of the config's metrics"):
        parse_config(TEXT + "margin: {mse: 0.01}\n")
    with pytest.raises(ConfigError, match=r"primary.gaussian: 'log_loss' is not one"):
        parse_config(TEXT + "primary: {gaussian: log_loss}\n")
    with pytest.raises(ConfigError, match=r"primary.binary: unknown outcome family"):
        parse_config(TEXT + "primary: {binary: brier}\n")
