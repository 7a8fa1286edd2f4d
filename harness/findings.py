"""The report's findings: a few sentences computed from the results, never canned.

Every sentence states a paired comparison on identical folds with its 95% Nadeau-Bengio
corrected interval (per scenario, then averaged over scenarios), so a reader can tell a
real difference from noise:

- per split scheme, which estimator ranks first and how it compares with the baseline;
- for the least and the most active seen units, which estimator wins there and by how
  much over the runner-up (where shrinkage helps, and where it stops mattering);
- for unseen units (cold start), the winner against the baseline;
- how many jobs failed, when any did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness import metrics as metric_registry
from harness.compare import PAIR_KEYS, fold_ranks, fold_ratios, stratified_interval


def format_percent(value: float, signed: bool = False) -> str:
    """A percentage with as many decimals as its size needs (7%, 2.4%, 0.35%)."""
    size = abs(value)
    digits = 0 if size >= 10 else 1 if size >= 1 else 2
    return f"{value:+.{digits}f}%" if signed else f"{value:.{digits}f}%"


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of estimator ``a`` with ``b`` on one metric column."""

    a: str
    b: str
    column: str
    percent: float  # mean improvement of a over b, in % of b's mean (positive: a better)
    low: float
    high: float
    n: int

    def interval_text(self) -> str:
        """The 95% interval of ``percent``, e.g. ``95% CI +6.3% to +8.7%``."""
        low, high = format_percent(self.low, signed=True), format_percent(self.high, signed=True)
        return f"95% CI {low} to {high}"

    def sentence(self, where: str) -> str:
        metric = self.column.split("@")[0]
        size = format_percent(abs(self.percent))
        if not np.isfinite(self.low):
            return (
                f"{where}, {self.a} does {size} "
                f"{'better' if self.percent > 0 else 'worse'} than {self.b} by {metric} "
                f"({self.n} fold(s), too few for an interval)."
            )
        interval = f"{self.interval_text()}, {self.n} folds"
        if self.low > 0:
            return f"{where}, {self.a} beats {self.b} by {size} {metric} ({interval})."
        if self.high < 0:
            return f"{where}, {self.a} trails {self.b} by {size} {metric} ({interval})."
        return (
            f"{where}, {self.a} and {self.b} are within noise of each other on {metric}: "
            f"{format_percent(self.percent, signed=True)} ({interval})."
        )


def compare(rows: pd.DataFrame, a: str, b: str, column: str) -> Comparison | None:
    """Paired comparison of ``a`` against ``b`` on ``column`` over the folds both ran.

    Scenarios differ (that is why they were swept), so the difference is estimated per
    scenario and the scenarios are averaged with equal weight (``stratified_interval``).
    """
    metric = metric_registry.info(column.split("@")[0])
    # Improvement in % of b's mean: a smaller loss (or a larger score) is positive.
    sign = 1.0 if metric.higher_is_better else -1.0
    left = rows[rows["estimator"] == a].set_index(PAIR_KEYS)
    right = rows[rows["estimator"] == b].set_index(PAIR_KEYS)
    common = left.index.intersection(right.index)
    if common.empty:
        return None
    left, right = left.loc[common], right.loc[common]
    x, y = left[column].to_numpy(dtype=float), right[column].to_numpy(dtype=float)
    strata = common.get_level_values("scenario").to_numpy()
    # Each scenario's differences in % of b's mean in that scenario.
    scale = pd.Series(y).groupby(strata).transform("mean").abs().replace(0, 1).to_numpy()
    interval = stratified_interval(sign * (x - y) / scale * 100, strata, fold_ratios(left))
    if interval.n == 0:
        return None
    return Comparison(a, b, column, interval.mean, interval.low, interval.high, interval.n)


def _ranked(rows: pd.DataFrame, column: str) -> list[str]:
    """Estimators by mean rank on ``column`` within each fold (best first)."""
    usable = rows[rows[column].notna()]
    if usable.empty:
        return []
    _, rank = fold_ranks(usable, column)
    return list(rank.groupby(usable["estimator"]).mean().sort_values().index)


def _buckets(rows: pd.DataFrame, metric: str) -> list[tuple[str, str]]:
    """(label, column) of the activity buckets of seen units that hold test rows."""
    found = []
    for low, high in metric_registry.ACTIVITY_BUCKETS:
        if low == 0:
            continue
        label = metric_registry.bucket_label(low, high)
        column = f"{metric}@train_rows={label}"
        count = f"n_test@train_rows={label}"
        if column in rows and count in rows and (rows[count] > 0).mean() >= 0.5:
            found.append((label, column))
    return found


def findings(
    table: pd.DataFrame,
    metric: str,
    baseline: str,
    split_order: list[str] | None = None,
    *,
    winners: bool = True,
    failures: bool = True,
) -> list[str]:
    """Sentences on ``metric`` from a results table; empty when nothing succeeded.

    ``split_order`` lists split labels in the order to report them (the config's);
    others follow in the table's order. ``winners=False`` leaves out who ranks first
    overall (where the report's map of regimes says it already), ``failures=False``
    the count of failed jobs.
    """
    if "status" not in table or metric not in table:
        return []
    ok = table[table["status"] == "ok"]
    sentences = []
    splits = list(dict.fromkeys([*(split_order or []), *ok["split"]]))
    for split in (split for split in splits if split in set(ok["split"])):
        rows = ok[ok["split"] == split]
        order = _ranked(rows, metric)
        if not order:
            continue
        best = order[0]
        if not winners:
            pass
        elif best == baseline:
            runner_up = order[1] if len(order) > 1 else None
            result = compare(rows, best, runner_up, metric) if runner_up else None
            if result is not None:
                sentences.append(
                    result.sentence(f"On {split}, the baseline ranks first by {metric}: overall")
                )
        else:
            result = compare(rows, best, baseline, metric)
            if result is not None:
                sentences.append(
                    result.sentence(f"On {split}, {best} ranks first by {metric}; overall")
                )
        buckets = _buckets(rows, metric)
        for label, column in buckets[:1] + buckets[-1:] if len(buckets) > 1 else buckets:
            bucket_order = _ranked(rows, column)
            if len(bucket_order) < 2:
                continue
            result = compare(rows, bucket_order[0], bucket_order[1], column)
            if result is not None:
                sentences.append(
                    result.sentence(f"On {split}, for seen units with {label} training rows")
                )
        # Unseen units among seen ones (temporal, fresh draws); an unseen_units split is
        # all unseen, and its overall sentence already says it.
        unseen = f"{metric}@unseen"
        mixed = "n_test@unseen" in rows and (rows["n_test@unseen"] < rows["n_test"]).any()
        if mixed and unseen in rows and rows[unseen].notna().mean() >= 0.5:
            unseen_order = _ranked(rows, unseen)
            if unseen_order and unseen_order[0] != baseline:
                result = compare(rows, unseen_order[0], baseline, unseen)
                if result is not None:
                    sentences.append(result.sentence(f"On {split}, for unseen units"))
    failed = failure_sentence(table)
    if failures and failed:
        sentences.append(failed)
    return sentences


def failure_sentence(table: pd.DataFrame) -> str:
    """How many jobs failed and which estimators, or "" when none did."""
    failed = table[table["status"] == "failed"] if "status" in table else table.iloc[0:0]
    if failed.empty:
        return ""
    names = ", ".join(sorted(failed["estimator"].astype(str).unique()))
    return f"{len(failed)} of {len(table)} jobs failed ({names}); see Failures."
