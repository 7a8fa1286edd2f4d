"""Rendering a sweep's results table into one self-contained HTML report."""

from __future__ import annotations

import base64
import datetime as dt
import importlib.metadata
import io
import json
import os
import platform
from pathlib import Path
from typing import Any

import jinja2
import matplotlib
import numpy as np
import pandas as pd

# Figure objects, not pyplot: no global figure state and no display needed.
from matplotlib.figure import Figure

from harness import metrics as metric_registry
from harness.compare import write_comparison
from harness.config import Config, parse_config

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


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def metric_figure(board: pd.DataFrame, metric: str) -> str:
    """Mean ``metric`` with its interval per estimator, a panel per split scheme and a
    colour per scenario; returns a base64 PNG."""
    splits = list(dict.fromkeys(board["split"]))
    scenarios = list(dict.fromkeys(board["scenario"]))
    estimator_order = list(
        board.groupby("estimator", sort=False)["mean_rank"].mean().sort_values().index
    )
    figure = Figure(
        figsize=(4.2 * len(splits) + 1.5, 0.45 * len(estimator_order) + 1.6),
        layout="constrained",
    )
    axes = figure.subplots(1, len(splits), sharey=True, squeeze=False)
    colours = matplotlib.colormaps["tab10"]
    offsets = np.linspace(-0.25, 0.25, len(scenarios)) if len(scenarios) > 1 else [0.0]
    for axis, split in zip(axes[0], splits, strict=True):
        for k, scenario in enumerate(scenarios):
            rows = board[(board["split"] == split) & (board["scenario"] == scenario)]
            rows = rows.set_index("estimator").reindex(estimator_order)
            positions = np.arange(len(estimator_order)) + offsets[k]
            low = (rows[metric] - rows[f"{metric}_low"]).fillna(0).clip(lower=0)
            high = (rows[f"{metric}_high"] - rows[metric]).fillna(0).clip(lower=0)
            axis.errorbar(
                rows[metric],
                positions,
                xerr=[low, high],
                fmt="o",
                capsize=3,
                color=colours(k % 10),
                label=scenario,
            )
        axis.set_title(split)
        axis.set_xlabel(f"{metric} ({_direction(metric)})")
        axis.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(np.arange(len(estimator_order)), estimator_order)
    axes[0][0].invert_yaxis()
    if len(scenarios) > 1:
        figure.legend(
            *axes[0][0].get_legend_handles_labels(),
            loc="outside lower center",
            ncol=min(3, len(scenarios)),
            frameon=False,
            fontsize="small",
        )
    return _png(figure)


def _direction(metric: str) -> str:
    """How to read a metric: which way is better."""
    info = metric_registry.info(metric)
    if info.nominal is not None:
        return f"best at {info.nominal:g}"
    return "higher is better" if info.higher_is_better else "lower is better"


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
    if not board.empty:
        # Show scenarios and splits in the config's order, not alphabetically.
        order = {
            "scenario": [scenario.label for scenario in config.scenarios],
            "split": [split.label for split in config.splits],
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
    figures = []
    if not board.empty:
        for metric in metrics[:1]:
            figures.append(
                {
                    "title": f"{metric} by estimator, per split scheme "
                    "(mean and 95% corrected interval)",
                    "png": metric_figure(board, metric),
                }
            )
    problems = table[table["status"] != "ok"] if "status" in table.columns else table.iloc[:0]
    problem_rows = [
        {key: ("" if pd.isna(value) else value) for key, value in record.items()}
        for record in problems[
            ["status", "estimator", "scenario", "split", "fold", "error_type", "error"]
        ].to_dict("records")
    ]
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
