"""Fit time and peak memory of mixbench's MixedLM against lme4's lmer and statsmodels' MixedLM.

Run from the repository root, ``make bench-lmm`` or::

    .venv/bin/python benchmarks/bench_lmm.py [--sizes small|all] [--skip-lme4]
        [--skip-statsmodels] [--statsmodels-limit SECONDS]

Every implementation fits the same rows by REML:

* sleepstudy: ``Reaction ~ Days + (Days | Subject)``;
* InstEval: ``y ~ service + (1 | s) + (1 | d) + (1 | dept:service)``;
* simulated crossed user x item data, about 100k and 1M rows:
  ``y ~ x1 + x2 + (1 | user) + (1 | item)`` (the 1M set only with ``--sizes all``).

How each is measured:

* ours (``estimators.MixedLM``): one warm-up fit, then the median of the timed fits, in
  this process. Peak memory comes from a cold fit in a fresh (spawned) process: its peak
  RSS (VmHWM) after the fit, as is and minus its peak RSS after loading the data.
* lme4: ``lmer(formula, data)`` with default control in one ``Rscript`` process with
  ``R_LD_LIBRARY_PATH`` pointing at OpenBLAS (numpy's BLAS too). ``system.time`` around
  the ``lmer`` call only; the data are read from a CSV file written here. Peak memory is the
  maximum RSS of the whole R process from ``/usr/bin/time -v`` (else R's own VmHWM at exit),
  as is and minus R's VmHWM after reading the data.
* statsmodels: ``smf.mixedlm(...).fit(reml=True)``, model construction included (lmer and
  ours build their design inside the timed call too), in a spawned process that is killed
  when a fit exceeds the time limit. Crossed factors can only be variance components of one
  group holding all rows (with ``use_sparse=True``, statsmodels' faster setting for them).
  The formula interface still builds their design matrices dense, so the process gets an
  address-space limit of 80% of RAM and a larger need fails as "out of memory" rather than
  taking the machine down. A first fit under 5 s counts as the warm-up and is followed by
  as many timed fits as ours get; a slower one is the only timed fit.

The table goes to stdout and, as JSON, to ``benchmarks/results/bench_lmm.json``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pandas as pd
from _memory import MB, peak_rss_kb, vm_hwm_kb
from _results import machine, write_results
from _rscript import LMER_FIT_HELPERS, r_environment, run_r

import estimators
import simulators

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "estimators" / "fixtures" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "bench_lmm.json"
GNU_TIME = Path("/usr/bin/time")

TARGET_OURS_OVER_LME4 = 0.5  # ours should take at most half of lme4's time
TARGET_STATSMODELS_OVER_OURS = 10.0  # and statsmodels at least ten times ours
STATSMODELS_REPEAT_BELOW = 5.0  # seconds; slower statsmodels fits are timed once
STATSMODELS_MEMORY_SHARE = 0.8  # of physical memory, the statsmodels process's limit
STARTUP_TIMEOUT = 600.0  # seconds for a child to import and load the data
LME4_TIMEOUT = 3600.0  # seconds for the whole Rscript run of one data set


# ---------------------------------------------------------------------------
# Data sets
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StatsmodelsSpec:
    """How statsmodels' formula interface expresses a data set's model.

    Parameters
    ----------
    formula : str
        Fixed part with the response, e.g. ``"Reaction ~ Days"``.
    groups : str or None
        Grouping column; None puts all rows into one group, so that crossed factors can
        be variance components.
    re_formula : str or None
        Random effects of ``groups``.
    vc_formula : mapping of str to str
        Variance components, e.g. ``{"s": "0 + C(s)"}``.
    joined : mapping of str to tuple of str
        Columns to add before fitting, each the labels of several columns joined by ":"
        (an interaction factor such as ``dept:service``).
    """

    formula: str
    groups: str | None
    re_formula: str | None = None
    vc_formula: Mapping[str, str] = field(default_factory=dict)
    joined: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """One data set and its model.

    Parameters
    ----------
    name : str
        Label in the table.
    formula : str
        lme4 formula, fitted by ours and by lmer.
    factors : tuple of str
        Columns that are factors (read as factors by R, as labels by Python).
    load : callable
        Returns the data as a pandas DataFrame.
    statsmodels : StatsmodelsSpec
        The same model for statsmodels.
    repeats : int
        Timed fits of ours and lme4 after one warm-up fit; the median is reported.
    large : bool
        Run only with ``--sizes all``.
    """

    name: str
    formula: str
    factors: tuple[str, ...]
    load: Callable[[], pd.DataFrame]
    statsmodels: StatsmodelsSpec
    repeats: int = 3
    large: bool = False


def _read_fixture(name: str, factors: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.read_csv(FIXTURES / name)
    # The factors hold numeric labels; as text they are factors to every implementation.
    return frame.astype(dict.fromkeys(factors, str))


def _simulate_crossed(n_users: int, n_items: int, mean_events: float) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        data = simulators.simulate(
            "online_services",
            seed=2016,
            n_users=n_users,
            n_items=n_items,
            n_features=2,
            events_per_user={"mean": mean_events},
        )
        return data.frame

    return load


CROSSED_FORMULA = "y ~ x1 + x2 + (1 | user) + (1 | item)"
CROSSED_STATSMODELS = StatsmodelsSpec(
    formula="y ~ x1 + x2",
    groups=None,
    vc_formula={"user": "0 + C(user)", "item": "0 + C(item)"},
)

CASES: tuple[Case, ...] = (
    Case(
        name="sleepstudy",
        formula="Reaction ~ Days + (Days | Subject)",
        factors=("Subject",),
        load=lambda: _read_fixture("sleepstudy.csv.gz", ("Subject",)),
        statsmodels=StatsmodelsSpec(
            formula="Reaction ~ Days", groups="Subject", re_formula="~Days"
        ),
    ),
    Case(
        name="insteval",
        formula="y ~ service + (1 | s) + (1 | d) + (1 | dept:service)",
        factors=("s", "d", "dept", "service"),
        load=lambda: _read_fixture("insteval.csv.gz", ("s", "d", "dept", "service")),
        statsmodels=StatsmodelsSpec(
            formula="y ~ service",
            groups=None,
            vc_formula={"s": "0 + C(s)", "d": "0 + C(d)", "dept_service": "0 + C(dept_service)"},
            joined={"dept_service": ("dept", "service")},
        ),
    ),
    Case(
        name="crossed_100k",
        formula=CROSSED_FORMULA,
        factors=("user", "item"),
        load=_simulate_crossed(n_users=10_000, n_items=500, mean_events=10.0),
        statsmodels=CROSSED_STATSMODELS,
    ),
    Case(
        name="crossed_1m",
        formula=CROSSED_FORMULA,
        factors=("user", "item"),
        load=_simulate_crossed(n_users=50_000, n_items=1_000, mean_events=20.0),
        statsmodels=CROSSED_STATSMODELS,
        repeats=1,
        large=True,
    ),
)


# ---------------------------------------------------------------------------
# Ours
# ---------------------------------------------------------------------------


def _fit_ours(formula: str, frame: pd.DataFrame) -> tuple[float, estimators.MixedLM, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        model = estimators.MixedLM(formula).fit(frame)
        seconds = time.perf_counter() - start
    return seconds, model, [str(w.message) for w in caught]


def time_ours(case: Case, frame: pd.DataFrame) -> dict[str, Any]:
    """Fit time of our MixedLM: one warm-up fit, then the median of ``case.repeats`` fits.

    Parameters
    ----------
    case : Case
    frame : pandas.DataFrame
        The case's data.

    Returns
    -------
    dict
        ``seconds`` (median), ``all_seconds``, ``objective``, ``evaluations``, ``theta``,
        ``levels`` (per grouping factor) and the warnings of the fits.
    """
    _fit_ours(case.formula, frame)
    runs = [_fit_ours(case.formula, frame) for _ in range(case.repeats)]
    seconds = [run[0] for run in runs]
    model = runs[-1][1]
    # The exact criterion at our theta: an iterative fit's objective_ is an estimate, so
    # the comparison with lme4's optimum is made on the criterion both minimise.
    objective = (
        model.objective_ if model.solver_ == "exact" else float(model._objective(model.theta_))
    )
    return {
        "status": "ok",
        "seconds": statistics.median(seconds),
        "all_seconds": seconds,
        "objective": objective,
        "solver": model.solver_,
        "solver_reason": model.convergence_["solver_reason"],
        # The final optimisation only; the one-term fits that choose its start come first.
        "evaluations": int(model.convergence_["evaluations"]),
        "theta": model.theta_.tolist(),
        "levels": dict(model.n_levels_),
        "warnings": sorted({text for run in runs for text in run[2]}),
    }


def _ours_memory_child(path: str, formula: str, conn: Connection) -> None:
    frame = pd.read_pickle(path)
    baseline = peak_rss_kb()
    _fit_ours(formula, frame)
    peak = peak_rss_kb()
    conn.send({"peak_mb": peak / MB, "above_data_mb": (peak - baseline) / MB})
    conn.close()


def measure_ours_memory(case: Case, path: Path) -> dict[str, Any]:
    """Peak memory of one cold fit of ours in a fresh process.

    Parameters
    ----------
    case : Case
    path : Path
        Pickle of the case's data.

    Returns
    -------
    dict
        ``peak_mb`` (the process's maximum RSS) and ``above_data_mb`` (that minus the
        maximum RSS after loading the data).
    """
    context = mp.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_ours_memory_child, args=(str(path), case.formula, sender))
    process.start()
    sender.close()
    try:
        result = receiver.recv()
    except EOFError:
        result = {"error": "the measuring process died"}
    process.join()
    return result


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
        ``seconds`` (median of the timed fits), ``objective`` (REMLcrit), ``evaluations``
        (``optinfo$feval``), memory and R's notes (warnings, messages).
    """
    csv = workdir / f"{case.name}.csv"
    frame.to_csv(csv, index=False)
    script = workdir / "bench_lmm.R"
    script.write_text(LME4_SCRIPT)
    command = ["Rscript", str(script), str(csv), case.formula, ",".join(case.factors)]
    command += ["1", str(case.repeats)]
    report = workdir / "time.txt"
    if GNU_TIME.exists():
        command = [str(GNU_TIME), "-v", "-o", str(report), *command]
    try:
        result = run_r(command, LME4_TIMEOUT)
    finally:
        csv.unlink(missing_ok=True)
    if result["status"] == "timeout":
        return {"status": "error", "reason": f"Rscript ran longer than {LME4_TIMEOUT:.0f} s"}
    if result["status"] != "ok":
        return result
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
        "objective": float(out["remlcrit"]),
        "evaluations": int(out["feval"]),
        "optimizer": out["optimizer"],
        "theta": out["theta"],
        "peak_mb": peak_kb / MB,
        "above_data_mb": (peak_kb - out["data_hwm_kb"]) / MB,
        "memory_measure": measure,
        "warnings": out["notes"],
        "versions": {"lme4": out["lme4"], "R": out["r"], "BLAS": out["blas"]},
    }


# ---------------------------------------------------------------------------
# statsmodels
# ---------------------------------------------------------------------------


def statsmodels_unavailable() -> str | None:
    """Why statsmodels cannot be run, or None when it is installed."""
    try:
        import statsmodels  # noqa: F401
    except ImportError as error:
        return f"statsmodels is not installed ({error}); pip install 'mixbench[statsmodels]'"
    return None


def _statsmodels_child(path: str, spec: StatsmodelsSpec, repeats: int, conn: Connection) -> None:
    import statsmodels
    import statsmodels.formula.api as smf

    limit = int(STATSMODELS_MEMORY_SHARE * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    frame = pd.read_pickle(path)
    groups = spec.groups
    if groups is None:
        groups = "_all"
        frame[groups] = 0
    for name, columns in spec.joined.items():
        frame[name] = frame[list(columns)].astype(str).agg(":".join, axis=1)
    baseline = peak_rss_kb()

    def fit() -> dict[str, Any]:
        counts = {"loglike": 0, "score": 0}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            model = smf.mixedlm(
                spec.formula,
                frame,
                groups=groups,
                re_formula=spec.re_formula,
                vc_formula=dict(spec.vc_formula) or None,
                # Sparse variance-component matrices: statsmodels' fastest setting for them.
                use_sparse=bool(spec.vc_formula),
            )
            # Count the optimiser's calls; results keep no call counts of their own.
            for name in counts:
                method = getattr(model, name)

                def counted(*args: Any, _name: str = name, _method: Any = method, **kw: Any):
                    counts[_name] += 1
                    return _method(*args, **kw)

                setattr(model, name, counted)
            result = model.fit(reml=True)
            seconds = time.perf_counter() - start
        return {
            "seconds": seconds,
            "objective": -2.0 * float(result.llf),
            "evaluations": f"{counts['loglike']} loglike + {counts['score']} score",
            "converged": bool(result.converged),
            "warnings": sorted({str(w.message) for w in caught}),
        }

    try:
        conn.send(("start", None))
        first = fit()
        runs = [first]
        if first["seconds"] < STATSMODELS_REPEAT_BELOW:
            # The first fit was the warm-up; time as many as ours.
            runs = []
            for _ in range(repeats):
                conn.send(("start", None))
                runs.append(fit())
    except MemoryError:
        conn.send(("error", {"status": "memory_limit", "limit_mb": limit / MB**2}))
        return
    except Exception as error:  # reported in the table, not hidden
        conn.send(("error", {"status": "error", "reason": f"{type(error).__name__}: {error}"}))
        return
    peak = peak_rss_kb()
    seconds = [run["seconds"] for run in runs]
    conn.send(
        (
            "done",
            dict(
                runs[-1],
                status="ok",
                seconds=statistics.median(seconds),
                all_seconds=seconds,
                peak_mb=peak / MB,
                above_data_mb=(peak - baseline) / MB,
                warnings=sorted({text for run in runs for text in run["warnings"]}),
                version=statsmodels.__version__,
            ),
        )
    )


def run_statsmodels(case: Case, path: Path, limit: float) -> dict[str, Any]:
    """Fit the case with statsmodels in a child process killed when a fit exceeds ``limit``.

    Parameters
    ----------
    case : Case
    path : Path
        Pickle of the case's data.
    limit : float
        Seconds allowed per fit.

    Returns
    -------
    dict
        ``status`` ("ok", "time_limit", "memory_limit" or "error") and, when ok, seconds,
        ``objective`` (-2 log-likelihood, REML), evaluations and memory.
    """
    context = mp.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_statsmodels_child, args=(str(path), case.statsmodels, case.repeats, sender)
    )
    process.start()
    sender.close()
    timeout = STARTUP_TIMEOUT
    try:
        while True:
            if not receiver.poll(timeout):
                if timeout == STARTUP_TIMEOUT:
                    return {"status": "error", "reason": "no fit started within the startup time"}
                peak = vm_hwm_kb(process.pid)
                return {
                    "status": "time_limit",
                    "limit_seconds": limit,
                    "peak_mb": None if peak is None else peak / MB,
                }
            try:
                kind, payload = receiver.recv()
            except EOFError:
                return {"status": "error", "reason": f"process died (exit code {process.exitcode})"}
            if kind == "start":
                timeout = limit
            else:
                return payload
    finally:
        if process.is_alive():
            process.kill()
        process.join()


# ---------------------------------------------------------------------------
# Table and JSON
# ---------------------------------------------------------------------------


def ratios(ours: dict[str, Any], lme4: dict[str, Any], sm: dict[str, Any]) -> dict[str, Any]:
    """Ours / lme4 and statsmodels / ours, the latter a lower bound when statsmodels hit its
    time limit, with whether each meets its target."""
    out: dict[str, Any] = {}
    if ours.get("status") == "ok" and lme4.get("status") == "ok":
        value = ours["seconds"] / lme4["seconds"]
        out["ours_over_lme4"] = {"value": value, "met": value <= TARGET_OURS_OVER_LME4}
    if ours.get("status") == "ok" and sm.get("status") in ("ok", "time_limit"):
        bound = sm["status"] == "time_limit"
        value = (sm["limit_seconds"] if bound else sm["seconds"]) / ours["seconds"]
        out["statsmodels_over_ours"] = {
            "value": value,
            "lower_bound": bound,
            "met": value >= TARGET_STATSMODELS_OVER_OURS,
        }
    return out


def _seconds(result: dict[str, Any]) -> str:
    status = result.get("status")
    if status == "ok":
        return f"{result['seconds']:.3g} ({len(result['all_seconds'])})"
    if status == "time_limit":
        return f"> {result['limit_seconds']:.0f} s"
    if status == "memory_limit":
        return f"out of memory (> {result['limit_mb'] / 1024:.0f} GB)"
    if status == "skipped":
        return "skipped"
    return "failed"


def _memory(result: dict[str, Any]) -> str:
    if result.get("peak_mb") is None:
        return "-"
    if result.get("above_data_mb") is None:
        return f">= {result['peak_mb']:.0f} (at kill)"
    return f"{result['peak_mb']:.0f} / {result['above_data_mb']:.0f}"


def _ratio(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "-"
    bound = "> " if entry.get("lower_bound") else ""
    return f"{bound}{entry['value']:.3g} ({'met' if entry['met'] else 'missed'})"


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(records: list[dict[str, Any]]) -> str:
    """The results as a text table, one column per data set.

    Parameters
    ----------
    records : list of dict
        One per data set, as written to the JSON file.

    Returns
    -------
    str
    """
    rows: list[tuple[str, list[str]]] = [("", [r["name"] for r in records])]

    def add(label: str, cell: Callable[[dict[str, Any]], str]) -> None:
        rows.append((label, [cell(r) for r in records]))

    add("rows", lambda r: f"{r['rows']:,}")
    add("grouping factors", lambda r: " / ".join(r["levels"]) or "-")
    add("levels", lambda r: " / ".join(f"{n:,}" for n in r["levels"].values()) or "-")
    add("ours: fit s (runs)", lambda r: _seconds(r["ours"]))
    add("lme4: fit s (runs)", lambda r: _seconds(r["lme4"]))
    add("statsmodels: fit s (runs)", lambda r: _seconds(r["statsmodels"]))
    add(
        f"ours / lme4 (<= {TARGET_OURS_OVER_LME4:g})",
        lambda r: _ratio(r["ratios"].get("ours_over_lme4")),
    )
    add(
        f"statsmodels / ours (>= {TARGET_STATSMODELS_OVER_OURS:g})",
        lambda r: _ratio(r["ratios"].get("statsmodels_over_ours")),
    )
    add("ours: peak MB (process / fit)", lambda r: _memory(r["ours_memory"]))
    add("lme4: peak MB (process / fit)", lambda r: _memory(r["lme4"]))
    add("statsmodels: peak MB (process / fit)", lambda r: _memory(r["statsmodels"]))
    add("ours objective - lme4 REMLcrit", lambda r: _number(r.get("objective_difference"), ".3g"))
    add(
        "statsmodels -2 llf - lme4 REMLcrit",
        lambda r: _number(r.get("statsmodels_objective_difference"), ".3g"),
    )
    add("ours: evaluations", lambda r: str(r["ours"].get("evaluations", "-")))
    add("lme4: evaluations", lambda r: str(r["lme4"].get("evaluations", "-")))
    add("statsmodels: evaluations", lambda r: str(r["statsmodels"].get("evaluations", "-")))
    label_width = max(len(label) for label, _ in rows)
    widths = [max(len(cells[k]) for _, cells in rows) for k in range(len(records))]
    lines = []
    for label, cells in rows:
        padded = "  ".join(cell.rjust(w) for cell, w in zip(cells, widths, strict=True))
        lines.append(f"{label.ljust(label_width)}  {padded}")
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def footnotes(records: list[dict[str, Any]], statsmodels_limit: float) -> str:
    """What the table's numbers are, and the peers' warnings and failures."""
    lme4_measures = sorted(
        {r["lme4"]["memory_measure"] for r in records if r["lme4"].get("status") == "ok"}
    )
    notes = [
        "fit s: median of the timed fits after one warm-up (runs in parentheses); lme4 timed "
        "by system.time around lmer only; statsmodels includes model construction and is "
        f"stopped after {statsmodels_limit:g} s per fit.",
        "peak MB: process = peak RSS of the whole process (ours: cold fit in a fresh Python "
        "process, VmHWM; lme4: " + (", ".join(lme4_measures) or "-") + "; statsmodels: "
        "VmHWM of its process); fit = that minus the peak RSS (VmHWM) after loading the data.",
        "evaluations: ours and lme4 count objective evaluations of BOBYQA (ours: the final "
        "optimisation, after one-term fits that choose its start; the iterative solver: "
        "fixed-point steps); statsmodels: calls of loglike and score (gradient) by its "
        "quasi-Newton optimiser.",
        "ours: MixedLM(formula) as a user fits it (solver='auto'); its objective is the exact "
        "REML criterion at its theta, whichever solver found that theta.",
    ]
    for r in records:
        if r["ours"].get("solver"):
            notes.append(
                f"{r['name']}, ours: solver {r['ours']['solver']} ({r['ours']['solver_reason']})"
            )
    for r in records:
        for who in ("ours", "lme4", "statsmodels"):
            result = r[who]
            if result.get("reason"):
                notes.append(f"{r['name']}, {who}: {result['status']}: {result['reason']}")
            for text in result.get("warnings", []):
                notes.append(f"{r['name']}, {who}: {text}")
    return "\n".join(f"* {note}" for note in notes)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        choices=["small", "all"],
        default="all",
        help="small: up to ~100k rows; all: also the ~1M-row data set (default)",
    )
    parser.add_argument("--skip-statsmodels", action="store_true", help="do not run statsmodels")
    parser.add_argument("--skip-lme4", action="store_true", help="do not run lme4")
    parser.add_argument(
        "--statsmodels-limit",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="time allowed per statsmodels fit (default 120)",
    )
    return parser.parse_args(argv)


def run_case(
    case: Case,
    workdir: Path,
    lme4_skip: str | None,
    statsmodels_skip: str | None,
    statsmodels_limit: float,
) -> dict[str, Any]:
    """Run every implementation on one data set and collect the record for it."""
    frame = case.load()
    path = workdir / f"{case.name}.pkl"
    frame.to_pickle(path)
    print(f"[{case.name}] {len(frame):,} rows: ours", end="", flush=True)
    ours = time_ours(case, frame)
    ours_memory = measure_ours_memory(case, path)
    print(", lme4", end="", flush=True)
    lme4 = run_lme4(case, frame, workdir) if lme4_skip is None else {"status": "skipped"}
    print(", statsmodels", end="", flush=True)
    if statsmodels_skip is None:
        statsmodels_result = run_statsmodels(case, path, statsmodels_limit)
    else:
        statsmodels_result = {"status": "skipped"}
    path.unlink()
    print(" - done", flush=True)
    record: dict[str, Any] = {
        "name": case.name,
        "formula": case.formula,
        "rows": len(frame),
        "levels": ours["levels"],
        "ours": ours,
        "ours_memory": ours_memory,
        "lme4": lme4,
        "statsmodels": statsmodels_result,
        "ratios": ratios(ours, lme4, statsmodels_result),
    }
    if lme4.get("status") == "ok":
        record["objective_difference"] = ours["objective"] - lme4["objective"]
        if statsmodels_result.get("status") == "ok":
            difference = statsmodels_result["objective"] - lme4["objective"]
            record["statsmodels_objective_difference"] = difference
    return record


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table and write the JSON file."""
    args = parse_args(argv)
    started = time.perf_counter()
    lme4_skip = "--skip-lme4" if args.skip_lme4 else lme4_unavailable()
    statsmodels_skip = "--skip-statsmodels" if args.skip_statsmodels else statsmodels_unavailable()
    if lme4_skip:
        print(f"lme4 skipped: {lme4_skip}")
    if statsmodels_skip:
        print(f"statsmodels skipped: {statsmodels_skip}")
    cases = [case for case in CASES if args.sizes == "all" or not case.large]
    with tempfile.TemporaryDirectory(prefix="bench_lmm_") as tmp:
        records = [
            run_case(case, Path(tmp), lme4_skip, statsmodels_skip, args.statsmodels_limit)
            for case in cases
        ]
    wall = time.perf_counter() - started
    print()
    print(format_table(records))
    print()
    print(footnotes(records, args.statsmodels_limit))
    print(f"\ntotal wall time {wall:.0f} s")
    document = {
        "benchmark": "bench_lmm",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "options": vars(args),
        "skipped": {"lme4": lme4_skip, "statsmodels": statsmodels_skip},
        "machine": machine(),
        "targets": {
            "ours_over_lme4_at_most": TARGET_OURS_OVER_LME4,
            "statsmodels_over_ours_at_least": TARGET_STATSMODELS_OVER_OURS,
        },
        "wall_seconds": wall,
        "datasets": records,
    }
    write_results(RESULTS, document, ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
