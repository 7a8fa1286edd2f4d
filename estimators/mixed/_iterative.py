"""The iterative solver: REML or ML for large crossed designs without a factorisation.

The exact solver factors the Schur complement S of the terms after the first (largest)
one densely; for half a million users crossed with fifty thousand items that is a
50k x 50k matrix (20 GB, and minutes per factorisation), and a sparse factorisation
fills in to the same size because every user links the items they touched. This
solver never forms S. It keeps the exact elimination of the first term (a batch of
q1 x q1 blocks) and applies S = RR + I - L21_R L21_R' to blocks of vectors, which
costs two passes over the nonzeros of Z_rest'Z_1 (at most q1 q_k per row of data);
the templates and the first term's per-level factors M_j = T_1 L11_j^-T are applied
around those fixed products as block-diagonal scalings. Terms may be vector-valued
(random slopes, ``(1 + treat | user)``) in any position:

- the fixed effects, the penalised residual sum of squares and the spherical modes
  come from preconditioned conjugate gradients on S with the p + 1 right-hand sides of
  [X, y], to a relative residual of 1e-10; the preconditioner is block Jacobi, each
  level's q_k x q_k diagonal block of S (for scalar terms, Jacobi);
- theta solves the stationarity condition of the profiled criterion. With u_j the
  spherical modes of level j of term k, U_k the sum of their conditional covariance
  blocks (in sigma^2 units) and C_k REML's fixed-effects share (sum_j V_j V_j',
  V = W L_XX^-T, W = A^-1 Lambda'Z'X), the criterion is stationary in the term's
  covariance T_k T_k' where sum_j u_j u_j' / sigma^2 = n_k I - U_k - C_k (the EM
  condition n_k Sigma_k = sum_j (b_j b_j' / sigma^2 + V_j) in spherical coordinates).
  The update is its effective-degrees-of-freedom form (Harville 1977; MacKay 1992):
  with F = n_k I - U_k - C_k and G = F^-1/2 (sum_j u_j u_j' / sigma^2) F^-1/2, the next
  covariance is T_k G T_k' (for a scalar term, theta^2 |u|^2 / (sigma^2 (n_k - t_k))),
  iterated on the templates' log-Cholesky coordinates with Anderson acceleration; G = I
  exactly at a stationary point, and ``stationarity`` reports max |G - I|;
- U_k: for the first term, sum_j A11_j^-1 exactly plus its coupling to the rest,
  L11^-T L21_R' S^-1 L21_R L11^-1 (block j); for the rest, S^-1's diagonal blocks.
  S^-1 is taken as D^-1 (the block-Jacobi inverse, exactly) plus S^-1 - D^-1 estimated
  with fixed Rademacher probes solved with the data in the same block: for a q x q
  block E[((S^-1 - D^-1) z)_l z_l'] is its block l. Terms with few levels (regions,
  say) are probed by their unit vectors, exactly;
- the criterion's value (for ``objective_``) needs log|S|, estimated once at the end
  by stochastic Lanczos quadrature on the block-Jacobi-scaled C^-1 S C^-T (D = C C')
  with the same probes and the control variate tr(C^-1 S C^-T - I) = 0.

Conditional variances take S^-1 as D^-1 (the coupling between levels and factors is
left out, so they are slightly too small); the fixed effects' covariance is exact.
A vector term's variance at zero (a singular fit) is approached, not reached: its
template's diagonal stays above a floor and the fit may report no convergence there,
where the exact solver reports the boundary.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from estimators.mixed._deviance import (
    Elimination,
    ProfiledDeviance,
    Solution,
    diagonal_blocks,
    fixed_effects_block,
    rest_offsets,
)

PROBES = 32
EXACT_TRACE_LEVELS = 128  # terms with at most this many levels get exact traces
CG_TOLERANCE = 1e-10
THETA_TOLERANCE = 1e-7
MAX_ITERATIONS = 200
ANDERSON_DEPTH = 4  # steps of history (Anderson acceleration of depth 3)
# A slope's variance started near zero (a single-term fit often gives a singular one)
# leads the accelerated iteration to a spurious near-singular point: a vector term's
# diagonal starts at least this share of its largest entry.
VECTOR_START_SHARE = 0.3
LANCZOS_STEPS = 100


def _threads() -> int:
    """Threads for the sparse products: the BLAS thread limit if one is set."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return max(1, min(os.cpu_count() or 1, 8))


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(2, min(os.cpu_count() or 1, 8)))
    return _POOL


class ChunkedMatrix:
    """A fixed CSR matrix split into row chunks of equal work, multiplied in threads.

    SciPy's sparse times dense product releases the GIL, so the chunks run in
    parallel; each writes its own rows of the result.
    """

    def __init__(self, matrix: sp.csr_matrix, threads: int) -> None:
        matrix = matrix.tocsr()
        self.shape = matrix.shape
        bounds = np.searchsorted(
            matrix.indptr, np.linspace(0, matrix.nnz, threads + 1)[1:-1]
        ).tolist()
        ends = [*bounds, matrix.shape[0]]
        self.rows = [slice(a, b) for a, b in zip([0, *bounds], ends, strict=True)]
        self.rows = [r for r in self.rows if r.stop > r.start] or [slice(0, matrix.shape[0])]
        self.chunks = [matrix[r] for r in self.rows]

    def __matmul__(self, V: np.ndarray) -> np.ndarray:
        if len(self.chunks) == 1:
            return self.chunks[0] @ V
        out = np.empty((self.shape[0], *V.shape[1:]))

        def run(k: int) -> None:
            out[self.rows[k]] = self.chunks[k] @ V

        list(_pool().map(run, range(len(self.chunks))))
        return out


def _blockwise(blocks: np.ndarray, V: np.ndarray, transpose: bool = False) -> np.ndarray:
    """Apply a block-diagonal matrix, one q x q block per level, to rows of ``V``.

    ``blocks`` is (levels, q, q), or one (q, q) template repeated over the levels;
    ``V``'s rows are level-major (level * q + column), as the design lays them out.
    """
    q = blocks.shape[-1]
    if q == 1:
        weights = blocks.reshape(-1)
        return V * (weights[:, None] if V.ndim == 2 and weights.size > 1 else weights)
    shape = V.shape
    W = V.reshape(shape[0] // q, q, -1)
    if transpose:
        blocks = np.swapaxes(blocks, -1, -2)
    # q^2 multiply-adds over whole columns: much faster than einsum's loop over levels.
    out = np.empty_like(W)
    for a in range(q):
        for b in range(q):
            weight = blocks[a, b] if blocks.ndim == 2 else blocks[:, a, b, None]
            if b == 0:
                np.multiply(W[:, 0], weight, out=out[:, a])
            else:
                out[:, a] += W[:, b] * weight
    return out.reshape(shape)


def _block_sums(left: np.ndarray, right: np.ndarray, q: int, weights: np.ndarray) -> np.ndarray:
    """sum_p w_p sum_l left_pl right_pl' over the levels l of one term (q x q).

    ``left`` and ``right`` are (q * levels, probes), level-major rows.
    """
    L = left.reshape(-1, q, left.shape[1])
    R = right.reshape(-1, q, right.shape[1])
    return np.einsum("lap,lbp,p->ab", L, R, weights)


class CoupledStructure:
    """The fixed sparse blocks of the design, built once per fit.

    The operator's products run on Zr'Z1 (in threaded row chunks, both ways) and Zr'Zr;
    the templates and the first term's per-level factors are applied around them as
    block-diagonal scalings, so nothing sparse is rebuilt when theta changes. For the
    block-Jacobi preconditioner and the conditional variances each term of the rest
    also keeps Zr'Z1 as blocks: C_lj, the q_k x q1 block of its level l and level j of
    the first term (one per pair that occurs together in a row).
    """

    def __init__(self, objective: ProfiledDeviance) -> None:
        c = objective.cross
        threads = _threads()
        self.ZrZ1 = ChunkedMatrix(c.ZrZ1, threads)
        self.Z1Zr = ChunkedMatrix(c.ZrZ1.T.tocsr(), threads)
        self.ZrZr = c.ZrZr.tocsr()
        q1 = c.q1
        self.pairs: list[sp.bsr_matrix] = []
        self.own: list[np.ndarray] = []
        for q, n, start in zip(
            objective.qs[1:], objective.levels[1:], rest_offsets(objective.qs, objective.levels),
            strict=True,
        ):  # fmt: skip
            rows = c.ZrZ1[start : start + q * n]
            self.pairs.append(sp.bsr_matrix(rows, blocksize=(q, q1)))
            self.own.append(diagonal_blocks(self.ZrZr, start, q, n))


def _pair_levels(pairs: sp.bsr_matrix) -> np.ndarray:
    """The level of the rest (block row) of every stored block."""
    return np.repeat(np.arange(pairs.shape[0] // pairs.blocksize[0]), np.diff(pairs.indptr))


def _small_products(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """A_p B_p for stacks of small matrices, by columns (einsum loops slowly here)."""
    out = np.zeros((A.shape[0], A.shape[1], B.shape[2]))
    for k in range(A.shape[2]):
        out += A[:, :, k, None] * B[:, k, None, :]
    return out


PAIR_CHUNK = 1_000_000  # level pairs per batch of small dense products (bounds memory)


def _coupling_blocks(pairs: sp.bsr_matrix, first: np.ndarray) -> np.ndarray:
    """sum_j C_lj F_j C_lj' per level l of the rest, for per-level (q1, q1) blocks F."""
    q, q1 = pairs.blocksize
    n = pairs.shape[0] // q
    out = np.zeros((n, q, q))
    levels = _pair_levels(pairs)
    for start in range(0, pairs.indices.size, PAIR_CHUNK):
        part = slice(start, start + PAIR_CHUNK)
        C, j = pairs.data[part], pairs.indices[part]
        if q == 1 and q1 == 1:
            out[:, 0, 0] += np.bincount(
                levels[part], weights=C[:, 0, 0] ** 2 * first[j, 0, 0], minlength=n
            )
            continue
        CF = _small_products(C, first[j])  # C_lj F_j
        for a in range(q):
            for b in range(a, q):
                weights = np.sum(CF[:, a, :] * C[:, b, :], axis=1)
                out[:, a, b] += np.bincount(levels[part], weights=weights, minlength=n)
                if b != a:
                    out[:, b, a] = out[:, a, b]
    return out


def _coupling_blocks_first(pairs: sp.bsr_matrix, rest: np.ndarray, levels1: int) -> np.ndarray:
    """sum_l C_lj' E_l C_lj per level j of the first term, for per-level blocks E."""
    q, q1 = pairs.blocksize
    out = np.zeros((levels1, q1, q1))
    levels = _pair_levels(pairs)
    for start in range(0, pairs.indices.size, PAIR_CHUNK):
        part = slice(start, start + PAIR_CHUNK)
        C, j = pairs.data[part], pairs.indices[part]
        EC = _small_products(rest[levels[part]], C)  # E_l C_lj
        for a in range(q1):
            for b in range(a, q1):
                weights = np.sum(C[:, :, a] * EC[:, :, b], axis=1)
                out[:, a, b] += np.bincount(j, weights=weights, minlength=levels1)
                if b != a:
                    out[:, b, a] = out[:, a, b]
    return out


class SchurOperator:
    """``S = RR + I - L21_R L21_R'`` applied to a block of vectors, never formed.

    With Lambda_r the rest's templates over their levels and M_j = T_1 L11_j^-T the
    first term's per-level factor, L21_R = Lambda_r' Zr'Z1 M and RR = Lambda_r' Zr'Zr
    Lambda_r. ``blocks`` are S's q x q diagonal blocks per level of each term of the
    rest (the block-Jacobi preconditioner), ``chol`` their Cholesky factors.
    """

    def __init__(
        self,
        structure: CoupledStructure,
        rest_templates: list[np.ndarray],
        rest_slices: list[slice],
        first: np.ndarray,
    ) -> None:
        self.structure = structure
        self.templates = rest_templates
        self.slices = rest_slices
        self.first = first  # (levels1, q1, q1): M_j
        projector = np.einsum("jab,jcb->jac", first, first)  # M_j M_j' = T1 A11_j^-1 T1'
        self.blocks = []
        for T, own, pairs in zip(rest_templates, structure.own, structure.pairs, strict=True):
            inner = own - _coupling_blocks(pairs, projector)
            self.blocks.append(np.eye(T.shape[0]) + np.einsum("ba,nbc,cd->nad", T, inner, T))
        self.chol = [np.linalg.cholesky(block) for block in self.blocks]
        self.inverse = [np.linalg.inv(block) for block in self.blocks]
        self.chol_inverse = [np.linalg.inv(chol) for chol in self.chol]

    @property
    def diagonal(self) -> np.ndarray:
        """The diagonal of S (of its blocks), level-major over the rest."""
        parts = [np.diagonal(block, axis1=1, axis2=2).ravel() for block in self.blocks]
        return np.concatenate([np.zeros(0), *parts])

    def _rest(self, V: np.ndarray, transpose: bool, blocks: list[np.ndarray]) -> np.ndarray:
        out = np.empty_like(V)
        for rows, block in zip(self.slices, blocks, strict=True):
            out[rows] = _blockwise(block, V[rows], transpose)
        return out

    def lambda_rest(self, V: np.ndarray, transpose: bool = False) -> np.ndarray:
        """Lambda_r V (or Lambda_r' V)."""
        return self._rest(V, transpose, self.templates)

    def precondition(self, R: np.ndarray) -> np.ndarray:
        """The block-Jacobi preconditioner: each level's block of S inverted."""
        return self._rest(R, False, self.inverse)

    def scaled(self, V: np.ndarray) -> np.ndarray:
        """C^-1 S C^-T V, with C C' the block diagonal of S: unit diagonal blocks."""
        inner = self(self._rest(V, True, self.chol_inverse))
        return self._rest(inner, False, self.chol_inverse)

    def logdet_blocks(self) -> float:
        """log|D|, D the block diagonal of S."""
        return float(sum(2.0 * np.sum(np.log(np.diagonal(c, axis1=1, axis2=2))) for c in self.chol))

    def first_coupling(self) -> np.ndarray:
        """The first term's diagonal blocks of L21_R' D^-1 L21_R, (levels1, q1, q1).

        L21_R's block (l, j) is T_k' C_lj M_j, so block j is M_j' (sum_l C_lj' T_k
        D_l^-1 T_k' C_lj) M_j.
        """
        levels1, q1 = self.first.shape[0], self.first.shape[1]
        coupled = np.zeros((levels1, q1, q1))
        for T, inverse, pairs in zip(
            self.templates, self.inverse, self.structure.pairs, strict=True
        ):
            rest = np.einsum("ab,nbc,dc->nad", T, inverse, T)  # T_k D_l^-1 T_k'
            coupled += _coupling_blocks_first(pairs, rest, levels1)
        return np.einsum("jba,jbc,jcd->jad", self.first, coupled, self.first)

    def B(self, V: np.ndarray) -> np.ndarray:
        """L21_R @ V (rows of the rest from columns of the first term)."""
        return self.lambda_rest(self.structure.ZrZ1 @ _blockwise(self.first, V), True)

    def BT(self, W: np.ndarray) -> np.ndarray:
        """L21_R' @ W."""
        return _blockwise(self.first, self.structure.Z1Zr @ self.lambda_rest(W), True)

    def __call__(self, V: np.ndarray) -> np.ndarray:
        own = self.lambda_rest(self.structure.ZrZr @ self.lambda_rest(V), True)
        return own + V - self.B(self.BT(V))


def block_cg(
    operator: SchurOperator,
    rhs: np.ndarray,
    start: np.ndarray | None,
    tolerance: float = CG_TOLERANCE,
    max_iterations: int = 5_000,
) -> tuple[np.ndarray, int]:
    """Preconditioned conjugate gradients, one independent recursion per column.

    The preconditioner is the operator's ``precondition`` (block Jacobi), or its
    ``diagonal`` inverted. The columns still running share each product with S (a
    sparse matrix times a dense block costs little more than times one vector).
    Returns the solutions and the number of products.
    """
    X = np.zeros_like(rhs) if start is None else start.copy()
    if rhs.shape[0] == 0:
        return X, 0
    precondition = getattr(operator, "precondition", None)
    if precondition is None:
        inverse_diagonal = 1.0 / operator.diagonal

        def precondition(R: np.ndarray) -> np.ndarray:
            return R * inverse_diagonal[:, None]

    R = rhs - operator(X)
    Z = precondition(R)
    P = Z.copy()
    rz = np.einsum("ij,ij->j", R, Z)
    limit = tolerance * np.maximum(np.linalg.norm(rhs, axis=0), np.finfo(float).tiny)
    active = np.flatnonzero(np.linalg.norm(R, axis=0) > limit)
    products = 0
    while active.size and products < max_iterations:
        SP = operator(P[:, active])
        products += 1
        curvature = np.einsum("ij,ij->j", P[:, active], SP)
        alpha = rz[active] / curvature
        X[:, active] += alpha * P[:, active]
        R[:, active] -= alpha * SP
        Z_active = precondition(R[:, active])
        rz_new = np.einsum("ij,ij->j", R[:, active], Z_active)
        P[:, active] = Z_active + (rz_new / rz[active]) * P[:, active]
        rz[active] = rz_new
        active = active[np.linalg.norm(R[:, active], axis=0) > limit[active]]
    if active.size:
        raise np.linalg.LinAlgError(
            f"conjugate gradients did not reach a relative residual of {tolerance:g} in "
            f"{max_iterations} steps"
        )
    return X, products


def require_intercepts(qs: list[int]) -> None:
    """Refuse random slopes where the iterative fit takes random intercepts only
    (penalised quasi-likelihood, whose Laplace value reads scalar first-term blocks)."""
    if any(q != 1 for q in qs):
        raise ValueError(
            "solver='iterative' takes random intercepts only, (1 | g) terms; this "
            "model has a term with random slopes: use solver='exact' or 'sparse'"
        )


def _theta_of(templates: list[np.ndarray]) -> np.ndarray:
    """theta from lower-triangular templates, each column by column (lme4's order)."""
    parts = []
    for T in templates:
        rows, columns = np.tril_indices(T.shape[0])
        order = np.lexsort((rows, columns))
        parts.append(T[rows[order], columns[order]])
    return np.concatenate(parts)


def _coordinates(T: np.ndarray) -> np.ndarray:
    """Log-Cholesky coordinates of a template: log of the diagonal, then the rest."""
    rows, columns = np.tril_indices(T.shape[0], -1)
    return np.concatenate([np.log(np.diag(T)), T[rows, columns]])


def _template_at(x: np.ndarray, q: int) -> np.ndarray:
    T = np.diag(np.exp(x[:q]))
    rows, columns = np.tril_indices(q, -1)
    T[rows, columns] = x[q:]
    return T


def _symmetric_power(M: np.ndarray, power: float) -> np.ndarray:
    values, vectors = np.linalg.eigh(0.5 * (M + M.T))
    values = np.maximum(values, 1e-12 * max(values.max(initial=0.0), 1e-300))
    return (vectors * values**power) @ vectors.T


def _fixed_point(T: np.ndarray, squares: np.ndarray, free: np.ndarray) -> np.ndarray:
    """The template the effective-degrees-of-freedom map takes ``T`` to.

    At the optimum sum_j u_j u_j' / sigma^2 = n I - U in the spherical coordinates of
    the term (U the sum of its conditional covariance blocks, in sigma^2 units, plus
    REML's fixed-effects share): with F = n I - U and G = F^-1/2 (sum u u' / sigma^2)
    F^-1/2, Sigma = T G T' is the next covariance (G = I at the fixed point); for a
    scalar term theta^2 (|u|^2 / sigma^2) / (n - t), the scalar rule.
    """
    root = _symmetric_power(free, -0.5)
    G = root @ squares @ root
    sigma = T @ G @ T.T
    values = np.linalg.eigvalsh(0.5 * (sigma + sigma.T))
    jitter = max(1e-14 * values.max(initial=0.0), 1e-300)
    return np.linalg.cholesky(0.5 * (sigma + sigma.T) + jitter * np.eye(T.shape[0]))


@dataclass
class IterativeState:
    """Everything the iterative solver computes at one theta."""

    theta: np.ndarray
    elimination: Elimination
    operator: SchurOperator
    solutions: np.ndarray  # S^-1 [S_RX, S_Ry, probes]
    L: np.ndarray  # Cholesky factor of the (p + 1) x (p + 1) Schur complement of S
    beta: np.ndarray
    u: list[np.ndarray]  # spherical modes per term, flat (level-major)
    sigma2: float
    pwrss: float
    traces: list[np.ndarray]  # per term, the q x q sum of U_j (+ REML's share)
    products: int


@dataclass
class IterativeDeviance:
    """The profiled criterion's pieces for random-effects terms of any size, by iteration.

    Parameters
    ----------
    objective : ProfiledDeviance
        The exact objective, whose cross-products are used.
    n_probes : int
        Rademacher probes for the trace and log-determinant estimates.
    seed : int
        Seed of the probes (the fit is deterministic).
    """

    objective: ProfiledDeviance
    n_probes: int = PROBES
    seed: int = 0
    products: int = 0
    warm: np.ndarray | None = field(default=None, repr=False)  # last solutions, to start CG

    def __post_init__(self) -> None:
        obj = self.objective
        sizes = [q * n for q, n in zip(obj.qs[1:], obj.levels[1:], strict=True)]
        bounds = np.cumsum([0, *sizes])
        self.rest_slices = [
            slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        self.probes, self.weights = self._probes()
        self.structure = CoupledStructure(obj)

    def _probes(self) -> tuple[np.ndarray, np.ndarray]:
        """Probe vectors over the rest and their weights: sum_j w_j z_j' A z_j is tr(A).

        A term with at most ``EXACT_TRACE_LEVELS`` levels is probed by its unit vectors
        (weight 1: its traces are exact, which matters most for a variance component
        near zero, where n_k - t_k is small); the others share ``n_probes`` Rademacher
        vectors that are zero on the small terms (weight 1 / n_probes: unbiased, and
        for a q x q block E[(M z)_l z_l'] = M_ll).
        """
        obj = self.objective
        n_rest = obj.n_rest
        small = [
            np.arange(rows.start, rows.stop)
            for rows, n in zip(self.rest_slices, obj.levels[1:], strict=True)
            if n <= EXACT_TRACE_LEVELS
        ]
        unit_rows = np.concatenate([np.zeros(0, int), *small])
        big = np.setdiff1d(np.arange(n_rest), unit_rows)
        units = np.zeros((n_rest, unit_rows.size))
        units[unit_rows, np.arange(unit_rows.size)] = 1.0
        m = self.n_probes if big.size else 0
        rademacher = np.zeros((n_rest, m))
        rng = np.random.default_rng(self.seed)
        rademacher[big] = rng.choice([-1.0, 1.0], size=(big.size, m))
        weights = np.concatenate([np.ones(unit_rows.size), np.full(m, 1.0 / max(m, 1))])
        return np.hstack([units, rademacher]), weights

    def eliminate(self, theta: np.ndarray) -> tuple[Elimination, np.ndarray, np.ndarray]:
        """The first term eliminated at ``theta`` without its sparse blocks.

        Returns the elimination (``L21_R`` and ``RR`` left empty: the operator applies
        them), the first term's factors M_j = T_1 L11_j^-T and L11_j^-1, per level.
        """
        obj, c = self.objective, self.objective.cross
        templates = obj.templates(np.asarray(theta, dtype=float))
        T1 = templates[0]
        L11 = np.linalg.cholesky(np.einsum("ki,jkl,lm->jim", T1, c.G1, T1) + np.eye(c.q1))
        if c.q1 == 1:
            L11_inv = 1.0 / L11
        else:
            L11_inv = np.linalg.inv(L11)
        first = np.einsum("ik,jlk->jil", T1, L11_inv)
        L21_X = _blockwise(first, c.Z1X, transpose=True).T
        L21_y = _blockwise(first, c.Z1y[:, None], transpose=True)[:, 0]
        n_rest = obj.n_rest
        RX = np.empty((n_rest, c.p))
        Ry = np.empty(n_rest)
        for rows, T in zip(self.rest_slices, templates[1:], strict=True):
            RX[rows] = _blockwise(T, c.ZrX[rows], transpose=True)
            Ry[rows] = _blockwise(T, c.Zry[rows, None], transpose=True)[:, 0]
        elimination = Elimination(
            templates, L11, sp.csr_matrix((n_rest, L21_y.size)), L21_X, L21_y,
            sp.csr_matrix((n_rest, n_rest)), RX, Ry,
        )  # fmt: skip
        return elimination, first, L11_inv

    def evaluate(self, theta: np.ndarray) -> IterativeState:
        """Solve at ``theta``: fixed effects, modes, sigma and the trace estimates."""
        obj, c = self.objective, self.objective.cross
        p, n_rest, q1 = c.p, obj.n_rest, c.q1
        e, first, L11_inv = self.eliminate(theta)
        operator = SchurOperator(self.structure, e.templates[1:], self.rest_slices, first)
        S_RX = e.RX - operator.B(e.L21_X.T)
        S_Ry = e.Ry - operator.B(e.L21_y)
        rhs = np.column_stack([S_RX, S_Ry, self.probes]) if n_rest else np.zeros((0, p + 1))
        solutions, products = block_cg(operator, rhs, self.warm)
        self.warm = solutions
        self.products += products
        W_R, x_y, x_probes = solutions[:, :p], solutions[:, p], solutions[:, p + 1 :]
        L, beta, pwrss = fixed_effects_block(c, e, S_RX, S_Ry, solutions[:, : p + 1])
        L_XX = L[:p, :p]
        u_rest = x_y - W_R @ beta
        # u_1 = L11^-T (L21_y - L21_X' beta - L21_R' u_rest), level by level.
        u_first = _blockwise(
            L11_inv, (e.L21_y - e.L21_X.T @ beta - operator.BT(u_rest))[:, None], True
        )[:, 0]
        W_first = _blockwise(L11_inv, e.L21_X.T - operator.BT(W_R), True)
        dof = c.n - p if obj.reml else c.n
        # U_k: the first term's block-diagonal part exactly, the coupling estimated.
        # The block-Jacobi part D^-1 of S^-1 is taken exactly (a control variate) and
        # only S^-1 - D^-1 is estimated by the probes, whose off-diagonal products
        # z_l z_l' are then no longer multiplied by the large D_l^-1.
        inner = np.eye(q1) + operator.first_coupling()
        traces = [np.einsum("jki,jkl,jlm->im", L11_inv, inner, L11_inv)]
        if n_rest:
            residual = x_probes - operator.precondition(self.probes)
            a = _blockwise(L11_inv, operator.BT(residual), True)
            b = _blockwise(L11_inv, operator.BT(self.probes), True)
            traces[0] = traces[0] + _block_sums(a, b, q1, self.weights)
            for rows, q, inverse in zip(
                self.rest_slices, obj.qs[1:], operator.inverse, strict=True
            ):
                estimate = _block_sums(residual[rows], self.probes[rows], q, self.weights)
                traces.append(inverse.sum(axis=0) + estimate)
        traces = [0.5 * (t + t.T) for t in traces]
        if obj.reml and p:
            # C_k = sum_l V_l V_l', V = W_k L_XX^-T: the fixed effects' share of each
            # term's conditional covariance.
            for k, W_k in enumerate([W_first, *(W_R[rows] for rows in self.rest_slices)]):
                V = scipy.linalg.solve_triangular(L_XX, W_k.T, lower=True).T
                traces[k] = traces[k] + _block_sums(V, V, obj.qs[k], np.ones(p))
        u = [u_first, *(u_rest[rows] for rows in self.rest_slices)]
        return IterativeState(
            theta=np.asarray(theta, dtype=float),
            elimination=e,
            operator=operator,
            solutions=solutions,
            L=L,
            beta=beta,
            u=u,
            sigma2=pwrss / dof,
            pwrss=pwrss,
            traces=traces,
            products=products,
        )

    def fit(
        self,
        start: np.ndarray,
        tolerance: float = THETA_TOLERANCE,
        sigma2: float | None = None,
    ) -> tuple[IterativeState, dict]:
        """Iterate the effective-degrees-of-freedom fixed point from ``start``.

        Each template moves in log-Cholesky coordinates (log of its diagonal, its
        entries below), with Anderson acceleration (depth 3) over all of them; the step
        is zero exactly where the criterion is stationary. A scalar term whose theta
        falls below 1e-6 is held at 0 (a singular fit, as the exact solver reports it);
        a vector term's diagonal is kept above 1e-6 of its start. ``sigma2`` fixes the
        residual variance (1 for the working model of penalised quasi-likelihood)
        instead of profiling it.
        """
        obj = self.objective
        qs, levels = obj.qs, obj.levels
        templates = obj.templates(np.asarray(start, dtype=float))
        for T in templates:
            floor = 1e-2 if T.shape[0] == 1 else VECTOR_START_SHARE * max(np.max(np.diag(T)), 0.1)
            np.fill_diagonal(T, np.maximum(np.diag(T), floor))
        floors = [1e-6 * np.diag(T) for T in templates]
        history_x: list[np.ndarray] = []
        history_g: list[np.ndarray] = []
        converged = False
        stationarity = np.inf
        for evaluations in range(1, MAX_ITERATIONS + 1):  # noqa: B007 (reported below)
            state = self.evaluate(_theta_of(templates))
            scale = state.sigma2 if sigma2 is None else sigma2
            active = [q > 1 or T[0, 0] > 0 for T, q in zip(templates, qs, strict=True)]
            x_parts, step_parts, stationarity = [], [], 0.0
            for k, (T, q, n) in enumerate(zip(templates, qs, levels, strict=True)):
                if not active[k]:
                    continue
                u = state.u[k].reshape(n, q)
                squares = u.T @ u / scale
                free = n * np.eye(q) - state.traces[k]
                free = _symmetric_power(free, 1.0)  # positive definite (estimated U)
                mapped = _fixed_point(T, squares, free)
                x = _coordinates(T)
                x_parts.append(x)
                step_parts.append(_coordinates(mapped) - x)
                root = _symmetric_power(free, -0.5)
                stationarity = max(
                    stationarity, float(np.max(np.abs(root @ squares @ root - np.eye(q))))
                )
            x = np.concatenate([np.zeros(0), *x_parts])
            step = np.concatenate([np.zeros(0), *step_parts])
            if np.max(np.abs(step), initial=0.0) < tolerance:
                converged = True
                break
            mapped = x + step
            if history_g and np.linalg.norm(step) > 2.0 * np.linalg.norm(history_g[-1]):
                # The last accelerated step made the residual grow: restart from the
                # plain map here (Anderson's extrapolation is not monotone).
                history_x, history_g = [], []
            history_x.append(x)
            history_g.append(step)
            history_x, history_g = history_x[-ANDERSON_DEPTH:], history_g[-ANDERSON_DEPTH:]
            if len(history_g) > 1:
                dG = np.diff(np.array(history_g), axis=0).T
                dX = np.diff(np.array(history_x), axis=0).T
                gamma = np.linalg.lstsq(dG, step, rcond=None)[0]
                mapped = mapped - (dX + dG) @ gamma
            mapped = np.clip(mapped, x - 2.0, x + 2.0)
            new, position, reset = [], 0, False
            for k, (T, q) in enumerate(zip(templates, qs, strict=True)):
                if not active[k]:
                    new.append(T)
                    continue
                size = q * (q + 1) // 2
                candidate = _template_at(mapped[position : position + size], q)
                position += size
                if q == 1 and candidate[0, 0] < 1e-6:
                    candidate[0, 0], reset = 0.0, True
                elif q > 1:
                    np.fill_diagonal(candidate, np.maximum(np.diag(candidate), floors[k]))
                new.append(candidate)
            if reset:
                history_x, history_g = [], []
            templates = new
        info = {
            "optimizer": "fixed point (Anderson)",
            "evaluations": evaluations,
            "converged": converged,
            "stationarity": stationarity,
            "cg_products": self.products,
            "probes": int(self.probes.shape[1]),
        }
        return state, info

    def logdet_rest(self, state: IterativeState) -> float:
        """log|S| by stochastic Lanczos quadrature on the block-Jacobi-scaled S."""
        if not self.objective.n_rest:
            return 0.0
        operator = state.operator
        quadrature = lanczos_log_quadrature(operator.scaled, self.probes)
        norms = np.einsum("ij,ij->j", self.probes, self.probes)
        return operator.logdet_blocks() + float(self.weights @ (norms * quadrature))

    def logdet(self, state: IterativeState) -> float:
        """log|Lambda'Z'Z Lambda + I|: the first term's blocks exactly, log|S| estimated."""
        L11 = state.elimination.L11
        first = 2.0 * np.sum(np.log(np.diagonal(L11, axis1=1, axis2=2)))
        return float(first + self.logdet_rest(state))

    def criterion(self, state: IterativeState) -> float:
        """The REML criterion or ML deviance at the state's theta (log|S| estimated)."""
        p = self.objective.cross.p
        logdet_X = 2.0 * np.sum(np.log(np.diag(state.L)[:p]))
        return self.objective.value(self.logdet(state), logdet_X, state.pwrss)

    def solution(self, state: IterativeState, sigma: float | None = None) -> Solution:
        """Fixed effects, sigma, conditional modes and (approximate) variances."""
        obj, c = self.objective, self.objective.cross
        p, qs, levels = c.p, obj.qs, obj.levels
        sigma = float(np.sqrt(state.sigma2)) if sigma is None else sigma
        templates = state.elimination.templates
        b = [
            u.reshape(n, q) @ T.T for u, n, q, T in zip(state.u, levels, qs, templates, strict=True)
        ]
        L_XX_inv = scipy.linalg.solve_triangular(state.L[:p, :p], np.eye(p), lower=True)
        beta_cov = sigma**2 * (L_XX_inv.T @ L_XX_inv)
        operator = state.operator
        L11 = state.elimination.L11
        L11_inv = np.linalg.inv(L11)
        # (A^-1)_jj = L11_j^-T (I + [L21_R' S^-1 L21_R]_jj) L11_j^-1, with S^-1 taken
        # block diagonal: the coupling between levels of the rest is left out.
        inner = np.eye(c.q1) + operator.first_coupling()
        variances = [np.einsum("jki,jkl,jlm->jim", L11_inv, inner, L11_inv), *operator.inverse]
        b_cov = [
            sigma**2 * np.einsum("ik,jkl,ml->jim", T, v, T)
            for T, v in zip(templates, variances, strict=True)
        ]
        return Solution(beta=state.beta, sigma=sigma, b=b, beta_cov=beta_cov, b_cov=b_cov)


def lanczos_log_quadrature(
    operator, probes: np.ndarray, max_steps: int = LANCZOS_STEPS, tolerance: float = 1e-12
) -> np.ndarray:
    """Per probe z, the Gauss quadrature estimate of z'(log M - (M - I))z / |z|^2.

    Lanczos runs on every probe at once (a block of independent recursions) until the
    quadrature changes by less than ``tolerance``. Subtracting the first-order term,
    whose trace is zero for a unit-diagonal M, removes most of the probe variance.
    """
    n, m = probes.shape
    Q = probes / np.linalg.norm(probes, axis=0)
    previous = np.zeros_like(Q)
    alphas, betas = [], []
    beta = np.zeros(m)
    estimate = np.zeros(m)
    # A probe whose Krylov space is exhausted (beta = 0: an invariant subspace, such as
    # a level whose slope column is zero) has its exact value already; it is frozen.
    running = np.ones(m, dtype=bool)
    for step in range(min(max_steps, n)):
        MQ = operator(Q)
        alpha = np.einsum("ij,ij->j", Q, MQ)
        alphas.append(alpha)
        R = MQ - alpha * Q - beta * previous
        beta_next = np.linalg.norm(R, axis=0)
        new = estimate.copy()
        for j in np.flatnonzero(running):
            main = np.array([a[j] for a in alphas])
            off = np.array([b[j] for b in betas])
            values, vectors = scipy.linalg.eigh_tridiagonal(main, off)
            new[j] = np.sum(vectors[0] ** 2 * np.log(values)) - (alphas[0][j] - 1.0)
        if step and np.max(np.abs(new - estimate)) < tolerance:
            return new
        estimate = new
        running &= beta_next >= 1e-12
        if not running.any():
            return estimate
        betas.append(beta_next)
        previous, Q = Q, R / np.where(beta_next > 0, beta_next, 1.0)
        beta = beta_next
    return estimate
