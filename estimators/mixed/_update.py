"""New rows for a fitted linear mixed model: its cross-products grown without the old rows.

The profiled deviance needs the rows only through the blocked cross-products of
[Z, X, y]. Those are sums over rows, so the cross-products of old and new rows together
are the old ones plus the new rows' own, once both are written in the same coordinates:
a level seen before keeps its code, a new level is appended after the term's old levels,
and every random-effects column moves to its term's new offset (terms are re-ordered by
their new numbers of levels, largest first, as a fit on all rows would order them).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from estimators._columns import matched_ids
from estimators.mixed._design import (
    CrossProducts,
    RandomTerm,
    categorical_factors,
    factor_keys,
    factor_levels,
    term_matrix,
)


def check_known_categories(model_spec: Any, frame: pd.DataFrame, role: str) -> None:
    """Raise a ValueError naming a categorical column with a value not seen in fitting.

    formulaic encodes such a value as all zeros with only a warning, which would
    silently move those rows onto the reference level.
    """
    for _, column, known in categorical_factors(model_spec, frame.columns):
        values = frame[column]
        unseen = pd.unique(values[~values.isin(known)])
        if len(unseen):
            raise ValueError(
                f"{role}: column {column!r} has {len(unseen)} categorical level(s) not seen "
                f"in fitting, e.g. {list(unseen[:5])}; the fitted model has no coefficient "
                "for them"
            )


def encoded(model_spec: Any, frame: pd.DataFrame, role: str) -> np.ndarray:
    """The model matrix of ``frame`` in the fitted encoding (unseen categories refused)."""
    check_known_categories(model_spec, frame, role)
    with warnings.catch_warnings():
        # A category outside the fitted ones was refused above; anything formulaic still
        # casts to NaN is an error, not a warning to pass on.
        warnings.filterwarnings("error", message=".*categories outside.*")
        return np.asarray(model_spec.get_model_matrix(frame), dtype=float)


def extended_terms(terms: list[RandomTerm], frame: pd.DataFrame) -> list[RandomTerm]:
    """The terms with the levels of ``frame`` not seen before appended (sorted) to theirs;
    ids are written as the fitted ones (``matched_ids``) so the levels keep one type."""
    grown = []
    for term in terms:
        group = matched_ids(factor_keys(frame, term.spec.group_cols), term.levels)
        unseen = group[term.levels.get_indexer(group) < 0]
        if len(unseen) == 0:
            grown.append(term)
            continue
        new_levels = factor_levels(unseen, term.spec.group_cols)
        grown.append(replace(term, levels=term.levels.append(new_levels)))
    return grown


def largest_first(terms: list[RandomTerm], formula_index: list[int]) -> list[int]:
    """The order build_design gives the terms: by number of levels, largest first,
    ties in formula order."""
    return sorted(range(len(terms)), key=lambda k: (-len(terms[k].levels), formula_index[k]))


@dataclass
class NewRows:
    """The new rows in the fitted encoding: fixed effects, and per term codes and values;
    ``weights``, their prior weights (None for unit weights)."""

    X: np.ndarray
    y: np.ndarray
    codes: list[np.ndarray]
    values: list[np.ndarray]
    weights: np.ndarray | None = None


def grown_cross_products(
    cross: CrossProducts,
    old_terms: list[RandomTerm],
    new_terms: list[RandomTerm],
    order: list[int],
    rows: NewRows,
) -> CrossProducts:
    """The cross-products of old and new rows together, from the old ones and the new rows.

    Parameters
    ----------
    cross : CrossProducts
        Of the old rows, terms in the order of ``old_terms``.
    old_terms, new_terms : list of RandomTerm
        The same terms before and after their levels were extended (same order).
    order : list of int
        The new order of the terms: ``order[k]`` is the index (into ``old_terms``) of the
        term that comes k-th.
    rows : NewRows
        The new rows; their codes refer to ``new_terms``' levels (same order as the terms).

    Returns
    -------
    CrossProducts
        Terms in the new order, the first term's diagonal blocks as a batch.
    """
    qs = [term.q for term in old_terms]
    old_sizes = [q * len(term.levels) for q, term in zip(qs, old_terms, strict=True)]
    new_sizes = [q * len(term.levels) for q, term in zip(qs, new_terms, strict=True)]
    new_offsets = np.zeros(len(order) + 1, dtype=int)
    new_offsets[1:] = np.cumsum([new_sizes[k] for k in order])
    start_of = {k: int(new_offsets[position]) for position, k in enumerate(order)}
    # Old random-effects coordinate -> new one: a level keeps its code within its term.
    moved = np.concatenate(
        [start_of[k] + np.arange(old_sizes[k]) for k in range(len(old_terms))]
    ).astype(np.int64)
    total = int(new_offsets[-1])

    # The lower triangle of Z'Z, old (moved) and new entries together.
    q1, size1 = qs[0], old_sizes[0]
    level, i, j = np.meshgrid(
        np.arange(len(old_terms[0].levels)), np.arange(q1), np.arange(q1), indexing="ij"
    )
    lower = i >= j
    first_rows = (level * q1 + i)[lower]
    first_columns = (level * q1 + j)[lower]
    ZrZ1 = cross.ZrZ1.tocoo()
    ZrZr = sp.tril(cross.ZrZr, format="coo")
    Z_new = sp.hstack(
        [term_matrix(rows.codes[k], rows.values[k], len(new_terms[k].levels)) for k in order],
        format="csr",
    )
    # Each new row's weight multiplies its contribution to every cross-product.
    w = np.ones(len(rows.y)) if rows.weights is None else rows.weights
    WZ_new, WX, Wy = sp.diags(w) @ Z_new, rows.X * w[:, None], rows.y * w
    ZZ_new = sp.tril((Z_new.T @ WZ_new).tocoo())
    row_parts = [
        moved[first_rows],
        moved[size1 + ZrZ1.row],
        moved[size1 + ZrZr.row],
        ZZ_new.row.astype(np.int64),
    ]
    column_parts = [
        moved[first_columns],
        moved[ZrZ1.col],
        moved[size1 + ZrZr.col],
        ZZ_new.col.astype(np.int64),
    ]
    data = np.concatenate(
        [cross.G1[level[lower], i[lower], j[lower]], ZrZ1.data, ZrZr.data, ZZ_new.data]
    )
    rows_all, columns_all = np.concatenate(row_parts), np.concatenate(column_parts)
    # Re-ordered terms can move an entry above the diagonal: reflect it back below.
    ZZ_lower = sp.csr_matrix(
        (data, (np.maximum(rows_all, columns_all), np.minimum(rows_all, columns_all))),
        shape=(total, total),
    )
    ZZ_lower.sum_duplicates()

    ZX = np.zeros((total, cross.p))
    ZX[moved] = np.vstack([cross.Z1X, cross.ZrX])
    ZX += np.asarray(Z_new.T @ WX)
    Zy = np.zeros(total)
    Zy[moved] = np.concatenate([cross.Z1y, cross.Zry])
    Zy += np.asarray(Z_new.T @ Wy)

    first = new_terms[order[0]]
    q1_new, levels1 = first.q, len(first.levels)
    a = q1_new * levels1
    block = ZZ_lower[:a, :a].tocoo()
    G1 = np.zeros((levels1, q1_new, q1_new))
    G1[block.row // q1_new, block.row % q1_new, block.col % q1_new] = block.data
    G1[block.row // q1_new, block.col % q1_new, block.row % q1_new] = block.data
    rest_lower = ZZ_lower[a:, a:]
    rest = (rest_lower + rest_lower.T - sp.diags(rest_lower.diagonal())).tocsr()
    return CrossProducts(
        n=cross.n + len(rows.y),
        p=cross.p,
        q1=q1_new,
        G1=G1,
        Z1X=ZX[:a],
        Z1y=Zy[:a],
        ZrZ1=ZZ_lower[a:, :a].tocsr(),
        ZrZr=rest,
        ZrX=ZX[a:],
        Zry=Zy[a:],
        XX=cross.XX + rows.X.T @ WX,
        Xy=cross.Xy + rows.X.T @ Wy,
        yy=cross.yy + float(np.einsum("i,i->", rows.y, Wy)),
    )
