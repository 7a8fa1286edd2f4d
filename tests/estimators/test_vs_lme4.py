"""MixedLM against lme4's lmer on its own data sets and on simulated crossed data.

The reference values are JSON fixtures written by ``benchmarks/reference/lme4_reference.R``
(regenerate with ``Rscript benchmarks/reference/lme4_reference.R``); nothing here is
computed by the code under test.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from estimators import MixedLM

FIXTURES = Path(__file__).parent / "fixtures"
MODELS = sorted(path.stem for path in (FIXTURES / "lme4").glob("*.json"))
# Columns that are factors in R but read from CSV as numbers.
FACTORS = {"insteval": ["service", "dept", "s", "d"]}


def read(name: str, model: str) -> pd.DataFrame:
    frame = pd.read_csv(FIXTURES / "data" / name)
    for column in FACTORS.get(model, []):
        if column in frame:
            frame[column] = frame[column].astype(str)
    return frame


@cache
def reference(model: str) -> dict:
    return json.loads((FIXTURES / "lme4" / f"{model}.json").read_text())


@cache
def fitted(model: str) -> MixedLM:
    ref = reference(model)
    return MixedLM(ref["formula"], reml=ref["reml"]).fit(read(ref["data"], model))


def test_every_reference_model_is_covered():
    assert {
        "sleepstudy_reml",
        "sleepstudy_ml",
        "sleepstudy_uncorrelated",
        "dyestuff",
        "dyestuff_ml",
        "penicillin",
        "pastes",
        "insteval",
        "crossed",
        "crossed_ml",
    } <= set(MODELS)


@pytest.mark.parametrize("model", MODELS)
def test_deviance_function_matches_lme4_devfun(model):
    """The public deviance function, with no fit, against lmer(..., devFunOnly = TRUE)."""
    ref = reference(model)
    devfun = MixedLM(ref["formula"], reml=ref["reml"], solver="exact").deviance_function(
        read(ref["data"], model)
    )
    for point in ref["devfun_at"]:
        assert devfun(point["theta"]) == pytest.approx(point["value"], rel=1e-9), point


@pytest.mark.parametrize("model", MODELS)
def test_optimum_matches_lme4(model):
    ref = reference(model)
    fit = fitted(model)
    # Within 1e-6 relative; ours may be lower (a better optimum), never notably higher.
    assert fit.objective_ - ref["objective"] <= 1e-6 * abs(ref["objective"])
    assert fit.objective_ == pytest.approx(ref["objective"], rel=1e-5)
    assert fit.loglik_ == pytest.approx(ref["loglik"], rel=1e-6)
    assert fit.n_obs_ == ref["n_obs"]
    assert fit.is_singular_ == ref["is_singular"]
    np.testing.assert_allclose(fit.theta_, ref["theta"], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("model", MODELS)
def test_fixed_effects_and_standard_errors(model):
    ref = reference(model)
    fit = fitted(model)
    names = list(ref["fixef"])
    assert list(fit.coef_.index) == names
    scale = np.abs(list(ref["fixef"].values())).max()
    np.testing.assert_allclose(
        fit.coef_[names], list(ref["fixef"].values()), rtol=1e-4, atol=1e-6 * scale
    )
    np.testing.assert_allclose(fit.coef_se_[names], list(ref["fixef_se"].values()), rtol=1e-3)
    wald = fit.confint(method="wald")
    for name in names:
        np.testing.assert_allclose(
            wald.loc[name], ref["confint_wald"][name], rtol=1e-4, atol=1e-4 * fit.coef_se_[name]
        )


@pytest.mark.parametrize("model", MODELS)
def test_variance_components(model):
    ref = reference(model)
    fit = fitted(model)
    ours = fit.varcorr_
    # lme4 names a second term on the same factor "Subject.1"; match rows by position
    # within (group, var1, var2) after removing that suffix.
    expected = pd.DataFrame(ref["varcorr"])
    expected["grp"] = expected["grp"].str.replace(r"\.\d+$", "", regex=True)
    key = ["grp", "var1", "var2"]
    merged = expected.merge(ours, on=key, suffixes=("_lme4", "_ours"), how="left")
    assert merged["sdcor_ours"].notna().all(), merged
    np.testing.assert_allclose(merged["sdcor_ours"], merged["sdcor_lme4"], rtol=1e-3, atol=1e-6)
    assert fit.sigma_ == pytest.approx(ref["sigma"], rel=1e-4)


@pytest.mark.parametrize("model", MODELS)
def test_conditional_modes_and_variances(model):
    ref = reference(model)
    fit = fitted(model)
    for group, block in ref["ranef"].items():
        ours = fit.ranef_[group]
        ours.index = ours.index.astype(str)
        modes = ours.loc[block["levels"], block["columns"]].to_numpy()
        expected = np.array(block["values"])
        scale = np.abs(expected).max()
        np.testing.assert_allclose(modes, expected, rtol=1e-3, atol=1e-3 * scale)
        variances = fit.ranef_var_[group]
        variances.index = variances.index.astype(str)
        np.testing.assert_allclose(
            variances.loc[block["levels"], block["columns"]].to_numpy(),
            np.array(block["condvar"]),
            rtol=2e-3,
        )


@pytest.mark.parametrize("model", MODELS)
def test_predictions_with_new_levels(model):
    ref = reference(model)
    fit = fitted(model)
    new = read(ref["newdata"], model)
    scale = np.abs(ref["predictions"]).max()
    np.testing.assert_allclose(fit.predict(new), ref["predictions"], rtol=1e-4, atol=1e-6 * scale)
    np.testing.assert_allclose(
        fit.predict(new, include_random=False),
        ref["predictions_marginal"],
        rtol=1e-4,
        atol=1e-6 * scale,
    )
    training = read(ref["data"], model)
    np.testing.assert_allclose(fit.predict(training)[:10], ref["fitted_head"], rtol=1e-4)


@pytest.mark.parametrize("model", [m for m in MODELS if reference(m)["confint_profile"]])
def test_profile_confidence_intervals(model):
    """lme4 interpolates a spline through profile points; we find the bounds by root
    finding, so the two agree to a few parts in 1e4 rather than to machine precision."""
    ref = reference(model)
    ours = fitted(model).confint(method="profile")
    assert list(ours.columns) == ["2.5 %", "97.5 %"]
    assert list(ours.index) == list(ref["confint_profile"])
    for name, bounds in ref["confint_profile"].items():
        np.testing.assert_allclose(ours.loc[name], bounds, rtol=5e-4, atol=1e-6, err_msg=name)


# The scalable solvers against the same references: the sparse solver computes the same
# criterion (to lme4's precision), the iterative one estimates it (variance components
# within 1%, predictions within 1e-3).
INTERCEPTS_ONLY = [
    m
    for m in MODELS
    if all(lhs.strip() == "1" for lhs in re.findall(r"\(([^|()]*)\|", reference(m)["formula"]))
]


@cache
def fitted_by(model: str, solver: str) -> MixedLM:
    ref = reference(model)
    return MixedLM(ref["formula"], reml=ref["reml"], solver=solver).fit(read(ref["data"], model))


def _variance_ratios(fit: MixedLM, ref: dict) -> np.ndarray:
    expected = pd.DataFrame(ref["varcorr"])
    expected["grp"] = expected["grp"].str.replace(r"\.\d+$", "", regex=True)
    merged = expected.merge(fit.varcorr_, on=["grp", "var1", "var2"], suffixes=("_lme4", ""))
    variances = merged[merged["var2"].isna()]
    return (variances["vcov"] / variances["vcov_lme4"]).to_numpy()


@pytest.mark.parametrize("model", MODELS)
def test_sparse_solver_matches_lme4(model):
    ref = reference(model)
    fit = fitted_by(model, "sparse")
    assert fit.solver_ == "sparse"
    devfun = MixedLM(ref["formula"], reml=ref["reml"], solver="sparse").deviance_function(
        read(ref["data"], model)
    )
    for point in ref["devfun_at"]:
        assert devfun(point["theta"]) == pytest.approx(point["value"], rel=1e-9)
    assert fit.objective_ - ref["objective"] <= 1e-6 * abs(ref["objective"])
    assert fit.objective_ == pytest.approx(ref["objective"], rel=1e-5)
    np.testing.assert_allclose(_variance_ratios(fit, ref), 1.0, rtol=2e-3)


@pytest.mark.parametrize("model", INTERCEPTS_ONLY)
def test_iterative_solver_matches_lme4(model):
    ref = reference(model)
    fit = fitted_by(model, "iterative")
    assert fit.solver_ == "iterative"
    np.testing.assert_allclose(_variance_ratios(fit, ref), 1.0, rtol=1e-2)
    new = read(ref["newdata"], model)
    predictions = np.asarray(ref["predictions"])
    error = np.sqrt(np.mean((fit.predict(new) - predictions) ** 2))
    assert error <= 1e-3 * np.sqrt(np.mean(predictions**2))
