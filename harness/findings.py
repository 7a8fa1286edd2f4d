"""The report's findings: a few sentences computed from the results, never canned.

Every sentence states a paired comparison on identical folds with its Nadeau-Bengio
corrected interval (per scenario, then averaged over scenarios) and reads it against a
practical margin (``harness.equivalence``): "beats" only when the whole interval lies
beyond the margin, "equivalent" when it lies inside, "small" in between. The findings a
report shows are a family: :func:`adjust` widens their intervals by Holm's procedure.
A finding that averages over scenarios names any scenario that reverses it.

- per split scheme, which estimator ranks first and how it compares with the baseline;
- for the least and the most active seen units, which estimator wins there and by how
  much over the runner-up (where shrinkage helps, and where it stops mattering);
- for unseen units (cold start), the winner against the baseline;
- how many jobs failed, when any did.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from harness import metrics as metric_registry
from harness.compare import PAIR_KEYS, Interval, fold_ranks, fold_ratios, stratified_interval
from harness.config import DEFAULT_MARGIN
from harness.equivalence import holm, verdict

# The margin when none is given (the config's default), in %.
DEFAULT_MARGIN_PERCENT = 100 * DEFAULT_MARGIN
# A bucket of unit activity is worth a sentence when it holds this share of test rows.
MIN_BUCKET_SHARE = 0.1


def format_percent(value: float, signed: bool = False) -> str:
    """A percentage with as many decimals as its size needs (7%, 2.4%, 0.35%)."""
    size = abs(value)
    digits = 0 if size >= 10 else 1 if size >= 1 else 2
    return f"{value:+.{digits}f}%" if signed else f"{value:.{digits}f}%"


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of estimator ``a`` with ``b`` on one metric column.

    ``percent`` is the mean improvement of ``a`` over ``b`` in % of ``b``'s mean
    (positive: ``a`` better), ``interval`` its interval at ``confidence``, ``margin``
    the practical margin in %, ``adjusted_p`` the Holm-adjusted p-value once the
    comparison has been adjusted as one of a family (:func:`adjust`).
    """

    a: str
    b: str
    column: str
    interval: Interval
    margin: float = DEFAULT_MARGIN_PERCENT
    confidence: float = 0.95
    adjusted_p: float = float("nan")
    family_size: int = 1

    @property
    def percent(self) -> float:
        return self.interval.mean

    @property
    def low(self) -> float:
        return self.interval.low

    @property
    def high(self) -> float:
        return self.interval.high

    @property
    def n(self) -> int:
        return self.interval.n

    @property
    def verdict(self) -> str:
        """``better``, ``small better``, ``equivalent``, ``inconclusive``, ... of ``a``."""
        return verdict(self.low, self.high, self.margin)

    def interval_text(self) -> str:
        """The interval of ``percent``, e.g. ``95% CI +6.3% to +8.7%`` (with the Holm
        level when adjusted)."""
        low, high = format_percent(self.low, signed=True), format_percent(self.high, signed=True)
        level = f"{100 * self.confidence:.4g}%"
        return f"{level} CI {low} to {high}"

    def sentence(self, where: str) -> str:
        metric = self.column.split("@")[0]
        size = format_percent(abs(self.percent))
        if not np.isfinite(self.low):
            return (
                f"{where}, {self.a} does {size} "
                f"{'better' if self.percent > 0 else 'worse'} than {self.b} by {metric} "
                f"({self.n} fold(s), too few for an interval)."
            )
        interval = f"{self.interval_text()}, {self.n} folds, margin ±{self.margin:g}%"
        reading = self.verdict
        if reading == "better":
            return f"{where}, {self.a} beats {self.b} by {size} {metric} ({interval})."
        if reading == "worse":
            return f"{where}, {self.a} trails {self.b} by {size} {metric} ({interval})."
        if reading in ("small better", "small worse"):
            first, second = (self.a, self.b) if reading == "small better" else (self.b, self.a)
            return (
                f"{where}, {first} is ahead of {second} by a small {size} {metric}, which "
                f"may be inside the practical margin ({interval})."
            )
        if reading == "equivalent":
            return (
                f"{where}, {self.a} and {self.b} are equivalent on {metric}: "
                f"{format_percent(self.percent, signed=True)}, inside the margin ({interval})."
            )
        return (
            f"{where}, {self.a} and {self.b} cannot be told apart on {metric}: "
            f"{format_percent(self.percent, signed=True)} ({interval})."
        )


def adjust(comparisons: list[Comparison], confidence: float = 0.95) -> list[Comparison]:
    """The comparisons as one family: p-values adjusted by Holm's step-down procedure
    and each interval at its step's level (1 - alpha / (k - i + 1) for the i-th
    smallest of k p-values), so that the family's intervals hold together."""
    p_values = [comparison.interval.p_value for comparison in comparisons]
    adjusted, divisor = holm(p_values)
    family = int(np.isfinite(p_values).sum())
    alpha = 1 - confidence
    return [
        replace(
            comparison,
            interval=comparison.interval.at(1 - alpha / step),
            confidence=1 - alpha / step,
            adjusted_p=float(p),
            family_size=family,
        )
        for comparison, p, step in zip(comparisons, adjusted, divisor, strict=True)
    ]


@dataclass(frozen=True)
class Finding:
    """A comparison with where it holds, and the scenarios it averages over that
    reverse it (each scenario's own comparison pointing the other way beyond noise)."""

    where: str
    comparison: Comparison
    scenarios: int = 1
    reversals: tuple[tuple[str, Comparison], ...] = ()

    def sentence(self) -> str:
        text = self.comparison.sentence(self.where)
        if self.scenarios < 2:
            return text
        if not self.reversals:
            return f"{text} No scenario of the {self.scenarios} it averages reverses it."
        named = "; ".join(
            f"{scenario} ({format_percent(c.percent, signed=True)}, {c.interval_text()})"
            for scenario, c in self.reversals
        )
        return f"{text} Reversed in {named}."


def compare(
    rows: pd.DataFrame, a: str, b: str, column: str, margin: float = DEFAULT_MARGIN_PERCENT
) -> Comparison | None:
    """Paired comparison of ``a`` against ``b`` on ``column`` over the folds both ran,
    read against a practical ``margin`` in %.

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
    return Comparison(a, b, column, interval, margin=margin)


def _finding(
    rows: pd.DataFrame, where: str, a: str, b: str, column: str, margin: float
) -> Finding | None:
    """The comparison of ``a`` with ``b`` over ``rows`` and, when they hold several
    scenarios, the scenarios whose own comparison points the other way beyond noise."""
    overall = compare(rows, a, b, column, margin)
    if overall is None:
        return None
    scenarios = list(dict.fromkeys(rows["scenario"]))
    reversals = []
    if len(scenarios) > 1:
        for scenario in scenarios:
            own = compare(rows[rows["scenario"] == scenario], a, b, column, margin)
            if own is None or not np.isfinite(own.low):
                continue
            if (overall.percent > 0 and own.high < 0) or (overall.percent < 0 and own.low > 0):
                reversals.append((str(scenario), own))
    return Finding(where, overall, len(scenarios), tuple(reversals))


def _ranked(rows: pd.DataFrame, column: str) -> list[str]:
    """Estimators by mean rank on ``column`` within each fold (best first)."""
    usable = rows[rows[column].notna()]
    if usable.empty:
        return []
    _, rank = fold_ranks(usable, column)
    return list(rank.groupby(usable["estimator"]).mean().sort_values().index)


def _buckets(rows: pd.DataFrame, metric: str) -> list[tuple[str, str]]:
    """(label, column) of the activity buckets of seen units that hold at least
    ``MIN_BUCKET_SHARE`` of the test rows: a bucket that few rows fall in (every user
    has about 22 impressions, say) says nothing about activity."""
    found = []
    for low, high in metric_registry.ACTIVITY_BUCKETS:
        if low == 0:
            continue
        label = metric_registry.bucket_label(low, high)
        column = f"{metric}@train_rows={label}"
        count = f"n_test@train_rows={label}"
        if column not in rows or count not in rows:
            continue
        share = (rows[count] / rows["n_test"].where(rows["n_test"] > 0)).mean()
        if share >= MIN_BUCKET_SHARE:
            found.append((label, column))
    return found


def findings_of(
    table: pd.DataFrame,
    metric: str,
    baseline: str,
    split_order: list[str] | None = None,
    *,
    winners: bool = True,
    margin: float = DEFAULT_MARGIN_PERCENT,
) -> list[Finding]:
    """The findings on ``metric`` from a results table (unadjusted; see :func:`adjust`);
    empty when nothing succeeded.

    ``split_order`` lists split labels in the order to report them (the config's);
    others follow in the table's order. ``winners=False`` leaves out who ranks first
    overall (where the report's map of regimes says it already). ``margin`` is the
    practical margin in %.
    """
    if "status" not in table or metric not in table:
        return []
    ok = table[table["status"] == "ok"]
    found: list[Finding | None] = []
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
            if runner_up:
                where = f"On {split}, the baseline ranks first by {metric}: overall"
                found.append(_finding(rows, where, best, runner_up, metric, margin))
        else:
            where = f"On {split}, {best} ranks first by {metric}; overall"
            found.append(_finding(rows, where, best, baseline, metric, margin))
        buckets = _buckets(rows, metric)
        for label, column in buckets[:1] + buckets[-1:] if len(buckets) > 1 else []:
            bucket_order = _ranked(rows, column)
            if len(bucket_order) < 2:
                continue
            where = f"On {split}, for seen units with {label} training rows"
            found.append(_finding(rows, where, bucket_order[0], bucket_order[1], column, margin))
        # Unseen units among seen ones (temporal, fresh draws); an unseen_units split is
        # all unseen, and its overall sentence already says it.
        unseen = f"{metric}@unseen"
        mixed = "n_test@unseen" in rows and (rows["n_test@unseen"] < rows["n_test"]).any()
        if mixed and unseen in rows and rows[unseen].notna().mean() >= 0.5:
            unseen_order = _ranked(rows, unseen)
            if unseen_order and unseen_order[0] != baseline:
                where = f"On {split}, for unseen units"
                found.append(_finding(rows, where, unseen_order[0], baseline, unseen, margin))
    return [finding for finding in found if finding is not None]


def findings(
    table: pd.DataFrame,
    metric: str,
    baseline: str,
    split_order: list[str] | None = None,
    *,
    winners: bool = True,
    failures: bool = True,
    margin: float = DEFAULT_MARGIN_PERCENT,
) -> list[str]:
    """Sentences of :func:`findings_of`, adjusted as one family, and (``failures``)
    the count of failed jobs."""
    found = findings_of(table, metric, baseline, split_order, winners=winners, margin=margin)
    adjusted = adjust([finding.comparison for finding in found])
    sentences = [
        replace(finding, comparison=comparison).sentence()
        for finding, comparison in zip(found, adjusted, strict=True)
    ]
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
