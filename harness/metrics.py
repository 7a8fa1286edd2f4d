"""Metrics: how well predictions match held-out outcomes, and how well a model recovers
the truth a simulator knows.

Each prediction metric is ``metric(scored) -> float`` on a :class:`Scored` bundle of
test outcomes and predictions. What a metric needs is declared (``needs``):

- ``point``: the predicted mean (every model);
- ``std``: a Gaussian predictive standard deviation, from models whose ``predict``
  takes ``return_std=True``; for other models the metric is NaN (not applicable);
- ``binary``: 0/1 outcomes with predicted probabilities;
- ``count``: counts with a predicted positive mean;
- ``truth``: the fitted model and the data set's known truth (variance components,
  unit effects), computed once per job, not on test rows.

Lower is better unless the metric is in ``HIGHER_IS_BETTER``; coverage metrics are
best at their nominal level, so they rank by distance to it (``rank_value``).

When the data set has a weights column, every prediction metric is weighted by the test
rows' weights (``Scored.weight``): each mean over rows becomes a weighted mean (RMSE is
``sqrt(sum w e^2 / sum w)``, R^2 compares with the weighted mean outcome, coverage is
the weighted share, AUC weights each row as scikit-learn's ``sample_weight`` does), so
a row of weight 2 counts as two rows.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score


@dataclass(frozen=True)
class Scored:
    """Test outcomes with a model's predictions for them.

    Attributes
    ----------
    y : numpy.ndarray
        Observed outcomes.
    mean : numpy.ndarray
        Predicted mean (a probability for binary outcomes).
    std : numpy.ndarray or None
        Predictive standard deviation, where the model gives one.
    weight : numpy.ndarray or None
        Row weights of the test rows (None: every row counts once).
    """

    y: np.ndarray
    mean: np.ndarray
    std: np.ndarray | None = None
    weight: np.ndarray | None = None

    def subset(self, mask: np.ndarray) -> Scored:
        """The rows selected by ``mask``."""
        return Scored(
            self.y[mask],
            self.mean[mask],
            None if self.std is None else self.std[mask],
            None if self.weight is None else self.weight[mask],
        )

    def average(self, values: np.ndarray) -> float:
        """The mean of per-row ``values``, weighted by the row weights when there are
        any; NaN when the weights of these rows sum to 0."""
        if self.weight is None:
            return float(np.mean(values))
        total = float(np.sum(self.weight))
        return float(np.sum(self.weight * values) / total) if total > 0 else float("nan")


def rmse(scored: Scored) -> float:
    """Root mean squared error."""
    return float(np.sqrt(scored.average((scored.y - scored.mean) ** 2)))


def mae(scored: Scored) -> float:
    """Mean absolute error."""
    return scored.average(np.abs(scored.y - scored.mean))


def r2(scored: Scored) -> float:
    """Coefficient of determination on the test rows, 1 - SSE / SST around their own mean.

    NaN when the test outcomes are constant (SST = 0).
    """
    total = scored.average((scored.y - scored.average(scored.y)) ** 2)
    if not total > 0:
        return float("nan")
    return float(1.0 - scored.average((scored.y - scored.mean) ** 2) / total)


def nlpd(scored: Scored) -> float:
    """Mean Gaussian negative log predictive density of the outcomes (nats per row)."""
    variance = np.asarray(scored.std, dtype=float) ** 2
    return scored.average(
        0.5 * np.log(2 * np.pi * variance) + (scored.y - scored.mean) ** 2 / (2 * variance)
    )


def _coverage(level: float) -> Callable[[Scored], float]:
    z = float(stats.norm.ppf(0.5 + level / 2))

    def coverage(scored: Scored) -> float:
        return scored.average(np.abs(scored.y - scored.mean) <= z * np.asarray(scored.std))

    coverage.__doc__ = (
        f"Share of outcomes inside the central {level:.0%} Gaussian predictive interval."
    )
    return coverage


def crps(scored: Scored) -> float:
    """Mean continuous ranked probability score of the Gaussian predictive distribution
    (closed form of Gneiting & Raftery 2007); in the outcome's units, lower is better."""
    sd = np.asarray(scored.std, dtype=float)
    z = (scored.y - scored.mean) / sd
    score = sd * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))
    return scored.average(score)


def _probabilities(scored: Scored) -> np.ndarray:
    return np.clip(np.asarray(scored.mean, dtype=float), 1e-15, 1 - 1e-15)


def log_loss(scored: Scored) -> float:
    """Mean negative log-likelihood of 0/1 outcomes under the predicted probabilities."""
    p = _probabilities(scored)
    return -scored.average(scored.y * np.log(p) + (1 - scored.y) * np.log1p(-p))


def brier(scored: Scored) -> float:
    """Mean squared difference between 0/1 outcomes and predicted probabilities.

    On one row per impression this is the seed analysis's impression-weighted mean
    squared prediction error of click-through rates (``weighted_mspe``).
    """
    return scored.average((scored.y - scored.mean) ** 2)


def auc(scored: Scored) -> float:
    """Area under the ROC curve; NaN when the test rows hold one class only."""
    if np.unique(scored.y).size < 2:
        return float("nan")
    return float(roc_auc_score(scored.y, scored.mean, sample_weight=scored.weight))


def poisson_deviance(scored: Scored) -> float:
    """Mean Poisson deviance of counts under the predicted means (0 for a perfect fit);
    predictions are floored at 1e-10, as a mean of zero has infinite deviance."""
    mu = np.maximum(np.asarray(scored.mean, dtype=float), 1e-10)
    y = scored.y
    ratio = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)
    return scored.average(2.0 * (ratio - (y - mu)))


@dataclass(frozen=True)
class Metric:
    """A registered metric: its function, what it needs and which way is better."""

    name: str
    function: Callable[..., float]
    needs: str = "point"
    higher_is_better: bool = False
    nominal: float | None = None  # coverage: the level a calibrated model reaches

    def rank_value(self, values: pd.Series) -> pd.Series:
        """Values ordered so that smaller is better (for ranks and win rates)."""
        if self.nominal is not None:
            return (values - self.nominal).abs()
        return -values if self.higher_is_better else values


def vc_error(model: Any, truth: dict[str, Any]) -> float:
    """Mean relative error of the estimated standard deviations of the random intercepts
    (and of the noise) against the simulation's truth, over the components the model
    estimates. NaN for models without variance components."""
    estimated = estimated_sds(model)
    true_sd = truth.get("sd", {})
    errors = [
        abs(estimated[name] - true_sd[name]) / true_sd[name]
        for name in estimated
        if name in true_sd and true_sd[name] > 0
    ]
    return float(np.mean(errors)) if errors else float("nan")


def effect_corr(model: Any, truth: dict[str, Any], factor: Hashable | None) -> float:
    """Correlation between estimated and true effects of ``factor``'s units seen in
    training. NaN when the model has no unit effects or the truth has none."""
    if factor is None:
        return float("nan")
    estimated = estimated_effects(model, factor)
    true_effects = truth.get("unit_effects", {}).get(factor)
    if estimated is None or true_effects is None:
        return float("nan")
    true_effects = pd.Series(true_effects)
    common = estimated.index.intersection(true_effects.index)
    if common.size < 3:
        return float("nan")
    a = estimated.loc[common].to_numpy(dtype=float)
    b = true_effects.loc[common].to_numpy(dtype=float)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def estimated_sds(model: Any) -> dict[str, float]:
    """Estimated random-intercept standard deviation per factor, and ``noise``, of a
    fitted mixed model (``varcorr_`` in lme4's layout); empty for other models."""
    varcorr = getattr(model, "varcorr_", None)
    if not isinstance(varcorr, pd.DataFrame):
        return {}
    result = {}
    for _, row in varcorr.iterrows():
        if row["grp"] == "Residual":
            result["noise"] = float(row["sdcor"])
        elif row["var1"] == "(Intercept)" and pd.isna(row.get("var2")):
            result[str(row["grp"])] = float(row["sdcor"])
    return result


def estimated_effects(model: Any, factor: Hashable) -> pd.Series | None:
    """A fitted model's effect per level of ``factor``: random intercepts' conditional
    modes (``ranef_``) or per-level effects (``group_effects_``); None if it has none."""
    ranef = getattr(model, "ranef_", None)
    if isinstance(ranef, dict) and factor in ranef and "(Intercept)" in ranef[factor]:
        return ranef[factor]["(Intercept)"]
    effects = getattr(model, "group_effects_", None)
    if isinstance(effects, dict) and factor in effects:
        return pd.Series(effects[factor])
    return None


_METRICS: MappingProxyType[str, Metric] = MappingProxyType(
    {
        metric.name: metric
        for metric in [
            Metric("rmse", rmse),
            Metric("mae", mae),
            Metric("r2", r2, higher_is_better=True),
            Metric("nlpd", nlpd, needs="std"),
            Metric("coverage50", _coverage(0.5), needs="std", nominal=0.5),
            Metric("coverage90", _coverage(0.9), needs="std", nominal=0.9),
            Metric("crps", crps, needs="std"),
            Metric("log_loss", log_loss, needs="binary"),
            Metric("brier", brier, needs="binary"),
            Metric("weighted_mspe", brier, needs="binary"),
            Metric("auc", auc, needs="binary", higher_is_better=True),
            Metric("poisson_deviance", poisson_deviance, needs="count"),
            Metric("vc_error", vc_error, needs="truth"),
            Metric("effect_corr", effect_corr, needs="truth", higher_is_better=True),
        ]
    }
)
# What a config without a ``metrics`` field scores.
DEFAULT: tuple[str, ...] = ("rmse", "mae", "r2")
# The metric that ranks models on each outcome family: the one the family's likelihood
# makes proper (squared error of 0/1 outcomes is the Brier score, which hides the
# differences a log loss shows).
PRIMARY: MappingProxyType[str, str] = MappingProxyType(
    {"gaussian": "rmse", "binomial": "log_loss", "poisson": "poisson_deviance"}
)
# Outcome families a metric applies to, by what it needs (others: every family).
FAMILY_OF_NEEDS: MappingProxyType[str, str] = MappingProxyType(
    {"binary": "binomial", "count": "poisson"}
)
HIGHER_IS_BETTER: frozenset[str] = frozenset(
    name for name, metric in _METRICS.items() if metric.higher_is_better
)
# Metrics reported separately for seen / unseen units and per unit-activity bucket.
BY_GROUP_NEEDS: frozenset[str] = frozenset({"point", "std", "binary", "count"})
# Buckets of a test row's unit's number of training rows: [low, high] inclusive.
ACTIVITY_BUCKETS: tuple[tuple[int, float], ...] = (
    (0, 0),
    (1, 2),
    (3, 9),
    (10, 29),
    (30, 99),
    (100, float("inf")),
)


def bucket_label(low: int, high: float) -> str:
    """Column suffix of an activity bucket: ``0``, ``1-2``, ..., ``100+``."""
    if high == low:
        return str(low)
    return f"{low}+" if high == float("inf") else f"{low}-{int(high)}"


def available() -> tuple[str, ...]:
    """Metric names in their canonical order."""
    return tuple(_METRICS)


def info(name: str) -> Metric:
    """The registered metric called ``name``."""
    if name not in _METRICS:
        raise KeyError(f"unknown metric {name!r}; available metrics: {', '.join(_METRICS)}")
    return _METRICS[name]


def applies(name: str, family: str) -> bool:
    """Whether the metric called ``name`` is defined for outcomes of ``family``."""
    needed = FAMILY_OF_NEEDS.get(info(name).needs)
    return needed is None or needed == family


def primary_metric(family: str) -> str:
    """The metric that ranks models on outcomes of ``family`` (see ``PRIMARY``)."""
    return PRIMARY[family]


def get(name: str) -> Callable[..., float]:
    """The function of the metric called ``name``."""
    return info(name).function


def score_rows(
    names: tuple[str, ...], scored: Scored, unit_train_rows: np.ndarray | None
) -> dict[str, float]:
    """Every prediction metric in ``names`` on all test rows, and on subsets.

    Columns: ``<metric>`` over all rows; ``<metric>@seen`` and ``<metric>@unseen`` for
    test rows whose unit has / has no training rows; ``<metric>@train_rows=<bucket>``
    per activity bucket (see ``ACTIVITY_BUCKETS``); ``n_test@...`` counts the rows of
    each subset. A metric that needs what the model did not give is NaN.
    """
    row: dict[str, float] = {}
    subsets: dict[str, np.ndarray] = {}
    if unit_train_rows is not None:
        subsets["seen"] = unit_train_rows > 0
        subsets["unseen"] = unit_train_rows == 0
        for low, high in ACTIVITY_BUCKETS:
            inside = (unit_train_rows >= low) & (unit_train_rows <= high)
            subsets[f"train_rows={bucket_label(low, high)}"] = inside
    for suffix, mask in subsets.items():
        row[f"n_test@{suffix}"] = int(mask.sum())
    for name in names:
        metric = info(name)
        if metric.needs not in BY_GROUP_NEEDS:
            continue
        applies = metric.needs != "std" or scored.std is not None
        row[name] = metric.function(scored) if applies and scored.y.size else float("nan")
        for suffix, mask in subsets.items():
            row[f"{name}@{suffix}"] = (
                metric.function(scored.subset(mask)) if applies and mask.any() else float("nan")
            )
    return row
