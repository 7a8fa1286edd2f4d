"""Expanding a config into jobs with stable identities and identity-derived seeds.

A job is (scenario, repeat, split scheme, fold, estimator). Its id is a hash of that
spec, so a rerun recognises finished jobs, and every seed derives from the identity of
what it seeds, not from a position in a list: adding an estimator or a scenario to a
config changes no other job's data, folds or results.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from harness.config import Config, EstimatorSpec, Scenario, SplitSpec


def stable_hash(*parts: Any, length: int = 16) -> str:
    """Hex digest of the canonical JSON of ``parts``."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def stable_seed(*parts: Any) -> int:
    """A seed in [0, 2**31) derived from ``parts``."""
    return int(stable_hash(*parts, length=8), 16) % (2**31)


@dataclass(frozen=True)
class Job:
    """One fit-and-score: an estimator on one fold of one data set."""

    scenario: Scenario
    repeat: int
    dataset_seed: int
    split: SplitSpec
    split_seed: int
    fold: int
    estimator: EstimatorSpec

    @property
    def job_id(self) -> str:
        return stable_hash(
            self.scenario.simulator,
            self.scenario.params,
            self.dataset_seed,
            self.split.as_dict(),
            self.split_seed,
            self.fold,
            self.estimator.name,
            self.estimator.params,
            self.estimator.label,
        )


@dataclass(frozen=True)
class Task:
    """Jobs sharing one data set and one fold: built and split once, every estimator
    then fitted on the same rows (the pairing the statistics rely on)."""

    scenario: Scenario
    repeat: int
    dataset_seed: int
    split: SplitSpec
    split_seed: int
    fold: int
    jobs: tuple[Job, ...]


def expand(config: Config) -> list[Task]:
    """Every task of the sweep, in a deterministic order."""
    tasks = []
    for scenario in config.scenarios:
        for repeat in range(config.repeats):
            dataset_seed = stable_seed(config.seed, scenario.simulator, scenario.params, repeat)
            for split in config.splits:
                split_seed = stable_seed(dataset_seed, split.as_dict())
                for fold in range(split.folds):
                    jobs = tuple(
                        Job(scenario, repeat, dataset_seed, split, split_seed, fold, spec)
                        for spec in config.estimators
                    )
                    tasks.append(
                        Task(scenario, repeat, dataset_seed, split, split_seed, fold, jobs)
                    )
    return tasks


def all_jobs(tasks: list[Task]) -> list[Job]:
    """The jobs of ``tasks``, flattened."""
    return [job for task in tasks for job in task.jobs]
