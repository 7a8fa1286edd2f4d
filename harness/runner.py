"""Running a sweep: tasks in parallel with joblib, each finished row stored at once."""

from __future__ import annotations

import dataclasses
import json
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

import estimators
import simulators
from harness import metrics as metric_registry
from harness.config import Config, EstimatorSpec
from harness.jobs import Job, Task, all_jobs, expand, stable_seed
from harness.splits import Fold, check_no_leakage, make_folds
from harness.store import ResultStore
from simulators import Dataset, flatten

MAX_ERROR_CHARS = 2000


def fill_roles(spec: EstimatorSpec, dataset: Dataset) -> dict[str, Any]:
    """The estimator's parameters, with the roles the config left out taken from the data.

    ``feature_cols`` gets the data set's features, ``group_cols`` its grouping factors,
    ``group_col`` its first grouping factor, ``formula`` the features as fixed effects
    and a random intercept per grouping factor (``y ~ x1 + x2 + (1 | user) + (1 | item)``).
    """
    params = dict(spec.params)
    for role in estimators.info(spec.name).roles:
        if role in params:
            continue
        if role == "feature_cols":
            params[role] = list(dataset.features)
        elif role == "group_cols":
            params[role] = list(dataset.groups)
        elif role == "group_col":
            if not dataset.groups:
                raise ValueError(f"{spec.label}: needs a grouping factor and the data has none")
            params[role] = dataset.groups[0]
        elif role == "formula":
            fixed = " + ".join(dataset.features) or "1"
            random = " + ".join(f"(1 | {group})" for group in dataset.groups)
            params[role] = f"{dataset.target} ~ {fixed}" + (f" + {random}" if random else "")
    return params


def _encode(value: Any) -> Any:
    """Parameter values as table cells: scalars as they are, anything else as JSON."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, default=str)


def _base_row(job: Job, config_name: str) -> dict[str, Any]:
    row = {
        "job_id": job.job_id,
        "config": config_name,
        "status": "ok",
        "error_type": None,
        "error": None,
        "scenario": job.scenario.label,
        "simulator": job.scenario.simulator,
        **{f"sim.{key}": _encode(value) for key, value in flatten(job.scenario.params).items()},
        "repeat": job.repeat,
        "dataset_seed": job.dataset_seed,
        "split": job.split.label,
        "split_scheme": job.split.scheme,
        "split_folds": job.split.folds,
        "split_seed": job.split_seed,
        "fold": job.fold,
        "estimator": job.estimator.label,
        "estimator_name": job.estimator.name,
    }
    return row


def _failed(row: dict[str, Any], error: BaseException, status: str = "failed") -> dict[str, Any]:
    row["status"] = status
    row["error_type"] = type(error).__name__
    row["error"] = str(error)[:MAX_ERROR_CHARS]
    return row


def run_job(
    job: Job, dataset: Dataset, fold: Fold, metric_names: tuple[str, ...], config_name: str
) -> dict[str, Any]:
    """Fit one estimator on a fold's training rows and score it on the test rows.

    Returns a result row; an exception becomes a row with status ``failed`` and the
    error, an estimator that cannot apply to the data a row with status ``skipped``.
    """
    row = _base_row(job, config_name)
    row |= {
        "dataset_hash": dataset.meta["hash"],
        "n_rows": dataset.n_rows,
        "n_train": int(fold.train.size),
        "n_test": int(fold.test.size),
    }
    entry = estimators.info(job.estimator.name)
    reason = entry.missing_reason()
    if reason is None and dataset.family not in entry.families:
        reason = f"{entry.name} does not support the {dataset.family} family"
    if reason is None and entry.needs_groups and not dataset.groups:
        reason = f"{entry.name} needs a grouping factor and the data has none"
    if reason is not None:
        return _failed(row, RuntimeError(reason), status="skipped")
    try:
        params = fill_roles(job.estimator, dataset)
        estimator = estimators.get(job.estimator.name, **params)
        if "random_state" in estimator.get_params(deep=False) and "random_state" not in params:
            params["random_state"] = stable_seed(job.job_id)
            estimator.set_params(random_state=params["random_state"])
        row |= {f"est.{key}": _encode(value) for key, value in sorted(params.items())}
        X, y = dataset.X, dataset.y.to_numpy()
        tracemalloc.start()
        try:
            started = time.perf_counter()
            estimator.fit(X.iloc[fold.train], y[fold.train])
            fitted = time.perf_counter()
            prediction = np.asarray(estimator.predict(X.iloc[fold.test]), dtype=float)
            predicted = time.perf_counter()
            peak_bytes = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        if prediction.shape != (fold.test.size,):
            raise ValueError(
                f"predict returned shape {prediction.shape} for {fold.test.size} test rows"
            )
        row |= {
            "fit_seconds": fitted - started,
            "predict_seconds": predicted - fitted,
            "peak_memory_mb": peak_bytes / 2**20,
        }
        for name in metric_names:
            row[name] = metric_registry.get(name)(y[fold.test], prediction)
    except Exception as error:  # a failing job is data, not an abort
        return _failed(row, error)
    return row


def run_task(task: Task, metric_names: tuple[str, ...], config_name: str) -> list[dict[str, Any]]:
    """Build the task's data set and fold once, then run each of its jobs."""
    try:
        dataset = simulators.simulate(
            task.scenario.simulator, seed=task.dataset_seed, **task.scenario.params
        )
        folds = make_folds(
            dataset, task.split.scheme, task.split.folds, task.split.by, task.split_seed
        )
        fold = folds[task.fold]
        check_no_leakage(dataset, task.split.scheme, task.split.by, fold)
    except Exception as error:  # the whole task fails, each job gets its row
        return [_failed(_base_row(job, config_name), error) for job in task.jobs]
    return [run_job(job, dataset, fold, metric_names, config_name) for job in task.jobs]


@dataclass(frozen=True)
class SweepResult:
    """What a sweep did."""

    directory: Path
    n_jobs_total: int
    n_run: int
    n_reused: int
    n_failed: int
    n_skipped: int
    seconds: float


def run_sweep(
    config: Config,
    directory: str | Path,
    *,
    n_jobs: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> SweepResult:
    """Run every job of ``config`` not already finished in ``directory``.

    Parameters
    ----------
    config : Config
    directory : path
        Output folder; rows go to ``rows/``, the table to ``results.parquet``.
    n_jobs : int, optional
        Parallel workers (joblib, loky); default the config's ``n_jobs``.
    force : bool
        Rerun jobs that already have a successful row.
    progress : bool
        Show a progress bar on standard error.

    Returns
    -------
    SweepResult
    """
    started = time.perf_counter()
    store = ResultStore(directory)
    (store.directory / "config.yaml").write_text(config.source)
    tasks = expand(config)
    jobs = all_jobs(tasks)
    finished = set() if force else store.finished_ids()
    pending = []
    for task in tasks:
        todo = tuple(job for job in task.jobs if job.job_id not in finished)
        if todo:
            pending.append(dataclasses.replace(task, jobs=todo))
    n_pending = sum(len(task.jobs) for task in pending)
    n_failed = n_skipped = 0
    workers = config.n_jobs if n_jobs is None else n_jobs
    with tqdm(total=n_pending, unit="job", disable=not progress, desc=config.name) as bar:
        results = Parallel(n_jobs=workers, return_as="generator_unordered")(
            delayed(run_task)(task, config.metrics, config.name) for task in pending
        )
        for rows in results:
            for row in rows:
                store.write(row)
                n_failed += row["status"] == "failed"
                n_skipped += row["status"] == "skipped"
            bar.update(len(rows))
            bar.set_postfix(failed=n_failed, refresh=False)
    store.consolidate(job.job_id for job in jobs)
    return SweepResult(
        directory=store.directory,
        n_jobs_total=len(jobs),
        n_run=n_pending,
        n_reused=len(jobs) - n_pending,
        n_failed=n_failed,
        n_skipped=n_skipped,
        seconds=time.perf_counter() - started,
    )
