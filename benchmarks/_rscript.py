"""Running a benchmark's R script as a peer: R given OpenBLAS (its best BLAS here, as numpy
has), the script's result read from its ``BENCH_JSON`` line."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from estimators._process import run_in_session

# R code shared by the lmer benchmark scripts, whose arguments start with the CSV file,
# the formula, the factor columns (comma-separated) and the warm-up fits: lme4 and
# jsonlite loaded, those arguments read (``form``, ``factors``, ``warmups``), the
# process's memory from /proc, the CSV read with its factor columns, and ``fit_once()``,
# one timed ``lmer(form, data)`` with its warnings and messages kept in ``notes``.
LMER_FIT_HELPERS = r"""suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})
args <- commandArgs(trailingOnly = TRUE)
form <- as.formula(args[[2]])
factors <- strsplit(args[[3]], ",", fixed = TRUE)[[1]]
warmups <- as.integer(args[[4]])

status_kb <- function(field) {
  if (!file.exists("/proc/self/status")) return(NA_real_)
  line <- grep(paste0("^", field, ":"), readLines("/proc/self/status"), value = TRUE)
  as.numeric(gsub("[^0-9]", "", line))
}

data <- read.csv(args[[1]], colClasses = setNames(rep("factor", length(factors)), factors))
invisible(gc())
data_hwm_kb <- status_kb("VmHWM")

notes <- character(0)
fit_once <- function() {
  fit <- NULL
  seconds <- withCallingHandlers(
    system.time(fit <- lmer(form, data))[["elapsed"]],
    warning = function(w) {
      notes <<- c(notes, conditionMessage(w))
      invokeRestart("muffleWarning")
    },
    message = function(m) {
      notes <<- c(notes, trimws(conditionMessage(m)))
      invokeRestart("muffleMessage")
    }
  )
  list(fit = fit, seconds = seconds)
}
"""

OPENBLAS_DIR = Path("/usr/lib/x86_64-linux-gnu/openblas-pthread")


def r_environment() -> dict[str, str]:
    """Environment for Rscript: R's BLAS switched to OpenBLAS where it is installed."""
    env = dict(os.environ)
    if OPENBLAS_DIR.is_dir():
        env["R_LD_LIBRARY_PATH"] = str(OPENBLAS_DIR)
    return env


def run_r(command: list[str], timeout: float) -> dict[str, Any]:
    """Run ``command`` (an Rscript call) with ``r_environment()``.

    The command runs in a session of its own, and a timeout kills the whole process
    group: the command may be GNU time wrapping Rscript, and killing only the direct
    child would leave R running on.

    Returns
    -------
    dict
        ``{"status": "ok", "out": <the last BENCH_JSON object>}``, or status
        ``"timeout"`` / ``"error"`` with a ``reason`` (the exit code and the last lines
        of R's error output).
    """
    try:
        run = run_in_session(command, timeout=timeout, env=r_environment())
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "reason": f"did not finish in {timeout:.0f} s"}
    lines = [line for line in run.stdout.splitlines() if line.startswith("BENCH_JSON ")]
    if run.returncode != 0 or not lines:
        tail = " | ".join(run.stderr.strip().splitlines()[-3:])
        return {"status": "error", "reason": f"Rscript exited with {run.returncode}: {tail}"}
    return {"status": "ok", "out": json.loads(lines[-1].removeprefix("BENCH_JSON "))}
