"""The Dataset contract shared by every simulator and data source."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import pandas as pd

Family = Literal["gaussian", "binomial", "poisson"]
FAMILIES: tuple[str, ...] = ("gaussian", "binomial", "poisson")


def frame_hash(frame: pd.DataFrame) -> str:
    """Content hash of a data frame: its column names, dtypes and values.

    Parameters
    ----------
    frame : pandas.DataFrame
        The data to hash.

    Returns
    -------
    str
        A 16-character hexadecimal digest, identical for identical frames.
    """
    digest = hashlib.sha256()
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def _freeze(mapping: dict[str, Any] | None) -> MappingProxyType:
    return MappingProxyType(dict(mapping or {}))


def _check_weights(column: pd.Series, name: str) -> None:
    """Refuse a weights column that is not numeric, finite and non-negative with a
    positive total; the message names the column."""
    if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
        raise ValueError(f"weights: column {name!r} is {column.dtype}, not numeric")
    values = column.to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"weights: column {name!r} has {int(bad.sum())} missing or infinite value(s)"
        )
    if (values < 0).any():
        raise ValueError(
            f"weights: column {name!r} has {int((values < 0).sum())} negative value(s)"
        )
    if not (values > 0).any():
        raise ValueError(f"weights: column {name!r} is zero in every row")


@dataclass(frozen=True)
class Dataset:
    """Observations with their roles and, where known, the truth that generated them.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per observation. Shared between jobs, so treat it as read-only.
    target : str
        Name of the outcome column.
    family : {"gaussian", "binomial", "poisson"}
        Distribution of the outcome.
    features : tuple of str
        Fixed-effect covariate columns.
    groups : tuple of str
        Grouping-factor columns (user, item, region, ...), most important first.
    nesting : mapping
        ``{inner: outer}`` for a factor nested in another (user within region).
    time : str or None
        Optional time column.
    truth : mapping
        What generated the data where known: ``fixed_effects`` (name -> value),
        ``sd`` (factor or ``"noise"`` -> standard deviation), ``unit_effects``
        (factor -> pandas Series indexed by unit id).
    meta : mapping
        ``name``, ``params``, ``seed`` and the content ``hash`` of the frame.
    weights : str or None
        Optional column of row weights (numeric, finite, non-negative, not all zero):
        the harness passes them to ``fit`` as ``sample_weight`` and weights the
        prediction metrics with the test rows' weights. Not part of ``X``.
    """

    frame: pd.DataFrame
    target: str
    family: Family = "gaussian"
    features: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    nesting: MappingProxyType = field(default_factory=lambda: _freeze(None))
    time: str | None = None
    truth: MappingProxyType = field(default_factory=lambda: _freeze(None))
    meta: MappingProxyType = field(default_factory=lambda: _freeze(None))
    weights: str | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family: expected one of {FAMILIES}, got {self.family!r}")
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "groups", tuple(self.groups))
        columns = set(self.frame.columns)
        roles = {"target": [self.target], "features": self.features, "groups": self.groups}
        if self.time is not None:
            roles["time"] = [self.time]
        if self.weights is not None:
            roles["weights"] = [self.weights]
        for role, names in roles.items():
            missing = [name for name in names if name not in columns]
            if missing:
                raise ValueError(f"{role}: column(s) {missing} not in the data frame")
        if self.weights is not None:
            _check_weights(self.frame[self.weights], self.weights)
        meta = dict(self.meta)
        meta.setdefault("hash", frame_hash(self.frame))
        object.__setattr__(self, "nesting", _freeze(self.nesting))
        object.__setattr__(self, "truth", _freeze(self.truth))
        object.__setattr__(self, "meta", _freeze(meta))

    @property
    def n_rows(self) -> int:
        """Number of observations."""
        return len(self.frame)

    @property
    def X(self) -> pd.DataFrame:  # noqa: N802 - the scikit-learn name for the inputs
        """Every column an estimator may read: features, groups and time."""
        columns = [*self.features, *self.groups] + ([self.time] if self.time else [])
        return self.frame[columns]

    @property
    def y(self) -> pd.Series:
        """The outcome."""
        return self.frame[self.target]

    @property
    def sample_weight(self) -> np.ndarray | None:
        """The row weights as floats, or None when the data set has no weights column."""
        if self.weights is None:
            return None
        return self.frame[self.weights].to_numpy(dtype=float)

    def __repr__(self) -> str:
        name = self.meta.get("name", "data")
        return (
            f"Dataset({name!r}, rows={self.n_rows}, target={self.target!r}, "
            f"family={self.family!r}, features={list(self.features)}, "
            f"groups={list(self.groups)})"
        )
