"""Harness overhead per job on a sweep of 1,000 small jobs, against a plain loop.

The sweep: 50 repeats of a small online_services data set (about 100 rows) x 5 random
folds x 4 quick estimators = 1,000 jobs, run by ``run_sweep`` (n_jobs=1, then 2). The
peer is the loop a user would write by hand: simulate, split with scikit-learn's KFold,
fit, predict, compute the RMSE, keep the numbers in a list. Harness overhead per job is
the sweep's wall time minus what the plain loop spends on the same simulations, fits and
predictions, divided by the number of jobs: everything the harness adds (job
expansion, identity hashing, the leakage check, all metrics with their breakdowns by
unit activity, peak-memory tracking, one atomic Parquet row per job, the progress bar,
the consolidated table). Target (issue): under 50 ms per job.

Run with ``make bench-harness`` or ``python benchmarks/bench_harness.py``.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import yaml
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

import estimators
from harness.config import parse_config
from harness.jobs import expand
from harness.runner import fill_roles, predicted_mean, run_sweep
from simulators import simulate

TARGET_MS = 50.0
CONFIG = {
    "name": "overhead",
    "seed": 1,
    "repeats": 50,
    "scenarios": [
        {
            "simulator": "online_services",
            "params": {"n_users": 30, "n_items": 5, "events_per_user": {"mean": 3}},
        }
    ],
    "splits": [{"scheme": "random", "folds": 5}],
    "estimators": ["pooled_ols", "group_mean", "eb_shrinkage", "fixed_effects"],
    "metrics": ["rmse", "mae", "r2"],
}


def plain_loop(config) -> float:
    """Seconds the hand-written loop takes for the same data, fits and predictions."""
    started = time.perf_counter()
    scores = []
    for task in expand(config)[:: config.splits[0].folds]:  # one task per data set
        data = simulate(task.scenario.simulator, seed=task.dataset_seed, **task.scenario.params)
        X, y = data.X, data.y.to_numpy()
        for train, test in KFold(5, shuffle=True, random_state=0).split(X):
            for spec in config.estimators:
                model = estimators.get(spec.name, **fill_roles(spec, data))
                model.fit(X.iloc[train], y[train])
                prediction = predicted_mean(model, X.iloc[test])
                scores.append(float(np.sqrt(np.mean((y[test] - prediction) ** 2))))
    return time.perf_counter() - started


def main() -> None:
    threadpool_limits(1)
    config = parse_config(yaml.safe_dump(CONFIG, sort_keys=False))
    n_jobs = len(config.estimators) * config.repeats * config.splits[0].folds
    plain = plain_loop(config)
    print(f"{n_jobs} jobs; plain loop (simulate, KFold, fit, predict, RMSE): {plain:.1f} s")
    print(f"{'workers':>8} {'sweep s':>8} {'ms/job':>7} {'overhead ms/job':>16} {'vs plain':>9}")
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as directory:
            result = run_sweep(config, directory, n_jobs=workers, progress=False)
        assert result.n_run == n_jobs and result.n_failed == 0
        overhead = (result.seconds - plain / workers) / n_jobs * 1e3
        print(
            f"{workers:>8} {result.seconds:>8.1f} {result.seconds / n_jobs * 1e3:>7.1f} "
            f"{overhead:>16.1f} {result.seconds / (plain / workers):>9.2f}"
        )
    print(f"target: harness overhead under {TARGET_MS:.0f} ms per job")


if __name__ == "__main__":
    main()
