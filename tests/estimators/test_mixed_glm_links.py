"""MixedGLM beyond glmer's defaults: links, nAGQ = 0, offsets, prior weights, the public
deviance function, and the estimator kinds (a classifier of 0/1 outcomes, a regressor of
counts).

Agreement with glmer on every fixture (written by ``benchmarks/reference/glmer_links_nb.R``)
is in ``test_mixed_glm.py``; this module checks properties and the scikit-learn contract.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import StratifiedKFold, check_cv

from estimators import MixedGLM
from estimators.mixed._pirls import EPSILON, Family

FIXTURES = Path(__file__).parent / "fixtures"


def read(name: str, factors: tuple[str, ...] = ()) -> pd.DataFrame:
    frame = pd.read_csv(FIXTURES / "data" / name)
    for column in factors:
        frame[column] = frame[column].astype(str)
    return frame


def cbpp() -> pd.DataFrame:
    return read("cbpp.csv.gz", ("herd", "period"))


@cache
def reference(model: str) -> dict:
    return json.loads((FIXTURES / "glmer" / f"{model}.json").read_text())


# -- links --------------------------------------------------------------------------------


@pytest.mark.parametrize("link", ["logit", "probit", "cloglog", "cauchit"])
def test_link_functions_invert_and_differentiate(link):
    family = Family("binomial", link)
    # Right of ~3 the means are within 1e-9 of 1, where 1 - mu has few digits left.
    eta = np.linspace(-6, 2.5, 18)
    mu = family.mean(eta)
    np.testing.assert_allclose(family.linkfun(mu), eta, rtol=1e-7, atol=1e-9)
    step = 1e-6
    numeric = (family.mean(eta + step) - family.mean(eta - step)) / (2 * step)
    np.testing.assert_allclose(family.mu_eta(eta), numeric, rtol=1e-6)
    # The working weights are the Fisher information of eta per trial.
    _, weights = family.working(mu, np.ones_like(mu), eta, np.zeros_like(eta))
    np.testing.assert_allclose(weights, family.mu_eta(eta) ** 2 / (mu * (1 - mu)), rtol=1e-12)


def test_means_are_clamped_where_lme4_clamps_them():
    # lme4's glmFamily: logit and cloglog keep mu within [eps, 1 - eps]; probit and
    # cauchit clamp only from above, so far left their mean is the distribution's tail.
    far = np.array([-40.0, 40.0])
    assert list(Family("binomial", "logit").mean(far)) == [EPSILON, 1 - EPSILON]
    assert list(Family("binomial", "cloglog").mean(far)) == [EPSILON, 1 - EPSILON]
    probit = Family("binomial", "probit").mean(far)
    assert probit[1] == 1 - EPSILON and probit[0] == pytest.approx(stats.norm.cdf(-40), rel=1e-12)
    cauchit = Family("binomial", "cauchit").mean(far)
    assert cauchit[1] == pytest.approx(1 - stats.cauchy.sf(40), rel=1e-15)
    assert cauchit[0] == pytest.approx(stats.cauchy.cdf(-40), rel=1e-12)
    # Where probit's density underflows, the row drops out of PIRLS (weight 0) rather
    # than turning its working response into nan.
    eta = np.array([-45.0, 45.0])
    response, weights = Family("binomial", "probit").working(
        np.array([0.0, 1.0]), np.ones(2), eta, np.zeros(2)
    )
    np.testing.assert_array_equal(weights, [0.0, 0.0])
    np.testing.assert_array_equal(response, eta)


def test_links_that_do_not_fit_the_family_are_refused():
    data = cbpp()
    with pytest.raises(ValueError, match=r"link: family='binomial' takes one of .*'probit'"):
        MixedGLM("proportion ~ period + (1 | herd)", link="log", weights="size").fit(data)
    with pytest.raises(ValueError, match=r"link: family='poisson' takes one of \('log',\)"):
        MixedGLM("incidence ~ period + (1 | herd)", family="poisson", link="probit").fit(data)


def test_summary_names_the_link():
    fit = MixedGLM("proportion ~ period + (1 | herd)", link="cloglog", weights="size")
    assert "Family: binomial  ( cloglog )" in fit.fit(cbpp()).summary()


# -- nAGQ = 0 ----------------------------------------------------------------------------


def test_nagq0_is_the_first_stage_and_its_deviance_function_takes_theta():
    data = cbpp()
    fast = MixedGLM("proportion ~ period + (1 | herd)", n_agq=0, weights="size").fit(data)
    laplace = MixedGLM("proportion ~ period + (1 | herd)", weights="size").fit(data)
    # Beta inside PIRLS is one point of the Laplace likelihood: never above its maximum.
    assert fast.objective_ >= laplace.objective_ - 1e-8
    assert fast.objective_ - laplace.objective_ < 0.1
    function = clone(fast).deviance_function(data)
    assert function(fast.theta_) == pytest.approx(fast.objective_, rel=1e-12)
    assert function(1.5 * fast.theta_) > fast.objective_
    assert np.isnan(fast.theta_se_).all()
    assert "nAGQ = 0" in fast.summary()


def test_deviance_function_does_not_fit_or_change_the_model():
    model = MixedGLM("proportion ~ period + (1 | herd)", weights="size")
    function = model.deviance_function(cbpp())
    ref = reference("cbpp")
    point = ref["devfun_at"][1]
    assert function(np.concatenate([point["theta"], point["beta"]])) == pytest.approx(
        point["value"], rel=1e-9
    )
    assert not hasattr(model, "n_features_in_") and not hasattr(model, "coef_")
    with pytest.raises(ValueError, match="nb_theta: the deviance function"):
        MixedGLM("incidence ~ period + (1 | herd)", family="negative_binomial").deviance_function(
            cbpp()
        )


# -- offsets -------------------------------------------------------------------------------


@cache
def exposure_fits() -> tuple[MixedGLM, MixedGLM]:
    data = read("counts_exposure.csv.gz")
    in_formula = MixedGLM(reference("counts_exposure")["formula"], family="poisson").fit(data)
    as_column = MixedGLM("y ~ x + (1 | g)", family="poisson", offset="log_exposure").fit(data)
    return in_formula, as_column


def test_an_offset_in_the_formula_or_as_a_column_is_the_same_model():
    in_formula, as_column = exposure_fits()
    ref = reference("counts_exposure")
    assert as_column.objective_ == pytest.approx(in_formula.objective_, rel=1e-10)
    np.testing.assert_allclose(as_column.coef_, list(ref["fixef"].values()), rtol=1e-5)
    new = read(ref["newdata"])
    np.testing.assert_allclose(as_column.predict(new), ref["predictions"], rtol=1e-4)
    np.testing.assert_allclose(in_formula.predict(new), ref["predictions"], rtol=1e-4)


def test_predictions_scale_with_the_exposure():
    in_formula, as_column = exposure_fits()
    new = read(reference("counts_exposure")["newdata"])
    doubled = new.assign(exposure=2 * new["exposure"], log_exposure=new["log_exposure"] + np.log(2))
    np.testing.assert_allclose(in_formula.predict(doubled), 2 * in_formula.predict(new))
    np.testing.assert_allclose(as_column.predict(doubled), 2 * as_column.predict(new))
    np.testing.assert_allclose(
        in_formula.predict(doubled, scale="link"), in_formula.predict(new, scale="link") + np.log(2)
    )
    with pytest.raises(ValueError, match="exposure"):
        in_formula.predict(new.drop(columns="exposure"))


# -- prior weights ---------------------------------------------------------------------------


def test_sample_weight_is_glmer_weights():
    data = cbpp()
    column = MixedGLM("proportion ~ period + (1 | herd)", weights="size").fit(data)
    passed = MixedGLM("proportion ~ period + (1 | herd)").fit(data, sample_weight=data["size"])
    assert passed.objective_ == pytest.approx(column.objective_, rel=1e-12)
    np.testing.assert_allclose(passed.coef_, column.coef_, rtol=1e-8)
    # Both given: multiplied, as doubling every herd's animals.
    both = MixedGLM("proportion ~ period + (1 | herd)", weights="size").fit(
        data, sample_weight=np.full(len(data), 2.0)
    )
    doubled = MixedGLM("proportion ~ period + (1 | herd)", weights="size2").fit(
        data.assign(size2=2 * data["size"])
    )
    assert both.objective_ == pytest.approx(doubled.objective_, rel=1e-12)
    np.testing.assert_allclose(both.coef_, doubled.coef_, rtol=1e-8)


def test_integer_sample_weights_act_as_repeated_rows():
    data = read("counts_exposure.csv.gz")
    repeats = np.where(np.arange(len(data)) % 3 == 0, 2, 1)
    weighted = MixedGLM("y ~ x + (1 | g)", family="poisson").fit(data, sample_weight=repeats)
    repeated = MixedGLM("y ~ x + (1 | g)", family="poisson").fit(
        data.loc[data.index.repeat(repeats)]
    )
    # The same likelihood; the optima agree to the optimiser's tolerance.
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, rtol=1e-4)
    np.testing.assert_allclose(weighted.theta_, repeated.theta_, rtol=1e-4)
    assert weighted.loglik_ == pytest.approx(repeated.loglik_, rel=1e-9)


def test_bad_sample_weights_are_refused_by_name():
    data = cbpp()
    model = MixedGLM("proportion ~ period + (1 | herd)", weights="size")
    with pytest.raises(ValueError, match=r"sample_weight: expected 56 values.*shape \(3,\)"):
        model.fit(data, sample_weight=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="sample_weight: 1 negative"):
        model.fit(data, sample_weight=np.r_[-1.0, np.ones(55)])
    with pytest.raises(ValueError, match="sample_weight: 1 missing or infinite"):
        model.fit(data, sample_weight=np.r_[np.nan, np.ones(55)])
    with pytest.raises(ValueError, match="column 'size' and sample_weight are 0 in every row"):
        model.fit(data, sample_weight=np.zeros(56))


# -- a classifier of 0/1 outcomes, a regressor of counts --------------------------------------


@cache
def binary_fit() -> tuple[MixedGLM, pd.DataFrame]:
    data = read("binary.csv.gz")
    return MixedGLM("y ~ x + (1 | user) + (1 | item)", link="probit").fit(data), data


def test_binomial_is_a_classifier_and_counts_a_regressor():
    assert is_classifier(MixedGLM()) and not is_regressor(MixedGLM())
    counts = MixedGLM(family="poisson")
    assert is_regressor(counts) and not is_classifier(counts)
    assert is_regressor(MixedGLM(family="negative_binomial"))
    # set_params changes the kind, as the tags are read from the parameters.
    assert is_regressor(MixedGLM().set_params(family="poisson"))
    # So scikit-learn stratifies the folds of a classifier.
    y = np.tile([0, 1], 20)
    assert isinstance(check_cv(5, y, classifier=is_classifier(MixedGLM())), StratifiedKFold)


def test_classifier_predicts_labels_probabilities_and_scores_accuracy():
    fit, data = binary_fit()
    np.testing.assert_array_equal(fit.classes_, [0, 1])
    proba = fit.predict_proba(data)
    labels = fit.predict(data)
    assert labels.dtype.kind == "i"
    np.testing.assert_array_equal(labels, fit.classes_[(proba[:, 1] > 0.5).astype(int)])
    # probit is symmetric: a probability above 1/2 is a positive linear predictor.
    np.testing.assert_array_equal(labels, (fit.decision_function(data) > 0).astype(int))
    assert fit.score(data) == pytest.approx(accuracy_score(data["y"], labels))
    assert fit.score(data.drop(columns="y"), data["y"]) == fit.score(data)
    # Better than always predicting the more common class.
    assert fit.score(data) > max(data["y"].mean(), 1 - data["y"].mean())
    with pytest.raises(ValueError, match="scale: family='binomial' predicts class labels"):
        fit.predict(data, scale="response")


def test_accuracy_of_proportions_counts_trials():
    data = cbpp()
    fit = MixedGLM("proportion ~ period + (1 | herd)", weights="size").fit(data)
    sick = fit.predict(data) == 1
    correct = np.where(sick, data["incidence"], data["size"] - data["incidence"]).sum()
    assert fit.score(data) == pytest.approx(correct / data["size"].sum())


def test_count_regressor_scores_r2_of_the_mean():
    _, as_column = exposure_fits()
    data = read("counts_exposure.csv.gz")
    assert not hasattr(as_column, "classes_")
    assert as_column.score(data) == pytest.approx(r2_score(data["y"], as_column.predict(data)))
    with pytest.raises(AttributeError, match="no attribute 'predict_proba'"):
        as_column.predict_proba(data)


def test_the_simulating_link_is_recovered_and_preferred():
    """0/1 outcomes simulated with a cloglog link: the cloglog fit's Wald intervals
    cover the simulated effects and its likelihood beats the logit fit's."""
    rng = np.random.default_rng(11)
    g = rng.integers(0, 150, size=6000)
    x = rng.normal(size=g.size)
    eta = -1.0 + 0.8 * x + rng.normal(scale=0.7, size=150)[g]
    data = pd.DataFrame({"g": g, "x": x, "y": rng.binomial(1, -np.expm1(-np.exp(eta)))})
    cloglog = MixedGLM("y ~ x + (1 | g)", link="cloglog").fit(data)
    logit = MixedGLM("y ~ x + (1 | g)").fit(data)
    wald = cloglog.confint(0.999)
    for name, truth in (("(Intercept)", -1.0), ("x", 0.8)):
        assert wald.loc[name].iloc[0] < truth < wald.loc[name].iloc[1], name
    assert abs(cloglog.theta_[0] - 0.7) < 3.29 * cloglog.theta_se_[0]
    assert cloglog.loglik_ > logit.loglik_ + 5
