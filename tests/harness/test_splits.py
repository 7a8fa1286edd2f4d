import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.splits import Fold, check_no_leakage, make_folds
from simulators import Dataset


def _dataset(units_per_row: list[int], items_per_row: list[int] | None = None) -> Dataset:
    n = len(units_per_row)
    frame = pd.DataFrame(
        {
            "x": np.linspace(0, 1, n),
            "user": [f"u{u}" for u in units_per_row],
            "item": [f"i{i}" for i in (items_per_row or [0] * n)],
            "y": np.arange(n, dtype=float),
        }
    )
    return Dataset(frame=frame, target="y", features=("x",), groups=("user", "item"))


# Random group structures: 2 to 40 units, each with 1 to 30 rows, shuffled.
structures = st.lists(st.integers(1, 30), min_size=2, max_size=40).flatmap(
    lambda sizes: st.permutations(np.repeat(np.arange(len(sizes)), sizes).tolist())
)


def _check_partition(dataset, folds):
    tested = np.concatenate([fold.test for fold in folds])
    assert np.array_equal(np.sort(tested), np.arange(dataset.n_rows))
    for fold in folds:
        assert np.array_equal(np.union1d(fold.train, fold.test), np.arange(dataset.n_rows))
        assert np.intersect1d(fold.train, fold.test).size == 0


def _check_unit_train_rows(dataset, fold):
    users = dataset.frame["user"].to_numpy()
    counts = pd.Series(users[fold.train]).value_counts()
    expected = [counts.get(user, 0) for user in users[fold.test]]
    assert fold.unit_train_rows.tolist() == expected


@settings(max_examples=60, deadline=None)
@given(structures, st.integers(2, 5), st.integers(0, 2**31 - 1))
def test_unseen_units_never_share_a_unit(units, n_folds, seed):
    dataset = _dataset(units)
    if len(set(units)) < n_folds:
        with pytest.raises(ValueError, match=f"unseen_units: .* cannot fill {n_folds} folds"):
            make_folds(dataset, "unseen_units", n_folds, "user", seed)
        return
    folds = make_folds(dataset, "unseen_units", n_folds, "user", seed)
    _check_partition(dataset, folds)
    users = dataset.frame["user"].to_numpy()
    for fold in folds:
        assert not set(users[fold.test]) & set(users[fold.train])
        assert fold.test.size > 0
        assert np.all(fold.unit_train_rows == 0)
        check_no_leakage(dataset, "unseen_units", "user", fold)


@settings(max_examples=60, deadline=None)
@given(structures, st.integers(2, 5), st.integers(0, 2**31 - 1))
def test_seen_units_keep_every_test_unit_in_training(units, n_folds, seed):
    dataset = _dataset(units)
    try:
        folds = make_folds(dataset, "seen_units", n_folds, "user", seed)
    except ValueError as error:
        assert "too few units with two or more rows" in str(error)
        return
    users = dataset.frame["user"].to_numpy()
    sizes = pd.Series(users).value_counts()
    tested = np.concatenate([fold.test for fold in folds])
    # Every row of a unit with two or more rows is tested exactly once; singletons never.
    assert np.array_equal(np.sort(tested), np.flatnonzero(sizes[users].to_numpy() >= 2))
    for fold in folds:
        assert set(users[fold.test]) <= set(users[fold.train])
        assert np.all(fold.unit_train_rows >= 1)
        _check_unit_train_rows(dataset, fold)
        check_no_leakage(dataset, "seen_units", "user", fold)


@settings(max_examples=30, deadline=None)
@given(structures, st.integers(2, 5), st.integers(0, 2**31 - 1))
def test_random_folds_partition_the_rows(units, n_folds, seed):
    dataset = _dataset(units)
    if dataset.n_rows < n_folds:
        return
    folds = make_folds(dataset, "random", n_folds, None, seed)
    _check_partition(dataset, folds)
    sizes = [fold.test.size for fold in folds]
    assert max(sizes) - min(sizes) <= 1
    for fold in folds:
        _check_unit_train_rows(dataset, fold)


def test_same_seed_same_folds_other_seed_other_folds():
    dataset = _dataset(list(np.repeat(np.arange(30), 4)))
    for scheme in ("random", "seen_units", "unseen_units"):
        first = make_folds(dataset, scheme, 3, None, 1)
        again = make_folds(dataset, scheme, 3, None, 1)
        other = make_folds(dataset, scheme, 3, None, 2)
        assert all(np.array_equal(a.test, b.test) for a, b in zip(first, again, strict=True))
        assert not all(np.array_equal(a.test, b.test) for a, b in zip(first, other, strict=True))


def test_split_by_another_factor_and_clear_errors():
    dataset = _dataset(list(range(12)), items_per_row=[0, 1, 2] * 4)
    folds = make_folds(dataset, "unseen_units", 3, "item", 0)
    items = dataset.frame["item"].to_numpy()
    assert all(len(set(items[fold.test])) == 1 for fold in folds)
    with pytest.raises(ValueError, match="by: 'region' is not a grouping factor"):
        make_folds(dataset, "unseen_units", 3, "region", 0)
    with pytest.raises(ValueError, match="unseen_units: 3 units cannot fill 4 folds"):
        make_folds(dataset, "unseen_units", 4, "item", 0)
    with pytest.raises(ValueError, match="split scheme: expected one of"):
        make_folds(dataset, "sideways", 3, None, 0)


def test_leakage_check_catches_broken_folds():
    dataset = _dataset([0, 0, 1, 1])
    # Rows 0 and 1 share a unit: holding out only row 0 leaks it into training.
    leaky = Fold(np.array([1, 2, 3]), np.array([0]), np.array([1]))
    with pytest.raises(RuntimeError, match="unseen_units: 1 test unit"):
        check_no_leakage(dataset, "unseen_units", "user", leaky)
    # Holding out all of unit 0 leaves it unseen, which seen_units forbids.
    cold = Fold(np.array([2, 3]), np.array([0, 1]), np.array([0, 0]))
    with pytest.raises(RuntimeError, match="seen_units: 1 test unit"):
        check_no_leakage(dataset, "seen_units", "user", cold)
    with pytest.raises(RuntimeError, match="in both training and test"):
        check_no_leakage(
            dataset, "random", None, Fold(np.array([0, 1]), np.array([1]), np.array([1]))
        )


def _timed(units: list[int], days: list[int]) -> Dataset:
    data = _dataset(units)
    frame = data.frame.assign(day=days)
    return Dataset(frame=frame, target="y", features=("x",), groups=("user", "item"), time="day")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 9), min_size=4, max_size=60),
    st.lists(st.floats(0.1, 0.9), min_size=1, max_size=3),
    st.integers(0, 3),
    st.integers(0, 2**31 - 1),
)
def test_temporal_folds_train_strictly_before_test(days, cuts, gap, seed):
    rng = np.random.default_rng(seed)
    dataset = _timed(rng.integers(0, 5, len(days)).tolist(), days)
    try:
        folds = make_folds(dataset, "temporal", 0, "user", seed, cut=cuts, gap=gap)
    except ValueError as error:
        assert "leaves" in str(error)  # a cut at the edge of time: nothing to train or test
        return
    assert len(folds) == len(cuts)
    day = np.asarray(days, dtype=float)
    for fold in folds:
        assert day[fold.train].max() + gap < day[fold.test].min()
        # Every row not in the gap is used, on one side of the cut or the other.
        skipped = np.setdiff1d(np.arange(len(days)), np.union1d(fold.train, fold.test))
        assert np.all(day[skipped] >= day[fold.train].max())
        assert np.all(day[skipped] < day[fold.test].min())
        _check_unit_train_rows(dataset, fold)
        check_no_leakage(dataset, "temporal", "user", fold, gap=gap)


def test_temporal_needs_a_time_column_and_catches_leaks():
    with pytest.raises(ValueError, match="temporal: .* has no time column"):
        make_folds(_dataset([0, 1, 2]), "temporal", 0, None, 0)
    dataset = _timed([0, 1, 2, 3], [0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"cut 0.5 \(time 2\) with gap 5 leaves 2 training"):
        make_folds(dataset, "temporal", 0, None, 0, cut=[0.5], gap=5)
    leaky = Fold(np.array([0, 2]), np.array([1, 3]), np.array([0, 0]))
    with pytest.raises(RuntimeError, match="temporal: a training row"):
        check_no_leakage(dataset, "temporal", None, leaky)


def test_without_shuffling_folds_follow_the_row_order():
    dataset = _dataset(list(np.repeat(np.arange(6), 2)))
    blocks = make_folds(dataset, "random", 3, None, 1, shuffle=False)
    assert [fold.test.tolist() for fold in blocks] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    for scheme in ("random", "seen_units", "unseen_units"):
        first = make_folds(dataset, scheme, 3, None, 1, shuffle=False)
        other = make_folds(dataset, scheme, 3, None, 2, shuffle=False)
        assert all(np.array_equal(a.test, b.test) for a, b in zip(first, other, strict=True))


def test_fresh_draw_fold_counts_each_units_training_rows():
    from harness.splits import fresh_draw_fold

    dataset = _dataset([0, 0, 0, 1])
    draws = [_dataset([1, 0, 2]), _dataset([0])]
    fold = fresh_draw_fold(dataset, draws, None)
    assert fold.train.tolist() == [0, 1, 2, 3]
    assert fold.test.tolist() == [0, 1, 2, 3]
    assert fold.unit_train_rows.tolist() == [1, 3, 0, 3]
