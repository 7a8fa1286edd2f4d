"""Published results in a config: parsed and checked, shown beside this run's, and each
published conclusion read against the results."""

import copy

import numpy as np
import pandas as pd
import pytest
import yaml

from harness.config import ConfigError, parse_config
from harness.report import render_report
from harness.reproduction import conclusions, metric_tables
from harness.runner import run_sweep

CONFIG = {
    "name": "seed-like",
    "seed": 3,
    "repeats": 2,
    "margin": {"weighted_mspe": 0.01},
    "primary": {"binomial": "weighted_mspe"},
    "scenarios": [
        {"simulator": "ctr_experiment", "label": "clicks", "sweep": {"n_users": [100, 200]}}
    ],
    "splits": [{"scheme": "fresh_draw", "draws": 2}],
    "estimators": [
        {"name": "mixed_glm", "params": {"n_agq": 10}},
        "fixed_effects",
        {"name": "lasso_onehot", "label": "lasso_seed", "params": {"cv_unit": "cell"}},
        {"name": "lasso_onehot", "label": "lasso_rows", "params": {"cv_unit": "row"}},
    ],
    "metrics": ["weighted_mspe", "effect_corr"],
    "baseline": "mixed_glm",
    "reference": {
        "source": "A. Author (2016), A post, https://example.org/post",
        "note": "Read off a figure.",
        "metric": "weighted_mspe",
        "by": "n_users",
        "methods": {
            "GLMM": {"estimators": ["mixed_glm"], "values": {100: 0.066, 200: 0.054, 300: 0.057}},
            "LASSO": {"estimators": ["lasso_seed", "lasso_rows"], "values": {100: 0.11}},
        },
        "conclusions": [
            {
                "text": "LASSO predicts worse than the GLMM",
                "claim": "worse",
                "estimators": ["lasso_seed"],
                "than": "mixed_glm",
                "contrast": ["lasso_rows"],
            },
            {
                "text": "GLM and GLMM are level from 200 users on",
                "claim": "equivalent",
                "estimators": ["fixed_effects"],
                "than": "mixed_glm",
                "from": 200,
            },
            {
                "text": "The GLMM fits faster than the GLM",
                "claim": "faster",
                "estimators": ["mixed_glm"],
                "than": "fixed_effects",
                "why": "R's glm computes standard errors.",
            },
        ],
    },
}


def _config(**changes):
    raw = copy.deepcopy(CONFIG)
    raw["reference"] |= changes
    return parse_config(yaml.safe_dump(raw))


def test_the_reference_is_checked_against_the_config():
    assert _config().reference.methods[0].values == {100.0: 0.066, 200.0: 0.054, 300.0: 0.057}
    with pytest.raises(ConfigError, match=r"reference.conclusions\[0\].estimators\[0\]: 'lasso'"):
        _config(conclusions=[{"text": "x", "claim": "worse", "estimators": "lasso", "than": "a"}])
    with pytest.raises(ConfigError, match=r"reference.conclusions\[0\].claim: expected one of"):
        _config(conclusions=[{"text": "x", "claim": "beats", "estimators": ["fixed_effects"]}])
    with pytest.raises(ConfigError, match=r"reference.conclusions\[0\].than: a faster claim"):
        _config(conclusions=[{"text": "x", "claim": "faster", "estimators": ["mixed_glm"]}])
    with pytest.raises(ConfigError, match=r"reference.metric: 'rmse' is not one of the config"):
        _config(metric="rmse")
    with pytest.raises(ConfigError, match=r"reference.source: expected text"):
        _config(source=None)


def _results() -> pd.DataFrame:
    """Ten data sets at 100 and 200 users: the seed's protocol 40% worse than the GLMM,
    the same model tuned on rows and the GLM level with it, the GLM fitted faster."""
    rng = np.random.default_rng(0)
    rows = []
    for n_users in (100, 200):
        for repeat in range(10):
            glmm = 0.055 + rng.normal(0, 0.002)
            for label, name, factor, seconds in [
                ("mixed_glm", "mixed_glm", 1.0, 1.0),
                ("fixed_effects", "fixed_effects", 1 + rng.normal(0, 0.001), 0.2),
                ("lasso_seed", "lasso_onehot", 1.4 + rng.normal(0, 0.05), 0.5),
                ("lasso_rows", "lasso_onehot", 1 + rng.normal(0, 0.001), 0.5),
            ]:
                rows.append(
                    {
                        "status": "ok",
                        "scenario": f"clicks[n_users={n_users}]",
                        "repeat": repeat,
                        "split": "fresh_draw",
                        "fold": 0,
                        "estimator": label,
                        "estimator_name": name,
                        "sim.n_users": n_users,
                        "test_train_ratio": 0.0,
                        "weighted_mspe": glmm * factor,
                        "fit_seconds": seconds,
                        "est.cv_unit": {"lasso_seed": "cell", "lasso_rows": "row"}.get(label),
                        "est.random_state": rng.integers(1000),
                    }
                )
    return pd.DataFrame(rows)


def test_each_conclusion_is_read_against_the_results(tmp_path):
    config = _config()
    found = conclusions(_results(), config.reference, config, tmp_path)
    worse, level, faster = found
    assert worse["status"] == "agrees"
    assert worse["sentences"][0].startswith(
        "lasso_seed is worse than mixed_glm beyond the margin (±1%) over n_users 100-200"
    )
    # Tuned on rows, the same model is level with the GLMM: the sentence names the
    # parameter that differs (not the per-job seed) and what the conclusion depends on.
    assert worse["sentences"][1].startswith(
        "Set up otherwise (cv_unit=row instead of cell): lasso_rows is not worse"
    )
    assert worse["sentences"][2] == "So the conclusion depends on cv_unit=row instead of cell."
    assert level["status"] == "agrees" and "over its data sets" in level["sentences"][0]
    assert faster["status"] == "does not agree"
    assert faster["sentences"][-1] == "Why: R's glm computes standard errors."


def test_published_values_sit_beside_this_runs_means():
    config = _config()
    glmm, lasso = metric_tables(_results(), config.reference)
    assert [row["by"] for row in glmm["rows"]] == ["100", "200"]  # this run's sizes only
    assert glmm["rows"][0]["published"] == "0.066"
    assert lasso["estimators"] == ["lasso_seed", "lasso_rows"]
    assert lasso["rows"][1]["published"] == "–"
    value = float(lasso["rows"][0]["cells"][0]["value"])
    assert 0.07 < value < 0.09 and lasso["rows"][0]["cells"][0]["interval"].startswith("[")


def test_estimates_are_read_from_the_model_summaries(tmp_path):
    raw = {
        "name": "archers-reference",
        "seed": 1066,
        "summaries": True,
        "scenarios": [{"simulator": "archers", "sweep": {"experiment": [2]}}],
        "splits": [{"scheme": "fresh_draw", "draws": 1}],
        "estimators": ["pooled_ols", "fixed_effects", "mixed_lm"],
        "metrics": ["rmse", "vc_error"],
        "baseline": "fixed_effects",
        "reference": {
            "source": "The seed",
            "estimates": [
                {"scenario": "archers[experiment=2]", "estimator": "mixed_lm",
                 "term": "sd archer", "value": 22.97, "low": 18.91, "high": 28.05},
            ],
            "conclusions": [
                {"text": "The archer sd is estimated", "claim": "covers_truth",
                 "estimators": ["mixed_lm"], "scenario": "archers[experiment=2]",
                 "term": "sd archer"},
                {"text": "Ignoring archers hides the bow", "claim": "covers_zero",
                 "estimators": ["pooled_ols"], "scenario": "archers[experiment=2]",
                 "term": "southwood", "why": "50 archers are plenty."},
                {"text": "The same ranking", "claim": "same_ranking", "estimators": ["mixed_lm"],
                 "than": "fixed_effects", "scenario": "archers[experiment=2]"},
                {"text": "The same bow effect", "claim": "same_estimate",
                 "estimators": ["mixed_lm"], "than": "fixed_effects",
                 "scenario": "archers[experiment=2]", "term": "southwood"},
            ],
        },
    }  # fmt: skip
    run_sweep(parse_config(yaml.safe_dump(raw)), tmp_path, progress=False)
    html = render_report(tmp_path).read_text()
    section = html.split('<section id="reference">')[1].split("</section>")[0]
    assert "Reference: does the published analysis hold?" in section
    assert "22.97 (95% 18.91 to 28.05)" in section
    assert section.count("this run <strong>agrees</strong>") == 3
    assert "this run <strong>does not agree</strong>" in section
    assert "its interval excludes 0" in section and "Why: 50 archers are plenty." in section
    assert "covers the simulator&#39;s truth 20" in section
    assert "with Spearman correlation 1.00" in section


def test_a_report_without_a_reference_has_no_such_section(tmp_path):
    raw = copy.deepcopy(CONFIG)
    del raw["reference"]
    raw |= {"estimators": ["fixed_effects", "mixed_glm"], "baseline": "fixed_effects"}
    raw["scenarios"][0]["sweep"] = {"n_users": [60]}
    run_sweep(parse_config(yaml.safe_dump(raw)), tmp_path, progress=False)
    assert '<section id="reference">' not in render_report(tmp_path).read_text()
