import numpy as np
import pandas as pd
import pytest

import simulators
from simulators import Dataset, simulate


def test_same_seed_and_params_give_identical_frames():
    first = simulate("online_services", seed=11, n_users=80, n_items=9)
    second = simulate("online_services", seed=11, n_users=80, n_items=9)
    pd.testing.assert_frame_equal(first.frame, second.frame)
    assert first.meta["hash"] == second.meta["hash"]
    other = simulate("online_services", seed=12, n_users=80, n_items=9)
    assert other.meta["hash"] != first.meta["hash"]


def test_roles_and_columns():
    data = simulate("online_services", seed=1, n_users=30, n_items=5, n_features=2)
    assert isinstance(data, Dataset)
    assert data.target == "y" and data.family == "gaussian"
    assert data.features == ("x1", "x2")
    assert data.groups == ("user", "item")
    assert data.time == "day"
    assert list(data.X.columns) == ["x1", "x2", "user", "item", "day"]
    assert data.frame["user"].nunique() == 30


def test_activity_is_heavy_tailed_with_the_requested_mean():
    data = simulate(
        "online_services",
        seed=5,
        n_users=20000,
        n_items=50,
        events_per_user={"mean": 8.0, "tail": 1.2},
    )
    events = data.frame["user"].value_counts()
    assert events.mean() == pytest.approx(8.0, rel=0.05)
    # Most users have few events, a few have very many.
    assert events.median() < 0.75 * events.mean()
    assert events.max() > 10 * events.median()
    assert events.min() >= 1


def test_outcome_is_the_recorded_truth_plus_noise_of_the_recorded_sd():
    data = simulate(
        "online_services", seed=9, n_users=3000, n_items=40, sd={"user": 0.7, "noise": 0.5}
    )
    truth, frame = data.truth, data.frame
    systematic = truth["fixed_effects"]["(Intercept)"] + sum(
        truth["fixed_effects"][name] * frame[name] for name in data.features
    )
    systematic = systematic + frame["user"].map(truth["unit_effects"]["user"])
    systematic = systematic + frame["item"].map(truth["unit_effects"]["item"])
    residual = frame["y"] - systematic
    assert abs(residual.mean()) < 0.02
    assert residual.std() == pytest.approx(0.5, rel=0.03)
    assert truth["unit_effects"]["user"].std() == pytest.approx(0.7, rel=0.05)
    assert truth["sd"] == {"user": 0.7, "item": 0.3, "noise": 0.5}


def test_fresh_draw_keeps_the_units_and_their_truth():
    base = simulate("online_services", seed=4, n_users=50, n_items=6)
    fresh = simulate("online_services", seed=4, n_users=50, n_items=6, draw=1)
    assert simulators.info("online_services").fresh_draws
    assert not base.frame.equals(fresh.frame)
    for factor in ("user", "item"):
        pd.testing.assert_series_equal(
            base.truth["unit_effects"][factor], fresh.truth["unit_effects"][factor]
        )


def test_dotted_and_nested_params_are_the_same():
    nested = simulate("online_services", seed=2, n_users=20, n_items=4, sd={"user": 0.9})
    dotted = simulate("online_services", seed=2, n_users=20, n_items=4, **{"sd.user": 0.9})
    assert nested.meta["hash"] == dotted.meta["hash"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_usres": 5}, r"params\.n_usres: unknown parameter; did you mean 'n_users'"),
        ({"sd": {"usr": 1.0}}, r"params\.sd\.usr: unknown parameter; did you mean 'user'"),
        ({"n_users": -3}, r"params\.n_users: expected a positive integer"),
        ({"sd": {"user": "big"}}, r"params\.sd\.user: expected a number"),
        ({"sd": {"noise": -1.0}}, r"params\.sd\.noise: must be non-negative"),
        ({"sd": 0.5}, r"params\.sd: expected a mapping"),
        ({"events_per_user": {"mean": 0.5}}, r"params\.events_per_user\.mean: must be at least 1"),
    ],
)
def test_invalid_params_name_the_field(params, message):
    with pytest.raises(ValueError, match=message):
        simulate("online_services", seed=0, **params)


def test_unknown_simulator_lists_the_valid_ones():
    with pytest.raises(KeyError, match="online_servics.*did you mean 'online_services'") as error:
        simulate("online_servics")
    assert "Available simulators: online_services" in str(error.value)
    assert simulators.available() == ["online_services"]


def test_dataset_refuses_roles_missing_from_the_frame():
    frame = pd.DataFrame({"y": [1.0, 2.0], "g": ["a", "b"]})
    with pytest.raises(ValueError, match=r"groups: column\(s\) \['user'\] not in the data frame"):
        Dataset(frame=frame, target="y", groups=("user",))
    with pytest.raises(ValueError, match="family"):
        Dataset(frame=frame, target="y", family="gamma")
    data = Dataset(frame=frame, target="y", groups=("g",))
    assert np.array_equal(data.y, [1.0, 2.0])
