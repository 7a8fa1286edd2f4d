"""The report's figures, drawn from the results table (or the leaderboard) with
matplotlib's object interface.

Each figure has two functions: ``<name>_plot`` builds and returns the
:class:`~matplotlib.figure.Figure` (so tests can look at its axes), ``<name>_figure``
returns it as a base64 PNG for the report. Both return None when the table has nothing
to show (no swept parameter, no timing range, no truth, ...).

Rules every figure keeps:

- Scenarios are never mixed on one axis: a panel per scenario (or per (scenario,
  split)), each on its scenario's primary metric, given by a ``primary`` mapping from
  scenario label to metric name. A panel draws only the estimators with rows in it.
- Quantities of different scale are not put on one axis (variance components are shown
  as estimate / truth).
- Labels are plain text: estimator and scenario labels come from user configs, and
  matplotlib would parse ``$...$`` in them as mathtext (and fail on a stray ``$``).
- Panels are sized for the report's ~1180 px column: at most three per row, wrapping
  into rows, with one legend shared by the figure.
"""

from __future__ import annotations

import base64
import functools
import io
import textwrap
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg

# Figure objects, not pyplot: no global figure state and no display needed.
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.ticker import Formatter

from harness import metrics as metric_registry
from harness.compare import fold_ratios, stratified_interval

# Labels are text, never mathtext: matplotlib reads this setting when a text is created
# (titles, legends) and when tick labels are made at draw time, so both building and
# saving a figure happen inside it.
PLAIN_TEXT = {"text.parse_math": False}
DPI = 110
# Three panels of this width fill the report's ~1180 px column at DPI without scaling
# the text down.
PANEL_WIDTH = 3.6
COLUMNS = 3
LABEL_FONT_SIZE = 7

P = ParamSpec("P")


def _plain_text(build: Callable[P, Figure | None]) -> Callable[P, Figure | None]:
    """Build the figure with mathtext parsing off."""

    @functools.wraps(build)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Figure | None:
        with matplotlib.rc_context(PLAIN_TEXT):
            return build(*args, **kwargs)

    return wrapper


def png(figure: Figure) -> str:
    """The figure as a base64-encoded PNG."""
    buffer = io.BytesIO()
    with matplotlib.rc_context(PLAIN_TEXT):
        figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _encoded(figure: Figure | None) -> str | None:
    return None if figure is None else png(figure)


def direction(metric: str) -> str:
    """How to read a metric: which way is better."""
    info = metric_registry.info(metric)
    if info.nominal is not None:
        return f"best at {info.nominal:g}"
    return "higher is better" if info.higher_is_better else "lower is better"


def _axis_label(metric: str) -> str:
    return f"{metric} ({direction(metric)})"


def _ok(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["status"] == "ok"] if "status" in table else table


def _loss(metric: str, values: pd.Series) -> pd.Series:
    """Values ordered so that smaller is better."""
    return metric_registry.info(metric).rank_value(values.astype(float))


def _metric(primary: Mapping[str, str], scenario: str, rows: pd.DataFrame) -> str | None:
    """The scenario's primary metric, if its rows hold values of it."""
    metric = primary.get(scenario)
    if metric is None or metric not in rows or rows[metric].notna().sum() == 0:
        return None
    return metric


def _regimes(table: pd.DataFrame) -> pd.Series:
    """Each row's regime (tables written before regimes were recorded: the scenario
    label without its swept values)."""
    if "regime" in table:
        return table["regime"].astype(str)
    return table["scenario"].astype(str).str.replace(r"\[.*\]$", "", regex=True)


class _PlainLogFormatter(Formatter):
    """Log-axis tick labels as plain numbers (0.01, 1, 1e+04): matplotlib's default
    writes them as mathtext, which the figures do not parse. Minor ticks at 2 and 5
    times a power of ten are labelled when the axis spans under two decades, where a
    power of ten may be the only other label."""

    def __init__(self, minor: bool = False) -> None:
        self.minor = minor

    def __call__(self, x: float, pos: int | None = None) -> str:
        if x <= 0:
            return ""
        if not self.minor:
            return f"{x:g}"
        low, high = self.axis.get_view_interval()
        if low <= 0 or np.log10(high / low) > 2:
            return ""
        mantissa = x / 10 ** np.floor(np.log10(x) + 1e-9)
        return f"{x:g}" if np.isclose(mantissa, 2) or np.isclose(mantissa, 5) else ""


def _log_scale(axis: Axes, which: str = "x") -> None:
    """Put ``which`` axis of ``axis`` on a log scale with plain tick labels."""
    getattr(axis, f"set_{which}scale")("log")
    scale = getattr(axis, f"{which}axis")
    scale.set_major_formatter(_PlainLogFormatter())
    scale.set_minor_formatter(_PlainLogFormatter(minor=True))


def _estimator_colours(estimators: Any) -> dict[str, tuple]:
    """A colour per estimator, by its place in the sorted names: the same estimator has
    the same colour in every figure of a report (the table and the board hold the same
    names)."""
    names = sorted({str(name) for name in estimators})
    # tab20's strong colours first, its light ones only past the tenth estimator.
    palette = matplotlib.colormaps["tab20"]
    strong_first = [palette(k) for k in range(0, 20, 2)] + [palette(k) for k in range(1, 20, 2)]
    return {name: strong_first[k % 20] for k, name in enumerate(names)}


def _title(scenario: str, split: str | None = None) -> str:
    """A panel title: the scenario and its split; a long scenario label is wrapped
    before its swept values and between them."""
    # A space before "[" lets the wrap break there; it is taken out again after.
    spaced = str(scenario).replace("[", " [", 1)
    lines = textwrap.wrap(spaced, width=38, break_on_hyphens=False, break_long_words=False)
    lines = [line.replace(" [", "[", 1) for line in lines] or [""]
    if split is not None:
        lines.append(f"split: {split}")
    return "\n".join(lines)


def _grid(
    n_panels: int, height: float = 3.0, columns: int = COLUMNS, width: float = PANEL_WIDTH
) -> tuple[Figure, list[Axes]]:
    """A figure of ``n_panels`` panels, ``columns`` to a row; unused cells hidden."""
    columns = max(1, min(n_panels, columns))
    rows = int(np.ceil(n_panels / columns))
    figure = Figure(figsize=(width * columns, height * rows + 0.5), dpi=DPI, layout="constrained")
    # An Agg canvas from the start: label placement measures text with its renderer.
    FigureCanvasAgg(figure)
    axes = list(figure.subplots(rows, columns, squeeze=False).ravel())
    for axis in axes[n_panels:]:
        axis.set_visible(False)
    return figure, axes[:n_panels]


def _legend(figure: Figure, axes: list[Axes], columns: int = 4) -> None:
    """One legend for the figure, gathering every panel's entries once (panels show
    different estimators when scenarios bring their own)."""
    handles: dict[str, Any] = {}
    for axis in axes:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        figure.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncol=min(columns, len(handles)),
            frameon=False,
            fontsize="small",
        )


def _dot_rows(axis: Axes, labels: list[str]) -> np.ndarray:
    """Rows of a dot plot, one per label, the first at the top."""
    positions = np.arange(len(labels))
    axis.set_yticks(positions, labels, fontsize="small")
    axis.set_ylim(len(labels) - 0.5, -0.5)
    return positions


def _dot_height(n_rows: int) -> float:
    return 0.32 * n_rows + 1.6


# --- leaderboard -------------------------------------------------------------------------


@_plain_text
def leaderboard_plot(board: pd.DataFrame, primary: Mapping[str, str]) -> Figure | None:
    """Each scenario's primary metric by estimator: mean and 95% corrected interval.

    Parameters
    ----------
    board : pandas.DataFrame
        The leaderboard (:func:`harness.compare.leaderboard`).
    primary : mapping of str to str
        Scenario label -> the metric its panel shows.

    Returns
    -------
    matplotlib.figure.Figure or None
        A panel per scenario, its rows the estimators fitted on it (best first), a colour
        per split scheme; None when no scenario has its metric scored.
    """
    panels = []
    for scenario, rows in board.groupby("scenario", sort=False):
        metric = _metric(primary, str(scenario), rows)
        if metric is not None:
            panels.append((str(scenario), metric, rows[rows[metric].notna()]))
    if not panels:
        return None
    splits = list(dict.fromkeys(board["split"]))
    split_colours = {split: matplotlib.colormaps["Dark2"](k % 8) for k, split in enumerate(splits)}
    most = max(rows["estimator"].nunique() for _, _, rows in panels)
    figure, axes = _grid(len(panels), height=_dot_height(most))
    for axis, (scenario, metric, rows) in zip(axes, panels, strict=True):
        rows = rows.assign(_loss=_loss(metric, rows[metric]))
        order = list(rows.groupby("estimator", sort=False)["_loss"].mean().sort_values().index)
        positions = dict(zip(order, _dot_rows(axis, order), strict=True))
        present = [split for split in splits if split in set(rows["split"])]
        offsets = np.linspace(-0.2, 0.2, len(present)) if len(present) > 1 else [0.0]
        for offset, split in zip(offsets, present, strict=True):
            cell = rows[rows["split"] == split]
            low = (cell[metric] - cell[f"{metric}_low"]).fillna(0).clip(lower=0)
            high = (cell[f"{metric}_high"] - cell[metric]).fillna(0).clip(lower=0)
            axis.errorbar(
                cell[metric],
                cell["estimator"].map(positions) + offset,
                xerr=[low, high],
                fmt="o",
                markersize=4,
                capsize=2,
                color=split_colours[split],
                label=f"split: {split}",
            )
        axis.set_title(_title(scenario), fontsize="medium")
        axis.set_xlabel(_axis_label(metric), fontsize="small")
        axis.grid(axis="x", alpha=0.3)
    _legend(figure, axes)
    return figure


def leaderboard_figure(board: pd.DataFrame, primary: Mapping[str, str]) -> str | None:
    """:func:`leaderboard_plot` as a base64 PNG."""
    return _encoded(leaderboard_plot(board, primary))


# --- sweep -------------------------------------------------------------------------------


@_plain_text
def sweep_plot(table: pd.DataFrame, primary: Mapping[str, str], parameter: str) -> Figure | None:
    """The primary metric against one swept simulator parameter.

    Parameters
    ----------
    table : pandas.DataFrame
        Result rows.
    primary : mapping of str to str
        Scenario label -> metric.
    parameter : str
        A simulator parameter (its ``sim.`` column).

    Returns
    -------
    matplotlib.figure.Figure or None
        A panel per (regime, split) in which the regime takes two or more values of the
        parameter; a line per estimator with its corrected 95% interval as a band. The
        scenarios of a regime at one value (other swept parameters) are averaged with
        equal weight. None when no regime sweeps the parameter.
    """
    column = f"sim.{parameter}"
    ok = _ok(table)
    if column not in ok:
        return None
    ok = ok[ok[column].notna()]
    ok = ok.assign(_regime=_regimes(ok), _metric=ok["scenario"].map(primary))
    panels = []
    for (regime, metric), rows in ok.groupby(["_regime", "_metric"], sort=False):
        if metric not in rows:
            continue
        for split, cell in rows.groupby("split", sort=False):
            cell = cell[cell[metric].notna()]
            if cell[column].nunique() >= 2:
                panels.append((str(regime), str(split), str(metric), cell))
    if not panels:
        return None
    colours = _estimator_colours(ok["estimator"])
    figure, axes = _grid(len(panels))
    for axis, (regime, split, metric, rows) in zip(axes, panels, strict=True):
        values = sorted(rows[column].unique())
        numeric = pd.api.types.is_numeric_dtype(rows[column])
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
            axis.plot(
                positions, means, "o-", markersize=4, color=colours[estimator], label=estimator
            )
            axis.fill_between(positions, lows, highs, color=colours[estimator], alpha=0.15)
        if numeric and min(values) > 0 and max(values) / min(values) >= 10:
            _log_scale(axis)
        if not numeric:
            axis.set_xticks(positions, [str(value) for value in values])
        axis.set_title(_title(regime, split), fontsize="medium")
        axis.set_xlabel(parameter, fontsize="small")
        axis.set_ylabel(_axis_label(metric), fontsize="small")
        axis.grid(alpha=0.3)
    _legend(figure, axes)
    return figure


def sweep_figure(table: pd.DataFrame, primary: Mapping[str, str], parameter: str) -> str | None:
    """:func:`sweep_plot` as a base64 PNG."""
    return _encoded(sweep_plot(table, primary, parameter))


# --- unit activity -----------------------------------------------------------------------


@_plain_text
def activity_plot(table: pd.DataFrame, primary: Mapping[str, str]) -> Figure | None:
    """The primary metric against the number of training rows of the test row's unit
    (the picture of shrinkage).

    Returns
    -------
    matplotlib.figure.Figure or None
        A panel per (scenario, split) with at least two activity buckets holding data,
        a line per estimator (mean over folds); bucket 0 is the unseen units.
    """
    ok = _ok(table)
    labels = [
        metric_registry.bucket_label(low, high) for low, high in metric_registry.ACTIVITY_BUCKETS
    ]
    panels = []
    for (scenario, split), rows in ok.groupby(["scenario", "split"], sort=False):
        metric = primary.get(str(scenario))
        buckets = [
            label
            for label in labels
            if f"{metric}@train_rows={label}" in rows
            and rows[f"{metric}@train_rows={label}"].notna().any()
        ]
        if len(buckets) >= 2:
            panels.append((str(scenario), str(split), str(metric), buckets, rows))
    if not panels:
        return None
    colours = _estimator_colours(ok["estimator"])
    figure, axes = _grid(len(panels))
    for axis, (scenario, split, metric, buckets, rows) in zip(axes, panels, strict=True):
        columns = [f"{metric}@train_rows={label}" for label in buckets]
        means = rows.groupby("estimator", sort=False)[columns].mean()
        for estimator, values in means.iterrows():
            if values.notna().any():
                axis.plot(
                    range(len(buckets)),
                    values.to_numpy(float),
                    "o-",
                    markersize=4,
                    color=colours[estimator],
                    label=estimator,
                )
        axis.set_xticks(range(len(buckets)), buckets)
        axis.set_title(_title(scenario, split), fontsize="medium")
        axis.set_xlabel("training rows of the test row's unit", fontsize="small")
        axis.set_ylabel(_axis_label(metric), fontsize="small")
        axis.grid(alpha=0.3)
    _legend(figure, axes)
    return figure


def activity_figure(table: pd.DataFrame, primary: Mapping[str, str]) -> str | None:
    """:func:`activity_plot` as a base64 PNG."""
    return _encoded(activity_plot(table, primary))


# --- seen and unseen units ---------------------------------------------------------------


@_plain_text
def seen_unseen_plot(table: pd.DataFrame, primary: Mapping[str, str]) -> Figure | None:
    """The primary metric on test rows of seen and of unseen units, as a dot plot.

    Returns
    -------
    matplotlib.figure.Figure or None
        A panel per (scenario, split) whose test rows hold both kinds; per estimator, its
        mean over folds on seen and on unseen units joined by a line. The axis spans the
        values, not zero, so small differences show.
    """
    ok = _ok(table)
    panels = []
    for (scenario, split), rows in ok.groupby(["scenario", "split"], sort=False):
        metric = primary.get(str(scenario))
        seen, unseen = f"{metric}@seen", f"{metric}@unseen"
        if seen not in rows or unseen not in rows:
            continue
        means = rows.groupby("estimator", sort=False)[[seen, unseen]].mean().dropna()
        if not means.empty:
            panels.append((str(scenario), str(split), str(metric), means))
    if not panels:
        return None
    most = max(len(means) for *_, means in panels)
    figure, axes = _grid(len(panels), height=_dot_height(most))
    for axis, (scenario, split, metric, means) in zip(axes, panels, strict=True):
        means.columns = ["seen", "unseen"]
        means = means.iloc[np.argsort(_loss(metric, means["seen"]).to_numpy(), kind="stable")]
        positions = _dot_rows(axis, list(means.index))
        axis.hlines(positions, means["seen"], means["unseen"], color="0.7", lw=1.5, zorder=1)
        axis.scatter(means["seen"], positions, color="tab:blue", zorder=2, label="seen units")
        axis.scatter(
            means["unseen"], positions, color="tab:orange", marker="D", zorder=2,
            label="unseen units",
        )  # fmt: skip
        axis.margins(x=0.1)
        axis.set_title(_title(scenario, split), fontsize="medium")
        axis.set_xlabel(_axis_label(metric), fontsize="small")
        axis.grid(axis="x", alpha=0.3)
    _legend(figure, axes)
    return figure


def seen_unseen_figure(table: pd.DataFrame, primary: Mapping[str, str]) -> str | None:
    """:func:`seen_unseen_plot` as a base64 PNG."""
    return _encoded(seen_unseen_plot(table, primary))


# --- fit time ----------------------------------------------------------------------------

# A trend of fit time on training rows is fitted only over at least this range of rows,
# and the figure is drawn when an estimator spans at least the second.
MIN_ROWS_RANGE = 10.0
MIN_FIGURE_RANGE = 2.0


def _timed_jobs(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Jobs with a positive fit time and training size, per estimator; an estimator used
    on several outcome families is a different model on each (a logistic, not a linear,
    fixed-effects fit, say), so it gets a series per family."""
    ok = _ok(table)
    ok = ok[(ok["fit_seconds"] > 0) & (ok["n_train"] > 0)]
    series = ok["estimator"].astype(str)
    if "family" in ok:
        several = ok.groupby("estimator")["family"].nunique()
        several = ok["estimator"].isin(several[several > 1].index)
        series = series.where(~several, series + " (" + ok["family"].astype(str) + ")")
    return {str(name): rows for name, rows in ok.groupby(series, sort=False)}


def fit_time_slopes(table: pd.DataFrame) -> dict[str, float]:
    """Per estimator (and family, see the figure), the least-squares slope of log fit time
    on log training rows, over jobs spanning a tenfold range of training rows or more."""
    slopes = {}
    for name, rows in _timed_jobs(table).items():
        if rows["n_train"].max() / rows["n_train"].min() >= MIN_ROWS_RANGE:
            slope, _ = np.polyfit(np.log(rows["n_train"]), np.log(rows["fit_seconds"]), 1)
            slopes[name] = float(slope)
    return slopes


def growth_label(name: str, slope: float | None) -> str:
    """A legend entry for a series of fit times: an order of growth only for a positive
    slope (at two decimals); ``slope`` is None when no trend was fitted (the rows span
    under a tenfold range)."""
    if slope is None:
        return name
    # As shown: a slope printed as 0.00 is no growth, whatever its sign in the last digits.
    if round(slope, 2) > 0:
        return f"{name}: time ~ rows^{slope:.2f}"
    return f"{name}: no growth with rows (slope {round(slope, 2) + 0.0:+.2f})"


@_plain_text
def fit_time_plot(table: pd.DataFrame) -> Figure | None:
    """Fit seconds against training rows, log-log: a point per job, a colour per estimator,
    and a least-squares line for estimators fitted over a tenfold range of rows (others
    say in the legend that no trend was fitted).

    Returns
    -------
    matplotlib.figure.Figure or None
        None when no estimator was fitted over a twofold range of training rows.
    """
    series = _timed_jobs(table)
    if not any(
        rows["n_train"].max() / rows["n_train"].min() >= MIN_FIGURE_RANGE
        for rows in series.values()
    ):
        return None
    slopes = fit_time_slopes(table)
    colours = _estimator_colours(list(series))
    figure = Figure(figsize=(8.0, 5.2), dpi=DPI, layout="constrained")
    axis = figure.subplots()
    for name, rows in series.items():
        slope = slopes.get(name)
        axis.scatter(
            rows["n_train"],
            rows["fit_seconds"],
            s=12,
            alpha=0.5,
            color=colours[name],
            label=growth_label(name, slope),
        )
        if slope is not None:
            intercept = np.mean(np.log(rows["fit_seconds"])) - slope * np.mean(
                np.log(rows["n_train"])
            )
            ends = np.array([rows["n_train"].min(), rows["n_train"].max()], dtype=float)
            axis.plot(ends, np.exp(intercept) * ends**slope, color=colours[name], lw=1.2)
    _log_scale(axis, "x")
    _log_scale(axis, "y")
    axis.set_xlabel("training rows of the job")
    axis.set_ylabel("fit seconds")
    axis.grid(alpha=0.3, which="both")
    _legend(figure, [axis], columns=2)
    return figure


def fit_time_figure(table: pd.DataFrame) -> str | None:
    """:func:`fit_time_plot` as a base64 PNG."""
    return _encoded(fit_time_plot(table))


# --- variance components -----------------------------------------------------------------


@_plain_text
def variance_components_plot(table: pd.DataFrame) -> Figure | None:
    """Estimated over true standard deviation of each random effect and of the noise.

    Returns
    -------
    matplotlib.figure.Figure or None
        A panel per scenario, a column of points per component (its true sd under the
        name), a point per fold and a colour per estimator; the dashed line at 1 is the
        truth. Components with a true sd of 0 have no ratio and are left out. None when
        no estimator estimated a component with a known truth.
    """
    ok = _ok(table)
    names = [
        column.removeprefix("sd_est.")
        for column in ok.columns
        if column.startswith("sd_est.") and f"sd_true.{column.removeprefix('sd_est.')}" in ok
    ]
    panels = []
    for scenario, rows in ok.groupby("scenario", sort=False):
        ratios = pd.DataFrame(
            {
                name: rows[f"sd_est.{name}"].astype(float)
                / rows[f"sd_true.{name}"].astype(float).where(lambda truth: truth > 0)
                for name in names
            },
            index=rows.index,
        )
        ratios = ratios.loc[:, ratios.notna().any()]
        ratios = ratios[ratios.notna().any(axis=1)]
        if not ratios.empty:
            panels.append((str(scenario), rows.loc[ratios.index], ratios))
    if not panels:
        return None
    colours = _estimator_colours(ok["estimator"])
    jitter = np.random.default_rng(0)
    figure, axes = _grid(len(panels), height=3.2)
    for axis, (scenario, rows, ratios) in zip(axes, panels, strict=True):
        estimators = list(dict.fromkeys(rows["estimator"]))
        offsets = np.linspace(-0.25, 0.25, len(estimators)) if len(estimators) > 1 else [0.0]
        for offset, estimator in zip(offsets, estimators, strict=True):
            mine = ratios[rows["estimator"] == estimator]
            for k, name in enumerate(ratios.columns):
                values = mine[name].dropna()
                axis.scatter(
                    k + offset + jitter.uniform(-0.04, 0.04, len(values)),
                    values,
                    s=14,
                    alpha=0.7,
                    color=colours[estimator],
                    label=estimator,
                )
        ticks = []
        for name in ratios.columns:
            truth = rows[f"sd_true.{name}"].dropna().unique()
            low, high = float(np.min(truth)), float(np.max(truth))
            shown = f"{low:.3g}" if low == high else f"{low:.3g}-{high:.3g}"
            ticks.append(f"{name}\n(true {shown})")
        axis.set_xticks(range(len(ticks)), ticks, fontsize="small")
        axis.set_xlim(-0.6, len(ticks) - 0.4)
        axis.axhline(1.0, color="grey", lw=1, ls="--", zorder=0)
        axis.set_title(_title(scenario), fontsize="medium")
        axis.set_ylabel("estimated sd / true sd", fontsize="small")
        axis.grid(axis="y", alpha=0.3)
    _legend(figure, axes)
    return figure


def variance_components_figure(table: pd.DataFrame) -> str | None:
    """:func:`variance_components_plot` as a base64 PNG."""
    return _encoded(variance_components_plot(table))


# --- coverage ----------------------------------------------------------------------------


@_plain_text
def coverage_plot(table: pd.DataFrame) -> Figure | None:
    """Interval coverage against the nominal levels.

    Returns
    -------
    matplotlib.figure.Figure or None
        A panel per scenario with coverage scored, a row per estimator that gives
        predictive intervals, its mean over folds per split scheme (a colour each) and
        level (a marker each), dashed lines at the nominal levels.
    """
    ok = _ok(table)
    levels = [name for name in ("coverage50", "coverage90") if name in ok]
    if not levels:
        return None
    ok = ok[ok[levels].notna().any(axis=1)]
    if ok.empty:
        return None
    scenarios = list(dict.fromkeys(ok["scenario"]))
    splits = list(dict.fromkeys(ok["split"]))
    split_colours = {split: matplotlib.colormaps["Dark2"](k % 8) for k, split in enumerate(splits)}
    markers = dict(zip(levels, ["s", "o"][-len(levels) :], strict=True))
    most = max(ok.groupby("scenario")["estimator"].nunique())
    figure, axes = _grid(len(scenarios), height=_dot_height(most))
    for axis, scenario in zip(axes, scenarios, strict=True):
        rows = ok[ok["scenario"] == scenario]
        means = rows.groupby(["estimator", "split"], sort=False)[levels].mean()
        estimators = list(dict.fromkeys(rows["estimator"]))
        positions = dict(zip(estimators, _dot_rows(axis, estimators), strict=True))
        present = [split for split in splits if split in set(rows["split"])]
        offsets = np.linspace(-0.2, 0.2, len(present)) if len(present) > 1 else [0.0]
        for offset, split in zip(offsets, present, strict=True):
            cell = means.xs(split, level="split")
            for level in levels:
                axis.scatter(
                    cell[level],
                    cell.index.map(positions) + offset,
                    marker=markers[level],
                    s=22,
                    color=split_colours[split],
                    label=f"split: {split}",
                )
        for level in levels:
            nominal = metric_registry.info(level).nominal
            axis.axvline(nominal, color="grey", ls="--", lw=1, zorder=0)
            # A grey proxy, so the legend explains the markers once.
            axis.scatter(
                [], [], marker=markers[level], color="grey", label=f"{nominal:.0%} interval"
            )
        # At least the nominal levels +- 0.05, so that a miss of a few test rows does not
        # fill the panel; wider when the values are.
        nominals = [metric_registry.info(level).nominal for level in levels]
        values = means.to_numpy(float)
        low = min(min(nominals) - 0.05, np.nanmin(values) - 0.02)
        high = max(max(nominals) + 0.05, np.nanmax(values) + 0.02)
        axis.set_xlim(max(low, 0.0), min(high, 1.0))
        axis.set_title(_title(scenario), fontsize="medium")
        axis.set_xlabel("share of test outcomes inside the interval", fontsize="small")
        axis.grid(axis="x", alpha=0.3)
    _legend(figure, axes)
    return figure


def coverage_figure(table: pd.DataFrame) -> str | None:
    """:func:`coverage_plot` as a base64 PNG."""
    return _encoded(coverage_plot(table))


# --- accuracy against cost ---------------------------------------------------------------


def pareto_front(rows: pd.DataFrame, metric: str) -> list[str]:
    """The estimators no other estimator dominates on fit time and ``metric``.

    One estimator dominates another when it fits at least as fast and is at least as
    accurate, and strictly one of the two.

    Parameters
    ----------
    rows : pandas.DataFrame
        Leaderboard rows of one (scenario, split): ``estimator``, ``fit_seconds`` (median)
        and ``metric`` (mean); rows missing either are left out.
    metric : str
        The accuracy measure (its registered direction says which way is better).

    Returns
    -------
    list of str
        The non-dominated estimators, fastest first.
    """
    rows = rows[np.isfinite(rows["fit_seconds"]) & np.isfinite(rows[metric])]
    seconds = rows["fit_seconds"].to_numpy(float)
    loss = _loss(metric, rows[metric]).to_numpy(float)
    front = []
    for k in np.argsort(seconds, kind="stable"):
        no_worse = (seconds <= seconds[k]) & (loss <= loss[k])
        better = (seconds < seconds[k]) | (loss < loss[k])
        if not np.any(no_worse & better):
            front.append(str(rows["estimator"].iloc[k]))
    return front


# Where a point's label may go, tried in order: offset in points and alignment, the
# nearest spots around the point first, then the same directions farther out.
_NEAR_SPOTS = (
    (4, 2, "left", "bottom"),
    (4, -2, "left", "top"),
    (-4, 2, "right", "bottom"),
    (-4, -2, "right", "top"),
    (0, 5, "center", "bottom"),
    (0, -5, "center", "top"),
)
_LABEL_SPOTS = [(dx, dy * reach, ha, va) for reach in (1, 3, 5) for dx, dy, ha, va in _NEAR_SPOTS]


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Area shared by two boxes (left, bottom, right, top)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    return max(width, 0.0) * max(height, 0.0)


def _label_points(
    axis: Axes,
    points: list[tuple[float, float, str]],
    spans: list[tuple[float, float]] | None = None,
) -> None:
    """Name each point beside it.

    Spots around the point are tried in order (``_LABEL_SPOTS``) until the label
    overlaps no label already placed, no point and no error bar (``spans``: each point's
    interval in data units), and stays inside the panel; else the spot that overlaps
    least wins, a leader line joining a label placed farther out to its point. Works in
    display coordinates, so call it once the figure's layout is final (after
    ``draw_without_rendering``).
    """
    figure = axis.get_figure(root=True)
    renderer = figure.canvas.get_renderer()
    font = FontProperties(size=LABEL_FONT_SIZE)
    to_pixels = figure.dpi / 72
    panel = axis.get_window_extent(renderer)
    centres = axis.transData.transform([(x, y) for x, y, _ in points])
    marker = 4 * to_pixels
    obstacles = [(cx - marker, cy - marker, cx + marker, cy + marker) for cx, cy in centres]
    bars = []
    for (x, _, _), (low, high) in zip(points, spans or [], strict=False):
        if np.isfinite(low) and np.isfinite(high):
            (bx, by0), (_, by1) = axis.transData.transform([(x, low), (x, high)])
            bars.append((bx - 1.5 * to_pixels, by0, bx + 1.5 * to_pixels, by1))
    taken: list[tuple[float, float, float, float]] = []
    for (x, y, name), (px, py) in sorted(
        zip(points, centres, strict=True), key=lambda pair: -pair[1][1]
    ):
        width, height, _ = renderer.get_text_width_height_descent(name, font, ismath=False)
        best, best_cost = None, np.inf
        for dx, dy, ha, va in _LABEL_SPOTS:
            left = px + dx * to_pixels - {"left": 0, "center": width / 2, "right": width}[ha]
            bottom = py + dy * to_pixels - (height if va == "top" else 0)
            box = (left, bottom, left + width, bottom + height)
            inside = (
                box[0] >= panel.x0 and box[2] <= panel.x1 and box[1] >= panel.y0
                and box[3] <= panel.y1
            )  # fmt: skip
            # Crossing an error bar hurts legibility less than covering a label or point.
            cost = (
                sum(_overlap(box, other) for other in taken + obstacles)
                + 0.5 * sum(_overlap(box, bar) for bar in bars)
                + (0 if inside else width * height)
            )
            if cost < best_cost:
                best, best_cost = (dx, dy, ha, va, box), cost
            if cost == 0:
                break
        dx, dy, ha, va, box = best
        taken.append(box)
        label = axis.annotate(
            name,
            (x, y),
            xytext=(dx, dy),
            textcoords="offset points",
            ha=ha,
            va=va,
            fontsize=LABEL_FONT_SIZE,
            arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.5"} if abs(dy) > 5 else None,
        )
        # Labels stay where they were placed: the layout ignores them.
        label.set_in_layout(False)


@_plain_text
def pareto_plot(board: pd.DataFrame, primary: Mapping[str, str]) -> Figure | None:
    """Accuracy against fit time, with the Pareto front.

    Parameters
    ----------
    board : pandas.DataFrame
        The leaderboard, with median ``fit_seconds`` per (scenario, split, estimator).
    primary : mapping of str to str
        Scenario label -> metric.

    Returns
    -------
    matplotlib.figure.Figure or None
        A panel per (scenario, split) with two or more timed estimators: x the median fit
        seconds (log scale), y the mean of the scenario's metric with its interval, a
        point per estimator named beside it; the estimators no other one beats on both
        (see :func:`pareto_front`) are joined by a step line (the best accuracy a fit-time
        budget buys). None when no panel has two estimators.
    """
    if "fit_seconds" not in board:
        return None
    panels = []
    for (scenario, split), rows in board.groupby(["scenario", "split"], sort=False):
        metric = _metric(primary, str(scenario), rows)
        if metric is None:
            continue
        rows = rows[(rows["fit_seconds"] > 0) & rows[metric].notna()]
        if len(rows) >= 2:
            panels.append((str(scenario), str(split), metric, rows))
    if not panels:
        return None
    colours = _estimator_colours(board["estimator"])
    figure, axes = _grid(len(panels), height=3.3)
    for axis, (scenario, split, metric, rows) in zip(axes, panels, strict=True):
        front = rows.set_index("estimator").loc[pareto_front(rows, metric)]
        axis.step(
            front["fit_seconds"], front[metric], where="post", color="0.35", lw=1.2, zorder=1,
            label="Pareto front",
        )  # fmt: skip
        low = (rows[metric] - rows[f"{metric}_low"]).fillna(0).clip(lower=0)
        high = (rows[f"{metric}_high"] - rows[metric]).fillna(0).clip(lower=0)
        for k, estimator in enumerate(rows["estimator"]):
            axis.errorbar(
                rows["fit_seconds"].iloc[k],
                rows[metric].iloc[k],
                yerr=[[low.iloc[k]], [high.iloc[k]]],
                fmt="o",
                markersize=5,
                capsize=2,
                color=colours[estimator],
                label=estimator,
                zorder=2,
            )
        # The estimators on the front ringed in black (apart from their legend entries,
        # which every panel shares).
        axis.scatter(
            front["fit_seconds"], front[metric], s=60, facecolors="none", edgecolors="black",
            linewidths=1, zorder=3, label="_nolegend_",
        )  # fmt: skip
        _log_scale(axis)
        axis.margins(x=0.15, y=0.1)
        axis.set_title(_title(scenario, split), fontsize="medium")
        axis.set_xlabel("median fit seconds", fontsize="small")
        axis.set_ylabel(_axis_label(metric), fontsize="small")
        axis.grid(alpha=0.3, which="both")
    _legend(figure, axes)
    # The labels go last, once the layout (legend included) is final.
    figure.draw_without_rendering()
    for axis, (_, _, metric, rows) in zip(axes, panels, strict=True):
        points = list(zip(rows["fit_seconds"], rows[metric], rows["estimator"], strict=True))
        spans = list(zip(rows[f"{metric}_low"], rows[f"{metric}_high"], strict=True))
        _label_points(axis, points, spans)
    return figure


def pareto_figure(board: pd.DataFrame, primary: Mapping[str, str]) -> str | None:
    """:func:`pareto_plot` as a base64 PNG."""
    return _encoded(pareto_plot(board, primary))
