import numpy as np
import pandas as pd
import pytest

from estimators import GroupMean, HistGBM


def test_group_mean_is_each_units_mean_and_the_overall_mean_for_new_units():
    X = pd.DataFrame({"user": ["a", "b", "a", "c", "a"]})
    y = np.array([1.0, 10.0, 2.0, 4.0, 6.0])
    model = GroupMean(group_col="user").fit(X, y)
    assert model.group_means_.to_dict() == {"a": 3.0, "b": 10.0, "c": 4.0}
    assert model.group_counts_.to_dict() == {"a": 3, "b": 1, "c": 1}
    prediction = model.predict(pd.DataFrame({"user": ["c", "new", "a"]}))
    np.testing.assert_allclose(prediction, [4.0, 23.0 / 5, 3.0])


def test_group_mean_needs_a_group_column():
    with pytest.raises(ValueError, match="group_col: GroupMean needs"):
        GroupMean().fit(pd.DataFrame({"x": [1.0]}), [1.0])


def test_hist_gbm_encodes_small_factors_as_categorical_and_large_as_codes(small_data):
    # 120 users and 15 items: with 100 bins the users exceed the categorical limit.
    model = HistGBM(
        feature_cols=list(small_data.features),
        group_cols=["user", "item"],
        max_iter=10,
        max_bins=100,
    )
    model.fit(small_data.X, small_data.y)
    assert model.group_encoding_ == {"user": "ordinal", "item": "categorical"}
    assert model.model_.is_categorical_.tolist() == [False] * 5 + [False, True]


def test_hist_gbm_learns_a_group_effect():
    rng = np.random.default_rng(1)
    groups = rng.choice(["a", "b", "c"], 600)
    X = pd.DataFrame({"x": rng.normal(size=600), "g": groups})
    y = np.select([groups == "a", groups == "b"], [-3.0, 0.0], 3.0) + 0.1 * rng.normal(size=600)
    model = HistGBM(feature_cols=["x"], group_cols=["g"], random_state=0).fit(X, y)
    prediction = model.predict(
        pd.DataFrame({"x": [0.0, 0.0, 0.0, 0.0], "g": ["a", "b", "c", "new"]})
    )
    np.testing.assert_allclose(prediction[:3], [-3.0, 0.0, 3.0], atol=0.15)
    assert np.isfinite(prediction[3])
