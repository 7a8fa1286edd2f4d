import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

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
    assert data.features == ("x1", "x2", "account_age", "treat")
    assert data.groups == ("user", "item", "region")
    assert dict(data.nesting) == {"user": "region"}
    assert data.time == "day"
    assert list(data.X.columns) == [
        "x1",
        "x2",
        "account_age",
        "treat",
        "user",
        "item",
        "region",
        "day",
    ]
    assert data.frame["user"].nunique() == 30
    assert data.frame["day"].is_monotonic_increasing


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
    residual = data.frame["y"] - linear_predictor(data)
    truth = data.truth
    assert abs(residual.mean()) < 0.02
    assert residual.std() == pytest.approx(0.5, rel=0.03)
    assert truth["unit_effects"]["user"].std() == pytest.approx(0.7, rel=0.05)
    assert truth["sd"] == {"user": 0.7, "item": 0.3, "region": 0.2, "user_slope": 0.2, "noise": 0.5}


def linear_predictor(data: Dataset) -> pd.Series:
    """The linear predictor rebuilt from the recorded truth alone."""
    truth, frame = data.truth, data.frame
    params = truth["params"]
    effects = truth["unit_effects"]
    users = frame["user"].astype(str)
    eta = truth["fixed_effects"]["(Intercept)"] + sum(
        truth["fixed_effects"][name] * frame[name] for name in data.features
    )
    eta = eta + users.map(effects["user"]) + frame["treat"] * users.map(effects["user_slope"])
    eta = eta + users.map(effects["user_drift"]) * frame["day"] / params["time"]["n_days"]
    eta = eta + frame["item"].astype(str).map(effects["item"])
    eta = eta + frame["region"].astype(str).map(effects["region"])
    eta = eta + params["time"]["weekly_amplitude"] * np.sin(2 * np.pi * frame["weekday"] / 7)
    return eta + params["time"]["trend"] * frame["day"]


def test_each_user_lives_in_exactly_one_region():
    data = simulate("online_services", seed=6, n_users=2000, n_items=20, n_regions=7)
    regions = data.frame.groupby("user", observed=True)["region"].nunique()
    assert (regions == 1).all()
    first = data.frame.groupby("user", observed=True)["region"].first()
    recorded = data.truth["user_region"]
    assert [str(first[u]) for u in first.index] == [recorded[str(u)] for u in first.index]


def test_top_one_percent_of_users_hold_the_lognormal_share_of_events():
    """For rates lognormal with log-sd s, the top 1% of users by rate hold the share
    Phi(s - z_0.99) of all rate mass; events are 1 + Poisson(rate)."""
    tail, mean = 1.5, 10.0
    data = simulate(
        "online_services",
        seed=8,
        n_users=100000,
        n_items=20,
        events_per_user={"mean": mean, "tail": tail},
    )
    activity = data.truth["activity"]
    counts = data.frame["user"].value_counts().reindex(activity.index)
    top = activity.rank(ascending=False) <= len(activity) // 100
    share = counts[top].sum() / counts.sum()
    expected = (0.01 + (mean - 1) * stats.norm.cdf(tail - stats.norm.ppf(0.99))) / mean
    assert share == pytest.approx(expected, rel=0.08)


def test_between_user_variance_of_user_means():
    """Var(user mean residual) = sd_user^2 + sd_noise^2 / n for users with n events."""
    data = simulate(
        "online_services",
        seed=12,
        n_users=20000,
        n_items=1,
        n_regions=1,
        n_features=0,
        events_per_user={"mean": 5.0, "tail": 0.0},
        sd={"user": 0.6, "noise": 1.2, "item": 0.0, "region": 0.0, "user_slope": 0.0},
        time={"weekly_amplitude": 0.0},
        account_age={"coef": 0.0},
        treatment={"effect": 0.0},
    )
    stats_ = data.frame.groupby("user", observed=True)["y"].agg(["mean", "size"])
    for n in (2, 5, 8):
        means = stats_.loc[stats_["size"] == n, "mean"]
        assert len(means) > 500
        expected = 0.6**2 + 1.2**2 / n
        # Sampling sd of a variance estimate: var * sqrt(2 / (m - 1)).
        assert means.var() == pytest.approx(expected, abs=4 * expected * np.sqrt(2 / len(means)))


def test_binomial_mean_is_the_logistic_of_the_linear_predictor():
    data = simulate(
        "online_services", seed=13, n_users=20000, n_items=30, family="binomial", intercept=-1.0
    )
    assert data.family == "binomial"
    assert set(np.unique(data.frame["y"])) == {0.0, 1.0}
    probability = 1 / (1 + np.exp(-linear_predictor(data)))
    bins = pd.qcut(probability, 10)
    observed = data.frame["y"].groupby(bins, observed=True).mean()
    expected = probability.groupby(bins, observed=True).mean()
    sizes = probability.groupby(bins, observed=True).size()
    se = np.sqrt(expected * (1 - expected) / sizes)
    assert np.all(np.abs(observed - expected) < 4 * se)


def test_poisson_counts_have_the_exponential_mean():
    data = simulate(
        "online_services", seed=14, n_users=5000, n_items=30, family="poisson", intercept=0.0
    )
    rate = np.exp(linear_predictor(data))
    assert data.frame["y"].sum() == pytest.approx(rate.sum(), rel=0.01)
    assert (data.frame["y"] == data.frame["y"].round()).all()


def test_weekly_seasonality_shows_in_day_of_week_means():
    data = simulate(
        "online_services",
        seed=15,
        n_users=20000,
        n_items=10,
        time={"weekly_amplitude": 0.5, "n_days": 70},
    )
    by_weekday = data.frame.groupby("weekday")["y"].mean()
    expected = 0.5 * np.sin(2 * np.pi * np.arange(7) / 7)
    centred = by_weekday - by_weekday.mean()
    np.testing.assert_allclose(centred, expected - expected.mean(), atol=0.05)


def test_treatment_slopes_and_their_correlation():
    data = simulate(
        "online_services",
        seed=16,
        n_users=40000,
        n_items=10,
        sd={"user_slope": 0.4},
        correlation={"user_intercept_slope": 0.6},
    )
    effects = data.truth["unit_effects"]
    assert effects["user_slope"].std() == pytest.approx(0.4, rel=0.03)
    assert np.corrcoef(effects["user"], effects["user_slope"])[0, 1] == pytest.approx(0.6, abs=0.02)
    assert data.frame["treat"].mean() == pytest.approx(0.5, abs=0.01)


def test_heteroscedastic_noise_grows_with_x1_and_keeps_its_mean_variance():
    data = simulate("online_services", seed=17, n_users=20000, n_items=10, heteroscedasticity=0.5)
    residual = data.frame["y"] - linear_predictor(data)
    assert residual.var() == pytest.approx(1.0, rel=0.05)
    high, low = data.frame["x1"] > 1, data.frame["x1"] < -1
    assert residual[high].std() > 2 * residual[low].std()


def test_nonlinear_part_is_added():
    plain = simulate("online_services", seed=18, n_users=300, n_items=10)
    bent = simulate(
        "online_services", seed=18, n_users=300, n_items=10, nonlinear={"strength": 1.0}
    )
    frame = plain.frame
    expected = frame["x1"] * frame["x2"] + (frame["x3"] > 0.5)
    np.testing.assert_allclose(bent.frame["y"] - plain.frame["y"], expected, atol=1e-12)


def test_identical_frames_across_processes():
    code = (
        "from simulators import simulate; "
        "print(simulate('online_services', seed=5, n_users=300, n_items=20).meta['hash'])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert outputs == {simulate("online_services", seed=5, n_users=300, n_items=20).meta["hash"]}


def test_fresh_draw_keeps_the_units_and_their_truth():
    base = simulate("online_services", seed=4, n_users=50, n_items=6)
    fresh = simulate("online_services", seed=4, n_users=50, n_items=6, draw=1)
    assert simulators.info("online_services").fresh_draws
    assert not base.frame.equals(fresh.frame)
    for factor in ("user", "item", "region", "user_slope"):
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
        ({"family": "gamma"}, r"params\.family: expected one of"),
        ({"treatment": {"p": 1.5}}, r"params\.treatment\.p: must be in \[0, 1\]"),
        ({"time": {"n_days": 0}}, r"params\.time\.n_days: expected a positive integer"),
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
    names = ["archers", "ctr_experiment", "file", "online_services", "rdataset"]
    assert f"Available simulators: {', '.join(names)}" in str(error.value)
    assert simulators.available() == names


def test_dataset_refuses_roles_missing_from_the_frame():
    frame = pd.DataFrame({"y": [1.0, 2.0], "g": ["a", "b"]})
    with pytest.raises(ValueError, match=r"groups: column\(s\) \['user'\] not in the data frame"):
        Dataset(frame=frame, target="y", groups=("user",))
    with pytest.raises(ValueError, match="family"):
        Dataset(frame=frame, target="y", family="gamma")
    data = Dataset(frame=frame, target="y", groups=("g",))
    assert np.array_equal(data.y, [1.0, 2.0])
