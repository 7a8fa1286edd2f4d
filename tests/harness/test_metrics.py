import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats
from sklearn.metrics import log_loss as sklearn_log_loss
from sklearn.metrics import roc_auc_score

from harness import metrics
from harness.metrics import Scored


def test_point_metrics_against_hand_computation():
    scored = Scored(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 6.0]))
    # errors 0, -1, 1, -2: squares 0, 1, 1, 4
    assert metrics.rmse(scored) == pytest.approx(np.sqrt(6 / 4))
    assert metrics.mae(scored) == pytest.approx(4 / 4)
    # SST around 2.5: 2.25 + 0.25 + 0.25 + 2.25 = 5
    assert metrics.r2(scored) == pytest.approx(1 - 6 / 5)


def test_perfect_and_degenerate_cases():
    y = np.array([0.5, 1.5, 2.5])
    assert metrics.rmse(Scored(y, y)) == 0.0
    assert metrics.r2(Scored(y, y)) == 1.0
    assert np.isnan(metrics.r2(Scored(np.ones(3), y)))
    assert np.isnan(metrics.auc(Scored(np.ones(3), np.array([0.1, 0.2, 0.3]))))


def test_gaussian_predictive_metrics_against_scipy():
    rng = np.random.default_rng(0)
    y, mean, sd = rng.normal(size=50), rng.normal(size=50), rng.uniform(0.5, 2, 50)
    scored = Scored(y, mean, sd)
    assert metrics.nlpd(scored) == pytest.approx(-np.mean(stats.norm.logpdf(y, mean, sd)))
    inside50 = (y > stats.norm.ppf(0.25, mean, sd)) & (y < stats.norm.ppf(0.75, mean, sd))
    assert metrics.info("coverage50").function(scored) == pytest.approx(inside50.mean())
    # CRPS = integral of (F(t) - 1{t >= y})^2 dt, for one row by quadrature.
    one = Scored(y[:1], mean[:1], sd[:1])
    below, _ = integrate.quad(lambda t: stats.norm.cdf(t, mean[0], sd[0]) ** 2, -np.inf, y[0])
    above, _ = integrate.quad(lambda t: stats.norm.sf(t, mean[0], sd[0]) ** 2, y[0], np.inf)
    assert metrics.crps(one) == pytest.approx(below + above, rel=1e-6)


def test_coverage_of_a_calibrated_model_is_near_nominal():
    rng = np.random.default_rng(1)
    mean = rng.normal(size=200_000)
    scored = Scored(mean + rng.normal(size=mean.size) * 2.0, mean, np.full(mean.size, 2.0))
    assert metrics.info("coverage90").function(scored) == pytest.approx(0.9, abs=0.003)
    assert metrics.info("coverage50").function(scored) == pytest.approx(0.5, abs=0.003)


def test_binary_metrics_against_scikit_learn():
    rng = np.random.default_rng(2)
    p = rng.uniform(0.01, 0.99, 300)
    y = (rng.uniform(size=300) < p).astype(float)
    scored = Scored(y, p)
    assert metrics.log_loss(scored) == pytest.approx(sklearn_log_loss(y, p))
    assert metrics.auc(scored) == pytest.approx(roc_auc_score(y, p))
    assert metrics.brier(scored) == pytest.approx(np.mean((y - p) ** 2))
    assert metrics.get("weighted_mspe")(scored) == metrics.brier(scored)


def test_scores_by_seen_unseen_and_activity():
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    scored = Scored(y, y + np.array([1.0, 1.0, 2.0, 0.0, 4.0]))
    row = metrics.score_rows(("rmse", "nlpd"), scored, np.array([0, 0, 1, 5, 200]))
    assert row["rmse@unseen"] == pytest.approx(1.0)
    assert row["rmse@seen"] == pytest.approx(np.sqrt((4 + 0 + 16) / 3))
    assert row["rmse@train_rows=1-2"] == pytest.approx(2.0)
    assert row["rmse@train_rows=100+"] == pytest.approx(4.0)
    assert np.isnan(row["rmse@train_rows=30-99"])
    assert row["n_test@train_rows=3-9"] == 1
    assert row["n_test@seen"] == 3
    # No predictive sd from the model: NaN, not an error.
    assert np.isnan(row["nlpd"]) and np.isnan(row["nlpd@seen"])


def test_truth_metrics_from_a_fitted_mixed_model():
    class Fitted:
        varcorr_ = pd.DataFrame(
            {
                "grp": ["user", "Residual"],
                "var1": ["(Intercept)", None],
                "var2": [None, None],
                "sdcor": [0.6, 0.9],
            }
        )
        ranef_ = {"user": pd.DataFrame({"(Intercept)": [0.1, -0.2, 0.3, 0.0]}, index=list("abcd"))}

    truth = {
        "sd": {"user": 0.5, "noise": 1.0},
        "unit_effects": {"user": pd.Series([0.2, -0.1, 0.5, 0.1, 9.0], index=list("abcde"))},
    }
    assert metrics.vc_error(Fitted(), truth) == pytest.approx((0.2 + 0.1) / 2)
    expected = np.corrcoef([0.1, -0.2, 0.3, 0.0], [0.2, -0.1, 0.5, 0.1])[0, 1]
    assert metrics.effect_corr(Fitted(), truth, "user") == pytest.approx(expected)
    assert np.isnan(metrics.vc_error(object(), truth))
    assert np.isnan(metrics.effect_corr(object(), truth, "user"))


def test_registry_and_ranking_direction():
    assert metrics.DEFAULT == ("rmse", "mae", "r2")
    assert {"nlpd", "crps", "log_loss", "auc", "brier", "vc_error"} <= set(metrics.available())
    assert metrics.get("mae") is metrics.mae
    with pytest.raises(KeyError, match="unknown metric 'mse'"):
        metrics.get("mse")
    values = pd.Series([0.8, 0.95, 0.9])
    assert metrics.info("coverage90").rank_value(values).round(6).tolist() == [0.1, 0.05, 0.0]
    assert metrics.info("r2").rank_value(values).tolist() == [-0.8, -0.95, -0.9]


@pytest.mark.parametrize(
    "name",
    ["rmse", "mae", "r2", "nlpd", "coverage90", "crps", "log_loss", "brier", "auc"],
)
def test_integer_weights_score_as_repeated_rows(name):
    """A test row of weight k counts as k rows: the weighted metric equals the
    unweighted one on the rows repeated."""
    rng = np.random.default_rng(1)
    binary = name in ("log_loss", "brier", "auc")
    y = rng.integers(0, 2, 40).astype(float) if binary else rng.normal(size=40)
    mean = rng.uniform(0.05, 0.95, 40) if binary else y + rng.normal(size=40)
    sd = rng.uniform(0.5, 2.0, 40)
    weight = rng.integers(0, 4, 40).astype(float)
    weight[:2] = [1.0, 2.0]  # both outcomes kept for the AUC
    repeat = weight.astype(int)
    function = metrics.get(name)
    weighted = function(Scored(y, mean, sd, weight))
    repeated = function(
        Scored(np.repeat(y, repeat), np.repeat(mean, repeat), np.repeat(sd, repeat))
    )
    assert weighted == pytest.approx(repeated, rel=1e-12)
    assert weighted != pytest.approx(function(Scored(y, mean, sd)), rel=1e-6)


def test_poisson_deviance_and_subsets_carry_the_weights():
    y = np.array([0.0, 1.0, 3.0, 2.0])
    mean = np.array([0.5, 1.0, 2.0, 2.5])
    weight = np.array([2.0, 0.0, 1.0, 1.0])
    scored = Scored(y, mean, None, weight)
    kept = Scored(np.repeat(y, [2, 0, 1, 1]), np.repeat(mean, [2, 0, 1, 1]))
    assert metrics.poisson_deviance(scored) == pytest.approx(metrics.poisson_deviance(kept))
    part = scored.subset(np.array([True, True, False, False]))
    np.testing.assert_array_equal(part.weight, [2.0, 0.0])
    # Rows of weight 0 alone: nothing to average.
    assert np.isnan(metrics.rmse(scored.subset(np.array([False, True, False, False]))))
