import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import mean_poisson_deviance
from sklearn.model_selection import KFold

import estimators
from estimators import HistGBMPoisson, PoissonFixedEffects, PoissonRidge
from estimators._poisson import NEWTON_MAX_COLUMNS, poisson_solver
from harness.metrics import effect_corr
from simulators import simulate

FEATURES = ["x1", "x2", "x3", "treat"]


@pytest.fixture(scope="module")
def dense_units():
    """40 users with about 30 events each on 8 items: every user and item has counts."""
    data = simulate(
        "online_services",
        seed=5,
        n_users=40,
        n_items=8,
        family="poisson",
        events_per_user={"mean": 30, "tail": 0.2},
    )
    totals = data.y.groupby(data.frame["user"].to_numpy(), observed=True).sum()
    assert totals.min() > 0
    return data


def _statsmodels_glm(frame: pd.DataFrame, y: np.ndarray):
    """statsmodels' Poisson GLM on the treatment-coded design R's glm builds."""
    sm = pytest.importorskip("statsmodels.api")
    dummies = pd.get_dummies(frame[["user", "item"]].astype(str), drop_first=True, dtype=float)
    design = sm.add_constant(pd.concat([frame[FEATURES].astype(float), dummies], axis=1))
    return sm.GLM(y, design, family=sm.families.Poisson()).fit(tol=1e-13, maxiter=100), design


def _reference_effects(params: pd.Series, levels: pd.Index, factor: str) -> pd.Series:
    """A factor's treatment-coded effects (first level 0), centred."""
    effects = pd.Series([params.get(f"{factor}_{level}", 0.0) for level in levels], index=levels)
    return effects - effects.mean()


def test_fixed_effects_match_statsmodels_glm(dense_units):
    frame, y = dense_units.frame, dense_units.y.to_numpy()
    ours = PoissonFixedEffects(feature_cols=FEATURES, group_cols=["user", "item"]).fit(frame, y)
    reference, design = _statsmodels_glm(frame, y)
    assert ours.solver_ == "newton-cholesky"
    np.testing.assert_allclose(ours.coef_[FEATURES], reference.params[FEATURES], rtol=1e-6)
    np.testing.assert_allclose(ours.predict(frame), reference.predict(design), rtol=1e-6)
    for factor in ["user", "item"]:
        expected = _reference_effects(reference.params, ours.levels_[factor].levels, factor)
        np.testing.assert_allclose(ours.group_effects_[factor], expected, atol=1e-6)


def test_lbfgs_reaches_the_same_fit(dense_units):
    frame, y = dense_units.frame, dense_units.y
    newton = PoissonFixedEffects(feature_cols=FEATURES, group_cols=["user", "item"]).fit(frame, y)
    lbfgs = PoissonFixedEffects(
        feature_cols=FEATURES, group_cols=["user", "item"], solver="lbfgs"
    ).fit(frame, y)
    assert lbfgs.solver_ == "lbfgs"
    np.testing.assert_allclose(lbfgs.predict(frame), newton.predict(frame), rtol=1e-4)
    np.testing.assert_allclose(lbfgs.coef_, newton.coef_, rtol=1e-4)


def test_auto_solver_is_newton_while_the_hessian_is_small():
    assert poisson_solver("auto", NEWTON_MAX_COLUMNS) == "newton-cholesky"
    assert poisson_solver("auto", NEWTON_MAX_COLUMNS + 1) == "lbfgs"
    assert poisson_solver("lbfgs", 10) == "lbfgs"
    with pytest.raises(ValueError, match="solver: expected one of"):
        poisson_solver("irls", 10)


@pytest.mark.filterwarnings("error")  # the Newton solver stops without complaint
def test_a_unit_with_only_zero_counts_gets_a_large_negative_effect_and_moves_nothing_else(
    dense_units,
):
    frame, y = dense_units.frame, dense_units.y.to_numpy().copy()
    silent = frame["user"].cat.categories[0]  # the first level: glm's reference
    rows = (frame["user"] == silent).to_numpy()
    y[rows] = 0.0
    model = PoissonFixedEffects(feature_cols=FEATURES, group_cols=["user", "item"]).fit(frame, y)
    assert model.zero_levels_["user"].tolist() == [silent]
    assert model.zero_levels_["item"].empty
    assert model.group_effects_["user"][silent] < -10
    assert model.predict(frame[rows]).max() < 1e-4

    # In the limit those rows carry no information: the rest is the fit without them,
    # including the intercept, as the silent unit is left out of the centring.
    rest = PoissonFixedEffects(feature_cols=FEATURES, group_cols=["user", "item"]).fit(
        frame[~rows], y[~rows]
    )
    np.testing.assert_allclose(model.coef_, rest.coef_, rtol=1e-6)
    assert model.intercept_ == pytest.approx(rest.intercept_, rel=1e-6)
    others = model.group_effects_["user"].drop(silent)
    np.testing.assert_allclose(others, rest.group_effects_["user"].loc[others.index], atol=1e-6)
    np.testing.assert_allclose(model.group_effects_["item"], rest.group_effects_["item"], atol=1e-6)


def test_lbfgs_stops_at_max_iter_on_a_unit_with_only_zero_counts(dense_units):
    frame, y = dense_units.frame, dense_units.y.to_numpy().copy()
    y[(frame["user"] == frame["user"].cat.categories[2]).to_numpy()] = 0.0
    model = PoissonFixedEffects(
        feature_cols=FEATURES, group_cols=["user", "item"], solver="lbfgs", max_iter=200
    )
    with pytest.warns(ConvergenceWarning):
        model.fit(frame, y)
    assert model.group_effects_["user"].iloc[2] < -5


def test_unseen_levels_get_the_population_mean(dense_units):
    frame, y = dense_units.frame, dense_units.y
    model = PoissonFixedEffects(feature_cols=FEATURES, group_cols=["user", "item"]).fit(frame, y)
    new = frame.iloc[:5].copy()
    new["user"] = "nobody"
    item_effect = model.group_effects_["item"].loc[new["item"]].to_numpy()
    expected = np.exp(model.intercept_ + new[FEATURES].to_numpy(float) @ model.coef_ + item_effect)
    np.testing.assert_allclose(model.predict(new), expected)
    strict = PoissonFixedEffects(
        feature_cols=FEATURES, group_cols=["user", "item"], new_levels="error"
    ).fit(frame, y)
    with pytest.raises(ValueError, match="group column 'user': 1 level"):
        strict.predict(new)


def test_fixed_effects_recover_the_simulation_truth():
    data = simulate(
        "online_services",
        seed=21,
        n_users=300,
        n_items=30,
        family="poisson",
        events_per_user={"mean": 20, "tail": 0.2},
        # Effects the model has no terms for, switched off: per-user treatment slopes
        # and the day-of-week cycle.
        sd={"user_slope": 0.0},
        time={"weekly_amplitude": 0.0},
    )
    model = PoissonFixedEffects(feature_cols=FEATURES, group_cols=["user", "item"]).fit(
        data.X, data.y
    )
    truth = pd.Series(data.truth["fixed_effects"])[FEATURES]
    # Standard errors are about 0.01 at this size.
    np.testing.assert_allclose(model.coef_[FEATURES], truth, atol=0.05)
    assert effect_corr(model, data.truth, "item") > 0.95
    assert effect_corr(model, data.truth, "user") > 0.8


def _fixed_and_ridge_user_effects(events_per_user: float) -> tuple[pd.Series, pd.Series]:
    data = simulate(
        "online_services",
        seed=22,
        n_users=30,
        n_items=5,
        family="poisson",
        events_per_user={"mean": events_per_user, "tail": 0.0},
    )
    roles = {"feature_cols": FEATURES, "group_cols": ["user"]}
    fixed = PoissonFixedEffects(**roles).fit(data.X, data.y)
    ridge = PoissonRidge(**roles, random_state=0).fit(data.X, data.y)
    seen = fixed.group_effects_["user"].drop(fixed.zero_levels_["user"])
    return seen, ridge.group_effects_["user"].loc[seen.index]


def test_ridge_approaches_the_unpenalised_glm_as_units_get_more_data():
    # A unit's effect is shrunk by about (its expected count) / (that + alpha): far
    # below 1 with 4 events, close to 1 with 300.
    sparse_fixed, sparse_ridge = _fixed_and_ridge_user_effects(4)
    dense_fixed, dense_ridge = _fixed_and_ridge_user_effects(300)
    assert np.polyfit(sparse_fixed, sparse_ridge, 1)[0] < 0.9
    assert np.polyfit(dense_fixed, dense_ridge, 1)[0] > 0.99
    assert np.abs(dense_ridge - dense_fixed).max() < 0.02


def _penalised_poisson(design: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Intercept and coefficients minimising deviance + alpha * ||coef||^2 (the intercept
    unpenalised), by Newton's method with the exact gradient and Hessian."""
    stacked = np.column_stack([np.ones(len(y)), design])
    penalty = np.r_[0.0, np.full(design.shape[1], alpha)]
    beta = np.r_[np.log(y.mean()), np.zeros(design.shape[1])]
    for _ in range(100):
        mean = np.exp(stacked @ beta)
        gradient = 2 * stacked.T @ (mean - y) + 2 * penalty * beta
        hessian = 2 * (stacked.T * mean) @ stacked + 2 * np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-12:
            return beta
    raise AssertionError("Newton's method did not converge")


def test_ridge_picks_the_penalty_of_least_held_out_deviance_by_hand():
    rng = np.random.default_rng(7)
    user = np.repeat(np.arange(5), 8)
    frame = pd.DataFrame({"x": rng.standard_normal(user.size), "user": [f"u{k}" for k in user]})
    y = rng.poisson(np.exp(0.8 + 0.4 * frame["x"] + rng.normal(0, 0.7, 5)[user])).astype(float)
    alphas = [0.03, 1.0, 30.0]
    model = PoissonRidge(
        feature_cols=["x"], group_cols=["user"], alphas=alphas, cv=4, random_state=0
    ).fit(frame, y)

    # The design by hand: x standardised on all rows, one indicator per user.
    x = frame["x"].to_numpy()
    design = np.column_stack([(x - x.mean()) / x.std(), np.eye(5)[user]])
    held_out = np.zeros(len(alphas))
    for train, test in KFold(4, shuffle=True, random_state=0).split(design):
        for k, alpha in enumerate(alphas):
            beta = _penalised_poisson(design[train], y[train], alpha)
            mean = np.exp(beta[0] + design[test] @ beta[1:])
            held_out[k] += mean_poisson_deviance(y[test], mean) * len(test) / len(y)
    np.testing.assert_allclose(model.cv_deviance_.to_numpy(), held_out, rtol=1e-6)
    assert model.alpha_ == alphas[int(np.argmin(held_out))]

    beta = _penalised_poisson(design, y, model.alpha_)
    assert model.coef_["x"] == pytest.approx(beta[1] / x.std(), rel=1e-6)
    effects = beta[2:] - beta[2:].mean()
    np.testing.assert_allclose(model.group_effects_["user"], effects, atol=1e-7)
    np.testing.assert_allclose(model.predict(frame), np.exp(beta[0] + design @ beta[1:]), rtol=1e-6)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"alphas": []}, "alphas: expected one or more positive numbers"),
        ({"alphas": [1.0, -1.0]}, "alphas: expected one or more positive numbers"),
        ({"cv": 1}, "cv: expected an integer of at least 2"),
        ({"solver": "irls"}, "solver: expected one of"),
    ],
)
def test_ridge_parameter_errors(dense_units, params, message):
    with pytest.raises(ValueError, match=message):
        PoissonRidge(feature_cols=["x1"], group_cols=["user"], **params).fit(
            dense_units.X, dense_units.y
        )


def test_boosted_poisson_predicts_positive_means_and_beats_a_constant():
    data = simulate("online_services", seed=23, n_users=200, n_items=20, family="poisson")
    test = np.arange(data.n_rows) % 4 == 0
    X, y = data.X, data.y.to_numpy()
    model = HistGBMPoisson(
        feature_cols=list(data.features), group_cols=["user", "item"], random_state=0
    )
    mean = model.fit(X[~test], y[~test]).predict(X[test])
    assert model.model_.loss == "poisson"
    assert np.all(mean > 0)
    constant = np.full(test.sum(), y[~test].mean())
    assert mean_poisson_deviance(y[test], mean) < 0.9 * mean_poisson_deviance(y[test], constant)


@pytest.mark.parametrize("model", [PoissonFixedEffects, PoissonRidge, HistGBMPoisson])
def test_count_target_is_checked(model):
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "g": ["a", "a", "b", "b"]})
    with pytest.raises(ValueError, match="y: a count outcome must be non-negative"):
        model(feature_cols=["x"], group_cols=["g"]).fit(frame, [0.0, 1.0, -2.0, 1.0])
    with pytest.raises(ValueError, match="y: at least one count must be positive"):
        model(feature_cols=["x"], group_cols=["g"]).fit(frame, [0.0, 0.0, 0.0, 0.0])


def test_the_registry_serves_the_poisson_peers():
    assert isinstance(estimators.get("fixed_effects", family="poisson"), PoissonFixedEffects)
    ridge = estimators.get("ridge_onehot", family="poisson", alphas=[1.0, 2.0])
    assert isinstance(ridge, PoissonRidge) and ridge.alphas == [1.0, 2.0]
    assert isinstance(estimators.get("hist_gbm", family="poisson"), HistGBMPoisson)
    for name, model in [
        ("poisson_fixed_effects", PoissonFixedEffects),
        ("poisson_ridge", PoissonRidge),
        ("hist_gbm_poisson", HistGBMPoisson),
    ]:
        assert isinstance(estimators.get(name), model)
        assert estimators.info(name).families == ("poisson",)
    for name in ["fixed_effects", "ridge_onehot", "hist_gbm", "mixed_glm"]:
        assert "poisson" in estimators.info(name).families
    # The other families keep their models.
    assert not isinstance(estimators.get("fixed_effects", family="binomial"), PoissonFixedEffects)
    assert not isinstance(estimators.get("hist_gbm"), HistGBMPoisson)


def test_weighted_fixed_effects_match_statsmodels_glm_with_prior_weights(dense_units):
    """sample_weight is glm's prior weights (statsmodels' var_weights): the same
    coefficients and fitted means; rows of weight 0 are left out."""
    sm = pytest.importorskip("statsmodels.api")
    frame, y = dense_units.frame, dense_units.y.to_numpy()
    weight = np.random.default_rng(9).uniform(0.2, 3.0, len(y))
    weight[:25] = 0.0
    ours = PoissonFixedEffects(feature_cols=FEATURES, group_cols=["user", "item"])
    ours.fit(frame, y, sample_weight=weight)
    kept = weight > 0
    _, design = _statsmodels_glm(frame[kept], y[kept])
    reference = sm.GLM(y[kept], design, family=sm.families.Poisson(), var_weights=weight[kept]).fit(
        tol=1e-13, maxiter=100
    )
    np.testing.assert_allclose(ours.coef_[FEATURES], reference.params[FEATURES], rtol=1e-6)
    np.testing.assert_allclose(ours.predict(frame[kept]), reference.predict(design), rtol=1e-6)
