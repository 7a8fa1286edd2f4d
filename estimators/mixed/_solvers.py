"""Which solver fits a linear mixed model: exact or iterative, by time and memory.

The exact solver factors a dense block of the terms after the first (largest) one at
every evaluation of the criterion; its cost is the pairs of nonzeros that the first
term's levels share with the rest (the sparse product that fills the block) plus the
dense Cholesky factorisation. The iterative solver (``_iterative``) costs products of
the same nonzeros with blocks of vectors. ``solver="auto"`` takes the exact solver
while it fits in memory and is estimated to take less than ``EXACT_SECONDS`` over a
fit, since its answer is lme4's to optimiser precision; beyond that, designs of random
intercepts go to the iterative solver.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import estimators.mixed._deviance as deviance
from estimators.mixed._iterative import PROBES

SOLVERS = ("auto", "exact", "iterative")
EXACT_SECONDS = 4.0
# Seconds per unit of work, measured on one core of the reference machine: a pair of
# nonzeros in the sparse product, a flop of the dense Cholesky, a nonzero times a
# column in the iterative solver's block products; evaluations per fit, typical.
PAIR_SECONDS = 5e-9
FLOP_SECONDS = 1e-10
BLOCK_SECONDS = 6e-10
EXACT_EVALUATIONS = 40
ITERATIVE_PRODUCTS = 40
MEMORY_SHARE = 0.8  # of the available memory a fit may plan to use


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


def estimate_costs(objective: deviance.ProfiledDeviance) -> Costs:
    """Time and peak memory of each solver on ``objective``'s design."""
    c = objective.cross
    dense = deviance.dense_size(objective.qs, objective.levels, c.p)
    shared = np.bincount(c.ZrZ1.indices, minlength=c.ZrZ1.shape[1]).astype(float)
    pairs = float(np.sum(shared**2))
    exact_seconds = EXACT_EVALUATIONS * (pairs * PAIR_SECONDS + dense**3 / 3 * FLOP_SECONDS)
    columns = PROBES + c.p + 1
    nnz = c.ZrZ1.nnz
    iterative_seconds = ITERATIVE_PRODUCTS * columns * 2 * nnz * BLOCK_SECONDS
    # The scaled copies of the sparse blocks, and seven blocks of vectors over the rest
    # (right-hand sides, solutions, residuals, directions, ...) and two over the first.
    iterative_bytes = 3 * 12 * (nnz + c.ZrZr.nnz) + 8 * columns * (
        7 * objective.n_rest + 2 * objective.levels[0]
    )
    return Costs(exact_seconds, 3 * 8 * dense**2, iterative_seconds, iterative_bytes, dense)


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

    Raises
    ------
    ValueError
        An unknown solver, or the iterative one on a model with random slopes.
    MemoryError
        When the solver would not fit in memory, saying what it needs, what is
        available, and which solver would fit.
    """
    if requested not in SOLVERS:
        raise ValueError(f"solver: expected one of {list(SOLVERS)}, got {requested!r}")
    costs = estimate_costs(objective)
    exact_estimate = costs.exact_seconds * exact_work
    limit = EXACT_SECONDS if exact_seconds is None else exact_seconds
    available = deviance.available_memory_bytes()
    budget = np.inf if available is None else MEMORY_SHARE * available
    intercepts_only = all(q == 1 for q in objective.qs)
    exact_fits = costs.exact_bytes <= budget
    iterative_fits = costs.iterative_bytes <= budget
    block = f"{costs.dense:,} x {costs.dense:,}"

    def refuse_exact() -> MemoryError:
        if intercepts_only and iterative_fits:
            instead = (
                f"solver='iterative' needs about {_gb(costs.iterative_bytes)} for this "
                "design; use it (solver='auto' does)."
            )
        elif intercepts_only:
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
        if not intercepts_only:
            raise ValueError(
                "solver='iterative' takes random intercepts only, (1 | g) terms; this "
                "model has a term with random slopes: use solver='exact'"
            )
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
    if len(objective.qs) == 1:
        return SolverChoice("exact", "one random-effects factor: no dense block")
    if exact_fits and (exact_estimate <= limit or not intercepts_only):
        return SolverChoice(
            "exact", f"dense block {block}, estimated {exact_estimate:.1f} s over a fit"
        )
    if not intercepts_only or not iterative_fits:
        raise refuse_exact()
    why = (
        f"estimated {exact_estimate:.0f} s over a fit"
        if exact_fits
        else f"about {_gb(costs.exact_bytes)}, more than the memory available"
    )
    return SolverChoice(
        "iterative",
        f"the exact solver's dense {block} block: {why}; iterative estimated "
        f"{costs.iterative_seconds:.1f} s",
    )


def solver_at_theta(requested: str, objective: deviance.ProfiledDeviance) -> str:
    """The solver for one evaluation at a given theta (``update``, a fit at fixed theta).

    One exact factorisation costs a fortieth of an exact fit, so with ``"auto"`` the
    exact solver is used wherever its block fits in memory and one evaluation is
    estimated under ``EXACT_SECONDS / 4``; otherwise the iterative one, for random
    intercepts.
    """
    if requested != "auto":
        return requested
    costs = estimate_costs(objective)
    available = deviance.available_memory_bytes()
    fits = available is None or costs.exact_bytes <= MEMORY_SHARE * available
    cheap = costs.exact_seconds / EXACT_EVALUATIONS <= EXACT_SECONDS / 4
    if fits and (cheap or any(q != 1 for q in objective.qs)):
        return "exact"
    return "iterative"
