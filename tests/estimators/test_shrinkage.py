import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.base import clone
from sklearn.linear_model import Ridge

from estimators._shrinkage import EBShrinkage, RidgeOneHot
from simulators import simulate

FEATURES = ["x1", "x2", "x3", "account_age", "treat"]


def _ridge(**params):
    return RidgeOneHot(feature_cols=FEATURES, group_cols=["user", "item", "region"], **params)


def _eb(**params):
    return EBShrinkage(feature_cols=FEATURES, group_col="user", **params)


MAKERS = {"ridge_onehot": _ridge, "eb_shrinkage": _eb}


def _dense_design(frame, features, groups):
    """Standardised features and an indicator for every level of every group."""
    values = frame[features].to_numpy(float)
    standardized = (values - values.mean(axis=0)) / values.std(axis=0)
    if not groups:
        return standardized
    dummies = pd.get_dummies(frame[groups].astype(str), dtype=float)
    return np.column_stack([standardized, dummies])


def _brute_force_loo(design, y, alpha):
    errors = [
        y[i]
        - Ridge(alpha=alpha).fit(np.delete(design, i, 0), np.delete(y, i)).predict(design[[i]])[0]
        for i in range(len(y))
    ]
    return float(np.mean(np.square(errors)))


# RidgeOneHot


def test_ridge_predictions_equal_sklearn_ridge_on_the_dense_design(small_data):
    groups = ["user", "item", "region"]
    model = _ridge().fit(small_data.X, small_data.y)
    design = _dense_design(small_data.frame, FEATURES, groups)
    reference = Ridge(alpha=model.alpha_).fit(design, small_data.y.to_numpy())
    np.testing.assert_allclose(model.predict(small_data.X), reference.predict(design), atol=1e-6)
    # get_dummies orders users, then items, each by level, as the fitted effects are.
    start = len(FEATURES) + small_data.frame["user"].nunique()
    items = model.group_effects_["item"]
    np.testing.assert_allclose(
        items.to_numpy(), reference.coef_[start : start + len(items)], atol=1e-6
    )


@pytest.mark.parametrize("groups", [[], ["user"], ["user", "item"]])
def test_ridge_alpha_is_the_argmin_of_brute_force_leave_one_out(groups):
    data = simulate("online_services", seed=11, n_users=25, n_items=6)
    frame, y = data.frame.iloc[:90], data.y.to_numpy()[:90]
    alphas = [0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0]
    model = RidgeOneHot(feature_cols=FEATURES, group_cols=groups, alphas=alphas).fit(frame, y)
    design = _dense_design(frame, FEATURES, groups)
    brute_force = [_brute_force_loo(design, y, alpha) for alpha in alphas]
    np.testing.assert_allclose(model.cv_scores_.to_numpy(), brute_force, rtol=1e-8)
    assert model.alpha_ == alphas[int(np.argmin(brute_force))]
    assert list(model.cv_scores_.index) == alphas


def test_ridge_effects_sum_to_zero_so_unseen_levels_get_the_population_part(small_data):
    model = _ridge().fit(small_data.X, small_data.y)
    for effects in model.group_effects_.values():
        assert abs(effects.sum()) < 1e-8
    new = small_data.X.iloc[:5].assign(user="nobody", item="nothing", region="nowhere")
    population = model.intercept_ + new[FEATURES].to_numpy(float) @ model.coef_.to_numpy()
    np.testing.assert_allclose(model.predict(new), population)


def test_ridge_refuses_bad_alphas(small_data):
    for alphas in ([], [1.0, 0.0], [np.inf]):
        with pytest.raises(ValueError, match="alphas: expected one or more positive"):
            _ridge(alphas=alphas).fit(small_data.X, small_data.y)


# EBShrinkage


def test_eb_matches_the_balanced_closed_form():
    rng = np.random.default_rng(4)
    n_units, per_unit = 5, 4
    units = np.repeat([f"u{j}" for j in range(n_units)], per_unit)
    x = rng.normal(size=n_units * per_unit)
    y = 1.0 + 2.0 * x + np.repeat(rng.normal(scale=2.0, size=n_units), per_unit)
    y += rng.normal(size=y.size)
    X = pd.DataFrame({"x": x, "user": units})
    model = EBShrinkage(feature_cols=["x"], group_col="user").fit(X, y)

    # By hand: OLS residuals, then the balanced one-way ANOVA estimators.
    design = np.column_stack([np.ones_like(x), x])
    solution, *_ = np.linalg.lstsq(design, y, rcond=None)
    residuals = (y - design @ solution).reshape(n_units, per_unit)
    unit_means = residuals.mean(axis=1)
    sigma2 = np.sum((residuals - unit_means[:, None]) ** 2) / (n_units * (per_unit - 1))
    tau2 = np.var(unit_means, ddof=1) - sigma2 / per_unit
    shrinkage = tau2 / (tau2 + sigma2 / per_unit)
    assert tau2 > 0
    assert model.sigma2_ == pytest.approx(sigma2)
    assert model.tau2_ == pytest.approx(tau2)
    np.testing.assert_allclose(model.shrinkage_.to_numpy(), shrinkage)
    np.testing.assert_allclose(model.unit_effects_.to_numpy(), shrinkage * unit_means)
    expected = design @ solution + np.repeat(shrinkage * unit_means, per_unit)
    np.testing.assert_allclose(model.predict(X), expected)


def test_eb_shrinkage_tends_to_one_as_units_grow():
    rng = np.random.default_rng(5)
    counts = {"a": 2, "b": 10, "c": 100, "d": 2000, "e": 5, "f": 3}
    units = np.concatenate([[unit] * count for unit, count in counts.items()])
    effects = dict(zip(counts, rng.normal(scale=1.0, size=len(counts)), strict=True))
    y = np.array([effects[unit] for unit in units]) + rng.normal(size=units.size)
    model = EBShrinkage(group_col="user").fit(pd.DataFrame({"user": units}), y)
    shrinkage = model.shrinkage_.loc[["a", "b", "c", "d"]].to_numpy()
    assert np.all(np.diff(shrinkage) > 0)
    assert shrinkage[-1] > 0.99
    assert model.unit_counts_["d"] == 2000


def test_eb_without_between_unit_variance_is_the_regression():
    # Every unit has the same rows: identical mean residuals, so tau2 is clipped to 0.
    x = np.array([0.0, 1.0, 2.0, 3.0])
    y_unit = np.array([0.5, 1.0, 3.5, 4.0])
    X = pd.DataFrame({"x": np.tile(x, 3), "user": np.repeat(["a", "b", "c"], 4)})
    y = np.tile(y_unit, 3)
    model = EBShrinkage(feature_cols=["x"], group_col="user").fit(X, y)
    assert model.tau2_ == 0.0
    np.testing.assert_array_equal(model.shrinkage_.to_numpy(), 0.0)
    slope, intercept = np.polyfit(x, y_unit, 1)
    np.testing.assert_allclose(model.predict(X), intercept + slope * X["x"])


def test_eb_needs_a_group_column_and_repeated_units():
    X = pd.DataFrame({"x": [0.0, 1.0, 2.0], "user": ["a", "b", "c"]})
    with pytest.raises(ValueError, match="group_col: EBShrinkage needs"):
        EBShrinkage().fit(X, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="every unit of 'user' has one row"):
        EBShrinkage(group_col="user").fit(X, [1.0, 2.0, 3.0])


# Both estimators


@pytest.fixture(scope="module")
def strong_users():
    """Many events per user and a user effect twice the noise."""
    return simulate(
        "online_services",
        seed=12,
        n_users=200,
        n_items=10,
        events_per_user={"mean": 20},
        sd={"user": 1.0, "noise": 0.5, "item": 0.0, "region": 0.0, "user_slope": 0.0},
    )


def test_ridge_and_eb_learn_the_user_effects(strong_users):
    truth = strong_users.truth["unit_effects"]["user"]
    features = ["x1", "x2", "x3", "treat"]
    ridge = RidgeOneHot(feature_cols=features, group_cols=["user", "item"])
    eb = EBShrinkage(feature_cols=features, group_col="user")
    ridge_effects = ridge.fit(strong_users.X, strong_users.y).group_effects_["user"]
    eb_effects = eb.fit(strong_users.X, strong_users.y).unit_effects_
    assert np.corrcoef(ridge_effects, truth.loc[ridge_effects.index])[0, 1] > 0.95
    assert np.corrcoef(eb_effects, truth.loc[eb_effects.index])[0, 1] > 0.95
    assert eb.tau2_ == pytest.approx(1.0, rel=0.3)
    assert eb.sigma2_ == pytest.approx(0.25, rel=0.1)


@pytest.mark.parametrize("name", MAKERS)
def test_clone_round_trip(name, small_data):
    model = MAKERS[name](new_levels="error")
    twin = clone(model)
    assert twin.get_params() == model.get_params() and twin is not model
    fitted = clone(model).fit(small_data.X, small_data.y)
    refit = clone(fitted)
    assert not hasattr(refit, "coef_")
    np.testing.assert_array_equal(
        refit.fit(small_data.X, small_data.y).predict(small_data.X), fitted.predict(small_data.X)
    )


@pytest.mark.parametrize("name", MAKERS)
def test_pandas_and_polars_inputs_agree(name, small_data):
    from_pandas = MAKERS[name]().fit(small_data.X, small_data.y).predict(small_data.X)
    X, y = pl.from_pandas(small_data.X), pl.Series(small_data.y.to_numpy())
    from_polars = MAKERS[name]().fit(X, y).predict(X)
    np.testing.assert_allclose(from_polars, from_pandas, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(
    ("make", "roles"),
    [
        (RidgeOneHot, {"feature_cols": [0, 1, 2], "group_cols": [3, 4]}),
        (EBShrinkage, {"feature_cols": [0, 1, 2], "group_col": 3}),
    ],
)
def test_numpy_input_with_column_indices(make, roles, small_data):
    frame = small_data.X[["x1", "x2", "x3", "user", "item"]]
    codes = frame.assign(
        user=frame["user"].str[1:].astype(int), item=frame["item"].str[1:].astype(int)
    )
    names = {
        key: list(codes.columns[value]) if isinstance(value, list) else codes.columns[value]
        for key, value in roles.items()
    }
    by_index = make(**roles).fit(codes.to_numpy(), small_data.y)
    by_name = make(**names).fit(codes, small_data.y)
    np.testing.assert_allclose(
        by_index.predict(codes.to_numpy()), by_name.predict(codes), rtol=1e-10
    )


@pytest.mark.parametrize("name", MAKERS)
def test_unseen_levels_population_or_error(name, small_data):
    X, y = small_data.X, small_data.y
    train = (X["user"] != X["user"].iloc[0]).to_numpy()
    model = MAKERS[name]().fit(X[train], y[train])
    assert np.all(np.isfinite(model.predict(X[~train])))
    strict = MAKERS[name](new_levels="error").fit(X[train], y[train])
    with pytest.raises(ValueError, match="group column 'user': 1 level"):
        strict.predict(X[~train])
    with pytest.raises(ValueError, match="new_levels: expected one of"):
        MAKERS[name](new_levels="zero").fit(X, y)


def _brute_force_weighted_loo(design, y, weight, alpha):
    """Each row's error from the weighted ridge fitted without it, averaged with the
    weights; the features standardised with weighted moments of all rows."""
    errors = [
        y[i]
        - Ridge(alpha=alpha)
        .fit(np.delete(design, i, 0), np.delete(y, i), sample_weight=np.delete(weight, i))
        .predict(design[[i]])[0]
        for i in range(len(y))
    ]
    return float(np.average(np.square(errors), weights=weight))


@pytest.mark.parametrize("groups", [[], ["user"], ["user", "item"]])
def test_weighted_ridge_leave_one_out_is_exact(groups):
    data = simulate("online_services", seed=11, n_users=25, n_items=6)
    frame, y = data.frame.iloc[:90], data.y.to_numpy()[:90]
    weight = np.random.default_rng(2).uniform(0.3, 3.0, 90)
    alphas = [0.1, 1.0, 10.0]
    model = RidgeOneHot(feature_cols=FEATURES, group_cols=groups, alphas=alphas)
    model.fit(frame, y, sample_weight=weight)
    values = frame[FEATURES].to_numpy(float)
    mean = np.average(values, axis=0, weights=weight)
    scale = np.sqrt(np.average((values - mean) ** 2, axis=0, weights=weight))
    design = (values - mean) / scale
    if groups:
        design = np.column_stack([design, pd.get_dummies(frame[groups].astype(str), dtype=float)])
    brute_force = [_brute_force_weighted_loo(design, y, weight, alpha) for alpha in alphas]
    np.testing.assert_allclose(model.cv_scores_.to_numpy(), brute_force, rtol=1e-8)
    # At the chosen penalty the fit is scikit-learn's weighted ridge on the same design.
    reference = Ridge(alpha=model.alpha_).fit(design, y, sample_weight=weight)
    np.testing.assert_allclose(model.predict(frame), reference.predict(design), atol=1e-8)
