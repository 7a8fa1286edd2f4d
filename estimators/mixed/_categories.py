"""The fixed part for new rows whose categorical columns hold levels not seen in fitting.

formulaic encodes such a level as all zeros with only a warning ("cast to nan"), which
silently predicts it as the reference level. Here it follows the model's ``new_levels``
policy instead: ``"error"`` refuses it, naming the column; ``"population"`` predicts
the fixed part averaged over the levels seen in fitting, weighted by their rows. That
is the expectation of the fixed part for a level drawn like the fitted ones, the
counterpart of a random effect of 0 for an unseen unit, and for an interaction such as
``x:c`` it is the average of the rows, not of the coefficients.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from estimators._columns import matched_ids
from estimators.mixed._design import categorical_factors, plain_matrix

# Rows of the expanded frame (rows with unseen levels x fitted levels) encoded at once.
CHUNK_ROWS = 500_000


def _encode(model_spec: Any, frame: pd.DataFrame) -> np.ndarray:
    plain = plain_matrix(model_spec, frame)  # numeric columns: no categories to check
    if plain is not None:
        return plain
    with warnings.catch_warnings():
        # Every level outside the fitted ones was handled before: one that formulaic
        # still casts to NaN is an error, not a warning to pass on.
        warnings.filterwarnings("error", message=".*categories outside.*")
        return np.asarray(model_spec.get_model_matrix(frame), dtype=float)


def unseen_levels(
    model_spec: Any, category_rows: pd.Series | None, frame: pd.DataFrame
) -> tuple[pd.DataFrame, dict[Any, np.ndarray]]:
    """``frame`` with its categorical ids written as in fitting (``matched_ids``), and
    per categorical column the rows whose level was not seen in fitting (only the
    columns that have some)."""
    if category_rows is None:
        return frame, {}
    frame = frame.copy(deep=False)
    unseen = {}
    for _, column, _ in categorical_factors(model_spec, frame.columns):
        if column in unseen or column not in category_rows.index.names:
            continue
        known = category_rows.index.unique(level=column)
        values = matched_ids(frame[column], known)
        frame[column] = np.asarray(values, dtype=object) if values.dtype == object else values
        missing = known.get_indexer(values) < 0
        if missing.any():
            unseen[column] = missing
    return frame, unseen


def unseen_message(column: Any, values: pd.Series) -> str:
    """Which column has how many unseen levels, with examples."""
    levels = pd.unique(values)
    examples = list(levels[:5])
    return f"column {column!r} has {len(levels)} level(s) not seen in fitting, e.g. {examples}"


def fixed_matrix(
    model_spec: Any,
    category_rows: pd.Series | None,
    frame: pd.DataFrame,
    new_levels: str,
    owner: str,
) -> np.ndarray:
    """The fixed-effects model matrix of new rows, unseen categorical levels handled by
    ``new_levels`` (see the module's docstring).

    Parameters
    ----------
    model_spec : formulaic ModelSpec
        The fitted fixed part.
    category_rows : pandas.Series or None
        Rows per combination of the categorical columns' levels in fitting.
    frame : pandas.DataFrame
        The new rows.
    new_levels : {"population", "error"}
    owner : str
        The estimator's name, for the warning.

    Returns
    -------
    numpy.ndarray
        All columns of ``model_spec`` (before dropping rank-deficient ones).
    """
    frame, unseen = unseen_levels(model_spec, category_rows, frame)
    if not unseen:
        return _encode(model_spec, frame)
    messages = [unseen_message(c, frame[c].to_numpy()[rows]) for c, rows in unseen.items()]
    if new_levels == "error":
        raise ValueError(
            f"{'; '.join(messages)}; the fixed effects have no coefficient for them. "
            "new_levels='population' predicts them with the fixed part averaged over the "
            "levels seen in fitting"
        )
    warnings.warn(
        f"{owner}: {'; '.join(messages)}: predicted with the fixed part averaged over the "
        "levels seen in fitting, weighted by their rows (new_levels='population')",
        UserWarning,
        stacklevel=4,
    )
    # Every unseen value stands in as a seen level first, so the other rows encode as
    # usual; then the rows with unseen levels are replaced by their averages.
    base = frame.copy(deep=False)
    for column, rows in unseen.items():
        values = base[column].to_numpy(dtype=object).copy()
        values[rows] = category_rows.index.get_level_values(column)[0]
        base[column] = values
    X = _encode(model_spec, base)
    pattern = np.column_stack(list(unseen.values()))
    columns = list(unseen)
    for combination in np.unique(pattern, axis=0):
        if not combination.any():
            continue
        which = [column for column, flag in zip(columns, combination, strict=True) if flag]
        rows = np.flatnonzero((pattern == combination).all(axis=1))
        X[rows] = _averaged_rows(model_spec, category_rows, base.iloc[rows], which)
    return X


def _averaged_rows(
    model_spec: Any, category_rows: pd.Series, rows: pd.DataFrame, columns: list
) -> np.ndarray:
    """Model-matrix rows of ``rows`` averaged over the fitted combinations of
    ``columns``' levels, weighted by their rows in fitting."""
    counts = category_rows.groupby(level=columns).sum()
    weights = counts.to_numpy(dtype=float) / counts.sum()
    combinations = counts.index.to_frame(index=False)
    out = np.zeros((len(rows), len(model_spec.column_names)))
    step = max(1, CHUNK_ROWS // len(combinations))
    for start in range(0, len(rows), step):
        chunk = rows.iloc[start : start + step]
        expanded = chunk.iloc[np.tile(np.arange(len(chunk)), len(combinations))].copy()
        for column in columns:
            expanded[column] = np.repeat(combinations[column].to_numpy(dtype=object), len(chunk))
        encoded = _encode(model_spec, expanded).reshape(len(combinations), len(chunk), -1)
        out[start : start + len(chunk)] = np.einsum("k,kij->ij", weights, encoded)
    return out
