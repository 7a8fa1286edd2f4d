"""Rendering a sweep's results table into one self-contained HTML report."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

import simulators
from harness import figures as plots
from harness.across import across_sections
from harness.compare import primary_metrics, write_comparison
from harness.config import Config, parse_config
from harness.findings import Finding, adjust, failure_sentence, findings_of, format_percent
from harness.jobs import expand
from harness.recovery import variance_warnings
from harness.regimes import (
    comparisons_of,
    losses,
    regime_map,
    summary_sentences,
    with_comparisons,
)
from harness.reproduction import reference_section

PACKAGES = [
    "mixbench",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "polars",
    "joblib",
    "matplotlib",
]


def _environment() -> dict[str, str]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": str(os.cpu_count()),
        **versions,
    }


def write_run_info(directory: Path, command: list[str]) -> None:
    """Record how and where a sweep was run, for the report's reproducibility section."""
    info = {
        "command": " ".join(command),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "environment": _environment(),
    }
    (directory / "run.json").write_text(json.dumps(info, indent=2))


def _percent(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{value:.0%}"


def _format(value: float, digits: int = 3) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}g}"


def _cell(record: dict[str, Any], column: str, signed: bool = False) -> dict[str, str]:
    value = record[column]
    if value is None or not np.isfinite(value):
        return {"value": "–", "interval": ""}
    text = f"{value:+.3g}" if signed else _format(value)
    low, high = record[f"{column}_low"], record[f"{column}_high"]
    interval = f"[{_format(low)}, {_format(high)}]" if np.isfinite(low) else ""
    return {"value": text, "interval": interval}


def _percent_cell(record: dict[str, Any], metric: str) -> dict[str, str]:
    """The paired difference to the baseline in % of its mean, with its interval."""
    value = record[f"{metric}_diff_pct"]
    if value is None or not np.isfinite(value):
        return {"value": "–", "interval": ""}
    low, high = record[f"{metric}_pct_low"], record[f"{metric}_pct_high"]
    interval = (
        f"[{format_percent(low, signed=True)}, {format_percent(high, signed=True)}]"
        if np.isfinite(low)
        else ""
    )
    return {"value": format_percent(value, signed=True), "interval": interval}


def _cost(value: float, unit: str) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.3g} {unit}"


def _tables(board: pd.DataFrame, metrics: list[str], baseline: str) -> list[dict[str, Any]]:
    """A leaderboard per (scenario, split): the scenario's primary metric and the cost in
    view, the other metrics behind a toggle."""
    tables = []
    for (scenario, split), rows in board.groupby(["scenario", "split"], sort=False):
        primary = str(rows["primary"].iloc[0])
        # Other metrics that apply here (binary metrics on gaussian data are NaN, say).
        others = [m for m in metrics if m != primary and rows[m].notna().any()]
        body = []
        for record in rows.to_dict("records"):
            is_baseline = record["estimator"] == baseline
            body.append(
                {
                    "estimator": record["estimator"],
                    "n": record["n"],
                    "rank": f"{record['mean_rank']:.2f}",
                    "wins": "" if is_baseline else _percent(record["win_rate"]),
                    "primary": _cell(record, primary),
                    "diff": {"value": "baseline", "interval": ""}
                    if is_baseline
                    else _percent_cell(record, primary),
                    "fit": _cost(record.get("fit_seconds"), "s"),
                    "predict": _cost(record.get("predict_seconds"), "s"),
                    "memory": _cost(record.get("peak_memory_mb"), "MB"),
                    "others": [
                        cell
                        for metric in others
                        for cell in (
                            _cell(record, metric),
                            {"value": "", "interval": ""}
                            if is_baseline
                            else _percent_cell(record, metric),
                        )
                    ],
                    "best": record["mean_rank"] == rows["mean_rank"].min(),
                }
            )
        tables.append(
            {
                "scenario": scenario,
                "split": split,
                "primary": primary,
                "direction": plots.direction(primary),
                # Fresh draws are independent data sets, not folds of one.
                "units": "data sets" if str(split).startswith("fresh_draw") else "folds",
                "others": others,
                "rows": body,
            }
        )
    return tables


def _overview(config: Config, table: pd.DataFrame) -> list[dict[str, Any]]:
    """Per scenario: what it is and how many jobs it makes (the header's arithmetic)."""
    tasks = expand(config)
    families = table.groupby("scenario")["family"].first().to_dict() if "family" in table else {}
    lines = []
    for scenario in config.scenarios:
        own = [task for task in tasks if task.scenario == scenario]
        splits = scenario.splits or config.splits
        lines.append(
            {
                "scenario": scenario.label,
                "simulator": scenario.simulator,
                "family": families.get(scenario.label, ""),
                "data_sets": scenario.n_repeats(config.repeats),
                # A real data set cannot be redrawn: say how its repeats were made.
                "repeats": simulators.info(scenario.simulator).repeats(scenario.params),
                "observed": simulators.info(scenario.simulator).observed,
                "splits": ", ".join(
                    f"{split.label} ({split.folds} fold{'s' if split.folds > 1 else ''})"
                    for split in splits
                ),
                "estimators": len(own[0].jobs) if own else 0,
                "jobs": sum(len(task.jobs) for task in own),
            }
        )
    return lines


def _findings_by_regime(
    table: pd.DataFrame, primary: dict[str, str], config: Config, split_labels: list[str]
) -> list[tuple[str, str, list[Finding]]]:
    """Where shrinkage shows, per regime (the scenarios of one config entry), on the
    regime's primary metric: the least and most active seen units, and unseen ones."""
    ok = table[table["status"] == "ok"]
    if ok.empty:
        return []
    regime = ok["regime"] if "regime" in ok else ok["scenario"].str.split("[").str[0]
    order = [scenario.regime for scenario in config.scenarios]
    groups = []
    for name in dict.fromkeys([*order, *regime]):
        if not (regime == name).any():
            continue
        rows = ok[regime == name]
        metric = primary.get(str(rows["scenario"].iloc[0]))
        if metric is None:
            continue
        found = findings_of(
            rows,
            metric,
            config.baseline,
            split_labels,
            winners=False,
            margin=100 * config.margin(metric),
        )
        if found:
            groups.append((str(name), metric, found))
    return groups


def _regimes_and_findings(
    table: pd.DataFrame,
    board: pd.DataFrame,
    primary: dict[str, str],
    config: Config,
    split_labels: list[str],
) -> dict[str, Any]:
    """The map of regimes (table rows, a sentence per winner) and the findings per
    regime, their comparisons adjusted together as one family (Holm)."""
    margin = lambda metric: 100 * config.margin(metric)  # noqa: E731 - in %
    cells = regime_map(table, board, primary, margin)
    lost = losses(table, cells, margin)
    groups = _findings_by_regime(table, primary, config, split_labels)
    found = [finding for _, _, group in groups for finding in group]
    family = comparisons_of(cells, lost) + [finding.comparison for finding in found]
    adjusted = adjust(family)
    cells, lost = with_comparisons(cells, lost, adjusted[: len(family) - len(found)])
    remaining = iter(adjusted[len(family) - len(found) :])
    rows = [
        {
            "scenario": cell.scenario,
            "split": cell.split,
            "family": cell.family,
            "metric": cell.metric,
            "winner": cell.winner,
            "runner_up": cell.runner_up or "",
            "lead": cell.lead_text(),
            "clear": cell.clear,
            "fit": _cost(cell.winner_fit_seconds, "s"),
            "last": cell.ranking[-1] if len(cell.ranking) > 2 else "",
        }
        for cell in cells
    ]
    return {
        "regimes": rows,
        "regime_sentences": summary_sentences(cells, lost),
        "findings": [
            {
                "regime": name,
                "metric": metric,
                "sentences": [
                    replace(finding, comparison=next(remaining)).sentence() for finding in group
                ],
            }
            for name, metric, group in groups
        ],
        "family_size": len(family),
        "margins": ", ".join(
            f"{metric} ±{100 * config.margin(metric):g}%"
            for metric in dict.fromkeys(primary.values())
        ),
    }


def _figures(
    table: pd.DataFrame,
    board: pd.DataFrame,
    metrics: list[str],
    config: Config,
    primary: dict[str, str],
) -> list[dict[str, str]]:
    """Every figure the results support, with its caption, in reading order. Each
    scenario is drawn on its own primary metric (the one that ranks its leaderboard), so
    the captions say which metric that is for which outcome family."""
    families = (
        table.groupby("scenario", sort=False)["family"].first().to_dict()
        if "family" in table
        else {}
    )

    def which(scenarios: list[str] | None = None) -> str:
        """The metric the panels show: its name, or each family's when they differ."""
        chosen = {scenario: primary[scenario] for scenario in scenarios or primary}
        names = list(dict.fromkeys(chosen.values()))
        if len(names) == 1:
            return names[0]
        by_metric = {
            name: sorted(
                {str(families.get(s, s)) for s, metric in chosen.items() if metric == name}
            )
            for name in names
        }
        return (
            "each scenario's primary metric ("
            + "; ".join(f"{name} for {' and '.join(family)}" for name, family in by_metric.items())
            + ")"
        )

    swept = list(dict.fromkeys(key for scenario in config.scenarios for key in scenario.swept))
    candidates = [
        (
            f"Leaderboard: {which()} by estimator, mean over folds with its 95% corrected "
            "interval, a panel per scenario, a colour per split scheme. A panel lists only "
            "the estimators fitted on its scenario, best first; compare within a panel, "
            "not across panels.",
            plots.leaderboard_figure(board, primary),
        ),
        (
            f"Accuracy against cost: {which()} (mean with 95% corrected interval) against "
            "median fit seconds (log scale), a panel per scenario and split scheme. The "
            "step line joins the estimators, ringed in black, that no other estimator "
            "beats on both (at least as fast and at least as accurate): the best accuracy "
            "a fit-time budget buys.",
            plots.pareto_figure(board, primary),
        ),
    ]
    for parameter in swept:
        sweeping = [
            scenario.label
            for scenario in config.scenarios
            if parameter in scenario.swept and scenario.label in primary
        ]
        candidates.append(
            (
                f"{which(sweeping) if sweeping else metrics[0]} against {parameter}: a panel "
                f"per regime and split scheme in which the regime sweeps {parameter}, a line "
                "per estimator with its 95% corrected interval band; a regime's scenarios "
                "at one value (other swept parameters) are averaged with equal weight.",
                plots.sweep_figure(table, primary, parameter),
            )
        )
    candidates += [
        (
            f"Unit activity: {which()} against the number of training rows of the test "
            "row's unit (mean over folds; 0 = units unseen in training), a panel per "
            "scenario and split scheme with two or more activity levels: where shrinkage "
            "helps (few rows) and where it stops mattering (many).",
            plots.activity_figure(table, primary),
        ),
        (
            f"Seen and unseen units: {which()} on test rows of units seen in training "
            "(circles) and of unseen units (diamonds), mean over folds, a panel per scenario "
            "and split scheme whose test rows hold both. The axis spans the values, not "
            "zero: read the gap within a row.",
            plots.seen_unseen_figure(table, primary),
        ),
        (
            "Fit time: fit seconds against training rows (log-log), a point per job. A line "
            "is a least-squares fit over an estimator's jobs spanning ten times as many rows "
            "or more; its slope b is called an order of growth (time ~ rows^b) only when "
            "positive. Jobs of all scenarios share this axis: at one row count, time also "
            "depends on the scenario's data.",
            plots.fit_time_figure(table),
        ),
        (
            "Variance components: estimated over true standard deviation of each random "
            "effect and of the noise, a panel per scenario, a point per fold, a colour per "
            "estimator; the dashed line at 1 is the truth (below it: underestimated). True "
            "values are under the components' names; components whose true sd is 0 are "
            "left out. " + " ".join(variance_warnings(table)),
            plots.variance_components_figure(table),
        ),
        (
            "Coverage: share of test outcomes inside the Gaussian 50% and 90% predictive "
            "intervals (mean over folds), a panel per scenario and split scheme, for the "
            "estimators that give intervals; dashed lines at the nominal levels (left of "
            "them: intervals too narrow).",
            plots.coverage_figure(table),
        ),
    ]
    return [{"title": title, "png": image} for title, image in candidates if image is not None]


def _estimate_table(
    fits: list[dict[str, Any]],
    key: str,
    label: Callable[[dict], str],
    true_value: Callable[[dict], float],
) -> list[dict[str, Any]]:
    """Rows of estimates (one per term), a cell per fitted estimator, the truth first."""
    rows: dict[str, dict[str, Any]] = {}
    for fit in fits:
        for entry in fit.get(key, []):
            name = label(entry)
            row = rows.setdefault(
                name, {"name": name, "truth": _format(true_value(entry), 4), "cells": {}}
            )
            interval = (
                f"[{_format(entry['low'], 4)}, {_format(entry['high'], 4)}]"
                if np.isfinite(entry["low"])
                else ""
            )
            row["cells"][fit["estimator"]] = {
                "value": _format(entry.get("estimate", entry.get("value")), 4),
                "interval": interval,
            }
    return list(rows.values())


def _fits(directory: Path) -> list[dict[str, Any]]:
    """The stored model summaries, shaped for the template: per scenario, a table of
    coefficients and one of variance components (estimators as columns, the truth
    first), the units ranked under each estimator, and rank agreement sentences."""
    path = directory / "summaries.json"
    if not path.exists():
        return []
    sections = []
    for scenario in json.loads(path.read_text()):
        fits = [fit for fit in scenario["fits"] if "coefficients" in fit]
        names = [fit["estimator"] for fit in fits]
        truth = scenario.get("truth", {})

        coefficients = _estimate_table(
            fits,
            "coefficients",
            lambda entry: entry["term"],
            lambda entry, truth=truth: truth.get("fixed_effects", {}).get(
                entry["term"], float("nan")
            ),
        )
        components = _estimate_table(
            fits,
            "variance_components",
            lambda entry: (
                f"{entry['kind']} {entry['group']}"
                + (f" {entry['term']}" if entry["term"] and entry["term"] != "(Intercept)" else "")
            ),
            lambda entry, truth=truth: (
                truth.get("sd", {}).get(
                    "noise" if entry["group"] == "Residual" else entry["group"], float("nan")
                )
                if entry["kind"] == "sd"
                else float("nan")
            ),
        )
        ranked = [fit for fit in fits if fit.get("effects")]
        ranking = []
        if ranked:
            order = sorted(ranked[0]["effects"], key=ranked[0]["effects"].get, reverse=True)
            ranks = {
                fit["estimator"]: {
                    unit: k + 1
                    for k, unit in enumerate(
                        sorted(fit["effects"], key=fit["effects"].get, reverse=True)
                    )
                }
                for fit in ranked
            }
            ranking = [
                {"unit": unit, "ranks": [ranks[fit["estimator"]].get(unit, "") for fit in ranked]}
                for unit in order[:10]
            ]
        agreement = [
            f"{pair['a']} and {pair['b']} rank the {pair['units']} units with Spearman "
            f"correlation {pair['spearman']:.2f}."
            for pair in scenario.get("rank_agreement", [])
        ]
        problems = [
            f"{fit['estimator']}: {fit.get('error') or fit.get('skipped')}"
            for fit in scenario["fits"]
            if "coefficients" not in fit
        ]
        sections.append(
            {
                "scenario": scenario["scenario"],
                "rows": scenario["rows"],
                "estimators": names,
                "coefficients": coefficients,
                "components": components,
                "ranked_by": [fit["estimator"] for fit in ranked],
                "factor": ranked[0]["factor"] if ranked else "",
                "ranking": ranking,
                "agreement": agreement,
                "problems": problems,
            }
        )
    return sections


def _where(rows: pd.DataFrame) -> str:
    """The scenarios (the first three) and splits of ``rows``, in one line."""
    scenarios = list(dict.fromkeys(rows["scenario"].astype(str)))
    splits = list(dict.fromkeys(rows["split"].astype(str)))
    more = f" (+{len(scenarios) - 3} more)" if len(scenarios) > 3 else ""
    return "; ".join(scenarios[:3]) + more + " · " + ", ".join(splits)


def _problems(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Failed and skipped jobs, one line per (status, estimator, error) with how many
    jobs and where: a skipped pairing repeats on every fold, its reason once is enough."""
    if "status" not in table.columns:
        return []
    problems = table[table["status"] != "ok"].reindex(
        columns=["status", "estimator", "scenario", "split", "fold", "error_type", "error"]
    )
    problems = problems.fillna({"error_type": "", "error": ""})
    lines = []
    for (status, estimator, error_type, error), rows in problems.groupby(
        ["status", "estimator", "error_type", "error"], sort=False, dropna=False
    ):
        lines.append(
            {
                "status": status,
                "estimator": estimator,
                "jobs": len(rows),
                "where": _where(rows),
                "error": f"{error_type}: {error}" if error_type else error,
            }
        )
    return sorted(lines, key=lambda line: (line["status"] != "failed", line["estimator"]))


def _warnings(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Warnings of successful jobs, one line per (estimator, warnings) with how many
    jobs and where (a solver's fallback, say, that a reader of its numbers should know)."""
    if "warnings" not in table.columns:
        return []
    warned = table[(table["status"] == "ok") & table["warnings"].notna()]
    return [
        {"estimator": estimator, "jobs": len(rows), "where": _where(rows), "warnings": text}
        for (estimator, text), rows in warned.groupby(["estimator", "warnings"], sort=False)
    ]


def _in_order(frame: pd.DataFrame, order: dict[str, list[str]], keys: list[str]) -> pd.DataFrame:
    """``frame`` sorted stably by ``keys``, those in ``order`` by their position there."""
    keys = [key for key in keys if key in frame]
    if not keys:
        return frame
    return frame.sort_values(
        keys,
        key=lambda column: (
            column.map({v: i for i, v in enumerate(order[column.name])})
            if column.name in order
            else column
        ),
        kind="stable",
        ignore_index=True,
    )


def render_report(directory: str | Path) -> Path:
    """Render ``directory/index.html`` from its ``results.parquet`` and ``config.yaml``.

    Returns
    -------
    pathlib.Path
        The report's path.

    Raises
    ------
    FileNotFoundError
        When the folder holds no results (run the sweep first).
    """
    directory = Path(directory)
    results_path = directory / "results.parquet"
    config_path = directory / "config.yaml"
    if not results_path.exists() or not config_path.exists():
        raise FileNotFoundError(
            f"{directory}: no results.parquet/config.yaml here; run `mixbench run CONFIG` first"
        )
    config: Config = parse_config(config_path.read_text(), origin=str(config_path))
    split_labels = list(
        dict.fromkeys(
            split.label
            for scenario in config.scenarios
            for split in scenario.splits or config.splits
        )
    )
    # Scenarios and splits in the config's order, not alphabetically, in every table,
    # finding and figure.
    order = {
        "scenario": [scenario.label for scenario in config.scenarios],
        "split": split_labels,
    }
    table = _in_order(pd.read_parquet(results_path), order, ["scenario", "split"])
    metrics = [metric for metric in config.metrics if metric in table.columns]
    primary = (
        primary_metrics(table, metrics, config.primary) if metrics and "status" in table else {}
    )
    board = (
        write_comparison(table, metrics, config.baseline, directory, primary)
        if metrics
        else pd.DataFrame()
    )
    if not board.empty:
        board = _in_order(board, order, ["scenario", "split", "mean_rank"])
    figures = _figures(table, board, metrics, config, primary) if not board.empty else []
    problem_rows = _problems(table)
    sections = (
        _regimes_and_findings(table, board, primary, config, split_labels)
        if not board.empty
        else {
            "regimes": [],
            "regime_sentences": [],
            "findings": [],
            "family_size": 0,
            "margins": "",
        }
    )
    run_info_path = directory / "run.json"
    run_info = json.loads(run_info_path.read_text()) if run_info_path.exists() else {}
    status_counts = table["status"].value_counts().to_dict() if "status" in table else {}
    environment = run_info.get("environment") or _environment()
    template = jinja2.Environment(
        loader=jinja2.PackageLoader("harness", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    ).get_template("report.html")
    html = template.render(
        config=config,
        n_rows=len(table),
        status_counts=status_counts,
        metrics=metrics,
        split_labels=split_labels,
        overview=_overview(config, table),
        **sections,
        across=across_sections(table, board, primary, config),
        failed_sentence=failure_sentence(table),
        tables=_tables(board, metrics, config.baseline) if not board.empty else [],
        figures=figures,
        problems=problem_rows,
        warnings=_warnings(table),
        fits=_fits(directory),
        reference=reference_section(table, config, directory),
        environment=environment,
        run_info=run_info,
        rendered=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    path = directory / "index.html"
    path.write_text(html)
    return path
