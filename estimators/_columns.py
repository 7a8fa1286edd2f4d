"""Reading named columns from X (pandas, polars or numpy) with errors that name them."""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.exceptions import DataConversionWarning

NewLevels = Literal["population", "error"]
NEW_LEVEL_POLICIES: tuple[str, ...] = ("population", "error")


def as_frame(X: Any) -> pd.DataFrame:
    """Return ``X`` as a pandas DataFrame without copying a pandas input.

    A polars DataFrame is converted; a 2-d array becomes a frame whose column names
    are the integer positions, so column indices can name columns.
    """
    if isinstance(X, pd.DataFrame):
        return X
    if type(X).__module__.startswith("polars"):
        return X.to_pandas()
    array = np.asarray(X)
    if array.ndim != 2:
        raise ValueError(
            f"X: expected a 2-d table, got an array of shape {array.shape}; "
            "Reshape your data with array.reshape(-1, 1) for one feature "
            "or array.reshape(1, -1) for one row"
        )
    return pd.DataFrame(array)


def validated_frame(estimator: Any, X: Any, *, reset: bool) -> pd.DataFrame:
    """``X`` as a frame after the checks scikit-learn asks of every estimator.

    Sparse, empty and complex inputs are refused with a message that says so. In
    ``fit`` (``reset=True``) the number of columns is recorded as ``n_features_in_``
    and string column names as ``feature_names_in_``. At predict time
    (``reset=False``) a plain array must have the training number of columns, since
    its columns are found by position; a DataFrame's columns are found by name, so
    extra columns are allowed there.
    """
    owner = type(estimator).__name__
    if sp.issparse(X):
        raise TypeError(
            f"{owner}: X is a sparse matrix; sparse input is not supported, "
            "pass a dense array or a DataFrame"
        )
    is_table = isinstance(X, pd.DataFrame) or type(X).__module__.startswith("polars")
    frame = as_frame(X)
    if frame.shape[0] == 0:
        raise ValueError(f"X: 0 sample(s) (shape={frame.shape}) while a minimum of 1 is required.")
    if frame.shape[1] == 0:
        raise ValueError(f"X: 0 feature(s) (shape={frame.shape}) while a minimum of 1 is required.")
    complex_columns = [name for name, dtype in frame.dtypes.items() if dtype.kind == "c"]
    if complex_columns:
        raise ValueError(f"X: Complex data not supported (column(s) {complex_columns})")
    if reset:
        estimator.n_features_in_ = frame.shape[1]
        if is_table and all(isinstance(name, str) for name in frame.columns):
            estimator.feature_names_in_ = np.asarray(frame.columns, dtype=object)
        elif hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
    elif not is_table and frame.shape[1] != getattr(estimator, "n_features_in_", frame.shape[1]):
        raise ValueError(
            f"X has {frame.shape[1]} features, but {owner} is expecting "
            f"{estimator.n_features_in_} features as input"
        )
    return frame


def outcome_vector(y: Any, n_rows: int, name: str = "y", stacklevel: int = 4) -> np.ndarray:
    """The outcome as a 1-d numpy array of ``n_rows`` values (a column vector is read as
    one outcome per row, with scikit-learn's warning); errors name it ``name``."""
    if y is None:
        raise ValueError(
            f"{name}: this estimator requires y to be passed, but the target y is None"
        )
    if type(y).__module__.startswith("polars"):
        y = y.to_numpy()
    values = np.asarray(y)
    if values.ndim == 2 and values.shape[1] == 1:
        warnings.warn(
            "A column-vector y was passed when a 1d array was expected; "
            "it is read as one outcome per row",
            DataConversionWarning,
            stacklevel=stacklevel,
        )
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"{name}: expected one outcome per row, got shape {values.shape}")
    if values.shape[0] != n_rows:
        raise ValueError(f"{name}: has {values.shape[0]} values but X has {n_rows} rows")
    return values


def as_target(y: Any, n_rows: int) -> np.ndarray:
    """The outcome as a finite float vector of ``n_rows`` values."""
    values = outcome_vector(y, n_rows)
    try:
        values = values.astype(float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"y: expected numbers ({error})") from None
    if not np.all(np.isfinite(values)):
        raise ValueError(f"y: {int(np.sum(~np.isfinite(values)))} missing or infinite value(s)")
    return values


def as_weights(sample_weight: Any, n_rows: int) -> np.ndarray | None:
    """``sample_weight`` as a float vector of ``n_rows`` finite, non-negative weights with
    a positive total, or None when no weights are given; errors name ``sample_weight``."""
    if sample_weight is None:
        return None
    if type(sample_weight).__module__.startswith("polars"):
        sample_weight = sample_weight.to_numpy()
    if np.isscalar(sample_weight):
        sample_weight = np.full(n_rows, sample_weight)
    try:
        weight = np.asarray(sample_weight, dtype=float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"sample_weight: expected numbers ({error})") from None
    if weight.ndim != 1:
        raise ValueError(
            f"sample_weight: expected one weight per row (shape ({n_rows},)), "
            f"got shape {weight.shape}"
        )
    if weight.shape[0] != n_rows:
        raise ValueError(
            f"sample_weight: has {weight.shape[0]} values but X has {n_rows} rows "
            f"(expected shape ({n_rows},))"
        )
    if not np.all(np.isfinite(weight)):
        raise ValueError(
            f"sample_weight: {int(np.sum(~np.isfinite(weight)))} missing or infinite value(s)"
        )
    if (weight < 0).any():
        raise ValueError(f"sample_weight: {int(np.sum(weight < 0))} negative value(s)")
    if not (weight > 0).any():
        raise ValueError("sample_weight: every weight is zero; at least one must be positive")
    return weight


def weighted_moments(
    matrix: np.ndarray, weight: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Each column's mean and standard deviation, weighted by ``weight`` (None: equal
    weights); a row of weight 2 counts as two rows. A matrix without columns gives
    empty arrays."""
    weight = np.ones(len(matrix)) if weight is None else weight
    share = weight / weight.sum()
    mean = share @ matrix
    return mean, np.sqrt(share @ (matrix - mean) ** 2)


def weighted_rows(
    frame: pd.DataFrame, y: Any, sample_weight: Any
) -> tuple[pd.DataFrame, Any, np.ndarray | None]:
    """``frame``, ``y`` and the validated weights, without the rows of weight 0.

    A row of weight 0 is left out before anything is learnt from it, as R's ``lm``
    and ``glm`` drop zero-weight cases: its group levels count as unseen, so a fit with
    such rows is the fit to the other rows alone. ``y`` is returned as an array (rows
    matched by position), unchanged when there are no weights.
    """
    weight = as_weights(sample_weight, len(frame))
    if weight is None or (weight > 0).all():
        return frame, y, weight
    if y is not None and type(y).__module__.startswith("polars"):
        y = y.to_numpy()
    kept = np.flatnonzero(weight > 0)
    outcome = None if y is None else np.asarray(y)
    if outcome is not None and outcome.shape[:1] == (len(frame),):
        outcome = outcome[kept]
    return frame.iloc[kept], outcome, weight[kept]


def class_labels(y: Any, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The classes of a binary outcome (sorted) and the outcome as 0/1 floats, 1 for the
    second class (``classes_[1]``, the outcome 1 of 0/1 data).

    Raises
    ------
    ValueError
        Naming y, for missing values, a wrong length, one class only, or more than two.
    """
    values = outcome_vector(y, n_rows)
    missing = pd.isna(values) if values.dtype.kind in "OfcUS" else np.zeros(n_rows, bool)
    if values.dtype.kind in "fc":
        missing = missing | ~np.isfinite(values)
    if missing.any():
        raise ValueError(f"y: {int(missing.sum())} missing or infinite value(s)")
    if values.dtype.kind == "f" and not np.all(values == np.round(values)):
        raise ValueError(
            "y: a binary outcome takes two values (0 and 1, say); got non-integer numbers "
            "(Unknown label type: continuous)"
        )
    classes, target = np.unique(values, return_inverse=True)
    if classes.size < 2:
        raise ValueError(
            f"y: only one class ({classes[0]!r}) is present in the training rows; a "
            "classifier needs both outcomes"
        )
    if classes.size > 2:
        raise ValueError(
            f"y: a binary outcome takes two values, got {classes.size} classes "
            f"({list(classes[:5])}...). Only binary classification is supported."
        )
    return classes, target.astype(float)


def check_columns(frame: pd.DataFrame, columns: Sequence[Hashable], role: str) -> list[Hashable]:
    """Check that every column named for ``role`` is in ``frame``; return them as a list."""
    if isinstance(columns, str | int):
        columns = [columns]
    names = list(columns)
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise ValueError(
            f"{role}: column(s) {missing} not found in X; X has columns {list(frame.columns)}"
        )
    return names


def numeric_matrix(
    frame: pd.DataFrame, columns: Sequence[Hashable], role: str, allow_missing: bool = False
) -> np.ndarray:
    """The named columns as a float matrix; a non-numeric or missing value names its column."""
    names = check_columns(frame, columns, role)
    matrix = np.empty((len(frame), len(names)), dtype=float)
    for k, name in enumerate(names):
        column = frame[name]
        if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
            try:
                column = pd.to_numeric(column)
            except TypeError:
                raise TypeError(
                    f"{role}: column {name!r} holds values that are neither numbers nor "
                    "text; each argument must be a string or a number"
                ) from None
            except ValueError:
                raise ValueError(
                    f"{role}: column {name!r} is not numeric (dtype {frame[name].dtype}); "
                    "name it as a group column or encode it"
                ) from None
        matrix[:, k] = column.to_numpy(dtype=float, na_value=np.nan)
    # Missing (NaN) may be allowed for models that handle it; infinite never is.
    bad = np.isinf(matrix) if allow_missing else ~np.isfinite(matrix)
    if bad.any():
        name = names[int(np.flatnonzero(bad.any(axis=0))[0])]
        kind = "infinite" if allow_missing else "missing or infinite"
        raise ValueError(
            f"{role}: column {name!r} has {int(bad.any(axis=1).sum())} row(s) with "
            f"{kind} values (inf or NaN)"
        )
    return matrix


def allow_missing_features(tags: Any) -> Any:
    """scikit-learn tags of a model that takes NaN features (trees handle them)."""
    tags.input_tags.allow_nan = True
    return tags


def default_features(
    frame: pd.DataFrame, feature_cols: Sequence[Hashable] | None, exclude: Sequence[Hashable]
) -> list[Hashable]:
    """``feature_cols`` if given, otherwise every column of ``frame`` not in ``exclude``."""
    if feature_cols is not None:
        return check_columns(frame, feature_cols, "feature_cols")
    excluded = set(exclude)
    return [name for name in frame.columns if name not in excluded]


def check_policy(new_levels: str) -> None:
    """Refuse an unknown ``new_levels`` policy, listing the valid ones."""
    if new_levels not in NEW_LEVEL_POLICIES:
        raise ValueError(f"new_levels: expected one of {NEW_LEVEL_POLICIES}, got {new_levels!r}")


def check_group_values(column: pd.Series, name: Hashable) -> None:
    """Refuse missing (NaN, None) and infinite values in a grouping column, naming it."""
    missing = int(column.isna().sum())
    if missing:
        raise ValueError(
            f"group column {name!r} has {missing} missing value(s) (NaN or None); drop "
            "those rows or give them a level of their own"
        )
    if pd.api.types.is_float_dtype(column.dtype):
        infinite = int(np.isinf(column.to_numpy(dtype=float)).sum())
        if infinite:
            raise ValueError(f"group column {name!r} has {infinite} infinite value(s) (inf)")


class LevelCodes:
    """Map the levels of a grouping column seen in training to codes 0..L-1.

    Parameters
    ----------
    values : array-like
        The training column.
    name : hashable
        The column's name, used in error messages.
    allow_missing : bool
        Whether a missing value (None, NaN) is allowed: it is then no level, and
        ``encode`` codes it -1 whatever the policy (trees route it as missing).
        Otherwise a missing value is an error naming the column.

    Attributes
    ----------
    levels : pandas.Index
        The distinct training levels, sorted; a level's code is its position.
    """

    def __init__(self, values: Any, name: Hashable, allow_missing: bool = False) -> None:
        column = pd.Series(values)
        self.allow_missing = allow_missing
        self.name = name
        if allow_missing:
            column = column[column.notna()]
        else:
            check_group_values(column, name)
        if isinstance(column.dtype, pd.CategoricalDtype):
            # The levels present, as plain values: their order must not depend on the
            # category order a container happens to carry (polars and pandas differ).
            present = np.unique(column.cat.codes.to_numpy())
            self.levels = pd.Index(np.asarray(column.cat.categories)[present]).sort_values()
        else:
            try:
                self.levels = pd.Index(pd.unique(column)).sort_values()
            except TypeError:
                raise TypeError(
                    f"group column {name!r} holds values that are neither numbers nor text "
                    "(or mixes them); each argument must be a string or a number"
                ) from None

    def __len__(self) -> int:
        return len(self.levels)

    def encode(self, values: Any, new_levels: str = "population") -> np.ndarray:
        """Codes of ``values``; a level not seen in training gets -1.

        Ids are matched by value across numbers and text (see ``matched_ids``).

        Raises
        ------
        ValueError
            When ``new_levels="error"`` and some level was not seen in training.
        """
        column = pd.Series(values)
        if getattr(self, "allow_missing", False):
            present = column.notna().to_numpy()
        else:
            check_group_values(column, self.name)
            present = np.ones(len(column), bool)
        codes = self.levels.get_indexer(matched_ids(column, self.levels))
        unseen = (codes < 0) & present
        if new_levels == "error" and unseen.any():
            raise unseen_levels_error(self.name, pd.Series(values)[unseen])
        return codes


def _id_kind(ids: pd.Index) -> str:
    """What the ids of a column are, for matching them by value: "number", "text" or
    "other" (booleans, dates, mixed types: matched as they are)."""
    if isinstance(ids.dtype, pd.CategoricalDtype):
        ids = pd.Index(ids.categories)
    if pd.api.types.is_bool_dtype(ids):
        return "other"
    if pd.api.types.is_numeric_dtype(ids):
        return "number"
    inferred = pd.api.types.infer_dtype(ids, skipna=True)
    if inferred == "string":
        return "text"
    if inferred in ("integer", "floating", "mixed-integer-float", "decimal"):
        return "number"
    return "other"


def _as_number(value: Any) -> Any:
    """A text id as the number it spells (int where it is one), or unchanged."""
    if not isinstance(value, str):
        return value
    try:
        return int(value.strip())
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def _as_text(value: Any) -> Any:
    """A number id as text the way a CSV writes it: 3 and 3.0 as '3'."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        return value
    if float(value).is_integer():
        return str(int(value))
    return str(value)


def matched_ids(values: Any, levels: pd.Index) -> pd.Index:
    """``values`` written as the ids of ``levels`` are, so that equal ids match by value.

    Ids fitted as numbers and given as text (read back from a CSV file) are read as
    numbers; ids fitted as text and given as numbers are written as text ('3' for 3
    and 3.0). Values that do not convert, and ids of the same kind as the levels, are
    returned as they are (a value still not among the levels is an unseen level). For
    a MultiIndex (an interaction), each column is matched with its own levels.

    Parameters
    ----------
    values : array-like or pandas.Index
        The ids of new rows.
    levels : pandas.Index
        The levels seen in fitting.

    Returns
    -------
    pandas.Index

    Examples
    --------
    >>> levels = pd.Index([1, 2, 3])
    >>> levels.get_indexer(matched_ids(["3", "1", "nobody"], levels)).tolist()
    [2, 0, -1]
    """
    values = values if isinstance(values, pd.Index) else pd.Index(values)
    if isinstance(levels, pd.MultiIndex) and isinstance(values, pd.MultiIndex):
        return pd.MultiIndex.from_arrays(
            [
                matched_ids(values.get_level_values(k), levels.levels[k])
                for k in range(levels.nlevels)
            ],
            names=values.names,
        )
    target, given = _id_kind(levels), _id_kind(values)
    if target == given or {target, given} != {"number", "text"}:
        return values
    convert = _as_number if target == "number" else _as_text
    # Convert each distinct id once; a million rows rarely hold a million ids.
    codes, uniques = pd.factorize(np.asarray(values, dtype=object))
    converted = pd.Index([convert(value) for value in uniques])
    return converted.take(codes)


def unseen_levels_error(name: Hashable, unseen_values: Any) -> ValueError:
    """The error for levels not seen in training under ``new_levels="error"``."""
    unseen = pd.Index(unseen_values).unique()
    return ValueError(
        f"group column {name!r}: {len(unseen)} level(s) not seen in training, "
        f"e.g. {list(unseen[:5])}; use new_levels='population' to predict them "
        "with the population part (random effect 0)"
    )


def add_group_effects(
    prediction: np.ndarray,
    frame: pd.DataFrame,
    levels: dict[Hashable, LevelCodes],
    effects: dict[Hashable, pd.Series],
    new_levels: str,
) -> np.ndarray:
    """Add each seen level's effect to ``prediction`` in place; unseen levels add 0 (or
    raise under ``new_levels="error"``). Returns ``prediction``."""
    for name, codes_of in levels.items():
        codes = codes_of.encode(frame[name], new_levels)
        seen = codes >= 0
        prediction[seen] += effects[name].to_numpy()[codes[seen]]
    return prediction


def linear_predictor(model: Any, X: Any) -> np.ndarray:
    """``intercept_ + features @ coef_`` plus the effect of each row's seen levels, for
    the fitted linear-in-dummies models (fixed effects, ridge, logistic): they set
    ``intercept_``, ``coef_``, ``feature_cols_``, ``levels_`` and ``group_effects_``.
    Unseen levels add 0, or raise under ``new_levels="error"``."""
    check_policy(model.new_levels)
    frame = validated_frame(model, X, reset=False)
    check_columns(frame, list(model.levels_), "group_cols")
    features = numeric_matrix(frame, model.feature_cols_, "feature_cols")
    prediction = model.intercept_ + features @ model.coef_.to_numpy()
    return add_group_effects(
        prediction, frame, model.levels_, model.group_effects_, model.new_levels
    )
