"""Which solver fits a linear mixed model: exact, sparse or iterative, by time and memory.

The exact solver factors a dense block of the terms after the first (largest) one at
every evaluation of the criterion; its cost is the pairs of nonzeros that the first
term's levels share with the rest (the sparse product that fills the block) plus the
dense Cholesky factorisation. The sparse solver (``_sparse``) factors that block
sparsely; its fill is bounded by the squares of the groups of levels the design links
(``connected_groups``), small for nested designs and the whole block for crossed ones.
The iterative solver (``_iterative``) costs products of the same nonzeros with blocks
of vectors. ``solver="auto"`` takes the exact solver while it fits in memory and is
estimated to take less than ``EXACT_SECONDS`` over a fit, since its answer is lme4's to
optimiser precision; beyond that the sparse solver where its bound makes it cheaper
(same answer), then the iterative solver (for MixedLM with random slopes too; MixedGLM's
penalised quasi-likelihood takes random intercepts only).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

import estimators.mixed._deviance as deviance
from estimators.mixed._iterative import PROBES, require_intercepts
from estimators.mixed._sparse import connected_groups

SOLVERS = ("auto", "exact", "sparse", "iterative")
EXACT_SECONDS = 4.0
# Seconds per unit of work on the reference machine (2 cores; make bench-scale): a pair
# of nonzeros in the sparse product, a flop of the dense Cholesky (OpenBLAS), a nonzero
# times a column in the iterative solver's block products; evaluations per fit, typical.
# At 3M rows x 10k items they predict 212 s for the exact fit, measured 232 s.
PAIR_SECONDS = 5e-9
FLOP_SECONDS = 1.5e-11
BLOCK_SECONDS = 6e-10
SPARSE_FLOP_SECONDS = 2e-9  # SuperLU's supernodes are small: far from dense BLAS speed
# BOBYQA's evaluations grow with the elements of theta: 20 + 10 per element (40 for two
# random intercepts; 51 and 56 measured for (1 + treat | user) + (1 | item), 4 elements,
# at 200k and 1M rows).
EXACT_EVALUATIONS_BASE = 20
EXACT_EVALUATIONS_PER_THETA = 10
ITERATIVE_PRODUCTS = 40
MEMORY_SHARE = 0.8  # of the available memory a fit may plan to use
# The estimators whose iterative fit takes random slopes. Penalised quasi-likelihood
# (MixedGLM) reads the first term's factor as scalar blocks for its Laplace value.
ITERATIVE_SLOPES = ("MixedLM",)


@dataclass(frozen=True)
class SolverChoice:
    """The solver a fit uses, and why."""

    solver: str
    reason: str


@dataclass(frozen=True)
class Costs:
    """Estimated seconds and bytes of each solver on one design."""

    exact_seconds: float
    exact_bytes: int
    iterative_seconds: float
    iterative_bytes: int
    dense: int
    pairs: float  # pairs of nonzeros the first term's levels share with the rest
    sparse_seconds: float = np.inf
    sparse_bytes: float = np.inf
    largest_group: int = 0


def estimate_costs(objective: deviance.ProfiledDeviance) -> Costs:
    """Time and peak memory of each solver on ``objective``'s design."""
    c = objective.cross
    dense = deviance.dense_size(objective.qs, objective.levels, c.p)
    shared = np.bincount(c.ZrZ1.indices, minlength=c.ZrZ1.shape[1]).astype(float)
    pairs = float(np.sum(shared**2))
    n_theta = sum(q * (q + 1) // 2 for q in objective.qs)
    evaluation = pairs * PAIR_SECONDS + dense**3 / 3 * FLOP_SECONDS
    exact_seconds = exact_evaluations(objective) * evaluation + solution_seconds(objective)
    columns = PROBES + c.p + 1
    nnz = c.ZrZ1.nnz
    products = ITERATIVE_PRODUCTS * n_theta / 2  # 40 for two intercepts; more per element
    # Vector-valued terms apply q x q blocks per level on top of the products: q^2 times
    # the scalar cost (measured with (1 + treat | user) + (1 | item): 15.2 s at 1M rows
    # and 212 s at 10M, against 4.5 s and 47 s estimated without the factor).
    iterative_seconds = products * columns * 2 * nnz * BLOCK_SECONDS * max(objective.qs) ** 2
    # Five copies of the sparse blocks (threaded chunks of Zr'Z1 and its transpose, their
    # squares both ways, the elimination's), seven blocks of vectors over the rest
    # (right-hand sides, solutions, residuals, directions, ...) and two over the first.
    iterative_bytes = 5 * 12 * (nnz + c.ZrZr.nnz) + 8 * columns * (
        7 * objective.n_rest + 2 * objective.levels[0]
    )
    return Costs(exact_seconds, 3 * 8 * dense**2, iterative_seconds, iterative_bytes, dense, pairs)


def exact_evaluations(objective: deviance.ProfiledDeviance) -> int:
    """BOBYQA's typical evaluations over an exact fit, by the elements of theta."""
    n_theta = sum(q * (q + 1) // 2 for q in objective.qs)
    return EXACT_EVALUATIONS_BASE + EXACT_EVALUATIONS_PER_THETA * n_theta


def solution_seconds(objective: deviance.ProfiledDeviance) -> float:
    """The exact solver's final solution (``_deviance.solve``) beyond one evaluation.

    The conditional variances take the inverse of the rest's factor (LAPACK's potri,
    2/3 n_rest^3 flops) and, for the first term's levels, the pairs of nonzeros each
    level shares with the rest, q1^2 products a pair of rows (1.2 s at 1M rows x
    50k users x 5k items, random intercepts, where one evaluation takes 1 s).
    """
    c, q1 = objective.cross, objective.qs[0]
    if not objective.n_rest:
        return 0.0
    shared = np.bincount(c.ZrZ1.indices, minlength=c.ZrZ1.shape[1]).astype(float)
    pairs = float(np.sum(shared**2))
    return 2.0 * objective.n_rest**3 / 3 * FLOP_SECONDS + pairs * q1 * PAIR_SECONDS


def with_sparse_costs(objective: deviance.ProfiledDeviance, costs: Costs) -> Costs:
    """``costs`` with the sparse solver's, bounded by the linked groups of levels."""
    groups = connected_groups(objective)
    if groups is None or not groups.size:
        return costs
    fill = float(np.sum(groups.astype(float) ** 2))
    seconds = exact_evaluations(objective) * (
        costs.pairs * PAIR_SECONDS
        + float(np.sum(groups.astype(float) ** 3)) / 3 * SPARSE_FLOP_SECONDS
    )
    return replace(
        costs,
        sparse_seconds=seconds,
        sparse_bytes=3 * 12 * (fill + costs.pairs),
        largest_group=int(groups.max()),
    )


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GB"


def choose_solver(
    requested: str,
    objective: deviance.ProfiledDeviance,
    names: list[str],
    owner: str,
    *,
    exact_seconds: float | None = None,
    exact_work: float = 1.0,
    solvers: tuple[str, ...] = SOLVERS,
) -> SolverChoice:
    """The solver for this design, refusing before any work one that cannot fit.

    Parameters
    ----------
    requested : {"auto", "exact", "iterative"}
        The estimator's ``solver`` parameter.
    objective : ProfiledDeviance
        The exact objective (cross-products, terms largest first).
    names : list of str
        The terms' grouping factors, in the objective's order.
    owner : str
        The estimator's name, for messages.
    exact_seconds : float, optional
        The longest estimated exact fit ``"auto"`` keeps (``EXACT_SECONDS`` by default).
    exact_work : float
        The exact fit's cost in linear-model fits (more for a generalized model).
    solvers : tuple of str
        The solvers the estimator has.

    Raises
    ------
    ValueError
        An unknown solver, or the iterative one on a model with random slopes.
    MemoryError
        When the solver would not fit in memory, saying what it needs, what is
        available, and which solver would fit.
    """
    if requested not in solvers:
        raise ValueError(f"solver: expected one of {list(solvers)}, got {requested!r}")
    costs = estimate_costs(objective)
    exact_estimate = costs.exact_seconds * exact_work
    limit = EXACT_SECONDS if exact_seconds is None else exact_seconds
    available = deviance.available_memory_bytes()
    budget = np.inf if available is None else MEMORY_SHARE * available
    intercepts_only = all(q == 1 for q in objective.qs)
    iterative_takes = owner in ITERATIVE_SLOPES or intercepts_only
    exact_fits = costs.exact_bytes <= budget
    iterative_fits = costs.iterative_bytes <= budget
    block = f"{costs.dense:,} x {costs.dense:,}"

    def refuse_exact() -> MemoryError:
        if iterative_takes and iterative_fits:
            instead = (
                f"solver='iterative' needs about {_gb(costs.iterative_bytes)} for this "
                "design; use it (solver='auto' does)."
            )
        elif iterative_takes:
            instead = (
                f"solver='iterative' would need about {_gb(costs.iterative_bytes)}, which "
                "does not fit either; fixed_effects and ridge_onehot solve such designs "
                "sparsely."
            )
        else:
            instead = (
                "The iterative solver takes random intercepts only, so the crossed factors "
                "after the largest must have fewer levels (fewer items, say), or the slopes "
                "be dropped; fixed_effects and ridge_onehot solve such designs sparsely."
            )
        return deviance.exact_memory_error(
            owner, names, objective.levels, costs.dense, costs.exact_bytes, available, instead
        )

    if requested == "iterative":
        if owner not in ITERATIVE_SLOPES:
            require_intercepts(objective.qs)
        if not iterative_fits:
            raise MemoryError(
                f"{owner}: the iterative solver needs about {_gb(costs.iterative_bytes)} "
                f"for this design, but {_gb(available or 0)} of memory is available"
            )
        return SolverChoice("iterative", "requested")
    if requested == "exact":
        if not exact_fits:
            raise refuse_exact()
        return SolverChoice("exact", "requested")
    if requested == "sparse":
        return SolverChoice("sparse", "requested")
    if len(objective.qs) == 1:
        return SolverChoice("exact", "one random-effects factor: no dense block")
    if exact_fits and exact_estimate <= limit:
        return SolverChoice(
            "exact", f"dense block {block}, estimated {exact_estimate:.1f} s over a fit"
        )
    why = (
        f"estimated {exact_estimate:.0f} s over a fit"
        if exact_fits
        else f"about {_gb(costs.exact_bytes)}, more than the memory available"
    )
    if "sparse" in solvers:
        costs = with_sparse_costs(objective, costs)
    sparse_estimate = costs.sparse_seconds * exact_work
    rivals = [exact_estimate if exact_fits else np.inf]
    rivals.append(costs.iterative_seconds if iterative_takes and iterative_fits else np.inf)
    if "sparse" in solvers and costs.sparse_bytes <= budget and sparse_estimate < min(rivals):
        groups = (
            "no two of its levels are linked"
            if costs.largest_group <= max(objective.qs)
            else f"its levels fall into linked groups of at most {costs.largest_group:,}"
        )
        return SolverChoice(
            "sparse",
            f"the exact solver's dense {block} block: {why}; {groups}, sparse estimated "
            f"{sparse_estimate:.1f} s",
        )
    if iterative_takes and iterative_fits:
        return SolverChoice(
            "iterative",
            f"the exact solver's dense {block} block: {why}; iterative estimated "
            f"{costs.iterative_seconds:.1f} s",
        )
    if exact_fits:
        return SolverChoice(
            "exact", f"dense block {block}, estimated {exact_estimate:.1f} s over a fit"
        )
    raise refuse_exact()


def solver_at_theta(requested: str, objective: deviance.ProfiledDeviance, fitted: str) -> str:
    """The solver for one evaluation at a given theta (``update``, a fit at fixed theta,
    the final estimates of a fit).

    One exact factorisation costs a fortieth of an exact fit of two random intercepts
    (``exact_evaluations``), so with ``"auto"`` the exact solver is used wherever its
    block fits in memory and one evaluation (with the final solution's extra cost) is
    estimated under ``EXACT_SECONDS / 4``; otherwise ``fitted``, the solver the fit used
    (or that ``choose_solver`` takes for these data).
    """
    if requested != "auto":
        return requested
    costs = estimate_costs(objective)
    available = deviance.available_memory_bytes()
    fits = available is None or costs.exact_bytes <= MEMORY_SHARE * available
    final = solution_seconds(objective)
    one = (costs.exact_seconds - final) / exact_evaluations(objective) + final
    if fits and one <= EXACT_SECONDS / 4:
        return "exact"
    return fitted
