"""Sweep configs: YAML read safely, validated before anything runs.

Schema (every error names the path of the offending field)::

    name: shrinkage-by-activity        # required; letters, digits, '-', '_', '.'
    seed: 2016                         # default 0
    repeats: 3                         # independent data sets per scenario, default 1
    n_jobs: 2                          # default 1; `mixbench run --n-jobs` overrides
    scenarios:                         # required, non-empty
      - simulator: online_services
        params: {n_users: 2000}        # nested mappings or dotted keys
        sweep:                         # grid over parameters: a list of values per key
          events_per_user.mean: [2, 10, 50]
    splits:                            # required, non-empty
      - {scheme: random, folds: 5}
      - {scheme: seen_units, folds: 5, by: user}     # `by` defaults to the first group
      - {scheme: unseen_units, folds: 5, by: user}
    estimators:                        # required, non-empty
      - pooled_ols
      - {name: hist_gbm, label: gbm, params: {max_iter: 50}, grid: {learning_rate: [0.05, 0.1]}}
    metrics: [rmse, mae, r2]           # default: all three
    baseline: pooled_ols               # an estimator label; default the first estimator
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import estimators
import simulators
from harness import metrics as metric_registry
from harness import splits as split_registry
from simulators._params import flatten, suggest


class ConfigError(ValueError):
    """A config that cannot run; the message names the offending field's path."""


@dataclass(frozen=True)
class Scenario:
    """One simulator with fully resolved parameters (one point of a sweep grid)."""

    simulator: str
    params: dict[str, Any]
    swept: dict[str, Any]

    @property
    def label(self) -> str:
        """Printable name: the simulator and its swept values."""
        if not self.swept:
            return self.simulator
        inner = ", ".join(f"{key}={value}" for key, value in self.swept.items())
        return f"{self.simulator}[{inner}]"


@dataclass(frozen=True)
class SplitSpec:
    """A cross-validation scheme with its options."""

    scheme: str
    folds: int = 5
    by: str | None = None

    @property
    def label(self) -> str:
        """Printable name, e.g. ``unseen_units[by=user]``."""
        return f"{self.scheme}[by={self.by}]" if self.by else self.scheme

    def as_dict(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "folds": self.folds, "by": self.by}


@dataclass(frozen=True)
class EstimatorSpec:
    """A registered estimator with its parameters (one point of its grid)."""

    name: str
    params: dict[str, Any]
    label: str


@dataclass(frozen=True)
class Config:
    """A validated sweep."""

    name: str
    seed: int
    repeats: int
    n_jobs: int
    scenarios: tuple[Scenario, ...]
    splits: tuple[SplitSpec, ...]
    estimators: tuple[EstimatorSpec, ...]
    metrics: tuple[str, ...]
    baseline: str
    source: str = field(default="", compare=False)

    @property
    def hash(self) -> str:
        """Hash of the config's text, recorded in results and the report."""
        return hashlib.sha256(self.source.encode()).hexdigest()[:16]


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML sweep config.

    Raises
    ------
    ConfigError
        For a missing file, invalid YAML or any invalid field (the message names it).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config ({error.strerror})") from None
    return parse_config(text, origin=str(path))


def parse_config(text: str, origin: str = "<config>") -> Config:
    """Validate a config given as YAML text; see the module docstring for the schema."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{origin}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping of fields at the top level")
    _check_keys(
        raw,
        [
            "name",
            "seed",
            "repeats",
            "n_jobs",
            "scenarios",
            "splits",
            "estimators",
            "metrics",
            "baseline",
            "description",
        ],
        "",
    )
    name = _required(raw, "name", "")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(
            f"name: expected letters, digits, '-', '_' or '.' (it names the report folder), "
            f"got {name!r}"
        )
    seed = _integer(raw.get("seed", 0), "seed", minimum=0)
    repeats = _integer(raw.get("repeats", 1), "repeats", minimum=1)
    n_jobs = _integer(raw.get("n_jobs", 1), "n_jobs", minimum=-1)
    scenarios = _scenarios(_list(_required(raw, "scenarios", ""), "scenarios"))
    splits = tuple(
        _split(item, f"splits[{i}]")
        for i, item in enumerate(_list(_required(raw, "splits", ""), "splits"))
    )
    specs = _estimators(_list(_required(raw, "estimators", ""), "estimators"))
    metric_names = raw.get("metrics", list(metric_registry.available()))
    metric_names = tuple(_list(metric_names, "metrics"))
    valid_metrics = metric_registry.available()
    for i, metric in enumerate(metric_names):
        if metric not in valid_metrics:
            raise ConfigError(
                f"metrics[{i}]: unknown metric {metric!r}{suggest(str(metric), valid_metrics)} "
                f"Available metrics: {', '.join(valid_metrics)}"
            )
    labels = [spec.label for spec in specs]
    baseline = raw.get("baseline", labels[0])
    if baseline not in labels:
        raise ConfigError(
            f"baseline: {baseline!r} is not one of the estimators{suggest(str(baseline), labels)} "
            f"Estimator labels: {', '.join(labels)}"
        )
    return Config(
        name=name,
        seed=seed,
        repeats=repeats,
        n_jobs=n_jobs,
        scenarios=scenarios,
        splits=splits,
        estimators=specs,
        metrics=metric_names,
        baseline=baseline,
        source=text,
    )


def _required(raw: dict, key: str, path: str) -> Any:
    if key not in raw or raw[key] is None:
        raise ConfigError(f"{path}{key}: required field is missing")
    return raw[key]


def _check_keys(raw: dict, valid: list[str], path: str) -> None:
    for key in raw:
        if key not in valid:
            raise ConfigError(f"{path}{key}: unknown field{suggest(str(key), valid)}")


def _list(value: Any, path: str) -> list:
    if not isinstance(value, list):
        raise ConfigError(f"{path}: expected a list, got {value!r}")
    if not value:
        raise ConfigError(f"{path}: must not be empty")
    return value


def _mapping(value: Any, path: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a mapping, got {value!r}")
    return value


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{path}: expected a name, got {value!r}")
    return value


def _integer(value: Any, path: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{path}: must be at least {minimum}, got {value}")
    return value


def _grid(raw: Any, path: str) -> list[dict[str, Any]]:
    """The points of a parameter grid: every combination of the listed values."""
    grid = _mapping(raw, path)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}.{key}: expected a non-empty list of values, got {values!r}")
    keys = list(grid)
    return [dict(zip(keys, point, strict=True)) for point in itertools.product(*grid.values())]


def _scenarios(items: list) -> tuple[Scenario, ...]:
    scenarios = []
    for i, item in enumerate(items):
        path = f"scenarios[{i}]"
        item = _mapping(item, path)
        _check_keys(item, ["simulator", "params", "sweep"], f"{path}.")
        name = _string(_required(item, "simulator", f"{path}."), f"{path}.simulator")
        try:
            simulator = simulators.info(name)
        except KeyError as error:
            raise ConfigError(f"{path}.simulator: {error.args[0]}") from None
        params = _mapping(item.get("params"), f"{path}.params")
        for point in _grid(item.get("sweep"), f"{path}.sweep"):
            try:
                merged = simulator.resolve(params, f"{path}.params")
                merged = simulator.resolve(flatten(merged) | point, f"{path}.sweep")
            except ValueError as error:
                raise ConfigError(str(error)) from None
            scenarios.append(Scenario(simulator=name, params=merged, swept=point))
    return tuple(scenarios)


def _split(item: Any, path: str) -> SplitSpec:
    item = _mapping(item, path)
    _check_keys(item, ["scheme", "folds", "by"], f"{path}.")
    scheme = _string(_required(item, "scheme", f"{path}."), f"{path}.scheme")
    if scheme not in split_registry.SCHEMES:
        raise ConfigError(
            f"{path}.scheme: unknown split scheme {scheme!r}"
            f"{suggest(str(scheme), split_registry.SCHEMES)} "
            f"Available schemes: {', '.join(split_registry.SCHEMES)}"
        )
    folds = _integer(item.get("folds", 5), f"{path}.folds", minimum=2)
    by = item.get("by")
    if by is not None and not isinstance(by, str):
        raise ConfigError(f"{path}.by: expected a grouping column name, got {by!r}")
    if by is not None and scheme == "random":
        raise ConfigError(f"{path}.by: the random scheme splits rows and takes no 'by'")
    return SplitSpec(scheme=scheme, folds=folds, by=by)


def _estimators(items: list) -> tuple[EstimatorSpec, ...]:
    specs: list[EstimatorSpec] = []
    for i, item in enumerate(items):
        path = f"estimators[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        item = _mapping(item, path)
        _check_keys(item, ["name", "label", "params", "grid"], f"{path}.")
        name = _string(_required(item, "name", f"{path}."), f"{path}.name")
        try:
            entry = estimators.info(name)
        except KeyError as error:
            raise ConfigError(f"{path}.name: {error.args[0]}") from None
        params = _mapping(item.get("params"), f"{path}.params")
        points = _grid(item.get("grid"), f"{path}.grid")
        valid = sorted(entry.factory().get_params(deep=False))
        for key in [*params, *points[0]]:
            if key not in valid:
                where = "params" if key in params else "grid"
                raise ConfigError(
                    f"{path}.{where}.{key}: {name} has no parameter {key!r}{suggest(key, valid)} "
                    f"Valid parameters: {', '.join(valid)}"
                )
        base = item.get("label", name)
        if not isinstance(base, str) or not base:
            raise ConfigError(f"{path}.label: expected a non-empty string, got {base!r}")
        for point in points:
            label = base
            if point:
                label += "[" + ", ".join(f"{k}={_short(v)}" for k, v in point.items()) + "]"
            specs.append(EstimatorSpec(name=name, params=params | point, label=label))
    labels = [spec.label for spec in specs]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ConfigError(
            f"estimators: label {duplicates[0]!r} is used twice; give each entry its own 'label'"
        )
    return tuple(specs)


def _short(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
