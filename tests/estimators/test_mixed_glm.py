"""MixedGLM against lme4's glmer, and its behaviour as an estimator.

The reference values are JSON fixtures written by ``benchmarks/reference/glmer_reference.R``
and ``benchmarks/reference/glmer_links_nb.R`` (links other than logit, nAGQ = 0, an
offset, glmer.nb; regenerate with ``Rscript benchmarks/reference/<script>``); nothing
here is computed by the code under test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import expit, gammaln
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

import simulators
from estimators import MixedGLM

FIXTURES = Path(__file__).parent / "fixtures"
MODELS = sorted(path.stem for path in (FIXTURES / "glmer").glob("*.json"))
# Columns that are factors in R but read from CSV as numbers.
FACTORS = {
    "cbpp.csv.gz": ["herd", "period"],
    "cbpp_new.csv.gz": ["herd", "period"],
    "cbpp_agq9_new.csv.gz": ["herd", "period"],
    "cbpp_agq25_new.csv.gz": ["herd", "period"],
    "grouseticks.csv.gz": ["BROOD", "LOCATION", "YEAR", "INDEX"],
    "grouseticks_new.csv.gz": ["BROOD", "LOCATION", "YEAR"],
    "grouseticks_height_new.csv.gz": ["BROOD", "LOCATION", "YEAR"],
    "grouseticks_nb_new.csv.gz": ["BROOD", "LOCATION", "YEAR"],
    **{
        f"cbpp_{name}_new.csv.gz": ["herd", "period"]
        for name in ("probit", "cloglog", "cauchit", "nagq0")
    },
}
# lme4's finite-difference Hessian of these two deviances (objectives near 5000) is
# dominated by its PIRLS tolerance: their standard errors are compared with the
# conditional ones (glmer's use.hessian = FALSE) instead, which differ from the
# Hessian-based ones by a few per cent.
NOISY_HESSIAN = {"binary_slope", "binary_crossed"}
# grouseticks with the uncentred HEIGHT (403 to 533): intercept and slope lie on a
# ridge along which the objective changes by < 1e-6 (ours and glmer's optima differ by
# 3e-4 in the intercept, 5e-7 in the objective, glmer's point being the lower), and a
# Hessian step of 1e-3 in the slope moves the linear predictor by ~0.5. Standard errors
# and linear predictors agree to 3e-3 and 5e-4 there, not 1e-3 and 1e-4.
BADLY_SCALED = {"grouseticks_height"}
# Where the fixture's fixef_se (lme4:::deriv12 of the deviance function, step 1e-3)
# depends on R's step: on counts_exposure the intercept's standard error is 0.10045 with
# step 1e-3 and 0.10056 with glmer's 1e-4 (vcov(fit)), ours 0.10056; on counts_nb
# glmer's PIRLS (Fisher scoring, stopped ~1e-6 from the modes) makes R's second
# differences noisy (treat: 0.0588 with step 1e-3, 0.0452 with 1e-4 at the same
# theta), and glmer.nb's vcov(fit), 0.0590, agrees with ours to 1e-5. Elsewhere ours
# agrees with deriv12 to 1e-5.
SE_FROM_VCOV = {"counts_exposure", "counts_nb"}


def read(name: str) -> pd.DataFrame:
    frame = pd.read_csv(FIXTURES / "data" / name)
    for column in FACTORS.get(name, []):
        frame[column] = frame[column].astype(str)
    return frame


@cache
def reference(model: str) -> dict:
    return json.loads((FIXTURES / "glmer" / f"{model}.json").read_text())


def estimator(model: str) -> MixedGLM:
    ref = reference(model)
    return MixedGLM(
        ref["formula"],
        family=ref["family"],
        link=ref.get("link"),
        n_agq=ref["n_agq"],
        weights=ref.get("weights"),
    )


@cache
def fitted(model: str) -> MixedGLM:
    return estimator(model).fit(read(reference(model)["data"]))


def mean(fit: MixedGLM, X: pd.DataFrame, **options) -> np.ndarray:
    """glmer's ``predict(type = "response")``: the probability of 1 or the mean count."""
    if fit.family == "binomial":
        return fit.predict_proba(X, **options)[:, 1]
    return fit.predict(X, **options)


def link(fit: MixedGLM, X: pd.DataFrame) -> np.ndarray:
    """glmer's ``predict(type = "link")``: a classifier's ``decision_function``, a count
    model's ``predict(scale="link")`` (a regressor has no ``decision_function``)."""
    if fit.family == "binomial":
        return fit.decision_function(X)
    return fit.predict(X, scale="link")


def test_every_reference_model_is_covered():
    assert {
        "cbpp",
        "cbpp_agq9",
        "cbpp_agq25",
        "grouseticks",
        "grouseticks_height",
        "ctr",
        "ctr_agq25",
        "binary_slope",
        "binary_crossed",
        "cbpp_probit",
        "cbpp_cloglog",
        "cbpp_cauchit",
        "binary_probit",
        "cbpp_nagq0",
        "counts_exposure",
        "counts_nb",
        "grouseticks_nb",
    } <= set(MODELS)


@pytest.mark.parametrize("model", MODELS)
def test_deviance_matches_glmer_at_the_same_parameters(model):
    """The Laplace / quadrature value at fixed (theta, beta) (theta alone at nAGQ = 0,
    and at the fitted theta of a negative binomial), from the public deviance function,
    rows aggregated or not.

    Ours may be slightly lower where glmer's PIRLS stops short of the conditional modes
    (at most ~1e-3 here, on objectives of ~5000); never notably higher. With links
    other than the canonical ones glmer's PIRLS (Fisher scoring) stops ~1e-6 from the
    modes, which moves its value either way by up to 2e-8 relative.
    """
    ref = reference(model)
    model_at = estimator(model).set_params(nb_theta=ref.get("nb_theta"))
    deviance = model_at.deviance_function(read(ref["data"]))
    canonical = ref.get("link") is None and ref["family"] != "negative_binomial"
    above = 1e-8 if canonical else 2e-8
    for point in ref["devfun_at"]:
        value = deviance(np.concatenate([point["theta"], point.get("beta", [])]))
        assert value - point["value"] <= above * abs(point["value"]), point
        assert value == pytest.approx(point["value"], abs=1e-3), point


@pytest.mark.parametrize("model", MODELS)
def test_optimum_matches_glmer(model):
    ref = reference(model)
    fit = fitted(model)
    assert fit.objective_ - ref["objective"] <= 1e-8 * abs(ref["objective"])
    assert fit.objective_ == pytest.approx(ref["objective"], abs=1e-3)
    # The tolerance the issue asks for, against glmer's tightly converged deviance
    # function at its own optimum (its logLik carries its PIRLS tolerance).
    assert fit.objective_ == pytest.approx(ref["objective_devfun"], rel=1e-5)
    assert fit.objective_ - ref["objective_devfun"] <= 1e-8 * abs(ref["objective_devfun"])
    assert fit.loglik_ == pytest.approx(ref["loglik"], abs=5e-4)
    assert fit.aic_ == pytest.approx(ref["aic"], abs=1e-3)
    assert fit.deviance_ == pytest.approx(ref["deviance"], rel=1e-5)
    assert fit.n_obs_ == ref["n_obs"]
    assert fit.is_singular_ == ref["is_singular"]
    np.testing.assert_allclose(fit.theta_, ref["theta"], rtol=1e-3)


@pytest.mark.parametrize("model", MODELS)
def test_fixed_effects_and_standard_errors(model):
    ref = reference(model)
    fit = fitted(model)
    names = list(ref["fixef"])
    assert list(fit.coef_.index) == names
    expected = np.array(list(ref["fixef"].values()))
    np.testing.assert_allclose(
        fit.coef_[names], expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max()
    )
    if model in NOISY_HESSIAN:
        np.testing.assert_allclose(
            fit.coef_se_[names], list(ref["fixef_se_rx"].values()), rtol=0.03
        )
    elif "confint_wald" not in ref:
        expected_se = ref["fixef_se_vcov" if model in SE_FROM_VCOV else "fixef_se"]
        np.testing.assert_allclose(fit.coef_se_[names], list(expected_se.values()), rtol=1e-4)
    else:
        se_tolerance = 3e-3 if model in BADLY_SCALED else 1e-3
        np.testing.assert_allclose(
            fit.coef_se_[names], list(ref["fixef_se"].values()), rtol=se_tolerance
        )
        wald = fit.confint()
        for name in names:
            expected_interval = ref["confint_wald"][name]
            se, se_vcov = ref["fixef_se"][name], ref["fixef_se_vcov"][name]
            if abs(se_vcov / se - 1) > 1e-3:
                # glmer's confint uses vcov(fit), whose Hessian step of 1e-4 is noisy
                # on ctr (objective ~1e4): compare with the same interval from the
                # step-1e-3 standard error instead.
                z = stats.norm.ppf(0.975)
                estimate = ref["fixef"][name]
                expected_interval = [estimate - z * se, estimate + z * se]
            np.testing.assert_allclose(wald.loc[name], expected_interval, rtol=se_tolerance)
    # glmer computes no Hessian at nAGQ = 0: its vcov is the conditional one.
    expected_method = "conditional" if ref["n_agq"] == 0 else "hessian"
    assert fit.convergence_["standard_errors"] == expected_method


# Models whose Hessian glmer's fixture takes from its tightly converged deviance function.
SMOOTH_HESSIAN = ["cbpp", "binary_slope", "binary_crossed"]


@pytest.mark.parametrize("model", SMOOTH_HESSIAN)
def test_standard_errors_match_deriv12_closely(model):
    """PIRLS ends at the modes to rounding error (a whole step that the penalised
    deviance cannot tell from none is still taken, since the log-determinant moves with
    it), so the Laplace value is smooth and the central differences of its Hessian agree
    with lme4:::deriv12's to 1e-5. cbpp's differed by 3e-4 when such a step was left
    untaken: its deviance then moved by 2e-8 between neighbouring points."""
    ref = reference(model)
    fit = fitted(model)
    names = list(ref["fixef"])
    np.testing.assert_allclose(fit.coef_se_[names], list(ref["fixef_se"].values()), rtol=1e-5)


@pytest.mark.parametrize("model", ["cbpp", "cbpp_probit", "binary_slope", "ctr"])
def test_one_term_pirls_matches_the_blocked_factor(model):
    """With one random-effects term PIRLS solves its per-level blocks as a batch; the
    general blocked factor of the linear mixed model (``_one_term`` off) gives the same
    deviance and modes, over u at given beta and over (beta, u) jointly."""
    ref = reference(model)
    batched = estimator(model).deviance_function(read(ref["data"]))
    blocked = estimator(model).deviance_function(read(ref["data"]))
    assert batched._one_term
    blocked._one_term = False
    for point in ref["devfun_at"]:
        theta, beta = np.array(point["theta"]), np.array(point["beta"])
        ours, general = batched.modes(theta, beta), blocked.modes(theta, beta)
        assert batched.value(ours) == pytest.approx(blocked.value(general), rel=1e-12)
        np.testing.assert_allclose(ours.u, general.u, rtol=1e-8, atol=1e-10)
        assert batched.profiled(theta) == pytest.approx(blocked.profiled(theta), rel=1e-12)
        np.testing.assert_allclose(batched._beta, blocked._beta, rtol=1e-8, atol=1e-10)


def test_a_variance_the_data_cannot_tell_from_zero_ends_on_the_boundary():
    """A random intercept per row of a 0/1 outcome is not identified: the deviance is
    flat to fourth order in theta at 0, within rounding error of the boundary's up to
    theta ~1e-4, where the optimisers stopped (2e-4 with one coding of the classes, not
    singular). The fit ends at 0 and is singular, as glmer's, with either coding."""
    y = np.random.default_rng(0).permutation(np.repeat([0, 1], 100))
    data = pd.DataFrame({"row": np.arange(200).astype(str)})
    for outcome in (y, 1 - y):
        fit = MixedGLM("y ~ 1 + (1 | row)").fit(data.assign(y=outcome))
        assert fit.theta_[0] == 0.0
        assert fit.is_singular_


@pytest.mark.parametrize("model", MODELS)
def test_variance_components(model):
    fit = fitted(model)
    expected = pd.DataFrame(reference(model)["varcorr"])
    key = ["grp", "var1", "var2"]
    merged = expected.merge(fit.varcorr_, on=key, suffixes=("_lme4", "_ours"), how="left")
    assert merged["sdcor_ours"].notna().all(), merged
    assert len(fit.varcorr_) == len(expected)
    np.testing.assert_allclose(merged["sdcor_ours"], merged["sdcor_lme4"], rtol=1e-3)


@pytest.mark.parametrize("model", MODELS)
def test_conditional_modes_and_variances(model):
    fit = fitted(model)
    for group, block in reference(model)["ranef"].items():
        modes = fit.ranef_[group].set_axis(fit.ranef_[group].index.astype(str))
        expected = np.array(block["values"])
        np.testing.assert_allclose(
            modes.loc[block["levels"], block["columns"]].to_numpy(),
            expected,
            rtol=1e-3,
            atol=1e-3 * np.abs(expected).max(),
        )
        variances = fit.ranef_var_[group].set_axis(modes.index)
        np.testing.assert_allclose(
            variances.loc[block["levels"], block["columns"]].to_numpy(),
            np.array(block["condvar"]),
            rtol=1e-3,
        )


@pytest.mark.parametrize("model", MODELS)
def test_predictions_with_new_levels(model):
    ref = reference(model)
    fit = fitted(model)
    new = read(ref["newdata"])
    np.testing.assert_allclose(mean(fit, new), ref["predictions"], rtol=1e-3)
    np.testing.assert_allclose(
        link(fit, new),
        ref["predictions_link"],
        rtol=1e-3,
        atol=5e-4 if model in BADLY_SCALED else 1e-4,
    )
    np.testing.assert_allclose(
        mean(fit, new, include_random=False), ref["predictions_marginal"], rtol=1e-3
    )
    training = read(ref["data"])
    np.testing.assert_allclose(mean(fit, training)[:10], ref["fitted_head"], rtol=1e-3)


NEGATIVE_BINOMIAL = [m for m in MODELS if reference(m)["family"] == "negative_binomial"]


@pytest.mark.parametrize("model", NEGATIVE_BINOMIAL)
def test_negative_binomial_theta_matches_glmer_nb(model):
    """glmer.nb searched with tol = 1e-9 in log(theta) (the fixture) and with its
    default 5e-5 (``nb_default``, whose objective is that of its own PIRLS tolerance)."""
    ref = reference(model)
    fit = fitted(model)
    assert fit.nb_theta_ == pytest.approx(ref["nb_theta"], rel=1e-5)
    assert fit.nb_theta_ == pytest.approx(ref["nb_default"]["nb_theta"], rel=5e-5)
    assert fit.objective_ <= ref["nb_default"]["objective"]
    info = fit.convergence_["nb_theta"]
    assert info["converged"] and not info["at_edge"]
    low, high = info["interval"]
    assert low < fit.nb_theta_ < high
    assert high / low == pytest.approx(np.exp(6))  # glmer.nb's log(theta) +- 3
    thetas, values = zip(*info["profile"], strict=True)
    assert len(thetas) == info["fits"] and min(values) == pytest.approx(fit.objective_)
    assert thetas[int(np.argmin(values))] == fit.nb_theta_
    assert f"Negative Binomial({fit.nb_theta_:.4g})  ( log )" in fit.summary()


# -- aggregation ------------------------------------------------------------------------


def cbpp_as_binary_rows() -> pd.DataFrame:
    """cbpp with one 0/1 row per animal: ``incidence`` ones and ``size - incidence``
    zeros per herd and period."""
    cbpp = read("cbpp.csv.gz")
    rows = cbpp.loc[cbpp.index.repeat(cbpp["size"].astype(int))].copy()
    rank = rows.groupby(level=0).cumcount()
    rows["sick"] = (rank < rows["incidence"]).astype(int)
    return rows.reset_index(drop=True)


def test_binary_rows_give_the_aggregated_fit():
    aggregated = fitted("cbpp")
    rows = cbpp_as_binary_rows()
    binary = MixedGLM("sick ~ period + (1 | herd)").fit(rows)
    assert binary.n_obs_ == rows.shape[0] == 842
    assert binary.n_patterns_ == 56  # merged back to herd x period inside fit
    np.testing.assert_allclose(binary.coef_, aggregated.coef_, rtol=1e-6)
    np.testing.assert_allclose(binary.theta_, aggregated.theta_, rtol=1e-6)
    np.testing.assert_allclose(binary.coef_se_, aggregated.coef_se_, rtol=1e-5)
    # The binomial coefficients are in the aggregated likelihood only, as in glmer.
    cbpp = read("cbpp.csv.gz")
    size, sick = cbpp["size"], cbpp["incidence"]
    log_choose = float(np.sum(gammaln(size + 1) - gammaln(sick + 1) - gammaln(size - sick + 1)))
    assert binary.loglik_ == pytest.approx(aggregated.loglik_ - log_choose, abs=1e-6)
    np.testing.assert_allclose(
        binary.ranef_["herd"].to_numpy(), aggregated.ranef_["herd"].to_numpy(), atol=1e-6
    )


def test_shuffled_duplicated_rows_give_the_same_fit():
    data = read("binary.csv.gz")
    shuffled = data.sample(frac=1.0, random_state=3).reset_index(drop=True)
    fit = fitted("binary_crossed")
    again = MixedGLM(reference("binary_crossed")["formula"]).fit(shuffled)
    assert fit.n_patterns_ < fit.n_obs_
    np.testing.assert_allclose(again.coef_, fit.coef_, rtol=1e-5)
    assert again.loglik_ == pytest.approx(fit.loglik_, abs=1e-6)


def test_poisson_offset_shifts_the_intercept():
    ticks = read("grouseticks.csv.gz")
    ticks["log_exposure"] = np.log(2.0)
    fit = MixedGLM(
        reference("grouseticks")["formula"], family="poisson", offset="log_exposure"
    ).fit(ticks)
    plain = fitted("grouseticks")
    shifted = plain.coef_.copy()
    shifted["(Intercept)"] -= np.log(2.0)
    np.testing.assert_allclose(fit.coef_, shifted, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fit.predict(ticks), plain.predict(ticks), rtol=1e-4)


# -- simulation truth -------------------------------------------------------------------


def test_wald_intervals_cover_the_simulated_truth():
    """Over 30 ctr_experiment data sets (300 users, ~6,600 impressions each), the 95%
    Wald intervals of mu, tau and sigma (theta +- 1.96 theta_se: the scale is 1, so
    theta is the user sd) cover the simulated values at a rate a binomial test does not
    reject at the 1% level.

    25-point quadrature, not Laplace: with sigma = 5 most users never click, and the
    Laplace approximation puts mu near -7.4 and sigma near 6.7 on 1,000 users (glmer
    agrees, see the ctr fixture), so its intervals would not cover at all.
    """
    truth = {"(Intercept)": -4.5, "display": 0.5, "sigma": 5.0}
    covered = dict.fromkeys(truth, 0)
    n_sets = 30
    for seed in range(n_sets):
        data = simulators.simulate("ctr_experiment", seed=seed, n_users=300).frame
        fit = MixedGLM("click ~ display + (1 | user)", n_agq=25).fit(data)
        assert fit.convergence_["standard_errors"] == "hessian"
        wald = fit.confint(0.95)
        for name in ("(Intercept)", "display"):
            covered[name] += bool(wald.loc[name].iloc[0] <= truth[name] <= wald.loc[name].iloc[1])
        half_width = stats.norm.ppf(0.975) * fit.theta_se_[0]
        covered["sigma"] += bool(abs(fit.theta_[0] - truth["sigma"]) <= half_width)
    for name, count in covered.items():
        p_value = stats.binomtest(count, n_sets, 0.95).pvalue
        assert p_value > 0.01, f"{name}: covered in {count} of {n_sets} data sets"


# -- prediction -------------------------------------------------------------------------


def test_predict_predict_proba_and_decision_function_agree():
    fit = fitted("binary_crossed")
    new = read(reference("binary_crossed")["newdata"])
    proba = fit.predict_proba(new)
    probability = proba[:, 1]
    assert proba.shape == (len(new), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(fit.predict(new), (probability > 0.5).astype(int))
    np.testing.assert_allclose(expit(fit.decision_function(new)), probability)
    np.testing.assert_array_equal(
        fit.predict(new, include_random=False),
        (fit.predict_proba(new, include_random=False)[:, 1] > 0.5).astype(int),
    )
    only_user = fit.decision_function(new, include_random=["user"])
    marginal = fit.decision_function(new, include_random=False)
    user_effect = fit.ranef_["user"]["(Intercept)"].reindex(new["user"]).fillna(0).to_numpy()
    np.testing.assert_allclose(only_user, marginal + user_effect)


def test_unseen_levels_follow_the_policy():
    new = read(reference("cbpp")["newdata"])
    fit = fitted("cbpp")
    unseen = new["herd"] == "99"
    np.testing.assert_allclose(
        fit.predict_proba(new)[unseen], fit.predict_proba(new, include_random=False)[unseen]
    )
    strict = clone(fit).set_params(new_levels="error").fit(read("cbpp.csv.gz"))
    with pytest.raises(ValueError, match="'herd'.*not seen in training"):
        strict.predict(new)


def test_clone_and_get_params():
    model = estimator("cbpp")
    params = model.get_params()
    assert params == {
        "formula": "proportion ~ period + (1 | herd)",
        "family": "binomial",
        "link": None,
        "n_agq": 1,
        "nb_theta": None,
        "weights": "size",
        "offset": None,
        "new_levels": "population",
        "solver": "auto",
    }
    copy = clone(model)
    assert copy.get_params() == params
    with pytest.raises(NotFittedError):
        copy.predict(read("cbpp.csv.gz"))
    assert "Laplace" in fitted("cbpp").summary()
    assert "nAGQ = 9" in fitted("cbpp_agq9").summary()


# -- bad input --------------------------------------------------------------------------


def test_binomial_outcome_must_be_binary_without_weights():
    with pytest.raises(ValueError, match="'incidence' must be 0/1.*weights="):
        MixedGLM("incidence ~ period + (1 | herd)").fit(read("cbpp.csv.gz"))


def test_negative_counts_are_refused():
    ticks = read("grouseticks.csv.gz")
    ticks.loc[3, "TICKS"] = -1
    with pytest.raises(ValueError, match="'TICKS' has 1 negative"):
        MixedGLM("TICKS ~ cHEIGHT + (1 | BROOD)", family="poisson").fit(ticks)


def test_missing_weights_or_offset_column_is_named():
    with pytest.raises(ValueError, match="weights: column.*'trials'.*not found"):
        MixedGLM("proportion ~ period + (1 | herd)", weights="trials").fit(read("cbpp.csv.gz"))
    with pytest.raises(ValueError, match="offset: column.*'exposure'.*not found"):
        MixedGLM("TICKS ~ (1 | BROOD)", family="poisson", offset="exposure").fit(
            read("grouseticks.csv.gz")
        )


def test_invalid_settings_are_refused():
    cbpp = read("cbpp.csv.gz")
    with pytest.raises(ValueError, match="family"):
        MixedGLM("proportion ~ (1 | herd)", family="gamma", weights="size").fit(cbpp)
    with pytest.raises(ValueError, match="n_agq"):
        MixedGLM("proportion ~ (1 | herd)", n_agq=-1, weights="size").fit(cbpp)
    with pytest.raises(ValueError, match="single scalar random-effects term"):
        MixedGLM("y ~ x + (1 | user) + (1 | item)", n_agq=5).fit(read("binary.csv.gz"))
    # A count model is a regressor: it has no predict_proba (scikit-learn's hasattr).
    counts = fitted("grouseticks")
    assert not hasattr(counts, "predict_proba") and not hasattr(counts, "decision_function")
    with pytest.raises(AttributeError, match="predict_proba") as error:
        counts.predict_proba(read("grouseticks.csv.gz"))
    assert "needs family='binomial'" in str(error.value.__cause__)
    with pytest.raises(ValueError, match="scale"):
        fitted("cbpp").predict(cbpp, scale="probability")


# -- live comparison with R -------------------------------------------------------------

LIVE_SCRIPT = r"""
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
data <- read.csv(args[1], stringsAsFactors = TRUE)
fit <- glmer(y ~ x + (1 | g), data, family = poisson, nAGQ = 5,
             control = glmerControl(optimizer = "nloptwrap", tolPwrss = 1e-10,
               optCtrl = list(xtol_abs = 1e-10, ftol_abs = 1e-12, xtol_rel = 0)))
cat(toJSON(list(loglik = as.numeric(logLik(fit)), fixef = unname(fixef(fit)),
                theta = unname(getME(fit, "theta"))), digits = NA, auto_unbox = TRUE))
"""


@pytest.mark.r
@pytest.mark.skipif(shutil.which("Rscript") is None, reason="Rscript not found")
def test_live_poisson_quadrature_against_glmer(tmp_path):
    rng = np.random.default_rng(7)
    g = rng.integers(0, 30, size=600)
    x = rng.normal(size=600)
    y = rng.poisson(np.exp(0.3 + 0.5 * x + rng.normal(scale=0.6, size=30)[g]))
    data = pd.DataFrame({"g": [f"g{k}" for k in g], "x": x, "y": y})
    data.to_csv(tmp_path / "data.csv", index=False)
    (tmp_path / "fit.R").write_text(LIVE_SCRIPT)
    done = subprocess.run(
        ["Rscript", str(tmp_path / "fit.R"), str(tmp_path / "data.csv")],
        capture_output=True,
        text=True,
        check=True,
    )
    ref = json.loads(done.stdout)
    fit = MixedGLM("y ~ x + (1 | g)", family="poisson", n_agq=5).fit(data)
    assert fit.loglik_ == pytest.approx(ref["loglik"], abs=1e-4)
    np.testing.assert_allclose(fit.coef_, ref["fixef"], rtol=1e-4)
    np.testing.assert_allclose(fit.theta_, ref["theta"], rtol=1e-3)
