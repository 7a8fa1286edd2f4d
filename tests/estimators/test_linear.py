import numpy as np
import pandas as pd
import pytest

from estimators import FixedEffects, PooledOLS
from simulators import simulate


def _dense_dummy_lstsq(frame, features, groups, y):
    """Reference: numpy least squares on the dense treatment-coded design."""
    dummies = pd.get_dummies(frame[groups], columns=groups, drop_first=True, dtype=float)
    design = np.column_stack([np.ones(len(frame)), frame[features].to_numpy(), dummies])
    solution, *_ = np.linalg.lstsq(design, y, rcond=None)
    return solution, design


def test_fixed_effects_match_numpy_least_squares_on_the_dense_design():
    data = simulate("online_services", seed=21, n_users=150, n_items=12)
    # Per-event features and crossed users x items: a full-rank dummy design.
    features, groups = ["x1", "x2", "x3", "treat"], ["user", "item"]
    model = FixedEffects(feature_cols=features, group_cols=groups).fit(data.X, data.y)
    solution, design = _dense_dummy_lstsq(data.frame, features, groups, data.y.to_numpy())

    np.testing.assert_allclose(model.coef_.to_numpy(), solution[1:5], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model.predict(data.X), design @ solution, rtol=1e-8, atol=1e-9)
    # Centred effects: differences between levels equal the dummy coefficients.
    users = model.group_effects_["user"]
    n_users = data.frame["user"].nunique()
    np.testing.assert_allclose(
        (users - users.iloc[0]).to_numpy()[1:], solution[5 : 5 + n_users - 1], atol=1e-8
    )
    assert abs(users.mean()) < 1e-10 and abs(model.group_effects_["item"].mean()) < 1e-10


def test_fixed_effects_recover_the_true_coefficients():
    data = simulate(
        "online_services",
        seed=3,
        n_users=400,
        n_items=30,
        events_per_user={"mean": 20},
        sd={"user_slope": 0.0, "region": 0.0},
        account_age={"coef": 0.0},
    )
    # account_age is constant within a user: absorbed by the user dummies, not identified.
    features = ["x1", "x2", "x3", "treat"]
    model = FixedEffects(feature_cols=features, group_cols=["user", "item"])
    model.fit(data.X, data.y)
    truth = data.truth["fixed_effects"]
    for name in features:
        assert model.coef_[name] == pytest.approx(truth[name], abs=0.03)
    # Users with many events: estimated effects track the true ones closely.
    events = data.frame["user"].value_counts()
    active = events.index[events >= 40]
    assert len(active) > 30
    estimated = model.group_effects_["user"].loc[active]
    assert np.corrcoef(estimated, data.truth["unit_effects"]["user"].loc[active])[0, 1] > 0.9


def test_unseen_levels_get_the_population_part():
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 0.5, 1.5, 2.5], "g": ["a", "a", "a", "b", "b", "b"]})
    y = 2.0 * frame["x"] + np.where(frame["g"] == "a", 1.0, -1.0)
    model = FixedEffects(feature_cols=["x"], group_cols=["g"]).fit(frame, y)
    assert model.coef_["x"] == pytest.approx(2.0)
    assert model.intercept_ == pytest.approx(0.0, abs=1e-10)
    new = pd.DataFrame({"x": [1.0, 1.0], "g": ["a", "zzz"]})
    np.testing.assert_allclose(model.predict(new), [3.0, 2.0], atol=1e-10)


def test_rank_deficient_crossed_design_still_fits_least_squares():
    # Users u0,u1 only meet items i0,i1 and users u2,u3 only items i2,i3: two disconnected
    # blocks, so the user and item effects are identified only up to a shift per block.
    rng = np.random.default_rng(0)
    users = np.repeat(["u0", "u1", "u2", "u3"], 10)
    items = np.where(
        np.isin(users, ["u0", "u1"]), rng.choice(["i0", "i1"], 40), rng.choice(["i2", "i3"], 40)
    )
    frame = pd.DataFrame({"x": rng.normal(size=40), "user": users, "item": items})
    y = frame["x"].to_numpy() + rng.normal(size=40)
    model = FixedEffects(feature_cols=["x"], group_cols=["user", "item"]).fit(frame, y)
    solution, design = _dense_dummy_lstsq(frame, ["x"], ["user", "item"], y)
    np.testing.assert_allclose(model.predict(frame), design @ solution, atol=1e-8)
    assert model.coef_["x"] == pytest.approx(solution[1], abs=1e-8)


def test_thousands_of_levels_fit_sparse():
    data = simulate(
        "online_services", seed=8, n_users=5000, n_items=500, events_per_user={"mean": 4}
    )
    model = FixedEffects(feature_cols=list(data.features), group_cols=["user", "item"])
    model.fit(data.X, data.y)
    assert len(model.group_effects_["user"]) == 5000
    assert model.solver_info_["stop_reason"] in (1, 2)


def test_pooled_ols_matches_numpy_least_squares(small_data):
    features = list(small_data.features)
    model = PooledOLS(feature_cols=features).fit(small_data.X, small_data.y)
    design = np.column_stack([np.ones(small_data.n_rows), small_data.frame[features]])
    solution, *_ = np.linalg.lstsq(design, small_data.y.to_numpy(), rcond=None)
    assert model.intercept_ == pytest.approx(solution[0])
    np.testing.assert_allclose(model.coef_.to_numpy(), solution[1:])


@pytest.mark.parametrize(
    ("make", "X", "y", "message"),
    [
        (
            lambda: FixedEffects(feature_cols=["x"], group_cols=["user"]),
            pd.DataFrame({"x": [1.0, 2.0], "g": ["a", "b"]}),
            [1.0, 2.0],
            r"group_cols: column\(s\) \['user'\] not found in X",
        ),
        (
            lambda: PooledOLS(feature_cols=["x"]),
            pd.DataFrame({"x": ["a", "b"]}),
            [1.0, 2.0],
            "feature_cols: column 'x' is not numeric",
        ),
        (
            lambda: PooledOLS(feature_cols=["x"]),
            pd.DataFrame({"x": [1.0, np.nan]}),
            [1.0, 2.0],
            "feature_cols: column 'x' has 1 row",
        ),
        (
            lambda: PooledOLS(),
            pd.DataFrame({"x": [1.0, 2.0]}),
            [1.0],
            "y: has 1 values but X has 2 rows",
        ),
        (
            lambda: PooledOLS(),
            pd.DataFrame({"x": [1.0, 2.0]}),
            [1.0, np.inf],
            "y: 1 missing or infinite",
        ),
        (
            lambda: FixedEffects(feature_cols=["x"], group_cols=["g"]),
            pd.DataFrame({"x": [1.0, 2.0], "g": ["a", None]}),
            [1.0, 2.0],
            "group column 'g' has 1 missing value",
        ),
    ],
)
def test_bad_input_names_the_column(make, X, y, message):
    with pytest.raises(ValueError, match=message):
        make().fit(X, y)
