"""Paired comparison of estimators on identical folds.

Fold scores are not independent: training sets of K-fold cross-validation overlap, so
the naive standard error of their mean is too small. Intervals here use Nadeau and
Bengio's corrected resampled t: with J fold scores whose test/train size ratio is
``rho``, the variance of their mean is ``(1/J + rho) * s^2`` instead of ``s^2 / J``,
with ``J - 1`` degrees of freedom.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from harness import metrics as metric_registry

# A fold of a data set, on which every estimator of a task was fitted.
PAIR_KEYS = ["scenario", "repeat", "split", "fold"]
# Cost of a job, summarised by the median over folds (a few slow outliers, a busy
# machine say, should not move it).
COST_COLUMNS = ["fit_seconds", "predict_seconds", "peak_memory_mb"]


@dataclass(frozen=True)
class Interval:
    """A mean with its confidence interval, and the standard error and degrees of
    freedom of the t interval it came from (to recompute it at another level)."""

    mean: float
    low: float
    high: float
    n: int
    se: float = float("nan")
    dof: float = float("nan")

    def at(self, confidence: float) -> Interval:
        """The same interval at another ``confidence`` level."""
        if not (np.isfinite(self.se) and np.isfinite(self.dof)):
            return self
        half = float(stats.t.ppf(0.5 + confidence / 2, self.dof) * self.se)
        return Interval(self.mean, self.mean - half, self.mean + half, self.n, self.se, self.dof)

    @property
    def p_value(self) -> float:
        """Two-sided p-value of a mean of zero (NaN without an interval)."""
        if not (np.isfinite(self.se) and np.isfinite(self.dof)):
            return float("nan")
        if self.se == 0:
            return 0.0 if self.mean != 0 else 1.0
        return float(2 * stats.t.sf(abs(self.mean) / self.se, self.dof))


def corrected_t_interval(
    values: np.ndarray, test_train_ratio: float, confidence: float = 0.95
) -> Interval:
    """Nadeau-Bengio corrected resampled t interval for the mean of fold scores.

    Parameters
    ----------
    values : array of float
        One score (or paired difference) per fold; NaNs are dropped.
    test_train_ratio : float
        Mean of n_test / n_train over the folds (0 for independent test sets).
    confidence : float
        Coverage of the interval.

    Returns
    -------
    Interval
        NaN bounds when fewer than two values are available.
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    n = values.size
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(values.mean())
    if n < 2:
        return Interval(mean, float("nan"), float("nan"), n)
    variance = (1.0 / n + test_train_ratio) * values.var(ddof=1)
    se = float(np.sqrt(variance))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1) * se)
    return Interval(mean, mean - half, mean + half, n, se, n - 1)


def stratified_interval(
    values: np.ndarray, strata: np.ndarray, ratios: np.ndarray, confidence: float = 0.95
) -> Interval:
    """Interval for the equal-weight mean over strata (scenarios) of fold scores.

    Each stratum's mean gets the corrected resampled t variance of its own folds; the
    strata are averaged with equal weight, so their variances add (divided by the
    squared count), with the strata's degrees of freedom summed. Differences *between*
    strata (which a sweep creates on purpose) do not widen the interval.

    Parameters
    ----------
    values : array of float
        One score (or paired difference) per fold; NaNs are dropped.
    strata : array
        The stratum of each value.
    ratios : array of float
        Each fold's test/train size ratio.
    """
    values = np.asarray(values, dtype=float)
    strata, ratios = np.asarray(strata), np.asarray(ratios, dtype=float)
    keep = np.isfinite(values)
    means, variances, n, dof = [], [], 0, 0
    for stratum in pd.unique(strata[keep]):
        inside = keep & (strata == stratum)
        j = int(inside.sum())
        means.append(float(values[inside].mean()))
        ratio = float(ratios[inside].mean())
        variances.append((1 / j + ratio) * values[inside].var(ddof=1) if j > 1 else np.nan)
        n += j
        dof += j - 1
    if not means:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(np.mean(means))
    if dof < 1 or not np.all(np.isfinite(variances)):
        return Interval(mean, float("nan"), float("nan"), n)
    se = float(np.sqrt(np.sum(variances)) / len(means))
    half = float(stats.t.ppf(0.5 + confidence / 2, dof) * se)
    return Interval(mean, mean - half, mean + half, n, se, dof)


def fold_ratios(rows: pd.DataFrame) -> np.ndarray:
    """Each row's test/train size ratio for the correction (0 for independent tests)."""
    if "test_train_ratio" in rows:
        return rows["test_train_ratio"].to_numpy(dtype=float)
    return (rows["n_test"] / rows["n_train"]).to_numpy(dtype=float)


def fold_ranks(rows: pd.DataFrame, column: str) -> tuple[pd.Series, pd.Series]:
    """Each row's loss on ``column`` (smaller is better whatever the metric's direction;
    ``column`` may be a breakdown such as ``rmse@seen``) and its rank among the
    estimators of its fold (1 is best, ties share the average rank)."""
    metric = metric_registry.info(column.split("@")[0])
    loss = metric.rank_value(rows[column].astype(float))
    rank = loss.groupby([rows[key] for key in PAIR_KEYS]).rank(method="average")
    return loss, rank


def primary_metrics(
    table: pd.DataFrame, metrics: list[str], overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The metric that ranks the models of each scenario: its outcome family's primary
    metric (``overrides`` by family, else ``metrics.PRIMARY``) when the sweep scored it,
    else the first of ``metrics`` with a value there (RMSE does not rank binary outcomes
    when log loss is at hand)."""
    ok = table[table["status"] == "ok"] if "status" in table else table
    chosen = {}
    defaults = dict(metric_registry.PRIMARY) | dict(overrides or {})
    for scenario, rows in ok.groupby("scenario", sort=False):
        family = rows["family"].iloc[0] if "family" in rows else None
        preferred = defaults.get(family) if isinstance(family, str) else None
        scored = [m for m in metrics if m in rows and rows[m].notna().any()]
        if preferred in scored:
            chosen[str(scenario)] = preferred
        elif scored or metrics:
            chosen[str(scenario)] = (scored or metrics)[0]
    return chosen


def leaderboard(
    table: pd.DataFrame,
    metrics: list[str],
    baseline: str,
    primary: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Mean of each metric with its interval, difference to the baseline, mean rank and
    win rate.

    Parameters
    ----------
    table : pandas.DataFrame
        Result rows (the store's table); only rows with status ``ok`` are used.
    metrics : list of str
        Metric columns.
    baseline : str
        Estimator label the paired differences are taken against.
    primary : mapping, optional
        Scenario -> the metric that ranks its estimators; default
        :func:`primary_metrics`.

    Returns
    -------
    pandas.DataFrame
        One row per (scenario, split, estimator) with ``n``, ``<metric>``,
        ``<metric>_low``, ``<metric>_high``, ``<metric>_diff`` (estimator minus
        baseline, paired by fold) with ``_diff_low``/``_diff_high``, the same in % of
        the baseline's mean (``<metric>_diff_pct``, ``_pct_low``, ``_pct_high``),
        ``primary`` (the scenario's ranking metric), ``mean_rank`` by it (1 is best;
        coverage ranks by distance to its nominal level), ``win_rate``: the share of
        folds on which the estimator beats the baseline on it (ties count half), and
        the median over folds of
        ``fit_seconds``, ``predict_seconds`` and ``peak_memory_mb``.
    """
    ok = table[table["status"] == "ok"].copy()
    columns = ["scenario", "split", "estimator", "primary", "n", "mean_rank", "win_rate"]
    columns += COST_COLUMNS
    for metric in metrics:
        columns += [metric, f"{metric}_low", f"{metric}_high"]
        columns += [f"{metric}_diff", f"{metric}_diff_low", f"{metric}_diff_high"]
        columns += [f"{metric}_diff_pct", f"{metric}_pct_low", f"{metric}_pct_high"]
    if ok.empty:
        return pd.DataFrame(columns=columns)
    primary = dict(primary or primary_metrics(ok, metrics))
    ok["ratio"] = fold_ratios(ok)
    records = []
    for (scenario, split), group in ok.groupby(["scenario", "split"], sort=False):
        ranking = primary.get(str(scenario), metrics[0])
        group = group.assign(
            **dict(zip(["_loss", "rank"], fold_ranks(group, ranking), strict=True))
        )
        reference = group[group["estimator"] == baseline].set_index(PAIR_KEYS)
        for estimator, rows in group.groupby("estimator", sort=False):
            record = {
                "scenario": scenario,
                "split": split,
                "estimator": estimator,
                "primary": ranking,
                "n": len(rows),
                "mean_rank": float(rows["rank"].mean()),
            }
            record |= {
                column: float(rows[column].median()) if column in rows else float("nan")
                for column in COST_COLUMNS
            }
            ratio = float(rows["ratio"].mean())
            paired = rows.set_index(PAIR_KEYS)
            common = paired.index.intersection(reference.index)
            loss = paired.loc[common, "_loss"].to_numpy()
            reference_loss = reference.loc[common, "_loss"].to_numpy()
            record["win_rate"] = (
                float(np.mean((loss < reference_loss) + 0.5 * (loss == reference_loss)))
                if common.size
                else float("nan")
            )
            for metric in metrics:
                interval = corrected_t_interval(rows[metric].to_numpy(), ratio)
                record |= {
                    metric: interval.mean,
                    f"{metric}_low": interval.low,
                    f"{metric}_high": interval.high,
                }
                difference = (paired.loc[common, metric] - reference.loc[common, metric]).to_numpy()
                diff = corrected_t_interval(difference, ratio)
                record |= {
                    f"{metric}_diff": diff.mean,
                    f"{metric}_diff_low": diff.low,
                    f"{metric}_diff_high": diff.high,
                }
                # In % of the baseline's mean on the same folds, as the findings say it.
                scale = abs(float(reference.loc[common, metric].mean())) if common.size else 0.0
                scale = scale if scale > 0 else float("nan")
                record |= {
                    f"{metric}_diff_pct": 100 * diff.mean / scale,
                    f"{metric}_pct_low": 100 * diff.low / scale,
                    f"{metric}_pct_high": 100 * diff.high / scale,
                }
            records.append(record)
    board = pd.DataFrame.from_records(records, columns=columns)
    return board.sort_values(["scenario", "split", "mean_rank"], kind="stable", ignore_index=True)


def write_comparison(
    table: pd.DataFrame,
    metrics: list[str],
    baseline: str,
    directory: str | Path,
    primary: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Write the leaderboard to ``comparison.csv`` in ``directory`` (the table the report
    reads and users can take elsewhere) and return it."""
    board = leaderboard(table, metrics, baseline, primary)
    board.to_csv(Path(directory) / "comparison.csv", index=False)
    return board
