"""Running a sweep: tasks in parallel with joblib, each finished row stored at once."""

from __future__ import annotations

import ctypes
import dataclasses
import inspect
import json
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import is_classifier
from tqdm.auto import tqdm

import estimators
import simulators
from harness import metrics as metric_registry
from harness.config import Config, ConfigError, EstimatorSpec
from harness.jobs import Job, Task, all_jobs, expand, stable_seed
from harness.metrics import Scored
from harness.resources import PeakMemory, watch_peak_memory
from harness.splits import Fold, check_no_leakage, fresh_draw_fold, make_folds, split_factor
from harness.store import ResultStore
from simulators import Dataset, flatten

MAX_ERROR_CHARS = 2000


def fill_roles(spec: EstimatorSpec, dataset: Dataset) -> dict[str, Any]:
    """The estimator's parameters, with the roles the config left out taken from the data.

    ``feature_cols`` gets the data set's features, ``group_cols`` its grouping factors,
    ``group_col`` its first grouping factor, ``formula`` the features as fixed effects
    and a random intercept per grouping factor (``y ~ x1 + x2 + (1 | user) + (1 | item)``),
    a column whose name is not a bare identifier in backticks (``(1 | `user id`)``).
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
            # A file's columns may be named "user id" or "user-id": quoted, as R quotes them.
            quote = estimators.mixed.quote_name
            fixed = " + ".join(quote(feature) for feature in dataset.features) or "1"
            random = " + ".join(f"(1 | {quote(group)})" for group in dataset.groups)
            target = quote(dataset.target)
            params[role] = f"{target} ~ {fixed}" + (f" + {random}" if random else "")
    return params


def accepts_sample_weight(estimator: Any) -> bool:
    """Whether the estimator's ``fit`` takes a ``sample_weight`` argument."""
    try:
        return "sample_weight" in inspect.signature(estimator.fit).parameters
    except (TypeError, ValueError):
        return False


def skip_reason(spec: EstimatorSpec, dataset: Dataset) -> str | None:
    """Why the estimator cannot apply to the data (its dependency is missing, it does
    not model the data's family, it needs a grouping factor the data lacks, the data
    have row weights and its ``fit`` takes no ``sample_weight``), or None.

    A weighted data set and a model that cannot take weights give a skipped row rather
    than an unweighted fit: scored with weighted metrics beside weighted fits, an
    unweighted fit would be compared on unequal terms, and silently so."""
    entry = estimators.info(spec.name)
    reason = entry.missing_reason()
    if reason is None and dataset.family not in entry.families:
        reason = f"{entry.name} does not support the {dataset.family} family"
    if reason is None and entry.needs_groups and not dataset.groups:
        reason = f"{entry.name} needs a grouping factor and the data has none"
    if reason is None and dataset.weights is not None:
        if not accepts_sample_weight(entry.factory_for(dataset.family)()):
            reason = (
                f"{entry.name} takes no sample_weight and the data set has row weights "
                f"(column {dataset.weights!r})"
            )
    return reason


def build_estimator(spec: EstimatorSpec, dataset: Dataset, seed: int) -> tuple[Any, dict]:
    """The unfitted estimator of ``spec`` for ``dataset`` (its family's variant, the
    roles the config left out filled from the data) and the parameters it got; a
    ``random_state`` the config did not set becomes ``seed``."""
    params = fill_roles(spec, dataset)
    estimator = estimators.get(spec.name, family=dataset.family, **params)
    if "random_state" in estimator.get_params(deep=False) and "random_state" not in params:
        params["random_state"] = seed
        estimator.set_params(random_state=seed)
    return estimator, params


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
        "regime": job.scenario.regime,
        "simulator": job.scenario.simulator,
        **{f"sim.{key}": _encode(value) for key, value in flatten(job.scenario.params).items()},
        "repeat": job.repeat,
        "dataset_seed": job.dataset_seed,
        "split": job.split.label,
        "split_scheme": job.split.scheme,
        "split_folds": job.split.folds,
        "split_options": json.dumps(job.split.as_dict(), sort_keys=True),
        "split_seed": job.split_seed,
        "fold": job.fold,
        "estimator": job.estimator.label,
        "estimator_name": job.estimator.name,
        "code_version": job.code_version,
    }
    return row


class NotApplicable(RuntimeError):
    """The estimator does not apply to the data (its family, no grouping factor): a
    skipped row, as final as a result until the code changes."""


class MissingDependency(RuntimeError):
    """The estimator's optional dependency is missing here: a skipped row that a rerun
    retries (the dependency may be installed by then)."""


def _failed(row: dict[str, Any], error: BaseException, status: str = "failed") -> dict[str, Any]:
    row["status"] = status
    row["error_type"] = type(error).__name__
    row["error"] = str(error)[:MAX_ERROR_CHARS]
    return row


class JobTimeout(BaseException):
    """A job ran past the sweep's ``time_limit``.

    A BaseException, so that an estimator's own ``except Exception`` (an optimizer's
    fallback, say) cannot swallow it.
    """


@dataclass
class Deadline:
    """Whether a :func:`time_limit` fired (its exception was sent to the thread)."""

    expired: bool = False


@contextmanager
def time_limit(seconds: float | None) -> Iterator[Deadline]:
    """Raise :class:`JobTimeout` in this thread when the block runs over ``seconds``.

    The exception is delivered the next time the thread runs Python code, so a single
    long call into compiled code (one large matrix factorization) finishes first; fits
    made of many steps stop within one step. Works in any thread (joblib's worker
    processes and Dask's worker threads alike), unlike ``signal.alarm``. Compiled code
    that the exception interrupts may turn it into an error of its own (a buffer error
    from Cython, say): the yielded :class:`Deadline` says whether the limit fired, so
    the caller can tell such an error from a real one.
    """
    deadline = Deadline()
    if seconds is None:
        yield deadline
        return
    thread = threading.get_ident()
    lock = threading.Lock()
    state = {"done": False}

    def expire() -> None:
        with lock:
            if not state["done"]:
                deadline.expired = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(thread), ctypes.py_object(JobTimeout)
                )

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield deadline
    finally:
        with lock:
            state["done"] = True
        timer.cancel()


def predicted_mean(estimator: Any, X: Any) -> np.ndarray:
    """The fitted model's mean outcome per row of ``X``, the quantity metrics score.

    A classifier's mean of a binary outcome is its probability of the outcome 1,
    ``predict_proba(X)[:, list(classes_).index(1)]`` (its ``predict`` gives labels); any
    other model's is ``predict(X)``. Whether a model is a classifier is scikit-learn's
    ``is_classifier``, so a binomial model that is a regressor predicting P(y = 1) is
    scored the same way.

    Raises
    ------
    ValueError
        For a classifier whose classes do not include the outcome 1.
    """
    if not is_classifier(estimator):
        return np.asarray(estimator.predict(X), dtype=float)
    classes = np.asarray(estimator.classes_).tolist()
    if 1 not in classes:
        raise ValueError(
            f"{type(estimator).__name__}: classes_ {classes} do not include the outcome 1 "
            "whose probability binary metrics score; code the outcome as 0/1"
        )
    return np.asarray(estimator.predict_proba(X)[:, classes.index(1)], dtype=float)


def _accepts_return_std(estimator: Any) -> bool:
    try:
        return "return_std" in inspect.signature(estimator.predict).parameters
    except (TypeError, ValueError):
        return False


def _fit_and_predict(
    estimator: Any,
    X_train: Any,
    y_train: np.ndarray,
    X_test: Any,
    want_std: bool,
    sample_weight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, float, float, PeakMemory]:
    """Fit and predict; returns (mean, std or None, fit seconds, predict seconds, memory).

    ``sample_weight`` (the training rows' weights) goes to ``fit`` when given.

    Each call alone is timed by the wall clock; nothing traces it. The memory is the
    process's peak resident size over fit and predict, which the kernel keeps at no
    cost to them (see :mod:`harness.resources`).
    """
    with_std = want_std and _accepts_return_std(estimator)
    watch = watch_peak_memory()
    started = time.perf_counter()
    if sample_weight is None:
        estimator.fit(X_train, y_train)
    else:
        estimator.fit(X_train, y_train, sample_weight=sample_weight)
    fitted = time.perf_counter()
    std = None
    if with_std and not is_classifier(estimator):
        mean, std = estimator.predict(X_test, return_std=True)
    else:
        mean = predicted_mean(estimator, X_test)
    predicted = time.perf_counter()
    memory = watch.read()
    if std is not None:
        std = np.asarray(std, dtype=float)
    return np.asarray(mean, dtype=float), std, fitted - started, predicted - fitted, memory


def _warning_text(caught: list[warnings.WarningMessage]) -> str | None:
    """The distinct warnings of a job, each once with its category, within
    ``MAX_ERROR_CHARS``; None when there were none."""
    if not caught:
        return None
    distinct = dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught)
    return " | ".join(distinct)[:MAX_ERROR_CHARS]


def _memory_columns(memory: PeakMemory, estimator: Any) -> dict[str, Any]:
    """The row's memory columns: the worker's increase plus the peak of a subprocess
    the estimator waited on (its ``subprocess_peak_memory_mb_``, as ``Lme4`` has),
    which the worker's own resident size never sees."""
    subprocess_mb = float(getattr(estimator, "subprocess_peak_memory_mb_", math.nan))
    counted = math.isfinite(subprocess_mb)
    return {
        "peak_memory_mb": memory.increase_mb + (subprocess_mb if counted else 0.0),
        "peak_rss_mb": memory.peak_mb,
        "subprocess_peak_memory_mb": subprocess_mb,
        "memory_measure": memory.measure + ("+subprocess_vmhwm" if counted else ""),
    }


def run_job(
    job: Job,
    dataset: Dataset,
    fold: Fold,
    metric_names: tuple[str, ...],
    config_name: str,
    *,
    test_data: Dataset | None = None,
    seconds: float | None = None,
) -> dict[str, Any]:
    """Fit one estimator on a fold's training rows and score it on the test rows.

    Parameters
    ----------
    job : Job
    dataset : Dataset
        The data set the fold's training rows (and, by default, test rows) index.
    fold : Fold
    metric_names : tuple of str
    config_name : str
    test_data : Dataset, optional
        Where the test rows come from when not ``dataset`` (fresh draws).
    seconds : float, optional
        Time limit of the fit and predict; over it the row fails with ``JobTimeout``.

    Returns
    -------
    dict
        The result row; an exception becomes a row with status ``failed`` and the
        error, an estimator that cannot apply to the data a row with status ``skipped``.
        Its cost columns: ``fit_seconds`` and ``predict_seconds``, wall-clock time of
        each call alone; ``peak_memory_mb``, the worker process's peak resident size
        over fit and predict above its resident size just before (native allocations
        included), plus ``subprocess_peak_memory_mb``, the peak of a subprocess the
        estimator waited on (R for ``lme4``; NaN, counted as 0, for estimators without
        one); ``peak_rss_mb``, the worker's absolute peak; ``memory_measure``, how the
        worker's peak was taken (a key of :data:`harness.resources.MEASURES`, with
        ``+subprocess_vmhwm`` when a subprocess's peak is added). ``warnings`` holds
        the distinct warnings of the fit and predict (None when there were none).
        ``weights`` names the data set's weights column (None without one): the
        training rows' weights went to ``fit`` as ``sample_weight`` and the metrics
        are weighted by the test rows' weights (see :mod:`harness.metrics`); a model
        whose ``fit`` takes no ``sample_weight`` gets a skipped row instead.
        A classifier is scored on its probability of the outcome 1
        (:func:`predicted_mean`), any other model on ``predict``.
    """
    row = _base_row(job, config_name)
    test_source = dataset if test_data is None else test_data
    row |= {
        "dataset_hash": dataset.meta["hash"],
        "family": dataset.family,
        "n_rows": dataset.n_rows,
        "n_train": int(fold.train.size),
        "n_test": int(fold.test.size),
        # The weights column the fit and the metrics used (None: unweighted).
        "weights": dataset.weights,
        # Nadeau-Bengio's correction applies to test rows resampled from the training
        # data; fresh draws are independent of it.
        "test_train_ratio": 0.0 if test_data is not None else fold.test.size / fold.train.size,
    }
    reason = skip_reason(job.estimator, dataset)
    if reason is not None:
        missing = estimators.info(job.estimator.name).missing_reason() is not None
        kind = MissingDependency if missing else NotApplicable
        return _failed(row, kind(reason), status="skipped")
    deadline = Deadline()  # replaced by the time limit's own when the fit starts
    try:
        estimator, params = build_estimator(job.estimator, dataset, stable_seed(job.job_id))
        row |= {f"est.{key}": _encode(value) for key, value in sorted(params.items())}
        X, y = dataset.X, dataset.y.to_numpy()
        y_test = test_source.y.to_numpy()[fold.test]
        weight = dataset.sample_weight
        test_weight = test_source.sample_weight
        want_std = any(metric_registry.info(name).needs == "std" for name in metric_names)
        # An estimator's warnings (a solver that fell back, a fit that did not converge)
        # belong to its row, not to the console between progress-bar updates.
        with warnings.catch_warnings(record=True) as caught, time_limit(seconds) as deadline:
            warnings.simplefilter("always")
            mean, std, fit_seconds, predict_seconds, memory = _fit_and_predict(
                estimator,
                X.iloc[fold.train],
                y[fold.train],
                test_source.X.iloc[fold.test],
                want_std,
                None if weight is None else weight[fold.train],
            )
        row["warnings"] = _warning_text(caught)
        if mean.shape != (fold.test.size,):
            raise ValueError(f"predict returned shape {mean.shape} for {fold.test.size} test rows")
        row |= {
            "fit_seconds": fit_seconds,
            "predict_seconds": predict_seconds,
            **_memory_columns(memory, estimator),
            # Which solver a model with several chose for these data (solver="auto").
            "solver": str(getattr(estimator, "solver_", "")),
        }
        scored = Scored(y_test, mean, std, None if test_weight is None else test_weight[fold.test])
        row |= _scores(metric_names, scored, fold, dataset, estimator, job)
    except JobTimeout:
        return _failed(row, JobTimeout(f"fit and predict ran over the time limit of {seconds:g} s"))
    except Exception as error:  # a failing job is data, not an abort
        if deadline.expired:  # the timeout, reworded by the code it interrupted
            timeout = JobTimeout(
                f"fit and predict ran over the time limit of {seconds:g} s "
                f"(interrupted: {type(error).__name__}: {error})"
            )
            return _failed(row, timeout)
        return _failed(row, error)
    return row


def _scores(
    metric_names: tuple[str, ...],
    scored: Scored,
    fold: Fold,
    dataset: Dataset,
    estimator: Any,
    job: Job,
) -> dict[str, Any]:
    """Every requested metric: prediction metrics overall and by unit subset, metrics
    of binary outcomes only for binomial data (of counts only for counts), truth metrics
    where the truth is known."""
    names = tuple(name for name in metric_names if metric_registry.applies(name, dataset.family))
    row: dict[str, Any] = metric_registry.score_rows(names, scored, fold.unit_train_rows)
    for name in metric_names:
        needs = metric_registry.info(name).needs
        if name not in names:
            row[name] = float("nan")
        elif needs == "truth":
            function = metric_registry.get(name)
            if not dataset.truth:
                row[name] = float("nan")
            elif name == "effect_corr":
                row[name] = function(estimator, dataset.truth, split_factor(dataset, job.split.by))
            else:
                row[name] = function(estimator, dataset.truth)
    if any(metric_registry.info(name).needs == "truth" for name in metric_names):
        # Estimated standard deviations next to the true ones, for the report's plot.
        row |= {f"sd_est.{k}": v for k, v in metric_registry.estimated_sds(estimator).items()}
        row |= {f"sd_true.{k}": float(v) for k, v in dataset.truth.get("sd", {}).items()}
    return row


def _fresh_draws(task: Task) -> list[Dataset]:
    """The task's ``draws`` new draws of the same units with the same true effects."""
    first = int(task.scenario.params.get("draw", 0)) + 1
    return [
        simulators.simulate(
            task.scenario.simulator,
            seed=task.dataset_seed,
            **(task.scenario.params | {"draw": first + k}),
        )
        for k in range(task.split.draws)
    ]


def _stacked(draws: list[Dataset]) -> Dataset:
    """Draws of one simulator as one data set (rows renumbered, roles of the first)."""
    frame = pd.concat([draw.frame for draw in draws], ignore_index=True)
    return dataclasses.replace(draws[0], frame=frame)


def _folds(task: Task, dataset: Dataset) -> list[Fold]:
    """Every fold of the task's split of ``dataset`` (any scheme but ``fresh_draw``)."""
    split = task.split
    return make_folds(
        dataset,
        split.scheme,
        split.folds,
        split.by,
        task.split_seed,
        shuffle=split.shuffle,
        cut=split.cut,
        gap=split.gap,
    )


def run_task(
    task: Task,
    metric_names: tuple[str, ...],
    config_name: str,
    seconds: float | None = None,
) -> list[dict[str, Any]]:
    """Build the task's data set and fold once, then run each of its jobs."""
    test_data = None
    try:
        dataset = simulators.simulate(
            task.scenario.simulator, seed=task.dataset_seed, **task.scenario.params
        )
        split = task.split
        if split.scheme == "fresh_draw":
            draws = _fresh_draws(task)
            fold = fresh_draw_fold(dataset, draws, split.by)
            test_data = _stacked(draws)
        else:
            fold = _folds(task, dataset)[task.fold]
        check_no_leakage(dataset, split.scheme, split.by, fold, gap=split.gap)
    except Exception as error:  # the whole task fails, each job gets its row
        return [_failed(_base_row(job, config_name), error) for job in task.jobs]
    return [
        run_job(job, dataset, fold, metric_names, config_name, test_data=test_data, seconds=seconds)
        for job in task.jobs
    ]


# Validation builds data sets for at most this long (a sweep of huge ones stays quick).
DATA_CHECK_SECONDS = 5.0


@dataclass(frozen=True)
class DataCheck:
    """What :func:`check_data` checked: the first data set of ``n_checked`` of the
    ``n_scenarios`` scenarios (the rest would have taken too long to build)."""

    n_checked: int
    n_scenarios: int


def check_data(config: Config, seconds: float = DATA_CHECK_SECONDS) -> DataCheck:
    """Build each scenario's first data set and split it as its jobs will.

    An error here would fail every job of the scenario (or of the scenario and split),
    so it is a config error, caught before anything runs: a ``by`` that is not a
    grouping factor of the data (a misspelt one, a column a file lacks), a temporal
    split of data without a time column, fewer units than folds, a data file that
    cannot be read. Data sets are built until ``seconds`` have passed (a simulation
    still running then is stopped), so checking a sweep of huge data sets stays quick.

    Raises
    ------
    ConfigError
        Naming the field (``splits[1].by``, ``scenarios[0].splits[0].folds``,
        ``scenarios[2]``) and the scenario.
    """
    entries: dict[str, int] = {}  # a scenario's regime -> its entry in the config
    for scenario in config.scenarios:
        entries.setdefault(scenario.regime, len(entries))
    first: dict[int, list[Task]] = {}  # the first repeat's tasks of fold 0, per scenario
    for task in expand(config):
        if task.repeat == 0 and task.fold == 0:
            first.setdefault(id(task.scenario), []).append(task)
    deadline = time.monotonic() + seconds
    checked = 0
    for tasks in first.values():
        scenario, remaining = tasks[0].scenario, deadline - time.monotonic()
        if remaining <= 0:
            break
        where = f"scenarios[{entries[scenario.regime]}]"
        try:
            with time_limit(remaining):
                dataset = simulators.simulate(
                    scenario.simulator, seed=tasks[0].dataset_seed, **scenario.params
                )
        except JobTimeout:
            break
        except Exception as error:
            raise ConfigError(
                f"{where}: cannot build its data ({scenario.label}): {error}"
            ) from None
        for task in tasks:
            index = (scenario.splits or config.splits).index(task.split)
            path = f"{where}.splits[{index}]" if scenario.splits else f"splits[{index}]"
            try:
                if task.split.scheme == "fresh_draw":
                    split_factor(dataset, task.split.by)
                    continue
                for fold in _folds(task, dataset):
                    check_no_leakage(
                        dataset, task.split.scheme, task.split.by, fold, task.split.gap
                    )
            except Exception as error:
                option, message = getattr(error, "option", None), str(error)
                if option and message.startswith(f"{option}: "):
                    message = message[len(option) + 2 :]
                field = f"{path}.{option}" if option else path
                raise ConfigError(
                    f"{field}: {message} (scenario {scenario.label}, {task.split.label})"
                ) from None
        checked += 1
    return DataCheck(n_checked=checked, n_scenarios=len(first))


# How often a worker checks that the runner is still there.
RUNNER_POLL_SECONDS = 0.5


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_children() -> None:
    """Kill this process's children, each with its process group when it leads one of
    its own (``Lme4``'s Rscript does). Linux only (it reads /proc); elsewhere a no-op."""
    me, my_group = os.getpid(), os.getpgrp()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        pid, parent, group = int(stat.parent.name), int(fields[1]), int(fields[2])
        if parent != me:
            continue
        try:
            if group != my_group and group == pid:
                os.killpg(group, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _end_with_runner(runner: int) -> None:
    """In a worker process, start (once) a thread that ends the worker, and what it
    started, as soon as the runner process ``runner`` is gone.

    A runner that is killed outright (``kill -9``, the OOM killer) cannot stop its
    workers; without this, loky's workers would finish their current job (an hour-long
    fit, say), then sit idle for minutes, and an Rscript they started would run on.
    """
    name = "mixbench-runner-watch"
    if os.getpid() == runner or any(t.name == name for t in threading.enumerate()):
        return  # the runner itself (joblib runs n_jobs=1 in process), or watched already
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent and _exists(runner):
            time.sleep(RUNNER_POLL_SECONDS)
        _kill_children()
        os._exit(1)

    threading.Thread(target=watch, name=name, daemon=True).start()


def _run_task_in_worker(runner: int, task: Task, *arguments: Any) -> list[dict[str, Any]]:
    """:func:`run_task` in a joblib worker that ends with the runner ``runner``."""
    _end_with_runner(runner)
    return run_task(task, *arguments)


class SweepInterrupted(KeyboardInterrupt):
    """A sweep stopped by Ctrl-C; every row finished before it is stored.

    Attributes
    ----------
    n_finished : int
        The config's jobs a rerun will not run again.
    n_jobs_total : int
    """

    def __init__(self, n_finished: int, n_jobs_total: int) -> None:
        super().__init__(f"interrupted; {n_finished} of {n_jobs_total} jobs stored")
        self.n_finished = n_finished
        self.n_jobs_total = n_jobs_total


def _finishes(row: dict[str, Any]) -> bool:
    """Whether a stored row finishes its job (see ``ResultStore.finished_versions``)."""
    return row["status"] == "ok" or row.get("error_type") == NotApplicable.__name__


def _close(results: Any) -> None:
    """Stop a sweep's results early: joblib terminates its workers (the jobs they were
    running), Dask's generator closes its client."""
    close = getattr(results, "close", None)
    if close is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joblib's warning that cancelled tasks are lost
        close()


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
    backend: str | None = None,
    scheduler: str | None = None,
) -> SweepResult:
    """Run every job of ``config`` not already finished in ``directory``.

    Parameters
    ----------
    config : Config
    directory : path
        Output folder; rows go to ``rows/``, the table to ``results.parquet``.
    n_jobs : int, optional
        Parallel workers (joblib processes, or the workers of a local Dask cluster);
        default the config's ``n_jobs``.
    force : bool
        Rerun jobs that already have a successful row.
    progress : bool
        Show a progress bar (counts, rate and ETA) on standard error.
    backend : {"loky", "dask"}, optional
        Default the config's ``backend``.
    scheduler : str, optional
        Dask scheduler address; without one a local cluster of ``n_jobs`` worker
        processes is started. Default the config's ``scheduler``.

    Returns
    -------
    SweepResult
    """
    started = time.perf_counter()
    store = ResultStore(directory)
    store.write_text("config.yaml", config.source)
    tasks = expand(config)
    jobs = all_jobs(tasks)
    # A stored row is reused only if it succeeded (or found its estimator does not
    # apply to its data) with the current code of its estimator and simulator.
    finished = {} if force else store.finished_versions()
    pending = []
    for task in tasks:
        todo = tuple(job for job in task.jobs if finished.get(job.job_id) != job.code_version)
        if todo:
            pending.append(dataclasses.replace(task, jobs=todo))
    n_pending = sum(len(task.jobs) for task in pending)
    n_failed = n_skipped = n_finished = 0
    workers = config.n_jobs if n_jobs is None else n_jobs
    engine = backend or config.backend
    arguments = (config.metrics, config.name, config.time_limit)
    results: Any = None
    try:
        if engine == "dask":
            results = _run_on_dask(pending, arguments, scheduler or config.scheduler, workers)
        else:
            results = Parallel(n_jobs=workers, return_as="generator_unordered")(
                delayed(_run_task_in_worker)(os.getpid(), task, *arguments) for task in pending
            )
        with tqdm(total=n_pending, unit="job", disable=not progress, desc=config.name) as bar:
            for rows in results:
                for row in rows:
                    store.write(row)
                    n_failed += row["status"] == "failed"
                    n_skipped += row["status"] == "skipped"
                    n_finished += _finishes(row)
                bar.update(len(rows))
                bar.set_postfix(failed=n_failed, refresh=False)
    except KeyboardInterrupt:
        raise SweepInterrupted(len(jobs) - n_pending + n_finished, len(jobs)) from None
    finally:
        _close(results)  # after an error (a full disk, Ctrl-C): no worker runs on
    store.consolidate(job.job_id for job in jobs)
    if config.summaries:
        from harness.summaries import write_summaries  # it builds on this module

        write_summaries(config, store.directory)
    return SweepResult(
        directory=store.directory,
        n_jobs_total=len(jobs),
        n_run=n_pending,
        n_reused=len(jobs) - n_pending,
        n_failed=n_failed,
        n_skipped=n_skipped,
        seconds=time.perf_counter() - started,
    )


def _run_on_dask(
    tasks: list[Task], arguments: tuple, scheduler: str | None, workers: int
) -> Iterable[list[dict[str, Any]]]:
    """Run ``tasks`` on a Dask cluster, yielding each task's rows as it finishes.

    Workers must be able to import mixbench (install it on every machine). A task
    that dies on a worker (the worker lost, say) becomes failed rows, and the sweep
    goes on.
    """
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise RuntimeError(
            "backend dask needs dask.distributed: pip install 'mixbench[distributed]'"
        ) from None
    if not tasks:
        return
    cluster = None
    if scheduler is None:
        n_workers = workers if workers > 0 else None
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
    client = Client(cluster if cluster is not None else scheduler)
    try:
        futures = {client.submit(run_task, task, *arguments, pure=False): task for task in tasks}
        for future in as_completed(futures):
            task = futures[future]
            try:
                rows = future.result()
            except Exception as error:  # the worker, not the job, failed
                rows = [_failed(_base_row(job, arguments[1]), error) for job in task.jobs]
            yield rows
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
