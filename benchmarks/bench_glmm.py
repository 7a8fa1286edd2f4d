"""Fit time of mixbench's MixedGLM against lme4's glmer.

Run from the repository root, ``make bench-glmm`` or::

    .venv/bin/python benchmarks/bench_glmm.py [--skip-lme4] [--skip-negative-binomial]
        [--rows N] [--users N]
        [--ctr-users N [N ...]] [--lme4-timeout SECONDS]
        [--cases {cbpp,ctr,binary,negative_binomial} ...]

Cases, every one fitted by both with the Laplace approximation:

* cbpp: ``cbind(incidence, size - incidence) ~ period + (1 | herd)`` (ours: the
  proportion with ``weights="size"``);
* ctr_experiment data (``simulators.simulate("ctr_experiment", seed=1, n_users=N)``,
  about 22 impressions per user) at 1k, 10k and 100k users: ``click ~ display +
  (1 | user)``; a user has at most four distinct rows (display x click), so the rows
  merge into patterns;
* simulated 0/1 outcomes, 1M rows and 50k users by default: ``y ~ treatment + x +
  (1 | user)`` with a continuous covariate, so that nothing merges;
* negative binomial counts, ours ``family="negative_binomial"`` against ``glmer.nb``
  (theta estimated by both): the fixture's simulated counts (``counts_nb.csv.gz``,
  ``y ~ x + treat + (1 | g)``, 1,500 rows) and grouseticks (``TICKS ~ YEAR + cHEIGHT +
  (1 | BROOD) + (1 | LOCATION)``, 403 rows).

Ours: one warm-up fit on cbpp, then the median of the timed fits in this process. glmer:
``glmer(formula, data, family = binomial)`` with default control (``glmer.nb(formula,
data)`` for the counts), by ``benchmarks/bench_glmm.R`` in one ``Rscript`` process per
case with ``R_LD_LIBRARY_PATH`` pointing at OpenBLAS, ``system.time`` around
the ``glmer`` call only, stopped after ``--lme4-timeout`` seconds (the row then says it
did not finish). The table goes to stdout and, as JSON, to
``benchmarks/results/bench_glmm.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _rscript import run_r

import estimators
import simulators

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "estimators" / "fixtures" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "bench_glmm.json"
LME4_TIMEOUT = 1200.0  # seconds; glmer on millions of rows may take far longer

GLMER_SCRIPT = Path(__file__).with_name("bench_glmm.R")
CASE_KINDS = ("cbpp", "ctr", "binary", "negative_binomial")


@dataclass
class Case:
    name: str
    formula: str  # ours
    formula_r: str
    factors: tuple[str, ...]
    frame: pd.DataFrame
    weights: str | None = None
    repeats: int = 1
    lme4_repeats: int = 1
    family: str = "binomial"


def cbpp_case() -> Case:
    frame = pd.read_csv(FIXTURES / "cbpp.csv.gz")
    for column in ("herd", "period"):
        frame[column] = frame[column].astype(str)
    return Case(
        name="cbpp",
        formula="proportion ~ period + (1 | herd)",
        formula_r="cbind(incidence, size - incidence) ~ period + (1 | herd)",
        factors=("herd", "period"),
        frame=frame,
        weights="size",
        repeats=5,
        lme4_repeats=5,
    )


def ctr_case(n_users: int) -> Case:
    frame = simulators.simulate("ctr_experiment", seed=1, n_users=n_users).frame
    frame = frame[["user", "display", "click"]].assign(user=frame["user"].astype(str))
    return Case(
        name=f"ctr_experiment ({n_users // 1000}k users)",
        formula="click ~ display + (1 | user)",
        formula_r="click ~ display + (1 | user)",
        factors=("user",),
        frame=frame,
        repeats=3 if n_users <= 10_000 else 1,
    )


def negative_binomial_cases() -> list[Case]:
    """glmer.nb's model on the fixtures' simulated overdispersed counts and on
    grouseticks."""
    counts = pd.read_csv(FIXTURES / "counts_nb.csv.gz")
    ticks = pd.read_csv(FIXTURES / "grouseticks.csv.gz")
    for column in ("BROOD", "LOCATION", "YEAR"):
        ticks[column] = ticks[column].astype(str)
    ticks_formula = "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | LOCATION)"
    return [
        Case(
            name="counts_nb (glmer.nb)",
            formula="y ~ x + treat + (1 | g)",
            formula_r="y ~ x + treat + (1 | g)",
            factors=("g",),
            frame=counts,
            family="negative_binomial",
            repeats=3,
            lme4_repeats=3,
        ),
        Case(
            name="grouseticks (glmer.nb)",
            formula=ticks_formula,
            formula_r=ticks_formula,
            factors=("BROOD", "LOCATION", "YEAR"),
            frame=ticks[["TICKS", "YEAR", "cHEIGHT", "BROOD", "LOCATION"]],
            family="negative_binomial",
            repeats=3,
            lme4_repeats=3,
        ),
    ]


def simulated(n_rows: int, n_users: int, seed: int = 2024) -> pd.DataFrame:
    """0/1 outcomes with a user intercept (sd 0.8), a binary treatment, a three-level
    segment and a continuous covariate."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, n_users, n_rows)
    treatment = rng.integers(0, 2, n_rows)
    segment = rng.integers(0, 3, n_rows)
    x = rng.normal(size=n_rows)
    eta = -1 + 0.3 * treatment + 0.2 * segment + 0.4 * x
    eta += rng.normal(scale=0.8, size=n_users)[user]
    return pd.DataFrame(
        {
            "user": [f"u{k}" for k in user],
            "treatment": treatment,
            "segment": [f"s{k}" for k in segment],
            "x": x,
            "y": rng.binomial(1, 1 / (1 + np.exp(-eta))),
        }
    )


def time_ours(case: Case) -> dict[str, Any]:
    seconds, fit = [], None
    for _ in range(case.repeats):
        model = estimators.MixedGLM(case.formula, family=case.family, weights=case.weights)
        start = time.perf_counter()
        fit = model.fit(case.frame)
        seconds.append(time.perf_counter() - start)
    return {
        "seconds": statistics.median(seconds),
        "objective": fit.objective_,
        "patterns": fit.n_patterns_,
        "evaluations": sum(
            stage["evaluations"]
            for name, stage in fit.convergence_.items()
            if name.startswith("stage")
        ),
        "nb_theta": fit.nb_theta_,
    }


def run_glmer(case: Case, workdir: Path, timeout: float = LME4_TIMEOUT) -> dict[str, Any]:
    csv = workdir / "case.csv"  # case names hold characters such as "/"
    case.frame.to_csv(csv, index=False)
    command = ["Rscript", str(GLMER_SCRIPT), str(csv), case.formula_r, ",".join(case.factors)]
    command += [str(case.lme4_repeats), case.family]
    try:
        result = run_r(command, timeout)
    finally:
        csv.unlink(missing_ok=True)
    if result["status"] != "ok":
        return result
    out = result["out"]
    return {
        "status": "ok",
        "seconds": statistics.median(np.atleast_1d(out["seconds"])),
        "objective": float(out["objective"]),
        "warnings": out["notes"],
        "nb_theta": out.get("nb_theta"),
        "versions": {"lme4": out["lme4"], "BLAS": out["blas"]},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-lme4", action="store_true", help="time ours only")
    parser.add_argument(
        "--skip-negative-binomial", action="store_true", help="leave out the glmer.nb cases"
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the 0/1 data")
    parser.add_argument("--users", type=int, default=50_000, help="users of the 0/1 data")
    parser.add_argument(
        "--ctr-users",
        type=int,
        nargs="*",
        default=[1_000, 10_000, 100_000],
        help="users of the ctr_experiment data sets",
    )
    parser.add_argument(
        "--lme4-timeout", type=float, default=LME4_TIMEOUT, help="seconds per glmer case"
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=CASE_KINDS,
        default=list(CASE_KINDS),
        help="kinds of case to run (default: all)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = f"{args.rows // 1000}k rows, {args.users // 1000}k users"
    cases = []
    if "cbpp" in args.cases:
        cases.append(cbpp_case())
    if "ctr" in args.cases:
        cases += [ctr_case(n) for n in args.ctr_users]
    if "binary" in args.cases:
        cases.append(
            Case(
                name=f"0/1 continuous x ({size})",
                formula="y ~ treatment + x + (1 | user)",
                formula_r="y ~ treatment + x + (1 | user)",
                factors=("user",),
                frame=simulated(args.rows, args.users),
            )
        )
    if "negative_binomial" in args.cases and not args.skip_negative_binomial:
        cases += negative_binomial_cases()
    lme4 = not args.skip_lme4 and shutil.which("Rscript") is not None
    time_ours(cbpp_case())  # warm-up: imports, formulaic, first BLAS calls
    records = []
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        for case in cases:
            ours = time_ours(case)
            theirs = (
                run_glmer(case, Path(workdir), args.lme4_timeout) if lme4 else {"status": "skipped"}
            )
            record = {"case": case.name, "rows": len(case.frame), "ours": ours, "glmer": theirs}
            if theirs.get("status") == "ok":
                record["ratio"] = ours["seconds"] / theirs["seconds"]
                record["objective_difference"] = ours["objective"] - theirs["objective"]
            records.append(record)
            print(_row(record), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(records, indent=2, default=str))
    print("\n(ratio = ours / glmer; -2 logLik difference = ours - glmer, < 0: ours is lower)")
    print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


HEADER = (
    f"{'case':<34} {'rows':>9} {'patterns':>9} {'ours s':>9} {'glmer s':>9} {'ratio':>7}"
    "  -2 logLik difference"
)


def _row(record: dict[str, Any]) -> str:
    ours, theirs = record["ours"], record["glmer"]
    text = f"{record['case']:<34} {record['rows']:>9} {ours['patterns']:>9} {ours['seconds']:>9.2f}"
    if theirs.get("status") == "ok":
        text += (
            f" {theirs['seconds']:>9.2f} {record['ratio']:>7.3f}"
            f"  {record['objective_difference']:+.2e}"
        )
    else:
        text += f"  glmer: {theirs.get('reason', theirs['status'])}"
    return text


if __name__ == "__main__":
    raise SystemExit(main())
