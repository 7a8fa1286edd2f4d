"""The map of regimes: per scenario and split scheme, which model wins on the scenario's
primary metric and by how much, and where each winner loses.

A model that wins one regime and loses another is the point of a study of regimes, so
the map is computed per (scenario, split) and never averaged across them. Every lead is
a paired comparison on identical folds with its 95% Nadeau-Bengio corrected interval
(``findings.compare``): a lead whose interval covers zero is reported as not
distinguishable from the runner-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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
    def clear(self) -> bool:
        """Whether the lead's interval excludes zero."""
        return self.lead is not None and np.isfinite(self.lead.low) and self.lead.low > 0

    def lead_text(self) -> str:
        """The lead over the runner-up in words, with its interval."""
        if self.lead is None:
            return "no runner-up"
        if not np.isfinite(self.lead.low):
            return f"{format_percent(self.lead.percent)} (too few folds for an interval)"
        verdict = "" if self.clear else "; not distinguishable"
        return f"{format_percent(self.lead.percent)} ({self.lead.interval_text()}{verdict})"


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


def regime_map(table: pd.DataFrame, board: pd.DataFrame, primary: Mapping[str, str]) -> list[Cell]:
    """The winner of every (scenario, split) of the leaderboard ``board``.

    Parameters
    ----------
    table : pandas.DataFrame
        The result rows the board was computed from.
    board : pandas.DataFrame
        The leaderboard (``compare.leaderboard``), in reading order.
    primary : mapping
        Scenario label -> the metric that ranks its models.
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
        lead = compare(results, winner, runner_up, metric) if runner_up else None
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


def losses(table: pd.DataFrame, cells: list[Cell]) -> dict[str, list[Loss]]:
    """For every model that wins at least one cell, the cells where the winner beats it
    with an interval that excludes zero (where it loses though it won elsewhere)."""
    ok = table[table["status"] == "ok"]
    winners = list(dict.fromkeys(cell.winner for cell in cells))
    found: dict[str, list[Loss]] = {model: [] for model in winners}
    for cell in cells:
        results = ok[(ok["scenario"] == cell.scenario) & (ok["split"] == cell.split)]
        for model in winners:
            if model == cell.winner or model not in cell.ranking:
                continue
            by = compare(results, cell.winner, model, cell.metric)
            if by is not None and np.isfinite(by.low) and by.low > 0:
                found[model].append(Loss(model, cell.scenario, cell.split, by))
    return found


def summary_sentences(cells: list[Cell], lost: dict[str, list[Loss]]) -> list[str]:
    """One sentence per winning model: where it wins, and where it loses (and to what)."""
    sentences = []
    for model, model_losses in lost.items():
        won = [cell for cell in cells if cell.winner == model]
        clear = [f"{c.scenario} · {c.split}" for c in won if c.clear]
        close = [f"{c.scenario} · {c.split}" for c in won if not c.clear]
        parts = []
        if clear:
            parts.append(f"wins clearly in {', '.join(clear)}")
        if close:
            parts.append(f"leads, within noise of the runner-up, in {', '.join(close)}")
        sentence = f"{model} " + "; ".join(parts)
        if model_losses:
            where = ", ".join(
                f"{loss.scenario} · {loss.split} ({loss.by.a} better by "
                f"{format_percent(loss.by.percent)}, {loss.by.interval_text()})"
                for loss in model_losses
            )
            sentence += f"; it loses in {where}."
        else:
            sentence += "; it is not clearly beaten in any regime where it ran."
        sentences.append(sentence)
    return sentences
