"""Sweep configs: YAML read safely, validated before anything runs.

Schema (every error names the path of the offending field)::

    name: shrinkage-by-activity        # required; letters, digits, '-', '_', '.'
    seed: 2016                         # default 0
    repeats: 3                         # independent data sets per scenario, default 1
    n_jobs: 2                          # default 1; `mixbench run --n-jobs` overrides
    scenarios:                         # required, non-empty
      - simulator: online_services
        label: sparse_users            # optional: names the regime everywhere (tables,
                                       # plots, findings); unique in the config; default
                                       # the simulator's name. Swept values are appended:
                                       # sparse_users[events_per_user.mean=2]
        params: {n_users: 2000}        # nested mappings or dotted keys
        repeats: 6                     # optional: this scenario's number of data sets
        splits: [{scheme: fresh_draw}] # optional: this scenario's own split schemes
        estimators: [pooled_ols]       # optional: only these estimators (labels or names)
        sweep:                         # grid over parameters: a list of values per key
          events_per_user.mean: [2, 10, 50]
          "n_items, sd.item": [[50, 0.5], [500, 0.2]]   # joint key: varied together
    splits:                            # required unless every scenario has its own
      - {scheme: random, folds: 5}
      - {scheme: seen_units, folds: 5, by: user}     # `by` defaults to the first group
      - {scheme: unseen_units, folds: 5, by: user}
      - {scheme: random, folds: 5, shuffle: false}   # shuffle defaults to true
      - {scheme: temporal, cut: 0.8, gap: 1}         # cut: fraction(s) of rows by time;
                                                     # a list of cuts gives one fold each
      - {scheme: fresh_draw, draws: 5}               # fit on the data, test on 5 new draws
    estimators:                        # required, non-empty
      - pooled_ols
      - {name: hist_gbm, label: gbm, params: {max_iter: 50}, grid: {learning_rate: [0.05, 0.1]}}
    metrics: [rmse, mae, r2]           # default: rmse, mae, r2
    baseline: pooled_ols               # an estimator label; default the first estimator
    time_limit: 600                    # seconds per job; a job over it fails; default none
    warn_jobs: 10000                   # validate and run warn of a sweep with more jobs
    backend: loky                      # loky (joblib, this machine) or dask (a cluster)
    scheduler: tcp://10.0.0.1:8786     # dask only: the scheduler's address; default a
                                       # local cluster
    summaries: true                    # also fit each model on each scenario's whole first
                                       # data set: coefficients, intervals, rankings
    margin: 0.005                      # practical margin, relative (0.5% of the metric's
                                       # mean): a difference inside it is "equivalent";
                                       # or per metric: {default: 0.005, log_loss: 0.01}
    primary: {binomial: brier}         # the metric that ranks models per outcome family;
                                       # default rmse, log_loss, poisson_deviance
    reference:                         # published results the sweep reproduces: shown
      source: "Author (2016), title"   # beside this run's, with whether each published
      conclusions: [...]               # conclusion holds (schema: harness.reference)
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import itertools
import json
import re
import reprlib
import types
import typing
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import estimators
import simulators
from harness import metrics as metric_registry
from harness import splits as split_registry
from harness.reference import Reference, parse_reference
from simulators._params import flatten, is_number, suggest

BACKENDS: tuple[str, ...] = ("loky", "dask")
# A difference under 0.5% of a metric's mean is practically nil, unless a config says
# otherwise.
DEFAULT_MARGIN = 0.005
# A sweep of more jobs than this (the default study has under a thousand) is probably a
# grid larger than meant: validate and run say so, unless the config raises the bound.
DEFAULT_WARN_JOBS = 10_000


# A sweep config is a few kilobytes of YAML. These bounds keep a broken or hostile one (a
# "billion laughs" of nested aliases, a runaway nesting) from hanging validation.
MAX_CONFIG_CHARS = 1_000_000
MAX_CONFIG_VALUES = 100_000  # scalars and collections, every alias expanded
MAX_CONFIG_DEPTH = 64
MAX_MESSAGE_CHARS = 1_000


class ConfigError(ValueError):
    """A config that cannot run; the message names the offending field's path.

    A message longer than ``MAX_MESSAGE_CHARS`` (a huge value quoted in it) is cut in
    the middle, keeping the path at its start and the hint at its end.
    """

    def __init__(self, message: str) -> None:
        if len(message) > MAX_MESSAGE_CHARS:
            cut = len(message) - MAX_MESSAGE_CHARS + 200
            head, tail = message[: MAX_MESSAGE_CHARS - 400], message[-200:]
            message = f"{head} ...[{cut:,} characters cut]... {tail}"
        super().__init__(message)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8
_REPR.maxlevel = 3


def _show(value: Any) -> str:
    """``repr(value)``, shortened: a message quotes at most a few lines of a value."""
    return _REPR.repr(value)


class _Refused(Exception):
    """YAML that parses but that a config must not be: its message says why."""


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key repeated in one mapping: YAML itself keeps
    the last one silently (``estimators:`` twice would drop the first list)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges; a key written out may override a merged one
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in first_line:
                    raise _Refused(
                        f"line {line}: key {_show(key)} appears twice in one mapping (first "
                        f"at line {first_line[key]}); YAML would silently keep only the last"
                    )
                first_line[key] = line
            except TypeError:  # an unhashable key: the base class reports it
                continue
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int], depth: int) -> int:
    """Values in ``node`` with every alias expanded, counted without expanding them
    (an aliased node is counted once and its size reused)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    line = node.start_mark.line + 1
    if key in open_nodes:
        raise _Refused(f"line {line}: an alias refers to a collection that contains it")
    if depth > MAX_CONFIG_DEPTH:
        raise _Refused(f"line {line}: nested more than {MAX_CONFIG_DEPTH} levels deep")
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    open_nodes.add(key)
    size = 1 + sum(_expanded_size(child, sizes, open_nodes, depth + 1) for child in children)
    open_nodes.discard(key)
    if size > MAX_CONFIG_VALUES:
        raise _Refused(
            f"line {line}: expands to more than {MAX_CONFIG_VALUES:,} values (each YAML "
            "alias repeats what its anchor holds); a sweep config needs far fewer"
        )
    sizes[key] = size
    return size


def _load_yaml(text: str) -> Any:
    """The YAML document in ``text``, refusing duplicate keys and documents that
    expand (through aliases) beyond ``MAX_CONFIG_VALUES`` values."""
    if len(text) > MAX_CONFIG_CHARS:
        raise _Refused(f"{len(text):,} characters; a sweep config is at most {MAX_CONFIG_CHARS:,}")
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set(), 0)
        return loader.construct_document(node)
    except RecursionError:
        raise _Refused(f"nested more than {MAX_CONFIG_DEPTH} levels deep") from None
    finally:
        loader.dispose()


@dataclass(frozen=True)
class Scenario:
    """One simulator with fully resolved parameters (one point of a sweep grid).

    ``splits`` and ``estimators``, when given, replace the config's split schemes and
    restrict its estimators (by label or registry name) for this scenario, so one
    config can hold studies that need different schemes or models.
    """

    simulator: str
    params: dict[str, Any]
    swept: dict[str, Any]
    splits: tuple[SplitSpec, ...] = ()
    estimators: tuple[str, ...] = ()
    name: str | None = None
    repeats: int | None = None

    def runs(self, spec: EstimatorSpec) -> bool:
        """Whether the estimator ``spec`` runs on this scenario: listed by its label, or
        by its registry name when the config did not relabel it (``hist_gbm`` selects
        ``hist_gbm[learning_rate=0.1]`` but not an entry labelled ``mixed_lm_slopes``)."""
        if not self.estimators or spec.label in self.estimators:
            return True
        return spec.name in self.estimators and spec.label.split("[")[0] == spec.name

    def n_repeats(self, default: int) -> int:
        """Its number of data sets: its own ``repeats``, else the config's ``default``."""
        return self.repeats or default

    @property
    def regime(self) -> str:
        """The config entry's name (its ``label``, default the simulator's name), shared
        by the points of its sweep."""
        return self.name or self.simulator

    @property
    def label(self) -> str:
        """Printable name, unique in a config: the regime and its swept values."""
        if not self.swept:
            return self.regime
        inner = ", ".join(f"{key}={value}" for key, value in self.swept.items())
        return f"{self.regime}[{inner}]"


# The options each split scheme takes (besides ``scheme``).
SPLIT_OPTIONS: dict[str, tuple[str, ...]] = {
    "random": ("folds", "shuffle"),
    "seen_units": ("folds", "by", "shuffle"),
    "unseen_units": ("folds", "by", "shuffle"),
    "temporal": ("cut", "gap", "by"),
    "fresh_draw": ("draws", "by"),
}


@dataclass(frozen=True)
class SplitSpec:
    """A cross-validation scheme with its options.

    ``folds`` is the number of folds the scheme yields: one per cut for ``temporal``,
    one for ``fresh_draw`` (whose test set is ``draws`` new draws of the data).
    """

    scheme: str
    folds: int = 5
    by: str | None = None
    shuffle: bool = True
    cut: tuple[float, ...] = (0.8,)
    gap: float = 0.0
    draws: int = 5

    @property
    def label(self) -> str:
        """Printable name, e.g. ``unseen_units[by=user]`` or ``temporal[cut=0.8]``."""
        options = {
            key: value
            for key, value in self.as_dict().items()
            if key not in ("scheme", "folds")
            and value is not None
            and not (key == "shuffle" and value)
            and not (key == "gap" and value == 0)
        }
        if "cut" in options and len(self.cut) == 1:
            options["cut"] = self.cut[0]
        if not options:
            return self.scheme
        inner = ", ".join(f"{key}={_short(value)}" for key, value in options.items())
        return f"{self.scheme}[{inner}]"

    def as_dict(self) -> dict[str, Any]:
        """The scheme and the options it takes (what identifies the split)."""
        values = {
            "folds": self.folds,
            "by": self.by,
            "shuffle": self.shuffle,
            "cut": list(self.cut),
            "gap": self.gap,
            "draws": self.draws,
        }
        return {"scheme": self.scheme} | {
            key: values[key] for key in ("folds", *SPLIT_OPTIONS[self.scheme])
        }


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
    time_limit: float | None = None
    backend: str = "loky"
    scheduler: str | None = None
    summaries: bool = False
    warn_jobs: int = DEFAULT_WARN_JOBS
    margins: dict[str, float] = field(default_factory=lambda: {"default": DEFAULT_MARGIN})
    primary: dict[str, str] = field(default_factory=dict)
    reference: Reference | None = None
    source: str = field(default="", compare=False)

    def margin(self, metric: str) -> float:
        """The practical margin of ``metric`` (a breakdown such as ``rmse@seen`` takes
        its metric's), relative to the compared mean."""
        name = metric.split("@")[0]
        return self.margins.get(name, self.margins["default"])

    def primary_metric(self, family: str) -> str:
        """The metric that ranks models on ``family`` outcomes: the config's choice, or
        the family's default (``metrics.PRIMARY``)."""
        return self.primary.get(family) or metric_registry.primary_metric(family)

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
        with path.open(encoding="utf-8") as file:
            text = file.read(MAX_CONFIG_CHARS + 1)  # a longer one is refused unread
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    return parse_config(text, origin=str(path))


def parse_config(text: str, origin: str = "<config>") -> Config:
    """Validate a config given as YAML text; see the module docstring for the schema."""
    try:
        raw = _load_yaml(text)
    except _Refused as error:
        raise ConfigError(f"{origin}: {error}") from None
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
            "time_limit",
            "backend",
            "scheduler",
            "summaries",
            "warn_jobs",
            "margin",
            "primary",
            "reference",
            "description",
        ],
        "",
    )
    name = _required(raw, "name", "")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(
            f"name: expected letters, digits, '-', '_' or '.' (it names the report folder), "
            f"got {_show(name)}"
        )
    seed = _integer(raw.get("seed", 0), "seed", minimum=0)
    repeats = _integer(raw.get("repeats", 1), "repeats", minimum=1)
    n_jobs = _integer(raw.get("n_jobs", 1), "n_jobs", minimum=-1)
    specs = _estimators(_list(_required(raw, "estimators", ""), "estimators"))
    scenarios = _scenarios(_list(_required(raw, "scenarios", ""), "scenarios"), specs)
    if raw.get("splits") is None and all(scenario.splits for scenario in scenarios):
        splits: tuple[SplitSpec, ...] = ()
    else:
        splits = tuple(
            _split(item, f"splits[{i}]")
            for i, item in enumerate(_list(_required(raw, "splits", ""), "splits"))
        )
    metric_names = raw.get("metrics", list(metric_registry.DEFAULT))
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
    time_limit = raw.get("time_limit")
    if time_limit is not None and (not is_number(time_limit) or time_limit <= 0):
        raise ConfigError(
            f"time_limit: expected a positive number of seconds, got {_show(time_limit)}"
        )
    backend = raw.get("backend", "loky")
    if backend not in BACKENDS:
        raise ConfigError(
            f"backend: unknown backend {backend!r}{suggest(str(backend), BACKENDS)} "
            f"Available backends: {', '.join(BACKENDS)}"
        )
    scheduler = raw.get("scheduler")
    if scheduler is not None and (backend != "dask" or not isinstance(scheduler, str)):
        raise ConfigError(
            f"scheduler: expected the address of a dask scheduler (with backend: dask), "
            f"got {_show(scheduler)}"
        )
    summaries = raw.get("summaries", False)
    if not isinstance(summaries, bool):
        raise ConfigError(f"summaries: expected true or false, got {_show(summaries)}")
    warn_jobs = _integer(raw.get("warn_jobs", DEFAULT_WARN_JOBS), "warn_jobs", minimum=1)
    _check_fresh_draws(splits, scenarios)
    margins = _margins(raw.get("margin", DEFAULT_MARGIN), metric_names)
    primary = _primary(raw.get("primary"), metric_names)
    reference = _reference(raw.get("reference"), specs, metric_names)
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
        time_limit=None if time_limit is None else float(time_limit),
        backend=backend,
        scheduler=scheduler,
        summaries=summaries,
        warn_jobs=warn_jobs,
        margins=margins,
        primary=primary,
        reference=reference,
        source=text,
    )


def _margin_value(value: Any, path: str) -> float:
    if not is_number(value) or not 0 <= value < 1:
        raise ConfigError(
            f"{path}: expected a relative margin in [0, 1), e.g. 0.005 for 0.5%, got {_show(value)}"
        )
    return float(value)


def _margins(raw: Any, metric_names: tuple[str, ...]) -> dict[str, float]:
    """``margin``: one relative margin, or a mapping of metrics (and ``default``) to one."""
    if not isinstance(raw, dict):
        return {"default": _margin_value(raw, "margin")}
    margins = {"default": DEFAULT_MARGIN}
    for key, value in raw.items():
        if key != "default" and key not in metric_names:
            raise ConfigError(
                f"margin.{key}: not one of the config's metrics"
                f"{suggest(str(key), list(metric_names))} Metrics: {', '.join(metric_names)}"
            )
        margins[str(key)] = _margin_value(value, f"margin.{key}")
    return margins


def _primary(raw: Any, metric_names: tuple[str, ...]) -> dict[str, str]:
    """``primary``: outcome family -> the metric that ranks its models."""
    primary = {}
    for family, metric in _mapping(raw, "primary").items():
        if family not in metric_registry.PRIMARY:
            raise ConfigError(
                f"primary.{family}: unknown outcome family"
                f"{suggest(str(family), list(metric_registry.PRIMARY))} "
                f"Families: {', '.join(metric_registry.PRIMARY)}"
            )
        if metric not in metric_names or not metric_registry.applies(metric, family):
            raise ConfigError(
                f"primary.{family}: {metric!r} is not one of the config's metrics that apply "
                f"to {family} outcomes"
            )
        primary[str(family)] = str(metric)
    return primary


def _reference(
    raw: Any, specs: tuple[EstimatorSpec, ...], metric_names: tuple[str, ...]
) -> Reference | None:
    """``reference``: published results and conclusions (``harness.reference``)."""
    if raw is None:
        return None
    try:
        return parse_reference(raw, [spec.label for spec in specs], metric_names)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _check_fresh_draws(splits: tuple[SplitSpec, ...], scenarios: tuple[Scenario, ...]) -> None:
    """A ``fresh_draw`` split needs simulators that draw new data of the same units."""
    for j, scenario in enumerate(scenarios):
        if simulators.info(scenario.simulator).fresh_draws:
            continue
        own = bool(scenario.splits)
        for i, split in enumerate(scenario.splits or splits):
            if split.scheme == "fresh_draw":
                where = f"scenarios[{j}].splits[{i}]" if own else f"splits[{i}]"
                raise ConfigError(
                    f"{where}.scheme: fresh_draw needs a simulator that draws new data "
                    f"of the same units; scenarios[{j}] uses {scenario.simulator!r}, which "
                    "cannot"
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
        raise ConfigError(f"{path}: expected a list, got {_show(value)}")
    if not value:
        raise ConfigError(f"{path}: must not be empty")
    return value


def _mapping(value: Any, path: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a mapping, got {_show(value)}")
    return value


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{path}: expected a name, got {_show(value)}")
    return value


def _integer(value: Any, path: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{path}: expected an integer, got {_show(value)}")
    if value < minimum:
        raise ConfigError(f"{path}: must be at least {minimum}, got {value}")
    return value


def _grid(raw: Any, path: str) -> list[dict[str, Any]]:
    """The points of a parameter grid: every combination of the listed values.

    A key naming several parameters separated by commas varies them together: its
    values are lists with one value per parameter (``"n_users, sd.user": [[100, 0.5],
    [1000, 0.2]]`` gives two points, not four).
    """
    grid = _mapping(raw, path)
    axes = []
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"{path}.{key}: expected a non-empty list of values, got {_show(values)}"
            )
        names = [name.strip() for name in str(key).split(",")]
        if len(names) == 1:
            axes.append([{names[0]: value} for value in values])
            continue
        if any(not name for name in names):
            raise ConfigError(f"{path}.{key}: empty parameter name in a joint key")
        points = []
        for k, value in enumerate(values):
            if not isinstance(value, list) or len(value) != len(names):
                raise ConfigError(
                    f"{path}.{key}[{k}]: expected a list of {len(names)} values, one for each "
                    f"of {names}, got {_show(value)}"
                )
            points.append(dict(zip(names, value, strict=True)))
        axes.append(points)
    return [
        {name: value for part in combination for name, value in part.items()}
        for combination in itertools.product(*axes)
    ]


def _scenarios(items: list, specs: tuple[EstimatorSpec, ...]) -> tuple[Scenario, ...]:
    scenarios = []
    regimes: dict[str, int] = {}  # each entry's name -> its index
    names = {spec.label for spec in specs} | {spec.name for spec in specs}
    for i, item in enumerate(items):
        path = f"scenarios[{i}]"
        item = _mapping(item, path)
        _check_keys(
            item,
            ["simulator", "label", "params", "sweep", "splits", "estimators", "repeats"],
            f"{path}.",
        )
        repeats = item.get("repeats")
        if repeats is not None:
            repeats = _integer(repeats, f"{path}.repeats", minimum=1)
        own_splits = ()
        if item.get("splits") is not None:
            own_splits = tuple(
                _split(split, f"{path}.splits[{k}]")
                for k, split in enumerate(_list(item["splits"], f"{path}.splits"))
            )
        own_estimators = ()
        if item.get("estimators") is not None:
            own_estimators = tuple(
                _string(entry, f"{path}.estimators[{k}]")
                for k, entry in enumerate(_list(item["estimators"], f"{path}.estimators"))
            )
            for k, entry in enumerate(own_estimators):
                if entry not in names:
                    raise ConfigError(
                        f"{path}.estimators[{k}]: {entry!r} is not one of the config's "
                        f"estimators{suggest(entry, sorted(names))} "
                        f"Estimator labels: {', '.join(spec.label for spec in specs)}"
                    )
        name = _string(_required(item, "simulator", f"{path}."), f"{path}.simulator")
        try:
            simulator = simulators.info(name)
        except KeyError as error:
            raise ConfigError(f"{path}.simulator: {error.args[0]}") from None
        label = item.get("label")
        if label is not None and (
            not isinstance(label, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", label)
        ):
            raise ConfigError(
                f"{path}.label: expected letters, digits, '-', '_' or '.' (it names the "
                f"scenario in tables and plots), got {_show(label)}"
            )
        regime = label or name
        if regime in regimes:
            raise ConfigError(
                f"{path}.label: scenarios[{regimes[regime]}] is already called {regime!r}; "
                "two scenarios must not share a name (their results would be pooled): give "
                "each its own 'label'"
            )
        regimes[regime] = i
        params = _mapping(item.get("params"), f"{path}.params")
        for point in _grid(item.get("sweep"), f"{path}.sweep"):
            try:
                merged = simulator.resolve(params, f"{path}.params")
                merged = simulator.resolve(flatten(merged) | point, f"{path}.sweep")
            except ValueError as error:
                raise ConfigError(str(error)) from None
            scenarios.append(
                Scenario(
                    simulator=name,
                    params=merged,
                    swept=point,
                    splits=own_splits,
                    estimators=own_estimators,
                    name=label,
                    repeats=repeats,
                )
            )
    return tuple(scenarios)


def _split(item: Any, path: str) -> SplitSpec:
    item = _mapping(item, path)
    scheme = _string(_required(item, "scheme", f"{path}."), f"{path}.scheme")
    if scheme not in split_registry.SCHEMES:
        raise ConfigError(
            f"{path}.scheme: unknown split scheme {scheme!r}"
            f"{suggest(str(scheme), split_registry.SCHEMES)} "
            f"Available schemes: {', '.join(split_registry.SCHEMES)}"
        )
    options = SPLIT_OPTIONS[scheme]
    for key in item:
        if key != "scheme" and key not in options:
            known = [key for keys in SPLIT_OPTIONS.values() for key in keys]
            hint = "" if key in known else suggest(str(key), list(options))
            raise ConfigError(
                f"{path}.{key}: the {scheme} scheme takes no {key!r}{hint} "
                f"Its options: {', '.join(options)}"
            )
    by = item.get("by")
    if by is not None and not isinstance(by, str):
        raise ConfigError(f"{path}.by: expected a grouping column name, got {_show(by)}")
    shuffle = item.get("shuffle", True)
    if not isinstance(shuffle, bool):
        raise ConfigError(f"{path}.shuffle: expected true or false, got {_show(shuffle)}")
    if scheme == "temporal":
        cuts = item.get("cut", 0.8)
        cuts = cuts if isinstance(cuts, list) else [cuts]
        for k, value in enumerate(cuts):
            if not is_number(value) or not 0 < value < 1:
                raise ConfigError(
                    f"{path}.cut: expected a fraction of the rows in (0, 1) or a list of them, "
                    f"got {_show(cuts[k])}"
                )
        gap = item.get("gap", 0)
        if not is_number(gap) or gap < 0:
            raise ConfigError(f"{path}.gap: expected a time span >= 0, got {_show(gap)}")
        cut = tuple(float(value) for value in cuts)
        return SplitSpec(scheme=scheme, folds=len(cut), by=by, cut=cut, gap=float(gap))
    if scheme == "fresh_draw":
        draws = _integer(item.get("draws", 5), f"{path}.draws", minimum=1)
        return SplitSpec(scheme=scheme, folds=1, by=by, draws=draws)
    folds = _integer(item.get("folds", 5), f"{path}.folds", minimum=2)
    return SplitSpec(scheme=scheme, folds=folds, by=by, shuffle=shuffle)


def _estimator_classes(entry: estimators.EstimatorInfo) -> list[type]:
    """The classes behind an estimator's factories (its family variants included)."""
    factories = [entry.factory, *entry.variants.values()]
    return [getattr(factory, "func", factory) for factory in factories]  # partial -> class


@functools.cache
def _parameter_hints(cls: type) -> dict[str, Any]:
    """``cls.__init__``'s parameter annotations, resolved; empty if they cannot be."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that does not resolve: leave checks to fit
        return {}
    hints.pop("return", None)
    return hints


@functools.cache
def _documented_choices(cls: type) -> dict[str, tuple]:
    """Parameters whose numpydoc type is a set of values (``solver : {"auto", "exact"}``),
    from the Parameters section of ``cls`` and its bases' docstrings."""
    choices: dict[str, tuple] = {}
    for klass in reversed(cls.__mro__):
        section = re.search(
            r"^Parameters\n-+\n(.*?)(?:^\S[^\n]*\n-+\n|\Z)",
            inspect.cleandoc(klass.__doc__ or ""),
            flags=re.MULTILINE | re.DOTALL,
        )
        if section is None:
            continue
        for names, values in re.findall(
            r"^([A-Za-z_][\w, ]*?)\s*:\s*(\{[^}\n]*\})\s*$", section.group(1), re.MULTILINE
        ):
            try:  # as a list, to keep the documented order
                allowed = tuple(ast.literal_eval(f"[{values[1:-1]}]"))
            except (ValueError, SyntaxError, TypeError):
                continue
            for name in names.split(","):
                choices[name.strip()] = allowed
    return choices


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a type annotation; True for annotations not judged."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in args)
    if origin is typing.Literal:
        return any(value == arg and type(value) is type(arg) for arg in args)
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is Hashable:  # a column name; None where the harness fills it in
        return value is None or isinstance(value, str | int) and not isinstance(value, bool)
    if origin in (Sequence, list, tuple):
        item = args[0] if args else Any
        if item is Hashable and value is not None and _conforms(value, item):
            return True  # one column name for a list of them: estimators accept both
        return isinstance(value, list | tuple) and all(_conforms(v, item) for v in value)
    if origin in (Mapping, dict):
        return isinstance(value, dict)
    return True


def _describe(hint: Any) -> str:
    """An annotation in words, as a config's author would write the value."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(arg) for arg in args))
    if origin in (Sequence, list, tuple):
        plurals = {Hashable: "column names", float: "numbers", int: "integers", str: "texts"}
        return f"a list of {plurals.get(args[0], 'values') if args else 'values'}"
    words = {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "text",
        Hashable: "a column name",
        type(None): "null",
    }
    return words.get(hint, getattr(hint, "__name__", str(hint)))


def _check_parameter(entry: estimators.EstimatorInfo, key: str, value: Any, path: str) -> None:
    """Refuse a value of the wrong type (by the constructor's annotations) or outside
    its documented choices, for every class of the estimator that takes ``key``: it
    would fail each of its jobs, or worse, be read wrongly (``"false"`` is true)."""
    for cls in _estimator_classes(entry):
        hint = _parameter_hints(cls).get(key)
        allowed = _documented_choices(cls).get(key)
        if allowed is not None and not any(
            value == choice and type(value) is type(choice) for choice in allowed
        ):
            listed = ", ".join(repr(choice) for choice in allowed)
            hint_text = suggest(value, [str(c) for c in allowed]) if isinstance(value, str) else ""
            raise ConfigError(
                f"{path}: expected one of {listed} ({cls.__name__}'s {key}), got "
                f"{_show(value)}{hint_text}"
            )
        if hint is not None and not _conforms(value, hint):
            quoted = ""
            if isinstance(value, str) and value.lower() in ("true", "false", "null"):
                quoted = f" (text: write {value.lower()} without quotes)"
            raise ConfigError(
                f"{path}: expected {_describe(hint)} ({cls.__name__}'s {key}), got "
                f"{_show(value)}{quoted}"
            )


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
        valid = entry.parameter_names()
        for key in [*params, *points[0]]:
            if key not in valid:
                where = "params" if key in params else "grid"
                raise ConfigError(
                    f"{path}.{where}.{key}: {name} has no parameter {key!r}{suggest(key, valid)} "
                    f"Valid parameters: {', '.join(valid)}"
                )
        for key, value in params.items():
            _check_parameter(entry, key, value, f"{path}.params.{key}")
        checked = set()
        for point in points:
            for key, value in point.items():
                if (key, _short(value)) not in checked:
                    _check_parameter(entry, key, value, f"{path}.grid.{key}")
                    checked.add((key, _short(value)))
        base = item.get("label", name)
        if not isinstance(base, str) or not base:
            raise ConfigError(f"{path}.label: expected a non-empty string, got {_show(base)}")
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
