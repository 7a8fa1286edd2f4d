import numpy as np
import pytest

from estimators import HistGBM, MixedBoosting, MixedLM
from simulators import simulate


@pytest.fixture(scope="module")
def nonlinear():
    return simulate(
        "online_services",
        seed=41,
        n_users=1500,
        n_items=60,
        nonlinear={"strength": 1.0},
        sd={"user": 0.8, "user_slope": 0.0},
    )


def _rmse(model, data, test):
    X, y = data.X, data.y.to_numpy()
    prediction = model.fit(X[~test], y[~test]).predict(X[test])
    return float(np.sqrt(np.mean((prediction - y[test]) ** 2)))


def test_beats_trees_alone_and_the_linear_mixed_model_on_nonlinear_grouped_data(nonlinear):
    """Seen users (every 4th row held out): trees miss the many user effects, the linear
    model misses the nonlinear part; mixed boosting captures both."""
    test = np.arange(nonlinear.n_rows) % 4 == 0
    features, groups = list(nonlinear.features), list(nonlinear.groups)
    boosting = MixedBoosting(feature_cols=features, group_cols=groups, random_state=0)
    trees = HistGBM(feature_cols=features, group_cols=groups, random_state=0)
    linear = MixedLM("y ~ x1 + x2 + x3 + account_age + treat + (1 | user) + (1 | item)")
    ours = _rmse(boosting, nonlinear, test)
    assert ours < 0.97 * _rmse(trees, nonlinear, test)
    assert ours < 0.97 * _rmse(linear, nonlinear, test)
    assert boosting.converged_ and boosting.history_[-1] < boosting.tol
    assert boosting.history_[0] > boosting.history_[-1]


def test_unseen_units_get_the_population_part(nonlinear):
    model = MixedBoosting(
        feature_cols=["x1", "x2", "x3"], group_cols=["user"], max_iter=20, random_state=0
    ).fit(nonlinear.X, nonlinear.y)
    new = nonlinear.X.iloc[:5].copy()
    new["user"] = "nobody"
    features = new[["x1", "x2", "x3"]].to_numpy()
    expected = model.booster_.predict(features) + model.mixed_.coef_["(Intercept)"]
    np.testing.assert_allclose(model.predict(new), expected)
    strict = MixedBoosting(
        feature_cols=["x1"], group_cols=["user"], max_iter=10, new_levels="error", random_state=0
    ).fit(nonlinear.X, nonlinear.y)
    with pytest.raises(ValueError, match="group column 'user': 1 level"):
        strict.predict(new)


def test_deterministic_with_a_seed(nonlinear):
    X, y = nonlinear.X.iloc[:3000], nonlinear.y.iloc[:3000]
    first = MixedBoosting(group_cols=["user"], feature_cols=["x1", "x2"], random_state=3)
    second = MixedBoosting(group_cols=["user"], feature_cols=["x1", "x2"], random_state=3)
    np.testing.assert_array_equal(first.fit(X, y).predict(X), second.fit(X, y).predict(X))


def test_needs_a_group_column(nonlinear):
    with pytest.raises(ValueError, match="group_cols: MixedBoosting needs"):
        MixedBoosting(feature_cols=["x1"]).fit(nonlinear.X, nonlinear.y)
