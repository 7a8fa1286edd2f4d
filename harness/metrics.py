"""Prediction metrics, each ``metric(y_true, y_pred) -> float``; lower is better unless
the metric is listed in ``HIGHER_IS_BETTER``."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType

import numpy as np


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((np.asarray(y_true) - np.asarray(y_pred)) ** 2)))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(np.asarray(y_true) - np.asarray(y_pred))))


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination on the test rows, 1 - SSE / SST around their own mean.

    NaN when the test outcomes are constant (SST = 0).
    """
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    total = np.sum((y_true - y_true.mean()) ** 2)
    if total == 0:
        return float("nan")
    return float(1.0 - np.sum((y_true - y_pred) ** 2) / total)


_METRICS: MappingProxyType[str, Callable[[np.ndarray, np.ndarray], float]] = MappingProxyType(
    {"rmse": rmse, "mae": mae, "r2": r2}
)
HIGHER_IS_BETTER: frozenset[str] = frozenset({"r2"})


def available() -> tuple[str, ...]:
    """Metric names in their canonical order."""
    return tuple(_METRICS)


def get(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """The metric function called ``name``."""
    if name not in _METRICS:
        raise KeyError(f"unknown metric {name!r}; available metrics: {', '.join(_METRICS)}")
    return _METRICS[name]
