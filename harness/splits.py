"""Cross-validation schemes: each yields train/test row indices for a Dataset.

- ``random``: K folds over rows.
- ``seen_units``: within-unit split; every held-out row's unit keeps training rows,
  so the score measures how well a model predicts known units (shrinkage of BLUPs).
- ``unseen_units``: folds of whole units; no held-out unit appears in training, so
  the score measures cold-start prediction.
- ``temporal``: train on rows before a cut time, test on rows at or after the cut plus
  an optional gap; several cuts give several folds (rolling origin). Online services
  predict the future, and this is the only scheme that respects time.
- ``fresh_draw``: fit on the whole data set, test on ``draws`` new draws of the same
  units with the same true effects (simulators that support it); the runner makes the
  draws, this module only checks the scheme applies.

Every fold also carries, per test row, the number of training rows of its unit, so
error can be shown as a function of unit activity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulators import Dataset

SCHEMES: tuple[str, ...] = ("random", "seen_units", "unseen_units", "temporal", "fresh_draw")


class SplitError(ValueError):
    """A split that cannot be made on the data; ``option`` names the split's option at
    fault (``by``, ``folds``, ``scheme``, ``cut``), so a config check can name its field."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


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


def make_folds(
    dataset: Dataset,
    scheme: str,
    folds: int,
    by: str | None,
    seed: int,
    *,
    shuffle: bool = True,
    cut: Sequence[float] = (0.8,),
    gap: float = 0.0,
) -> list[Fold]:
    """Split ``dataset`` by ``scheme`` into ``folds`` folds.

    Parameters
    ----------
    dataset : Dataset
    scheme : {"random", "seen_units", "unseen_units", "temporal"}
        ``fresh_draw`` is not a split of the data set's rows; see :func:`fresh_draw_fold`.
    folds : int
        Number of folds, at least 2 (``temporal``: ignored, one fold per cut).
    by : str or None
        Grouping factor the unit schemes split by (and ``temporal`` counts training
        rows by); default the data set's first group.
    seed : int
        Seed of the shuffling; the same seed gives the same folds.
    shuffle : bool
        Shuffle rows (or units) before dealing them to folds; ``False`` deals them in
        the data set's order, so the folds do not depend on ``seed``.
    cut : sequence of float
        ``temporal``: each cut is a fraction in (0, 1) of the rows, ordered by time;
        training rows come before the time at that quantile.
    gap : float
        ``temporal``: test rows start this much time after the cut (in the time
        column's units), so features that lag do not leak.

    Returns
    -------
    list of Fold

    Raises
    ------
    ValueError
        For an unknown scheme, a ``by`` that is not a grouping factor of the data, or
        too few units (or rows) for the number of folds.
    """
    if scheme not in SCHEMES or scheme == "fresh_draw":
        valid = tuple(name for name in SCHEMES if name != "fresh_draw")
        raise SplitError("scheme", f"split scheme: expected one of {valid}, got {scheme!r}")
    if scheme != "temporal" and folds < 2:
        raise SplitError("folds", f"folds: expected at least 2, got {folds}")
    factor = split_factor(dataset, by)
    if scheme in ("seen_units", "unseen_units") and factor is None:
        raise SplitError("scheme", f"{scheme}: the data set has no grouping factor to split by")
    units = unit_codes(dataset, factor)
    if scheme == "temporal":
        return [
            _fold(units, train_mask, test_mask)
            for train_mask, test_mask in _temporal_masks(dataset, cut, gap)
        ]
    rng = np.random.default_rng(seed) if shuffle else None
    if scheme == "random":
        assignment = _random_rows(dataset.n_rows, folds, rng)
    elif scheme == "seen_units":
        assignment = _within_units(units, folds, rng)
    else:
        assignment = _whole_units(units, folds, rng)
    return [_fold(units, assignment != fold, assignment == fold) for fold in range(folds)]


def split_factor(dataset: Dataset, by: str | None) -> str | None:
    """The grouping factor a split counts units by: ``by``, or the data's first group."""
    factor = by if by is not None else (dataset.groups[0] if dataset.groups else None)
    if factor is not None and factor not in dataset.groups:
        raise SplitError(
            "by",
            f"by: {factor!r} is not a grouping factor of {dataset.meta.get('name', 'the data')}; "
            f"its groups are {list(dataset.groups)}",
        )
    return factor


def unit_codes(dataset: Dataset, factor: str | None) -> np.ndarray:
    """Integer code of each row's unit (all zero without a factor)."""
    if factor is None:
        return np.zeros(dataset.n_rows, dtype=np.int64)
    return pd.factorize(dataset.frame[factor])[0]


def _fold(units: np.ndarray, train_mask: np.ndarray, test_mask: np.ndarray) -> Fold:
    train_units = np.bincount(units[train_mask], minlength=units.max() + 1)
    return Fold(
        train=np.flatnonzero(train_mask),
        test=np.flatnonzero(test_mask),
        unit_train_rows=train_units[units[test_mask]],
    )


def _temporal_masks(
    dataset: Dataset, cut: Sequence[float], gap: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) row masks per cut: before the cut's time, and from cut + gap on."""
    if dataset.time is None:
        raise SplitError(
            "scheme",
            f"temporal: {dataset.meta.get('name', 'the data set')} has no time column; "
            "use another split scheme or name the time column",
        )
    times = pd.to_numeric(dataset.frame[dataset.time], errors="coerce").to_numpy(dtype=float)
    if not np.all(np.isfinite(times)):
        raise SplitError(
            "scheme", f"temporal: time column {dataset.time!r} has missing or non-numeric values"
        )
    masks = []
    for fraction in cut:
        cut_time = float(np.quantile(times, fraction, method="higher"))
        train, test = times < cut_time, times >= cut_time + gap
        if not train.any() or not test.any():
            raise SplitError(
                "cut",
                f"temporal: cut {fraction} (time {cut_time:g}) with gap {gap:g} leaves "
                f"{int(train.sum())} training and {int(test.sum())} test rows; "
                f"the time column {dataset.time!r} runs from {times.min():g} to {times.max():g}",
            )
        masks.append((train, test))
    return masks


def fresh_draw_fold(dataset: Dataset, draws: list[Dataset], by: str | None) -> Fold:
    """The fold of a ``fresh_draw`` split: train on every row of ``dataset``, test on the
    rows of ``draws`` stacked (positions index the stacked frame).

    Each test row's ``unit_train_rows`` counts its unit's rows in ``dataset``.
    """
    factor = split_factor(dataset, by)
    n_test = sum(draw.n_rows for draw in draws)
    if factor is None:
        counts = np.zeros(n_test, dtype=np.int64)
    else:
        per_unit = dataset.frame[factor].astype(object).value_counts()
        tested = pd.concat([draw.frame[factor].astype(object) for draw in draws])
        counts = tested.map(per_unit).fillna(0).to_numpy(dtype=np.int64)
    return Fold(train=np.arange(dataset.n_rows), test=np.arange(n_test), unit_train_rows=counts)


def _permutation(rng: np.random.Generator | None, n: int) -> np.ndarray:
    """A random order, or the identity when not shuffling."""
    return np.arange(n) if rng is None else rng.permutation(n)


def _random_rows(n_rows: int, folds: int, rng: np.random.Generator | None) -> np.ndarray:
    if n_rows < folds:
        raise SplitError("folds", f"random: {n_rows} rows cannot fill {folds} folds")
    if rng is None:  # contiguous blocks, as KFold without shuffling
        return np.arange(n_rows) * folds // n_rows
    return rng.permutation(np.arange(n_rows) % folds)


def _within_units(units: np.ndarray, folds: int, rng: np.random.Generator | None) -> np.ndarray:
    """Deal each unit's rows round-robin over the folds from a random starting fold.

    A unit with n >= 2 rows holds out at most ceil(n / folds) < n rows in any fold, so
    it always keeps training rows; a unit with one row is never held out.
    """
    order = _permutation(rng, units.size)
    shuffled_units = units[order]
    # Rank of each row within its unit, in the shuffled order.
    sort = np.argsort(shuffled_units, kind="stable")
    sorted_units = shuffled_units[sort]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_units)) + 1]
    counts = np.diff(np.r_[starts, sorted_units.size])
    rank = np.arange(sorted_units.size) - np.repeat(starts, counts)
    n_units = units.max() + 1
    offset = np.arange(n_units) % folds if rng is None else rng.integers(0, folds, size=n_units)
    fold_sorted = (rank + offset[sorted_units]) % folds
    fold_sorted[np.repeat(counts, counts) < 2] = -1
    assignment = np.empty(units.size, dtype=np.int64)
    assignment[order[sort]] = fold_sorted
    if not np.isin(np.arange(folds), assignment).all():
        raise SplitError(
            "folds", f"seen_units: too few units with two or more rows to fill {folds} folds"
        )
    return assignment


def _whole_units(units: np.ndarray, folds: int, rng: np.random.Generator | None) -> np.ndarray:
    """Assign whole units to folds, balancing rows: units in random order, each to the
    fold with the fewest rows so far (GroupKFold's rule, with shuffling)."""
    n_units = units.max() + 1
    if n_units < folds:
        raise SplitError("folds", f"unseen_units: {n_units} units cannot fill {folds} folds")
    sizes = np.bincount(units)
    order = _permutation(rng, n_units)
    # Largest first keeps folds balanced; ties broken by the random order.
    order = order[np.argsort(-sizes[order], kind="stable")]
    unit_fold = np.empty(n_units, dtype=np.int64)
    fold_rows = np.zeros(folds, dtype=np.int64)
    for unit in order:
        target = int(np.argmin(fold_rows))
        unit_fold[unit] = target
        fold_rows[target] += sizes[unit]
    return unit_fold[units]


def check_no_leakage(
    dataset: Dataset, scheme: str, by: str | None, fold: Fold, gap: float = 0.0
) -> None:
    """Raise if a fold breaks its scheme's promise (run on every fold the harness uses)."""
    if scheme == "fresh_draw":
        return  # test rows come from other data sets: no row can be shared
    if np.intersect1d(fold.train, fold.test).size:
        raise RuntimeError(f"{scheme}: a row is in both training and test")
    if scheme == "temporal":
        times = pd.to_numeric(dataset.frame[dataset.time]).to_numpy(dtype=float)
        # Training times are < cut and test times >= cut + gap.
        if not times[fold.train].max() + gap < times[fold.test].min():
            raise RuntimeError(
                f"temporal: a training row is not more than {gap:g} before every test row"
            )
        return
    factor = split_factor(dataset, by)
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
