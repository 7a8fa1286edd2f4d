"""One conformance test over every registered estimator: the scikit-learn contract."""

from functools import cache

import numpy as np
import polars as pl
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GroupKFold, cross_validate

import estimators
from harness.config import EstimatorSpec
from harness.runner import fill_roles
from simulators import simulate

NAMES = estimators.available()


@cache
def dataset(name: str):
    """Small online-services data of the estimator's first supported family."""
    family = estimators.info(name).families[0]
    return simulate("online_services", seed=3, n_users=120, n_items=15, family=family)


def _model(name, data, **extra):
    params = fill_roles(EstimatorSpec(name=name, params={}, label=name), data) | extra
    model = estimators.get(name, **params)
    if "random_state" in model.get_params() and "random_state" not in extra:
        model.set_params(random_state=0)  # comparisons below need the same random choices
    return model


@pytest.mark.parametrize("name", NAMES)
def test_clone_and_params_round_trip(name):
    small_data = dataset(name)
    model = _model(name, small_data)
    twin = clone(model)
    assert twin.get_params() == model.get_params()
    assert twin is not model


@pytest.mark.parametrize("name", NAMES)
def test_predict_before_fit_raises_not_fitted(name):
    small_data = dataset(name)
    with pytest.raises(NotFittedError):
        _model(name, small_data).predict(small_data.X)


@pytest.mark.parametrize("name", NAMES)
def test_fit_returns_self_and_predicts_one_value_per_row(name):
    small_data = dataset(name)
    model = _model(name, small_data)
    assert model.fit(small_data.X, small_data.y) is model
    prediction = model.predict(small_data.X.iloc[:17])
    assert prediction.shape == (17,)
    assert np.all(np.isfinite(prediction))


@pytest.mark.parametrize("name", NAMES)
def test_polars_and_pandas_inputs_agree(name):
    small_data = dataset(name)
    from_pandas = _model(name, small_data).fit(small_data.X, small_data.y).predict(small_data.X)
    X = pl.from_pandas(small_data.X)
    y = pl.Series(small_data.y.to_numpy())
    from_polars = _model(name, small_data).fit(X, y).predict(X)
    # Categories may come back from polars in another order: the same fit up to the
    # iterative solvers' tolerance.
    np.testing.assert_allclose(from_polars, from_pandas, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in NAMES if "formula" not in estimators.info(n).roles])
def test_numpy_input_with_column_indices(name):
    small_data = dataset(name)
    # Columns 0..2 are the features, 3 and 4 the user and item codes.
    frame = small_data.X[["x1", "x2", "x3", "user", "item"]]
    codes = frame.assign(
        user=frame["user"].str[1:].astype(int), item=frame["item"].str[1:].astype(int)
    )
    roles = {"feature_cols": [0, 1, 2], "group_cols": [3, 4], "group_col": 3}
    wanted = {key: roles[key] for key in estimators.info(name).roles}
    if "random_state" in estimators.get(name).get_params():
        wanted["random_state"] = 0
    by_index = estimators.get(name, **wanted).fit(codes.to_numpy(), small_data.y)
    by_name = estimators.get(
        name,
        **{
            key: (
                value
                if key == "random_state"
                else list(codes.columns[value])
                if isinstance(value, list)
                else codes.columns[value]
            )
            for key, value in wanted.items()
        },
    ).fit(codes, small_data.y)
    np.testing.assert_allclose(
        by_index.predict(codes.to_numpy()), by_name.predict(codes), rtol=1e-4, atol=1e-6
    )


@pytest.mark.parametrize("name", NAMES)
def test_cross_validate_with_group_folds(name):
    small_data = dataset(name)
    scores = cross_validate(
        _model(name, small_data),
        small_data.X,
        small_data.y,
        groups=small_data.frame["user"],
        cv=GroupKFold(n_splits=3),
        scoring="neg_root_mean_squared_error",
    )
    assert np.all(np.isfinite(scores["test_score"]))


@pytest.mark.parametrize(
    "name", [n for n in NAMES if "new_levels" in estimators.get(n).get_params()]
)
def test_unseen_levels_population_or_error(name):
    small_data = dataset(name)
    train = small_data.frame["user"] != small_data.frame["user"].iloc[0]
    X, y = small_data.X, small_data.y
    model = _model(name, small_data).fit(X[train], y[train])
    assert np.all(np.isfinite(model.predict(X[~train])))
    strict = _model(name, small_data, new_levels="error").fit(X[train], y[train])
    with pytest.raises(ValueError, match="group column 'user': 1 level"):
        strict.predict(X[~train])
    with pytest.raises(ValueError, match="new_levels: expected one of"):
        _model(name, small_data, new_levels="zero").fit(X, y)


@pytest.mark.parametrize("name", NAMES)
def test_works_inside_a_pipeline_and_is_deterministic(name):
    from sklearn.pipeline import Pipeline

    small_data = dataset(name)
    extra = {"random_state": 7} if "random_state" in estimators.get(name).get_params() else {}
    first = Pipeline([("model", _model(name, small_data, **extra))])
    second = clone(first)
    np.testing.assert_array_equal(
        first.fit(small_data.X, small_data.y).predict(small_data.X),
        second.fit(small_data.X, small_data.y).predict(small_data.X),
    )


@pytest.mark.parametrize("name", NAMES)
def test_missing_target_is_a_clear_error(name):
    small_data = dataset(name)
    y = small_data.y.to_numpy().copy()
    y[3] = np.nan
    with pytest.raises(ValueError, match="y: 1 missing or infinite"):
        _model(name, small_data).fit(small_data.X, y)


@pytest.mark.parametrize("name", NAMES)
def test_a_shuffled_pandas_index_does_not_scramble_rows(name):
    """Rows are matched by position, as in scikit-learn: relabelling the index of X and
    giving y another index changes nothing."""
    small_data = dataset(name)
    X, y = small_data.X, small_data.y
    relabelled = X.set_axis(np.random.default_rng(0).permutation(len(X)) + 1000)
    y_other = y.set_axis(np.arange(len(y))[::-1])
    np.testing.assert_allclose(
        _model(name, small_data).fit(relabelled, y_other).predict(relabelled),
        _model(name, small_data).fit(X, y).predict(X),
        rtol=1e-6,
        atol=1e-8,
    )
