"""Running a benchmark's R script as a peer: R given OpenBLAS (its best BLAS here, as numpy
has), the script's result read from its ``BENCH_JSON`` line."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

OPENBLAS_DIR = Path("/usr/lib/x86_64-linux-gnu/openblas-pthread")


def r_environment() -> dict[str, str]:
    """Environment for Rscript: R's BLAS switched to OpenBLAS where it is installed."""
    env = dict(os.environ)
    if OPENBLAS_DIR.is_dir():
        env["R_LD_LIBRARY_PATH"] = str(OPENBLAS_DIR)
    return env


def run_r(command: list[str], timeout: float) -> dict[str, Any]:
    """Run ``command`` (an Rscript call) with ``r_environment()``.

    Returns
    -------
    dict
        ``{"status": "ok", "out": <the last BENCH_JSON object>}``, or status
        ``"timeout"`` / ``"error"`` with a ``reason`` (the exit code and the last lines
        of R's error output).
    """
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=r_environment(), timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "reason": f"did not finish in {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_JSON ")]
    if done.returncode != 0 or not lines:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        return {"status": "error", "reason": f"Rscript exited with {done.returncode}: {tail}"}
    return {"status": "ok", "out": json.loads(lines[-1].removeprefix("BENCH_JSON "))}
