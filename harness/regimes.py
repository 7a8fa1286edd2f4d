"""The map of regimes: per scenario and split scheme, which model wins on the scenario's
primary metric and by how much, and where each winner loses.

A model that wins one regime and loses another is the point of a study of regimes, so
the map is computed per (scenario, split) and never averaged across them. Every lead is
a paired comparison on identical folds with its Nadeau-Bengio corrected interval
(``findings.compare``), read against the practical margin: a model "wins" only where
its lead's interval lies beyond the margin, and "loses" only where the cell's winner is
ahead of it beyond noise. The report adjusts these comparisons, with its findings, as
one family (``findings.adjust``) before reading them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from harness import metrics as metric_registry
from harness.findings import Comparison, compare, format_percent


@dataclass(frozen=True)
class Cell:
    """One (scenario, split) of the map: its winner and the runner-up."""

    scenario: str
    split: str
    family: str
    metric: str
    winner: str
    runner_up: str | None
    lead: Comparison | None  # the winner against the runner-up
    winner_fit_seconds: float
    ranking: tuple[str, ...]  # every model, best mean first

    @property
    def verdict(self) -> str:
        """How the lead reads against the margin (``harness.equivalence``)."""
        return self.lead.verdict if self.lead is not None else "inconclusive"

    @property
    def clear(self) -> bool:
        """Whether the winner is ahead beyond the practical margin."""
        return self.verdict == "better"

    def lead_text(self) -> str:
        """The lead over the runner-up in words, with its interval and verdict."""
        if self.lead is None:
            return "no runner-up"
        if not np.isfinite(self.lead.low):
            return f"{format_percent(self.lead.percent)} (too few folds for an interval)"
        reading = {
            "better": "",
            "small better": "; small: may be inside the margin",
            "equivalent": "; equivalent: inside the margin",
        }.get(self.verdict, "; not distinguishable")
        return f"{format_percent(self.lead.percent)} ({self.lead.interval_text()}{reading})"


@dataclass(frozen=True)
class Loss:
    """A model beaten, with an interval that excludes zero, where it won elsewhere."""

    model: str
    scenario: str
    split: str
    by: Comparison  # the cell's winner against the model


def _means(board: pd.DataFrame, metric: str) -> pd.Series:
    """Board rows' mean on ``metric`` ordered so that smaller is better."""
    return metric_registry.info(metric).rank_value(board[metric].astype(float))


def _no_margin(metric: str) -> float:
    return 0.0


def regime_map(
    table: pd.DataFrame,
    board: pd.DataFrame,
    primary: Mapping[str, str],
    margin: Callable[[str], float] = _no_margin,
) -> list[Cell]:
    """The winner of every (scenario, split) of the leaderboard ``board``.

    Parameters
    ----------
    table : pandas.DataFrame
        The result rows the board was computed from.
    board : pandas.DataFrame
        The leaderboard (``compare.leaderboard``), in reading order.
    primary : mapping
        Scenario label -> the metric that ranks its models.
    margin : callable
        Metric -> its practical margin in %.
    """
    ok = table[table["status"] == "ok"]
    cells = []
    for (scenario, split), rows in board.groupby(["scenario", "split"], sort=False):
        metric = primary.get(str(scenario))
        if metric is None or metric not in rows or rows[metric].isna().all():
            continue
        rows = rows.assign(_loss=_means(rows, metric)).dropna(subset=["_loss"])
        rows = rows.sort_values("_loss", kind="stable")
        ranking = tuple(rows["estimator"].astype(str))
        winner, runner_up = ranking[0], (ranking[1] if len(ranking) > 1 else None)
        results = ok[(ok["scenario"] == scenario) & (ok["split"] == split)]
        lead = compare(results, winner, runner_up, metric, margin(metric)) if runner_up else None
        family = results["family"].iloc[0] if "family" in results and len(results) else ""
        cells.append(
            Cell(
                scenario=str(scenario),
                split=str(split),
                family=str(family) if isinstance(family, str) else "",
                metric=metric,
                winner=winner,
                runner_up=runner_up,
                lead=lead,
                winner_fit_seconds=float(rows["fit_seconds"].iloc[0])
                if "fit_seconds" in rows
                else float("nan"),
                ranking=ranking,
            )
        )
    return cells


def losses(
    table: pd.DataFrame, cells: list[Cell], margin: Callable[[str], float] = _no_margin
) -> list[Loss]:
    """Every model that wins at least one cell, compared with the winner of each other
    cell it ran in: the candidates for "it loses there". Which of them are losses is
    read after the family's adjustment (:func:`summary_sentences`)."""
    ok = table[table["status"] == "ok"]
    winners = list(dict.fromkeys(cell.winner for cell in cells))
    found = []
    for cell in cells:
        results = ok[(ok["scenario"] == cell.scenario) & (ok["split"] == cell.split)]
        for model in winners:
            if model == cell.winner or model not in cell.ranking:
                continue
            by = compare(results, cell.winner, model, cell.metric, margin(cell.metric))
            if by is not None:
                found.append(Loss(model, cell.scenario, cell.split, by))
    return found


def comparisons_of(cells: list[Cell], lost: list[Loss]) -> list[Comparison]:
    """The comparisons of ``cells`` and ``lost`` in the order :func:`with_comparisons`
    expects."""
    return [c.lead for c in cells if c.lead is not None] + [loss.by for loss in lost]


def with_comparisons(
    cells: list[Cell], lost: list[Loss], comparisons: list[Comparison]
) -> tuple[list[Cell], list[Loss]]:
    """``cells`` and ``lost`` with their comparisons replaced, in the order of
    :func:`comparisons_of` (e.g. by their family-adjusted versions)."""
    remaining = iter(comparisons)
    cells = [replace(c, lead=next(remaining)) if c.lead is not None else c for c in cells]
    lost = [replace(loss, by=next(remaining)) for loss in lost]
    return cells, lost


def summary_sentences(cells: list[Cell], lost: list[Loss]) -> list[str]:
    """One sentence per winning model: where it wins (beyond the margin), where it is
    first by less, and where it loses (the cell's winner ahead beyond noise; "small"
    when that may be inside the margin)."""
    sentences = []
    for model in dict.fromkeys(cell.winner for cell in cells):
        won = [cell for cell in cells if cell.winner == model]
        clear = [f"{c.scenario} · {c.split}" for c in won if c.clear]
        close = [f"{c.scenario} · {c.split}" for c in won if not c.clear]
        parts = []
        if clear:
            parts.append(f"wins beyond the margin in {', '.join(clear)}")
        if close:
            parts.append(f"is first, but not by a margin that counts, in {', '.join(close)}")
        sentence = f"{model} " + "; ".join(parts)
        model_losses = [
            loss
            for loss in lost
            if loss.model == model and loss.by.verdict in ("better", "small better")
        ]
        if model_losses:
            where = ", ".join(
                f"{loss.scenario} · {loss.split} ({loss.by.a} better by "
                f"{format_percent(loss.by.percent)}"
                f"{', a small difference' if loss.by.verdict == 'small better' else ''}, "
                f"{loss.by.interval_text()})"
                for loss in model_losses
            )
            sentence += f"; it loses in {where}."
        else:
            sentence += "; it is not beaten beyond noise in any regime where it ran."
        sentences.append(sentence)
    return sentences
