"""A run beside the published results its config reproduces (``harness.reference``):
the report's reference section.

Published values of the reference metric sit beside this run's means over its data sets;
each published conclusion gets a verdict (agrees, agrees in part, does not agree) and
the sentences that support it:

- a metric claim (``worse``, ``better``, ``equivalent``) is read as the report reads every
  difference: the paired comparison with ``than`` in % of its mean, against the
  config's practical margin, pooled over the values of the swept parameter the claim
  covers (each value's data sets a stratum), the claims' pooled comparisons adjusted
  together by Holm's procedure; it holds when the pooled verdict is the claim's and no
  single value's own 95% interval contradicts it. A contrast estimator gets the same
  reading, and the parameters in which it differs from the claim's estimator are named;
- ``faster`` compares median fit seconds at each value;
- estimate claims read the model summaries of each scenario's first data set (and, for a
  standard deviation, this run's whole-data estimates over its data sets).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from harness import metrics as metric_registry
from harness.compare import corrected_t_interval, fold_ratios
from harness.findings import Comparison, adjust, compare, format_percent
from harness.reference import (
    METRIC_CLAIMS,
    TIME_CLAIMS,
    Claim,
    Estimate,
    Reference,
)

if TYPE_CHECKING:
    from harness.config import Config

# Two rankings "agree" from this Spearman correlation on; two estimates are "the same"
# within this relative difference.
SAME_RANKING = 0.99
SAME_ESTIMATE = 1e-4


# --- this run's numbers ------------------------------------------------------------------


def _number_text(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}g}"


def _value_text(value: float) -> str:
    return f"{value:g}"


def _by_values(rows: pd.DataFrame, by: str | None) -> pd.Series:
    """Each row's value of the swept parameter ``by`` (NaN without one)."""
    column = f"sim.{by}"
    if by is None or column not in rows:
        return pd.Series(np.nan, index=rows.index)
    return pd.to_numeric(rows[column], errors="coerce")


def _mean_cell(rows: pd.DataFrame, metric: str) -> dict[str, str]:
    """Mean of ``metric`` over ``rows`` (data sets or folds) with its 95% interval."""
    if rows.empty:
        return {"value": "–", "interval": ""}
    interval = corrected_t_interval(rows[metric].to_numpy(float), float(fold_ratios(rows).mean()))
    bounds = (
        f"[{_number_text(interval.low)}, {_number_text(interval.high)}]"
        if np.isfinite(interval.low)
        else ""
    )
    return {"value": _number_text(interval.mean), "interval": bounds}


def metric_tables(ok: pd.DataFrame, reference: Reference) -> list[dict[str, Any]]:
    """Per published method, a row per value of ``by``: the published value, then each
    of its estimators' mean over this run's data sets with a 95% interval."""
    if reference.metric is None or reference.metric not in ok:
        return []
    by = _by_values(ok, reference.by)
    tables = []
    for method in reference.methods:
        mine = ok["estimator"].isin(method.estimators)
        # The values this run has (a publication may report more), else the published.
        values = sorted(set(by[mine].dropna())) or sorted(method.values)
        rows = [
            {
                "by": _value_text(value),
                "published": _number_text(method.values.get(value)),
                "cells": [
                    _mean_cell(ok[(ok["estimator"] == label) & (by == value)], reference.metric)
                    for label in method.estimators
                ],
            }
            for value in values
        ]
        tables.append({"method": method.name, "estimators": list(method.estimators), "rows": rows})
    return tables


def _parameters(ok: pd.DataFrame, label: str) -> dict[str, str]:
    """The parameters an estimator label ran with, as the result rows record them: those
    with one value over its jobs (a per-job seed is not a setting)."""
    rows = ok[ok["estimator"] == label]
    found = {}
    for column in rows.columns:
        values = rows[column].dropna().unique() if column.startswith("est.") else []
        if len(values) == 1:
            value = values[0]
            text = f"{value:g}" if isinstance(value, float) else str(value)
            found[column.removeprefix("est.")] = text
    return found


def _differences(ok: pd.DataFrame, label: str, others: tuple[str, ...]) -> str:
    """How ``label``'s parameters differ from those of the first of ``others`` with the
    same registered estimator: ``cv_unit=row, cv_rule=min instead of cell, 1se``."""
    names = ok.drop_duplicates("estimator").set_index("estimator")["estimator_name"]
    twins = [other for other in others if names.get(other) == names.get(label)]
    if not twins:
        return ""
    mine, theirs = _parameters(ok, label), _parameters(ok, twins[0])
    keys = [key for key in dict.fromkeys([*mine, *theirs]) if mine.get(key) != theirs.get(key)]
    if not keys:
        return ""
    return (
        ", ".join(f"{key}={mine.get(key, 'default')}" for key in keys)
        + " instead of "
        + ", ".join(theirs.get(key, "default") for key in keys)
    )


# --- conclusions ---------------------------------------------------------------------------


def _difference_text(comparison: Comparison, higher_is_better: bool) -> str:
    """``a``'s metric minus ``b``'s in % of ``b``'s mean, with its interval."""
    sign = 1.0 if higher_is_better else -1.0
    low, high = sorted((sign * comparison.low, sign * comparison.high))
    level = f"{100 * comparison.confidence:.4g}%"
    interval = (
        f"{level} CI {format_percent(low, signed=True)} to {format_percent(high, signed=True)}"
        if np.isfinite(comparison.low)
        else "no interval"
    )
    return f"{format_percent(sign * comparison.percent, signed=True)} ({interval})"


VERDICT_WORDS = {
    "worse": "worse beyond the margin",
    "better": "better beyond the margin",
    "equivalent": "equivalent (inside the margin)",
    "small worse": "worse, but perhaps inside the margin",
    "small better": "better, but perhaps inside the margin",
    "inconclusive": "not told apart",
}
# What contradicts each claim when a single value of the swept parameter says it.
CONTRADICTS = {
    "worse": ("better", "small better", "equivalent"),
    "better": ("worse", "small worse", "equivalent"),
    "equivalent": ("better", "worse"),
}


@dataclass(frozen=True)
class MetricCheck:
    """One estimator's check of a metric claim: the comparison with ``than`` pooled over
    the values of ``by`` the claim covers (each value's data sets a stratum), and each
    value's own comparison (unadjusted, 95%)."""

    label: str
    pooled: Comparison | None
    per_value: tuple[tuple[float, Comparison], ...]

    def holds(self, claim: str) -> bool:
        """The pooled verdict is the claim's and no single value contradicts it."""
        return (
            self.pooled is not None
            and self.pooled.verdict == claim
            and not self.contradicted(claim)
        )

    def contradicted(self, claim: str) -> list[float]:
        return [v for v, c in self.per_value if c.verdict in CONTRADICTS[claim]]


def _metric_checks(
    ok: pd.DataFrame, claim: Claim, reference: Reference, margin: float
) -> list[MetricCheck]:
    """The claim's estimators' and its contrast's checks (unadjusted)."""
    by = _by_values(ok, reference.by)
    covered = pd.Series(True, index=ok.index)
    if claim.start is not None:
        covered = by >= claim.start
    checks = []
    for label in (*claim.estimators, *claim.contrast):
        pair = ok["estimator"].isin([label, claim.than])
        metric, than = str(reference.metric), str(claim.than)
        per_value = []
        for value in sorted(by[covered & pair].dropna().unique()):
            comparison = compare(ok[pair & (by == value)], label, than, metric, margin)
            if comparison is not None:
                per_value.append((float(value), comparison))
        pooled = compare(ok[pair & covered], label, than, metric, margin)
        checks.append(MetricCheck(label, pooled, tuple(per_value)))
    return checks


CLAIM_WORDS = {
    "worse": "worse than {than} beyond the margin",
    "better": "better than {than} beyond the margin",
    "equivalent": "equivalent to {than}, inside the margin",
}


def _metric_sentence(
    check: MetricCheck, claim: Claim, reference: Reference, higher_is_better: bool
) -> str:
    """What one estimator's comparisons say about the claim."""
    where = reference.by or "scenario"
    wanted = CLAIM_WORDS[claim.claim].format(than=claim.than)
    if check.pooled is None:
        return f"{check.label}: no data sets shared with {claim.than}."
    pooled = check.pooled
    values = [_value_text(value) for value, _ in check.per_value]
    span = f"{where} {values[0]}-{values[-1]}" if len(values) > 1 else "its data sets"
    reading = "is" if pooled.verdict == claim.claim else "is not"
    details = "; ".join(
        f"{_value_text(value)}: {_difference_text(comparison, higher_is_better)}"
        + (f", {VERDICT_WORDS[comparison.verdict]}" if comparison.verdict != claim.claim else "")
        for value, comparison in check.per_value
    )
    text = (
        f"{check.label} {reading} {wanted} (±{pooled.margin:g}%) over {span}: its "
        f"{reference.metric} differs from {claim.than}'s by "
        f"{_difference_text(pooled, higher_is_better)}"
        + ("" if reading == "is" else f", {VERDICT_WORDS[pooled.verdict]}")
        + f"; by {where}, {details}."
    )
    against = check.contradicted(claim.claim)
    if against:
        text += f" Contradicted at {where} = {', '.join(_value_text(v) for v in against)}."
    return text


def _time_sentence(
    ok: pd.DataFrame, label: str, claim: Claim, reference: Reference
) -> tuple[str, bool]:
    by = _by_values(ok, reference.by)
    parts, faster = [], []
    for value in sorted(by.dropna().unique()) or [np.nan]:
        if claim.start is not None and np.isfinite(value) and value < claim.start:
            continue
        at = (by == value) if np.isfinite(value) else pd.Series(True, index=ok.index)
        mine = ok[at & (ok["estimator"] == label)]["fit_seconds"].median()
        theirs = ok[at & (ok["estimator"] == claim.than)]["fit_seconds"].median()
        if not (np.isfinite(mine) and np.isfinite(theirs)):
            continue
        faster.append(mine < theirs)
        where = "" if not np.isfinite(value) else f"{reference.by}={_value_text(value)}: "
        parts.append(f"{where}{mine:.3g} s against {theirs:.3g} s")
    text = (
        f"{label} fits faster than {claim.than} at {sum(faster)} of {len(faster)} values "
        f"(median fit seconds, {'; '.join(parts)})."
    )
    return text, bool(faster) and all(faster)


def _load_summaries(directory: Path) -> list[dict[str, Any]]:
    path = directory / "summaries.json"
    return json.loads(path.read_text()) if path.exists() else []


def _summary_term(
    summaries: list[dict[str, Any]], scenario: str, estimator: str, term: str
) -> dict[str, float] | None:
    """The first data set's estimate of ``term`` (a coefficient, or ``sd <group>``) by
    ``estimator`` in ``scenario``, with its interval and the simulator's truth."""
    for summary in summaries:
        if summary["scenario"] != scenario:
            continue
        truth = summary.get("truth", {})
        for fit in summary["fits"]:
            if fit["estimator"] != estimator:
                continue
            for entry in fit.get("coefficients", []):
                if entry["term"] == term:
                    known = truth.get("fixed_effects", {}).get(term, np.nan)
                    return {
                        "value": entry["estimate"],
                        "low": entry["low"],
                        "high": entry["high"],
                        "truth": known,
                    }
            for entry in fit.get("variance_components", []):
                if f"{entry['kind']} {entry['group']}" == term:
                    group = "noise" if entry["group"] == "Residual" else entry["group"]
                    known = (
                        truth.get("sd", {}).get(group, np.nan) if entry["kind"] == "sd" else np.nan
                    )
                    return {
                        "value": entry["value"],
                        "low": entry["low"],
                        "high": entry["high"],
                        "truth": known,
                    }
    return None


def _interval_text(entry: dict[str, float] | Estimate) -> str:
    value, low, high = (
        (entry.value, entry.low, entry.high)
        if isinstance(entry, Estimate)
        else (entry["value"], entry["low"], entry["high"])
    )
    if np.isfinite(low) and np.isfinite(high):
        return f"{_number_text(value)} (95% {_number_text(low)} to {_number_text(high)})"
    return _number_text(value)


def _over_data_sets(ok: pd.DataFrame, scenario: str, estimator: str, term: str) -> str:
    """For a standard deviation: this run's whole-data estimates over its data sets."""
    if not term.startswith("sd "):
        return ""
    group = term.removeprefix("sd ")
    column = f"sd_est.{'noise' if group == 'Residual' else group}"
    rows = ok[(ok["scenario"] == scenario) & (ok["estimator"] == estimator)]
    if column not in rows or "n_rows" not in rows:
        return ""
    whole = rows[rows["n_train"] == rows["n_rows"]]  # fits on a whole data set
    values = whole.groupby("repeat")[column].mean().dropna()
    if values.size < 2:
        return ""
    return (
        f"Over this run's {values.size} data sets it averages {values.mean():.3g} "
        f"(from {values.min():.3g} to {values.max():.3g})."
    )


def _estimate_sentence(
    claim: Claim, summaries: list[dict[str, Any]], ok: pd.DataFrame, reference: Reference
) -> tuple[str, bool]:
    scenario = str(claim.scenario)
    if claim.claim == "same_ranking":
        pairs = next(
            (s.get("rank_agreement", []) for s in summaries if s["scenario"] == scenario), []
        )
        texts, agree = [], []
        for label in claim.estimators:
            pair = next((p for p in pairs if {p["a"], p["b"]} == {label, claim.than}), None)
            if pair is None:
                texts.append(f"no ranking of {label} and {claim.than} in {scenario}")
                agree.append(False)
                continue
            agree.append(pair["spearman"] >= SAME_RANKING)
            texts.append(
                f"{label} and {claim.than} rank the {pair['units']} units of {scenario}'s first "
                f"data set with Spearman correlation {pair['spearman']:.2f}"
            )
        return "; ".join(texts) + ".", all(agree)
    texts, agree = [], []
    for label in claim.estimators:
        mine = _summary_term(summaries, scenario, label, str(claim.term))
        if mine is None:
            texts.append(f"no estimate of {claim.term} by {label} in {scenario}")
            agree.append(False)
            continue
        published = next(
            (
                e
                for e in reference.estimates
                if (e.scenario, e.estimator, e.term) == (scenario, label, claim.term)
            ),
            None,
        )
        seed = f" (published: {_interval_text(published)})" if published else ""
        text = (
            f"{label}'s {claim.term} on {scenario}'s first data set is {_interval_text(mine)}{seed}"
        )
        low, high = mine["low"], mine["high"]
        if claim.claim == "covers_zero":
            ok_here = bool(low <= 0 <= high)
            text += ": its interval " + ("covers 0" if ok_here else "excludes 0")
        elif claim.claim == "excludes_zero":
            ok_here = bool(not low <= 0 <= high)
            text += ": its interval " + ("excludes 0" if ok_here else "covers 0")
        elif claim.claim == "covers_truth":
            truth = mine["truth"]
            ok_here = bool(low <= truth <= high)
            text += (
                f": its interval {'covers' if ok_here else 'misses'} the simulator's truth "
                f"{_number_text(truth)}"
            )
            if published and np.isfinite(published.low):
                covered = published.low <= truth <= published.high
                text += f"; the published interval {'covers' if covered else 'misses'} it too"
                text += "" if covered else " (the published fit is of one data set)"
        else:  # same_estimate
            other = _summary_term(summaries, scenario, str(claim.than), str(claim.term))
            ok_here = other is not None and abs(
                mine["value"] - other["value"]
            ) <= SAME_ESTIMATE * max(1.0, abs(other["value"]))
            text += f", {claim.than}'s {_number_text(other['value']) if other else '–'}: " + (
                "the same" if ok_here else "different"
            )
        extra = _over_data_sets(ok, scenario, label, str(claim.term))
        texts.append(text + ("." if not extra else ". " + extra))
        agree.append(ok_here)
    return " ".join(t if t.endswith(".") else t + "." for t in texts), all(agree)


def _status(holds: list[bool]) -> str:
    if holds and all(holds):
        return "agrees"
    return "agrees in part" if any(holds) else "does not agree"


def conclusions(
    ok: pd.DataFrame, reference: Reference, config: Config, directory: Path
) -> list[dict[str, Any]]:
    """Each published conclusion with this run's verdict (agrees, agrees in part, does
    not agree) and the sentences that support it."""
    margin = 100 * config.margin(reference.metric) if reference.metric else 0.0
    checks = {
        k: _metric_checks(ok, claim, reference, margin)
        for k, claim in enumerate(reference.claims)
        if claim.claim in METRIC_CLAIMS and reference.metric in ok
    }
    # The pooled comparisons of every metric claim are one family, adjusted by Holm.
    flat = [(k, i) for k, found in checks.items() for i, c in enumerate(found) if c.pooled]
    adjusted = adjust([checks[k][i].pooled for k, i in flat])
    for (k, i), comparison in zip(flat, adjusted, strict=True):
        check = checks[k][i]
        checks[k][i] = MetricCheck(check.label, comparison, check.per_value)
    summaries = _load_summaries(directory)
    higher = metric_registry.info(reference.metric).higher_is_better if reference.metric else False
    results = []
    for k, claim in enumerate(reference.claims):
        sentences, holds = [], []
        if claim.claim in METRIC_CLAIMS:
            found = {check.label: check for check in checks.get(k, [])}
            for label in claim.estimators:
                sentences.append(_metric_sentence(found[label], claim, reference, higher))
                holds.append(found[label].holds(claim.claim))
            depends = []
            for label in claim.contrast:
                changed = _differences(ok, label, claim.estimators)
                text = _metric_sentence(found[label], claim, reference, higher)
                sentences.append((f"Set up otherwise ({changed}): " if changed else "") + text)
                if found[label].holds(claim.claim) != all(holds):
                    depends.append(changed or f"how {label} is set up")
            if depends:
                sentences.append(
                    "So the conclusion depends on " + "; ".join(dict.fromkeys(depends)) + "."
                )
        elif claim.claim in TIME_CLAIMS:
            for label in claim.estimators:
                text, held = _time_sentence(ok, label, claim, reference)
                sentences.append(text)
                holds.append(held)
        else:
            text, held = _estimate_sentence(claim, summaries, ok, reference)
            sentences.append(text)
            holds.append(held)
        status = _status(holds)
        if status != "agrees" and claim.why:
            sentences.append(f"Why: {claim.why}")
        results.append({"text": claim.text, "status": status, "sentences": sentences})
    return results


def estimate_rows(ok: pd.DataFrame, reference: Reference, directory: Path) -> list[dict[str, str]]:
    """The published estimates beside this run's (first data set, with its interval)
    and the simulator's truth."""
    summaries = _load_summaries(directory)
    rows = []
    for estimate in reference.estimates:
        mine = _summary_term(summaries, estimate.scenario, estimate.estimator, estimate.term)
        rows.append(
            {
                "scenario": estimate.scenario,
                "estimator": estimate.estimator,
                "term": estimate.term,
                "published": _interval_text(estimate),
                "this_run": _interval_text(mine) if mine else "–",
                "truth": _number_text(mine["truth"]) if mine else "–",
                "over_data_sets": _over_data_sets(
                    ok, estimate.scenario, estimate.estimator, estimate.term
                ),
            }
        )
    return rows


def reference_section(
    table: pd.DataFrame, config: Config, directory: str | Path
) -> dict[str, Any] | None:
    """What the report's reference section shows, or None when the config has no
    reference."""
    reference = getattr(config, "reference", None)
    if reference is None:
        return None
    directory = Path(directory)
    ok = table[table["status"] == "ok"] if "status" in table else table
    return {
        "source": reference.source,
        "note": reference.note,
        "metric": reference.metric,
        "by": reference.by,
        "margin": f"±{100 * config.margin(reference.metric):g}%" if reference.metric else "",
        "tables": metric_tables(ok, reference),
        "estimates": estimate_rows(ok, reference, directory),
        "conclusions": conclusions(ok, reference, config, directory),
    }
