import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.compare import corrected_t_interval, leaderboard


def test_corrected_t_interval_matches_hand_computation():
    values = np.array([0.10, 0.14, 0.08, 0.12, 0.11])
    ratio = 0.25  # test/train ratio of 5-fold cross-validation
    mean = values.mean()
    s2 = np.sum((values - mean) ** 2) / 4
    half = stats.t.ppf(0.975, 4) * np.sqrt((1 / 5 + 0.25) * s2)
    interval = corrected_t_interval(values, ratio)
    assert interval.mean == pytest.approx(0.11)
    assert interval.low == pytest.approx(mean - half)
    assert interval.high == pytest.approx(mean + half)
    # Without the correction the interval is the ordinary t interval, which is narrower.
    plain = corrected_t_interval(values, 0.0)
    assert plain.high - plain.low == pytest.approx(2 * stats.t.ppf(0.975, 4) * np.sqrt(s2 / 5))
    assert plain.high - plain.low < interval.high - interval.low


def test_interval_degenerate_inputs():
    assert np.isnan(corrected_t_interval(np.array([]), 0.2).mean)
    single = corrected_t_interval(np.array([1.0, np.nan]), 0.2)
    assert single.mean == 1.0 and np.isnan(single.low) and single.n == 1


def _rows():
    records = []
    for fold, (a, b) in enumerate([(1.0, 1.5), (2.0, 2.1), (1.5, 2.5)]):
        for estimator, rmse in [("base", b), ("model", a)]:
            records.append(
                {
                    "scenario": "s",
                    "repeat": 0,
                    "split": "random",
                    "fold": fold,
                    "estimator": estimator,
                    "status": "ok",
                    "rmse": rmse,
                    "n_test": 10,
                    "n_train": 20,
                }
            )
    records.append(
        {
            "scenario": "s",
            "repeat": 0,
            "split": "random",
            "fold": 3,
            "estimator": "model",
            "status": "failed",
            "rmse": np.nan,
            "n_test": 10,
            "n_train": 20,
        }
    )
    return pd.DataFrame(records)


def test_leaderboard_pairs_by_fold_and_ranks():
    board = leaderboard(_rows(), ["rmse"], baseline="base").set_index("estimator")
    assert board.loc["model", "n"] == 3  # the failed row is left out
    assert board.loc["model", "rmse"] == pytest.approx(1.5)
    assert board.loc["model", "mean_rank"] == 1.0
    assert board.loc["base", "mean_rank"] == 2.0
    differences = np.array([-0.5, -0.1, -1.0])
    expected = corrected_t_interval(differences, 0.5)
    assert board.loc["model", "rmse_diff"] == pytest.approx(differences.mean())
    assert board.loc["model", "rmse_diff_low"] == pytest.approx(expected.low)
    assert board.loc["base", "rmse_diff"] == 0.0
