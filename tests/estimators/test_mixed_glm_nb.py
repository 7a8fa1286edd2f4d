"""MixedGLM(family="negative_binomial"): glmer.nb's model at a fixed theta, the profile
over theta, the first estimate, and refusals.

The estimated theta, the fit at it and its predictions are compared with glmer.nb on
simulated counts and grouseticks in ``test_mixed_glm.py`` (fixtures written by
``benchmarks/reference/glmer_links_nb.R``).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import r2_score

from estimators import MixedGLM
from estimators.mixed._glmm import theta_ml

FIXTURES = Path(__file__).parent / "fixtures"
FORMULA = "y ~ x + treat + (1 | g)"


@cache
def reference() -> dict:
    return json.loads((FIXTURES / "glmer" / "counts_nb.json").read_text())


@cache
def data() -> pd.DataFrame:
    return pd.read_csv(FIXTURES / "data" / "counts_nb.csv.gz")


@cache
def at_theta(nb_theta: float) -> MixedGLM:
    return MixedGLM(FORMULA, family="negative_binomial", nb_theta=nb_theta).fit(data())


def test_a_fixed_theta_reproduces_glmer_at_that_theta():
    ref = reference()
    fit = at_theta(ref["nb_theta"])
    assert fit.nb_theta_ == ref["nb_theta"]
    assert "nb_theta" not in fit.convergence_  # nothing estimated
    assert fit.objective_ == pytest.approx(ref["objective_devfun"], rel=1e-9)
    np.testing.assert_allclose(fit.coef_, list(ref["fixef"].values()), rtol=1e-4)
    np.testing.assert_allclose(fit.theta_, ref["theta"], rtol=1e-4)
    np.testing.assert_allclose(fit.coef_se_, list(ref["fixef_se_vcov"].values()), rtol=1e-4)
    # lme4 counts theta as a parameter, fixed or not (npar.merMod).
    assert fit.aic_ == pytest.approx(ref["aic"], abs=1e-5)


def test_glmer_nb_theta_maximises_the_likelihood_over_theta():
    best = at_theta(reference()["nb_theta"])
    for factor in (0.9, 1.1):
        assert at_theta(reference()["nb_theta"] * factor).objective_ > best.objective_ + 0.01


def test_negative_binomial_fits_overdispersed_counts_better_than_poisson():
    poisson = MixedGLM(FORMULA, family="poisson").fit(data())
    negative_binomial = at_theta(reference()["nb_theta"])
    assert negative_binomial.aic_ < poisson.aic_ - 100
    # The counts were simulated with size 1.5 (glmer_links_nb.R).
    assert 1.2 < negative_binomial.nb_theta_ < 1.9


def test_quadrature_compares_full_likelihoods_across_theta():
    """glmer.nb(nAGQ = 5) on these counts ends at theta 0.083, the edge of its interval,
    with a singular fit (R 4.2, lme4 1.1-31): its quadrature deviances leave out the
    saturated part, which depends on theta. The full likelihood peaks near the Laplace
    estimate."""
    fit = MixedGLM(FORMULA, family="negative_binomial", n_agq=5).fit(data())
    assert fit.nb_theta_ == pytest.approx(reference()["nb_theta"], rel=0.01)
    assert not fit.convergence_["nb_theta"]["at_edge"] and not fit.is_singular_


def test_first_estimate_recovers_theta_from_known_means():
    """MASS's theta.ml given the true means: consistent for the simulated size."""
    rng = np.random.default_rng(3)
    mu = np.exp(rng.normal(1.0, 0.5, size=40_000))
    for size in (0.7, 2.0, 8.0):
        y = rng.negative_binomial(size, size / (size + mu))
        estimate = theta_ml(y.astype(float), mu, np.ones_like(mu))
        assert estimate == pytest.approx(size, rel=0.05)


def test_a_count_regressor_predicting_the_mean():
    fit = at_theta(reference()["nb_theta"])
    new = pd.read_csv(FIXTURES / "data" / reference()["newdata"])
    np.testing.assert_allclose(fit.predict(new), reference()["predictions"], rtol=1e-4)
    np.testing.assert_allclose(fit.predict(new), np.exp(fit.predict(new, scale="link")))
    assert fit.score(data()) == pytest.approx(r2_score(data()["y"], fit.predict(data())))


def test_settings_that_do_not_fit_are_refused():
    frame = data()
    with pytest.raises(ValueError, match="nb_theta: only family='negative_binomial'"):
        MixedGLM(FORMULA, family="poisson", nb_theta=2.0).fit(frame)
    for bad in (0.0, -1.0, np.inf, "2"):
        with pytest.raises(ValueError, match="nb_theta: expected a positive number"):
            MixedGLM(FORMULA, family="negative_binomial", nb_theta=bad).fit(frame)
    with pytest.raises(ValueError, match="nb_theta: an estimated negative binomial theta needs"):
        MixedGLM(FORMULA, family="negative_binomial", solver="iterative").fit(frame)
    with pytest.raises(ValueError, match="family='negative_binomial' needs counts"):
        MixedGLM(FORMULA, family="negative_binomial").fit(frame.assign(y=frame["y"] - 5))
