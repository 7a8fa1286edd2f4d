"""Nested parameter defaults, merged with user values and checked key by key."""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from typing import Any

import numpy as np


def suggest(name: str, valid: list[str] | tuple[str, ...]) -> str:
    """A ``"; did you mean 'x'?"`` hint for a misspelt name, or an empty string."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def merge_params(
    defaults: Mapping[str, Any], given: Mapping[str, Any], path: str = "params"
) -> dict[str, Any]:
    """Overlay ``given`` on a copy of ``defaults``, refusing keys the defaults lack.

    Parameters
    ----------
    defaults : mapping
        Every valid parameter with its default; a nested mapping is a group of
        parameters (``{"sd": {"user": 0.5, "item": 0.3}}``).
    given : mapping
        User values, nested the same way; dotted keys (``"sd.user"``) are accepted.
    path : str
        Where ``given`` came from, used in error messages.

    Returns
    -------
    dict
        The merged parameters.

    Raises
    ------
    ValueError
        For an unknown key (naming its path and the nearest valid key), or a scalar
        given where a group of parameters is expected.
    """
    merged = copy.deepcopy(dict(defaults))
    for key, value in unflatten(given).items():
        where = f"{path}.{key}"
        if key not in merged:
            raise ValueError(f"{where}: unknown parameter{suggest(key, list(merged))}")
        if isinstance(merged[key], Mapping):
            if not isinstance(value, Mapping):
                raise ValueError(
                    f"{where}: expected a mapping with keys {sorted(merged[key])}, got {value!r}"
                )
            merged[key] = merge_params(merged[key], value, where)
        else:
            merged[key] = value
    return merged


def unflatten(params: Mapping[str, Any]) -> dict[str, Any]:
    """Turn dotted keys into nested mappings: ``{"sd.user": 1}`` -> ``{"sd": {"user": 1}}``."""
    nested: dict[str, Any] = {}
    for key, value in params.items():
        head, *rest = str(key).split(".")
        if rest:
            inner = nested.setdefault(head, {})
            if not isinstance(inner, dict):
                raise ValueError(f"{key}: {head!r} is given both as a value and as a group")
            inner.update(unflatten({".".join(rest): value}))
        elif isinstance(value, Mapping):
            inner = nested.setdefault(head, {})
            if not isinstance(inner, dict):
                raise ValueError(f"{key}: given both as a value and as a group")
            inner.update(unflatten(value))
        else:
            nested[head] = value
    return nested


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Turn nested mappings into dotted keys: ``{"sd": {"user": 1}}`` -> ``{"sd.user": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def is_int(value: Any) -> bool:
    """An integer (numpy's too), not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite real number (numpy's too), not a bool."""
    return (
        isinstance(value, int | float | np.number)
        and not isinstance(value, bool)
        and bool(np.isfinite(value))
    )
