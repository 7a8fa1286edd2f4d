"""Variance components far from the simulator's truth are flagged next to the figure,
with the likely cause."""

import numpy as np
import pandas as pd
import yaml

from harness.config import parse_config
from harness.recovery import RELATIVE_BIAS, recovery, variance_warnings
from harness.report import render_report
from harness.runner import run_sweep


def _table(estimator, ratios, *, family="binomial", component="user", truth=5.0, **columns):
    """Result rows of one scenario: one fit per data set with estimate / truth ``ratios``."""
    rows = pd.DataFrame(
        {
            "status": "ok",
            "scenario": "clicks[n_users=500]",
            "regime": "clicks",
            "estimator": estimator,
            "estimator_name": "mixed_glm" if family != "gaussian" else "mixed_lm",
            "family": family,
            "repeat": np.arange(len(ratios)),
            "n_train": 11_000,
            f"sd_true.{component}": truth,
            f"sd_est.{component}": truth * np.asarray(ratios),
        }
    )
    return rows.assign(**columns)


def test_a_biased_laplace_fit_is_flagged_with_its_cause():
    laplace = _table("laplace", [1.45, 1.52, 1.60, 1.48, 1.55], **{"sim.n_users": 500})
    quadrature = _table(
        "quadrature", [1.05, 0.98, 1.08, 1.02, 1.00], **{"est.n_agq": 10, "sim.n_users": 500}
    )
    found = {entry.estimator: entry for entry in recovery(pd.concat([laplace, quadrature]))}
    assert found["laplace"].off and not found["quadrature"].off
    assert found["laplace"].ratio == np.mean([1.45, 1.52, 1.60, 1.48, 1.55])
    assert found["laplace"].low > 1 + RELATIVE_BIAS
    (sentence,) = variance_warnings(pd.concat([laplace, quadrature]))
    assert sentence.startswith("Warning: laplace overestimates the user sd in clicks")
    assert "clicks[n_users=500] 1.52 (95% " in sentence and "true sd 5" in sentence
    assert "the Laplace approximation (n_agq = 1) on binary outcomes" in sentence
    assert "about 22 rows per user" in sentence


def test_no_flag_within_sampling_error_or_within_the_threshold():
    # Off by 30% on average, but two data sets disagree too much to say so.
    noisy = _table("noisy", [0.9, 1.7])
    # Off by 10% with a tight interval: real, but within what a correct fit shows.
    small = _table("small", [1.10, 1.11, 1.09, 1.10])
    assert variance_warnings(pd.concat([noisy, small])) == []


def test_a_misspecified_gaussian_model_names_what_it_leaves_out():
    table = _table(
        "mixed_lm",
        [1.44, 1.46, 1.45],
        family="gaussian",
        component="noise",
        truth=1.0,
        **{"sim.nonlinear.strength": 1.0, "sim.sd.user_slope": 0.0, "est.formula": "y ~ x1"},
    )
    (sentence,) = variance_warnings(table)
    assert "nonlinear effects of the features" in sentence
    assert "slopes" not in sentence and "Laplace" not in sentence


# The seed's click data with 500 users (user sd 5, about 22 impressions per user), six
# data sets fitted by the Laplace approximation.
CONFIG = {
    "name": "laplace-bias",
    "seed": 5,
    "repeats": 6,
    "scenarios": [{"simulator": "ctr_experiment", "label": "clicks", "params": {"n_users": 500}}],
    "splits": [{"scheme": "fresh_draw", "draws": 1}],
    "estimators": [{"name": "mixed_glm", "label": "laplace"}],
    "metrics": ["weighted_mspe", "effect_corr"],
}


def test_the_report_warns_next_to_the_variance_figure(tmp_path):
    run_sweep(parse_config(yaml.safe_dump(CONFIG)), tmp_path, progress=False)
    html = render_report(tmp_path).read_text()
    caption = html.split("<figcaption>Variance components:")[1].split("</figcaption>")[0]
    assert "Warning: laplace overestimates the user sd in clicks" in caption
    assert "Likely cause: the Laplace approximation (n_agq = 1)" in caption
