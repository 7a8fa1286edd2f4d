"""Published results a config reproduces: their schema and parsing.

A config may carry a ``reference`` (see :func:`parse_reference`): the numbers a
publication reports (a metric per method and value of a swept parameter, parameter
estimates with intervals) and its conclusions, each a claim the results can check:

- ``worse`` / ``better`` / ``equivalent``: the estimators predict worse than (better
  than, as well as) ``than`` on the reference metric;
- ``faster``: the estimators' median fit time is below ``than``'s;
- ``covers_zero`` / ``excludes_zero`` / ``covers_truth``: the 95% interval of ``term``
  in ``scenario`` (the model summaries of the first data set) holds 0 / does not / holds
  the simulator's truth;
- ``same_ranking``: the estimators rank the units as ``than`` does;
- ``same_estimate``: their estimate of ``term`` equals ``than``'s.

A claim may name ``contrast`` estimators, checked against the same claim to show what it
depends on, and a ``why``: the publication's or the config author's explanation, shown
when the claim does not hold. ``harness.reproduction`` reads the claims against a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

METRIC_CLAIMS = ("worse", "better", "equivalent")
TIME_CLAIMS = ("faster",)
ESTIMATE_CLAIMS = ("covers_zero", "excludes_zero", "covers_truth", "same_ranking", "same_estimate")
CLAIMS = METRIC_CLAIMS + TIME_CLAIMS + ESTIMATE_CLAIMS


@dataclass(frozen=True)
class Method:
    """A published method: the estimators that stand for it here and its published
    values of the reference metric, by value of the swept parameter."""

    name: str
    estimators: tuple[str, ...]
    values: dict[float, float]


@dataclass(frozen=True)
class Estimate:
    """A published estimate of ``term`` by ``estimator`` in ``scenario``, with its
    interval (NaN when none was published)."""

    scenario: str
    estimator: str
    term: str
    value: float
    low: float = float("nan")
    high: float = float("nan")


@dataclass(frozen=True)
class Claim:
    """A published conclusion and how to check it (see the module docstring)."""

    text: str
    claim: str
    estimators: tuple[str, ...]
    than: str | None = None
    start: float | None = None
    scenario: str | None = None
    term: str | None = None
    contrast: tuple[str, ...] = ()
    why: str = ""


@dataclass(frozen=True)
class Reference:
    """What a config reproduces: its source, the published numbers and conclusions."""

    source: str
    note: str = ""
    metric: str | None = None
    by: str | None = None
    methods: tuple[Method, ...] = ()
    estimates: tuple[Estimate, ...] = ()
    claims: tuple[Claim, ...] = ()


# --- parsing -------------------------------------------------------------------------


def _text(raw: dict, key: str, path: str, required: bool = False) -> str:
    value = raw.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{path}.{key}: expected text, got {value!r}")
    return " ".join(value.split())


def _number(value: Any, path: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not np.isfinite(value):
        raise ValueError(f"{path}: expected a number, got {value!r}")
    return float(value)


def _labels(value: Any, path: str, labels: set[str]) -> tuple[str, ...]:
    names = value if isinstance(value, list) else [value]
    for k, name in enumerate(names):
        if name not in labels:
            raise ValueError(
                f"{path}[{k}]: {name!r} is not one of the config's estimator labels "
                f"({', '.join(sorted(labels))})"
            )
    return tuple(names)


def _keys(raw: Any, valid: tuple[str, ...], path: str) -> dict:
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping, got {raw!r}")
    for key in raw:
        if key not in valid:
            raise ValueError(f"{path}.{key}: unknown field; fields: {', '.join(valid)}")
    return raw


def parse_reference(raw: Any, labels: list[str], metrics: tuple[str, ...]) -> Reference:
    """A config's ``reference`` field, checked against its estimator ``labels`` and
    ``metrics``; a ValueError names the offending field.

    Schema::

        reference:
          source: "Author (year), title, address"     # required
          note: "how the numbers were read"           # optional
          metric: weighted_mspe                       # the metric of `methods`
          by: n_users                                 # the swept parameter keying them
          methods:
            GLMM: {estimators: [mixed_glm], values: {100: 0.066, 200: 0.054}}
          estimates:
            - {scenario: "archers[experiment=2]", estimator: mixed_lm,
               term: sd archer, value: 22.97, low: 18.91, high: 28.05}
          conclusions:
            - {text: "LASSO predicts worse", claim: worse, estimators: [lasso],
               than: mixed_glm, from: 200, contrast: [lasso_rows], why: "..."}
    """
    path = "reference"
    raw = _keys(
        raw, ("source", "note", "metric", "by", "methods", "estimates", "conclusions"), path
    )
    known = set(labels)
    metric = raw.get("metric")
    if metric is not None and metric not in metrics:
        raise ValueError(f"{path}.metric: {metric!r} is not one of the config's metrics")
    by = raw.get("by")
    if by is not None and not isinstance(by, str):
        raise ValueError(f"{path}.by: expected a swept parameter's name, got {by!r}")
    methods = []
    for name, entry in (raw.get("methods") or {}).items():
        where = f"{path}.methods.{name}"
        entry = _keys(entry, ("estimators", "values"), where)
        values = entry.get("values") or {}
        if not isinstance(values, dict) or not values:
            raise ValueError(f"{where}.values: expected a mapping of {by} to values")
        methods.append(
            Method(
                str(name),
                _labels(entry.get("estimators"), f"{where}.estimators", known),
                {
                    _number(key, f"{where}.values"): _number(value, f"{where}.values.{key}")
                    for key, value in values.items()
                },
            )
        )
    if methods and (metric is None or by is None):
        raise ValueError(f"{path}: methods need a metric and the parameter they are keyed by")
    estimates = []
    for k, entry in enumerate(raw.get("estimates") or []):
        where = f"{path}.estimates[{k}]"
        entry = _keys(entry, ("scenario", "estimator", "term", "value", "low", "high"), where)
        estimates.append(
            Estimate(
                _text(entry, "scenario", where, required=True),
                _labels(entry.get("estimator"), f"{where}.estimator", known)[0],
                _text(entry, "term", where, required=True),
                _number(entry.get("value"), f"{where}.value"),
                *(
                    _number(entry[bound], f"{where}.{bound}") if bound in entry else np.nan
                    for bound in ("low", "high")
                ),
            )
        )
    claims = []
    for k, entry in enumerate(raw.get("conclusions") or []):
        where = f"{path}.conclusions[{k}]"
        fields = ("text", "claim", "estimators", "than", "from", "scenario", "term")
        entry = _keys(entry, (*fields, "contrast", "why"), where)
        kind = entry.get("claim")
        if kind not in CLAIMS:
            raise ValueError(f"{where}.claim: expected one of {', '.join(CLAIMS)}, got {kind!r}")
        if kind in METRIC_CLAIMS and metric is None:
            raise ValueError(f"{where}.claim: a {kind} claim needs reference.metric")
        than = entry.get("than")
        if kind not in ("covers_zero", "excludes_zero", "covers_truth") and than is None:
            raise ValueError(f"{where}.than: a {kind} claim compares with an estimator")
        if kind in ESTIMATE_CLAIMS and "scenario" not in entry:
            raise ValueError(f"{where}.scenario: a {kind} claim is read on one scenario")
        if kind in ("covers_zero", "excludes_zero", "covers_truth", "same_estimate") and (
            "term" not in entry
        ):
            raise ValueError(f"{where}.term: a {kind} claim is about one term")
        claims.append(
            Claim(
                text=_text(entry, "text", where, required=True),
                claim=kind,
                estimators=_labels(entry.get("estimators"), f"{where}.estimators", known),
                than=None if than is None else _labels(than, f"{where}.than", known)[0],
                start=None if "from" not in entry else _number(entry["from"], f"{where}.from"),
                scenario=entry.get("scenario"),
                term=entry.get("term"),
                contrast=_labels(entry.get("contrast") or [], f"{where}.contrast", known),
                why=_text(entry, "why", where),
            )
        )
    return Reference(
        source=_text(raw, "source", path, required=True),
        note=_text(raw, "note", path),
        metric=metric,
        by=by,
        methods=tuple(methods),
        estimates=tuple(estimates),
        claims=tuple(claims),
    )
