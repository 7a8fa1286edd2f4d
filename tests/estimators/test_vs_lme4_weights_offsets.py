"""MixedLM against lmer with prior weights, offsets and categorical fixed effects.

The reference values are JSON fixtures written by
``benchmarks/reference/lmer_weights_offsets.R`` (regenerate with ``Rscript
benchmarks/reference/lmer_weights_offsets.R``): weighted sleepstudy, online data
aggregated to user x day means weighted by their counts, offsets in the formula and as a
column, and lme4's coefficient names (and column order) with and without an intercept
and in interactions; REML and ML.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from estimators import MixedLM

FIXTURES = Path(__file__).parent / "fixtures"
MODELS = sorted(path.stem for path in (FIXTURES / "lmer_weights_offsets").glob("*.json"))
# Columns that are factors in R but read from CSV as numbers.
FACTORS = ["var1"]


def read(name: str) -> pd.DataFrame:
    frame = pd.read_csv(FIXTURES / "data" / name)
    for column in FACTORS:
        if column in frame:
            frame[column] = frame[column].astype(str)
    return frame


@cache
def reference(model: str) -> dict:
    return json.loads((FIXTURES / "lmer_weights_offsets" / f"{model}.json").read_text())


def estimator(ref: dict, **params) -> MixedLM:
    return MixedLM(
        ref["formula"], reml=ref["reml"], weights=ref["weights"], offset=ref["offset"], **params
    )


@cache
def fitted(model: str, solver: str = "exact") -> MixedLM:
    ref = reference(model)
    return estimator(ref, solver=solver).fit(read(ref["data"]))


def test_every_case_is_covered():
    assert {
        "sleepstudy_weights",
        "sleepstudy_weights_ml",
        "online_daily_weights",
        "online_daily_weights_ml",
        "sleepstudy_offset_terms",
        "sleepstudy_offset_terms_ml",
        "sleepstudy_offset_column",
        "sleepstudy_weights_offsets",
        "names_no_intercept",
        "names_no_intercept_ml",
        "names_treatment",
        "names_interaction_order",
        "names_factor_interaction",
    } <= set(MODELS)


@pytest.mark.parametrize("model", MODELS)
def test_deviance_function_matches_lme4_devfun(model):
    ref = reference(model)
    devfun = estimator(ref).deviance_function(read(ref["data"]))
    for point in ref["devfun_at"]:
        assert devfun(point["theta"]) == pytest.approx(point["value"], rel=1e-9), point


@pytest.mark.parametrize("model", MODELS)
def test_optimum_matches_lme4(model):
    ref = reference(model)
    fit = fitted(model)
    # Within 1e-6 relative; ours may be lower (a better optimum), never notably higher.
    assert fit.objective_ - ref["objective"] <= 1e-6 * abs(ref["objective"])
    assert fit.objective_ == pytest.approx(ref["objective"], rel=1e-6)
    assert fit.loglik_ == pytest.approx(ref["loglik"], rel=1e-6)
    assert fit.n_obs_ == ref["n_obs"]
    assert fit.is_singular_ == ref["is_singular"]
    np.testing.assert_allclose(fit.theta_, ref["theta"], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("model", MODELS)
def test_fixed_effects_names_values_and_standard_errors(model):
    ref = reference(model)
    fit = fitted(model)
    assert list(fit.coef_.index) == list(ref["fixef"])
    expected = np.array(list(ref["fixef"].values()))
    np.testing.assert_allclose(fit.coef_, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    np.testing.assert_allclose(fit.coef_se_, list(ref["fixef_se"].values()), rtol=1e-3)


@pytest.mark.parametrize("model", MODELS)
def test_variance_components_and_sigma(model):
    ref = reference(model)
    fit = fitted(model)
    expected = pd.DataFrame(ref["varcorr"])
    merged = expected.merge(
        fit.varcorr_, on=["grp", "var1", "var2"], suffixes=("_lme4", "_ours"), how="left"
    )
    assert merged["sdcor_ours"].notna().all(), merged
    np.testing.assert_allclose(merged["sdcor_ours"], merged["sdcor_lme4"], rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(merged["vcov_ours"], merged["vcov_lme4"], rtol=2e-3, atol=1e-6)
    assert fit.sigma_ == pytest.approx(ref["sigma"], rel=1e-4)


@pytest.mark.parametrize("model", MODELS)
def test_conditional_modes_and_variances(model):
    ref = reference(model)
    fit = fitted(model)
    for group, block in ref["ranef"].items():
        ours = fit.ranef_[group].set_axis(fit.ranef_[group].index.astype(str), axis=0)
        expected = np.array(block["values"])
        np.testing.assert_allclose(
            ours.loc[block["levels"], block["columns"]].to_numpy(),
            expected,
            rtol=1e-3,
            atol=1e-3 * np.abs(expected).max(),
        )
        variances = fit.ranef_var_[group].set_axis(ours.index, axis=0)
        np.testing.assert_allclose(
            variances.loc[block["levels"], block["columns"]].to_numpy(),
            np.array(block["condvar"]),
            rtol=2e-3,
        )


@pytest.mark.parametrize("model", MODELS)
def test_predictions_on_new_data_include_the_offsets(model):
    ref = reference(model)
    fit = fitted(model)
    new = read(ref["newdata"])
    scale = np.abs(ref["predictions"]).max()
    np.testing.assert_allclose(fit.predict(new), ref["predictions"], rtol=1e-4, atol=1e-6 * scale)
    np.testing.assert_allclose(
        fit.predict(new, include_random=False),
        ref["predictions_marginal"],
        rtol=1e-4,
        atol=1e-6 * scale,
    )
    training = read(ref["data"])
    np.testing.assert_allclose(fit.predict(training)[:10], ref["fitted_head"], rtol=1e-4)


WEIGHTED = [m for m in MODELS if reference(m)["weights"]]


@pytest.mark.parametrize("model", WEIGHTED)
@pytest.mark.parametrize("solver", ["sparse", "iterative"])
def test_scalable_solvers_take_weights(model, solver):
    """The sparse solver computes lme4's criterion; the iterative one (random
    intercepts only) estimates it: variance components within 1%."""
    ref = reference(model)
    if solver == "iterative" and "Days |" in ref["formula"]:
        pytest.skip("the iterative solver fits random intercepts only")
    fit = fitted(model, solver)
    assert fit.solver_ == solver
    expected = pd.DataFrame(ref["varcorr"])
    merged = expected.merge(fit.varcorr_, on=["grp", "var1", "var2"], suffixes=("_lme4", ""))
    variances = merged[merged["var2"].isna()]
    tolerance = 2e-3 if solver == "sparse" else 1e-2
    np.testing.assert_allclose(variances["vcov"], variances["vcov_lme4"], rtol=tolerance)
    if solver == "sparse":
        assert fit.objective_ - ref["objective"] <= 1e-6 * abs(ref["objective"])
        assert fit.objective_ == pytest.approx(ref["objective"], rel=1e-6)


@pytest.mark.parametrize("model", [m for m in MODELS if reference(m)["confint_profile"]])
def test_profile_intervals_of_the_variance_parameters(model):
    """lme4 interpolates a spline through profile points; we find the bounds by root
    finding, so the two agree to a few parts in 1e4. The fixture holds the variance
    parameters only: lme4's fixed-effect profiles fail with prior weights."""
    ref = reference(model)
    ours = fitted(model).confint(method="profile")
    for name, bounds in ref["confint_profile"].items():
        np.testing.assert_allclose(ours.loc[name], bounds, rtol=5e-4, atol=1e-6, err_msg=name)
    # Our fixed-effect profiles stay near the Wald intervals (quadratic log-likelihood).
    wald = fitted(model).confint(method="wald")
    fixed = list(ref["fixef"])
    np.testing.assert_allclose(ours.loc[fixed], wald.loc[fixed], rtol=2e-2)
