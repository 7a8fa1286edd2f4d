"""Step 1 of a mixed-model fit: the design (X, Z) and the cross-products computed once.

Random-effects terms are ordered by number of levels, largest first, as in lme4. The
first term's cross-product Z1'Z1 is block-diagonal (one q x q block per level) and is
kept as a batch of small blocks; the other terms are kept sparse. After this step, an
evaluation of the objective touches nothing that grows with the number of rows.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import formulaic
import numpy as np
import pandas as pd
import scipy.sparse as sp

from estimators._columns import matched_ids, validated_frame
from estimators.mixed._formula import FormulaError, ParsedFormula, RandomTermSpec, split_offsets


def lme4_name(name: str) -> str:
    """formulaic's column names as R prints them: ``Intercept`` -> ``(Intercept)``, a
    level of a categorical column appended to its name, whether coded by treatment
    contrasts (``g[T.b]`` -> ``gb``) or in full without an intercept (``g[1]`` -> ``g1``),
    in interactions too (``g[1]:x`` -> ``g1:x``).

    Examples
    --------
    >>> [lme4_name(n) for n in ["Intercept", "g[T.b]", "var1[5]:var2", "a[T.x]:b[y]"]]
    ['(Intercept)', 'gb', 'var15:var2', 'ax:by']
    """
    if name == "Intercept":
        return "(Intercept)"
    return re.sub(r"\[(?:T\.)?([^\]]*)\]", r"\1", name)


def _name_parts(name: str) -> list[str]:
    """A formulaic column name split at the ':' of an interaction (not inside brackets,
    parentheses or backticks): ``var1[T.2]:part[T.b]`` -> ``['var1[T.2]', 'part[T.b]']``."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, char in enumerate(name):
        if char == "`":
            quoted = not quoted
        elif not quoted and char in "[(":
            depth += 1
        elif not quoted and char in "])":
            depth -= 1
        elif char == ":" and depth == 0 and not quoted:
            parts.append(name[start:i])
            start = i + 1
    parts.append(name[start:])
    return parts


def _factor_of(part: str) -> str:
    """The factor a column-name part belongs to: ``var1[T.2]`` -> ``var1``."""
    return re.sub(r"\[[^\]]*\]$", "", part)


def r_column_order(columns: Sequence[str], fixed: str) -> tuple[np.ndarray, list[str]]:
    """The fixed-effects columns in R's order, and their names as lme4 prints them.

    R names an interaction's variables in the order they first appear in the formula
    (``Days + var1:Days`` gives ``Days:var12``, not ``var12:Days``), and within an
    interaction of factors the first variable's levels vary fastest. formulaic keeps
    each term's variables as written; this reorders the parts of each name, and the
    columns of an interaction of several factors, accordingly.

    Parameters
    ----------
    columns : sequence of str
        formulaic's column names, in its order.
    fixed : str
        The fixed part of the formula as written, which gives R's variable order.

    Returns
    -------
    order : numpy.ndarray
        Positions of formulaic's columns in R's order.
    names : list of str
        lme4's names, in R's order.

    Examples
    --------
    >>> columns = ["Intercept", "Days", "var1[T.2]:Days"]
    >>> order, names = r_column_order(columns, "1 + Days + var1:Days")
    >>> order.tolist(), names
    ([0, 1, 2], ['(Intercept)', 'Days', 'Days:var12'])
    """
    order, names = _r_column_order(tuple(columns), fixed)
    return np.array(order, dtype=int), list(names)


# Every fit of a sweep asks for the same columns of the same formula: the order is
# worked out once (the answer depends on the text alone; callers get their own copies).
@functools.lru_cache(maxsize=256)
def _r_column_order(
    columns: tuple[str, ...], fixed: str
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    text = re.sub(r"\s+", "", fixed)

    def rank(factor: str) -> int:
        # The factor as a whole token: x is not found inside exposure.
        pattern = r"(?<![\w.`])" + re.escape(re.sub(r"\s+", "", factor)) + r"(?![\w.`])"
        found = re.search(pattern, text)
        return found.start() if found else len(text)

    order: list[int] = []
    names: list[str] = []
    start = 0
    while start < len(columns):
        signature = [_factor_of(part) for part in _name_parts(columns[start])]
        stop = start
        # The columns of one term (one set of factors) are consecutive.
        while (
            stop < len(columns)
            and [_factor_of(part) for part in _name_parts(columns[stop])] == signature
        ):
            stop += 1
        block = [_name_parts(columns[k]) for k in range(start, stop)]
        positions = sorted(range(len(signature)), key=lambda j: (rank(signature[j]), j))
        levels = [list(dict.fromkeys(parts[j] for parts in block)) for j in range(len(signature))]
        # R's first variable varies fastest: sort by the last one first.
        keys = [tuple(levels[j].index(parts[j]) for j in reversed(positions)) for parts in block]
        for k in sorted(range(len(block)), key=lambda k: keys[k]):
            order.append(start + k)
            names.append(":".join(lme4_name(block[k][j]) for j in positions))
        start = stop
    return tuple(order), tuple(names)


def required_columns(expr: str) -> set[str]:
    """The data columns a formulaic expression reads, including those of its
    ``offset(...)`` terms (``offset`` itself is lme4's marker, not a column)."""
    return set(_required_columns(expr))


# Parsing by formulaic costs about 0.1 ms an expression, and every fit and prediction
# asks for the same few expressions: each is parsed once (the answer depends on the
# text alone, and a frozenset cannot be changed by a caller).
@functools.lru_cache(maxsize=512)
def _required_columns(expr: str) -> frozenset[str]:
    rest, offsets = split_offsets(expr)
    columns: set[str] = set()
    # An offset's expression is read as a whole (offset_values), not as formula algebra.
    for part in [rest, *(f"I({offset})" for offset in offsets)]:
        if not part.strip():
            continue
        try:
            columns |= set(formulaic.Formula(part).required_variables)
        except Exception as error:  # formulaic raises several types for bad syntax
            raise FormulaError(f"cannot parse {part!r}: {error}") from None
    return frozenset(columns)


def offset_columns(expr: str) -> set[str]:
    """The data columns an offset expression (the inside of ``offset(...)``) reads."""
    return required_columns(f"offset({expr})")


def offset_values(expr: str, frame: pd.DataFrame) -> np.ndarray:
    """The values of one offset expression (``log(exposure)``, ``n``) for the rows of
    ``frame``. The expression is evaluated as a whole, in ``I(...)``, so that
    ``offset(2 * x)`` is a product, not formula algebra; numpy's functions (``log``,
    ``exp``, ``sqrt``) are available by their names, as formulaic provides them.

    Raises a ValueError naming the expression when a column it reads is missing, when it
    is not one numeric column, or when a value is missing or infinite (``log(0)``).
    """
    missing = sorted(offset_columns(expr) - set(frame.columns))
    if missing:
        raise ValueError(f"offset({expr}): column(s) {missing} not found in X")
    try:
        with np.errstate(all="ignore"):
            matrix = formulaic.model_matrix(f"0 + I({expr})", frame, na_action="ignore")
        values = np.asarray(matrix, dtype=float)
    except Exception as error:  # formulaic raises several types for bad expressions
        raise FormulaError(f"offset({expr}): cannot evaluate it: {error}") from None
    if matrix.shape[1] != 1:
        raise ValueError(
            f"offset({expr}): expected one numeric column, got {matrix.shape[1]} "
            f"({list(matrix.columns)})"
        )
    values = values[:, 0]
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"offset({expr}) has {int(bad.sum())} missing or infinite value(s) (e.g. the "
            "log of 0 or of a negative number); remove those rows"
        )
    return values


def model_matrix(expr: str, frame: pd.DataFrame) -> tuple[np.ndarray, Any]:
    """formulaic's model matrix of ``expr`` for the rows of ``frame``, as floats, and its
    model spec (which encodes new rows as in fitting).

    An expression of plain numeric columns and their products (``1 + Days``, ``0 + x``,
    ``x:z``), the usual formula of a sweep of thousands of fits, does not go through
    formulaic's materialisation: its spec depends on the columns' dtypes alone, so it is
    built once per expression and dtypes, and the matrix is the product of the columns
    computed as formulaic computes it (``plain_matrix``), the same numbers. Any other
    expression (categorical columns, transforms such as ``log(x)``) is formulaic's.
    """
    names = _lookup_columns(expr)
    columns = None if names is None else _numeric_columns(frame, names)
    if columns is not None:
        spec = _numeric_spec(expr, tuple((name, columns[name].dtype.str) for name in names))
        products = _plain_products(spec)
        if products is not None:
            return _product_matrix(products, columns, len(frame)), spec
    matrix = formulaic.model_matrix(expr, frame, na_action="raise")
    return np.asarray(matrix, dtype=float), matrix.model_spec


def spec_matrix(model_spec: Any, frame: pd.DataFrame) -> np.ndarray:
    """The model matrix of new rows encoded by a fitted model spec, as floats (numpy's
    products for plain numeric columns, ``plain_matrix``; formulaic's otherwise)."""
    matrix = plain_matrix(model_spec, frame)
    if matrix is None:
        matrix = np.asarray(model_spec.get_model_matrix(frame), dtype=float)
    return matrix


def plain_matrix(model_spec: Any, frame: pd.DataFrame) -> np.ndarray | None:
    """The model matrix of ``model_spec`` computed by numpy, when each of its columns is
    the intercept or a product of numeric columns of ``frame``; None otherwise.

    The numbers are formulaic's: each product multiplies the columns as they are stored
    (integers as integers), left to right in the term's order, and the result is read
    as floats, as ``np.asarray(formulaic_matrix, dtype=float)`` reads it.
    """
    products = _plain_products(model_spec)
    if products is None:
        return None
    columns = _numeric_columns(frame, tuple(dict.fromkeys(c for p in products for c in p)))
    if columns is None:
        return None
    return _product_matrix(products, columns, len(frame))


def _product_matrix(
    products: list[tuple[str, ...]], columns: dict[str, np.ndarray], n_rows: int
) -> np.ndarray:
    # By columns, as formulaic's frame is read (each column is written in one pass).
    matrix = np.empty((n_rows, len(products)), order="F")
    for k, names in enumerate(products):
        if names:
            matrix[:, k] = functools.reduce(np.multiply, [columns[name] for name in names])
        else:
            matrix[:, k] = 1.0
    return matrix


def _numeric_columns(frame: pd.DataFrame, names: Sequence[str]) -> dict[str, np.ndarray] | None:
    """The named columns as their numpy arrays when each holds plain numbers (integers
    or floats in a numpy dtype, which formulaic encodes as numbers), else None."""
    columns = {}
    for name in names:
        if name not in frame.columns:
            return None
        column = frame[name]
        if not isinstance(column, pd.Series):  # a label shared by several columns
            return None
        dtype = column.dtype
        if not isinstance(dtype, np.dtype) or dtype.kind not in "iuf":
            return None
        columns[name] = column.to_numpy()
    return columns


def _plain_products(model_spec: Any) -> list[tuple[str, ...]] | None:
    """Per column of the spec, the data columns it multiplies (``()`` for the
    intercept); None unless every column is the intercept or such a product."""
    if model_spec.transform_state:
        return None
    products, columns = [], []
    for entry in model_spec.structure:
        factors = entry.term.factors
        if len(factors) == 1 and factors[0].eval_method.value == "literal":
            if factors[0].expr != "1":
                return None
            names, name = (), "Intercept"
        elif all(factor.eval_method.value == "lookup" for factor in factors):
            names = tuple(factor.expr for factor in factors)
            for column in names:
                kind, _ = model_spec.encoder_state.get(column, (None, None))
                if getattr(kind, "value", kind) != "numerical":
                    return None
            name = ":".join(names)
        else:
            return None
        if list(entry.columns) != [name]:
            return None
        products.append(names)
        columns.append(name)
    if columns != list(model_spec.column_names):
        return None
    return products


@functools.lru_cache(maxsize=256)
def _lookup_columns(expr: str) -> tuple[str, ...] | None:
    """The columns of an expression made of the intercept and plain columns and their
    products (the only expressions ``model_matrix`` computes itself), else None."""
    try:
        terms = list(formulaic.Formula(expr))
    except Exception:  # formulaic's error is raised again, and worded, where it reads data
        return None
    names: list[str] = []
    for term in terms:
        factors = list(term.factors)
        if len(factors) == 1 and factors[0].eval_method.value == "literal":
            if factors[0].expr != "1":
                return None
        elif all(factor.eval_method.value == "lookup" for factor in factors):
            names += [factor.expr for factor in factors]
        else:
            return None
    return tuple(dict.fromkeys(names))


# The spec of numeric columns depends on their dtypes, not on their values: it is
# formulaic's spec for two rows of ones, built once per expression and dtypes. Specs are
# frozen, so fits sharing one cannot change each other.
@functools.lru_cache(maxsize=256)
def _numeric_spec(expr: str, dtypes: tuple[tuple[str, str], ...]) -> Any:
    ones = pd.DataFrame({name: np.ones(2, dtype=np.dtype(code)) for name, code in dtypes})
    if not dtypes:
        ones = pd.DataFrame(index=range(2))
    return formulaic.model_matrix(expr, ones, na_action="raise").model_spec


def check_finite(frame: pd.DataFrame, columns: list[str]) -> None:
    """Raise a ValueError naming the first used column with missing or infinite values."""
    for column in columns:
        values = frame[column]
        if isinstance(values.dtype, np.dtype) and values.dtype.kind in "iuf":
            # A numpy column of numbers is missing nowhere unless some float is not
            # finite: one pass over the array, no pandas mask.
            array = values.to_numpy()
            if array.dtype.kind != "f" or np.isfinite(array).all():
                continue
        missing = values.isna()
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            missing = missing | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        if missing.any():
            raise ValueError(
                f"column {column!r} has {int(missing.sum())} missing or infinite value(s); "
                "remove those rows or use na_action='drop'"
            )


def factor_values(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series:
    """The grouping factor's label per row, as R prints it; an interaction joins the
    values with ':'. A label, not an identity: ``factor_keys`` tells levels apart."""
    if len(columns) == 1:
        return frame[columns[0]]
    joined = frame[columns[0]].astype(str)
    for column in columns[1:]:
        joined = joined + ":" + frame[column].astype(str)
    return joined


def factor_keys(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.Index:
    """The grouping factor's level per row: the column's values, or for an interaction
    the combination of the columns' values (a MultiIndex named by the columns).

    Levels of an interaction are told apart by every column's value, never by text
    joined with ':', which would make a='1:2', b='3' and a='1', b='2:3' one level.
    """
    if len(columns) == 1:
        return pd.Index(frame[columns[0]], name=columns[0])
    return pd.MultiIndex.from_arrays([frame[column] for column in columns], names=list(columns))


def factor_levels(keys: pd.Index, columns: tuple[str, ...]) -> pd.Index:
    """The distinct levels of a grouping factor, sorted (a level's code is its place)."""
    try:
        levels = keys.unique()
    except TypeError:
        # An unhashable value (a list, a dict) cannot be a level.
        raise TypeError(
            f"group column(s) {list(columns)} hold values that are neither numbers nor "
            "text; each argument must be a string or a number"
        ) from None
    try:
        return levels.sort_values()
    except TypeError:
        # Only a column holding several types of value gets here (1 and '1' would be
        # two levels): say which, rather than pandas' comparison error.
        for column in columns:
            kinds = sorted({type(value).__name__ for value in keys.get_level_values(column)})
            if len(kinds) > 1:
                raise ValueError(
                    f"group column {column!r} holds values of several types ({kinds}); "
                    "convert it to one type, e.g. X[column].astype(str)"
                ) from None
        raise


def level_codes(frame: pd.DataFrame, columns: tuple[str, ...]) -> tuple[pd.Index, np.ndarray]:
    """The sorted levels of a grouping factor (``factor_levels``) and the code of each
    row, its level's place among them.

    Integer ids spanning a range not much wider than the number of rows (0..n, or
    patient numbers) are coded by marking the ids present in that range, without
    hashing; other ids by pandas' hash table.
    """
    if len(columns) == 1:
        values = frame[columns[0]]
        dtype = values.dtype
        if isinstance(dtype, np.dtype) and dtype.kind in "iu" and len(values):
            ids = values.to_numpy()
            low = ids.min()
            span = int(ids.max()) - int(low) + 1
            if span <= 4 * len(ids) + 1024:
                # In 64 bits, where no id minus the smallest overflows.
                wide = np.uint64 if dtype.kind == "u" else np.int64
                offsets = (ids.astype(wide, copy=False) - wide(low)).astype(np.intp, copy=False)
                present = np.zeros(span, dtype=bool)
                present[offsets] = True
                place = np.cumsum(present) - 1
                levels = (np.flatnonzero(present).astype(wide) + wide(low)).astype(dtype)
                return pd.Index(levels, name=columns[0]), place[offsets]
    keys = factor_keys(frame, columns)
    levels = factor_levels(keys, columns)
    return levels, levels.get_indexer(keys)


@dataclass
class RandomTerm:
    """A random-effects term fitted to data: its model matrix spec and its levels."""

    spec: RandomTermSpec
    model_spec: Any  # formulaic ModelSpec of the term's left-hand side
    columns: list[str]  # lme4-style names of the term's columns
    levels: pd.Index

    @property
    def q(self) -> int:
        return len(self.columns)

    @property
    def n_theta(self) -> int:
        return self.q * (self.q + 1) // 2

    def codes(self, keys: pd.Index) -> np.ndarray:
        """The level code of each key (``factor_keys``), -1 for a level not seen in
        fitting; ids are matched by value across numbers and text (``matched_ids``)."""
        return self.levels.get_indexer(matched_ids(keys, self.levels))


@dataclass
class Design:
    """Fixed-effects matrix, random-effects terms (largest first) and the response."""

    X: np.ndarray
    fixed_names: list[str]
    fixed_spec: Any
    # Indices of formulaic's fixed columns kept after dropping rank deficiency, in R's
    # column order (``r_column_order``).
    kept: np.ndarray
    terms: list[RandomTerm]
    codes: list[np.ndarray]
    values: list[np.ndarray]
    y: np.ndarray
    # Rows per combination of the fixed part's categorical columns, for predicting a
    # level not seen in fitting (``_categories``); None without categorical columns.
    category_rows: pd.Series | None = None


def formula_frame(estimator: Any, X: Any, *, reset: bool) -> pd.DataFrame:
    """``X`` as ``validated_frame`` reads it, with its columns named by text.

    A formula names columns by text, while a plain array's columns are the integers
    0..k-1 (and a DataFrame may have integer labels too): a column whose label is not
    text is named by its text here, so that ``y ~ x + (1 | `0`)`` reads column 0 of an
    array. Other estimators keep ``validated_frame``'s labels. (In the fixed part,
    formulaic reads a backtick-quoted number as that number: name such a column
    ``Q('1')`` there.)

    Raises
    ------
    ValueError
        When two labels have the same text (``0`` and ``"0"``), naming them; in
        fitting (``reset=True``), for a single row.
    """
    frame = validated_frame(estimator, X, reset=reset)
    if reset and len(frame) == 1:
        # lmer and glmer stop too: one row cannot separate a random effect from the
        # fixed part (or the residual).
        raise ValueError(
            f"X: 1 sample; {type(estimator).__name__} needs several rows to fit a random effect"
        )
    labels = list(frame.columns)
    if all(isinstance(label, str) for label in labels):
        return frame
    text = [label if isinstance(label, str) else str(label) for label in labels]
    if len(set(text)) < len(text):
        repeated = sorted({name for name in text if text.count(name) > 1})
        raise ValueError(
            f"X: columns {repeated} are named twice once written as text (a formula "
            "names columns by text); rename them"
        )
    # set_axis does not copy the data (pandas' copy-on-write).
    return frame.set_axis(text, axis=1)


def resolve_response(parsed: ParsedFormula, frame: pd.DataFrame, y: Any) -> Any:
    """``y`` if given, otherwise the formula's response column of ``frame``."""
    if y is not None:
        return y
    if parsed.response is None:
        raise ValueError(
            "y: not given and the formula has no response (left of '~'); this estimator "
            "requires y to be passed, but the target y is None"
        )
    if parsed.response not in frame.columns:
        raise ValueError(
            f"response column {parsed.response!r} not found in X, and y is not given: "
            "this estimator requires y to be passed, but the target y is None (or X "
            "holding the formula's response column)"
        )
    return frame[parsed.response]


def warn_dropped(dropped: list[str], stacklevel: int) -> None:
    """lme4's message for fixed-effect columns dropped for rank deficiency."""
    if dropped:
        warnings.warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
            f"column(s): {dropped}",
            UserWarning,
            stacklevel=stacklevel + 1,
        )


def build_design(
    parsed: ParsedFormula, frame: pd.DataFrame, y: np.ndarray
) -> tuple[Design, list[str]]:
    """Build the design from data; returns it and the names of dropped fixed columns."""
    if not parsed.random:
        raise FormulaError(
            "formula has no random-effects term like (1 | group); use a fixed-effects model"
        )
    used = sorted(required_columns(parsed.fixed))
    for term in parsed.random:
        used += sorted(required_columns(term.expr)) + list(term.group_cols)
    missing = [c for c in dict.fromkeys(used) if c not in frame.columns]
    if missing:
        raise ValueError(
            f"formula uses column(s) {missing} not found in X; X has {list(frame.columns)}"
        )
    check_finite(frame, list(dict.fromkeys(used)))

    fixed, fixed_spec = model_matrix(parsed.fixed, frame)
    # Columns in R's order and with lme4's names, so that rank deficiency drops the
    # column lme4 drops; ``kept`` indexes formulaic's columns.
    order, names = r_column_order(list(fixed_spec.column_names), parsed.fixed)
    X = _columns(fixed, order)
    independent = _independent_columns(X)
    kept = order[independent]
    dropped = [names[k] for k in range(len(names)) if k not in set(independent.tolist())]
    if len(kept) >= len(frame):
        raise saturated_error(fixed_spec, frame, len(kept))

    terms, codes, values = [], [], []
    for spec in parsed.random:
        matrix, model_spec = model_matrix(spec.expr, frame)
        levels, level_of_row = level_codes(frame, spec.group_cols)
        if len(levels) < 2:
            raise ValueError(
                f"grouping factor {spec.group!r} has {len(levels)} level(s); a random effect "
                "needs at least two"
            )
        term = RandomTerm(
            spec=spec,
            model_spec=model_spec,
            columns=[lme4_name(name) for name in model_spec.column_names],
            levels=levels,
        )
        if term.q == 0:
            raise FormulaError(f"random-effects term ({spec.expr} | {spec.group}) has no columns")
        terms.append(term)
        codes.append(level_of_row)
        values.append(matrix)
    # Largest factor first (stable for ties), as lme4 orders them.
    order = sorted(range(len(terms)), key=lambda k: -len(terms[k].levels))
    design = Design(
        X=_columns(X, independent),
        fixed_names=[names[k] for k in independent],
        fixed_spec=fixed_spec,
        kept=kept,
        terms=[terms[k] for k in order],
        codes=[codes[k] for k in order],
        values=[values[k] for k in order],
        y=y,
        category_rows=category_rows(fixed_spec, frame),
    )
    return design, dropped


def _columns(matrix: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``matrix[:, positions]``, without a copy when that takes every column in order."""
    if len(positions) == matrix.shape[1] and np.array_equal(positions, np.arange(len(positions))):
        return matrix
    return matrix[:, positions]


def saturated_error(model_spec: Any, frame: pd.DataFrame, rank: int) -> ValueError:
    """The error for a fixed part with as many independent columns as there are rows.

    It reproduces every row exactly, so the residual has no degrees of freedom (the
    REML criterion divides by n - p = 0) and the variance components are not defined.
    The usual cause is a column of numbers read as text, one level per row: name it.
    """
    causes = []
    for _, column, _ in categorical_factors(model_spec, frame.columns):
        values = frame[column]
        n_levels = values.nunique()
        if n_levels * 2 > len(frame):
            numbers = pd.to_numeric(values, errors="coerce").notna().all()
            hint = " (numbers stored as text? convert it with pandas.to_numeric)" if numbers else ""
            causes.append(f"column {column!r} is categorical with {n_levels} levels{hint}")
    because = "; " + "; ".join(causes) if causes else ""
    return ValueError(
        f"fixed-effects part: {rank} independent column(s) for {len(frame)} row(s), so it "
        "fits every row exactly and leaves nothing to estimate the random effects and the "
        f"residual from{because}"
    )


def categorical_factors(model_spec: Any, columns: Any) -> list[tuple[str, Hashable, list]]:
    """The categorical factors of a formulaic model spec that read one column of the
    data: (factor as written, e.g. ``C(g)``; the column; its categories in fitting)."""
    found = []
    for name, (kind, state) in model_spec.encoder_state.items():
        if getattr(kind, "value", kind) != "categorical":
            continue
        if name in columns:
            column = name
        else:  # an expression such as C(g) or `user id`: the one column it reads
            read = list(formulaic.Formula(name).required_variables)
            if len(read) != 1 or read[0] not in columns:
                continue
            column = read[0]
        found.append((name, column, list(state.get("categories", []))))
    return found


def category_rows(model_spec: Any, frame: pd.DataFrame) -> pd.Series | None:
    """Rows per combination of the levels of the fixed part's categorical columns (a
    Series on a MultiIndex named by the columns), or None if it has none."""
    factors = categorical_factors(model_spec, frame.columns)
    columns = list(dict.fromkeys(column for _, column, _ in factors))
    if not columns:
        return None
    counts = frame[columns].value_counts(sort=False)
    return counts[counts > 0]  # unused categories of a pandas Categorical have no rows


def check_levels_below_rows(design: Design) -> None:
    """Refuse a grouping factor with as many levels as rows, as lmer does.

    With one row per level, a level's random effect and its row's residual cannot be
    told apart: the data fix only their sum of variances, and any split of it fits
    equally well. lme4 stops with this message (``check.nobs.vs.nlev``); glmer allows
    it, since a binomial or Poisson model has no residual variance to confuse it with.
    """
    n = len(design.y)
    problems = {term.spec.group: len(term.levels) for term in design.terms if len(term.levels) >= n}
    if problems:
        detail = ", ".join(f"{group!r} has {count}" for group, count in problems.items())
        raise ValueError(
            "number of levels of each grouping factor must be < number of observations "
            f"(problems: {', '.join(problems)}): {detail} level(s) for {n} row(s), so its "
            "variance cannot be told apart from the residual variance"
        )


def _independent_columns(X: np.ndarray, tolerance: float = 1e-7) -> np.ndarray:
    """Indices of the columns kept, in order: a column is dropped when it is (nearly) in
    the span of the columns before it, as R's lm and lme4 drop the later of two
    collinear columns."""
    if _clearly_independent(X):
        return np.arange(X.shape[1])
    kept: list[int] = []
    basis = np.zeros((X.shape[0], 0))
    for k in range(X.shape[1]):
        column = X[:, k]
        norm = np.linalg.norm(column)
        if norm == 0:
            continue
        residual = column - basis @ (basis.T @ column)
        residual -= basis @ (basis.T @ residual)  # second pass for numerical orthogonality
        remaining = np.linalg.norm(residual)
        if remaining > tolerance * norm:
            kept.append(k)
            basis = np.column_stack([basis, residual / remaining])
    return np.array(kept, dtype=int)


def _clearly_independent(X: np.ndarray, margin: float = 1e-3) -> bool:
    """Whether every column of X is far from the span of the columns before it, by the
    Cholesky factor of X's Gram matrix scaled to unit diagonal: its k-th diagonal is the
    share of column k's norm left after projecting it on the columns before it, which
    ``_independent_columns`` compares with 1e-7. Above ``margin`` no rounding of the
    Gram matrix (about 1e-15 of it) can bring a column near that tolerance, so every
    column is kept without the Gram-Schmidt passes over the rows; any doubt (a zero
    column, a share below the margin, overflow) leaves the decision to them.
    """
    if X.shape[1] == 0:
        return True
    gram = X.T @ X
    scale = np.sqrt(np.diag(gram))
    if not np.all(np.isfinite(scale)) or np.any(scale == 0):
        return False
    try:
        factor = np.linalg.cholesky(gram / np.outer(scale, scale))
    except np.linalg.LinAlgError:
        return False
    return bool(np.all(np.diag(factor) > margin))


def term_matrix(codes: np.ndarray, values: np.ndarray, n_levels: int) -> sp.csr_matrix:
    """The sparse Z block of a term: row i has the term's covariates in its level's columns
    (none for a row of code -1, a level the block does not have)."""
    n, q = values.shape
    seen = codes >= 0
    # Each row's entries are its level's q columns, in order: the compressed rows are
    # written directly, with no sort of coordinates.
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.where(seen, q, 0), out=indptr[1:])
    columns = (codes[seen][:, None] * q + np.arange(q)).ravel()
    return sp.csr_matrix((values[seen].ravel(), columns, indptr), shape=(n, n_levels * q))


@dataclass
class CrossProducts:
    """Everything the objective needs, independent of the number of rows.

    ``G1`` holds the first term's diagonal blocks (levels, q1, q1); the rest (``r``)
    of the random-effects columns are sparse; X and y parts are dense.
    """

    n: int
    p: int
    q1: int
    G1: np.ndarray
    Z1X: np.ndarray
    Z1y: np.ndarray
    ZrZ1: sp.csr_matrix
    ZrZr: sp.csr_matrix
    ZrX: np.ndarray
    Zry: np.ndarray
    XX: np.ndarray
    Xy: np.ndarray
    yy: float


@dataclass
class DesignMatrices:
    """The Z blocks and X of a design, the sparse ones built once, when first asked for.

    Iterative fits (generalized linear mixed models) recompute weighted cross-products
    of these at every step; building the sparse blocks again each time would dominate.
    The cross-products of the first term need no sparse matrix (``by_level``), so a
    model with a single term never builds one.
    """

    X: np.ndarray
    codes1: np.ndarray
    values1: np.ndarray
    n_levels1: int
    # The other terms: codes, values and number of levels of each.
    rest: list[tuple[np.ndarray, np.ndarray, int]]

    @functools.cached_property
    def Z1(self) -> sp.csr_matrix:
        return term_matrix(self.codes1, self.values1, self.n_levels1)

    @functools.cached_property
    def Z1t(self) -> sp.csr_matrix:
        return self.Z1.T.tocsr()

    @functools.cached_property
    def Zr(self) -> sp.csr_matrix:
        blocks = [term_matrix(codes, values, n_levels) for codes, values, n_levels in self.rest]
        return sp.hstack(blocks, format="csr") if blocks else sp.csr_matrix((len(self.X), 0))

    @functools.cached_property
    def Zrt(self) -> sp.csr_matrix:
        return self.Zr.T.tocsr()

    @functools.cached_property
    def zr_rows(self) -> np.ndarray:
        """The row of every stored nonzero of Zr, for row scaling in place."""
        return np.repeat(np.arange(self.Zr.shape[0]), np.diff(self.Zr.indptr))


def design_matrices(design: Design) -> DesignMatrices:
    """The design's X and Z blocks (first term, then the rest)."""
    return DesignMatrices(
        X=design.X,
        codes1=design.codes[0],
        values1=design.values[0],
        n_levels1=len(design.terms[0].levels),
        rest=[
            (codes, values, len(term.levels))
            for term, codes, values in zip(
                design.terms[1:], design.codes[1:], design.values[1:], strict=True
            )
        ],
    )


def by_level(codes: np.ndarray, values: np.ndarray, other: np.ndarray, n_levels: int) -> np.ndarray:
    """``Z1' other`` for the first term's block Z1 (codes and values) without building
    it: row ``level * q + k`` sums ``values[:, k] * other`` over the level's rows, in
    the order of the rows, as the sparse product sums them.

    Parameters
    ----------
    codes : numpy.ndarray
        Level of each row (all seen, >= 0).
    values : numpy.ndarray
        (rows, q) covariates of the term.
    other : numpy.ndarray
        (rows,) or (rows, p).
    n_levels : int

    Returns
    -------
    numpy.ndarray
        (n_levels * q,) or (n_levels * q, p).
    """
    q = values.shape[1]
    columns = other.reshape(len(other), -1)
    out = np.empty((n_levels, q, columns.shape[1]))
    for k in range(q):
        for j in range(columns.shape[1]):
            out[:, k, j] = np.bincount(
                codes, weights=values[:, k] * columns[:, j], minlength=n_levels
            )
    return out.reshape(n_levels * q, columns.shape[1]) if other.ndim == 2 else out.reshape(-1)


def weighted_cross_products(
    matrices: DesignMatrices,
    y: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    include_fixed: bool = True,
) -> CrossProducts:
    """The blocked cross-products of [Z, X, y] with row weights W: Z'WZ, Z'WX, ...

    Parameters
    ----------
    matrices : DesignMatrices
    y : numpy.ndarray
        The (working) response.
    weights : numpy.ndarray, optional
        Row weights; None for unit weights.
    include_fixed : bool
        False leaves X out (p = 0), for a solve over the random effects alone.
    """
    m = matrices
    n = len(y)
    X = m.X if include_fixed else np.zeros((n, 0))
    q1 = m.values1.shape[1]
    weighted1 = m.values1 if weights is None else m.values1 * weights[:, None]
    G1 = np.zeros((m.n_levels1, q1, q1))
    for k in range(q1):
        for j in range(k, q1):
            block = np.bincount(
                m.codes1, weights=weighted1[:, k] * m.values1[:, j], minlength=m.n_levels1
            )
            G1[:, k, j] = block
            G1[:, j, k] = block
    WX, Wy = (X, y) if weights is None else (X * weights[:, None], y * weights)
    if m.rest:
        WZr, WZrt = m.Zr, m.Zrt
        if weights is not None:
            WZr = m.Zr.copy()
            WZr.data = WZr.data * weights[m.zr_rows]
            WZrt = WZr.T.tocsr()
        ZrZ1, ZrZr = (WZrt @ m.Z1).tocsr(), (m.Zrt @ WZr).tocsr()
        ZrX, Zry = np.asarray(m.Zrt @ WX), np.asarray(m.Zrt @ Wy)
    else:  # a single term: nothing to build
        ZrZ1, ZrZr = sp.csr_matrix((0, m.n_levels1 * q1)), sp.csr_matrix((0, 0))
        ZrX, Zry = np.zeros((0, X.shape[1])), np.zeros(0)
    return CrossProducts(
        n=n,
        p=X.shape[1],
        q1=q1,
        G1=G1,
        Z1X=by_level(m.codes1, m.values1, WX, m.n_levels1),
        Z1y=by_level(m.codes1, m.values1, Wy, m.n_levels1),
        ZrZ1=ZrZ1,
        ZrZr=ZrZr,
        ZrX=ZrX,
        Zry=Zry,
        XX=X.T @ WX,
        Xy=X.T @ Wy,
        # einsum, not BLAS ddot: OpenBLAS threads long dot products, and the hand-off
        # costs milliseconds per call on a busy machine (GLMM fits call this per step).
        yy=float(np.einsum("i,i->", y, Wy)),
    )


def cross_products(design: Design) -> CrossProducts:
    """Compute the blocked cross-products of [Z, X, y] once."""
    return weighted_cross_products(design_matrices(design), design.y)


def level_labels(levels: pd.Index) -> pd.Index:
    """Levels as lme4 labels them: an interaction's as its values joined with ':'.

    Only labels: two levels of an interaction may share one (a='1:2', b='3' and a='1',
    b='2:3' are both '1:2:3'); they stay two rows, since levels are told apart by
    their values (``factor_keys``), not by their labels.
    """
    if not isinstance(levels, pd.MultiIndex):
        return levels
    return pd.Index([":".join(str(value) for value in level) for level in levels], dtype=object)


def effects_by_factor(
    terms: Sequence[Any], term_b: Sequence[np.ndarray], term_cov: Sequence[np.ndarray]
) -> tuple[dict, dict, dict, dict]:
    """Conditional modes and their variances per grouping factor, as lme4's ``ranef()``
    shows them: several terms on one factor side by side. Covariances between two terms
    of one factor are not computed (zero in the blocks), as lme4's condVar gives them
    per term.

    Parameters
    ----------
    terms : sequence
        The design's terms (``spec.group``, ``levels``, ``columns``, ``q``).
    term_b : sequence of numpy.ndarray
        Per term, the (levels x q) conditional modes.
    term_cov : sequence of numpy.ndarray
        Per term, the (levels x q x q) conditional covariance blocks.

    Returns
    -------
    ranef, ranef_var, ranef_cov, n_levels : dict
        Keyed by factor: DataFrames of modes and variances indexed by level (labelled
        as lme4 labels them, ``level_labels``), the covariance blocks, and the number
        of levels.
    """
    ranef, ranef_var, ranef_cov, n_levels = {}, {}, {}, {}
    for group in dict.fromkeys(term.spec.group for term in terms):
        members = [k for k, term in enumerate(terms) if term.spec.group == group]
        levels = level_labels(terms[members[0]].levels)
        columns = [c for k in members for c in terms[k].columns]
        ranef[group] = pd.DataFrame(
            np.hstack([term_b[k] for k in members]), index=levels, columns=columns
        )
        blocks = np.zeros((len(levels), len(columns), len(columns)))
        start = 0
        for k in members:
            q = terms[k].q
            blocks[:, start : start + q, start : start + q] = term_cov[k]
            start += q
        ranef_cov[group] = blocks
        ranef_var[group] = pd.DataFrame(
            np.diagonal(blocks, axis1=1, axis2=2), index=levels, columns=columns
        )
        n_levels[group] = len(levels)
    return ranef, ranef_var, ranef_cov, n_levels
