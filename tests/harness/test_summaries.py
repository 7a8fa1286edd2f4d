"""Whole-data model summaries (``summaries: true``): the seed's archer experiment."""

import json

import numpy as np
import pytest
import yaml

from estimators import MixedLM
from harness.config import parse_config
from harness.report import render_report
from harness.runner import run_sweep
from harness.summaries import _confint
from simulators import simulate

CONFIG = {
    "name": "archers",
    "seed": 1066,
    "summaries": True,
    "scenarios": [{"simulator": "archers", "params": {"experiment": 2}}],
    "splits": [{"scheme": "seen_units", "folds": 2, "by": "archer"}],
    "estimators": ["pooled_ols", "fixed_effects", "mixed_lm"],
    "baseline": "fixed_effects",
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    directory = tmp_path_factory.mktemp("archers")
    run_sweep(parse_config(yaml.safe_dump(CONFIG)), directory, progress=False)
    return directory


def _fit(summary, name):
    return next(fit for fit in summary["fits"] if fit["estimator"] == name)


def test_the_mixed_model_recovers_the_bow_effect_and_the_spreads(sweep):
    (summary,) = json.loads((sweep / "summaries.json").read_text())
    assert summary["rows"] == 1000 and summary["truth"]["sd"] == {"archer": 20.0, "noise": 5.0}
    mixed = _fit(summary, "mixed_lm")
    bow = next(c for c in mixed["coefficients"] if c["term"] == "southwood")
    assert bow["low"] < -10 < bow["high"] and bow["high"] < 0  # significant, covers the truth
    archer, residual = mixed["variance_components"]
    assert (archer["group"], archer["kind"], residual["group"]) == ("archer", "sd", "Residual")
    assert archer["low"] < archer["value"] < archer["high"]  # profile interval
    assert archer["low"] < 20 < archer["high"] and residual["low"] < 5 < residual["high"]


def test_rankings_by_fixed_effects_and_conditional_modes_agree_in_a_balanced_design(sweep):
    (summary,) = json.loads((sweep / "summaries.json").read_text())
    (pair,) = summary["rank_agreement"]
    assert {pair["a"], pair["b"]} == {"fixed_effects", "mixed_lm"}
    assert pair["units"] == 50 and pair["spearman"] == pytest.approx(1.0)
    assert "effects" not in _fit(summary, "pooled_ols")


def test_the_report_shows_the_fits(sweep):
    html = render_report(sweep).read_text()
    assert "<h2>Model fits</h2>" in html
    assert "rank the 50 units with Spearman correlation 1.00" in html
    assert "sd archer" in html and "southwood" in html


def test_the_bow_effect_is_clear_only_once_archers_are_accounted_for(sweep):
    (summary,) = json.loads((sweep / "summaries.json").read_text())
    bow = {
        name: next(c for c in _fit(summary, name)["coefficients"] if c["term"] == "southwood")
        for name in ("pooled_ols", "fixed_effects", "mixed_lm")
    }
    # Balanced design: one estimate; the archer models' intervals are much narrower.
    assert bow["pooled_ols"]["estimate"] == pytest.approx(bow["mixed_lm"]["estimate"])
    width = {name: entry["high"] - entry["low"] for name, entry in bow.items()}
    assert width["fixed_effects"] < width["pooled_ols"] / 3
    assert width["fixed_effects"] == pytest.approx(width["mixed_lm"], rel=0.05)


def test_fits_by_a_scalable_solver_get_wald_intervals():
    frame = simulate("online_services", seed=3, n_users=200, n_items=20).frame
    model = MixedLM("y ~ x1 + (1 | user) + (1 | item)", solver="iterative").fit(frame)
    intervals = _confint(model)  # a profile would refuse this fit
    assert np.all(np.isfinite(intervals.loc[model.coef_.index].to_numpy()))
    assert intervals.loc[".sig01"].isna().all()
