"""Comparing estimators across scenarios, as the benchmarking literature does.

The regime map (``harness.regimes``) reads each (scenario, split) on its own; this module
asks the pooled question: over all the cells of an outcome family, does one estimator
rank better than the others, and by a margin that matters?

- A **cell** is one (scenario, split) of the leaderboard; its value for an estimator is
  the mean over folds and repeats of the scenario's primary metric, oriented so that
  smaller is better. Cells are grouped by outcome family (and primary metric), since a
  Gaussian RMSE and a binary log loss are not comparable; a group keeps only the
  estimators present in every one of its cells.
- **Friedman test** with Iman and Davenport's F, the **Nemenyi critical difference** and
  **Holm's post-hoc** of each estimator against the best-ranked one, after Demsar (2006),
  "Statistical comparisons of classifiers over multiple data sets", JMLR 7.
- The **critical-difference diagram** of Demsar (2006), Figure 1.
- **Bayesian signed-rank test** with a region of practical equivalence (Benavoli, Corani,
  Demsar and Zaffalon 2017, "Time for a change", JMLR 18) of the best-ranked estimator
  against each other, on relative differences in %, computed by ``baycomp``.
- **Reversals**: the cells where the other estimator is better, so that an average over
  cells never hides a regime that reverses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import baycomp
import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

from harness import figures as plots
from harness import metrics as metric_registry
from harness.config import Config
from harness.equivalence import holm
from harness.findings import format_percent

ALPHA = 0.05
# The rank tests need two cells to rank over and three estimators (with two, Friedman's
# test is a sign test and the post-hoc has nothing to add).
MIN_CELLS = 2
MIN_ESTIMATORS = 3
# The Dirichlet-process prior of Benavoli et al. (2017): strength 0.5 on a pseudo-
# observation at zero difference (baycomp's default, stated here so it cannot drift).
PRIOR_STRENGTH = 0.5
# Posterior samples and their seed: a report rendered twice must show the same numbers.
SAMPLES = 50_000
SEED = 2017


def cell_name(scenario: str, split: str) -> str:
    """How a cell is named in tables and sentences."""
    return f"{scenario} · {split}"


@dataclass(frozen=True)
class Cells:
    """The cells x estimators matrix of one outcome family on its primary metric.

    Attributes
    ----------
    family, metric : str
        The outcome family and the metric that ranks its scenarios.
    losses : pandas.DataFrame
        A row per cell (named by :func:`cell_name`), a column per estimator present in
        every cell; the metric's mean over folds, oriented so that smaller is better.
    means : pandas.DataFrame
        The same means as the metric reports them (the scale of relative differences).
    scenarios : tuple of str
        Each row's scenario (cells of one scenario under several split schemes share it).
    left_out : dict of str to str
        Estimators fitted in some cells but not all, with the reason.
    """

    family: str
    metric: str
    losses: pd.DataFrame
    means: pd.DataFrame
    scenarios: tuple[str, ...]
    left_out: dict[str, str]


def _families(table: pd.DataFrame) -> dict[str, str]:
    """Each scenario's outcome family ('all' for tables that do not record it)."""
    if "family" not in table:
        return {}
    return table.dropna(subset=["family"]).groupby("scenario")["family"].first().to_dict()


def _why_missing(
    table: pd.DataFrame | None, estimator: str, missing: list[tuple], present: list[str]
) -> str:
    """Why ``estimator`` has no value in the ``missing`` (scenario, split) cells: not run
    there, or its jobs failed or were skipped; an estimator run in few cells of many is
    said to run only there (``present``)."""
    reasons: dict[str, list[str]] = {}
    for scenario, split in missing:
        status = "not run in"
        if table is not None and "status" in table:
            rows = table[
                (table["scenario"] == scenario)
                & (table["split"] == split)
                & (table["estimator"] == estimator)
            ]
            problems = sorted(set(rows["status"]) - {"ok"})
            if problems:
                status = f"{'/'.join(problems)} in"
            elif len(rows):
                status = "no value of the metric in"
        reasons.setdefault(status, []).append(cell_name(scenario, split))
    if list(reasons) == ["not run in"] and len(present) < len(missing):
        return f"run only in {', '.join(present)}"
    parts = []
    for status, names in reasons.items():
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        parts.append(f"{status} {shown}")
    return "; ".join(parts)


def cell_matrices(
    board: pd.DataFrame,
    primary: Mapping[str, str] | None = None,
    table: pd.DataFrame | None = None,
) -> list[Cells]:
    """The leaderboard's cells grouped by outcome family, as matrices.

    Parameters
    ----------
    board : pandas.DataFrame
        The leaderboard (:func:`harness.compare.leaderboard`): a row per (scenario,
        split, estimator), the scenario's ranking metric in ``primary`` and each metric's
        mean in its own column.
    primary : mapping of str to str, optional
        Scenario -> ranking metric; default the board's ``primary`` column.
    table : pandas.DataFrame, optional
        The results table: each scenario's ``family``, and the status of missing jobs
        to say why an estimator was left out. Without it, one group per metric.

    Returns
    -------
    list of Cells
        One per (family, metric), in the board's order.
    """
    if board.empty:
        return []
    families = _families(table) if table is not None else {}
    scenario = board["scenario"].astype(str)
    board = board.assign(
        _family=[str(families.get(name, "all")) for name in scenario],
        _metric=[
            (primary or {}).get(name, default)
            for name, default in zip(scenario, board["primary"].astype(str), strict=True)
        ],
        _cell=[cell_name(s, p) for s, p in zip(scenario, board["split"].astype(str), strict=True)],
    )
    groups = []
    for (family, metric), rows in board.groupby(["_family", "_metric"], sort=False):
        cells = list(dict.fromkeys(rows["_cell"]))
        estimators = list(dict.fromkeys(rows["estimator"].astype(str)))
        means = (
            rows.set_index(["_cell", "estimator"])[metric]
            .astype(float)
            .unstack()
            .reindex(index=cells, columns=estimators)
        )
        complete = [name for name in estimators if means[name].notna().all()]
        keys = rows.drop_duplicates("_cell").set_index("_cell")[["scenario", "split"]]
        left_out = {
            name: _why_missing(
                table,
                name,
                [tuple(keys.loc[cell]) for cell in cells if not np.isfinite(means.at[cell, name])],
                [cell for cell in cells if np.isfinite(means.at[cell, name])],
            )
            for name in estimators
            if name not in complete
        }
        losses = means[complete].apply(metric_registry.info(metric).rank_value)
        groups.append(
            Cells(
                family=str(family),
                metric=str(metric),
                losses=losses,
                means=means[complete],
                scenarios=tuple(str(keys.at[cell, "scenario"]) for cell in cells),
                left_out=left_out,
            )
        )
    return groups


# --- Friedman, Nemenyi, Holm (Demsar 2006) -------------------------------------------------


def nemenyi_q(k: int, alpha: float = ALPHA) -> float:
    """Nemenyi's q_alpha for ``k`` estimators: the studentized range quantile at infinite
    degrees of freedom over sqrt(2) (Demsar 2006, Table 5a).

    Examples
    --------
    >>> round(nemenyi_q(4), 3)
    2.569
    """
    return float(stats.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2))


def rank_standard_error(k: int, n: int) -> float:
    """Standard error of a difference of two mean ranks of ``k`` estimators over ``n``
    cells under the null hypothesis: sqrt(k(k+1) / (6n))."""
    return float(np.sqrt(k * (k + 1) / (6 * n)))


def critical_difference(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi's critical difference of mean ranks: q_alpha sqrt(k(k+1) / (6n)).

    Examples
    --------
    Demsar's (2006) example, four classifiers on 14 data sets:

    >>> round(critical_difference(4, 14), 2)
    1.25
    """
    return nemenyi_q(k, alpha) * rank_standard_error(k, n)


def iman_davenport(statistic: float, n: int, k: int) -> tuple[float, float]:
    """Iman and Davenport's F from Friedman's chi-square, and its p-value on (k - 1,
    (k - 1)(n - 1)) degrees of freedom (less conservative than the chi-square).

    Examples
    --------
    >>> [round(value, 2) for value in iman_davenport(9.28, 14, 4)]
    [3.69, 0.02]
    """
    room = n * (k - 1) - statistic
    if room <= 0:  # every cell ranks the estimators alike: the F is infinite
        return float("inf"), 0.0
    f = (n - 1) * statistic / room
    return float(f), float(stats.f.sf(f, k - 1, (k - 1) * (n - 1)))


@dataclass(frozen=True)
class Friedman:
    """Friedman's test over cells, with its post-hoc comparisons.

    Attributes
    ----------
    statistic, p_value : float
        Friedman's chi-square (corrected for ties) on k - 1 degrees of freedom.
    f_statistic, f_p_value : float
        Iman and Davenport's F and its p-value.
    n_cells, n_estimators : int
    mean_ranks : pandas.Series
        Each estimator's mean rank over cells (1 is best; ties share the average rank),
        best first.
    critical_difference : float
        Nemenyi's critical difference at ``alpha``.
    posthoc : pandas.DataFrame
        Indexed like ``mean_ranks``: ``z`` and the two-sided ``p`` of each estimator
        against the best-ranked one, ``p_holm`` Holm-adjusted over them (NaN for the
        best itself).
    alpha : float
    """

    statistic: float
    p_value: float
    f_statistic: float
    f_p_value: float
    n_cells: int
    n_estimators: int
    mean_ranks: pd.Series
    critical_difference: float
    posthoc: pd.DataFrame
    alpha: float

    @property
    def best(self) -> str:
        """The best-ranked estimator."""
        return str(self.mean_ranks.index[0])

    def sentence(self) -> str:
        """The test's result in one sentence."""
        df1, df2 = self.n_estimators - 1, (self.n_estimators - 1) * (self.n_cells - 1)
        reading = (
            f"the mean ranks differ more than chance would make them at alpha {self.alpha:g}"
            if self.f_p_value < self.alpha
            else f"no evidence at alpha {self.alpha:g} that the mean ranks differ"
        )
        return (
            f"Friedman test over {self.n_cells} cells and {self.n_estimators} estimators: "
            f"chi-square {self.statistic:.3g} on {df1} df, {p_text(self.p_value)}; "
            f"Iman–Davenport F {self.f_statistic:.3g} on ({df1}, {df2}) df, "
            f"{p_text(self.f_p_value)}: {reading}."
        )


def p_value_text(p: float) -> str:
    """A p-value for a table: two significant digits, or below 0.001."""
    if not np.isfinite(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


def p_text(p: float) -> str:
    """A p-value for a sentence: ``p = 0.012``, ``p < 0.001``."""
    text = p_value_text(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def friedman(losses: pd.DataFrame, alpha: float = ALPHA) -> Friedman:
    """Friedman's test of ``losses`` (cells x estimators, smaller is better), with the
    Iman–Davenport F, the Nemenyi critical difference and Holm's post-hoc against the
    best-ranked estimator.

    The statistic is computed from the ranks within each cell (ties get the average
    rank), divided by the usual correction for ties, 1 - sum(t^3 - t) / (n k (k^2 - 1)),
    as ``scipy.stats.friedmanchisquare`` and R's ``friedman.test`` do.

    Raises
    ------
    ValueError
        With fewer than ``MIN_CELLS`` cells or ``MIN_ESTIMATORS`` estimators.
    """
    n, k = losses.shape
    if n < MIN_CELLS or k < MIN_ESTIMATORS:
        raise ValueError(
            f"Friedman's test needs {MIN_CELLS} cells and {MIN_ESTIMATORS} estimators; "
            f"got {n} and {k}"
        )
    ranks = losses.rank(axis=1, method="average")
    rank_sums = ranks.sum(axis=0).to_numpy()
    uncorrected = 12 / (n * k * (k + 1)) * np.sum(rank_sums**2) - 3 * n * (k + 1)
    tied = sum(
        float(np.sum(counts**3 - counts))
        for counts in (np.unique(row, return_counts=True)[1] for row in ranks.to_numpy())
    )
    correction = 1 - tied / (n * k * (k * k - 1))
    # Every cell a complete tie: no ranking at all, nothing against the null.
    statistic = float(uncorrected / correction) if correction > 0 else 0.0
    p_value = float(stats.chi2.sf(statistic, k - 1))
    f_statistic, f_p_value = iman_davenport(statistic, n, k)

    mean_ranks = ranks.mean(axis=0).sort_values(kind="stable")
    best = mean_ranks.index[0]
    z = (mean_ranks - mean_ranks[best]) / rank_standard_error(k, n)
    p = pd.Series(2 * stats.norm.sf(np.abs(z)), index=mean_ranks.index)
    p[best] = np.nan  # the best is not compared with itself
    adjusted, _ = holm(p.to_numpy())
    posthoc = pd.DataFrame({"mean_rank": mean_ranks, "z": z, "p": p, "p_holm": adjusted})
    return Friedman(
        statistic=statistic,
        p_value=p_value,
        f_statistic=f_statistic,
        f_p_value=f_p_value,
        n_cells=n,
        n_estimators=k,
        mean_ranks=mean_ranks,
        critical_difference=critical_difference(k, n, alpha),
        posthoc=posthoc,
        alpha=alpha,
    )


def cliques(mean_ranks: pd.Series, cd: float) -> list[tuple[str, ...]]:
    """Maximal runs of estimators (in rank order) whose mean ranks differ by less than
    the critical difference ``cd``: the thick bars of the diagram.

    Examples
    --------
    >>> cliques(pd.Series({"a": 1.0, "b": 1.5, "c": 2.6, "d": 3.9}), 1.2)
    [('a', 'b'), ('b', 'c')]
    """
    ranks = mean_ranks.sort_values(kind="stable")
    values, names = ranks.to_numpy(), [str(name) for name in ranks.index]
    found: list[tuple[str, ...]] = []
    reach = -1
    for i in range(len(values)):
        j = i
        while j + 1 < len(values) and values[j + 1] - values[i] < cd:
            j += 1
        # A run that ends where the previous one ended lies inside it.
        if j > i and j > reach:
            found.append(tuple(names[i : j + 1]))
            reach = j
    return found


def cd_diagram(mean_ranks: pd.Series, cd: float) -> Figure:
    """Demsar's critical-difference diagram.

    An axis of mean ranks (1, the best, on the left); each estimator's name at the end of
    a leader line from its mean rank, the better half on the left and the worse on the
    right; a thick bar joins each group of estimators whose mean ranks differ by less
    than the critical difference; the critical difference is drawn at the top as an
    interval. Names are plain text (no mathtext).

    Parameters
    ----------
    mean_ranks : pandas.Series
        Estimator -> mean rank.
    cd : float
        The critical difference.

    Returns
    -------
    matplotlib.figure.Figure
    """
    # Names come from user configs: plain text, never mathtext, while the texts are made.
    with matplotlib.rc_context(plots.PLAIN_TEXT):
        return _draw_cd_diagram(mean_ranks.sort_values(kind="stable"), cd)


def _draw_cd_diagram(ranks: pd.Series, cd: float) -> Figure:
    k = len(ranks)
    groups = cliques(ranks, cd)
    left = (k + 1) // 2  # the better half is labelled on the left
    rows = max(left, k - left)
    span = max(k - 1, 1)
    # Vertical layout in row units, downwards: CD interval, axis, bars, then labels.
    axis_y, bar_step, row_step = 0.0, 0.22, 0.42
    first_bar = axis_y + 0.3
    first_row = first_bar + bar_step * len(groups) + 0.35
    bottom = first_row + row_step * (rows - 1) + 0.3
    figure = Figure(figsize=(8.0, 0.9 + 0.45 * bottom), dpi=plots.DPI)
    FigureCanvasAgg(figure)
    axis = figure.add_axes((0.02, 0.02, 0.96, 0.96))
    axis.set_axis_off()
    # Room beside the rank axis for the names (the saved PNG is cropped to what is drawn).
    axis.set_xlim(1 - 0.55 * span, k + 0.55 * span)
    axis.set_ylim(bottom, -1.1)
    ink, font = "#1d2330", 9

    axis.plot([1, k], [axis_y, axis_y], color=ink, linewidth=1)
    for tick in range(1, k + 1):
        axis.plot([tick, tick], [axis_y, axis_y - 0.12], color=ink, linewidth=1)
        axis.text(tick, axis_y - 0.18, str(tick), ha="center", va="bottom", fontsize=font)
    for tick in np.arange(1.5, k, 1.0):
        axis.plot([tick, tick], [axis_y, axis_y - 0.06], color=ink, linewidth=0.7)
    cd_y = axis_y - 0.75
    axis.plot([1, 1 + cd], [cd_y, cd_y], color=ink, linewidth=1.2)
    for end in (1, 1 + cd):
        axis.plot([end, end], [cd_y - 0.07, cd_y + 0.07], color=ink, linewidth=1.2)
    axis.text(1 + cd / 2, cd_y - 0.1, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=font)

    for position, (name, rank) in enumerate(ranks.items()):
        on_left = position < left
        # Leader lines must not cross: the outermost estimators take the top rows.
        row = position if on_left else k - 1 - position
        y = first_row + row_step * row
        end = 1 - 0.12 * span if on_left else k + 0.12 * span
        axis.plot([rank, rank, end], [axis_y, y, y], color=ink, linewidth=0.8)
        axis.text(
            end + (-0.03 if on_left else 0.03) * span,
            y,
            f"{name} ({rank:.2f})",
            ha="right" if on_left else "left",
            va="center",
            fontsize=font,
        )
    for number, group in enumerate(groups):
        y = first_bar + bar_step * number
        low, high = ranks[list(group)].min(), ranks[list(group)].max()
        axis.plot(
            [low - 0.03 * span, high + 0.03 * span],
            [y, y],
            color=ink,
            linewidth=4,
            solid_capstyle="butt",
        )
    return figure


def cd_figure(mean_ranks: pd.Series, cd: float) -> str:
    """:func:`cd_diagram` as a base64 PNG."""
    return plots.png(cd_diagram(mean_ranks, cd))


# --- Bayesian signed-rank test (Benavoli et al. 2017) --------------------------------------


def relative_differences(cells: Cells, a: str, b: str) -> pd.Series:
    """Per cell, how much better ``a`` is than ``b`` in % of ``b``'s mean (positive:
    ``a`` better); cells where ``b``'s mean is 0 are left out (no scale)."""
    scale = cells.means[b].abs().replace(0.0, np.nan)
    return (100 * (cells.losses[b] - cells.losses[a]) / scale).dropna()


def signed_rank(
    differences: np.ndarray | pd.Series,
    rope: float,
    *,
    seed: int = SEED,
    samples: int = SAMPLES,
) -> tuple[float, float, float]:
    """Bayesian signed-rank test of differences against a region of practical
    equivalence.

    The differences get a Dirichlet-process posterior with a pseudo-observation at 0 of
    strength ``PRIOR_STRENGTH``; each posterior sample gives the probability that the
    mean of two differences lies below -rope, inside, or above rope, and a sample
    votes for the largest of the three (Benavoli et al. 2017, section 5; computed by
    ``baycomp.SignedRankTest``).

    Parameters
    ----------
    differences : array of float
        One difference per cell, positive when the first estimator is better.
    rope : float
        Half-width of the region of practical equivalence, in the differences' unit.
    seed, samples : int
        Random seed and number of posterior samples.

    Returns
    -------
    (float, float, float)
        P(first better), P(equivalent), P(second better); they sum to 1. With ``rope``
        0 there is no region of equivalence and its probability is 0.
    """
    differences = np.asarray(differences, dtype=float)
    posterior = baycomp.SignedRankTest(
        np.zeros_like(differences),
        differences,  # baycomp reads y - x: positive values vote "right"
        rope,
        prior=PRIOR_STRENGTH,
        nsamples=samples,
        random_state=seed,
    )
    if rope > 0:
        second, equivalent, first = posterior.probs(with_rope=True)
    else:
        (second, first), equivalent = posterior.probs(with_rope=False), 0.0
    return float(first), float(equivalent), float(second)


@dataclass(frozen=True)
class Pair:
    """The best-ranked estimator ``a`` against ``b`` over the cells.

    Attributes
    ----------
    a, b : str
    rope : float
        The practical margin in %.
    better, equivalent, worse : float
        Posterior P(a better than b by more than the margin), P(within the margin),
        P(b better).
    differences : pandas.Series
        Per cell, a's improvement over b in % of b's mean.
    """

    a: str
    b: str
    rope: float
    better: float
    equivalent: float
    worse: float
    differences: pd.Series

    @property
    def reversals(self) -> pd.Series:
        """The cells where b's mean is better than a's, largest reversal first."""
        return self.differences[self.differences < 0].sort_values()


def best_against_each(
    cells: Cells, best: str, margin_percent: float, *, seed: int = SEED
) -> list[Pair]:
    """:func:`signed_rank` of ``best`` against each other estimator of ``cells``, on
    relative differences in %, with the margin (in %) as the region of equivalence."""
    pairs = []
    for other in cells.losses.columns:
        if other == best:
            continue
        differences = relative_differences(cells, best, other)
        if len(differences) < MIN_CELLS:
            continue
        better, equivalent, worse = signed_rank(differences, margin_percent, seed=seed)
        pairs.append(Pair(best, str(other), margin_percent, better, equivalent, worse, differences))
    return pairs


# --- the report's section ------------------------------------------------------------------


def _probability(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{value:.2f}"


def across_sections(
    table: pd.DataFrame,
    board: pd.DataFrame,
    primary: Mapping[str, str],
    config: Config,
    alpha: float = ALPHA,
) -> list[dict[str, Any]]:
    """The report's "Across scenarios" section, one entry per outcome family group.

    Parameters
    ----------
    table : pandas.DataFrame
        The results table (families, and why an estimator misses a cell).
    board : pandas.DataFrame
        The leaderboard.
    primary : mapping of str to str
        Scenario -> ranking metric.
    config : Config
        Gives the practical margin of each metric (the Bayesian test's region of
        equivalence).
    alpha : float
        Level of the Friedman test and the critical difference.

    Returns
    -------
    list of dict
        For the template: the group's family, metric, cells, estimators left out, mean
        ranks with Holm-adjusted p against the best, the Friedman sentence, the CD
        diagram, and the best against each other estimator.
    """
    sections = []
    for cells in cell_matrices(board, primary, table):
        n, k = cells.losses.shape
        repeated = pd.Series(cells.scenarios).value_counts(sort=False)
        section: dict[str, Any] = {
            "family": cells.family,
            "metric": cells.metric,
            "direction": plots.direction(cells.metric),
            "n_cells": n,
            "n_estimators": k,
            "cells": list(cells.losses.index),
            "shared": [f"{name} ({count} cells)" for name, count in repeated.items() if count > 1],
            "left_out": [f"{name}: {why}" for name, why in cells.left_out.items()],
            "margin": format_percent(100 * config.margin(cells.metric)),
            "alpha": f"{alpha:g}",
            "samples": f"{SAMPLES:,}",
            "applies": n >= MIN_CELLS and k >= MIN_ESTIMATORS,
            "ranks": [],
            "friedman": "",
            "cd": "",
            "figure": None,
            "pairs": [],
        }
        if n == 0 or k < 2:
            sections.append(section)
            continue
        if section["applies"]:
            test = friedman(cells.losses, alpha)
            posthoc = test.posthoc
            section |= {
                "friedman": test.sentence(),
                "cd": f"{test.critical_difference:.2f}",
                "figure": cd_figure(test.mean_ranks, test.critical_difference),
            }
        else:
            ranks = cells.losses.rank(axis=1, method="average").mean(axis=0)
            posthoc = pd.DataFrame(
                {"mean_rank": ranks.sort_values(kind="stable"), "p_holm": np.nan}
            )
        best = str(posthoc.index[0])
        section["ranks"] = [
            {
                "estimator": name,
                "mean_rank": f"{row.mean_rank:.2f}",
                "p_holm": "best" if name == best else p_value_text(row.p_holm),
                "best": name == best,
            }
            for name, row in posthoc.iterrows()
        ]
        if n >= MIN_CELLS:
            margin = 100 * config.margin(cells.metric)
            section["pairs"] = [
                {
                    "a": pair.a,
                    "b": pair.b,
                    "better": _probability(pair.better),
                    "equivalent": _probability(pair.equivalent),
                    "worse": _probability(pair.worse),
                    "mean": format_percent(float(pair.differences.mean()), signed=True),
                    "reversals": ", ".join(
                        f"{cell} (by {format_percent(-value)})"
                        for cell, value in pair.reversals.items()
                    ),
                }
                for pair in best_against_each(cells, best, margin)
            ]
        sections.append(section)
    return sections
