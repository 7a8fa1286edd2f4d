"""Expanding a config into jobs with stable identities and identity-derived seeds.

A job is (scenario, repeat, split scheme, fold, estimator). Its id is a hash of that
spec, so a rerun recognises finished jobs, and every seed derives from the identity of
what it seeds, not from a position in a list: adding an estimator or a scenario to a
config changes no other job's data, folds or results.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import types
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import estimators
import simulators
from harness.config import Config, EstimatorSpec, Scenario, SplitSpec


def stable_hash(*parts: Any, length: int = 16) -> str:
    """Hex digest of the canonical JSON of ``parts``."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def stable_seed(*parts: Any) -> int:
    """A seed in [0, 2**31) derived from ``parts``."""
    return int(stable_hash(*parts, length=8), 16) % (2**31)


_PACKAGES = ("estimators", "simulators")


def _module_closure(name: str) -> set[str]:
    """``name`` and every project module it uses, following module-level names."""
    seen: set[str] = set()
    stack = [name]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        module = importlib.import_module(current)
        for value in vars(module).values():
            if isinstance(value, types.ModuleType):
                owner = value.__name__
            else:
                owner = getattr(value, "__module__", None)
            # A package's __init__ re-exports everything: follow the defining modules
            # only, so one estimator's version does not change with another's code.
            if (
                isinstance(owner, str)
                and owner.split(".")[0] in _PACKAGES
                and owner not in _PACKAGES
                and owner not in seen
            ):
                stack.append(owner)
    return seen


@cache
def code_version(estimator_name: str, simulator_name: str) -> str:
    """Hash of the source of the code that produces a job's numbers: the modules of the
    classes the estimator's name builds (for every outcome family) and the project
    modules they use, and the same for the simulator.

    A stored row counts as finished only when its ``code_version`` is the current
    one, so editing an estimator reruns that estimator's jobs and no others.
    """
    entry = estimators.info(estimator_name)
    modules = _module_closure(simulators.info(simulator_name).generate.__module__)
    # Every class the name may build (its variants per outcome family too), and the class
    # behind a functools.partial factory rather than functools itself.
    for factory in (entry.factory, *entry.variants.values()):
        modules |= _module_closure(getattr(factory, "func", factory).__module__)
    digest = hashlib.sha256()
    for name in sorted(modules):
        source = getattr(importlib.import_module(name), "__file__", None)
        digest.update(name.encode())
        if source is not None:
            digest.update(Path(source).read_bytes())
    return digest.hexdigest()[:16]


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
            self.scenario.label,
            self.scenario.params,
            self.dataset_seed,
            self.split.as_dict(),
            self.split_seed,
            self.fold,
            self.estimator.name,
            self.estimator.params,
            self.estimator.label,
        )

    @property
    def code_version(self) -> str:
        """Version of the estimator's and simulator's code (see :func:`code_version`)."""
        return code_version(self.estimator.name, self.scenario.simulator)


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
        for repeat in range(scenario.n_repeats(config.repeats)):
            dataset_seed = stable_seed(config.seed, scenario.simulator, scenario.params, repeat)
            for split in scenario.splits or config.splits:
                split_seed = stable_seed(dataset_seed, split.as_dict())
                for fold in range(split.folds):
                    jobs = tuple(
                        Job(scenario, repeat, dataset_seed, split, split_seed, fold, spec)
                        for spec in config.estimators
                        if scenario.runs(spec)
                    )
                    tasks.append(
                        Task(scenario, repeat, dataset_seed, split, split_seed, fold, jobs)
                    )
    return tasks


def all_jobs(tasks: list[Task]) -> list[Job]:
    """The jobs of ``tasks``, flattened."""
    return [job for task in tasks for job in task.jobs]
