"""The iterative solver: REML or ML for large crossed designs without a factorisation.

The exact solver factors the Schur complement S of the terms after the first (largest)
one densely; for half a million users crossed with fifty thousand items that is a
50k x 50k matrix (20 GB, and minutes per factorisation), and a sparse factorisation
fills in to the same size because every user links the items they touched. This
solver never forms S. It keeps the exact elimination of the first term (a batch of
small blocks) and applies S = RR + I - L21_R L21_R' to blocks of vectors, which costs
two passes over the nonzeros of Z_rest'Z_1 (at most one per row of data):

- the fixed effects, the penalised residual sum of squares and the spherical modes
  come from preconditioned conjugate gradients (Jacobi preconditioner) on S with the
  p + 1 right-hand sides of [X, y], to a relative residual of 1e-10;
- theta solves the score equations of the profiled criterion. With u_k the spherical
  modes of term k, t_k the trace of term k's block of (Lambda'Z'Z Lambda + I)^-1 and
  c_k = tr(R_X^-1 W_k'W_k) (W = A^-1 Lambda'Z'X, REML only), the derivative of the
  criterion in theta_k is (2 / theta_k) (n_k - t_k - c_k - |u_k|^2 / sigma^2), so at
  the optimum theta_k^2 |u_k|^2 / sigma^2 = theta_k^2 (n_k - t_k - c_k): the
  effective-degrees-of-freedom fixed point (Harville 1977; MacKay 1992), iterated on
  log theta with Anderson acceleration;
- t_k is the first term's exact part sum(1 / diag(A11)) plus a Hutchinson estimate
  with fixed Rademacher probes, solved with the data in the same block. Rademacher
  probes are exact on the diagonal, so only the coupling between levels is estimated;
  terms with few levels (regions, say) are probed by their unit vectors, exactly;
- the criterion's value (for ``objective_``) needs log|S|, estimated once at the end
  by stochastic Lanczos quadrature on the Jacobi-scaled S with the same probes and
  the control variate tr(D^-1/2 S D^-1/2 - I) = 0.

Conditional variances use the Jacobi approximation diag(S^-1) ~ 1 / diag(S) (the
coupling between factors is left out, so they are slightly too small); the fixed
effects' covariance is exact.
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
    fixed_effects_block,
)

PROBES = 32
EXACT_TRACE_LEVELS = 128  # terms with at most this many levels get exact traces
CG_TOLERANCE = 1e-10
THETA_TOLERANCE = 1e-7
MAX_ITERATIONS = 200
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


class CoupledStructure:
    """The fixed sparse blocks of the design, built once per fit.

    For scalar terms the first term's factor rows are L21_R = diag(lam) Zr'Z1
    diag(scale) and the rest's own block is diag(lam) Zr'Zr diag(lam), with lam the
    rest's thetas repeated over levels and scale = theta_1 / sqrt(diag(A11)); only
    those scalings change with theta, so the products run on these fixed matrices.
    """

    def __init__(self, objective: ProfiledDeviance) -> None:
        c = objective.cross
        threads = _threads()
        self.ZrZ1 = ChunkedMatrix(c.ZrZ1, threads)
        self.Z1Zr = ChunkedMatrix(c.ZrZ1.T.tocsr(), threads)
        self.ZrZr = c.ZrZr.tocsr()
        squares = c.ZrZ1.multiply(c.ZrZ1).tocsr()
        self.squares = squares
        self.squares_T = squares.T.tocsr()
        self.own = self.ZrZr.diagonal()


class SchurOperator:
    """``S = RR + I - L21_R L21_R'`` applied to a block of vectors, never formed."""

    def __init__(self, structure: CoupledStructure, lam: np.ndarray, scale: np.ndarray) -> None:
        self.structure = structure
        self.lam = lam
        self.scale = scale
        self.diagonal = 1.0 + lam**2 * (structure.own - structure.squares @ scale**2)

    def B(self, V: np.ndarray) -> np.ndarray:
        """L21_R @ V (rows of the rest from columns of the first term)."""
        return _scaled(self.lam, self.structure.ZrZ1 @ _scaled(self.scale, V))

    def BT(self, W: np.ndarray) -> np.ndarray:
        """L21_R' @ W."""
        return _scaled(self.scale, self.structure.Z1Zr @ _scaled(self.lam, W))

    def __call__(self, V: np.ndarray) -> np.ndarray:
        own = _scaled(self.lam, self.structure.ZrZr @ _scaled(self.lam, V))
        return own + V - self.B(self.BT(V))


def _scaled(weights: np.ndarray, V: np.ndarray) -> np.ndarray:
    return weights[:, None] * V if V.ndim == 2 else weights * V


def block_cg(
    operator: SchurOperator,
    rhs: np.ndarray,
    start: np.ndarray | None,
    tolerance: float = CG_TOLERANCE,
    max_iterations: int = 5_000,
) -> tuple[np.ndarray, int]:
    """Jacobi-preconditioned conjugate gradients, one independent recursion per column.

    The columns still running share each product with S (a sparse matrix times a
    dense block costs little more than times one vector). Returns the solutions and
    the number of products.
    """
    X = np.zeros_like(rhs) if start is None else start.copy()
    if rhs.shape[0] == 0:
        return X, 0
    inverse_diagonal = 1.0 / operator.diagonal
    R = rhs - operator(X)
    Z = R * inverse_diagonal[:, None]
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
        Z_active = R[:, active] * inverse_diagonal[:, None]
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
    """Refuse random slopes, which the iterative solver does not take."""
    if any(q != 1 for q in qs):
        raise ValueError(
            "solver='iterative' takes random intercepts only, (1 | g) terms; this "
            "model has a term with random slopes: use solver='exact' or 'sparse'"
        )


@dataclass
class IterativeState:
    """Everything the iterative solver computes at one theta."""

    theta: np.ndarray
    elimination: Elimination
    operator: SchurOperator
    solutions: np.ndarray  # S^-1 [S_RX, S_Ry, probes]
    L: np.ndarray  # Cholesky factor of the (p + 1) x (p + 1) Schur complement of S
    beta: np.ndarray
    u: list[np.ndarray]  # spherical modes per term
    sigma2: float
    pwrss: float
    traces: np.ndarray  # t_k + c_k per term (c_k for REML only)
    products: int


@dataclass
class IterativeDeviance:
    """The profiled criterion's pieces for scalar random-effects terms, by iteration.

    Parameters
    ----------
    objective : ProfiledDeviance
        The exact objective, whose cross-products and first-term elimination are used.
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
        require_intercepts(self.objective.qs)
        bounds = np.cumsum([0, *self.objective.levels[1:]])
        self.rest_slices = [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        self.probes, self.weights = self._probes()
        self.structure = CoupledStructure(self.objective)

    def _probes(self) -> tuple[np.ndarray, np.ndarray]:
        """Probe vectors over the rest and their weights: sum_j w_j z_j' A z_j is tr(A).

        A term with at most ``EXACT_TRACE_LEVELS`` levels is probed by its unit vectors
        (weight 1: its traces are exact, which matters most for a variance component
        near zero, where n_k - t_k is small); the others share ``n_probes`` Rademacher
        vectors that are zero on the small terms (weight 1 / n_probes: unbiased).
        """
        n_rest = self.objective.n_rest
        small = [rows for rows in self.rest_slices if rows.size <= EXACT_TRACE_LEVELS]
        big = np.setdiff1d(np.arange(n_rest), np.concatenate([np.zeros(0, int), *small]))
        unit_rows = np.concatenate([np.zeros(0, int), *small])
        units = np.zeros((n_rest, unit_rows.size))
        units[unit_rows, np.arange(unit_rows.size)] = 1.0
        m = self.n_probes if big.size else 0
        rademacher = np.zeros((n_rest, m))
        rng = np.random.default_rng(self.seed)
        rademacher[big] = rng.choice([-1.0, 1.0], size=(big.size, m))
        weights = np.concatenate([np.ones(unit_rows.size), np.full(m, 1.0 / max(m, 1))])
        return np.hstack([units, rademacher]), weights

    def evaluate(self, theta: np.ndarray) -> IterativeState:
        """Solve at ``theta``: fixed effects, modes, sigma and the trace estimates."""
        obj, c = self.objective, self.objective.cross
        p, n_rest = c.p, obj.n_rest
        e = obj.eliminate(theta, rest=False)
        d = e.L11[:, 0, 0]
        lam = np.repeat(np.asarray(theta, dtype=float)[1:], obj.levels[1:])
        operator = SchurOperator(self.structure, lam, theta[0] / d)
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
        u_first = (e.L21_y - e.L21_X.T @ beta - operator.BT(u_rest)) / d
        W_first = (e.L21_X.T - operator.BT(W_R)) / d[:, None]
        dof = c.n - p if obj.reml else c.n
        # t_k: the first term's block-diagonal part exactly, the coupling estimated.
        traces = np.empty(len(obj.qs))
        traces[0] = np.sum(1.0 / d**2)
        if n_rest:
            coupled = operator.B(operator.BT(self.probes) / (d**2)[:, None])
            traces[0] += self.weights @ np.einsum("ij,ij->j", x_probes, coupled)
            for k, rows in enumerate(self.rest_slices, start=1):
                quadratic = np.einsum("ij,ij->j", self.probes[rows], x_probes[rows])
                traces[k] = self.weights @ quadratic
        if obj.reml and p:
            # c_k = |W_k L_XX^-T|_F^2: the fixed effects' share of each term's variance.
            for k, W_k in enumerate([W_first, *(W_R[rows] for rows in self.rest_slices)]):
                V = scipy.linalg.solve_triangular(L_XX, W_k.T, lower=True)
                traces[k] += float(np.sum(V * V))
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

        Anderson acceleration (depth 3) on log theta; a term whose theta falls below
        1e-6 is held at 0 (a singular fit, as the exact solver reports it). ``sigma2``
        fixes the residual variance (1 for the working model of penalised
        quasi-likelihood) instead of profiling it.
        """
        levels = np.asarray(self.objective.levels, dtype=float)
        theta = np.maximum(np.asarray(start, dtype=float), 1e-2)
        history_x: list[np.ndarray] = []
        history_g: list[np.ndarray] = []
        converged = False
        for evaluations in range(1, MAX_ITERATIONS + 1):  # noqa: B007 (reported below)
            state = self.evaluate(theta)
            squares = np.array([float(u @ u) for u in state.u])
            free = np.maximum(levels - state.traces, 1e-12)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = squares / ((state.sigma2 if sigma2 is None else sigma2) * free)
            active = theta > 0
            x = np.log(theta[active])
            step = 0.5 * np.log(np.maximum(ratio[active], 1e-300))
            mapped = x + step
            if np.max(np.abs(step), initial=0.0) < tolerance:
                converged = True
                break
            history_x.append(x)
            history_g.append(step)
            history_x, history_g = history_x[-4:], history_g[-4:]
            if len(history_g) > 1:
                dG = np.diff(np.array(history_g), axis=0).T
                dX = np.diff(np.array(history_x), axis=0).T
                gamma = np.linalg.lstsq(dG, step, rcond=None)[0]
                mapped = mapped - (dX + dG) @ gamma
            new = theta.copy()
            new[active] = np.exp(np.clip(mapped, x - 2.0, x + 2.0))
            new[new < 1e-6] = 0.0
            if np.any((new == 0) != (theta == 0)):
                history_x, history_g = [], []
            theta = new
        info = {
            "optimizer": "fixed point (Anderson)",
            "evaluations": evaluations,
            "converged": converged,
            "cg_products": self.products,
            "probes": int(self.probes.shape[1]),
        }
        return state, info

    def logdet_rest(self, state: IterativeState) -> float:
        """log|S| by stochastic Lanczos quadrature on the Jacobi-scaled S."""
        n_rest = self.objective.n_rest
        if not n_rest:
            return 0.0
        operator = state.operator
        scale = 1.0 / np.sqrt(operator.diagonal)
        quadrature = lanczos_log_quadrature(
            lambda V: scale[:, None] * operator(scale[:, None] * V), self.probes
        )
        norms = np.einsum("ij,ij->j", self.probes, self.probes)
        return float(np.sum(np.log(operator.diagonal)) + self.weights @ (norms * quadrature))

    def criterion(self, state: IterativeState) -> float:
        """The REML criterion or ML deviance at the state's theta (log|S| estimated)."""
        p = self.objective.cross.p
        logdet = 2.0 * np.sum(np.log(state.elimination.L11[:, 0, 0])) + self.logdet_rest(state)
        logdet_X = 2.0 * np.sum(np.log(np.diag(state.L)[:p]))
        return self.objective.value(logdet, logdet_X, state.pwrss)

    def solution(self, state: IterativeState, sigma: float | None = None) -> Solution:
        """Fixed effects, sigma, conditional modes and (approximate) variances."""
        obj, c = self.objective, self.objective.cross
        p = c.p
        sigma = float(np.sqrt(state.sigma2)) if sigma is None else sigma
        theta = state.theta
        b = [(theta[k] * u)[:, None] for k, u in enumerate(state.u)]
        L_XX_inv = scipy.linalg.solve_triangular(state.L[:p, :p], np.eye(p), lower=True)
        beta_cov = sigma**2 * (L_XX_inv.T @ L_XX_inv)
        e, operator = state.elimination, state.operator
        d2 = e.L11[:, 0, 0] ** 2
        first = 1.0 / d2
        if obj.n_rest:
            # diag(L21_R' D^-1 L21_R) / diag(A11): the coupling to the rest, with the
            # rest's inverse taken as diagonal.
            weights = operator.lam**2 / operator.diagonal
            first = first + operator.scale**2 * (self.structure.squares_T @ weights) / d2
        variances = [first] + [1.0 / operator.diagonal[rows] for rows in self.rest_slices]
        b_cov = [(sigma**2 * theta[k] ** 2 * v)[:, None, None] for k, v in enumerate(variances)]
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
    for step in range(min(max_steps, n)):
        MQ = operator(Q)
        alpha = np.einsum("ij,ij->j", Q, MQ)
        alphas.append(alpha)
        R = MQ - alpha * Q - beta * previous
        beta_next = np.linalg.norm(R, axis=0)
        new = np.empty(m)
        for j in range(m):
            main = np.array([a[j] for a in alphas])
            off = np.array([b[j] for b in betas])
            values, vectors = scipy.linalg.eigh_tridiagonal(main, off)
            new[j] = np.sum(vectors[0] ** 2 * np.log(values)) - (alphas[0][j] - 1.0)
        if step and np.max(np.abs(new - estimate)) < tolerance:
            return new
        estimate = new
        if np.all(beta_next < 1e-12):
            return estimate
        betas.append(beta_next)
        previous, Q = Q, R / np.where(beta_next > 0, beta_next, 1.0)
        beta = beta_next
    return estimate
