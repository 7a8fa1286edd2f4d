"""A user's data file (CSV or Parquet), read with polars, with roles from the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from simulators._dataset import FAMILIES, Dataset

DEFAULTS: dict[str, Any] = {
    "path": None,
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
READERS = {".csv": pl.read_csv, ".parquet": pl.read_parquet, ".pq": pl.read_parquet}
SCHEMAS = {
    ".csv": lambda path: pl.scan_csv(path).collect_schema(),
    ".parquet": pl.read_parquet_schema,
    ".pq": pl.read_parquet_schema,
}


def _names(value: Any, field: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"params.{field}: expected a list of column names, got {value!r}")
    return value


def check_params(params: dict[str, Any]) -> None:
    """Raise a ValueError naming the first invalid parameter (the file is read later)."""
    path = params["path"]
    if not isinstance(path, str) or not path:
        raise ValueError(f"params.path: expected the path of a CSV or Parquet file, got {path!r}")
    if Path(path).suffix.lower() not in READERS:
        raise ValueError(
            f"params.path: {path!r} is neither .csv nor .parquet; supported: {sorted(READERS)}"
        )
    if not isinstance(params["target"], str):
        raise ValueError(f"params.target: expected a column name, got {params['target']!r}")
    _names(params["groups"], "groups")
    _names(params["features"], "features")
    if params["time"] is not None and not isinstance(params["time"], str):
        raise ValueError(f"params.time: expected a column name, got {params['time']!r}")
    weights = params.get("weights")
    if weights is not None and not isinstance(weights, str):
        raise ValueError(f"params.weights: expected a column name, got {weights!r}")
    if params["family"] not in FAMILIES:
        raise ValueError(f"params.family: expected one of {FAMILIES}, got {params['family']!r}")
    if params["nesting"] is not None and not isinstance(params["nesting"], dict):
        raise ValueError(f"params.nesting: expected a mapping, got {params['nesting']!r}")
    # Check the columns against the file's header now, so a config fails before it runs.
    columns = list(_schema(Path(path)))
    roles = {
        "target": [params["target"]],
        "groups": _names(params["groups"], "groups"),
        "features": _names(params["features"], "features"),
        "time": [params["time"]] if params["time"] else [],
        "weights": [weights] if weights else [],
    }
    for role, names in roles.items():
        for column in names:
            if column not in columns:
                raise ValueError(
                    f"params.{role}: column {column!r} not in {Path(path).name}; "
                    f"its columns are {columns}"
                )


def _schema(path: Path) -> dict:
    if not path.is_file():
        raise ValueError(f"params.path: file {str(path)!r} not found")
    try:
        return dict(SCHEMAS[path.suffix.lower()](path))
    except (pl.exceptions.PolarsError, OSError) as error:
        raise ValueError(f"params.path: cannot read {str(path)!r}: {error}") from None


def read_file(seed: int, params: dict[str, Any]) -> Dataset:
    """Read the file and check its columns against the roles; ``seed`` is unused.

    Raises
    ------
    ValueError
        For a missing or empty file, a role naming a column the file lacks, a
        non-numeric target or feature, missing values in a used column, or a binomial
        target outside [0, 1] / a Poisson target that is negative.
    """
    path = Path(params["path"])
    if not path.is_file():
        raise ValueError(f"params.path: file {str(path)!r} not found")
    try:
        table = READERS[path.suffix.lower()](path)
    except (pl.exceptions.PolarsError, OSError) as error:
        raise ValueError(f"params.path: cannot read {str(path)!r}: {error}") from None
    if table.height == 0:
        raise ValueError(f"params.path: {str(path)!r} has no rows")
    target, groups = params["target"], _names(params["groups"], "groups")
    features, time = _names(params["features"], "features"), params["time"]
    weights = params.get("weights")
    roles = {
        "target": [target],
        "groups": groups,
        "features": features,
        "time": [time] if time else [],
        "weights": [weights] if weights else [],
    }
    for role, columns in roles.items():
        for column in columns:
            if column not in table.columns:
                raise ValueError(
                    f"params.{role}: column {column!r} not in {path.name}; "
                    f"its columns are {table.columns}"
                )
    numeric = [("target", target)] + [("features", c) for c in features]
    for role, column in numeric + ([("weights", weights)] if weights else []):
        if not table[column].dtype.is_numeric() and table[column].dtype != pl.Boolean:
            raise ValueError(
                f"params.{role}: column {column!r} is {table[column].dtype}, not numeric"
            )
    for column in (
        [target, *groups, *features] + ([time] if time else []) + ([weights] if weights else [])
    ):
        missing = table[column].null_count()
        if table[column].dtype.is_float():
            missing += int(table[column].is_nan().sum())
        if missing:
            raise ValueError(f"column {column!r} of {path.name} has {missing} missing value(s)")
    y = table[target].cast(pl.Float64)
    if params["family"] == "binomial" and not ((y >= 0) & (y <= 1)).all():
        raise ValueError(f"params.target: binomial column {target!r} has values outside [0, 1]")
    if params["family"] == "poisson" and not (y >= 0).all():
        raise ValueError(f"params.target: poisson column {target!r} has negative values")
    frame = table.select(
        list(
            dict.fromkeys(
                [target, *groups, *features]
                + ([time] if time else [])
                + ([weights] if weights else [])
            )
        )
    )
    if time in (target, *groups, *features):
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
        target=target,
        family=params["family"],
        features=tuple(features),
        groups=tuple(groups),
        nesting=params["nesting"] or {},
        time=time,
        meta={"name": f"file:{path.name}", "params": params, "seed": seed},
        weights=weights,
    )
