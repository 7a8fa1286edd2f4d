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


def test_a_family_is_adjusted_by_holm_with_wider_intervals():
    from harness.compare import Interval
    from harness.findings import Comparison, adjust

    intervals = [Interval(2.0, 0, 0, 10, se=0.5, dof=9), Interval(1.0, 0, 0, 10, se=0.5, dof=9)]
    intervals = [interval.at(0.95) for interval in intervals]
    family = adjust([Comparison("a", "b", "rmse", interval) for interval in intervals])
    p = [2 * stats.t.sf(4.0, 9), 2 * stats.t.sf(2.0, 9)]
    # The stronger comparison is step 1 of 2 (level 1 - 0.05/2), the weaker step 2 (95%).
    assert family[0].adjusted_p == pytest.approx(2 * p[0])
    assert family[1].adjusted_p == pytest.approx(max(2 * p[0], p[1]))
    half = stats.t.ppf(1 - 0.05 / 4, 9) * 0.5
    assert (family[0].low, family[0].high) == pytest.approx((2.0 - half, 2.0 + half))
    assert family[0].high - family[0].low > intervals[0].high - intervals[0].low
    assert (family[1].low, family[1].high) == pytest.approx((intervals[1].low, intervals[1].high))
    assert family[0].confidence == pytest.approx(0.975) and "97.5% CI" in family[0].interval_text()
