"""The Dataset contract shared by every simulator and data source."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

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

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family: expected one of {FAMILIES}, got {self.family!r}")
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "groups", tuple(self.groups))
        columns = set(self.frame.columns)
        roles = {"target": [self.target], "features": self.features, "groups": self.groups}
        if self.time is not None:
            roles["time"] = [self.time]
        for role, names in roles.items():
            missing = [name for name in names if name not in columns]
            if missing:
                raise ValueError(f"{role}: column(s) {missing} not in the data frame")
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

    def __repr__(self) -> str:
        name = self.meta.get("name", "data")
        return (
            f"Dataset({name!r}, rows={self.n_rows}, target={self.target!r}, "
            f"family={self.family!r}, features={list(self.features)}, "
            f"groups={list(self.groups)})"
        )
