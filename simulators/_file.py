"""A user's data (a CSV or Parquet file, or a directory of Parquet parts), read with
polars, with roles from the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from simulators._dataset import Dataset
from simulators._roles import (
    ROLE_DEFAULTS,
    check_columns,
    check_role_params,
    check_values,
    to_dataset,
    used_columns,
)

DEFAULTS: dict[str, Any] = {"path": None} | ROLE_DEFAULTS
SUFFIXES = (".csv", ".parquet", ".pq")


def _scan(path: Path) -> pl.LazyFrame:
    """A lazy scan of the file or of every Parquet part under the directory.

    A directory is read as data warehouses export it: ``part-0.parquet``, ... or
    hive-style ``day=1/part.parquet``, whose partition values become columns. Only
    the columns a query selects are read from the parts.
    """
    if path.is_dir():
        if not any(path.rglob("*.parquet")):
            raise ValueError(f"params.path: directory {str(path)!r} holds no .parquet file")
        return pl.scan_parquet(path / "**" / "*.parquet", hive_partitioning=True)
    if path.suffix.lower() == ".csv":
        return pl.scan_csv(path)
    return pl.scan_parquet(path)


def _where(path: Path) -> str:
    return f"{path.name}/" if path.is_dir() else path.name


def check_params(params: dict[str, Any]) -> None:
    """Raise a ValueError naming the first invalid parameter (the data are read later)."""
    path = params["path"]
    if not isinstance(path, str) or not path:
        raise ValueError(
            f"params.path: expected the path of a CSV or Parquet file, or a directory "
            f"of Parquet files, got {path!r}"
        )
    if not Path(path).is_dir() and Path(path).suffix.lower() not in SUFFIXES:
        raise ValueError(
            f"params.path: {path!r} is neither .csv nor .parquet (nor a directory of "
            f"Parquet files); supported: {sorted(SUFFIXES)}"
        )
    check_role_params(params)
    # Check the columns against the header now, so a config fails before it runs.
    check_columns(params, _schema(Path(path)), _where(Path(path)))


def _schema(path: Path) -> list[str]:
    if not path.exists():
        raise ValueError(f"params.path: file {str(path)!r} not found")
    try:
        return list(_scan(path).collect_schema())
    except (pl.exceptions.PolarsError, OSError) as error:
        raise ValueError(f"params.path: cannot read {str(path)!r}: {error}") from None


def read_file(seed: int, params: dict[str, Any]) -> Dataset:
    """Read the columns the roles name and check them; ``seed`` is unused.

    Raises
    ------
    ValueError
        For a missing or empty file, a role naming a column the file lacks, a
        non-numeric target or feature, missing values in a used column, or a binomial
        target outside [0, 1] / a Poisson target that is negative.
    """
    path = Path(params["path"])
    check_columns(params, _schema(path), _where(path))
    try:
        table = _scan(path).select(used_columns(params)).collect()
    except (pl.exceptions.PolarsError, OSError) as error:
        raise ValueError(f"params.path: cannot read {str(path)!r}: {error}") from None
    if table.height == 0:
        raise ValueError(f"params.path: {str(path)!r} has no rows")
    check_values(table, params, _where(path))
    return to_dataset(
        table, params, meta={"name": f"file:{path.name}", "params": params, "seed": seed}
    )
