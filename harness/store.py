"""The results store: one Parquet file per finished job, written atomically.

Each row is written to a temporary file and renamed into ``rows/<job_id>.parquet``, so
an interrupted sweep never leaves a half-written row that a later read would see, and
a rerun overwrites a job's row in one step. ``consolidate`` gathers the rows of a
config's jobs into one tidy table, ``results.parquet`` (and ``results.csv``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

# Columns that order the table: one row per (scenario, repeat, split, fold, estimator).
ORDER = ["scenario", "repeat", "split", "fold", "estimator"]


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(temporary_path)`` then rename the file onto ``path``."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class ResultStore:
    """Result rows of one sweep, under ``directory``.

    Parameters
    ----------
    directory : path
        The sweep's output folder (``reports/<config name>``); created if missing.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.rows_dir = self.directory / "rows"
        self.rows_dir.mkdir(parents=True, exist_ok=True)

    def write(self, row: dict[str, Any]) -> None:
        """Store one job's row, replacing any earlier row of the same job."""
        frame = pl.DataFrame([row], infer_schema_length=None)
        _atomic_write(self.rows_dir / f"{row['job_id']}.parquet", frame.write_parquet)

    def read(self, job_ids: Iterable[str] | None = None) -> pl.DataFrame:
        """Every stored row (or those of ``job_ids``), as one table in a stable order."""
        wanted = None if job_ids is None else set(job_ids)
        paths = sorted(
            path
            for path in self.rows_dir.glob("*.parquet")
            if wanted is None or path.stem in wanted
        )
        if not paths:
            return pl.DataFrame()
        table = pl.concat([pl.read_parquet(path) for path in paths], how="diagonal_relaxed")
        return table.sort([column for column in ORDER if column in table.columns])

    def finished_ids(self) -> set[str]:
        """Ids of jobs whose stored row has status ``ok``."""
        return set(self.finished_versions())

    def finished_versions(self) -> dict[str, str | None]:
        """Code version of each job whose stored row has status ``ok``: a rerun skips a
        job whose version is still the current one."""
        table = self.read()
        if table.is_empty():
            return {}
        ok = table.filter(pl.col("status") == "ok")
        versions = (
            ok["code_version"].to_list() if "code_version" in ok.columns else [None] * len(ok)
        )
        return dict(zip(ok["job_id"].to_list(), versions, strict=True))

    def consolidate(self, job_ids: Iterable[str]) -> pl.DataFrame:
        """Write the rows of ``job_ids`` to ``results.parquet`` and ``results.csv``."""
        table = self.read(job_ids)
        _atomic_write(self.directory / "results.parquet", table.write_parquet)
        _atomic_write(self.directory / "results.csv", table.write_csv)
        return table
