"""Step 2: the profiled deviance as a function of theta alone (Bates et al., lme4).

For a given theta, the relative covariance factor Lambda is block-diagonal, one
lower-triangular template per term repeated over its levels. The blocked Cholesky
factor of

    [Lambda'Z'Z Lambda + I   Lambda'Z'X   Lambda'Z'y]
    [X'Z Lambda              X'X          X'y       ]
    [y'Z Lambda              y'X          y'y       ]

is computed in two stages: the first (largest) term's diagonal block is block-diagonal
and is factored as a batch of q1 x q1 blocks; the Schur complement of everything else
is dense and factored once. Its last diagonal element is the square root of the
penalised residual sum of squares r^2, and the log-determinants give

    ML deviance   log|L_Z|^2 + n (1 + log(2 pi r^2 / n))
    REML          log|L_Z|^2 + log|L_X|^2 + (n - p)(1 + log(2 pi r^2 / (n - p)))

An evaluation of the criterion alone (``ProfiledDeviance.__call__``, what the optimiser
calls) builds no sparse matrix where it need not: with one term, all levels' blocks
are factored and solved by array operations over the levels (``_FirstTerm``); when
every other term is scalar, the dense Schur complement is one product of a sparse
matrix, fixed by the design, with the first term's weights (``_ScalarRest``).
``factor`` keeps the general elimination (``_general_factor``) for models with
several terms; the tests hold the fast paths to it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from estimators.mixed._design import CrossProducts

LOG_2PI = float(np.log(2 * np.pi))


@cache
def _lower_triangle(q: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of a q x q lower triangle in column-major order, as lme4 fills it."""
    rows, columns = np.tril_indices(q)
    order = np.lexsort((rows, columns))
    rows, columns = rows[order], columns[order]
    rows.flags.writeable = columns.flags.writeable = False  # shared between calls
    return rows, columns


def template(theta_t: np.ndarray, q: int) -> np.ndarray:
    """The q x q lower-triangular template, filled column by column as lme4 does."""
    T = np.zeros((q, q))
    T[_lower_triangle(q)] = theta_t
    return T


def theta_lower_bounds(qs: list[int]) -> np.ndarray:
    """0 for diagonal entries of each template, -inf for the others."""
    bounds = []
    for q in qs:
        rows, columns = _lower_triangle(q)
        bounds += [0.0 if r == c else -np.inf for r, c in zip(rows, columns, strict=True)]
    return np.array(bounds)


def theta_start(qs: list[int]) -> np.ndarray:
    """lme4's starting point: identity templates."""
    return np.where(np.isfinite(theta_lower_bounds(qs)), 1.0, 0.0)


def _block_diagonal(blocks: np.ndarray) -> sp.bsr_matrix:
    n_blocks, q, _ = blocks.shape
    return sp.bsr_matrix(
        (blocks, np.arange(n_blocks), np.arange(n_blocks + 1)), shape=(n_blocks * q, n_blocks * q)
    )


# Above this template size the first term's blocks go to LAPACK's batched Cholesky;
# below it, an unrolled loop over the entries of arrays of all levels is faster.
UNROLLED_MAX_Q = 6
# Rows this short make a gemm of the [X, y] block cheaper than one call per entry.
SHORT_ROWS = 4096


class _FirstTerm:
    """The first term's cross-products laid out for eliminating all its levels at once.

    Arrays run over the levels along their last, contiguous axis, so every step of an
    evaluation is a few whole-array operations (a small gemm for the scaled
    cross-products, a loop over the q x q entries for the Cholesky factors and the
    triangular solves), with no sparse matrix built per evaluation.
    """

    def __init__(self, cross: CrossProducts) -> None:
        q, levels, width = cross.q1, cross.G1.shape[0], cross.p + 1
        self.q, self.levels, self.p = q, levels, cross.p
        self.G = np.ascontiguousarray(cross.G1.reshape(levels, q * q).T)  # (q q, levels)
        # [Z1'X, Z1'y] as (q, (p + 1) levels): row k holds the k-th column of each block.
        ZXy = np.column_stack([cross.Z1X, cross.Z1y]).reshape(levels, q, width)
        self.ZXy = np.ascontiguousarray(ZXy.transpose(1, 2, 0)).reshape(q, width * levels)
        XXy = np.empty((width, width))
        XXy[:-1, :-1], XXy[:-1, -1], XXy[-1, :-1], XXy[-1, -1] = (
            cross.XX, cross.Xy, cross.Xy, cross.yy,
        )  # fmt: skip
        self.XXy = XXy

    def eliminate(self, T: np.ndarray) -> tuple[list[list[np.ndarray]], np.ndarray]:
        """The Cholesky factors L_j of T'G_j T + I and C_j = L_j^-1 T'[Z_j'X, Z_j'y].

        Returns the factors' entries as ``L[i][k]`` (arrays over the levels, k <= i)
        and C as (p + 1, q, levels). Raises LinAlgError if a block is not definite
        (only possible at a non-finite theta: every block is at least I).
        """
        q, levels, width = self.q, self.levels, self.p + 1
        # A_j = T' G_j T for all levels in one product: (T'GT)_ik = sum G_jl T_ji T_lk.
        pairs = (T[:, None, :, None] * T[None, :, None, :]).reshape(q * q, q * q)
        A = pairs.T @ self.G  # row i q + k holds entry (i, k) of every level's block
        L: list[list[np.ndarray]] = [[] for _ in range(q)]
        if q > UNROLLED_MAX_Q:
            blocks = A.T.reshape(levels, q, q) + np.eye(q)
            full = np.linalg.cholesky(blocks)
            L = [[np.ascontiguousarray(full[:, i, k]) for k in range(i + 1)] for i in range(q)]
        else:
            for k in range(q):
                pivot = A[k * q + k] + 1.0
                for m in range(k):
                    pivot = pivot - L[k][m] * L[k][m]
                if not pivot.min() > 0:  # NaN fails too
                    raise np.linalg.LinAlgError("a block of the first term is not definite")
                root = np.sqrt(pivot)
                L[k].append(root)
                for i in range(k + 1, q):
                    entry = A[i * q + k]
                    for m in range(k):
                        entry = entry - L[i][m] * L[k][m]
                    L[i].append(entry / root)
        TR = (T.T @ self.ZXy).reshape(q, width, levels)
        C = np.empty((width, q, levels))
        for i in range(q):
            row = TR[i]
            for m in range(i):
                row = row - L[i][m] * C[:, m]
            np.divide(row, L[i][i], out=C[:, i])
        return L, C

    def logdet(self, L: list[list[np.ndarray]]) -> float:
        """log|L_Z|^2 of the first term (each block's diagonal is at least 1)."""
        product = L[0][0]
        for i in range(1, self.q):
            product = product * L[i][i]
        return 2.0 * float(np.log(product).sum())

    def schur(self, C: np.ndarray) -> np.ndarray:
        """The [X, y] block after the first term: [X'X, X'y; y'X, y'y] - C'C."""
        width = self.p + 1
        flat = C.reshape(width, -1)
        if width > UNROLLED_MAX_Q or flat.shape[1] <= SHORT_ROWS:
            return self.XXy - flat @ flat.T
        # For a few long rows, dot products beat a BLAS gemm; einsum's are never split
        # over threads, which stalls whenever the other threads' cores are busy.
        S = self.XXy.copy()
        for i in range(width):
            for k in range(i + 1):
                S[i, k] -= np.einsum("l,l->", flat[i], flat[k])
                S[k, i] = S[i, k]
        return S

    @staticmethod
    def blocks(L: list[list[np.ndarray]]) -> np.ndarray:
        """The factors as (levels, q, q) lower-triangular blocks."""
        q = len(L)
        out = np.zeros((L[0][0].size, q, q))
        for i in range(q):
            for k in range(i + 1):
                out[:, i, k] = L[i][k]
        return out


# Pairs of nonzeros the scalar-rest workspace may always hold (about 50 MB), however
# small the dense block; beyond it, no more than the dense block's own entries.
WORKSPACE_PAIRS = 2**22


class _ScalarRest:
    """The dense Schur complement of a first term whose other terms are all scalar.

    Eliminating the first term (template T, blocks A_j = T'G_j T + I) leaves, among the
    other terms' columns, Lambda_r (Zr'Zr - sum_j Zr'Z1_j W_j Z1_j'Zr) Lambda_r + I with
    W_j = T A_j^-1 T' (q1 x q1) and Lambda_r diagonal (theta_t on term t's columns).
    The sparsity pattern of the sum never changes, so each entry of S is a fixed
    weighted sum of the entries theta_s theta_t W_j[k, l]: one sparse matrix ``P``
    (rows: the positions of S's strict lower triangle among the other terms; columns:
    the first term's (level, k, l), plus one for Zr'Zr itself, for each pair of terms
    s >= t) gives them all as one product, written straight into S's memory.
    """

    def __init__(self, cross: CrossProducts, first: _FirstTerm, levels_rest: list[int]) -> None:
        p, q, n_rest = cross.p, cross.q1, int(sum(levels_rest))
        m = n_rest + p + 1
        self.n_rest, self.p, self.m, self.q, self.first = n_rest, p, m, q, first
        levels1 = first.levels
        terms = len(levels_rest)
        term = np.repeat(np.arange(terms), levels_rest)  # of each rest column
        A = cross.ZrZ1.tocsc()
        A.sort_indices()
        width = levels1 * q * q + 1
        lower, diagonal = [], []
        for a, b, product, entry in _level_pairs(A, q):
            below, same = a > b, a == b
            column = (term[a[below]] * terms + term[b[below]]) * width + entry[below]
            lower.append((a[below] * m + b[below], column, product[below]))
            diagonal.append((a[same], entry[same], product[same]))
        RR = sp.tril(cross.ZrZr, format="coo")
        RR_row = RR.row.astype(np.int64)
        lower.append(
            (
                RR_row * m + RR.col,
                (term[RR.row] * terms + term[RR.col]) * width + width - 1,
                RR.data,
            )
        )
        rows, columns, values = (np.concatenate(part) for part in zip(*lower, strict=True))
        del lower
        self.P = sp.csr_matrix((values, (rows, columns)), shape=(m * m, terms * terms * width))
        del rows, columns, values
        # The diagonal's sums over the levels, sum_j sum_kl A_a(j,k) A_a(j,l) W_j[k, l].
        rows, columns, values = (np.concatenate(part) for part in zip(*diagonal, strict=True))
        self.squares = sp.csr_matrix((values, (rows, columns)), shape=(n_rest, width - 1))
        self.term = term
        self.base = np.empty(width)
        self.A = A.tocsr()
        self.Z1Xy = np.column_stack([cross.Z1X, cross.Z1y]).reshape(levels1, q, p + 1)
        self.ZrXy = np.column_stack([cross.ZrX, cross.Zry])

    @staticmethod
    def pairs(cross: CrossProducts) -> int:
        """About the nonzeros of ``P``: pairs of nonzeros of Zr'Z1 within each level's
        columns (those in one row go to the diagonal instead)."""
        counts = np.diff(cross.ZrZ1.tocsc().indptr[:: cross.q1]).astype(np.int64)
        return int(np.sum(counts * (counts - 1) // 2))

    def logdets_and_pwrss(self, T1: np.ndarray, scales: np.ndarray) -> tuple[float, float, float]:
        """log|L_Z|^2, log|L_X|^2 and r^2 at the first term's template ``T1`` and the
        other terms' ``scales`` (their thetas)."""
        n_rest, m, q = self.n_rest, self.m, self.q
        L, C = self.first.eliminate(T1)
        if q == 1:
            W = (T1[0, 0] / L[0][0]) ** 2
            weighted = W[:, None, None] * self.Z1Xy
        else:
            M = T1 @ np.linalg.inv(_FirstTerm.blocks(L)).transpose(0, 2, 1)  # T L_j^-T
            W = M @ M.transpose(0, 2, 1)
            weighted = W @ self.Z1Xy
        W = W.ravel()
        self.base[:-1] = -W
        self.base[-1] = 1.0
        weights = np.multiply.outer(np.multiply.outer(scales, scales).ravel(), self.base)
        S = (self.P @ weights.ravel()).reshape(m, m)
        lam = scales[self.term]
        rest = np.arange(n_rest)
        S[rest, rest] += 1.0 - lam * lam * (self.squares @ W)
        weighted = weighted.reshape(-1, self.p + 1)
        S[n_rest:, :n_rest] = ((self.ZrXy - self.A @ weighted) * lam[:, None]).T
        S[n_rest:, n_rest:] = self.first.schur(C)
        # S's lower triangle is the upper triangle of its Fortran-ordered transpose.
        U, info = scipy.linalg.lapack.dpotrf(S.T, lower=0, clean=0, overwrite_a=1)
        if info != 0:
            raise np.linalg.LinAlgError("the Schur complement is not positive definite")
        diagonal = np.diagonal(U)
        logdet_Z = self.first.logdet(L) + 2.0 * float(np.sum(np.log(diagonal[:n_rest])))
        logdet_X = float(2.0 * np.sum(np.log(diagonal[n_rest:-1])))
        return logdet_Z, logdet_X, float(diagonal[-1] ** 2)


def _level_pairs(
    A: sp.csc_matrix, q: int, chunk: int = 2**22
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Every pair of nonzeros of ``A`` in the same level's q columns, once.

    Yields, for chunks of levels holding about ``chunk`` pairs (so the index arrays
    never hold all pairs at once): the pairs' rows a >= b, the index of W_j[k, l]
    they are weighted by (level j; k the column within the level of the nonzero in
    row a, l the other's), and the product of their values. A pair of two nonzeros
    in one row stands for both of its orders (W_j is symmetric): its product is
    doubled; each nonzero also pairs with itself.
    """
    starts = A.indptr[::q]
    counts = np.diff(starts).astype(np.int64)
    component = np.repeat(np.arange(A.shape[1]) % q, np.diff(A.indptr))
    pairs = counts * (counts + 1) // 2
    chunk_of_level = (np.cumsum(pairs) - 1) // chunk  # nondecreasing
    for levels in np.split(np.arange(counts.size), np.flatnonzero(np.diff(chunk_of_level)) + 1):
        if not levels.size:
            continue
        level = np.repeat(levels, counts[levels])
        x = starts[levels[0]] + np.arange(level.size)  # the chunk's nonzeros are contiguous
        before = x - starts[level] + 1  # nonzeros of the level up to x, x included
        left = np.repeat(x, before)
        right = np.repeat(starts[level] - np.cumsum(before) + before, before) + np.arange(left.size)
        if q > 1:  # rows are sorted within a column, not across a level's columns
            swap = A.indices[left] < A.indices[right]
            left, right = np.where(swap, right, left), np.where(swap, left, right)
        a, b = A.indices[left].astype(np.int64), A.indices[right].astype(np.int64)
        product = A.data[left] * A.data[right]
        if q > 1:
            product[(a == b) & (left != right)] *= 2.0
        entry = np.repeat(level * q * q, before) + component[left] * q + component[right]
        yield a, b, product, entry


def _first_rows(C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``L21_X`` (p, q1 levels) and ``L21_y`` from C (p + 1, q1, levels), columns ordered
    level by level as the first term's columns of Z are."""
    width, q, levels = C.shape
    rows = C.transpose(0, 2, 1).reshape(width, levels * q)
    return rows[:-1], rows[-1]


@dataclass
class Elimination:
    """The system left after eliminating the first term at one theta.

    With ``L21_R``, ``L21_X``, ``L21_y`` the first term's factor rows, the Schur
    complement of the rest is ``[RR + I, RX, Ry; ., XX, Xy; ., ., yy]`` minus the outer
    product of ``[L21_R; L21_X; L21_y]`` with itself.
    """

    templates: list[np.ndarray]
    L11: np.ndarray  # (levels1, q1, q1)
    L21_R: sp.csr_matrix  # (n_rest, q1 * levels1)
    L21_X: np.ndarray  # (p, q1 * levels1)
    L21_y: np.ndarray  # (q1 * levels1,)
    RR: sp.csr_matrix  # Lambda_r' Zr'Zr Lambda_r
    RX: np.ndarray  # Lambda_r' Zr'X
    Ry: np.ndarray  # Lambda_r' Zr'y


@dataclass
class Factor:
    """The blocked Cholesky factor at one theta, with what the fit needs from it."""

    templates: list[np.ndarray]
    L11: np.ndarray  # (levels1, q1, q1)
    L21_R: sp.csr_matrix  # rest-of-Z rows below the first block
    L21_X: np.ndarray  # (p, q1 * levels1)
    L21_y: np.ndarray  # (q1 * levels1,)
    LS: np.ndarray  # dense Cholesky factor of the Schur complement
    n_rest: int
    p: int

    @property
    def logdet_Z(self) -> float:
        first = 2.0 * np.sum(np.log(np.diagonal(self.L11, axis1=1, axis2=2)))
        rest = 2.0 * np.sum(np.log(np.diag(self.LS)[: self.n_rest]))
        return float(first + rest)

    @property
    def logdet_X(self) -> float:
        return float(2.0 * np.sum(np.log(np.diag(self.LS)[self.n_rest : self.n_rest + self.p])))

    @property
    def pwrss(self) -> float:
        """Penalised residual sum of squares r^2."""
        return float(self.LS[-1, -1] ** 2)


class ProfiledDeviance:
    """The objective of a linear mixed model as a function of theta.

    Parameters
    ----------
    cross : CrossProducts
        Computed once from the design.
    qs : list of int
        Columns per random-effects term (largest factor first).
    levels : list of int
        Levels per term.
    reml : bool
        REML criterion (True) or ML deviance (False).
    log_weights : float
        The sum of the log prior weights of the rows (0 without weights). With prior
        weights w (residual variance sigma^2 / w) the cross-products are weighted, and
        the criterion loses log|W| = sum(log w), as lme4's does.
    """

    def __init__(
        self,
        cross: CrossProducts,
        qs: list[int],
        levels: list[int],
        reml: bool,
        log_weights: float = 0.0,
    ) -> None:
        self.cross = cross
        self.qs = qs
        self.levels = levels
        self.reml = reml
        self.log_weights = float(log_weights)
        self.splits = np.cumsum([q * (q + 1) // 2 for q in qs])[:-1]
        self.n_rest = int(sum(q * n for q, n in zip(qs[1:], levels[1:], strict=True)))
        # Row index of every stored nonzero, for scaling by a diagonal Lambda in place.
        self._rest_scalar = all(q == 1 for q in qs[1:])
        self._zrz1_rows = np.repeat(np.arange(cross.ZrZ1.shape[0]), np.diff(cross.ZrZ1.indptr))
        self._zrzr_rows = np.repeat(np.arange(cross.ZrZr.shape[0]), np.diff(cross.ZrZr.indptr))
        # Private workspaces of the fast evaluations, built at their first use.
        self._first: _FirstTerm | None = None
        self._scalar: _ScalarRest | None | bool = None

    def _first_term(self) -> _FirstTerm:
        if self._first is None:
            self._first = _FirstTerm(self.cross)
        return self._first

    def _scalar_rest(self) -> _ScalarRest | None:
        """The fast Schur complement where every term after the first is scalar and its
        workspace (``P``, a nonzero per pair of rest columns sharing a first-term level)
        is small: within ``WORKSPACE_PAIRS`` or the dense block's own size, and its
        construction (about 40 bytes a pair) within a quarter of the memory available;
        else None (the general elimination)."""
        if self._scalar is None:
            self._scalar = False
            m = dense_size(self.qs, self.levels, self.cross.p)
            if self.n_rest and all(q == 1 for q in self.qs[1:]) and m * m < 2**31:
                pairs = _ScalarRest.pairs(self.cross)
                available = available_memory_bytes()
                small = pairs <= max(self.n_rest**2, WORKSPACE_PAIRS)
                if small and (available is None or 40 * pairs <= available / 4):
                    self._scalar = _ScalarRest(self.cross, self._first_term(), self.levels[1:])
        return self._scalar or None

    def templates(self, theta: np.ndarray) -> list[np.ndarray]:
        return [template(t, q) for t, q in zip(np.split(theta, self.splits), self.qs, strict=True)]

    def lambda_rest(self, templates: list[np.ndarray]) -> sp.csr_matrix:
        """Lambda restricted to the terms after the first (sparse block-diagonal)."""
        blocks = [
            sp.kron(sp.identity(n, format="csr"), sp.csr_matrix(T), format="csr")
            for T, n in zip(templates[1:], self.levels[1:], strict=True)
        ]
        return sp.block_diag(blocks, format="csr") if blocks else sp.csr_matrix((0, 0))

    def eliminate(self, theta: np.ndarray, rest: bool = True) -> Elimination:
        """The first term eliminated at ``theta`` (its block factored level by level).

        What remains is the system in the other terms, the fixed effects and the
        response, whose Schur complement the exact solver factors densely and the
        iterative solver applies as an operator. With ``rest=False`` (the iterative
        solver, scalar terms) the scaled sparse blocks ``L21_R`` and ``RR`` are left
        empty. Raises LinAlgError if not definite.
        """
        c = self.cross
        templates = self.templates(np.asarray(theta, dtype=float))
        T1 = templates[0]
        q1 = c.q1
        L, C = self._first_term().eliminate(T1)
        L11 = _FirstTerm.blocks(L)
        L21_X, L21_y = _first_rows(C)
        # Lambda_1 L11^{-T}, level by level, maps first-term columns of Zr'Z1 into L21;
        # for a scalar first term it is a diagonal scaling.
        if q1 == 1:
            scale = T1[0, 0] / L[0][0]
        elif self.n_rest and (rest or not self._rest_scalar):
            BM = _block_diagonal(np.einsum("ik,jlk->jil", T1, np.linalg.inv(L11)))
        if not self.n_rest:
            empty = sp.csr_matrix((0, L21_y.size))
            return Elimination(
                templates, L11, empty, L21_X, L21_y, sp.csr_matrix((0, 0)),
                np.zeros((0, c.p)), np.zeros(0),
            )  # fmt: skip
        if self._rest_scalar:
            # Lambda of scalar terms is diagonal: scale the stored nonzeros directly.
            lam = np.repeat([T[0, 0] for T in templates[1:]], self.levels[1:])
            if not rest:
                empty = sp.csr_matrix((self.n_rest, L21_y.size))
                return Elimination(
                    templates, L11, empty, L21_X, L21_y, sp.csr_matrix((self.n_rest,) * 2),
                    c.ZrX * lam[:, None], c.Zry * lam,
                )  # fmt: skip
            L21_R = c.ZrZ1.copy()
            L21_R.data = L21_R.data * lam[self._zrz1_rows]
            if q1 == 1:
                L21_R.data *= scale[L21_R.indices]
            else:
                L21_R = (L21_R @ BM).tocsr()
            RR = c.ZrZr.copy()
            RR.data = RR.data * lam[self._zrzr_rows] * lam[RR.indices]
            RX, Ry = c.ZrX * lam[:, None], c.Zry * lam
        else:
            Lr = self.lambda_rest(templates)
            L21_R = Lr.T @ c.ZrZ1
            L21_R = (L21_R @ (BM if q1 > 1 else sp.diags(scale))).tocsr()
            RR = (Lr.T @ c.ZrZr @ Lr).tocsr()
            RX, Ry = np.asarray(Lr.T @ c.ZrX), np.asarray(Lr.T @ c.Zry)
        return Elimination(templates, L11, L21_R, L21_X, L21_y, RR, RX, Ry)

    def factor(self, theta: np.ndarray) -> Factor:
        """The blocked Cholesky factor at ``theta``; raises LinAlgError if not definite."""
        if self.n_rest:
            return self._general_factor(theta)
        # One term: no sparse block, every level eliminated at once.
        first = self._first_term()
        templates = self.templates(np.asarray(theta, dtype=float))
        L, C = first.eliminate(templates[0])
        LS = scipy.linalg.cholesky(first.schur(C), lower=True, check_finite=False)
        L21_X, L21_y = _first_rows(C)
        empty = sp.csr_matrix((0, L21_y.size))
        return Factor(templates, _FirstTerm.blocks(L), empty, L21_X, L21_y, LS, 0, self.cross.p)

    def _general_factor(self, theta: np.ndarray) -> Factor:
        """``factor`` through the elimination every design supports (the reference the
        fast paths are tested against)."""
        c = self.cross
        e = self.eliminate(theta)
        n_rest, p = self.n_rest, c.p
        size = n_rest + p + 1
        S = np.zeros((size, size))  # toarray(out=S) below adds into S in some SciPy versions
        if n_rest:
            C = sp.vstack(
                [e.L21_R, sp.csr_matrix(e.L21_X), sp.csr_matrix(e.L21_y[None, :])], format="csr"
            )
            # S = A22 - C C': start from -C C' and add A22 block by block.
            (C @ C.T).toarray(out=S)
            np.negative(S, out=S)
            RR = e.RR.tocoo()
            S[RR.row, RR.col] += RR.data
            S[np.arange(n_rest), np.arange(n_rest)] += 1.0
            S[n_rest : n_rest + p, :n_rest] += e.RX.T
            S[-1, :n_rest] += e.Ry
            S[:n_rest, n_rest : n_rest + p] += e.RX
            S[:n_rest, -1] += e.Ry
        else:
            dense = np.vstack([e.L21_X, e.L21_y[None, :]])
            np.negative(dense @ dense.T, out=S)
        S[n_rest : n_rest + p, n_rest : n_rest + p] += c.XX
        S[n_rest : n_rest + p, -1] += c.Xy
        S[-1, n_rest : n_rest + p] += c.Xy
        S[-1, -1] += c.yy
        LS = scipy.linalg.cholesky(S, lower=True, overwrite_a=True, check_finite=False)
        return Factor(e.templates, e.L11, e.L21_R, e.L21_X, e.L21_y, LS, self.n_rest, c.p)

    def from_factor(self, factor: Factor) -> float:
        """The objective's value from a factor."""
        return self.value(factor.logdet_Z, factor.logdet_X, factor.pwrss)

    def value(self, logdet_Z: float, logdet_X: float, pwrss: float) -> float:
        """REML criterion or ML deviance from the log-determinants and r^2."""
        n, p = self.cross.n, self.cross.p
        if self.reml:
            dof = n - p
            value = logdet_Z + logdet_X + dof * (1 + LOG_2PI + np.log(pwrss / dof))
        else:
            value = logdet_Z + n * (1 + LOG_2PI + np.log(pwrss / n))
        return float(value - self.log_weights)

    def __call__(self, theta: np.ndarray) -> float:
        """REML criterion or ML deviance at ``theta`` (inf where the factor fails).

        Only the value is computed: one term, or scalar terms whose workspace is
        small, skip the sparse factor ``factor`` builds for the estimates.
        """
        theta = np.asarray(theta, dtype=float)
        if not np.isfinite(theta).all():
            return float("inf")
        try:
            if not self.n_rest:
                first = self._first_term()
                L, C = first.eliminate(template(theta, self.qs[0]))
                LS, info = scipy.linalg.lapack.dpotrf(first.schur(C), lower=1, clean=0)
                if info != 0:
                    raise np.linalg.LinAlgError("the fixed effects' block is not definite")
                diagonal = LS.diagonal()
                logdet_X = 2.0 * float(np.log(diagonal[:-1]).sum())
                return self.value(first.logdet(L), logdet_X, float(diagonal[-1] ** 2))
            scalar = self._scalar_rest()
            if scalar is not None:
                q1 = self.qs[0]
                T1 = template(theta[: q1 * (q1 + 1) // 2], q1)
                return self.value(*scalar.logdets_and_pwrss(T1, theta[q1 * (q1 + 1) // 2 :]))
            return self.from_factor(self.factor(theta))
        except (np.linalg.LinAlgError, scipy.linalg.LinAlgError, FloatingPointError):
            return float("inf")


@dataclass
class Solution:
    """Conditional estimates at one theta."""

    beta: np.ndarray
    sigma: float
    b: list[np.ndarray]  # per term, (levels, q)
    beta_cov: np.ndarray
    b_cov: list[np.ndarray]  # per term, (levels, q, q) conditional covariance blocks


def spherical_modes(
    objective: ProfiledDeviance, factor: Factor
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The penalised least-squares solution from a factor: beta, and the spherical
    random effects u (b = Lambda u) of the first term (levels, q1) and of the rest (flat).
    """
    n_rest, p = objective.n_rest, objective.cross.p
    LS = factor.LS
    L_RR, L_XR, L_XX = (
        LS[:n_rest, :n_rest],
        LS[n_rest : n_rest + p, :n_rest],
        LS[n_rest : n_rest + p, n_rest : n_rest + p],
    )
    L_yR, L_yX = LS[-1, :n_rest], LS[-1, n_rest : n_rest + p]
    beta = scipy.linalg.solve_triangular(L_XX.T, L_yX, lower=False) if p else np.zeros(0)
    u_rest = (
        scipy.linalg.solve_triangular(L_RR.T, L_yR - L_XR.T @ beta, lower=False)
        if n_rest
        else np.zeros(0)
    )
    rhs = factor.L21_y - factor.L21_X.T @ beta
    if n_rest:
        rhs = rhs - factor.L21_R.T @ u_rest
    return beta, first_term_modes(factor.L11, rhs), u_rest


def fixed_effects_block(
    cross: CrossProducts,
    e: Elimination,
    S_RX: np.ndarray,
    S_Ry: np.ndarray,
    solved: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The fixed effects' part of the factor, given the rest's solves.

    With ``solved = S_RR^-1 [S_RX, S_Ry]`` (by any method), the Schur complement of
    the rest in the [X, y] block is (p + 1) x (p + 1); its Cholesky factor L gives
    log|L_X|^2 from the first p diagonal entries, r^2 as the square of the last, and
    beta by back-substitution.

    Returns
    -------
    L : numpy.ndarray
        The lower Cholesky factor.
    beta : numpy.ndarray
    pwrss : float
    """
    p = cross.p
    top = np.vstack([e.L21_X, e.L21_y[None, :]])
    T = np.block([[cross.XX, cross.Xy[:, None]], [cross.Xy[None, :], np.array([[cross.yy]])]])
    T = T - top @ top.T - np.column_stack([S_RX, S_Ry]).T @ solved
    L = np.linalg.cholesky(0.5 * (T + T.T))
    beta = scipy.linalg.solve_triangular(L[:p, :p].T, L[p, :p], lower=False)
    return L, beta, float(L[p, p] ** 2)


def first_term_modes(L11: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """u1 = L11^-T rhs level by level, as (levels, q1)."""
    levels1, q1 = L11.shape[0], L11.shape[1]
    if q1 == 1:
        return (rhs / L11[:, 0, 0]).reshape(levels1, 1)
    if q1 > UNROLLED_MAX_Q:
        return np.linalg.solve(np.transpose(L11, (0, 2, 1)), rhs.reshape(levels1, q1, 1))[..., 0]
    # Back substitution over all levels at once (LAPACK's batched solve is an LU per level).
    rhs = rhs.reshape(levels1, q1)
    u = np.empty((q1, levels1))
    for i in reversed(range(q1)):
        row = rhs[:, i]
        for k in range(i + 1, q1):
            row = row - L11[:, k, i] * u[k]
        u[i] = row / L11[:, i, i]
    return u.T


def lower_inverse_blocks(L: np.ndarray) -> np.ndarray:
    """The inverses of a batch (n, q, q) of lower-triangular blocks."""
    n, q = L.shape[0], L.shape[1]
    if q > UNROLLED_MAX_Q:
        return np.linalg.inv(L)
    # Forward substitution entry by entry over all blocks at once.
    inverse = np.zeros_like(L)
    for j in range(q):
        inverse[:, j, j] = 1.0 / L[:, j, j]
        for i in range(j + 1, q):
            total = np.zeros(n)
            for k in range(j, i):
                total += L[:, i, k] * inverse[:, k, j]
            inverse[:, i, j] = -total / L[:, i, i]
    return inverse


def congruence_blocks(T: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """T B_j T' for a batch (n, q, q) of blocks, as one gemm with the q^2 x q^2 matrix
    of products T_ik T_ml."""
    n, q = blocks.shape[0], blocks.shape[1]
    products = np.einsum("ik,ml->klim", T, T).reshape(q * q, q * q)
    return (blocks.reshape(n, q * q) @ products).reshape(n, q, q)


def fill_upper_from_lower(M: np.ndarray, block: int = 512) -> None:
    """Make square M symmetric in place from its lower triangle, a block of rows at a
    time (``np.tril`` builds masks as large as M, a second each at 5000 x 5000)."""
    n = M.shape[0]
    for start in range(0, n, block):
        stop = min(start + block, n)
        M[start:stop, stop:] = M[stop:, start:stop].T
        diagonal = M[start:stop, start:stop]
        upper = np.triu_indices(stop - start, 1)
        diagonal[upper] = diagonal.T[upper]


def solve(
    objective: ProfiledDeviance,
    theta: np.ndarray,
    sigma: float | None = None,
    factor: Factor | None = None,
) -> Solution:
    """Fixed effects, sigma, conditional modes and their (co)variances at ``theta``.

    The conditional covariance of the random effects, sigma^2 Lambda (Lambda'Z'Z Lambda +
    I)^-1 Lambda' (diagonal blocks only), is what lme4 reports as ``condVar``; it does
    not include the uncertainty of the fixed effects. ``sigma`` fixes the scale (1 for a
    generalized linear mixed model on weighted cross-products); by default it is
    estimated from the penalised residual sum of squares. ``factor``, the factor at
    ``theta`` if the caller has it already, saves computing it again.
    """
    if factor is None:
        factor = objective.factor(theta)
    c, n_rest, p = objective.cross, objective.n_rest, objective.cross.p
    LS = factor.LS
    L_RR = LS[:n_rest, :n_rest]
    L_XX = LS[n_rest : n_rest + p, n_rest : n_rest + p]
    if sigma is None:
        dof = c.n - p if objective.reml else c.n
        sigma = float(np.sqrt(factor.pwrss / dof))
    beta, u1, u_rest = spherical_modes(objective, factor)
    q1 = c.q1
    templates = factor.templates
    b = [u1 @ templates[0].T]
    start = 0
    for T, q, n in zip(templates[1:], objective.qs[1:], objective.levels[1:], strict=True):
        b.append(u_rest[start : start + q * n].reshape(n, q) @ T.T)
        start += q * n

    if p:
        L_XX_inv = lower_inverse_blocks(L_XX[None])[0]
        beta_cov = sigma**2 * (L_XX_inv.T @ L_XX_inv)
    else:
        beta_cov = np.zeros((0, 0))

    # Diagonal blocks of (L L')^-1 for the random part L = [[L11, 0], [L21_R, L_RR]].
    L11_inv = lower_inverse_blocks(factor.L11)
    first_blocks = np.zeros_like(L11_inv)
    for k in range(q1):  # L11^-T L11^-1 per level: sum over k of row k's outer product
        first_blocks += L11_inv[:, k, :, None] * L11_inv[:, k, None, :]
    rest_blocks: list[np.ndarray] = []
    if n_rest:
        # (L_RR L_RR')^-1 from the factor by LAPACK's potri (2/3 n^3 flops, against 3 n^3
        # for a triangular solve against the identity and the product of the inverses).
        inverse_rest, info = scipy.linalg.lapack.dpotri(L_RR, lower=1)
        if info:
            raise np.linalg.LinAlgError(f"the rest's factor is singular (potri info {info})")
        fill_upper_from_lower(inverse_rest)
        inverse_rest = inverse_rest.T  # symmetric: LAPACK's column-major array as rows
        # The first term's blocks gain B_j' (L_RR L_RR')^-1 B_j with B = L21_R L11^-1
        # (sparse), from the pairs of nonzeros each level's columns share: no dense
        # n_rest x levels product.
        B = (factor.L21_R @ _block_diagonal(L11_inv)).tocsc()
        if q1 == 1:
            first_blocks[:, 0, 0] += quadratic_diagonal_by_count(B, inverse_rest)
        else:
            first_blocks += quadratic_blocks_by_count(*level_patterns(B, q1), inverse_rest)
        offset = 0
        for q, n in zip(objective.qs[1:], objective.levels[1:], strict=True):
            idx = offset + np.arange(n)[:, None] * q + np.arange(q)[None, :]
            rest_blocks.append(inverse_rest[idx[:, :, None], idx[:, None, :]])
            offset += q * n
    b_cov = []
    for T, blocks in zip(templates, [first_blocks, *rest_blocks], strict=True):
        b_cov.append(sigma**2 * congruence_blocks(T, blocks))
    return Solution(beta=beta, sigma=sigma, b=b, beta_cov=beta_cov, b_cov=b_cov)


def _sparse_quadratic_diagonal(B: sp.csc_matrix, M: np.ndarray) -> np.ndarray:
    """``diag(B' M B)`` for sparse B, from every pair of nonzeros within a column."""
    counts = np.diff(B.indptr)
    entry_column = np.repeat(np.arange(B.shape[1]), counts)
    partners = counts[entry_column]
    left = np.repeat(np.arange(B.nnz), partners)
    offset = np.arange(left.size) - np.repeat(np.cumsum(partners) - partners, partners)
    right = np.repeat(B.indptr[entry_column], partners) + offset
    values = B.data[left] * B.data[right] * M[B.indices[left], B.indices[right]]
    return np.bincount(entry_column[left], weights=values, minlength=B.shape[1])


def quadratic_diagonal_by_count(
    B: sp.csc_matrix, M: np.ndarray, max_elements: int = 2_000_000
) -> np.ndarray:
    """``diag(B' M B)`` for sparse B, as ``_sparse_quadratic_diagonal`` computes it.

    Columns with the same number of nonzeros k are taken together: their k x k blocks
    of M are gathered in one ``take`` and reduced by a batched product. This touches
    each pair of nonzeros once, as the pairwise version does, without building index
    arrays the size of all pairs (several times faster on a million rows).
    """
    B = B.tocsc()
    B.sort_indices()
    return quadratic_blocks_by_count(B.indptr, B.indices, B.data[:, None], M, max_elements)[:, 0, 0]


def level_patterns(B: sp.spmatrix, q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The columns of B grouped by level (q consecutive columns each) on the union of
    their rows: ``indptr`` over levels, the rows, and the values (rows, q), 0 where a
    column of the level has no entry in that row."""
    coo = B.tocoo()
    level, component = coo.col // q, coo.col % q
    keys = level.astype(np.int64) * B.shape[0] + coo.row
    unique, position = np.unique(keys, return_inverse=True)
    values = np.zeros((unique.size, q))
    np.add.at(values, (position, component), coo.data)
    levels = B.shape[1] // q
    indptr = np.searchsorted(unique // B.shape[0], np.arange(levels + 1))
    return indptr, (unique % B.shape[0]).astype(np.int64), values


def quadratic_blocks_by_count(
    indptr: np.ndarray,
    rows: np.ndarray,
    values: np.ndarray,
    M: np.ndarray,
    max_elements: int = 2_000_000,
) -> np.ndarray:
    """The q x q blocks ``V_j' M[r_j, r_j] V_j`` of every column group j, where group j
    holds rows ``r_j = rows[indptr[j]:indptr[j + 1]]`` with values ``V_j`` (k_j, q).

    Groups with the same number of rows k are taken together: their k x k blocks of M
    are gathered in one ``take`` (at most ``max_elements`` at a time) and reduced by
    batched products, so each pair of nonzeros is touched once and nothing the size of
    M times the groups is formed.
    """
    counts = np.diff(indptr)
    q = values.shape[1]
    out = np.zeros((counts.size, q, q))
    order = np.argsort(counts, kind="stable")
    bounds = np.flatnonzero(np.diff(counts[order])) + 1
    size, flat = M.shape[0], np.ascontiguousarray(M).ravel()
    for group in np.split(order, bounds):
        k = int(counts[group[0]]) if group.size else 0
        if k == 0:
            continue
        if k * k > max_elements:  # a group this dense alone: its block in row chunks
            for column in group:
                r = rows[indptr[column] : indptr[column + 1]]
                V = values[indptr[column] : indptr[column + 1]]
                step = max(1, max_elements // k)
                out[column] = sum(
                    V[i : i + step].T @ (M[np.ix_(r[i : i + step], r)] @ V)
                    for i in range(0, k, step)
                )
            continue
        step = max(1, max_elements // (k * k))  # bounds the gathered blocks' memory
        for start in range(0, len(group), step):
            columns = group[start : start + step]
            entries = indptr[columns][:, None] + np.arange(k)
            r, V = rows[entries].astype(np.int64), values[entries]  # (n, k), (n, k, q)
            blocks = np.take(flat, (r * size)[:, :, None] + r[:, None, :])
            out[columns] = np.einsum("nia,nib->nab", V, blocks @ V)
    return out


def rest_offsets(qs: list[int], levels: list[int]) -> list[int]:
    """Where each term after the first starts among the rest's columns."""
    sizes = [q * n for q, n in zip(qs[1:], levels[1:], strict=True)]
    return [int(v) for v in np.cumsum([0, *sizes])[:-1]]


def diagonal_blocks(M: sp.spmatrix, start: int, q: int, n: int) -> np.ndarray:
    """The (n, q, q) diagonal blocks of a sparse matrix's square from ``start``: one term's
    levels, gathered from the stored entries, never the dense q n x q n square."""
    block = sp.csr_matrix(M)[start : start + q * n][:, start : start + q * n].tocoo()
    own = block.row // q == block.col // q
    G = np.zeros((n, q, q))
    np.add.at(G, (block.row[own] // q, block.row[own] % q, block.col[own] % q), block.data[own])
    return G


def moment_start(objective: ProfiledDeviance) -> np.ndarray:
    """A starting theta for the first term from moments of the per-level cross-products.

    With r the residuals of ordinary least squares on X and G_j = Z_j'Z_j, the
    level sums Z_j'r have E[(Z_j'r)(Z_j'r)'] ~ G_j Sigma_b G_j + sigma^2 G_j (the fixed
    effects' estimation error neglected), so Sigma_b solves the q^2 x q^2 linear system
    sum_j G_j Sigma_b G_j = sum_j (Z_j'r)(Z_j'r)' - sigma^2 sum_j G_j, with sigma^2 from
    the residuals within levels. No level's block is inverted to estimate Sigma_b, so
    levels with one or two rows do not make it noisy. Its eigenvalues are floored at
    1/100 of the largest (a start strictly inside the bounds), and theta is the lower
    Cholesky factor of Sigma_b / sigma^2, column by column. The other terms are
    ignored; where the moments say nothing (no residual degrees of freedom), lme4's
    identity start is returned.

    Parameters
    ----------
    objective : ProfiledDeviance

    Returns
    -------
    numpy.ndarray
        The first term's q1 (q1 + 1) / 2 entries of theta.
    """
    c, q = objective.cross, objective.cross.q1
    identity = theta_start([q])
    beta = np.linalg.lstsq(c.XX, c.Xy, rcond=None)[0] if c.p else np.zeros(0)
    residual_squares = c.yy - 2 * beta @ c.Xy + beta @ c.XX @ beta
    Zr = (c.Z1y - c.Z1X @ beta).reshape(-1, q)  # Z_j'r, level by level
    within = residual_squares - np.einsum(
        "jk,jkl,jl->", Zr, np.linalg.pinv(c.G1, hermitian=True), Zr
    )
    dof = c.n - c.p - int(np.linalg.matrix_rank(c.G1, hermitian=True).sum())
    if dof <= 0 or not within > 0:
        return identity
    sigma2 = within / dof
    moments = np.einsum("jk,jl->kl", Zr, Zr) - sigma2 * c.G1.sum(axis=0)
    # vec(G Sigma G) = (G kron G) vec(Sigma) for symmetric G, summed over the levels.
    system = np.einsum("jik,jlm->ilkm", c.G1, c.G1).reshape(q * q, q * q)
    Sigma = np.linalg.lstsq(system, moments.ravel(), rcond=None)[0].reshape(q, q)
    values, vectors = np.linalg.eigh(0.5 * (Sigma + Sigma.T) / sigma2)
    if not np.all(np.isfinite(values)):
        return identity
    values = np.maximum(values, 1e-2 * max(values.max(), 1e-4))
    factor = np.linalg.cholesky((vectors * values) @ vectors.T)
    return factor[_lower_triangle(q)]


def single_term_objective(objective: ProfiledDeviance, term: int) -> ProfiledDeviance:
    """The objective of the model with only random-effects term ``term``.

    Built from the full model's cross-products at no cost that grows with the rows;
    its optimum is a cheap starting point for the full model's theta.
    """
    c, qs, levels = objective.cross, objective.qs, objective.levels
    if term == 0:
        G, ZX, Zy = c.G1, c.Z1X, c.Z1y
    else:
        start = rest_offsets(qs, levels)[term - 1]
        q, n = qs[term], levels[term]
        # A term's own block of Zr'Zr is block-diagonal (one q x q block per level).
        G = diagonal_blocks(c.ZrZr, start, q, n)
        ZX, Zy = c.ZrX[start : start + q * n], c.Zry[start : start + q * n]
    empty = sp.csr_matrix((0, ZX.shape[0]))
    alone = CrossProducts(
        n=c.n,
        p=c.p,
        q1=qs[term],
        G1=G,
        Z1X=ZX,
        Z1y=Zy,
        ZrZ1=empty,
        ZrZr=sp.csr_matrix((0, 0)),
        ZrX=np.zeros((0, c.p)),
        Zry=np.zeros(0),
        XX=c.XX,
        Xy=c.Xy,
        yy=c.yy,
    )
    return ProfiledDeviance(
        alone, [qs[term]], [levels[term]], objective.reml, log_weights=objective.log_weights
    )


def available_memory_bytes() -> int | None:
    """Memory the system can give without swapping (Linux ``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def dense_size(qs: list[int], levels: list[int], p: int) -> int:
    """Order of the dense block factored at every evaluation: the columns of the terms
    after the first (largest) one, the fixed effects and the response."""
    return int(sum(q * n for q, n in zip(qs[1:], levels[1:], strict=True))) + p + 1


def exact_memory_error(
    owner: str, names: list[str], levels: list[int], size: int, need: float,
    available: float | None, instead: str,
) -> MemoryError:  # fmt: skip
    """The error of a fit whose exact solver's dense block does not fit in memory."""
    pairs = zip(names[1:], levels[1:], strict=True)
    rest = ", ".join(f"{name}: {count:,} levels" for name, count in pairs)
    return MemoryError(
        f"{owner}: the exact solver factors a dense {size:,} x {size:,} matrix for the "
        f"random effects after the largest factor ({rest}), about {need / 2**30:.1f} GB, but "
        f"{(available or 0) / 2**30:.1f} GB of memory is available. {instead}"
    )
