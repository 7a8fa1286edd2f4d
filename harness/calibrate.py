"""Calibration of the harness's own intervals: does "95%" mean 95% here?

The report gives 95% Nadeau-Bengio corrected intervals of each estimator's mean on a
scenario's primary metric and of its paired difference to the baseline (in % of the
baseline's mean), and reads the latter against a practical margin (equivalent / small /
better, :mod:`harness.equivalence`). On simulators that draw new data sets from a seed,
this is measured rather than assumed:

1. the config's whole study is run ``R`` times on independent data: replication ``r``
   is the same config with its ``seed`` replaced by one derived from (seed, r), each in
   its own folder, so an interrupted calibration resumes where it stopped;
2. each replication's leaderboard gives its intervals;
3. an interval aims at the expectation of its estimate over data sets. For replication
   ``r`` that target is estimated by the mean of the *other* replications' estimates
   (leave-one-out), so the replication's own noise is not part of its target;
4. coverage is the share of replications whose interval contains its target, per
   (scenario, split, estimator, quantity) and overall, with a Wilson interval; a verdict
   is wrong when the target contradicts it ("better" with the target inside the
   margin, "equivalent" with it beyond, ...).

Nadeau and Bengio's correction is approximate: conservative or liberal depending on the
data and the models, so a measured coverage holds for the study's sizes only.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

import simulators
from harness import metrics as metric_registry
from harness.compare import leaderboard, primary_metrics
from harness.config import Config, ConfigError
from harness.equivalence import VERDICTS, verdict
from harness.jobs import stable_seed
from harness.runner import run_sweep

DEFAULT_REPLICATIONS = 40
CONFIDENCE = 0.95
# What a verdict claims about the true improvement t (in %) against the margin m; it is
# wrong when the claim fails. "inconclusive" claims nothing, so it cannot be wrong.
CLAIMS: dict[str, Callable[[float, float], bool]] = {
    "better": lambda t, m: t > m,
    "small better": lambda t, m: t > 0,
    "equivalent": lambda t, m: -m <= t <= m,
    "small worse": lambda t, m: t < 0,
    "worse": lambda t, m: t < -m,
}
# What one quantity is: its replications share these.
QUANTITY_KEYS = ["scenario", "split", "estimator", "metric", "quantity"]
CAVEAT = (
    "Nadeau-Bengio's correction is known to be approximate (conservative or liberal "
    "depending on the data and the models): the measured coverage holds for this "
    "study's sizes, folds and models, not in general."
)


@dataclass(frozen=True)
class Proportion:
    """``k`` of ``n`` with its Wilson 95% interval."""

    k: int
    n: int

    @property
    def rate(self) -> float:
        return self.k / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        """Wilson score interval (good at rates near 0 or 1, unlike the Wald one)."""
        if not self.n:
            return float("nan"), float("nan")
        ci = stats.binomtest(self.k, self.n).proportion_ci(CONFIDENCE, method="wilson")
        return float(ci.low), float(ci.high)

    def text(self) -> str:
        """E.g. ``0.93 (0.90-0.95)``."""
        low, high = self.interval
        return f"{self.rate:.2f} ({low:.2f}-{high:.2f})"


@dataclass(frozen=True)
class Assessment:
    """What the intervals of a set of replications' leaderboards are worth.

    Attributes
    ----------
    intervals : pandas.DataFrame
        One row per (replication, scenario, split, estimator, quantity): the estimate,
        its interval, the leave-one-out ``target``, ``covered``, and for differences
        the ``verdict`` and whether it is ``wrong``.
    table : pandas.DataFrame
        One row per quantity: coverage with its Wilson interval, mean half-width of
        the intervals against the half-width the replications' spread calls for
        (``width_ratio`` above 1: conservative), verdict counts and wrong verdicts.
    means, differences : Proportion
        Overall coverage of the intervals of means and of differences.
    wrong_verdicts : Proportion
        Wrong verdicts among those that claim something (all but "inconclusive").
    n_verdicts : int
        Every verdict, inconclusive ones included.
    """

    intervals: pd.DataFrame
    table: pd.DataFrame
    means: Proportion
    differences: Proportion
    wrong_verdicts: Proportion
    n_verdicts: int


def replication_seed(seed: int, replication: int) -> int:
    """The seed of a replication, derived from the config's seed and its number."""
    return stable_seed(seed, "calibration", replication)


def replication_config(config: Config, replication: int) -> Config:
    """``config`` with its seed replaced by replication ``replication``'s.

    Its source text says so too, so the ``config.yaml`` stored with the replication's
    results reruns the same data. Whole-data summaries are left out: calibration does
    not read them.
    """
    seed = replication_seed(config.seed, replication)
    line = f"seed: {seed}  # calibration replication {replication} of seed {config.seed}"
    source, found = re.subn(r"(?m)^seed:.*$", line, config.source, count=1)
    if not found:
        source = f"{line}\n{source}"
    return dataclasses.replace(config, seed=seed, source=source, summaries=False)


def check_redrawable(config: Config) -> None:
    """Refuse a config with a scenario whose data cannot be redrawn.

    Raises
    ------
    ConfigError
        Naming the scenario, for data sources that read fixed data (``file``).
    """
    for scenario in config.scenarios:
        # Simulators that can draw new data of the same units (fresh_draws) are the
        # ones whose data are a function of a seed; a file is the same whatever it.
        if not simulators.info(scenario.simulator).fresh_draws:
            able = [name for name in simulators.available() if simulators.info(name).fresh_draws]
            raise ConfigError(
                f"scenario {scenario.label!r}: simulator {scenario.simulator!r} cannot redraw "
                f"its data, so the coverage of intervals cannot be measured on it; "
                f"calibration needs simulators that draw new data from a seed "
                f"({', '.join(able)})"
            )


def _sign(metric: str) -> float:
    """+1 when a larger value of ``metric`` is better, else -1 (losses)."""
    return 1.0 if metric_registry.info(metric.split("@")[0]).higher_is_better else -1.0


def replication_intervals(boards: Sequence[pd.DataFrame], baseline: str) -> pd.DataFrame:
    """The intervals of each replication's leaderboard on its scenarios' primary metric.

    Parameters
    ----------
    boards : sequence of pandas.DataFrame
        One :func:`harness.compare.leaderboard` per replication, in replication order.
    baseline : str
        The baseline's label; its difference to itself is left out.

    Returns
    -------
    pandas.DataFrame
        One row per (replication, scenario, split, estimator, quantity) with
        ``metric``, ``estimate``, ``low``, ``high``. Quantity ``mean`` is the mean of
        the metric; ``difference_pct`` the paired difference to the baseline, estimator
        minus baseline, in % of the baseline's mean.
    """
    records = []
    for replication, board in enumerate(boards):
        for row in board.to_dict("records"):
            metric = row["primary"]
            key = {
                "replication": replication,
                "scenario": row["scenario"],
                "split": row["split"],
                "estimator": row["estimator"],
                "metric": metric,
            }
            records.append(
                key
                | {
                    "quantity": "mean",
                    "estimate": row[metric],
                    "low": row[f"{metric}_low"],
                    "high": row[f"{metric}_high"],
                }
            )
            if row["estimator"] != baseline:
                records.append(
                    key
                    | {
                        "quantity": "difference_pct",
                        "estimate": row[f"{metric}_diff_pct"],
                        "low": row[f"{metric}_pct_low"],
                        "high": row[f"{metric}_pct_high"],
                    }
                )
    columns = ["replication", "scenario", "split", "estimator", "metric", "quantity"]
    return pd.DataFrame.from_records(records, columns=[*columns, "estimate", "low", "high"])


def _with_targets(intervals: pd.DataFrame) -> pd.DataFrame:
    """Add each interval's leave-one-out ``target`` (mean estimate of the other
    replications) and whether the interval ``covered`` it (NaN without an interval)."""
    intervals = intervals.copy()
    estimate = intervals["estimate"].astype(float)
    finite = estimate.where(np.isfinite(estimate))
    groups = finite.groupby([intervals[key] for key in QUANTITY_KEYS], sort=False)
    total, count = groups.transform("sum"), groups.transform("count")
    own = finite.notna()
    others = count - own
    intervals["target"] = ((total - finite.fillna(0.0)) / others).where(others > 0)
    low, high, target = intervals["low"], intervals["high"], intervals["target"]
    usable = np.isfinite(low) & np.isfinite(high) & np.isfinite(target)
    intervals["covered"] = ((low <= target) & (target <= high)).astype(float).where(usable)
    return intervals


def _with_verdicts(intervals: pd.DataFrame, margin: Callable[[str], float]) -> pd.DataFrame:
    """Add each difference's ``verdict`` (its 95% interval of the improvement over the
    baseline against the margin, not widened for multiplicity) and whether its target
    makes it ``wrong``."""
    intervals = intervals.copy()
    verdicts, wrong = [], []
    for row in intervals.itertuples(index=False):
        if row.quantity != "difference_pct":
            verdicts.append(None)
            wrong.append(np.nan)
            continue
        # The leaderboard's difference is estimator minus baseline; the verdict reads
        # the improvement (positive: the estimator is better), so losses flip sign.
        sign = _sign(row.metric)
        low, high = sorted((sign * row.low, sign * row.high))
        margin_pct = 100 * margin(row.metric)
        said = verdict(low, high, margin_pct)
        verdicts.append(said)
        target = sign * row.target
        if said == "inconclusive" or not np.isfinite(target):
            wrong.append(np.nan)
        else:
            wrong.append(float(not CLAIMS[said](target, margin_pct)))
    intervals["verdict"] = verdicts
    intervals["wrong"] = wrong
    return intervals


def _quantity_row(rows: pd.DataFrame) -> dict[str, float]:
    """Coverage, widths and verdicts of one quantity over its replications."""
    covered = rows["covered"].dropna()
    coverage = Proportion(int(covered.sum()), int(covered.size))
    low, high = coverage.interval
    estimates = rows["estimate"].astype(float)
    half_width = float(((rows["high"] - rows["low"]) / 2).mean())
    # The half-width a normal interval around an unbiased estimate would need to cover
    # the expectation 95% of the time; free of the leave-one-out target's own noise.
    spread = float(stats.norm.ppf(0.5 + CONFIDENCE / 2) * estimates.std(ddof=1))
    wrong = rows["wrong"].dropna()
    return {
        "replications": int(estimates.notna().sum()),
        "intervals": coverage.n,
        "covered": coverage.k,
        "coverage": coverage.rate,
        "coverage_low": low,
        "coverage_high": high,
        "mean_estimate": float(estimates.mean()),
        "sd_estimate": float(estimates.std(ddof=1)),
        "half_width": half_width,
        "spread_half_width": spread,
        "width_ratio": half_width / spread if spread > 0 else float("nan"),
        "verdicts": int(rows["verdict"].notna().sum()),
        "claims": int(wrong.size),
        "wrong_verdicts": int(wrong.sum()),
        **{f"verdict.{name}": int((rows["verdict"] == name).sum()) for name in VERDICTS},
    }


def assess(
    boards: Sequence[pd.DataFrame], baseline: str, margin: Callable[[str], float]
) -> Assessment:
    """Coverage of the replications' intervals and the rate of wrong verdicts.

    Parameters
    ----------
    boards : sequence of pandas.DataFrame
        One leaderboard per replication (at least two, for leave-one-out targets).
    baseline : str
        The estimator label differences are taken against.
    margin : callable
        Metric -> its relative practical margin (``Config.margin``).

    Returns
    -------
    Assessment
    """
    if len(boards) < 2:
        raise ValueError(f"calibration needs at least 2 replications, got {len(boards)}")
    intervals = _with_verdicts(_with_targets(replication_intervals(boards, baseline)), margin)
    records = [
        dict(zip(QUANTITY_KEYS, key, strict=True)) | _quantity_row(rows)
        for key, rows in intervals.groupby(QUANTITY_KEYS, sort=False)
    ]
    table = pd.DataFrame.from_records(records)

    def pooled(quantity: str) -> Proportion:
        covered = intervals.loc[intervals["quantity"] == quantity, "covered"].dropna()
        return Proportion(int(covered.sum()), int(covered.size))

    wrong = intervals["wrong"].dropna()
    return Assessment(
        intervals=intervals,
        table=table,
        means=pooled("mean"),
        differences=pooled("difference_pct"),
        wrong_verdicts=Proportion(int(wrong.sum()), int(wrong.size)),
        n_verdicts=int(intervals["verdict"].notna().sum()),
    )


@dataclass(frozen=True)
class CalibrationResult:
    """A calibration run: its folder, what it assessed, what it ran."""

    directory: Path
    assessment: Assessment
    replications: int
    n_jobs_total: int
    n_run: int
    n_failed: int
    seconds: float
    lines: tuple[str, ...]


def _leaderboard(config: Config, directory: Path) -> pd.DataFrame:
    """A replication's leaderboard on its scenarios' primary metrics only (the ones
    the report ranks by and reads verdicts on)."""
    table = pd.read_parquet(directory / "results.parquet")
    primary = primary_metrics(table, list(config.metrics), config.primary)
    metrics = list(dict.fromkeys(primary.values()))
    return leaderboard(table, metrics, config.baseline, primary)


def summary_lines(assessment: Assessment, config: Config, replications: int) -> list[str]:
    """The printed summary: overall coverages with their Wilson intervals and the rate
    of wrong verdicts."""
    wrong = assessment.wrong_verdicts
    low, high = wrong.interval
    margins = sorted({f"{100 * config.margin(m):g}%" for m in assessment.table["metric"]})
    inconclusive = assessment.n_verdicts - wrong.n
    return [
        f"Nadeau-Bengio 95% intervals of means: coverage {assessment.means.text()} "
        f"over {assessment.means.n} intervals",
        f"Nadeau-Bengio 95% intervals of differences: coverage "
        f"{assessment.differences.text()} over {assessment.differences.n} intervals",
        f"Verdicts against the margin ({', '.join(margins)}): {wrong.k} of {wrong.n} "
        f"contradicted by the target, {wrong.rate:.1%} ({low:.1%}-{high:.1%}); "
        f"{inconclusive} more inconclusive",
        f"({replications} replications; targets are leave-one-out means of the other "
        "replications; Wilson intervals treat intervals as independent, which those of "
        "one replication are not.)",
        CAVEAT,
    ]


def _by_split(assessment: Assessment) -> list[str]:
    """Table rows of the coverage per quantity and split scheme, over scenarios and
    estimators (seen and unseen units call for different corrections)."""
    rows = []
    intervals, table = assessment.intervals, assessment.table
    for (quantity, split), group in intervals.groupby(["quantity", "split"], sort=False):
        covered = group["covered"].dropna()
        coverage = Proportion(int(covered.sum()), int(covered.size))
        inside = (table["quantity"] == quantity) & (table["split"] == split)
        ratio = float(table.loc[inside, "width_ratio"].median())
        rows.append(f"| {quantity} | {split} | {coverage.text()} | {coverage.n} | {ratio:.2f} |")
    return rows


def _markdown(result: CalibrationResult, config: Config, command: str) -> str:
    """``calibration.md``: the summary, the worst-covered quantities, how to read it."""
    table = result.assessment.table
    lines = [
        f"# Calibration of {config.name}",
        "",
        f"`{command}`: {result.replications} replications of the study on independent "
        f"data ({result.n_jobs_total} jobs; {result.n_run} run now in {result.seconds:.0f} s, "
        f"{result.n_failed} failed).",
        "",
        *[f"- {line}" for line in result.lines[:3]],
        "",
        "A replication's target is the mean estimate of the other replications (the "
        "expectation of the estimate over data sets, without the replication's own "
        "noise; that target's own noise lowers a perfect 95% interval's coverage by "
        "well under a point at 30 or more replications). The overall Wilson intervals "
        "treat intervals as independent; those of one replication share its data, so "
        "the overall intervals are too narrow.",
        "",
        CAVEAT,
        "",
        "`width ratio`: the intervals' mean half-width over the half-width the spread of "
        "the estimates across replications calls for (1.96 sd). Each interval rests on a "
        "few folds, so its width varies from one replication to the next: a ratio above 1 "
        "with coverage under 95% means intervals wide enough on average that are too narrow "
        "in some replications.",
        "",
        "| quantity | split | coverage (95% CI) | intervals | median width ratio |",
        "|---|---|---|---|---|",
        *_by_split(result.assessment),
        "",
        "| scenario | split | estimator | quantity | coverage (95% CI) | width ratio "
        "| wrong verdicts |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in table.sort_values("coverage", kind="stable").to_dict("records"):
        coverage = Proportion(row["covered"], row["intervals"])
        wrong = (
            f"{row['wrong_verdicts']} of {row['claims']}"
            if row["quantity"] == "difference_pct"
            else ""
        )
        lines.append(
            f"| {row['scenario']} | {row['split']} | {row['estimator']} | "
            f"{row['quantity']} ({row['metric']}) | {coverage.text()} | "
            f"{row['width_ratio']:.2f} | {wrong} |"
        )
    return "\n".join(lines) + "\n"


def calibrate(
    config: Config,
    directory: str | Path,
    *,
    replications: int = DEFAULT_REPLICATIONS,
    n_jobs: int | None = None,
    progress: bool = True,
    command: str = "mixbench calibrate",
) -> CalibrationResult:
    """Run ``replications`` independent replications of ``config`` and assess its intervals.

    Parameters
    ----------
    config : Config
        A study whose scenarios all draw their data from a seed.
    directory : path
        Output folder: ``replication-000/`` ... (one sweep each, resumable),
        ``calibration.csv`` (one row per quantity), ``calibration_intervals.csv`` (one
        row per replication and quantity) and ``calibration.md``.
    replications : int
        Number of independent replications, at least 2.
    n_jobs : int, optional
        Parallel workers of each sweep; default the config's.
    progress : bool
        Print a line per replication on standard error.
    command : str
        How the calibration was started, for ``calibration.md``.

    Returns
    -------
    CalibrationResult

    Raises
    ------
    ConfigError
        For a scenario whose data cannot be redrawn, or fewer than 2 replications.
    """
    check_redrawable(config)
    if replications < 2:
        raise ConfigError(f"replications: expected at least 2, got {replications}")
    directory = Path(directory)
    started = time.perf_counter()
    boards, n_total, n_run, n_failed = [], 0, 0, 0
    for replication in range(replications):
        replicated = replication_config(config, replication)
        result = run_sweep(
            replicated,
            directory / f"replication-{replication:03d}",
            n_jobs=n_jobs,
            progress=False,
        )
        n_total += result.n_jobs_total
        n_run += result.n_run
        n_failed += result.n_failed
        if progress:
            print(
                f"replication {replication + 1}/{replications} (seed {replicated.seed}): "
                f"{result.n_run} jobs run, {result.n_reused} reused, {result.n_failed} "
                f"failed in {result.seconds:.1f} s",
                file=sys.stderr,
            )
        boards.append(_leaderboard(config, result.directory))
    assessment = assess(boards, config.baseline, config.margin)
    result = CalibrationResult(
        directory=directory,
        assessment=assessment,
        replications=replications,
        n_jobs_total=n_total,
        n_run=n_run,
        n_failed=n_failed,
        seconds=time.perf_counter() - started,
        lines=tuple(summary_lines(assessment, config, replications)),
    )
    assessment.table.to_csv(directory / "calibration.csv", index=False)
    assessment.intervals.to_csv(directory / "calibration_intervals.csv", index=False)
    (directory / "calibration.md").write_text(_markdown(result, config, command))
    return result
