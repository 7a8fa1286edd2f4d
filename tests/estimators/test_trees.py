import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import TargetEncoder

from estimators._trees import RandomForest, TargetEncodedGBM
from simulators import simulate

FEATURES = ["x1", "x2", "x3", "account_age", "treat"]
GROUPS = ["user", "item", "region"]


ROLES = {"feature_cols": FEATURES, "group_cols": GROUPS, "random_state": 0}


def _forest(**params):
    return RandomForest(**ROLES | {"n_estimators": 30} | params)


def _boosting(**params):
    return TargetEncodedGBM(**ROLES | {"max_iter": 50} | params)


MAKERS = {"random_forest": _forest, "target_encoded_gbm": _boosting}


@pytest.fixture(scope="module")
def strong_users():
    """Many events per user and a user effect three times the noise."""
    return simulate(
        "online_services",
        seed=14,
        n_users=100,
        n_items=10,
        events_per_user={"mean": 30},
        sd={"user": 1.5, "noise": 0.5, "user_slope": 0.0},
    )


@pytest.mark.parametrize("name", MAKERS)
def test_the_group_columns_improve_predictions_for_seen_users(name, strong_users):
    X, y = strong_users.X, strong_users.y.to_numpy()
    test = np.arange(len(y)) % 4 == 0

    def rmse(model):
        prediction = model.fit(X[~test], y[~test]).predict(X[test])
        return np.sqrt(np.mean((prediction - y[test]) ** 2))

    with_groups = rmse(MAKERS[name]())
    features_only = rmse(MAKERS[name](group_cols=()))
    assert with_groups < 0.85 * features_only


@pytest.mark.parametrize("name", MAKERS)
def test_learns_a_level_effect(name):
    rng = np.random.default_rng(1)
    groups = rng.choice(["a", "b", "c"], 600)
    X = pd.DataFrame({"x": rng.normal(size=600), "g": groups})
    y = np.select([groups == "a", groups == "b"], [-3.0, 0.0], 3.0) + 0.1 * rng.normal(size=600)
    model = MAKERS[name](feature_cols=["x"], group_cols=["g"]).fit(X, y)
    prediction = model.predict(pd.DataFrame({"x": [0.0] * 4, "g": ["a", "b", "c", "new"]}))
    np.testing.assert_allclose(prediction[:3], [-3.0, 0.0, 3.0], atol=0.2)
    assert np.isfinite(prediction[3])


def test_target_encoder_gives_unseen_levels_the_training_mean(small_data):
    X, y = small_data.X, small_data.y
    model = _boosting().fit(X, y)
    encode = model.model_.named_steps["encode"]
    assert isinstance(encode, ColumnTransformer)
    encoder = encode.named_transformers_["groups"]
    assert isinstance(encoder, TargetEncoder)
    new = X.iloc[:3].assign(user="nobody", item="nothing", region="nowhere")
    encoded = encode.transform(model._matrix(new))
    np.testing.assert_allclose(encoded[:, len(FEATURES) :], y.mean())
    np.testing.assert_array_equal(encoded[:, : len(FEATURES)], new[FEATURES].to_numpy(float))


def test_forest_codes_unseen_levels_as_missing(small_data):
    X, y = small_data.X, small_data.y
    model = _forest().fit(X, y)
    assert list(model.levels_["user"].levels[:2]) == ["u000", "u001"]
    new = X.iloc[:3].assign(user="nobody")
    matrix = model._with_missing(model._matrix(new))
    assert np.isnan(matrix[:, len(FEATURES)]).all()
    assert not np.isnan(matrix[:, len(FEATURES) + 1 :]).any()


@pytest.mark.parametrize("name", MAKERS)
def test_deterministic_given_random_state(name, small_data):
    X, y = small_data.X, small_data.y
    first = MAKERS[name](random_state=5).fit(X, y).predict(X)
    again = MAKERS[name](random_state=5).fit(X, y).predict(X)
    other = MAKERS[name](random_state=6).fit(X, y).predict(X)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("name", MAKERS)
def test_clone_round_trip(name, small_data):
    model = MAKERS[name](new_levels="error")
    twin = clone(model)
    assert twin.get_params() == model.get_params() and twin is not model
    fitted = clone(model).fit(small_data.X, small_data.y)
    refit = clone(fitted)
    assert not hasattr(refit, "model_")
    np.testing.assert_array_equal(
        refit.fit(small_data.X, small_data.y).predict(small_data.X), fitted.predict(small_data.X)
    )


@pytest.mark.parametrize("name", MAKERS)
def test_pandas_and_polars_inputs_agree(name, small_data):
    # Polars hands back categories in order of appearance; codes follow the sorted
    # values instead, so the trees see the same columns.
    from_pandas = MAKERS[name]().fit(small_data.X, small_data.y).predict(small_data.X)
    X, y = pl.from_pandas(small_data.X), pl.Series(small_data.y.to_numpy())
    from_polars = MAKERS[name]().fit(X, y).predict(X)
    np.testing.assert_allclose(from_polars, from_pandas, rtol=1e-10)


@pytest.mark.parametrize("name", MAKERS)
def test_numpy_input_with_column_indices(name, small_data):
    frame = small_data.X[["x1", "x2", "x3", "user", "item"]]
    codes = frame.assign(
        user=frame["user"].str[1:].astype(int), item=frame["item"].str[1:].astype(int)
    )
    by_index = MAKERS[name](feature_cols=[0, 1, 2], group_cols=[3, 4])
    by_name = MAKERS[name](feature_cols=["x1", "x2", "x3"], group_cols=["user", "item"])
    np.testing.assert_allclose(
        by_index.fit(codes.to_numpy(), small_data.y).predict(codes.to_numpy()),
        by_name.fit(codes, small_data.y).predict(codes),
        rtol=1e-10,
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


@pytest.mark.parametrize("name", ["random_forest", "target_encoded_gbm", "hist_gbm"])
def test_tree_models_take_missing_group_values_as_they_declare(name):
    """Tree models declare NaN support (scikit-learn's allow_nan tag): a missing group
    value is no level, routed as missing in fitting and prediction, even under
    new_levels="error" (missing is not an unseen level); a missing value in any other
    model's group column is an error naming the column."""
    from sklearn.utils import get_tags

    import estimators

    data = simulate("online_services", seed=3, n_users=60, n_items=6)
    X = data.X.assign(user=data.X["user"].astype(object))
    X.loc[X.index[::7], "user"] = None
    roles = {"feature_cols": list(data.features), "group_cols": ["user", "item"]}
    settings = {"random_state": 0}
    if "new_levels" in estimators.get(name).get_params():
        settings["new_levels"] = "error"
    model = estimators.get(name, **roles, **settings)
    assert get_tags(model).input_tags.allow_nan
    prediction = model.fit(X, data.y).predict(X)
    assert np.all(np.isfinite(prediction))
    strict = estimators.get("fixed_effects", **roles)
    with pytest.raises(ValueError, match=r"group column 'user' has \d+ missing value\(s\) \(NaN"):
        strict.fit(X, data.y)
