"""Cross-validation schemes: each yields train/test row indices for a Dataset.

- ``random``: K folds over rows.
- ``seen_units``: within-unit split; every held-out row's unit keeps training rows,
  so the score measures how well a model predicts known units (shrinkage of BLUPs).
- ``unseen_units``: folds of whole units; no held-out unit appears in training, so
  the score measures cold-start prediction.

Every fold also carries, per test row, the number of training rows of its unit, so
error can be shown as a function of unit activity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulators import Dataset

SCHEMES: tuple[str, ...] = ("random", "seen_units", "unseen_units")


@dataclass(frozen=True)
class Fold:
    """One train/test partition of a data set's rows.

    Attributes
    ----------
    train, test : numpy.ndarray
        Row positions, sorted.
    unit_train_rows : numpy.ndarray
        For each test row, how many training rows its unit (of the split's factor) has;
        zero for an unseen unit. For ``random`` it refers to the data set's first group.
    """

    train: np.ndarray
    test: np.ndarray
    unit_train_rows: np.ndarray


def make_folds(dataset: Dataset, scheme: str, folds: int, by: str | None, seed: int) -> list[Fold]:
    """Split ``dataset`` by ``scheme`` into ``folds`` folds.

    Parameters
    ----------
    dataset : Dataset
    scheme : {"random", "seen_units", "unseen_units"}
    folds : int
        Number of folds, at least 2.
    by : str or None
        Grouping factor the unit schemes split by; default the data set's first group.
    seed : int
        Seed of the shuffling; the same seed gives the same folds.

    Returns
    -------
    list of Fold

    Raises
    ------
    ValueError
        For an unknown scheme, a ``by`` that is not a grouping factor of the data, or
        too few units (or rows) for the number of folds.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"split scheme: expected one of {SCHEMES}, got {scheme!r}")
    if folds < 2:
        raise ValueError(f"folds: expected at least 2, got {folds}")
    factor = by if by is not None else (dataset.groups[0] if dataset.groups else None)
    if factor is not None and factor not in dataset.groups:
        raise ValueError(
            f"by: {factor!r} is not a grouping factor of {dataset.meta.get('name', 'the data')}; "
            f"its groups are {list(dataset.groups)}"
        )
    if scheme != "random" and factor is None:
        raise ValueError(f"{scheme}: the data set has no grouping factor to split by")
    rng = np.random.default_rng(seed)
    units = (
        pd.factorize(dataset.frame[factor])[0]
        if factor is not None
        else np.zeros(dataset.n_rows, dtype=np.int64)
    )
    if scheme == "random":
        assignment = _random_rows(dataset.n_rows, folds, rng)
    elif scheme == "seen_units":
        assignment = _within_units(units, folds, rng)
    else:
        assignment = _whole_units(units, folds, rng)
    result = []
    for fold in range(folds):
        test_mask = assignment == fold
        train_units = np.bincount(units[~test_mask], minlength=units.max() + 1)
        result.append(
            Fold(
                train=np.flatnonzero(~test_mask),
                test=np.flatnonzero(test_mask),
                unit_train_rows=train_units[units[test_mask]],
            )
        )
    return result


def _random_rows(n_rows: int, folds: int, rng: np.random.Generator) -> np.ndarray:
    if n_rows < folds:
        raise ValueError(f"random: {n_rows} rows cannot fill {folds} folds")
    return rng.permutation(np.arange(n_rows) % folds)


def _within_units(units: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Deal each unit's rows round-robin over the folds from a random starting fold.

    A unit with n >= 2 rows holds out at most ceil(n / folds) < n rows in any fold, so
    it always keeps training rows; a unit with one row is never held out.
    """
    order = rng.permutation(units.size)
    shuffled_units = units[order]
    # Rank of each row within its unit, in the shuffled order.
    sort = np.argsort(shuffled_units, kind="stable")
    sorted_units = shuffled_units[sort]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_units)) + 1]
    counts = np.diff(np.r_[starts, sorted_units.size])
    rank = np.arange(sorted_units.size) - np.repeat(starts, counts)
    offset = rng.integers(0, folds, size=units.max() + 1)
    fold_sorted = (rank + offset[sorted_units]) % folds
    fold_sorted[np.repeat(counts, counts) < 2] = -1
    assignment = np.empty(units.size, dtype=np.int64)
    assignment[order[sort]] = fold_sorted
    if not np.isin(np.arange(folds), assignment).all():
        raise ValueError(f"seen_units: too few units with two or more rows to fill {folds} folds")
    return assignment


def _whole_units(units: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Assign whole units to folds, balancing rows: units in random order, each to the
    fold with the fewest rows so far (GroupKFold's rule, with shuffling)."""
    n_units = units.max() + 1
    if n_units < folds:
        raise ValueError(f"unseen_units: {n_units} units cannot fill {folds} folds")
    sizes = np.bincount(units)
    order = rng.permutation(n_units)
    # Largest first keeps folds balanced; ties broken by the random order.
    order = order[np.argsort(-sizes[order], kind="stable")]
    unit_fold = np.empty(n_units, dtype=np.int64)
    fold_rows = np.zeros(folds, dtype=np.int64)
    for unit in order:
        target = int(np.argmin(fold_rows))
        unit_fold[unit] = target
        fold_rows[target] += sizes[unit]
    return unit_fold[units]


def check_no_leakage(dataset: Dataset, scheme: str, by: str | None, fold: Fold) -> None:
    """Raise if a fold breaks its scheme's promise (run on every fold the harness uses)."""
    if np.intersect1d(fold.train, fold.test).size:
        raise RuntimeError(f"{scheme}: a row is in both training and test")
    factor = by if by is not None else (dataset.groups[0] if dataset.groups else None)
    if scheme == "random" or factor is None:
        return
    column = dataset.frame[factor].to_numpy()
    train_units = pd.unique(column[fold.train])
    test_units = pd.unique(column[fold.test])
    shared = np.isin(test_units, train_units)
    if scheme == "unseen_units" and shared.any():
        raise RuntimeError(
            f"unseen_units: {int(shared.sum())} test unit(s) of {factor!r} in training"
        )
    if scheme == "seen_units" and not shared.all():
        raise RuntimeError(
            f"seen_units: {int((~shared).sum())} test unit(s) of {factor!r} not in training"
        )
