"""lme4's lmer as a peer of ``bench_lmm.py``: each case in one ``Rscript`` process (R with
OpenBLAS), ``system.time`` around ``lmer`` only, and the 1,000 small fits in one R loop
(``bench_lmm_small.R``)."""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
from _lmm_cases import Case, ThroughputCase
from _lmm_peers import summarise_warnings
from _memory import MB
from _rscript import LMER_FIT_HELPERS, r_environment, run_r

SMALL_FITS_SCRIPT = Path(__file__).with_name("bench_lmm_small.R")
GNU_TIME = Path("/usr/bin/time")


LME4_SCRIPT = (
    r"""
# Fits one lme4 model for bench_lmm.py; prints its results as one JSON line.
# Arguments: CSV file, formula, factor columns (comma-separated), warm-up fits, timed fits.
"""
    + LMER_FIT_HELPERS
    + r"""
repeats <- as.integer(args[[5]])
for (i in seq_len(warmups)) invisible(fit_once())
runs <- lapply(seq_len(repeats), function(i) fit_once())
fit <- runs[[length(runs)]]$fit
result <- list(
  seconds = I(vapply(runs, function(run) run$seconds, numeric(1))),
  remlcrit = sprintf("%.17g", REMLcrit(fit)),
  feval = fit@optinfo$feval,
  optimizer = fit@optinfo$optimizer,
  theta = I(unname(getME(fit, "theta"))),
  data_hwm_kb = data_hwm_kb,
  exit_hwm_kb = status_kb("VmHWM"),
  notes = I(unique(notes)),
  lme4 = as.character(packageVersion("lme4")),
  r = R.version.string,
  blas = extSoftVersion()[["BLAS"]]
)
cat("BENCH_JSON ", toJSON(result, auto_unbox = TRUE, digits = NA), "\n", sep = "")
"""
)


def lme4_unavailable() -> str | None:
    """Why lme4 cannot be run, or None when Rscript, lme4 and jsonlite are there."""
    if shutil.which("Rscript") is None:
        return "Rscript not found on PATH"
    check = (
        'for (p in c("lme4", "jsonlite")) '
        "if (!requireNamespace(p, quietly = TRUE)) { cat(p); quit(status = 3) }"
    )
    done = subprocess.run(
        ["Rscript", "-e", check], capture_output=True, text=True, env=r_environment()
    )
    if done.returncode != 0:
        return f"R package {done.stdout.strip() or '?'} is not installed ({done.stderr.strip()})"
    return None


def _r_failure(result: dict[str, Any], limit: float) -> dict[str, Any]:
    if result["status"] == "timeout":
        return {"status": "time_limit", "limit_seconds": limit}
    return result


def run_lme4(case: Case, frame: pd.DataFrame, workdir: Path) -> dict[str, Any]:
    """Fit the case with lme4's lmer in an Rscript process.

    Parameters
    ----------
    case : Case
    frame : pandas.DataFrame
        The case's data, written to a CSV file for R.
    workdir : Path
        Directory for the CSV file, the R script and GNU time's report.

    Returns
    -------
    dict
        ``seconds`` (median of the timed fits), ``loglik`` (-REMLcrit / 2),
        ``evaluations`` (``optinfo$feval``), memory and R's notes (warnings, messages);
        status "time_limit" when the run exceeded ``case.lme4_limit``.
    """
    csv = workdir / f"{case.name}.csv"
    frame.to_csv(csv, index=False)
    script = workdir / "bench_lmm.R"
    script.write_text(LME4_SCRIPT)
    # A fit of many seconds needs no warm-up: R's first-call costs are then noise.
    repeats = case.lme4_repeats or case.repeats
    warmups = 0 if repeats == 1 else 1
    command = ["Rscript", str(script), str(csv), case.formula, ",".join(case.factors)]
    command += [str(warmups), str(repeats)]
    report = workdir / "time.txt"
    if GNU_TIME.exists():
        command = [str(GNU_TIME), "-v", "-o", str(report), *command]
    try:
        result = run_r(command, case.lme4_limit)
    finally:
        csv.unlink(missing_ok=True)
    if result["status"] != "ok":
        return _r_failure(result, case.lme4_limit)
    out = result["out"]
    peak_kb, measure = out["exit_hwm_kb"], "VmHWM of the R process at exit"
    if GNU_TIME.exists():
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", report.read_text())
        if found:
            peak_kb, measure = float(found.group(1)), "max RSS of the R process (GNU time -v)"
    return {
        "status": "ok",
        "seconds": statistics.median(out["seconds"]),
        "all_seconds": out["seconds"],
        "loglik": -0.5 * float(out["remlcrit"]),
        "evaluations": int(out["feval"]),
        "optimizer": out["optimizer"],
        "theta": out["theta"],
        "peak_mb": peak_kb / MB,
        "above_data_mb": (peak_kb - out["data_hwm_kb"]) / MB,
        "memory_measure": measure,
        "warnings": out["notes"],
        "versions": {"lme4": out["lme4"], "R": out["r"], "BLAS": out["blas"]},
    }


def run_lme4_throughput(
    case: ThroughputCase, frame: pd.DataFrame, workdir: Path, limit: float
) -> dict[str, Any]:
    """Fit the small data sets one after another with lmer in one Rscript process."""
    csv = workdir / f"{case.name}.csv"
    frame.to_csv(csv, index=False)
    command = ["Rscript", str(SMALL_FITS_SCRIPT), str(csv), case.formula]
    command += [",".join(case.template.factors), str(limit)]
    try:
        result = run_r(command, limit + 300.0)
    finally:
        csv.unlink(missing_ok=True)
    if result["status"] != "ok":
        return _r_failure(result, limit)
    out = result["out"]
    return {
        "status": "ok" if out["fits"] == frame["dataset"].nunique() else "partial",
        "seconds": float(out["seconds"]),
        "fits": int(out["fits"]),
        "logliks": [-0.5 * float(value) for value in out["remlcrit"]],
        "warnings": summarise_warnings(out["notes"]),
        "versions": {"lme4": out["lme4"], "R": out["r"], "BLAS": out["blas"]},
    }
