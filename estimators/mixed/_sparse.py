"""The sparse solver: the exact criterion with the rest's Schur complement factored sparsely.

After the first (largest) term is eliminated, the exact solver factors the Schur
complement S of the other terms densely. When the levels of those terms fall into
small groups that the first term does not link (sessions within users, stores
within regions, any nested design whose outer factor has many levels), S is sparse
and stays sparse under a fill-reducing ordering; then an LU factorisation of S with
SciPy's SuperLU (minimum degree on S + S', symmetric mode, no pivoting: for a
positive definite S this is L D L' with U = D L') gives the same criterion as the
dense one in memory and time that grow with the groups' sizes, not with the square of
all levels. Random slopes are allowed.

For crossed factors at scale (users crossed with items) S is the item co-occurrence
graph, an expander: every ordering fills it in to a dense matrix, which is why the
iterative solver exists. ``connected_groups`` bounds the fill before any factorisation:
no ordering that keeps groups apart fills more than the sum of the groups' squares.

Conditional variances: the diagonal blocks of S are inverted blockwise (the coupling
between levels of the rest is left out, as in the iterative solver); they are exact
when S is block diagonal by level, as in nested designs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import splu

from estimators.mixed._deviance import (
    Elimination,
    ProfiledDeviance,
    Solution,
    diagonal_blocks,
    first_term_modes,
    fixed_effects_block,
    rest_offsets,
)


@dataclass
class SparseState:
    """The sparse factorisation at one theta and what follows from it."""

    theta: np.ndarray
    elimination: Elimination
    S: sp.csr_matrix
    L: np.ndarray  # Cholesky factor of the fixed-effects block
    beta: np.ndarray
    pwrss: float
    value: float
    u1: np.ndarray  # (levels1, q1)
    u_rest: np.ndarray
    fill: int  # nonzeros of L and U


class SparseDeviance:
    """The profiled criterion of :class:`ProfiledDeviance`, the rest factored sparsely."""

    def __init__(self, objective: ProfiledDeviance) -> None:
        self.objective = objective

    def schur(self, e: Elimination) -> sp.csr_matrix:
        """S = RR + I - L21_R L21_R' as a sparse matrix."""
        n_rest = self.objective.n_rest
        return (e.RR + sp.identity(n_rest, format="csr") - e.L21_R @ e.L21_R.T).tocsr()

    def state(self, theta: np.ndarray) -> SparseState:
        """Factor at ``theta``; raises LinAlgError if S is not positive definite."""
        obj, c = self.objective, self.objective.cross
        p = c.p
        e = obj.eliminate(theta)
        S = self.schur(e)
        S_RX = e.RX - e.L21_R @ e.L21_X.T
        S_Ry = e.Ry - e.L21_R @ e.L21_y
        if obj.n_rest:
            lu = splu(
                S.tocsc(),
                permc_spec="MMD_AT_PLUS_A",
                diag_pivot_thresh=0.0,
                options={"SymmetricMode": True},
            )
            pivots = lu.U.diagonal()
            if np.any(pivots <= 0) or not np.all(np.isfinite(pivots)):
                raise np.linalg.LinAlgError("the Schur complement is not positive definite")
            logdet_S = float(np.sum(np.log(pivots)))
            solved = lu.solve(np.column_stack([S_RX, S_Ry]))
            fill = int(lu.L.nnz + lu.U.nnz)
        else:
            logdet_S, solved, fill = 0.0, np.zeros((0, p + 1)), 0
        L, beta, pwrss = fixed_effects_block(c, e, S_RX, S_Ry, solved)
        logdet_Z = 2.0 * float(np.sum(np.log(np.diagonal(e.L11, axis1=1, axis2=2)))) + logdet_S
        logdet_X = 2.0 * float(np.sum(np.log(np.diag(L)[:p])))
        u_rest = solved[:, p] - solved[:, :p] @ beta
        u1 = first_term_modes(e.L11, e.L21_y - e.L21_X.T @ beta - e.L21_R.T @ u_rest)
        return SparseState(
            theta=np.asarray(theta, dtype=float),
            elimination=e,
            S=S,
            L=L,
            beta=beta,
            pwrss=pwrss,
            value=obj.value(logdet_Z, logdet_X, pwrss),
            u1=u1,
            u_rest=u_rest,
            fill=fill,
        )

    def __call__(self, theta: np.ndarray) -> float:
        """REML criterion or ML deviance at ``theta`` (inf where S is not definite)."""
        try:
            return self.state(theta).value
        except (np.linalg.LinAlgError, scipy.linalg.LinAlgError, RuntimeError):
            return float("inf")

    def solution(self, state: SparseState) -> Solution:
        """Fixed effects, sigma, conditional modes and their (blockwise) variances."""
        obj, c = self.objective, self.objective.cross
        p, qs, levels = c.p, obj.qs, obj.levels
        dof = c.n - p if obj.reml else c.n
        sigma = float(np.sqrt(state.pwrss / dof))
        templates = state.elimination.templates
        b = [state.u1 @ templates[0].T]
        rest_blocks = []
        for T, q, n, start in zip(
            templates[1:], qs[1:], levels[1:], rest_offsets(qs, levels), strict=True
        ):
            b.append(state.u_rest[start : start + q * n].reshape(n, q) @ T.T)
            rest_blocks.append(np.linalg.inv(diagonal_blocks(state.S, start, q, n)))
        L_XX_inv = scipy.linalg.solve_triangular(state.L[:p, :p], np.eye(p), lower=True)
        first = _first_term_blocks(state)
        b_cov = [
            sigma**2 * np.einsum("ik,jkl,ml->jim", T, blocks, T)
            for T, blocks in zip(templates, [first, *rest_blocks], strict=True)
        ]
        return Solution(
            beta=state.beta,
            sigma=sigma,
            b=b,
            beta_cov=sigma**2 * (L_XX_inv.T @ L_XX_inv),
            b_cov=b_cov,
        )


def _first_term_blocks(state: SparseState) -> np.ndarray:
    """Diagonal blocks of the first term's (A^-1)_11 with S^-1 taken as diagonal.

    (A^-1)_11 = L11^-T (I + L21_R' S^-1 L21_R) L11^-1 level by level; each level's
    rows of L21_R (its q1 columns) contribute v v' / S_ii.
    """
    e = state.elimination
    levels1, q1 = e.L11.shape[0], e.L11.shape[1]
    inner = np.broadcast_to(np.eye(q1), (levels1, q1, q1)).copy()
    entries = e.L21_R.tocoo()
    if entries.nnz:
        weight = 1.0 / state.S.diagonal()
        level, column = entries.col // q1, entries.col % q1
        # One dense q1-vector per (row, level) pair holding that level's entries.
        pair, index = np.unique(entries.row * levels1 + level, return_inverse=True)
        vectors = np.zeros((pair.size, q1))
        vectors[index.ravel(), column] = entries.data
        rows, pair_level = pair // levels1, pair % levels1
        outer = vectors[:, :, None] * vectors[:, None, :] * weight[rows][:, None, None]
        np.add.at(inner, pair_level, outer)
    L11_inv = np.linalg.inv(e.L11)
    return np.einsum("jki,jkl,jlm->jim", L11_inv, inner, L11_inv)


def connected_groups(objective: ProfiledDeviance, max_pairs: float = 5e7) -> np.ndarray | None:
    """Sizes (in columns) of the groups of the rest's levels that S links, or None.

    Two levels of the rest are linked when they share a level of the first term or
    appear together in a row. Computed from the pattern of Zr'Z1 Z1'Zr + Zr'Zr, by
    connected components; None when that pattern alone would have more than
    ``max_pairs`` entries (the crossed designs the sparse solver is not for).
    """
    c = objective.cross
    if not objective.n_rest:
        return np.zeros(0, dtype=int)
    pattern = c.ZrZ1.copy()
    pattern.data = np.ones_like(pattern.data)
    per_first = np.bincount(pattern.indices, minlength=pattern.shape[1]).astype(float)
    if float(np.sum(per_first**2)) > max_pairs:
        return None
    linked = (pattern @ pattern.T + abs(c.ZrZr)).tocsr()
    n_groups, labels = connected_components(linked, directed=False)
    return np.bincount(labels, minlength=n_groups)
