"""Choosing the penalty of a penalised logistic regression by cross-validation, as R's
``cv.glmnet`` does, with the two choices that decide the outcome as named policies.

- The unit of the folds (``cv_unit``). ``"row"``: single rows (impressions), stratified
  by outcome. ``"cell"``: the rows that share every covariate (a user x display pair
  of a click-through table) go to one fold together, which is what cv.glmnet's folds
  hold out when it is given the aggregated table (one row per cell, the response as
  failure and success counts): holding out a cell can remove a user from training
  altogether, so the held-out deviance rewards shrinking users towards the population.
- The rule (``cv_rule``). ``"min"``: the penalty with the smallest mean held-out
  deviance (glmnet's ``lambda.min``). ``"1se"``: the largest penalty whose mean is
  within one standard error of that minimum (``lambda.1se``, what ``predict`` on a
  cv.glmnet fit uses unless told otherwise).

As in glmnet, every fold is fitted at the whole data's penalties (lambda, not C), its
standardised columns scaled to unit variance on its own training rows. The held-out
deviance and its standard error are glmnet's: per fold, the mean deviance
per row (per trial of a cell), probabilities clipped to [1e-5, 1 - 1e-5], relative to
the saturated model of the unit (0 for a 0/1 row, the cell's own proportion for a cell);
over folds, their mean weighted by held-out rows, and the standard error
``sqrt(sum_k n_k (e_k - mean)^2 / sum_k n_k / (K - 1))``.

Identical rows are merged into weighted patterns first (a (design row, outcome) pair and
how many rows it stands for): a pattern of weight w has the likelihood of its w rows, so
every fit is the fit to the rows, and a fit sees at most two patterns per cell whatever
the unit of the folds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.model_selection import StratifiedKFold
from sklearn.utils import check_random_state

CV_UNITS: tuple[str, ...] = ("row", "cell")
CV_RULES: tuple[str, ...] = ("min", "1se")
TIE_TOLERANCE = 1e-9  # relative: mean deviances closer than this are one minimum
# glmnet clips held-out probabilities before taking logs (cv.lognet's prob_min).
PROBABILITY_FLOOR = 1e-5


@dataclass(frozen=True)
class MergedRows:
    """Training rows merged into weighted patterns.

    Attributes
    ----------
    design : scipy.sparse.csr_matrix
        One row per distinct (design row, outcome).
    target : numpy.ndarray
        The pattern's outcome, 0 or 1.
    count : numpy.ndarray
        How many training rows the pattern stands for (their total weight when rows
        are weighted).
    cell : numpy.ndarray
        The pattern's cell, 0..C-1: patterns with the same design row share one.
    row_pattern : numpy.ndarray
        The pattern of each training row.
    row_weight : numpy.ndarray or None
        The weight of each training row; None when every row counts once.
    """

    design: sp.csr_matrix
    target: np.ndarray
    count: np.ndarray
    cell: np.ndarray
    row_pattern: np.ndarray
    row_weight: np.ndarray | None = None

    @property
    def n_rows(self) -> float:
        """The number of training rows, or their total weight when rows are weighted."""
        return float(self.count.sum())


def merge_rows(
    design: sp.csr_matrix, target: np.ndarray, weight: np.ndarray | None = None
) -> MergedRows:
    """Merge identical rows of ``design`` with the same outcome into weighted patterns;
    a pattern's count is its rows' total ``weight`` (default: one per row)."""
    design = sp.csr_matrix(design, copy=True)
    design.sum_duplicates()
    design.eliminate_zeros()
    design.sort_indices()
    indptr, indices, data = design.indptr, design.indices, design.data
    keys = pd.Series(
        [
            indices[a:b].tobytes() + data[a:b].tobytes()
            for a, b in zip(indptr[:-1], indptr[1:], strict=True)
        ],
        dtype=object,
    )
    cell_of_row = pd.factorize(keys)[0]
    pattern_of_row = pd.factorize(2 * cell_of_row + target.astype(np.int64))[0]
    _, first = np.unique(pattern_of_row, return_index=True)
    return MergedRows(
        design=design[first],
        target=np.asarray(target, dtype=float)[first],
        count=np.bincount(pattern_of_row, weights=weight).astype(float),
        cell=pd.factorize(cell_of_row[first])[0],
        row_pattern=pattern_of_row,
        row_weight=None if weight is None else np.asarray(weight, dtype=float),
    )


def fold_weights(
    rows: MergedRows, unit: str, n_folds: int, random_state: Any
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each fold's training and held-out weight of every pattern.

    ``unit="row"`` splits the rows, stratified by outcome (scikit-learn's
    ``StratifiedKFold``); ``unit="cell"`` deals the cells into folds at random with sizes
    as equal as can be, as cv.glmnet's ``foldid = sample(rep(1:K, length = N))``.
    """
    n_patterns = rows.count.size
    if unit == "row":
        target = rows.target[rows.row_pattern]
        splitter = StratifiedKFold(n_folds, shuffle=True, random_state=random_state)
        weight = rows.row_weight

        def share(part: np.ndarray) -> np.ndarray:
            part_weight = None if weight is None else weight[part]
            pattern = rows.row_pattern[part]
            return np.bincount(pattern, weights=part_weight, minlength=n_patterns).astype(float)

        return [
            (share(train), share(test))
            for train, test in splitter.split(np.zeros(target.size), target)
        ]
    n_cells = int(rows.cell.max()) + 1
    if n_cells < n_folds:
        raise ValueError(
            f"cv: {n_folds} folds need at least as many cells (distinct rows of the "
            f"covariates); the data have {n_cells}"
        )
    fold_of_cell = check_random_state(random_state).permutation(np.arange(n_cells) % n_folds)
    fold = fold_of_cell[rows.cell]
    return [
        (np.where(fold != k, rows.count, 0.0), np.where(fold == k, rows.count, 0.0))
        for k in range(n_folds)
    ]


def _saturated_deviance(rows: MergedRows, weight: np.ndarray) -> float:
    """Minus the deviance of the saturated model of the held-out cells (each cell's own
    proportion): what glmnet adds to the held-out deviance of a cell table."""
    held = weight > 0
    clicks = np.bincount(rows.cell[held], weights=(weight * rows.target)[held])
    trials = np.bincount(rows.cell[held], weights=weight[held])
    seen = trials > 0
    share = clicks[seen] / trials[seen]
    with np.errstate(divide="ignore", invalid="ignore"):
        loglik = np.where(share > 0, clicks[seen] * np.log(share), 0.0) + np.where(
            share < 1, (trials[seen] - clicks[seen]) * np.log1p(-share), 0.0
        )
    return float(2 * loglik.sum())


def held_out_deviance(probability: np.ndarray, target: np.ndarray, weight: np.ndarray) -> float:
    """Binomial deviance of weighted 0/1 outcomes, probabilities clipped as glmnet does."""
    p = np.clip(probability, PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    return float(-2 * np.sum(weight * np.where(target == 1, np.log(p), np.log1p(-p))))


@dataclass(frozen=True)
class CVCurve:
    """Mean held-out deviance per row and its standard error at each inverse penalty
    ``C`` (ascending: the largest penalty first); NaN where the grid was not tried."""

    C: np.ndarray
    deviance: np.ndarray
    standard_error: np.ndarray


def weighted_spread(design: sp.csr_matrix, weight: np.ndarray) -> np.ndarray:
    """Each column's standard deviation over the rows of ``design`` weighted by
    ``weight`` (glmnet's: the weights normalised to sum to 1)."""
    share = weight / weight.sum()
    mean = design.T @ share
    square = design.multiply(design).T @ share
    return np.sqrt(np.maximum(square - mean**2, 0.0))


def cross_validate(
    grid: np.ndarray,
    fit: Callable[[float, sp.csr_matrix, np.ndarray, Any], Any],
    rows: MergedRows,
    folds: list[tuple[np.ndarray, np.ndarray]],
    unit: str,
    patience: int | None,
    standardized: np.ndarray | None = None,
) -> CVCurve:
    """The held-out deviance curve over ``grid`` (ascending ``C`` of the whole data).

    ``fit(C, design, weight, previous)`` returns a model fitted at inverse penalty ``C``
    (the grid's, rescaled to the fold's rows so that its lambda is the grid's) to the
    patterns of ``design`` with training weight ``weight`` (``previous`` is the same
    fold's model at the last ``C``, for a warm start, or None); its ``predict_proba`` is
    read on the held-out patterns. The columns marked in ``standardized`` are scaled to
    unit variance on each fold's training rows, as glmnet standardises every fit anew.
    ``patience`` stops going down the grid once the mean has not improved on its
    minimum for that many penalties in a row, the minimum being below the first
    penalty's mean (None tries the whole grid).
    """
    for k, (train, _) in enumerate(folds):
        outcomes = np.unique(rows.target[train > 0])
        if outcomes.size < 2:
            raise ValueError(
                f"cv: fold {k + 1} leaves only outcome {outcomes[0]:g} in training; use fewer folds"
            )
    held = np.array([test.sum() for _, test in folds])
    saturated = np.array(
        [_saturated_deviance(rows, test) if unit == "cell" else 0.0 for _, test in folds]
    )
    marked = np.zeros(rows.design.shape[1], bool) if standardized is None else standardized
    designs = []
    for train, _ in folds:
        spread = weighted_spread(rows.design, train)
        factor = np.where(marked & (spread > 0), 1 / np.where(spread > 0, spread, 1), 1.0)
        designs.append(sp.csr_matrix(rows.design @ sp.diags(factor)))
    per_fold = np.full((grid.size, len(folds)), np.nan)
    models: list[Any] = [None] * len(folds)
    for i, C in enumerate(grid):  # noqa: N806 - scikit-learn's name
        for k, (train, test) in enumerate(folds):
            # glmnet fits every fold at the whole data's lambda = 1 / (n C), which on the
            # fold's rows is C * n / n_fold.
            models[k] = fit(float(C) * rows.n_rows / train.sum(), designs[k], train, models[k])
            keep = test > 0
            probability = models[k].predict_proba(designs[k][keep])[:, 1]
            deviance = held_out_deviance(probability, rows.target[keep], test[keep])
            per_fold[i, k] = (deviance + saturated[k]) / held[k]
        mean = per_fold[: i + 1] @ held / held.sum()
        best = int(np.argmin(mean))
        # Small penalties cost the most; stop once they have kept doing worse than a
        # minimum the curve came down to (not on the flat start, where every
        # coefficient is still 0).
        if patience is not None and best > 0 and i - best >= patience:
            break
    mean = per_fold @ held / held.sum()
    spread = ((per_fold - mean[:, None]) ** 2) @ held / held.sum()
    return CVCurve(grid, mean, np.sqrt(spread / (len(folds) - 1)))


def choose_penalty(deviance: np.ndarray, standard_error: np.ndarray, rule: str) -> int:
    """Index of the chosen penalty on a grid ordered from the largest penalty down.

    ``"min"``: the smallest mean deviance, ties (equal to a relative ``TIE_TOLERANCE``)
    to the largest penalty (glmnet's ``lambda.min``). ``"1se"``: the largest penalty
    whose mean deviance is at most the minimum's mean plus the minimum's standard error
    (``lambda.1se``). Untried penalties (NaN) are skipped.

    Examples
    --------
    >>> import numpy as np
    >>> deviance = np.array([0.30, 0.24, 0.21, 0.20, 0.22])
    >>> standard_error = np.array([0.01, 0.01, 0.01, 0.02, 0.02])
    >>> choose_penalty(deviance, standard_error, "min"), choose_penalty(
    ...     deviance, standard_error, "1se")
    (3, 2)
    """
    if rule not in CV_RULES:
        raise ValueError(f"cv_rule: expected one of {', '.join(CV_RULES)}, got {rule!r}")
    tried = np.isfinite(deviance)
    # Means equal up to rounding are ties: warm-started fits stop at once where the curve
    # is flat, and the last digits then depend on the order of floating-point sums.
    lowest = np.nanmin(deviance)
    best = int(np.flatnonzero(tried & (deviance <= lowest + TIE_TOLERANCE * abs(lowest)))[0])
    if rule == "min":
        return best
    within = tried & (deviance <= deviance[best] + standard_error[best])
    return int(np.flatnonzero(within)[0])
