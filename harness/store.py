"""The results store: one Parquet file per finished job, written atomically.

Each row is written to a temporary file and renamed into ``rows/<job_id>.parquet``, so
an interrupted sweep never leaves a half-written row that a later read would see, and
a rerun overwrites a job's row in one step. ``consolidate`` gathers the rows of a
config's jobs into one tidy table, ``results.parquet`` (and ``results.csv``).
"""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import polars as pl

# Columns that order the table: one row per (scenario, repeat, split, fold, estimator).
ORDER = ["scenario", "repeat", "split", "fold", "estimator"]


class StoreError(OSError):
    """The store cannot be written (a full disk, a read-only folder); the message is
    one line naming the path."""


def _reason(error: OSError) -> str:
    """``No space left on device`` -> ``no space left on device``."""
    return (error.strerror or str(error)).lower()


def _store_error(error: OSError, doing: str, path: Path) -> StoreError:
    return StoreError(f"{_reason(error)} {doing} {path}")


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    """Write ``path`` in one step: ``write(buffer)`` into memory, the bytes to a new
    temporary file beside ``path``, renamed onto it.

    The bytes go through the operating system's own write, so a full disk is reported
    as one (a Parquet writer would report a thrift error), and the temporary file is
    created like any other (mode 0666 less the user's umask). On any failure the old
    file stays and the temporary one is removed.

    Raises
    ------
    StoreError
        When the file cannot be written, e.g. "no space left on device writing <path>".
    """
    buffer = io.BytesIO()
    write(buffer)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(descriptor, "wb") as file:
            file.write(buffer.getbuffer())
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _store_error(error, "writing", path) from None
        raise


def check_writable(directory: str | Path) -> Path:
    """Make sure ``directory`` is (or can be made) a folder this process can write.

    Raises
    ------
    StoreError
        In one line: the path is a file, a read-only mount, not permitted, ...
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise StoreError(f"{directory} is a file, not a folder")
    probe = directory / f".write-check-{secrets.token_hex(4)}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        probe.unlink()
    except OSError as error:
        raise StoreError(f"cannot write to {directory} ({_reason(error)})") from None
    return directory


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
        try:
            self.rows_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise _store_error(error, "creating", self.rows_dir) from None

    def write_text(self, name: str, text: str) -> None:
        """Write a file of the sweep's folder (its config, say) in one step."""
        _atomic_write(self.directory / name, lambda buffer: buffer.write(text.encode()))

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
        """Ids of finished jobs (see :meth:`finished_versions`)."""
        return set(self.finished_versions())

    def finished_versions(self) -> dict[str, str | None]:
        """Code version of each finished job: its stored row has status ``ok``, or it
        was skipped as not applicable to its data (an estimator of another outcome
        family, say; not a missing dependency, which may be installed by the next run).
        A rerun skips a job whose version is still the current one."""
        table = self.read()
        if table.is_empty():
            return {}
        finished = pl.col("status") == "ok"
        if "error_type" in table.columns:
            not_applicable = (pl.col("status") == "skipped") & (
                pl.col("error_type") == "NotApplicable"
            )
            finished = finished | not_applicable
        ok = table.filter(finished)
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
