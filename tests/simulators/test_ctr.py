import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

import simulators
from simulators import Dataset, simulate


def _offset_logistic(design: np.ndarray, y: np.ndarray, offset: np.ndarray) -> tuple:
    """Maximum-likelihood logistic regression with a known offset, by Newton's method;
    returns the coefficients and their standard errors."""
    beta = np.zeros(design.shape[1])
    for _ in range(50):
        p = expit(design @ beta + offset)
        information = design.T @ (design * (p * (1 - p))[:, None])
        step = np.linalg.solve(information, design.T @ (y - p))
        beta += step
        if np.abs(step).max() < 1e-10:
            break
    return beta, np.sqrt(np.diag(np.linalg.inv(information)))


def test_same_seed_and_params_give_identical_frames():
    first = simulate("ctr_experiment", seed=3, n_users=100)
    second = simulate("ctr_experiment", seed=3, n_users=100)
    pd.testing.assert_frame_equal(first.frame, second.frame)
    assert first.meta["hash"] == second.meta["hash"]
    assert simulate("ctr_experiment", seed=4, n_users=100).meta["hash"] != first.meta["hash"]


def test_roles_columns_and_truth():
    data = simulate("ctr_experiment", seed=1, n_users=50)
    assert isinstance(data, Dataset)
    assert data.target == "click" and data.family == "binomial"
    assert data.features == ("display",) and data.groups == ("user",)
    assert data.time == "impression"
    assert list(data.frame.columns) == ["user", "treated", "impression", "display", "click"]
    assert isinstance(data.frame["user"].dtype, pd.CategoricalDtype)
    assert set(data.frame["click"].unique()) <= {0.0, 1.0}
    truth = data.truth
    assert truth["fixed_effects"] == {"(Intercept)": -4.5, "display": 0.5}
    assert truth["sd"] == {"user": 5.0}
    assert list(truth["unit_effects"]["user"].index) == list(data.frame["user"].cat.categories)
    assert len(truth["probability"]) == data.n_rows
    assert truth["params"]["n_users"] == 50


def test_two_halves_of_impressions_and_display_2_only_for_treated_users():
    frame = simulate("ctr_experiment", seed=2, n_users=2000).frame
    per_user = frame.groupby("user", observed=True)
    # Each half holds 1 + Poisson(10) impressions: at least 2 in all, 22 on average.
    counts = per_user.size()
    assert counts.min() >= 2
    assert counts.mean() == pytest.approx(22, rel=0.03)
    assert (per_user["impression"].apply(lambda s: list(s) == list(range(1, len(s) + 1)))).all()
    # Untreated users never see display 2; treated users see it from some point on, to the end.
    treated = per_user["treated"].first()
    shown = per_user["display"].sum()
    assert (shown[treated == 0] == 0).all()
    assert (shown[treated == 1] >= 1).all()
    assert per_user["display"].apply(lambda s: s.is_monotonic_increasing).all()
    assert (per_user["display"].apply(lambda s: s.iloc[0]) == 0).all()
    assert treated.mean() == pytest.approx(0.5, abs=0.05)


def test_fresh_draw_keeps_alpha_and_redraws_the_rest():
    base = simulate("ctr_experiment", seed=5, n_users=300)
    fresh = simulate("ctr_experiment", seed=5, n_users=300, draw=1)
    assert simulators.info("ctr_experiment").fresh_draws
    pd.testing.assert_series_equal(
        base.truth["unit_effects"]["user"], fresh.truth["unit_effects"]["user"]
    )
    assert list(base.frame["user"].cat.categories) == list(fresh.frame["user"].cat.categories)
    assert base.meta["hash"] != fresh.meta["hash"]
    base_treated = base.frame.groupby("user", observed=True)["treated"].first()
    fresh_treated = fresh.frame.groupby("user", observed=True)["treated"].first()
    assert (base_treated != fresh_treated).any()
    base_counts = base.frame.groupby("user", observed=True).size()
    assert (base_counts != fresh.frame.groupby("user", observed=True).size()).any()
    # The same users keep their propensity: per-user click rates agree across draws.
    base_rate = base.frame.groupby("user", observed=True)["click"].mean()
    fresh_rate = fresh.frame.groupby("user", observed=True)["click"].mean()
    assert np.corrcoef(base_rate, fresh_rate.loc[base_rate.index])[0, 1] > 0.8


def test_clicks_follow_the_recorded_probabilities():
    data = simulate("ctr_experiment", seed=6, n_users=500, mu=-1.0, tau=1.0, sigma=1.0)
    frame, truth = data.frame, data.truth
    alpha = frame["user"].astype(str).map(truth["unit_effects"]["user"]).to_numpy()
    expected = expit(-1.0 + 1.0 * frame["display"].to_numpy() + alpha)
    np.testing.assert_allclose(truth["probability"].to_numpy(), expected)
    residual = frame["click"].to_numpy() - expected
    assert abs(residual.mean()) < 4 * np.sqrt(np.mean(expected * (1 - expected)) / len(frame))


def test_click_rates_and_effects_recover_mu_and_tau_on_a_big_draw():
    data = simulate("ctr_experiment", seed=7, n_users=20000)
    frame = data.frame
    # Population click rate per display: the logistic of mu (+ tau) averaged over
    # alpha ~ N(0, 5^2), by Gauss-Hermite quadrature; sampling sd of the rates ~0.003.
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    for display in (0, 1):
        expected = np.sum(weights * expit(-4.5 + 0.5 * display + 5.0 * nodes)) / np.sqrt(2 * np.pi)
        observed = frame.loc[frame["display"] == display, "click"].mean()
        assert observed == pytest.approx(expected, abs=0.015)
    # With each user's alpha known, the logistic regression on display with alpha as an
    # offset is a two-parameter GLM whose estimates must land near (mu, tau); user fixed
    # effects would not do, since with sigma = 5 most users never or always click.
    alpha = frame["user"].astype(str).map(data.truth["unit_effects"]["user"]).to_numpy()
    design = np.column_stack([np.ones(len(frame)), frame["display"].to_numpy(float)])
    (mu, tau), (se_mu, se_tau) = _offset_logistic(design, frame["click"].to_numpy(), alpha)
    assert mu == pytest.approx(-4.5, abs=4 * se_mu)
    assert tau == pytest.approx(0.5, abs=4 * se_tau)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_users": 0}, r"params\.n_users: expected a positive integer"),
        ({"n_users": 2.5}, r"params\.n_users: expected a positive integer"),
        ({"pois_mean": -1.0}, r"params\.pois_mean: must be non-negative"),
        ({"sigma": -0.1}, r"params\.sigma: must be non-negative"),
        ({"mu": "low"}, r"params\.mu: expected a number"),
        ({"tau": float("nan")}, r"params\.tau: expected a number"),
        ({"p_treated": 1.5}, r"params\.p_treated: must be in \[0, 1\]"),
        ({"draw": -1}, r"params\.draw: expected a non-negative integer"),
        ({"users": 10}, r"params\.users: unknown parameter; did you mean 'n_users'"),
    ],
)
def test_invalid_params_name_the_field(params, message):
    with pytest.raises(ValueError, match=message):
        simulate("ctr_experiment", seed=0, **params)
