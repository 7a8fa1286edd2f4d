"""Time of MixedLM.update (new rows at the fitted theta) against a fit and a refit at that theta.

Run from the repository root, ``make bench-update`` or::

    .venv/bin/python benchmarks/bench_update.py [--n-users 100000] [--n-items 1000]
        [--new-rows 10000] [--new-users 400] [--repeats 3] [--blas-threads N]

The data are online-services events (``simulators.simulate("online_services")``), about
10 events per user: with 100,000 users and 1,000 items about a million rows, fitted by
REML with ``y ~ x1 + x2 + (1 | user) + (1 | item)``. The new rows are every event of
``--new-users`` users drawn at random (units never seen by the fit) and, to make up
``--new-rows``, events of known users drawn at random. Measured:

* fit: ``MixedLM.fit`` on the old rows (once; theta is optimised);
* update: ``update(new rows)`` of a copy of that fit (median of ``--repeats``, after a
  warm-up; copying the fit is not timed);
* refit at fixed theta: a fit on old + new rows with theta held at the fitted value,
  no optimisation (median of ``--repeats``); what the update must reproduce;
* the largest difference between update and refit, per estimate relative to that
  estimate's largest absolute value: fixed effects, their covariance, sigma, the
  conditional modes and variances of every level, predictions of the new rows;
* the memory the fit keeps to make updates possible (the cross-products).

On a machine shared with other work, OpenBLAS's threads can wait on each other for
much longer than the work takes; ``--blas-threads 1`` times every step on one thread.
The table goes to stdout and, as JSON, to ``benchmarks/results/bench_update.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from _results import machine, write_results
from threadpoolctl import threadpool_limits

import estimators
import simulators

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "bench_update.json"
FORMULA = "y ~ x1 + x2 + (1 | user) + (1 | item)"
TARGET_UPDATE_SECONDS = 1.0
TARGET_RELATIVE_DIFFERENCE = 1e-6


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-users", type=int, default=100_000)
    parser.add_argument("--n-items", type=int, default=1_000)
    parser.add_argument("--new-rows", type=int, default=10_000, help="rows of the update")
    parser.add_argument("--new-users", type=int, default=400, help="users seen only there")
    parser.add_argument("--repeats", type=int, default=3, help="timed updates and refits")
    parser.add_argument("--seed", type=int, default=2016)
    parser.add_argument(
        "--blas-threads", type=int, default=None, help="limit BLAS threads (default: as is)"
    )
    return parser.parse_args(argv)


def split_rows(
    frame: pd.DataFrame, new_rows: int, new_users: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Old rows for the fit and new rows for the update: every event of ``new_users``
    users drawn at random, then random events of other users up to ``new_rows``."""
    rng = np.random.default_rng(seed)
    users = frame["user"].unique()
    unseen = frame["user"].isin(rng.choice(users, new_users, replace=False)).to_numpy()
    if unseen.sum() > new_rows:
        raise ValueError(
            f"--new-users {new_users} have {unseen.sum()} rows, more than --new-rows {new_rows}"
        )
    known = np.flatnonzero(~unseen)
    chosen = unseen.copy()
    chosen[rng.choice(known, new_rows - unseen.sum(), replace=False)] = True
    return frame[~chosen], frame[chosen]


def timed(function, *args, **kwargs) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def differences(
    updated: estimators.MixedLM, refit: estimators.MixedLM, new: pd.DataFrame
) -> dict[str, float]:
    """Per estimate, max |update - refit| / max |refit| (levels matched by label)."""

    def relative(actual: Any, expected: Any) -> float:
        actual, expected = np.asarray(actual, float), np.asarray(expected, float)
        return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))

    out = {
        "fixed effects": relative(updated.coef_, refit.coef_),
        "fixed-effects covariance": relative(updated.coef_cov_, refit.coef_cov_),
        "sigma": relative(updated.sigma_, refit.sigma_),
        "REML criterion": relative(updated.objective_, refit.objective_),
    }
    for group, modes in refit.ranef_.items():
        out[f"{group} modes"] = relative(updated.ranef_[group].loc[modes.index], modes)
        out[f"{group} conditional variances"] = relative(
            updated.ranef_var_[group].loc[modes.index], refit.ranef_var_[group]
        )
    out["predictions of the new rows"] = relative(updated.predict(new), refit.predict(new))
    return out


def kept_megabytes(model: estimators.MixedLM) -> float:
    """Size of the cross-products (and row indices of their sparse parts) the fit keeps."""
    total = 0
    objective = model._objective
    for value in [*vars(objective.cross).values(), *vars(objective).values()]:
        if sp.issparse(value):
            total += value.data.nbytes + value.indices.nbytes + value.indptr.nbytes
        elif isinstance(value, np.ndarray):
            total += value.nbytes
    return total / 2**20


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Fit, update and refit once; returns the record written to the JSON file."""
    started = time.perf_counter()
    frame = simulators.simulate(
        "online_services",
        seed=args.seed,
        n_users=args.n_users,
        n_items=args.n_items,
        n_features=2,
    ).frame
    old, new = split_rows(frame, args.new_rows, args.new_users, args.seed)
    everything = pd.concat([old, new])
    print(f"{len(old):,} old rows, {len(new):,} new rows; fit", end="", flush=True)
    fit_seconds, fitted = timed(estimators.MixedLM(FORMULA).fit, old)

    print(", update", end="", flush=True)
    update_seconds = []
    for repeat in range(args.repeats + 1):  # the first is a warm-up
        model = copy.deepcopy(fitted)
        seconds, updated = timed(model.update, new)
        if repeat:
            update_seconds.append(seconds)

    print(", refit at fixed theta", end="", flush=True)
    refit_seconds = []
    for _ in range(args.repeats):
        seconds, refit = timed(
            estimators.MixedLM(FORMULA)._fit_at_theta, everything, theta=fitted.theta_
        )
        refit_seconds.append(seconds)
    print(" - done", flush=True)

    gaps = differences(updated, refit, new)
    return {
        "formula": FORMULA,
        "old_rows": len(old),
        "new_rows": len(new),
        "new_users": int(new.loc[~new["user"].isin(old["user"]), "user"].nunique()),
        "new_user_rows": int((~new["user"].isin(old["user"])).sum()),
        "levels_after_update": dict(updated.n_levels_),
        "fit_seconds": fit_seconds,
        "fit_evaluations": int(fitted.convergence_["evaluations"]),
        "update_seconds": statistics.median(update_seconds),
        "all_update_seconds": update_seconds,
        "refit_at_fixed_theta_seconds": statistics.median(refit_seconds),
        "all_refit_seconds": refit_seconds,
        "max_relative_difference": max(gaps.values()),
        "relative_differences": gaps,
        "kept_cross_products_mb": kept_megabytes(fitted),
        "wall_seconds": time.perf_counter() - started,
    }


def format_report(record: dict[str, Any]) -> str:
    """The record as text."""
    update, difference = record["update_seconds"], record["max_relative_difference"]
    update_met = "met" if update < TARGET_UPDATE_SECONDS else "missed"
    difference_met = "met" if difference <= TARGET_RELATIVE_DIFFERENCE else "missed"
    levels = ", ".join(f"{group} {n:,}" for group, n in record["levels_after_update"].items())
    lines = [
        f"{record['formula']}: {record['old_rows']:,} old rows + {record['new_rows']:,} new "
        f"({record['new_user_rows']:,} of them from {record['new_users']} new users)",
        f"levels after update: {levels}",
        f"fit (old rows, theta optimised, {record['fit_evaluations']} evaluations): "
        f"{record['fit_seconds']:.2f} s",
        f"update (new rows, theta fixed): {update:.3f} s "
        f"(runs {', '.join(f'{s:.3f}' for s in record['all_update_seconds'])}; "
        f"target < {TARGET_UPDATE_SECONDS:g} s: {update_met})",
        f"refit at fixed theta (all rows): {record['refit_at_fixed_theta_seconds']:.3f} s "
        f"(runs {', '.join(f'{s:.3f}' for s in record['all_refit_seconds'])})",
        f"max relative difference, update vs refit: {difference:.2e} "
        f"(target <= {TARGET_RELATIVE_DIFFERENCE:g}: {difference_met})",
    ]
    lines += [f"  {name}: {value:.2e}" for name, value in record["relative_differences"].items()]
    lines.append(
        "cross-products kept by the fit (needed by update): "
        f"{record['kept_cross_products_mb']:.1f} MB"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the report and write the JSON file."""
    args = parse_args(argv)
    limit = (
        threadpool_limits(limits=args.blas_threads, user_api="blas")
        if args.blas_threads
        else contextlib.nullcontext()
    )
    with limit:
        record = run(args)
    print()
    print(format_report(record))
    document = {
        "benchmark": "bench_update",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "options": vars(args),
        "machine": machine(),
        "targets": {
            "update_seconds_below": TARGET_UPDATE_SECONDS,
            "max_relative_difference_at_most": TARGET_RELATIVE_DIFFERENCE,
        },
        "result": record,
    }
    write_results(RESULTS, document, ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
