"""Step 1 of a mixed-model fit: the design (X, Z) and the cross-products computed once.

Random-effects terms are ordered by number of levels, largest first, as in lme4. The
first term's cross-product Z1'Z1 is block-diagonal (one q x q block per level) and is
kept as a batch of small blocks; the other terms are kept sparse. After this step, an
evaluation of the objective touches nothing that grows with the number of rows.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any

import formulaic
import numpy as np
import pandas as pd
import scipy.sparse as sp

from estimators.mixed._formula import FormulaError, ParsedFormula, RandomTermSpec


def lme4_name(name: str) -> str:
    """formulaic's column names as R prints them: ``Intercept`` -> ``(Intercept)``,
    ``g[T.b]`` -> ``gb``."""
    if name == "Intercept":
        return "(Intercept)"
    return re.sub(r"\[T\.([^\]]*)\]", r"\1", name)


def required_columns(expr: str) -> set[str]:
    """The data columns a formulaic expression reads."""
    try:
        return set(formulaic.Formula(expr).required_variables)
    except Exception as error:  # formulaic raises several types for bad syntax
        raise FormulaError(f"cannot parse {expr!r}: {error}") from None


def check_finite(frame: pd.DataFrame, columns: list[str]) -> None:
    """Raise a ValueError naming the first used column with missing or infinite values."""
    for column in columns:
        values = frame[column]
        missing = values.isna()
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            missing = missing | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        if missing.any():
            raise ValueError(
                f"column {column!r} has {int(missing.sum())} missing or infinite value(s); "
                "remove those rows or use na_action='drop'"
            )


def factor_values(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series:
    """The grouping factor's value per row; an interaction joins the values with ':'."""
    if len(columns) == 1:
        return frame[columns[0]]
    joined = frame[columns[0]].astype(str)
    for column in columns[1:]:
        joined = joined + ":" + frame[column].astype(str)
    return joined


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

    def matrices(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the level code (-1 for an unseen level) and the term's covariates."""
        codes = self.levels.get_indexer(factor_values(frame, self.spec.group_cols))
        values = np.asarray(self.model_spec.get_model_matrix(frame), dtype=float)
        return codes, values


@dataclass
class Design:
    """Fixed-effects matrix, random-effects terms (largest first) and the response."""

    X: np.ndarray
    fixed_names: list[str]
    fixed_spec: Any
    kept: np.ndarray  # indices of the fixed columns kept after dropping rank deficiency
    terms: list[RandomTerm]
    codes: list[np.ndarray]
    values: list[np.ndarray]
    y: np.ndarray


def resolve_response(parsed: ParsedFormula, frame: pd.DataFrame, y: Any) -> Any:
    """``y`` if given, otherwise the formula's response column of ``frame``."""
    if y is not None:
        return y
    if parsed.response is None:
        raise ValueError("y: not given and the formula has no response (left of '~')")
    if parsed.response not in frame.columns:
        raise ValueError(f"response column {parsed.response!r} not found in X")
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

    fixed = formulaic.model_matrix(parsed.fixed, frame, na_action="raise")
    names = [lme4_name(name) for name in fixed.columns]
    X = np.asarray(fixed, dtype=float)
    kept = _independent_columns(X)
    dropped = [names[k] for k in range(len(names)) if k not in set(kept.tolist())]

    terms, codes, values = [], [], []
    for spec in parsed.random:
        matrix = formulaic.model_matrix(spec.expr, frame, na_action="raise")
        group = factor_values(frame, spec.group_cols)
        levels = pd.Index(pd.unique(group)).sort_values()
        if len(levels) < 2:
            raise ValueError(
                f"grouping factor {spec.group!r} has {len(levels)} level(s); a random effect "
                "needs at least two"
            )
        term = RandomTerm(
            spec=spec,
            model_spec=matrix.model_spec,
            columns=[lme4_name(name) for name in matrix.columns],
            levels=levels,
        )
        if term.q == 0:
            raise FormulaError(f"random-effects term ({spec.expr} | {spec.group}) has no columns")
        terms.append(term)
        codes.append(levels.get_indexer(group))
        values.append(np.asarray(matrix, dtype=float))
    # Largest factor first (stable for ties), as lme4 orders them.
    order = sorted(range(len(terms)), key=lambda k: -len(terms[k].levels))
    design = Design(
        X=X[:, kept],
        fixed_names=[names[k] for k in kept],
        fixed_spec=fixed.model_spec,
        kept=kept,
        terms=[terms[k] for k in order],
        codes=[codes[k] for k in order],
        values=[values[k] for k in order],
        y=y,
    )
    return design, dropped


def _independent_columns(X: np.ndarray, tolerance: float = 1e-7) -> np.ndarray:
    """Indices of the columns kept, in order: a column is dropped when it is (nearly) in
    the span of the columns before it, as R's lm and lme4 drop the later of two
    collinear columns."""
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


def term_matrix(codes: np.ndarray, values: np.ndarray, n_levels: int) -> sp.csr_matrix:
    """The sparse Z block of a term: row i has the term's covariates in its level's columns."""
    n, q = values.shape
    seen = codes >= 0
    rows = np.repeat(np.flatnonzero(seen), q)
    columns = (codes[seen][:, None] * q + np.arange(q)).ravel()
    return sp.csr_matrix((values[seen].ravel(), (rows, columns)), shape=(n, n_levels * q))


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


def cross_products(design: Design) -> CrossProducts:
    """Compute the blocked cross-products of [Z, X, y] once."""
    X, y = design.X, design.y
    first = design.terms[0]
    codes1, values1 = design.codes[0], design.values[0]
    q1, n_levels1 = first.q, len(first.levels)
    G1 = np.zeros((n_levels1, q1, q1))
    for k in range(q1):
        for m in range(k, q1):
            block = np.bincount(codes1, weights=values1[:, k] * values1[:, m], minlength=n_levels1)
            G1[:, k, m] = block
            G1[:, m, k] = block
    Z1 = term_matrix(codes1, values1, n_levels1)
    rest = [
        term_matrix(codes, values, len(term.levels))
        for term, codes, values in zip(
            design.terms[1:], design.codes[1:], design.values[1:], strict=True
        )
    ]
    Zr = sp.hstack(rest, format="csr") if rest else sp.csr_matrix((len(y), 0))
    Z1t = Z1.T.tocsr()
    Zrt = Zr.T.tocsr()
    return CrossProducts(
        n=len(y),
        p=X.shape[1],
        q1=q1,
        G1=G1,
        Z1X=np.asarray(Z1t @ X),
        Z1y=np.asarray(Z1t @ y),
        ZrZ1=(Zrt @ Z1).tocsr(),
        ZrZr=(Zrt @ Zr).tocsr(),
        ZrX=np.asarray(Zrt @ X),
        Zry=np.asarray(Zrt @ y),
        XX=X.T @ X,
        Xy=X.T @ y,
        yy=float(y @ y),
    )
