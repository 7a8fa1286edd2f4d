"""Rendering a sweep's results table into one self-contained HTML report."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from harness import figures as plots
from harness.compare import write_comparison
from harness.config import Config, parse_config
from harness.findings import findings

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


def _tables(board: pd.DataFrame, metrics: list[str], baseline: str) -> list[dict[str, Any]]:
    tables = []
    for (scenario, split), rows in board.groupby(["scenario", "split"], sort=False):
        body = []
        for record in rows.to_dict("records"):
            cells = []
            for metric in metrics:
                cells.append(_cell(record, metric))
                cells.append(
                    {"value": "baseline", "interval": ""}
                    if record["estimator"] == baseline
                    else _cell(record, f"{metric}_diff", signed=True)
                )
            body.append(
                {
                    "estimator": record["estimator"],
                    "n": record["n"],
                    "rank": f"{record['mean_rank']:.2f}",
                    "wins": "" if record["estimator"] == baseline else _percent(record["win_rate"]),
                    "cells": cells,
                    "best": record["mean_rank"] == rows["mean_rank"].min(),
                }
            )
        tables.append({"scenario": scenario, "split": split, "rows": body})
    return tables


def _figures(
    table: pd.DataFrame, board: pd.DataFrame, metrics: list[str], config: Config
) -> list[dict[str, str]]:
    """Every figure the results support, with its caption, in reading order."""
    metric = metrics[0]
    swept = list(dict.fromkeys(key for scenario in config.scenarios for key in scenario.swept))
    candidates = [
        (
            f"{metric} by estimator, per split scheme (mean and 95% corrected interval)",
            plots.leaderboard_figure(board, metric),
        )
    ]
    for parameter in swept:
        candidates.append(
            (
                f"{metric} against {parameter} (mean and 95% corrected interval band; other "
                "swept parameters averaged)",
                plots.sweep_figure(table, metric, parameter),
            )
        )
    candidates += [
        (
            f"{metric} against the number of training rows of the test row's unit: where "
            "shrinkage helps (few rows) and where it stops mattering (many)",
            plots.activity_figure(table, metric),
        ),
        (f"{metric} on seen and on unseen units", plots.seen_unseen_figure(table, metric)),
        (
            "Fit time against training rows (log-log); the slope is the empirical order of growth",
            plots.fit_time_figure(table),
        ),
        (
            "Estimated against true standard deviations of the random effects and the noise "
            "(dashed: estimate = truth)",
            plots.variance_components_figure(table),
        ),
        (
            "Coverage of the Gaussian predictive intervals (dashed: nominal level)",
            plots.coverage_figure(table),
        ),
    ]
    return [{"title": title, "png": image} for title, image in candidates if image is not None]


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
        scenarios = list(dict.fromkeys(rows["scenario"].astype(str)))
        splits = list(dict.fromkeys(rows["split"].astype(str)))
        lines.append(
            {
                "status": status,
                "estimator": estimator,
                "jobs": len(rows),
                "where": "; ".join(scenarios[:3])
                + (f" (+{len(scenarios) - 3} more)" if len(scenarios) > 3 else "")
                + " · "
                + ", ".join(splits),
                "error": f"{error_type}: {error}" if error_type else error,
            }
        )
    return sorted(lines, key=lambda line: (line["status"] != "failed", line["estimator"]))


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
    table = pd.read_parquet(results_path)
    metrics = [metric for metric in config.metrics if metric in table.columns]
    board = (
        write_comparison(table, metrics, config.baseline, directory) if metrics else pd.DataFrame()
    )
    split_labels = list(
        dict.fromkeys(
            split.label
            for scenario in config.scenarios
            for split in scenario.splits or config.splits
        )
    )
    if not board.empty:
        # Show scenarios and splits in the config's order, not alphabetically.
        order = {
            "scenario": [scenario.label for scenario in config.scenarios],
            "split": split_labels,
        }
        board = board.sort_values(
            ["scenario", "split", "mean_rank"],
            key=lambda column: (
                column.map({v: i for i, v in enumerate(order[column.name])})
                if column.name in order
                else column
            ),
            kind="stable",
            ignore_index=True,
        )
    figures = _figures(table, board, metrics, config) if not board.empty else []
    problem_rows = _problems(table)
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
        findings=findings(table, metrics[0], config.baseline) if metrics else [],
        tables=_tables(board, metrics, config.baseline) if not board.empty else [],
        figures=figures,
        problems=problem_rows,
        environment=environment,
        run_info=run_info,
        rendered=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    path = directory / "index.html"
    path.write_text(html)
    return path
