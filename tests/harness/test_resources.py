"""Cost columns of a result row: fit time as the wall clock sees it, peak memory as the
process (and a subprocess it waited on) held it."""

import math
import mmap
import statistics
import time
import tracemalloc

import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin, clone
from threadpoolctl import threadpool_limits

import harness.resources as resources
import harness.runner as runner
import simulators
from estimators._reference import lme4_missing_reason
from harness.config import parse_config
from harness.jobs import expand, stable_seed
from harness.splits import make_folds

ALLOCATED_MB = 300


class _Allocates(RegressorMixin, BaseEstimator):
    """Fits nothing; maps ``megabytes`` of native memory while fitting, as compiled code
    (a BLAS workspace, a C++ tree builder) does: out of sight of Python's allocator and
    of tracemalloc, which numpy's own buffers are not."""

    def __init__(self, megabytes: int = 0, subprocess_mb: float | None = None) -> None:
        self.megabytes = megabytes
        self.subprocess_mb = subprocess_mb

    def fit(self, X, y):
        if self.megabytes:
            block = mmap.mmap(-1, self.megabytes * 2**20)
            for offset in range(0, len(block), mmap.PAGESIZE):
                block[offset] = 1  # a mapped page is resident once written
            block.close()
        if self.subprocess_mb is not None:
            self.subprocess_peak_memory_mb_ = self.subprocess_mb
        self.traced_ = tracemalloc.is_tracing()
        return self

    def predict(self, X):
        return np.zeros(len(X))


def _job(estimator: str, n_users: int = 60):
    """A job of ``estimator`` on one fold of online-services data, its data set and fold."""
    config = parse_config(
        f"""
name: costs
seed: 5
repeats: 1
scenarios:
  - simulator: online_services
    params: {{n_users: {n_users}, n_items: 50, events_per_user: {{mean: 10}}}}
splits:
  - {{scheme: random, folds: 2}}
estimators: [{estimator}]
metrics: [rmse]
baseline: {estimator.split(",")[0].removeprefix("{name: ")}
"""
    )
    task = expand(config)[0]
    dataset = simulators.simulate(
        task.scenario.simulator, seed=task.dataset_seed, **task.scenario.params
    )
    fold = make_folds(dataset, "random", 2, None, task.split_seed)[task.fold]
    return task.jobs[0], dataset, fold, config


def _run_with(monkeypatch, estimator: BaseEstimator) -> dict:
    """The row of a job whose estimator is ``estimator`` (not a registered one)."""
    job, dataset, fold, config = _job("pooled_ols")
    monkeypatch.setattr(runner, "build_estimator", lambda spec, data, seed: (estimator, {}))
    row = runner.run_job(job, dataset, fold, config.metrics, config.name)
    assert row["status"] == "ok", row["error"]
    return row


# -- the shared helpers ----------------------------------------------------------------------


def test_a_watch_sees_native_allocations():
    watch = resources.watch_peak_memory()
    block = np.ones(ALLOCATED_MB * 2**20 // 8)
    del block
    memory = watch.read()
    assert memory.measure == "vmhwm_reset"  # Linux >= 4.0, as this project runs on
    assert memory.increase_mb >= 0.85 * ALLOCATED_MB
    assert memory.peak_mb >= memory.increase_mb
    assert resources.peak_rss_kb() / resources.MB >= memory.increase_mb


def test_where_the_peak_cannot_be_reset_the_row_says_which_measure_was_used(monkeypatch):
    monkeypatch.setattr(resources, "reset_peak_rss", lambda: False)
    before = resources.vm_hwm_kb() / resources.MB
    memory = resources.watch_peak_memory().read()
    assert memory.measure == "vmhwm_rise"
    assert memory.increase_mb >= 0 and memory.peak_mb >= before

    monkeypatch.setattr(resources, "status_kb", lambda field, pid="self": None)
    memory = resources.watch_peak_memory().read()
    assert memory.measure == "ru_maxrss_rise"
    assert memory.increase_mb >= 0 and memory.peak_mb > 0

    monkeypatch.setattr(resources, "resource", None)
    memory = resources.watch_peak_memory().read()
    assert memory.measure == "unavailable"
    assert math.isnan(memory.increase_mb) and math.isnan(memory.peak_mb)
    assert set(resources.MEASURES) == {"vmhwm_reset", "vmhwm_rise", "ru_maxrss_rise", "unavailable"}


# -- the runner's rows -----------------------------------------------------------------------


def test_peak_memory_counts_native_allocations_and_nothing_else(monkeypatch):
    allocating = _run_with(monkeypatch, _Allocates(megabytes=ALLOCATED_MB))
    idle = _run_with(monkeypatch, _Allocates())
    assert allocating["memory_measure"] == idle["memory_measure"] == "vmhwm_reset"
    assert allocating["peak_memory_mb"] >= 0.85 * ALLOCATED_MB
    assert allocating["peak_rss_mb"] >= allocating["peak_memory_mb"]
    assert 0 <= idle["peak_memory_mb"] < 20
    assert math.isnan(idle["subprocess_peak_memory_mb"])


def test_the_fit_is_not_traced(monkeypatch):
    estimator = _Allocates()
    _run_with(monkeypatch, estimator)
    assert estimator.traced_ is False


def test_a_subprocess_peak_the_estimator_reports_is_added(monkeypatch):
    row = _run_with(monkeypatch, _Allocates(subprocess_mb=123.0))
    assert row["subprocess_peak_memory_mb"] == 123.0
    assert 123.0 <= row["peak_memory_mb"] < 123.0 + 20
    assert row["memory_measure"] == "vmhwm_reset+subprocess_vmhwm"


@pytest.mark.parametrize(
    ("estimator", "n_users"),
    [("mixed_lm", 8000), ("{name: hist_gbm, params: {max_iter: 200}}", 3000)],
)
def test_the_harness_times_a_fit_as_a_direct_call_does(estimator, n_users):
    job, dataset, fold, config = _job(estimator, n_users)
    model, _ = runner.build_estimator(job.estimator, dataset, stable_seed(job.job_id))
    X, y = dataset.X.iloc[fold.train], dataset.y.to_numpy()[fold.train]
    in_harness, direct = [], []
    # One thread for BLAS and OpenMP alike: on a shared machine, threads waiting for
    # cores make fit times vary far more than anything the harness could add.
    with threadpool_limits(limits=1):
        clone(model).fit(X, y)  # warm-up: imports and first-call costs
        for _ in range(7):  # interleaved, so that a slow spell hits both alike
            row = runner.run_job(job, dataset, fold, config.metrics, config.name)
            assert row["status"] == "ok", row["error"]
            in_harness.append(row["fit_seconds"])
            fresh = clone(model)
            started = time.perf_counter()
            fresh.fit(X, y)
            direct.append(time.perf_counter() - started)
    ratio = statistics.median(in_harness) / statistics.median(direct)
    assert 0.8 <= ratio <= 1.2, (ratio, in_harness, direct)


@pytest.mark.r
def test_the_r_process_of_lme4_counts_in_the_peak_memory(monkeypatch):
    reason = lme4_missing_reason()
    if reason:
        pytest.skip(reason)
    job, dataset, fold, config = _job("lme4")
    fitted = []
    build = runner.build_estimator

    def keep(spec, data, seed):
        estimator, params = build(spec, data, seed)
        fitted.append(estimator)
        return estimator, params

    monkeypatch.setattr(runner, "build_estimator", keep)
    row = runner.run_job(job, dataset, fold, config.metrics, config.name)
    assert row["status"] == "ok", row["error"]
    r_peak = fitted[0].subprocess_peak_memory_mb_
    assert r_peak > 30  # R alone, before any data, is that large
    assert row["subprocess_peak_memory_mb"] == r_peak
    assert r_peak <= row["peak_memory_mb"] < r_peak + 100
    assert row["memory_measure"] == "vmhwm_reset+subprocess_vmhwm"


class _SwallowsInterrupts(BaseEstimator):
    """Compiled code that turns an interruption into an error of its own, as a Cython
    buffer does (seen with hist_gbm: 'not a valid PEP 3118 buffer format string')."""

    def fit(self, X, y):
        try:
            while True:
                time.sleep(0.001)
        except BaseException as error:
            raise ValueError("not a valid PEP 3118 buffer format string") from error

    def predict(self, X):
        return np.zeros(len(X))


def test_a_timeout_reworded_by_the_code_it_interrupted_is_still_a_timeout(monkeypatch):
    job, dataset, fold, config = _job("pooled_ols")
    monkeypatch.setattr(
        runner, "build_estimator", lambda spec, data, seed: (_SwallowsInterrupts(), {})
    )
    row = runner.run_job(job, dataset, fold, config.metrics, config.name, seconds=0.2)
    assert row["status"] == "failed" and row["error_type"] == "JobTimeout"
    assert "time limit of 0.2 s (interrupted: ValueError: not a valid PEP 3118" in row["error"]
    # Without a limit that fired, the same error is the estimator's own.
    monkeypatch.setattr(runner, "build_estimator", lambda spec, data, seed: (_Broken(), {}))
    row = runner.run_job(job, dataset, fold, config.metrics, config.name, seconds=30)
    assert row["error_type"] == "ValueError"


class _Broken(BaseEstimator):
    def fit(self, X, y):
        raise ValueError("broken")

    def predict(self, X):
        return np.zeros(len(X))
