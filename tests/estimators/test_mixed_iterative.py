"""The iterative solver agrees with the exact one, and ``solver="auto"`` chooses well."""

import numpy as np
import pytest
import scipy.sparse as sp

import estimators.mixed._deviance as deviance
import estimators.mixed._solvers as solvers
from estimators import MixedLM
from estimators.mixed._iterative import block_cg, lanczos_log_quadrature
from simulators import simulate

CROSSED = "y ~ x1 + x2 + (1 | user) + (1 | item)"


@pytest.fixture(scope="module")
def crossed():
    data = simulate(
        "online_services",
        seed=11,
        n_users=600,
        n_items=80,
        n_features=2,
        events_per_user={"mean": 8},
    )
    return data.frame


@pytest.fixture(scope="module")
def many_items():
    """More items than get exact traces: the Rademacher estimates are exercised."""
    data = simulate(
        "online_services",
        seed=12,
        n_users=1500,
        n_items=400,
        n_features=2,
        events_per_user={"mean": 8},
    )
    return data.frame


def test_stochastic_traces_agree_with_exact(many_items):
    exact = MixedLM(CROSSED, solver="exact").fit(many_items)
    iterative = MixedLM(CROSSED, solver="iterative").fit(many_items)
    assert iterative.convergence_["probes"] == 32  # Rademacher only: items > 128
    ratio = _variances(iterative) / _variances(exact)
    assert np.all(np.abs(ratio - 1) < 0.01), ratio
    assert _relative_rmse(iterative.predict(many_items), exact.predict(many_items)) < 1e-3
    assert abs(iterative.objective_ - exact.objective_) < 1e-4 * abs(exact.objective_)


def test_few_levels_get_exact_traces(crossed):
    formula = "y ~ x1 + (1 | user) + (1 | item) + (1 | region)"
    exact = MixedLM(formula, solver="exact").fit(crossed)
    iterative = MixedLM(formula, solver="iterative").fit(crossed)
    # 80 items and 10 regions are probed by their 90 unit vectors: exact traces and
    # log-determinant, so the iterative fit is the exact one to solver tolerance.
    assert iterative.convergence_["probes"] == crossed["item"].nunique() + 10
    np.testing.assert_allclose(iterative.theta_, exact.theta_, rtol=1e-5)
    assert iterative.objective_ == pytest.approx(exact.objective_, rel=1e-9)


def _relative_rmse(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)))


def _variances(model):
    return model.varcorr_.set_index("grp")["vcov"]


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("formula", [CROSSED, "y ~ x1 + (1 | user) + (1 | item) + (1 | region)"])
def test_iterative_agrees_with_exact(crossed, formula, reml):
    exact = MixedLM(formula, reml=reml, solver="exact").fit(crossed)
    iterative = MixedLM(formula, reml=reml, solver="iterative").fit(crossed)
    assert exact.solver_ == "exact" and iterative.solver_ == "iterative"
    assert iterative.convergence_["converged"]
    ratio = _variances(iterative) / _variances(exact)
    assert np.all(np.abs(ratio - 1) < 0.01), ratio
    np.testing.assert_allclose(iterative.coef_, exact.coef_, atol=1e-3 * exact.coef_se_.max())
    np.testing.assert_allclose(iterative.coef_se_, exact.coef_se_, rtol=5e-3)
    assert _relative_rmse(iterative.predict(crossed), exact.predict(crossed)) < 1e-3
    for group, modes in exact.ranef_.items():
        assert _relative_rmse(iterative.ranef_[group].to_numpy(), modes.to_numpy()) < 1e-2
    # The criterion's log-determinant is estimated: close, not equal.
    assert abs(iterative.objective_ - exact.objective_) < 1e-4 * abs(exact.objective_)


def test_conditional_variances_are_a_close_lower_bound(crossed):
    exact = MixedLM(CROSSED, solver="exact").fit(crossed)
    iterative = MixedLM(CROSSED, solver="iterative").fit(crossed)
    for group in ("user", "item"):
        ratio = (iterative.ranef_var_[group] / exact.ranef_var_[group]).to_numpy().ravel()
        # The Jacobi approximation leaves out the coupling between factors, which only
        # adds variance; at these variance components the two agree closely.
        assert np.all(ratio < 1.0 + 2e-3), group
        assert np.median(ratio) > 0.95, group


@pytest.mark.parametrize("solver", ["iterative", "sparse"])
def test_one_factor_alone_is_exact_with_every_solver(crossed, solver):
    exact = MixedLM("y ~ x1 + (1 | user)", solver="exact").fit(crossed)
    other = MixedLM("y ~ x1 + (1 | user)", solver=solver).fit(crossed)
    np.testing.assert_allclose(other.theta_, exact.theta_, rtol=1e-5)
    assert other.objective_ == pytest.approx(exact.objective_, rel=1e-10)
    np.testing.assert_allclose(other.ranef_var_["user"], exact.ranef_var_["user"], rtol=1e-6)


def test_iterative_fit_is_deterministic(crossed):
    first = MixedLM(CROSSED, solver="iterative").fit(crossed)
    second = MixedLM(CROSSED, solver="iterative").fit(crossed)
    np.testing.assert_array_equal(first.theta_, second.theta_)
    np.testing.assert_array_equal(first.predict(crossed), second.predict(crossed))


def test_update_of_an_iterative_fit_matches_a_fit_at_fixed_theta(crossed):
    old, new = crossed.iloc[: len(crossed) * 3 // 4], crossed.iloc[len(crossed) * 3 // 4 :]
    model = MixedLM(CROSSED, solver="iterative").fit(old)
    theta = model.theta_.copy()
    model.update(new)
    reference = MixedLM(CROSSED, solver="iterative")._fit_at_theta(crossed, theta=theta)
    assert model.solver_ == "iterative" and model.convergence_["update_solver"] == "iterative"
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(model.predict(crossed), reference.predict(crossed), rtol=1e-6)
    assert model.sigma_ == pytest.approx(reference.sigma_, rel=1e-8)


def test_an_auto_update_takes_the_exact_solver_where_one_evaluation_is_cheap(crossed, monkeypatch):
    monkeypatch.setattr(solvers, "EXACT_SECONDS", 0.0)  # the fit goes iterative ...
    old, new = crossed.iloc[: len(crossed) // 2], crossed.iloc[len(crossed) // 2 :]
    model = MixedLM(CROSSED).fit(old)
    assert model.solver_ == "iterative"
    monkeypatch.setattr(solvers, "EXACT_SECONDS", 4.0)  # ... one evaluation is cheap
    model.update(new)
    assert model.convergence_["update_solver"] == "exact"
    reference = MixedLM(CROSSED, solver="exact")._fit_at_theta(crossed, theta=model.theta_)
    np.testing.assert_allclose(model.predict(crossed), reference.predict(crossed), rtol=1e-8)


def test_auto_takes_exact_on_small_designs_and_iterative_when_exact_is_slow(crossed, monkeypatch):
    small = MixedLM(CROSSED).fit(crossed)
    assert small.solver_ == "exact"
    assert "dense block 84 x 84" in small.convergence_["solver_reason"]
    monkeypatch.setattr(solvers, "EXACT_SECONDS", 0.0)
    slow = MixedLM(CROSSED).fit(crossed)
    assert slow.solver_ == "iterative"
    assert "iterative estimated" in slow.convergence_["solver_reason"]
    assert slow.convergence_["solution_solver"] == "iterative"
    # Where one exact factorisation is cheap (a fortieth of a fit under a quarter of the
    # budget) but a fit is not, auto takes the final estimates from one factorisation.
    fit_seconds = solvers.estimate_costs(small._objective).exact_seconds
    monkeypatch.setattr(solvers, "EXACT_SECONDS", fit_seconds / 2)
    final = MixedLM(CROSSED).fit(crossed)
    assert final.solver_ == "iterative" and final.convergence_["solution_solver"] == "exact"
    exact = MixedLM(CROSSED, solver="exact")._fit_at_theta(crossed, theta=final.theta_)
    assert final.objective_ == pytest.approx(exact.objective_, rel=1e-12)
    np.testing.assert_allclose(final.ranef_var_["item"], exact.ranef_var_["item"], rtol=1e-10)
    # Random slopes take the iterative solver too when the exact one is slow.
    slopes = MixedLM("y ~ treat + (1 + treat | user) + (1 | item)").fit(crossed)
    assert slopes.solver_ == "iterative" and slopes.convergence_["converged"]


def test_auto_turns_to_iterative_when_the_exact_block_does_not_fit(monkeypatch):
    many_items = simulate(
        "online_services", seed=2, n_users=600, n_items=400, events_per_user={"mean": 8}
    ).frame
    # The items, 2 fixed effects and y after the users: a dense block of ~3.5 MB at its
    # peak; the iterative solver's vectors and copies take about 1.3 MB.
    items = many_items["item"].nunique()
    monkeypatch.setattr(deviance, "available_memory_bytes", lambda: 2_500_000)
    formula = "y ~ x1 + (1 | user) + (1 | item)"
    with pytest.raises(MemoryError) as error:
        MixedLM(formula, solver="exact").fit(many_items)
    message = str(error.value)
    assert f"dense {items + 3} x {items + 3} matrix" in message
    assert f"item: {items} levels" in message
    assert "solver='iterative' needs about 0.0 GB" in message
    model = MixedLM(formula).fit(many_items)
    assert model.solver_ == "iterative"
    assert "more than the memory available" in model.convergence_["solver_reason"]


def test_a_design_no_solver_can_hold_is_refused_naming_both(crossed, monkeypatch):
    monkeypatch.setattr(deviance, "available_memory_bytes", lambda: 1000)
    with pytest.raises(MemoryError, match="solver='iterative' would need about"):
        MixedLM(CROSSED).fit(crossed)
    with pytest.raises(MemoryError, match="the iterative solver needs about"):
        MixedLM(CROSSED, solver="iterative").fit(crossed)
    with pytest.raises(MemoryError, match="solver='iterative' would need about"):
        MixedLM("y ~ x1 + (1 + x1 | user) + (1 | item)").fit(crossed)


def test_bad_solver_requests_are_refused(crossed):
    with pytest.raises(ValueError, match="solver: expected one of"):
        MixedLM(CROSSED, solver="cholmod").fit(crossed)
    model = MixedLM(CROSSED, solver="iterative").fit(crossed)
    with pytest.raises(ValueError, match="refit with solver='exact'"):
        model.confint(method="profile")


def test_block_cg_solves_each_column():
    rng = np.random.default_rng(0)
    B = sp.random(30, 50, density=0.2, random_state=1, format="csr")
    RR = sp.diags(rng.uniform(1, 5, 30) + np.asarray(B.multiply(B).sum(axis=1)).ravel())

    class Operator:
        diagonal = RR.diagonal() + 1 - np.asarray(B.multiply(B).sum(axis=1)).ravel()

        def __call__(self, V):
            return RR @ V + V - B @ (B.T @ V)

    dense = RR.toarray() + np.eye(30) - (B @ B.T).toarray()
    rhs = rng.normal(size=(30, 4))
    solution, products = block_cg(Operator(), rhs, None)
    np.testing.assert_allclose(dense @ solution, rhs, atol=1e-8)
    assert 0 < products <= 30


def test_lanczos_quadrature_estimates_the_log_determinant():
    rng = np.random.default_rng(3)
    A = rng.normal(size=(200, 200)) / 40
    M = np.eye(200) + A @ A.T
    scale = 1 / np.sqrt(np.diag(M))
    M = M * scale[:, None] * scale[None, :]  # unit diagonal, as the solver scales S
    probes = rng.choice([-1.0, 1.0], size=(200, 64))
    estimate = 200 * np.mean(lanczos_log_quadrature(lambda V: M @ V, probes))
    exact = np.linalg.slogdet(M)[1]
    assert abs(estimate - exact) < 0.02 * abs(exact) + 0.05


@pytest.fixture(scope="module")
def treated():
    """Users crossed with 300 items (Rademacher traces for the items) and per-user and
    per-item treatment effects."""
    data = simulate(
        "online_services",
        seed=11,
        n_users=2500,
        n_items=300,
        n_features=2,
        events_per_user={"mean": 8},
    )
    return data.frame


@pytest.mark.parametrize(
    "formula",
    [
        "y ~ treat + (1 + treat | user) + (1 | item)",
        "y ~ treat + (1 | user) + (1 + treat | item)",
        "y ~ treat + (1 + treat | user) + (1 + treat | item)",
    ],
    ids=["first", "rest", "both"],
)
def test_random_slopes_agree_with_exact(treated, formula):
    exact = MixedLM(formula, solver="exact").fit(treated)
    iterative = MixedLM(formula, solver="iterative").fit(treated)
    assert iterative.solver_ == "iterative" and iterative.convergence_["converged"]
    assert iterative.convergence_["stationarity"] < 1e-4
    exact_vc, iterative_vc = (
        m.varcorr_.set_index(["grp", "var1", "var2"]) for m in (exact, iterative)
    )
    variances = exact_vc.index.get_level_values("var2").isna()
    ratio = iterative_vc["vcov"][variances] / exact_vc["vcov"][variances]
    assert np.all(np.abs(ratio - 1) < 0.01), ratio
    # Correlations (sdcor of the covariance rows), on their own scale.
    np.testing.assert_allclose(
        iterative_vc["sdcor"][~variances], exact_vc["sdcor"][~variances], atol=0.02
    )
    np.testing.assert_allclose(
        iterative.coef_, exact.coef_, rtol=1e-3, atol=1e-3 * exact.coef_se_.max()
    )
    assert _relative_rmse(iterative.predict(treated), exact.predict(treated)) < 1e-3
    for group, modes in exact.ranef_.items():
        assert _relative_rmse(iterative.ranef_[group].to_numpy(), modes.to_numpy()) < 1e-2
    assert abs(iterative.objective_ - exact.objective_) < 1e-4 * abs(exact.objective_)
    # theta keeps lme4's layout and meaning: the exact criterion there is near its optimum.
    assert exact._objective(iterative.theta_) - exact.objective_ < 1e-2


def test_slope_traces_are_exact_for_few_levels(treated):
    formula = "y ~ treat + (1 + treat | user) + (1 | region)"
    exact = MixedLM(formula, solver="exact").fit(treated)
    iterative = MixedLM(formula, solver="iterative").fit(treated)
    # 10 regions probed by their unit vectors: exact traces and log-determinant.
    assert iterative.convergence_["probes"] == 10
    np.testing.assert_allclose(iterative.theta_, exact.theta_, rtol=1e-4, atol=1e-6)
    assert iterative.objective_ == pytest.approx(exact.objective_, rel=1e-9)


def test_pql_keeps_refusing_random_slopes_iteratively(crossed):
    # Penalised quasi-likelihood reads scalar first-term blocks for its Laplace value.
    with pytest.raises(ValueError, match="random intercepts only"):
        solvers.choose_solver(
            "iterative",
            MixedLM("y ~ x1 + (1 + x1 | user) + (1 | item)", solver="exact")
            .fit(crossed)
            ._objective,
            ["user", "item"],
            "MixedGLM",
        )
