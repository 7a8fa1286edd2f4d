"""The sparse solver gives the exact solver's estimates, and auto takes it for nested designs."""

import numpy as np
import pandas as pd
import pytest

import estimators.mixed._solvers as solvers
from estimators import MixedLM
from estimators.mixed._sparse import SparseDeviance, connected_groups

NESTED = "y ~ x + (1 | user) + (1 | user:session)"


@pytest.fixture(scope="module")
def sessions():
    """Users with sessions nested in them: 300 users, 1-8 sessions, 1-6 rows each."""
    rng = np.random.default_rng(4)
    rows = []
    for user in range(300):
        for session in range(rng.integers(1, 9)):
            for _ in range(rng.integers(1, 7)):
                rows.append((f"u{user}", f"s{session}"))
    frame = pd.DataFrame(rows, columns=["user", "session"])
    frame["x"] = rng.normal(size=len(frame))
    user_effect = dict(zip(frame["user"].unique(), rng.normal(0, 0.7, 300), strict=True))
    pairs = frame["user"] + ":" + frame["session"]
    session_effect = dict(zip(pairs.unique(), rng.normal(0, 0.4, pairs.nunique()), strict=True))
    frame["y"] = (
        1.0
        + (0.5 + rng.normal(0, 0.3, 300)[frame["user"].str[1:].astype(int)]) * frame["x"]
        + frame["user"].map(user_effect)
        + pairs.map(session_effect)
        + rng.normal(size=len(frame))
    )
    return frame


@pytest.mark.parametrize("formula", [NESTED, "y ~ x + (1 + x | user) + (1 | user:session)"])
@pytest.mark.parametrize("reml", [True, False])
def test_sparse_agrees_with_exact(sessions, formula, reml):
    exact = MixedLM(formula, reml=reml, solver="exact").fit(sessions)
    sparse = MixedLM(formula, reml=reml, solver="sparse").fit(sessions)
    assert sparse.solver_ == "sparse"
    np.testing.assert_allclose(sparse.theta_, exact.theta_, rtol=1e-4, atol=1e-6)
    assert sparse.objective_ == pytest.approx(exact.objective_, rel=1e-9)
    np.testing.assert_allclose(sparse.coef_, exact.coef_, rtol=1e-5)
    np.testing.assert_allclose(sparse.predict(sessions), exact.predict(sessions), atol=1e-5)


def test_the_sparse_criterion_and_solution_equal_the_exact_ones_at_any_theta(sessions):
    exact = MixedLM(NESTED, solver="exact").fit(sessions)
    objective = exact._objective
    sparse = SparseDeviance(objective)
    for theta in (exact.theta_, exact.theta_ * 1.7, np.array([0.2, 2.0])):
        assert sparse(theta) == pytest.approx(objective(theta), rel=1e-11)
    state = sparse.state(exact.theta_)
    solution = sparse.solution(state)
    # Sessions nest in users: no session links two users, so S is diagonal and even
    # the blockwise conditional variances are exact.
    for k in range(2):
        np.testing.assert_allclose(solution.b[k], exact._term_b[k], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(solution.b_cov[k], exact._term_cov[k], rtol=1e-8)
    assert state.fill <= 2 * objective.n_rest


def test_auto_takes_sparse_for_nested_factors_when_exact_is_slow(sessions, monkeypatch):
    assert MixedLM(NESTED).fit(sessions).solver_ == "exact"
    monkeypatch.setattr(solvers, "EXACT_SECONDS", 0.0)
    model = MixedLM(NESTED).fit(sessions)
    assert model.solver_ == "sparse"
    assert "no two of its levels are linked" in model.convergence_["solver_reason"]
    # An update keeps the fitted solver where one exact evaluation is not cheap.
    model.update(sessions.iloc[:50])
    assert model.convergence_["update_solver"] == "sparse"


def test_connected_groups_bound_the_fill(sessions):
    objective = MixedLM(NESTED, solver="exact").fit(sessions)._objective
    groups = connected_groups(objective)
    assert groups.size == 300 and groups.max() == 1
    assert connected_groups(objective, max_pairs=10) is None
