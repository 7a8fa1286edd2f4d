"""The report's figures, each drawn from the results table (or the leaderboard) with
matplotlib's object interface and returned as a base64 PNG, or None when the table has
nothing to show for it (no swept parameter, no timing range, no truth, ...)."""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib
import numpy as np
import pandas as pd

# Figure objects, not pyplot: no global figure state and no display needed.
from matplotlib.figure import Figure

from harness import metrics as metric_registry
from harness.compare import fold_ratios, stratified_interval

COLOURS = matplotlib.colormaps["tab10"]


def png(figure: Figure) -> str:
    """The figure as a base64-encoded PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def direction(metric: str) -> str:
    """How to read a metric: which way is better."""
    info = metric_registry.info(metric)
    if info.nominal is not None:
        return f"best at {info.nominal:g}"
    return "higher is better" if info.higher_is_better else "lower is better"


def _ok(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["status"] == "ok"] if "status" in table else table


def _estimator_colours(estimators: list[str]) -> dict[str, tuple]:
    return {name: COLOURS(k % 10) for k, name in enumerate(estimators)}


def _grid(n_panels: int, width: float = 4.4, height: float = 3.2) -> tuple[Figure, np.ndarray]:
    columns = min(n_panels, 3)
    rows = int(np.ceil(n_panels / columns))
    figure = Figure(figsize=(width * columns + 1.5, height * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis in axes.ravel()[n_panels:]:
        axis.set_visible(False)
    return figure, axes.ravel()


def _legend(figure: Figure, axes: Any) -> None:
    """One legend for the figure, gathering every panel's entries once (panels may show
    different estimators when scenarios bring their own)."""
    handles: dict[str, Any] = {}
    for axis in np.ravel(axes):
        if not axis.get_visible():
            continue
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        figure.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncol=min(4, len(handles)),
            frameon=False,
            fontsize="small",
        )


def leaderboard_figure(board: pd.DataFrame, metric: str) -> str:
    """Mean ``metric`` with its interval per estimator, a panel per split scheme and a
    colour per scenario."""
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
                color=COLOURS(k % 10),
                label=scenario,
            )
        axis.set_title(split, fontsize="medium")
        axis.set_xlabel(f"{metric} ({direction(metric)})")
        axis.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(np.arange(len(estimator_order)), estimator_order)
    axes[0][0].invert_yaxis()
    if len(scenarios) > 1:
        _legend(figure, axes)
    return png(figure)


def sweep_figure(table: pd.DataFrame, metric: str, parameter: str) -> str | None:
    """``metric`` against one swept simulator parameter: a line per estimator with its
    corrected 95% interval as a band, a panel per split scheme; the scenarios at one
    value (other swept parameters) are averaged with equal weight."""
    column = f"sim.{parameter}"
    ok = _ok(table)
    if column not in ok or metric not in ok:
        return None
    ok = ok[ok[column].notna()]
    # Panels for the split schemes on which the parameter takes two or more values (a
    # scenario with its own schemes may not sweep it).
    splits = [
        split
        for split in dict.fromkeys(ok["split"])
        if ok.loc[ok["split"] == split, column].nunique() >= 2
    ]
    if not splits:
        return None
    numeric = pd.api.types.is_numeric_dtype(ok[column])
    estimators = list(dict.fromkeys(ok["estimator"]))
    colours = _estimator_colours(estimators)
    figure, axes = _grid(len(splits))
    for axis, split in zip(axes, splits, strict=False):
        rows = ok[ok["split"] == split]
        values = sorted(rows[column].unique())
        positions = values if numeric else list(range(len(values)))
        for estimator in dict.fromkeys(rows["estimator"]):
            means, lows, highs = [], [], []
            for value in values:
                cell = rows[(rows["estimator"] == estimator) & (rows[column] == value)]
                interval = stratified_interval(
                    cell[metric].to_numpy(float), cell["scenario"].to_numpy(), fold_ratios(cell)
                )
                means.append(interval.mean)
                lows.append(interval.low)
                highs.append(interval.high)
            axis.plot(positions, means, "o-", color=colours[estimator], label=estimator)
            axis.fill_between(positions, lows, highs, color=colours[estimator], alpha=0.15)
        if numeric and min(values) > 0 and max(values) / min(values) >= 10:
            axis.set_xscale("log")
        if not numeric:
            axis.set_xticks(positions, [str(value) for value in values])
        axis.set_title(split, fontsize="medium")
        axis.set_xlabel(parameter)
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
    _legend(figure, axes)
    return png(figure)


def activity_figure(table: pd.DataFrame, metric: str) -> str | None:
    """``metric`` against the number of training rows of the test row's unit (the
    picture of shrinkage): a line per estimator, a panel per split scheme with seen
    units; bucket 0 is the unseen units."""
    ok = _ok(table)
    labels = [
        metric_registry.bucket_label(low, high) for low, high in metric_registry.ACTIVITY_BUCKETS
    ]
    columns = [f"{metric}@train_rows={label}" for label in labels]
    present = [column for column in columns if column in ok]
    if len(present) < 2:
        return None
    splits = [
        split
        for split in dict.fromkeys(ok["split"])
        if ok.loc[ok["split"] == split, present].notna().sum().gt(0).sum() >= 2
    ]
    if not splits:
        return None
    estimators = list(dict.fromkeys(ok["estimator"]))
    colours = _estimator_colours(estimators)
    figure, axes = _grid(len(splits))
    for axis, split in zip(axes, splits, strict=False):
        rows = ok[ok["split"] == split]
        for estimator in estimators:
            cell = rows[rows["estimator"] == estimator]
            means = [cell[column].mean() if column in cell else np.nan for column in columns]
            axis.plot(range(len(labels)), means, "o-", color=colours[estimator], label=estimator)
        axis.set_xticks(range(len(labels)), labels)
        axis.set_title(split, fontsize="medium")
        axis.set_xlabel("training rows of the test row's unit (0 = unseen)")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
    _legend(figure, axes)
    return png(figure)


def seen_unseen_figure(table: pd.DataFrame, metric: str) -> str | None:
    """``metric`` on test rows of seen and of unseen units, per estimator and split
    scheme (a scheme appears when its test rows hold both kinds)."""
    ok = _ok(table)
    seen, unseen = f"{metric}@seen", f"{metric}@unseen"
    if seen not in ok or unseen not in ok:
        return None
    both = ok[ok[seen].notna() & ok[unseen].notna()]
    splits = list(dict.fromkeys(both["split"]))
    if not splits:
        return None
    estimators = list(dict.fromkeys(ok["estimator"]))
    figure, axes = _grid(len(splits), width=4.8, height=0.35 * len(estimators) + 1.4)
    for axis, split in zip(axes, splits, strict=False):
        rows = both[both["split"] == split].groupby("estimator")[[seen, unseen]].mean()
        rows = rows.reindex(estimators)
        positions = np.arange(len(estimators))
        axis.barh(positions - 0.2, rows[seen], height=0.4, color=COLOURS(0), label="seen units")
        axis.barh(positions + 0.2, rows[unseen], height=0.4, color=COLOURS(1), label="unseen units")
        axis.set_yticks(positions, estimators)
        axis.invert_yaxis()
        axis.set_title(split, fontsize="medium")
        axis.set_xlabel(metric)
        axis.grid(axis="x", alpha=0.3)
    _legend(figure, axes)
    return png(figure)


def fit_time_slopes(table: pd.DataFrame) -> dict[str, float]:
    """Per estimator, the slope of log fit time on log training rows (the empirical
    order of growth); only estimators fitted on a tenfold range of sizes or more."""
    ok = _ok(table)
    slopes = {}
    for estimator, rows in ok.groupby("estimator", sort=False):
        rows = rows[(rows["fit_seconds"] > 0) & (rows["n_train"] > 0)]
        if rows.empty or rows["n_train"].max() / rows["n_train"].min() < 10:
            continue
        slope, _ = np.polyfit(np.log(rows["n_train"]), np.log(rows["fit_seconds"]), 1)
        slopes[str(estimator)] = float(slope)
    return slopes


def fit_time_figure(table: pd.DataFrame) -> str | None:
    """Fit seconds against training rows, log-log, a line per estimator with its fitted
    slope in the legend."""
    slopes = fit_time_slopes(table)
    if not slopes:
        return None
    ok = _ok(table)
    figure = Figure(figsize=(7.5, 4.6), layout="constrained")
    axis = figure.subplots()
    colours = _estimator_colours(list(slopes))
    for estimator, slope in slopes.items():
        rows = ok[ok["estimator"] == estimator].groupby("n_train")["fit_seconds"].median()
        axis.plot(
            rows.index,
            rows.to_numpy(),
            "o-",
            color=colours[estimator],
            label=f"{estimator} (slope {slope:.2f})",
        )
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("training rows")
    axis.set_ylabel("fit seconds (median over folds)")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize="small", frameon=False)
    return png(figure)


def variance_components_figure(table: pd.DataFrame) -> str | None:
    """Estimated against true standard deviations of the random effects and the noise,
    one point per fold, a panel per component, a colour per estimator."""
    ok = _ok(table)
    components = [
        column.removeprefix("sd_est.")
        for column in ok.columns
        if column.startswith("sd_est.") and f"sd_true.{column.removeprefix('sd_est.')}" in ok
    ]
    components = [c for c in components if ok[f"sd_est.{c}"].notna().any()]
    if not components:
        return None
    estimators = [
        estimator
        for estimator, rows in ok.groupby("estimator", sort=False)
        if rows[[f"sd_est.{c}" for c in components]].notna().any().any()
    ]
    colours = _estimator_colours(estimators)
    figure, axes = _grid(len(components), width=3.6, height=3.4)
    for axis, component in zip(axes, components, strict=False):
        true, estimated = f"sd_true.{component}", f"sd_est.{component}"
        for estimator in estimators:
            rows = ok[(ok["estimator"] == estimator) & ok[estimated].notna()]
            jitter = np.random.default_rng(0).uniform(-0.01, 0.01, len(rows))
            axis.scatter(
                rows[true] * (1 + jitter),
                rows[estimated],
                s=14,
                alpha=0.6,
                color=colours[estimator],
                label=estimator,
            )
        values = ok[[true, estimated]].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        if finite.size:
            top = float(finite.max()) * 1.1
            axis.plot([0, top], [0, top], color="grey", lw=1, ls="--")
            axis.set_xlim(0, top)
            axis.set_ylim(0, top)
        axis.set_title(f"sd of {component}", fontsize="medium")
        axis.set_xlabel("true")
        axis.set_ylabel("estimated")
        axis.grid(alpha=0.3)
    _legend(figure, axes)
    return png(figure)


def coverage_figure(table: pd.DataFrame) -> str | None:
    """Interval coverage per estimator and split scheme against the nominal levels."""
    ok = _ok(table)
    levels = [
        name for name in ("coverage50", "coverage90") if name in ok and ok[name].notna().any()
    ]
    if not levels:
        return None
    with_sd = ok[ok[levels].notna().any(axis=1)]
    splits = list(dict.fromkeys(with_sd["split"]))
    estimators = list(dict.fromkeys(with_sd["estimator"]))
    figure, axes = _grid(len(splits), width=4.2, height=0.4 * len(estimators) + 1.5)
    for axis, split in zip(axes, splits, strict=False):
        rows = with_sd[with_sd["split"] == split].groupby("estimator")[levels].mean()
        rows = rows.reindex(estimators)
        positions = np.arange(len(estimators))
        for k, level in enumerate(levels):
            nominal = metric_registry.info(level).nominal
            axis.scatter(rows[level], positions, color=COLOURS(k), label=f"{nominal:.0%} interval")
            axis.axvline(nominal, color=COLOURS(k), ls="--", lw=1)
        axis.set_yticks(positions, estimators)
        axis.invert_yaxis()
        axis.set_xlim(0, 1.02)
        axis.set_title(split, fontsize="medium")
        axis.set_xlabel("share of test outcomes inside the interval")
        axis.grid(axis="x", alpha=0.3)
    _legend(figure, axes)
    return png(figure)
