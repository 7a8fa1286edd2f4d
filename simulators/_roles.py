"""Column roles of a data source (target, groups, features, ...), checked once for every
source that reads observed data: a user's file and the public data sets."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import polars as pl

from simulators._dataset import FAMILIES, Dataset

# The role parameters every observed-data source takes, with their defaults.
ROLE_DEFAULTS: dict[str, Any] = {
    "target": None,
    "groups": [],
    "features": [],
    "time": None,
    "family": "gaussian",
    # {inner: outer} for a grouping factor nested in another, e.g. {user: region}.
    "nesting": None,
    # A column of row weights (numeric, >= 0): fits get them as sample_weight and the
    # prediction metrics are weighted by them.
    "weights": None,
}


def names(value: Any, field: str) -> list[str]:
    """``value`` as a list of column names (a single name is a list of one).

    Raises
    ------
    ValueError
        Naming ``params.<field>`` when ``value`` is not a name or a list of names.
    """
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"params.{field}: expected a list of column names, got {value!r}")
    return value


def roles(params: dict[str, Any]) -> dict[str, list[str]]:
    """The columns of each role, ``{"target": [...], "groups": [...], ...}``."""
    time, weights = params["time"], params.get("weights")
    return {
        "target": [params["target"]],
        "groups": names(params["groups"], "groups"),
        "features": names(params["features"], "features"),
        "time": [time] if time else [],
        "weights": [weights] if weights else [],
    }


def used_columns(params: dict[str, Any]) -> list[str]:
    """Every column a role names, once each, in role order."""
    return list(dict.fromkeys(column for columns in roles(params).values() for column in columns))


def check_role_params(params: dict[str, Any]) -> None:
    """Raise a ValueError naming the first role parameter of the wrong kind."""
    if not isinstance(params["target"], str):
        raise ValueError(f"params.target: expected a column name, got {params['target']!r}")
    names(params["groups"], "groups")
    names(params["features"], "features")
    if params["time"] is not None and not isinstance(params["time"], str):
        raise ValueError(f"params.time: expected a column name, got {params['time']!r}")
    weights = params.get("weights")
    if weights is not None and not isinstance(weights, str):
        raise ValueError(f"params.weights: expected a column name, got {weights!r}")
    if params["family"] not in FAMILIES:
        raise ValueError(f"params.family: expected one of {FAMILIES}, got {params['family']!r}")
    nesting = params["nesting"]
    if nesting is not None and not isinstance(nesting, dict):
        raise ValueError(f"params.nesting: expected a mapping, got {nesting!r}")


def check_columns(params: dict[str, Any], columns: Iterable[str], source: str) -> None:
    """Raise a ValueError naming the role whose column ``source`` lacks."""
    columns = list(columns)
    for role, wanted in roles(params).items():
        for column in wanted:
            if column not in columns:
                raise ValueError(
                    f"params.{role}: column {column!r} not in {source}; its columns are {columns}"
                )
    for inner, outer in (params["nesting"] or {}).items():
        for column in (inner, outer):
            if column not in roles(params)["groups"]:
                raise ValueError(
                    f"params.nesting: {column!r} is not one of the groups {params['groups']}"
                )


def check_values(table: pl.DataFrame, params: dict[str, Any], source: str) -> None:
    """Raise a ValueError for a non-numeric target, feature or weight, missing values in
    a used column, or a target outside its family's range; messages name the column."""
    if table.height == 0:
        raise ValueError(f"params: {source} has no rows")
    target, weights = params["target"], params.get("weights")
    numeric = [("target", target)] + [("features", c) for c in roles(params)["features"]]
    for role, column in numeric + ([("weights", weights)] if weights else []):
        if not table[column].dtype.is_numeric() and table[column].dtype != pl.Boolean:
            raise ValueError(
                f"params.{role}: column {column!r} is {table[column].dtype}, not numeric"
            )
    for column in used_columns(params):
        missing = table[column].null_count()
        if table[column].dtype.is_float():
            missing += int(table[column].is_nan().sum())
        if missing:
            raise ValueError(f"column {column!r} of {source} has {missing} missing value(s)")
    y = table[target].cast(pl.Float64)
    if params["family"] == "binomial" and not ((y >= 0) & (y <= 1)).all():
        raise ValueError(f"params.target: binomial column {target!r} has values outside [0, 1]")
    if params["family"] == "poisson" and not (y >= 0).all():
        raise ValueError(f"params.target: poisson column {target!r} has negative values")


def to_dataset(table: pl.DataFrame, params: dict[str, Any], *, meta: dict[str, Any]) -> Dataset:
    """The used columns of ``table`` (already checked) as a :class:`Dataset`."""
    frame = table.select(used_columns(params))
    time = params["time"]
    if time in (params["target"], *roles(params)["groups"], *roles(params)["features"]):
        # A column that is the time and also a feature (years since sign-up, say): the
        # data set's X holds each role's columns side by side, so the time role gets a
        # copy under a name of its own rather than a second column of the same name.
        copy = f"{time} (time)"
        while copy in frame.columns:
            copy += "_"
        frame = frame.with_columns(pl.col(time).alias(copy))
        time = copy
    return Dataset(
        frame=frame.to_pandas(),
        target=params["target"],
        family=params["family"],
        features=tuple(roles(params)["features"]),
        groups=tuple(roles(params)["groups"]),
        nesting=params["nesting"] or {},
        time=time,
        meta=meta,
        weights=params.get("weights"),
    )
