import numpy as np
import pytest

from harness import metrics


def test_values_against_hand_computation():
    y_true = np.array([1.0, 2.0, 3.0, 4.0])
    y_pred = np.array([1.0, 3.0, 2.0, 6.0])
    # errors 0, -1, 1, -2: squares 0, 1, 1, 4
    assert metrics.rmse(y_true, y_pred) == pytest.approx(np.sqrt(6 / 4))
    assert metrics.mae(y_true, y_pred) == pytest.approx(4 / 4)
    # SST around 2.5: 2.25 + 0.25 + 0.25 + 2.25 = 5
    assert metrics.r2(y_true, y_pred) == pytest.approx(1 - 6 / 5)


def test_perfect_and_degenerate_cases():
    y = np.array([0.5, 1.5, 2.5])
    assert metrics.rmse(y, y) == 0.0
    assert metrics.r2(y, y) == 1.0
    assert np.isnan(metrics.r2(np.ones(3), y))


def test_registry():
    assert metrics.available() == ("rmse", "mae", "r2")
    assert metrics.get("mae") is metrics.mae
    with pytest.raises(KeyError, match="unknown metric 'mse'"):
        metrics.get("mse")
