"""Step 3: bound-constrained minimisation over theta (BOBYQA, as lme4's default)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nlopt
import numpy as np
from scipy.optimize import minimize_scalar

Objective = Callable[[np.ndarray], float]


def minimize_bobyqa(
    function: Objective,
    start: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray | None = None,
    *,
    initial_step: np.ndarray | None = None,
    xtol_rel: float = 1e-6,
    xtol_abs: float = 1e-10,
    ftol_abs: float = 1e-10,
    ftol_rel: float = 1e-13,
    max_evaluations: int = 100_000,
) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Minimise ``function`` within bounds with NLopt's BOBYQA, as lme4's lmer does.

    The tolerances are tighter than lme4's defaults (whose relative x tolerance of 1e-4
    can stop ~1e-4 short of the optimum in theta). The relative f tolerance stops a
    criterion of large magnitude (a large data set's) once a step improves it by less
    than its own rounding error allows to resolve; ``ftol_abs`` alone would go on
    refining theta in the rounding noise. A one-dimensional problem, which
    BOBYQA does not take, goes to a bounded scalar search. When rounding errors stop
    BOBYQA (NLopt's ROUNDOFF_LIMITED, which its Python binding raises), the best point
    evaluated is returned: NLopt documents it as typically a useful result, and it is
    counted as converged, with ``roundoff_limited`` set in the info.

    Returns
    -------
    x : numpy.ndarray
        The minimiser.
    value : float
        The minimum.
    info : dict
        ``optimizer``, ``evaluations``, ``return_code`` and ``converged``.
    """
    evaluations = 0
    best: dict[str, Any] = {"value": np.inf, "x": None}

    def counted(x: np.ndarray) -> float:
        nonlocal evaluations
        evaluations += 1
        value = float(function(x))
        if value < best["value"]:
            best.update(value=value, x=np.array(x, dtype=float))
        return value

    upper = np.full(start.size, np.inf) if upper is None else upper
    x = np.clip(np.asarray(start, dtype=float), lower, upper)
    if x.size == 1:
        x, value, info = _minimize_scalar(counted, float(x[0]), float(lower[0]), float(upper[0]))
        return x, value, info | {"evaluations": evaluations}
    optimizer = nlopt.opt(nlopt.LN_BOBYQA, x.size)
    optimizer.set_min_objective(lambda x, gradient: counted(x))
    optimizer.set_lower_bounds(lower)
    optimizer.set_upper_bounds(upper)
    optimizer.set_xtol_rel(xtol_rel)
    optimizer.set_xtol_abs(xtol_abs)
    optimizer.set_ftol_abs(ftol_abs)
    optimizer.set_ftol_rel(ftol_rel)
    optimizer.set_maxeval(max_evaluations)
    if initial_step is not None:
        optimizer.set_initial_step(initial_step)
    try:
        x = optimizer.optimize(x)
    except nlopt.RoundoffLimited:
        if best["x"] is None:
            raise
        info = {
            "optimizer": "bobyqa",
            "evaluations": evaluations,
            "return_code": int(nlopt.ROUNDOFF_LIMITED),
            "converged": True,
            "roundoff_limited": True,
        }
        return best["x"], float(best["value"]), info
    result = optimizer.last_optimize_result()
    info = {
        "optimizer": "bobyqa",
        "evaluations": evaluations,
        "return_code": int(result),
        "converged": bool(result > 0 and result != nlopt.MAXEVAL_REACHED),
    }
    return np.asarray(x), float(optimizer.last_optimum_value()), info


def _minimize_scalar(
    function: Objective, start: float, low: float, high: float
) -> tuple[np.ndarray, float, dict[str, Any]]:
    def at(v: float) -> float:
        return function(np.array([v]))

    if not np.isfinite(high):
        # Bracket from the start outward until the function rises.
        high = max(2 * start, start + 1.0)
        while at(high) < at(start) and high < 1e8:
            start, high = high, 2 * high
    result = minimize_scalar(
        at, bounds=(low, high), method="bounded", options={"xatol": 1e-10, "maxiter": 10_000}
    )
    # The bounded method never evaluates the bound itself; a boundary optimum is common.
    value, best = min((float(result.fun), float(result.x)), (at(low), low))
    info = {
        "optimizer": "bounded_scalar",
        "return_code": int(result.status),
        "converged": bool(result.success),
    }
    return np.array([best]), value, info
