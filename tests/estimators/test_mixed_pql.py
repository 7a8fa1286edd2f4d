"""Penalised quasi-likelihood (``MixedGLM(solver="iterative")``) against the Laplace fit."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import estimators.mixed._glmm as glmm
from estimators import MixedGLM
from simulators import simulate

FORMULA = "y ~ x1 + (1 | user) + (1 | item)"
FIXTURES = Path(__file__).parent / "fixtures" / "data"


def _data(family: str, events: float):
    return simulate(
        "online_services",
        seed=5,
        n_users=400,
        n_items=50,
        family=family,
        events_per_user={"mean": events},
    ).frame


@pytest.fixture(scope="module")
def fits():
    out = {}
    for family, events in (("binomial", 40), ("binomial", 5), ("poisson", 10)):
        frame = _data(family, events)
        laplace = MixedGLM(FORMULA, family=family, solver="exact").fit(frame)
        pql = MixedGLM(FORMULA, family=family, solver="iterative").fit(frame)
        out[family, events] = frame, laplace, pql
    return out


@pytest.mark.parametrize("case", [("binomial", 40), ("binomial", 5), ("poisson", 10)])
def test_pql_is_near_the_laplace_fit_and_records_how_it_was_fitted(fits, case):
    frame, laplace, pql = fits[case]
    assert laplace.solver_ == "exact" and pql.solver_ == "iterative"
    assert pql.convergence_["optimizer"] == "penalised quasi-likelihood"
    assert pql.convergence_["converged"]
    np.testing.assert_allclose(pql.theta_, laplace.theta_, rtol=0.10)
    np.testing.assert_allclose(pql.coef_, laplace.coef_, rtol=0.06)
    if case[0] == "binomial":
        p, q = pql.predict_proba(frame)[:, 1], laplace.predict_proba(frame)[:, 1]
    else:
        p, q = pql.predict(frame), laplace.predict(frame)
    assert np.sqrt(np.mean((p - q) ** 2)) < 0.02 * np.sqrt(np.mean(q**2))
    # The Laplace value at the PQL estimates cannot be below its minimum (up to the
    # estimated log-determinant), and is close to it.
    assert laplace.objective_ - 0.05 < pql.objective_ < laplace.objective_ + 5


def test_pql_shrinks_binary_variance_components_more_with_fewer_rows_per_unit(fits):
    # Breslow & Lin (1995): PQL's downward bias for binary outcomes grows as units
    # have fewer rows.
    ratio_many = fits["binomial", 40][2].theta_ / fits["binomial", 40][1].theta_
    ratio_few = fits["binomial", 5][2].theta_ / fits["binomial", 5][1].theta_
    assert np.all(ratio_many < 1) and np.all(ratio_few < 1)
    assert np.all(ratio_few < ratio_many)
    assert np.all(ratio_many > 0.95)


def test_auto_turns_to_pql_when_the_laplace_fit_would_be_slow(monkeypatch):
    frame = _data("poisson", 10)
    assert MixedGLM(FORMULA, family="poisson").fit(frame).solver_ == "exact"
    monkeypatch.setattr(glmm, "EXACT_SECONDS", 0.0)
    model = MixedGLM(FORMULA, family="poisson").fit(frame)
    assert model.solver_ == "iterative"
    assert "iterative estimated" in model.convergence_["solver_reason"]
    assert np.all(np.isnan(model.theta_se_))
    assert model.convergence_["standard_errors"] == "conditional"
    assert "fit by penalized quasi-likelihood" in model.summary()


def test_pql_refuses_quadrature_and_random_slopes():
    frame = _data("binomial", 5)
    with pytest.raises(ValueError, match="quadrature needs solver='exact'"):
        MixedGLM("y ~ x1 + (1 | user)", n_agq=5, solver="iterative").fit(frame)
    with pytest.raises(ValueError, match="random intercepts only"):
        MixedGLM("y ~ x1 + (1 + x1 | user)", solver="iterative").fit(frame)


@pytest.mark.parametrize(
    ("formula", "data", "options"),
    [
        ("y ~ x + (1 | user) + (1 | item)", "binary.csv.gz", {"link": "probit"}),
        (
            "y ~ x + treat + (1 | g)",
            "counts_nb.csv.gz",
            {"family": "negative_binomial", "nb_theta": 1.5},
        ),
    ],
)
def test_pql_takes_other_links_and_a_fixed_negative_binomial(formula, data, options):
    """The working models use the link's working weights (mu_eta^2 / variance)."""
    frame = pd.read_csv(FIXTURES / data)
    laplace = MixedGLM(formula, solver="exact", **options).fit(frame)
    pql = MixedGLM(formula, solver="iterative", **options).fit(frame)
    assert pql.convergence_["converged"]
    np.testing.assert_allclose(pql.theta_, laplace.theta_, rtol=0.05)
    np.testing.assert_allclose(pql.coef_, laplace.coef_, atol=0.3 * laplace.coef_se_.max())
    assert laplace.objective_ - 0.05 < pql.objective_ < laplace.objective_ + 1
