"""Fit time, peak memory and accuracy of the mixed models' solvers from 100k to 10M
rows: MixedLM on Gaussian outcomes with crossed and nested factors, MixedGLM on binary
ones.

Run from the repository root, ``make bench-scale`` or::

    .venv/bin/python benchmarks/bench_scale.py
        [--sizes 100k,1m,3m,10m,1m-nested,10m-nested,100k-bin,1m-bin,10m-bin]
        [--no-lme4] [--lme4-max-rows 1100000] [--exact-max-items 10000]
        [--laplace-max-rows 1100000] [--laplace-timeout 1200]

The data are online-services events (``simulators.simulate("online_services")``, seed
2016, two features). The crossed sizes are fitted with
``y ~ x1 + x2 + (1 | user) + (1 | item)``; ``y`` is Gaussian (fitted by REML) at the
plain sizes and 0/1 (``family="binomial"``) at the ``-bin`` sizes, which have the same
users, items and rows. The ``-nested`` sizes fit the same Gaussian events with the days
nested in users, ``y ~ x1 + x2 + (1 | user) + (1 | user:day)`` (``day`` is the
simulator's day of the event; ~576k user-days at 1m-nested). The ``-slopes`` sizes fit
per-user treatment effects, ``y ~ x1 + x2 + treat + (1 + treat | user) + (1 | item)``,
with 5,000 items at 1m-slopes (the exact solver's dense block is the items'; the user's
2 x 2 blocks make its conditional variances the costly part) and 50,000 at 10m-slopes:

========================  =======  ======  ===========  =========
size                      users    items   events/user  rows
========================  =======  ======  ===========  =========
100k, 100k-bin             10,000     500           10  ~100k
1m, 1m-bin, 1m-nested      50,000   1,000           20  ~1M
1m-slopes                  50,000   5,000           20  ~1M
3m                        150,000  10,000           20  ~3M
10m, 10m-bin, 10m-nested  500,000  50,000           20  ~10M
10m-slopes                500,000  50,000           20  ~10M
========================  =======  ======  ===========  =========

``--sizes`` takes any of them; by default all run, the crossed Gaussian ones first, then
the nested ones, then the binary ones.

Per crossed Gaussian size, these fits run one after another:

* ours, ``MixedLM(solver="auto")`` (always) and ``solver="exact"`` where the items are
  at most ``--exact-max-items`` and auto did not already choose it (never at 10m, whose
  dense block of 50k items needs ~56 GB). Each fit runs in a fresh spawned process that
  simulates the data itself, so that its peak memory is its own and the parent does not
  grow; only ``fit`` is timed, once, with the BLAS threads as they are. Peak memory is
  the process's peak RSS (VmHWM) from the start of the fit, as is and minus its RSS
  after simulating (the peak is reset before the fit through ``/proc/self/clear_refs``;
  where it cannot be, the peak after simulating is subtracted instead, as recorded).
* lme4's ``lmer`` with default control, for at most ``--lme4-max-rows`` rows, in one
  ``Rscript`` process with OpenBLAS (see ``_rscript.py``), killed after 900 s. One
  warm-up fit first on up to 200k rows, none above; ``system.time`` around ``lmer``
  only. Peak memory is the maximum RSS of the R process from ``/usr/bin/time -v`` (else
  R's VmHWM at exit), as is and minus R's VmHWM after reading the data.

Per nested size, the same fits and ``solver="iterative"`` too. Auto is expected to
choose ``"sparse"``, which factors the users' block sparsely after the user-days (each
user-day belongs to one user, so no two users are linked); the exact solver's dense
block of the users would need ~56 GB at 1m-nested (~5.5 TB at 10m-nested) and is never
attempted, its row giving the block and memory from the solvers' estimated costs. The
iterative fit is measured against the sparse one.

Per slopes size, ``solver="iterative"`` too (unless auto chose it), measured against the
exact fit at 1m-slopes; the targets add its time there and at 10m-slopes (with the peak
memory), and the exact fit's time that ``solver="auto"`` estimated against the measured.

Accuracy, against the exact criterion and against lme4 where they ran: the variance
components as the largest relative difference over the rows of ``varcorr_`` (matched
by group and term), and the predictions on the training rows (lme4's ``fitted``) as a
relative RMSE, ``sqrt(mean((a - b)^2)) / sqrt(mean(b^2))`` with ``b`` the reference.
The exact criterion is the exact solver's fit at the crossed sizes and the sparse
solver's at the nested ones (the same criterion, factored sparsely).

Per binary size, ``MixedGLM(family="binomial")`` is fitted in spawned processes as
above: by penalised quasi-likelihood with the iterative solver (``solver="iterative"``,
always), then by the Laplace approximation with the exact factor (``solver="exact"``,
glmer's fit) for at most ``--laplace-max-rows`` rows (never at 10m-bin). The Laplace fit
runs PIRLS at every evaluation of the optimiser and takes minutes at 1M rows; its
process (simulation and fit) is killed after ``--laplace-timeout`` seconds and the row
then says so. PQL shrinks the variance components of binary outcomes with few rows per
unit; it is measured against the Laplace fit: the ratio of the fitted standard
deviations per term (``theta_``, the sds in this family), the largest difference of
the fixed effects in the Laplace fit's standard errors, and the relative RMSE of the
predicted probabilities on the training rows. The simulator's true sds are shown too;
the formula leaves out its other terms (region, treatment, account age, weekday), which
a user's intercept partly absorbs, so the fitted user sd is expected above its truth.

On a machine shared with other work, OpenBLAS's threads can make the exact solver
several times slower than on one thread (its dense factorisations are BLAS calls); the
threads are left as they are, so its times there vary from run to run.
The tables go to stdout and, as JSON, to ``benchmarks/results/bench_scale.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import re
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from _memory import MB, peak_rss_kb, reset_peak_rss, vm_rss_kb
from _results import machine, write_results
from _rscript import LMER_FIT_HELPERS, run_r
from bench_lmm import GNU_TIME, lme4_unavailable

import estimators
import simulators
from estimators.mixed._solvers import estimate_costs
from harness.runner import predicted_mean

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_scale.json"
FORMULA = "y ~ x1 + x2 + (1 | user) + (1 | item)"
GROUPS = ("user", "item")
SLOPES_FORMULA = "y ~ x1 + x2 + treat + (1 + treat | user) + (1 | item)"
NESTED_FORMULA = "y ~ x1 + x2 + (1 | user) + (1 | user:day)"
NESTED_GROUPS = ("user", "user:day")
FIXED_EFFECTS = ("(Intercept)", "x1", "x2")

TARGET_1M_SECONDS = 30.0
TARGET_10M_SECONDS = 300.0
TARGET_10M_PEAK_GB = 8.0
TARGET_LME4_OVER_OURS = 5.0
TARGET_1M_SLOPES_SECONDS = 15.0
LME4_TIMEOUT = 900.0  # seconds for the whole Rscript run of one size
LME4_WARMUP_ROWS = 200_000  # a warm-up lmer fit only up to this many rows
PQL_LABEL = "PQL (iterative)"
LAPLACE_LABEL = "Laplace (exact)"


@dataclass(frozen=True)
class Size:
    """One simulated data set.

    Parameters
    ----------
    name : str
        Label in the table and for ``--sizes``.
    n_users, n_items : int
        Levels the simulator draws from.
    mean_events : float
        Mean events per user.
    exact_allowed : bool
        Whether the exact solver (Laplace for binary outcomes) may be attempted at all
        (its dense block of the factors after the largest).
    family : {"gaussian", "binomial"}
        The outcome: fitted by :class:`estimators.MixedLM` (REML) or
        :class:`estimators.MixedGLM`.
    formula : str
        The model's formula, for ours and lme4.
    groups : tuple of str
        The formula's grouping factors, as ``varcorr_`` and ``n_levels_`` name them
        (``"user:day"`` for an interaction), the users first.
    fit_iterative : bool
        Whether ``solver="iterative"`` is fitted too (Gaussian outcomes, unless auto
        chose it), to measure it against the exact criterion.
    """

    name: str
    n_users: int
    n_items: int
    mean_events: float
    exact_allowed: bool = True
    family: str = "gaussian"
    formula: str = FORMULA
    groups: tuple[str, ...] = GROUPS
    fit_iterative: bool = False

    @property
    def factors(self) -> tuple[str, ...]:
        """The data's columns that the groups are made of, read by R as factors."""
        return tuple(dict.fromkeys(part for group in self.groups for part in group.split(":")))

    @property
    def csv_columns(self) -> tuple[str, ...]:
        """The data's columns that lme4 needs."""
        treat = ("treat",) if "treat" in self.formula else ()
        return ("y", "x1", "x2", *treat, *self.factors)


def _nested(name: str, n_users: int, n_items: int) -> Size:
    return Size(
        name,
        n_users,
        n_items,
        20.0,
        exact_allowed=False,
        formula=NESTED_FORMULA,
        groups=NESTED_GROUPS,
        fit_iterative=True,
    )


SIZES: tuple[Size, ...] = (
    Size("100k", 10_000, 500, 10.0),
    Size("1m", 50_000, 1_000, 20.0),
    Size("3m", 150_000, 10_000, 20.0),
    Size("10m", 500_000, 50_000, 20.0, exact_allowed=False),
    Size("1m-slopes", 50_000, 5_000, 20.0, formula=SLOPES_FORMULA, fit_iterative=True),
    Size(
        "10m-slopes",
        500_000,
        50_000,
        20.0,
        exact_allowed=False,
        formula=SLOPES_FORMULA,
        fit_iterative=True,
    ),
    _nested("1m-nested", 50_000, 1_000),
    _nested("10m-nested", 500_000, 50_000),
    Size("100k-bin", 10_000, 500, 10.0, family="binomial"),
    Size("1m-bin", 50_000, 1_000, 20.0, family="binomial"),
    Size("10m-bin", 500_000, 50_000, 20.0, exact_allowed=False, family="binomial"),
)


def simulate_data(size: Size) -> simulators.Dataset:
    """The size's events, ~``n_users * mean_events`` rows, and the truth behind them."""
    return simulators.simulate(
        "online_services",
        seed=2016,
        n_users=size.n_users,
        n_items=size.n_items,
        n_features=2,
        family=size.family,
        events_per_user={"mean": size.mean_events},
    )


def make_model(size: Size, solver: str) -> estimators.MixedLM | estimators.MixedGLM:
    """The size's model with the given solver: REML for Gaussian outcomes."""
    if size.family == "gaussian":
        return estimators.MixedLM(size.formula, solver=solver)
    return estimators.MixedGLM(size.formula, family=size.family, solver=solver)


# ---------------------------------------------------------------------------
# Ours, one fit per spawned process
# ---------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as Python numbers and lists, for JSON."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _fit_child(
    size: Size,
    solver: str,
    prediction_path: str,
    csv_path: str | None,
    csv_max_rows: int,
    conn: Connection,
) -> None:
    data = simulate_data(size)
    frame = data.frame
    # The simulator has no user-day effect: the truth covers the groups it draws.
    true_sd = data.truth["sd"]
    truth = {
        "sd": {group: float(true_sd[group]) for group in size.groups if group in true_sd},
        "fixed_effects": {name: float(data.truth["fixed_effects"][name]) for name in FIXED_EFFECTS},
    }
    del data
    gc.collect()
    simulate_peak = peak_rss_kb()
    data_rss = vm_rss_kb()
    # The simulator's own peak is not the fit's; without a reset, subtract it instead.
    if data_rss is not None and reset_peak_rss():
        baseline, measure = data_rss, "VmHWM from the start of the fit; fit: minus VmRSS before"
    else:
        baseline, measure = simulate_peak, "VmHWM of the process; fit: minus VmHWM after simulating"
    result: dict[str, Any] = {
        "rows": len(frame),
        "simulate_peak_mb": simulate_peak / MB,
        "truth": truth,
    }
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = make_model(size, solver)
            start = time.perf_counter()
            model.fit(frame)
            seconds = time.perf_counter() - start
        peak = peak_rss_kb()
        # Probabilities for a binary outcome (a classifier's predict gives labels).
        np.save(prediction_path, predicted_mean(model, frame))
        varcorr = [
            [row.grp, row.var1 if isinstance(row.var1, str) else None,
             row.var2 if isinstance(row.var2, str) else None, float(row.vcov)]
            for row in model.varcorr_.itertuples()
        ]  # fmt: skip
        result.update(
            status="ok",
            seconds=seconds,
            peak_mb=peak / MB,
            above_data_mb=(peak - baseline) / MB,
            memory_measure=measure,
            solver=model.solver_,
            solver_reason=model.convergence_.get("solver_reason"),
            convergence=json.loads(json.dumps(model.convergence_, default=_plain)),
            varcorr=varcorr,
            theta=model.theta_.tolist(),
            # Per group the intercept's sd (a slope's and the correlation's rows follow).
            sd={
                row.grp: float(row.sdcor)
                for row in model.varcorr_.itertuples()
                if not isinstance(row.var2, str)
                and (not isinstance(row.var1, str) or row.var1 == "(Intercept)")
            },
            coef={name: float(value) for name, value in model.coef_.items()},
            coef_se={name: float(value) for name, value in model.coef_se_.items()},
            objective=float(model.objective_),
            levels={name: int(n) for name, n in model.n_levels_.items()},
            predictions=prediction_path,
            warnings=sorted({str(w.message) for w in caught}),
        )
        if size.family == "gaussian":
            result.update(sigma=float(model.sigma_), costs=asdict(estimate_costs(model._objective)))
    except Exception as error:  # a refused or failed fit is a row of the table
        result.update(status="error", reason=f"{type(error).__name__}: {error}")
    if csv_path is not None and len(frame) <= csv_max_rows:
        frame[list(size.csv_columns)].to_csv(csv_path, index=False)
    conn.send(result)
    conn.close()


def fit_ours(
    size: Size,
    solver: str,
    workdir: Path,
    csv_path: Path | None = None,
    csv_max_rows: int = 0,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Fit the size's data with its model (``make_model``) in a fresh spawned process.

    Parameters
    ----------
    size : Size
    solver : {"auto", "exact", "sparse", "iterative"}
    workdir : Path
        Where the predictions on the training rows are saved (``.npy``).
    csv_path : Path, optional
        Where the child also writes the data for R (after the fit), when it has at most
        ``csv_max_rows`` rows.
    csv_max_rows : int
    timeout : float, optional
        Seconds after which the process (simulation and fit) is killed.

    Returns
    -------
    dict
        ``status`` ("ok", "error" or "timeout", the last two with a ``reason``) and,
        unless the process was killed, ``rows``, the data's ``truth`` (sds of the
        factors, fixed effects) and, when ok, ``seconds``, ``peak_mb``,
        ``above_data_mb``, ``solver``, ``solver_reason``, ``convergence``, ``varcorr``
        (rows of grp, var1, var2, vcov), ``theta``, ``sd`` (by group), ``coef``,
        ``coef_se``, ``objective``, ``levels`` and the ``predictions`` file; for
        Gaussian outcomes also ``sigma`` and the solvers' estimated ``costs``.
    """
    context = mp.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    prediction_path = workdir / f"{size.name}_{solver}.npy"
    process = context.Process(
        target=_fit_child,
        args=(
            size,
            solver,
            str(prediction_path),
            None if csv_path is None else str(csv_path),
            csv_max_rows,
            sender,
        ),
    )
    process.start()
    sender.close()
    if not receiver.poll(timeout):
        process.kill()
        process.join()
        return {"status": "timeout", "reason": f"not finished in {timeout:g} s"}
    try:
        result = receiver.recv()
    except EOFError:
        result = None
    process.join()
    if result is None:
        # Killed by the kernel's out-of-memory killer, typically (exit code -9).
        return {"status": "error", "reason": f"process died (exit code {process.exitcode})"}
    return result


# ---------------------------------------------------------------------------
# lme4
# ---------------------------------------------------------------------------

LME4_SCALE_SCRIPT = (
    r"""
# Fits one lme4 model for bench_scale.py; prints its results as one JSON line and writes
# the fitted values (little-endian doubles) to a file.
# Arguments: CSV file, formula, factor columns (comma-separated), warm-up fits, fitted file.
"""
    + LMER_FIT_HELPERS
    + r"""
for (i in seq_len(warmups)) invisible(fit_once())
run <- fit_once()
fit <- run$fit
writeBin(as.double(fitted(fit)), args[[5]], endian = "little")
vc <- as.data.frame(VarCorr(fit))
result <- list(
  seconds = run$seconds,
  rows = nrow(data),
  remlcrit = sprintf("%.17g", REMLcrit(fit)),
  feval = fit@optinfo$feval,
  optimizer = fit@optinfo$optimizer,
  theta = I(unname(getME(fit, "theta"))),
  sigma = sigma(fit),
  vc_grp = I(as.character(vc$grp)),
  vc_var1 = I(as.character(vc$var1)),
  vc_var2 = I(as.character(vc$var2)),
  vc_vcov = I(vc$vcov),
  data_hwm_kb = data_hwm_kb,
  exit_hwm_kb = status_kb("VmHWM"),
  notes = I(unique(notes)),
  lme4 = as.character(packageVersion("lme4")),
  r = R.version.string,
  blas = extSoftVersion()[["BLAS"]]
)
cat("BENCH_JSON ", toJSON(result, auto_unbox = TRUE, digits = NA, na = "null"), "\n", sep = "")
"""
)


def run_lme4(size: Size, csv: Path, rows: int, workdir: Path) -> dict[str, Any]:
    """Fit the CSV's data with lme4's lmer in an Rscript process.

    Parameters
    ----------
    size : Size
        Its formula, and its factors' columns, which R reads as factors.
    csv : Path
        The data (``size.csv_columns``).
    rows : int
        Its rows; a warm-up fit runs first up to ``LME4_WARMUP_ROWS``.
    workdir : Path
        Directory for the R script, its fitted values and GNU time's report.

    Returns
    -------
    dict
        ``status`` ("ok" or "error" with a ``reason``) and, when ok, ``seconds``,
        ``objective`` (REMLcrit), ``theta``, ``sigma``, ``varcorr`` (rows of grp, var1,
        var2, vcov), memory, R's notes and the ``predictions`` file (``fitted``).
    """
    script = workdir / "bench_scale.R"
    script.write_text(LME4_SCALE_SCRIPT)
    fitted = workdir / f"{csv.stem}_lme4.f64"
    warmups = "1" if rows <= LME4_WARMUP_ROWS else "0"
    factors = ",".join(size.factors)
    command = ["Rscript", str(script), str(csv), size.formula, factors, warmups, str(fitted)]
    report = workdir / "time.txt"
    if GNU_TIME.exists():
        command = [str(GNU_TIME), "-v", "-o", str(report), *command]
    result = run_r(command, LME4_TIMEOUT)
    if result["status"] == "timeout":
        result = {"status": "error", "reason": f"Rscript ran longer than {LME4_TIMEOUT:.0f} s"}
    if result["status"] != "ok":
        return result
    out = result["out"]
    peak_kb, measure = out["exit_hwm_kb"], "VmHWM of the R process at exit"
    if GNU_TIME.exists():
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", report.read_text())
        if found:
            peak_kb, measure = float(found.group(1)), "max RSS of the R process (GNU time -v)"
    varcorr = [
        list(row)
        for row in zip(out["vc_grp"], out["vc_var1"], out["vc_var2"], out["vc_vcov"], strict=True)
    ]
    return {
        "status": "ok",
        "rows": int(out["rows"]),
        "seconds": float(out["seconds"]),
        "warmups": int(warmups),
        "objective": float(out["remlcrit"]),
        "evaluations": int(out["feval"]),
        "optimizer": out["optimizer"],
        "theta": out["theta"],
        "sigma": float(out["sigma"]),
        "varcorr": varcorr,
        "peak_mb": peak_kb / MB,
        "above_data_mb": (peak_kb - out["data_hwm_kb"]) / MB,
        "memory_measure": measure,
        "predictions": str(fitted),
        "warnings": out["notes"],
        "versions": {"lme4": out["lme4"], "R": out["r"], "BLAS": out["blas"]},
    }


# ---------------------------------------------------------------------------
# Accuracy
# ---------------------------------------------------------------------------


def variance_difference(varcorr: list[list[Any]], reference: list[list[Any]]) -> float:
    """Largest relative difference of the variance components, matched by group and terms.

    Parameters
    ----------
    varcorr, reference : list of [grp, var1, var2, vcov]
        Rows of ``varcorr_`` (or lme4's ``as.data.frame(VarCorr(fit))``); var1 and var2
        are None where empty (the residual).

    Returns
    -------
    float
        ``max |vcov - vcov_ref| / |vcov_ref|`` over the reference's rows.

    Raises
    ------
    ValueError
        When the two do not have the same rows.
    """
    values = {tuple(row[:3]): row[3] for row in varcorr}
    expected = {tuple(row[:3]): row[3] for row in reference}
    if values.keys() != expected.keys():
        raise ValueError(f"variance components differ: {sorted(values)} vs {sorted(expected)}")
    return max(abs(values[key] - value) / abs(value) for key, value in expected.items())


def relative_rmse(values: np.ndarray, reference: np.ndarray) -> float:
    """``sqrt(mean((values - reference)^2)) / sqrt(mean(reference^2))``."""
    if values.shape != reference.shape:
        raise ValueError(f"{values.shape[0]:,} predictions against {reference.shape[0]:,}")
    return float(np.sqrt(np.mean((values - reference) ** 2) / np.mean(reference**2)))


def _load_predictions(result: dict[str, Any]) -> np.ndarray:
    path = result["predictions"]
    return np.load(path) if path.endswith(".npy") else np.fromfile(path, dtype="<f8")


def compare(result: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """Variance-component difference and prediction relative RMSE of ``result`` against
    ``reference`` (both fits that succeeded); a failed comparison gives its reason."""
    try:
        return {
            "variance_components": variance_difference(result["varcorr"], reference["varcorr"]),
            # Variances alone: a covariance near zero makes any relative difference large.
            "variances": variance_difference(
                *([row for row in fit["varcorr"] if row[2] is None] for fit in (result, reference))
            ),
            "predictions": relative_rmse(_load_predictions(result), _load_predictions(reference)),
        }
    except ValueError as error:
        return {"error": str(error)}


# ---------------------------------------------------------------------------
# One size
# ---------------------------------------------------------------------------


def _exact_not_run(size: Size, auto: dict[str, Any], exact_max_items: int) -> str | None:
    """Why the exact solver is not attempted at this size, or None to attempt it."""
    if size.exact_allowed and size.n_items <= exact_max_items:
        return None
    crossed = "item" in size.groups
    if "costs" in auto:
        dense, need = auto["costs"]["dense"], auto["costs"]["exact_bytes"]
        amount = f"{need / 2**30:,.0f} GB" if need >= 2**30 else f"{need / 2**20:.0f} MB"
        why = f"dense {dense:,}-square block needs ~{amount}"
    else:
        why = f"{size.n_items:,} items" if crossed else "no cost estimate (ours (auto) failed)"
    bound = (
        f"--exact-max-items {exact_max_items:,}"
        if crossed and size.n_items > exact_max_items
        else f"never at {size.name}"
    )
    return f"not run: {why} ({bound})"


def exact_criterion(fits: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The fit the others' "vs exact" compares with: the exact solver's, else the sparse
    solver's (the same criterion, factored sparsely); None when neither fitted."""
    for solver in ("exact", "sparse"):
        for fit in fits:
            if fit.get("solver") == solver:
                return fit
    return None


def run_size(size: Size, args: argparse.Namespace, workdir: Path, lme4_skip: str | None) -> dict:
    """Fit one Gaussian size with every solver that is attempted and compare them."""
    csv = workdir / f"{size.name}.csv"
    want_csv = lme4_skip is None
    print(f"[{size.name}] ours (auto)", end="", flush=True)
    auto = fit_ours(size, "auto", workdir, csv if want_csv else None, args.lme4_max_rows)
    auto["label"] = f"{auto.get('solver', '?')} (auto)"
    fits: list[dict[str, Any]] = [auto]

    if size.fit_iterative and auto.get("solver") != "iterative":
        print(", ours (iterative)", end="", flush=True)
        iterative = fit_ours(size, "iterative", workdir)
        iterative["label"] = "iterative"
        fits.append(iterative)

    if auto.get("solver") != "exact":
        reason = _exact_not_run(size, auto, args.exact_max_items)
        if reason is None:
            print(", ours (exact)", end="", flush=True)
            exact = fit_ours(size, "exact", workdir)
        else:
            exact = {"status": "not_run", "reason": reason}
        exact["label"] = "exact"
        fits.append(exact)

    rows = auto.get("rows")
    if lme4_skip is not None:
        lme4: dict[str, Any] = {"status": "not_run", "reason": f"not run: {lme4_skip}"}
    elif rows is None:
        lme4 = {"status": "error", "reason": "the data were not simulated (ours (auto) died)"}
    elif rows > args.lme4_max_rows:
        lme4 = {
            "status": "not_run",
            "reason": f"not run: {rows:,} rows > --lme4-max-rows {args.lme4_max_rows:,}",
        }
    elif not csv.exists():
        lme4 = {"status": "error", "reason": "the data for R were not written"}
    else:
        print(", lme4", end="", flush=True)
        lme4 = run_lme4(size, csv, rows, workdir)
    csv.unlink(missing_ok=True)
    lme4["label"] = "lme4"
    fits.append(lme4)
    print(" - done", flush=True)

    criterion = exact_criterion(fits)
    for fit in fits:
        for name, reference in (("exact", criterion), ("lme4", lme4)):
            if fit is reference:
                fit[f"vs_{name}"] = "reference"
            elif fit.get("status") == "ok" and reference and reference.get("status") == "ok":
                fit[f"vs_{name}"] = compare(fit, reference)
    for fit in fits:
        if "predictions" in fit:
            Path(fit.pop("predictions")).unlink(missing_ok=True)

    speed = None
    if auto.get("status") == "ok" and lme4.get("status") == "ok":
        speed = lme4["seconds"] / auto["seconds"]
    return {
        "size": asdict(size),
        "name": size.name,
        "formula": size.formula,
        "groups": list(size.groups),
        "rows": rows,
        "levels": auto.get("levels", {}),
        "exact_criterion": None if criterion is None else criterion["label"],
        "fits": fits,
        "lme4_over_auto_seconds": speed,
    }


# ---------------------------------------------------------------------------
# One binary size: PQL against Laplace
# ---------------------------------------------------------------------------


def pql_against_laplace(
    pql: dict[str, Any], laplace: dict[str, Any], groups: tuple[str, ...]
) -> dict[str, Any]:
    """PQL's departure from the Laplace fit (both fits that succeeded) on the ``groups``.

    Returns
    -------
    dict
        ``sd_ratio`` (PQL's sd over Laplace's, by factor), ``coef_difference`` (by name,
        ``|beta_PQL - beta_Laplace|`` divided by Laplace's standard error where that is
        finite and positive for every coefficient, else as is: ``coef_difference_unit``
        says which), ``coef_max_difference`` and its ``coef_max_name``, and
        ``predictions``, the probabilities' relative RMSE against Laplace's; or ``error``
        with the reason a comparison failed.
    """
    try:
        ratios = {}
        for group in groups:
            reference = laplace["sd"][group]
            ratios[group] = pql["sd"][group] / reference if reference > 0 else float("inf")
        names = list(laplace["coef"])
        differences = {name: abs(pql["coef"][name] - laplace["coef"][name]) for name in names}
        se = laplace["coef_se"]
        scaled = all(np.isfinite(se[name]) and se[name] > 0 for name in names)
        if scaled:
            differences = {name: value / se[name] for name, value in differences.items()}
        largest = max(differences, key=differences.__getitem__)
        return {
            "sd_ratio": ratios,
            "coef_difference": differences,
            "coef_difference_unit": "Laplace standard errors" if scaled else "absolute",
            "coef_max_difference": differences[largest],
            "coef_max_name": largest,
            "predictions": relative_rmse(_load_predictions(pql), _load_predictions(laplace)),
        }
    except (KeyError, ValueError) as error:
        return {"error": f"{type(error).__name__}: {error}"}


def _laplace_not_run(size: Size, rows: int | None, laplace_max_rows: int) -> str | None:
    """Why the Laplace fit is not attempted at this size, or None to attempt it."""
    if rows is None:
        return f"not run: the number of rows is unknown ({PQL_LABEL} died)"
    if rows > laplace_max_rows:
        return f"not run: {rows:,} rows > --laplace-max-rows {laplace_max_rows:,}"
    if not size.exact_allowed:
        return f"not run: dense block of {size.n_items:,} items (never at {size.name})"
    return None


def run_binary_size(size: Size, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Fit one binary size by PQL and, where attempted, by Laplace, and compare them."""
    print(f"[{size.name}] {PQL_LABEL}", end="", flush=True)
    pql = fit_ours(size, "iterative", workdir)
    pql["label"] = PQL_LABEL
    rows = pql.get("rows")
    reason = _laplace_not_run(size, rows, args.laplace_max_rows)
    if reason is None:
        print(f", {LAPLACE_LABEL}", end="", flush=True)
        laplace = fit_ours(size, "exact", workdir, timeout=args.laplace_timeout)
    else:
        laplace = {"status": "not_run", "reason": reason}
    laplace["label"] = LAPLACE_LABEL
    print(" - done", flush=True)

    comparison = None
    if pql.get("status") == "ok" and laplace.get("status") == "ok":
        comparison = pql_against_laplace(pql, laplace, size.groups)
    fits = [pql, laplace]
    for fit in fits:
        if "predictions" in fit:
            Path(fit.pop("predictions")).unlink(missing_ok=True)
    return {
        "size": asdict(size),
        "name": size.name,
        "formula": size.formula,
        "groups": list(size.groups),
        "family": size.family,
        "rows": rows,
        "levels": pql.get("levels") or laplace.get("levels") or {},
        "truth": pql.get("truth") or laplace.get("truth"),
        "fits": fits,
        "pql_vs_laplace": comparison,
    }


# ---------------------------------------------------------------------------
# Table, targets, JSON
# ---------------------------------------------------------------------------

COLUMNS = (
    "size",
    "rows",
    "users",
    "other factor",
    "solver",
    "seconds",
    "peak MB (process / fit)",
    "VC rel. diff vs exact",
    "pred rel. RMSE vs exact",
    "VC rel. diff vs lme4",
    "pred rel. RMSE vs lme4",
)


def _accuracy(entry: Any, key: str) -> str:
    if entry is None:
        return "-"
    if entry == "reference":
        return "ref"
    if "error" in entry:
        return "error"
    return f"{entry[key]:.1e}"


def _head(record: dict[str, Any], fit: dict[str, Any]) -> list[str]:
    """The cells naming a fit: size, rows, users, the other factor's levels (and its
    name: item, or user:day at the nested sizes) and the fit's label."""
    levels = record["levels"]
    users, other = record["groups"]
    return [
        record["name"],
        "-" if record["rows"] is None else f"{record['rows']:,}",
        f"{levels[users]:,}" if users in levels else "-",
        f"{levels[other]:,} ({other})" if other in levels else f"- ({other})",
        fit["label"],
    ]


def _not_ok(fit: dict[str, Any]) -> str:
    """What the table says of a fit that did not succeed."""
    return fit["reason"] if fit["status"] in ("not_run", "timeout") else f"failed: {fit['reason']}"


def _aligned(columns: tuple[str, ...], rows: list[tuple[list[str], str | None]]) -> str:
    """Right-aligned columns; a row with a reason has only its head cells, then the reason."""
    cells = [list(columns)] + [head for head, reason in rows if reason is None]
    widths = [max(len(row[k]) for row in cells) for k in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("-" * len(lines[0]))
    for head, reason in rows:
        if reason is None:
            lines.append("  ".join(c.rjust(w) for c, w in zip(head, widths, strict=True)))
        else:
            padded = "  ".join(c.rjust(w) for c, w in zip(head, widths, strict=False))
            lines.append(f"{padded}  {reason}")
    return "\n".join(lines)


def _peak(fit: dict[str, Any]) -> str:
    return f"{fit['peak_mb']:,.0f} / {fit['above_data_mb']:,.0f}"


def format_table(records: list[dict[str, Any]]) -> str:
    """One row per size and fit; a fit that did not run shows its reason after the solver.

    Parameters
    ----------
    records : list of dict
        One per size, as written to the JSON file.

    Returns
    -------
    str
    """
    rows: list[tuple[list[str], str | None]] = []
    for record in records:
        for fit in record["fits"]:
            if fit["status"] != "ok":
                rows.append((_head(record, fit), _not_ok(fit)))
                continue
            cells = [
                f"{fit['seconds']:.1f}",
                _peak(fit),
                _accuracy(fit.get("vs_exact"), "variance_components"),
                _accuracy(fit.get("vs_exact"), "predictions"),
                _accuracy(fit.get("vs_lme4"), "variance_components"),
                _accuracy(fit.get("vs_lme4"), "predictions"),
            ]
            rows.append((_head(record, fit) + cells, None))
    return _aligned(COLUMNS, rows)


BINARY_COLUMNS = (
    "size",
    "rows",
    "users",
    "other factor",
    "method",
    "seconds",
    "peak MB (process / fit)",
    "theta user / item",
    "truth sd user / item",
    "theta ratio PQL/Laplace",
    "max |beta PQL - Laplace| / se",
    "prob rel. RMSE vs Laplace",
)


def _pair(values: dict[str, float] | None, groups: list[str], digits: int = 3) -> str:
    if not values:
        return "-"
    return " / ".join(f"{values[group]:.{digits}f}" for group in groups)


def _against_laplace(record: dict[str, Any], fit: dict[str, Any]) -> list[str]:
    """The comparison cells: on the PQL row the measures, on the Laplace row "ref"."""
    comparison = record["pql_vs_laplace"]
    if comparison is None:
        return ["-"] * 3
    if fit["label"] == LAPLACE_LABEL:
        return ["ref"] * 3
    if "error" in comparison:
        return ["error"] * 3
    unit = " (abs)" if comparison["coef_difference_unit"] == "absolute" else ""
    return [
        _pair(comparison["sd_ratio"], record["groups"]),
        f"{comparison['coef_max_difference']:.2f}{unit}",
        f"{comparison['predictions']:.1e}",
    ]


def format_binary_table(records: list[dict[str, Any]]) -> str:
    """One row per binary size and fit, as ``format_table``.

    Parameters
    ----------
    records : list of dict
        One per binary size, as written to the JSON file.

    Returns
    -------
    str
    """
    rows: list[tuple[list[str], str | None]] = []
    for record in records:
        truth = _pair((record["truth"] or {}).get("sd"), record["groups"])
        for fit in record["fits"]:
            if fit["status"] != "ok":
                rows.append((_head(record, fit), _not_ok(fit)))
                continue
            cells = [f"{fit['seconds']:.1f}", _peak(fit), _pair(fit["sd"], record["groups"]), truth]
            rows.append((_head(record, fit) + cells + _against_laplace(record, fit), None))
    return _aligned(BINARY_COLUMNS, rows)


def bias_lines(records: list[dict[str, Any]]) -> list[str]:
    """PQL's bias against Laplace, per binary size where both fitted."""
    lines = []
    for record in records:
        comparison = record["pql_vs_laplace"]
        if comparison is None:
            continue
        where = f"{record['name']}: PQL bias against Laplace"
        if "error" in comparison:
            lines.append(f"{where}: not compared ({comparison['error']})")
            continue
        ratios = ", ".join(
            f"{group} {comparison['sd_ratio'][group]:.3f}" for group in record["groups"]
        )
        unit = "(absolute)" if comparison["coef_difference_unit"] == "absolute" else "se"
        lines.append(
            f"{where}: theta ratios {ratios}; fixed effects at most "
            f"{comparison['coef_max_difference']:.2f} {unit} apart "
            f"({comparison['coef_max_name']}); probabilities rel. RMSE "
            f"{comparison['predictions']:.1e}"
        )
    return lines


def speed_lines(records: list[dict[str, Any]]) -> list[str]:
    """lme4 seconds over ours (auto) seconds, per size."""
    lines = []
    for record in records:
        auto, lme4 = record["fits"][0], record["fits"][-1]
        if record["lme4_over_auto_seconds"] is None:
            lines.append(f"{record['name']}: lme4 / ours (auto): -")
        else:
            lines.append(
                f"{record['name']}: lme4 / ours (auto) = {record['lme4_over_auto_seconds']:.1f}x "
                f"({lme4['seconds']:.1f} s / {auto['seconds']:.1f} s)"
            )
    return lines


def check_targets(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The issue's targets, each with its measured value and whether it is met (None when
    that size was not run or did not fit)."""
    by_name = {record["name"]: record for record in records}

    def auto(name: str) -> dict[str, Any] | None:
        fit = by_name[name]["fits"][0] if name in by_name else None
        return fit if fit and fit["status"] == "ok" else None

    one, ten = auto("1m"), auto("10m")
    speed = by_name["1m"]["lme4_over_auto_seconds"] if "1m" in by_name else None
    unmeasured = {"value": None, "met": None}
    targets = dict.fromkeys(
        (
            f"crossed 1M rows under {TARGET_1M_SECONDS:g} s",
            f"10M rows under {TARGET_10M_SECONDS:g} s and {TARGET_10M_PEAK_GB:g} GB peak",
            f"1M-row fit at least {TARGET_LME4_OVER_OURS:g}x faster than lme4",
        ),
        unmeasured,
    )
    names = list(targets)
    if one is not None:
        targets[names[0]] = {
            "value": f"{one['seconds']:.1f} s",
            "met": one["seconds"] < TARGET_1M_SECONDS,
        }
    if ten is not None:
        peak_gb = ten["peak_mb"] / 1024
        targets[names[1]] = {
            "value": f"{ten['seconds']:.1f} s, {peak_gb:.1f} GB",
            "met": ten["seconds"] < TARGET_10M_SECONDS and peak_gb < TARGET_10M_PEAK_GB,
        }
    if speed is not None:
        targets[names[2]] = {"value": f"{speed:.1f}x", "met": speed >= TARGET_LME4_OVER_OURS}
    targets.update(_slopes_targets(by_name))
    return targets


def _fit_labelled(record: dict[str, Any] | None, label: str) -> dict[str, Any] | None:
    """The record's ok fit whose label (or solver, for auto) is ``label``."""
    for fit in (record or {}).get("fits", []):
        if fit.get("status") == "ok" and label in (fit.get("label"), fit.get("solver")):
            return fit
    return None


def _slopes_targets(by_name: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Random slopes: the iterative fit's time at 1M rows (and its agreement with the
    exact one), at 10M rows its time and peak, and the exact fit's estimated time
    against its measured one."""
    one = by_name.get("1m-slopes")
    iterative, exact = _fit_labelled(one, "iterative"), _fit_labelled(one, "exact")
    ten = _fit_labelled(by_name.get("10m-slopes"), "iterative")
    names = (
        f"slopes 1M rows iterative under {TARGET_1M_SLOPES_SECONDS:g} s",
        f"slopes 10M rows iterative under {TARGET_10M_SECONDS:g} s and "
        f"{TARGET_10M_PEAK_GB:g} GB peak",
        "slopes 1M rows: the exact fit's estimated time within 1.5x of its measured",
    )
    targets = {name: {"value": None, "met": None} for name in names}
    if iterative is not None:
        agreement = iterative.get("vs_exact")
        detail = (
            f" (vs exact: variances rel. diff {agreement['variances']:.2g}, pred rel. RMSE "
            f"{agreement['predictions']:.2g})"
            if isinstance(agreement, dict) and "variances" in agreement
            else ""
        )
        targets[names[0]] = {
            "value": f"{iterative['seconds']:.1f} s{detail}",
            "met": iterative["seconds"] < TARGET_1M_SLOPES_SECONDS,
        }
    if ten is not None:
        peak_gb = ten["peak_mb"] / 1024
        targets[names[1]] = {
            "value": f"{ten['seconds']:.1f} s, {peak_gb:.1f} GB",
            "met": ten["seconds"] < TARGET_10M_SECONDS and peak_gb < TARGET_10M_PEAK_GB,
        }
    if exact is not None and "costs" in exact:
        estimate = exact["costs"]["exact_seconds"]
        ratio = estimate / exact["seconds"]
        targets[names[2]] = {
            "value": f"estimated {estimate:.1f} s, measured {exact['seconds']:.1f} s",
            "met": 1 / 1.5 <= ratio <= 1.5,
        }
    return targets


def format_targets(targets: dict[str, dict[str, Any]]) -> str:
    """One line per target: met, missed or not measured."""
    lines = []
    for name, target in targets.items():
        if target["met"] is None:
            lines.append(f"{name}: not measured")
        else:
            lines.append(f"{name}: {target['value']}: {'met' if target['met'] else 'missed'}")
    return "\n".join(lines)


def footnotes(records: list[dict[str, Any]]) -> str:
    """The columns, which fit is the exact criterion, memory measures, why auto chose
    its solver, and the fits' warnings."""
    notes = [
        "seconds: one fit (lme4: after one warm-up fit up to "
        f"{LME4_WARMUP_ROWS:,} rows); peak MB: process = peak RSS while fitting, fit = "
        "that minus the RSS with the data loaded.",
        "VC rel. diff: max |vcov - vcov_ref| / vcov_ref over the variance components; pred "
        "rel. RMSE: of the predictions (lme4: fitted values) on the training rows.",
    ]
    references: dict[str, list[str]] = {}
    for record in records:
        references.setdefault(record["exact_criterion"] or "none fitted", []).append(record["name"])
    where = "; ".join(f"{label} at {', '.join(names)}" for label, names in references.items())
    if any(label.startswith("sparse") for label in references):
        where += "; the sparse solver computes the exact solver's criterion, factored sparsely"
    notes.append(f"vs exact: against the fit of the exact criterion (ref): {where}.")
    notes += _memory_notes(records)
    for record in records:
        for fit in record["fits"]:
            where = f"{record['name']}, {fit['label']}"
            if fit.get("solver_reason") and fit["label"].endswith("(auto)"):
                notes.append(f"{where}: {fit['solver_reason']}")
            for key in ("vs_exact", "vs_lme4"):
                if isinstance(fit.get(key), dict) and "error" in fit[key]:
                    notes.append(f"{where}, {key}: {fit[key]['error']}")
            notes += [f"{where}: {text}" for text in fit.get("warnings", [])]
    return "\n".join(f"* {note}" for note in notes)


def _memory_notes(records: list[dict[str, Any]]) -> list[str]:
    """How the fits' peak memory was measured, once per way."""
    measures = sorted(
        {fit["memory_measure"] for r in records for fit in r["fits"] if "memory_measure" in fit}
    )
    return [f"memory measured as: {measure}" for measure in measures]


def _convergence_note(fit: dict[str, Any]) -> str:
    """How a binary fit converged: PQL's outer iterations and CG products, or the Laplace
    fit's two optimiser stages and PIRLS."""
    info = fit["convergence"]
    if fit["label"] == PQL_LABEL:
        return (
            f"{info.get('outer_iterations')} outer iterations, "
            f"{info.get('cg_products', 0):,} CG products, "
            f"{'converged' if info.get('converged') else 'NOT converged'}"
        )
    stages = [info.get(stage, {}) for stage in ("stage1", "stage2")]
    converged = all(stage.get("converged") for stage in stages) and info.get("pirls_converged")
    return (
        f"stage 1 {stages[0].get('evaluations')} and stage 2 {stages[1].get('evaluations')} "
        f"evaluations, {'converged' if converged else 'NOT converged'}, standard errors "
        f"{info.get('standard_errors')}"
    )


def binary_footnotes(records: list[dict[str, Any]]) -> str:
    """What the binary table's columns are, how each fit converged, and its warnings."""
    notes = [
        "seconds: one fit; peak MB: process = peak RSS while fitting, fit = that minus the "
        "RSS with the data loaded.",
        "theta: the fitted sds of the user and item intercepts; truth: the simulator's (the "
        "formula leaves out its other terms); theta ratio: PQL's over Laplace's, user / item.",
        "max |beta PQL - Laplace| / se: the largest difference of the fixed effects in the "
        "Laplace fit's standard errors ((abs): as is); prob rel. RMSE: of the predicted "
        "probabilities on the training rows against Laplace's.",
    ]
    notes += _memory_notes(records)
    for record in records:
        for fit in record["fits"]:
            where = f"{record['name']}, {fit['label']}"
            if fit["status"] == "ok":
                notes.append(f"{where}: {_convergence_note(fit)}")
            notes += [f"{where}: {text}" for text in fit.get("warnings", [])]
    return "\n".join(f"* {note}" for note in notes)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [size.name for size in SIZES]
    parser.add_argument(
        "--sizes",
        default=",".join(names),
        help=f"comma-separated subset of {','.join(names)} (default: all, in this order)",
    )
    parser.add_argument("--no-lme4", action="store_true", help="do not run lme4")
    parser.add_argument(
        "--lme4-max-rows",
        type=int,
        default=1_100_000,
        help="run lme4 up to this many rows (default 1,100,000)",
    )
    parser.add_argument(
        "--exact-max-items",
        type=int,
        default=10_000,
        help="fit the exact solver up to this many items (default 10,000; never at 10m "
        "or the nested sizes)",
    )
    parser.add_argument(
        "--laplace-max-rows",
        type=int,
        default=1_100_000,
        help="binary sizes: fit by Laplace up to this many rows (default 1,100,000; "
        "never at 10m-bin)",
    )
    parser.add_argument(
        "--laplace-timeout",
        type=float,
        default=1200.0,
        help="binary sizes: kill a Laplace fit after this many seconds (default 1200)",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.sizes.split(",")) - set(names))
    if unknown:
        parser.error(f"--sizes: unknown {', '.join(unknown)}; choose from {', '.join(names)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables, the targets and PQL's bias against Laplace,
    and write the JSON file."""
    args = parse_args(argv)
    started = time.perf_counter()
    chosen = set(args.sizes.split(","))
    sizes = [size for size in SIZES if size.name in chosen]
    gaussian = [size for size in sizes if size.family == "gaussian"]
    binary = [size for size in sizes if size.family != "gaussian"]
    if not gaussian:
        lme4_skip = "no Gaussian size"
    else:
        lme4_skip = "--no-lme4" if args.no_lme4 else lme4_unavailable()
        if lme4_skip:
            print(f"lme4 skipped: {lme4_skip}")
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        records = [run_size(size, args, Path(tmp), lme4_skip) for size in gaussian]
        binary_records = [run_binary_size(size, args, Path(tmp)) for size in binary]
    wall = time.perf_counter() - started
    targets = check_targets(records)
    if records:
        print()
        print(format_table(records))
        print()
        print("\n".join(speed_lines(records)))
        print()
        print(format_targets(targets))
        print()
        print(footnotes(records))
    if binary_records:
        print()
        print(format_binary_table(binary_records))
        print()
        print("\n".join(bias_lines(binary_records)) or "PQL bias against Laplace: not measured")
        print()
        print(binary_footnotes(binary_records))
    print(f"\ntotal wall time {wall:.0f} s")
    document = {
        "benchmark": "bench_scale",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "options": vars(args),
        "lme4_skipped": lme4_skip,
        "machine": machine(),
        "targets": targets,
        "wall_seconds": wall,
        "sizes": records,
        "binary_sizes": binary_records,
    }
    write_results(RESULTS, document, ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
