"""The linear mixed model estimator: design -> objective(theta) -> optimise -> fitted state."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from estimators._columns import as_target, check_policy, unseen_levels_error
from estimators.mixed._design import (
    Design,
    build_design,
    category_rows,
    check_finite,
    check_levels_below_rows,
    design_matrices,
    effects_by_factor,
    factor_keys,
    formula_frame,
    offset_columns,
    required_columns,
    resolve_response,
    spec_matrix,
    warn_dropped,
    weighted_cross_products,
)
from estimators.mixed._deviance import (
    ProfiledDeviance,
    Solution,
    moment_start,
    single_term_objective,
    solve,
    theta_lower_bounds,
    theta_start,
)
from estimators.mixed._fitted import (
    VARCORR_COLUMNS,
    FittedMixedModel,
    numeric_column,
    varcorr_rows,
)
from estimators.mixed._formula import parse_formula
from estimators.mixed._iterative import IterativeDeviance
from estimators.mixed._optimize import minimize_bobyqa
from estimators.mixed._profile import profile_intervals
from estimators.mixed._solvers import choose_solver, solver_at_theta
from estimators.mixed._sparse import SparseDeviance
from estimators.mixed._update import (
    NewRows,
    encoded,
    extended_terms,
    grown_cross_products,
    largest_first,
)

SINGULAR_TOLERANCE = 1e-4  # lme4's isSingular default
# Fitted attributes computed when first read (MixedLM's cached properties).
LAZY_TABLES = ("varcorr_", "_effects_by_factor", "ranef_", "ranef_var_", "ranef_cov_")


def check_weights(weights: np.ndarray, name: str) -> np.ndarray:
    """Prior weights after checking they are finite and positive; ``name`` says where
    they come from in the error.

    A weight of 0 is refused: lme4's criterion subtracts sum(log w), infinite then, and
    a row of weight 0 carries no information; drop such rows instead.
    """
    bad = ~np.isfinite(weights)
    if bad.any():
        raise ValueError(f"{name} has {int(bad.sum())} missing or infinite value(s)")
    if np.any(weights < 0):
        raise ValueError(f"{name} has {int(np.sum(weights < 0))} negative value(s)")
    if np.any(weights == 0):
        raise ValueError(
            f"{name} has {int(np.sum(weights == 0))} zero value(s); a row of weight 0 "
            "carries no information (and lme4's criterion, which subtracts sum(log w), is "
            "infinite): drop those rows"
        )
    return weights


def sample_weights(sample_weight: Any, n_rows: int) -> np.ndarray:
    """``fit``'s ``sample_weight`` as a checked float array of one weight per row."""
    try:
        weights = np.asarray(sample_weight, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("sample_weight: expected numbers, one per row of X") from None
    if weights.ndim != 1 or len(weights) != n_rows:
        raise ValueError(
            f"sample_weight: expected {n_rows} value(s), one per row of X, got shape "
            f"{weights.shape}"
        )
    return check_weights(weights, "sample_weight")


class MixedLM(FittedMixedModel, RegressorMixin, BaseEstimator):
    """Linear mixed model in lme4's formula syntax, fitted by the profiled deviance.

    ``y = X beta + Z b + e`` with ``b ~ N(0, sigma^2 Lambda Lambda')`` and
    ``e ~ N(0, sigma^2 I)``. The estimates agree with ``lme4::lmer``: the same REML
    criterion or ML deviance is minimised over the same relative covariance
    parameters theta, with the same bounds.

    Parameters
    ----------
    formula : str
        lme4 syntax, e.g. ``"Reaction ~ Days + (Days | Subject)"``. Random-effects
        terms: ``(1 | g)``, ``(1 + x | g)``, ``(0 + x | g)``, ``(1 + x || g)``, nested
        ``(1 | a/b)``, interactions ``(1 | a:b)``, several terms for crossed factors. The
        fixed part is read by formulaic (treatment contrasts for categorical columns);
        its ``offset(expr)`` terms (``offset(log(exposure))``) enter the linear
        predictor with coefficient 1.
    reml : bool
        REML (default, like ``lmer``) or maximum likelihood.
    new_levels : {"population", "error"}
        At predict time, a level not seen in fitting gets random effect 0 (the population
        prediction, also partially: a known user with a new item keeps the user's
        effect) or raises. A level of a fixed-effect categorical column not seen in
        fitting likewise raises, or gets the fixed part averaged over the levels seen in
        fitting, weighted by their rows (with a warning). Ids are matched by value, so
        ids fitted as numbers may be given as text (read back from a CSV file).
    na_action : {"raise", "drop"}
        Rows with missing or infinite values in a used column: raise an error naming the
        column, or drop them with a warning saying how many.
    solver : {"auto", "exact", "sparse", "iterative"}
        ``"exact"`` factors the random effects after the largest factor densely at every
        step (lme4's estimates to optimiser precision). ``"sparse"`` factors them sparsely
        (SuperLU, minimum-degree ordering): the same estimates, cheap when their levels
        fall into small groups the largest factor does not link (nested designs such as
        sessions within users), hopeless for crossed factors; its conditional variances
        ignore the coupling between levels of the other factors unless one dense
        factorisation is cheap. ``"iterative"`` (random
        intercepts only) never factors: conjugate gradients and stochastic trace
        estimates, for crossed factors with tens of thousands of levels and millions of
        rows; its variance components agree with the exact ones to about 1e-4 and its
        conditional variances ignore the coupling between factors. ``"auto"`` takes the
        exact solver while it fits in memory and is estimated to take under 4 s; beyond,
        the sparse one where the groups of linked levels make it cheaper, else the
        iterative one; ``solver_`` and ``convergence_`` record the choice and why.
        A solver that would not fit in memory is refused before any work, naming one
        that would. Every solver and ``update`` accept prior weights.
    weights : str or int, optional
        Column of X (of a plain array, its index) with prior (precision) weights,
        lme4's ``weights=``: row i has residual variance ``sigma^2 / w_i``, as for a
        row that is the mean of ``w_i`` observations. The criterion is lme4's (it loses
        ``sum(log w)``). Weights must be finite and positive; ``fit``'s
        ``sample_weight`` multiplies them.
    offset : str or int, optional
        Column of X (of a plain array, its index) added to the linear predictor with
        coefficient 1 (lme4's ``offset=``), in fitting and in prediction;
        ``offset(expr)`` terms of the formula's fixed part (``offset(log(exposure))``)
        add to it.

    Attributes
    ----------
    coef_ : pandas.Series
        Fixed effects by name, in lme4's order and with its names: ``(Intercept)``,
        ``var12`` (treatment contrasts), ``var11`` (a factor coded in full without an
        intercept), ``Days:var12`` (an interaction's variables in their order of first
        appearance in the formula).
    coef_se_ : pandas.Series
        Their standard errors.
    coef_cov_ : pandas.DataFrame
        Covariance matrix of the fixed effects.
    sigma_ : float
        Residual standard deviation.
    theta_ : numpy.ndarray
        Relative covariance parameters, terms ordered largest factor first, each
        template's lower triangle column by column (``getME(fit, "theta")``).
    objective_ : float
        REML criterion (REML fits) or deviance (ML fits), as lme4 prints them.
    loglik_ : float
        Log-likelihood (restricted log-likelihood for REML fits), ``-objective_ / 2``.
    varcorr_ : pandas.DataFrame
        Like ``as.data.frame(VarCorr(fit))``: columns grp, var1, var2, vcov, sdcor.
    ranef_ : dict of pandas.DataFrame
        Conditional modes per grouping factor, indexed by level, like ``ranef(fit)``.
    ranef_var_ : dict of pandas.DataFrame
        Conditional variances (diagonal of each level's block), like ``condVar``.
    ranef_cov_ : dict of numpy.ndarray
        Full conditional covariance blocks per factor, shape (levels, q, q).
    is_singular_ : bool
        Whether the fit is on the boundary (a template's diagonal below 1e-4).
    n_obs_ : int
        Rows fitted, including those added by ``update``.
    n_levels_ : dict
        Levels per grouping factor (including levels first seen by ``update``).
    dropped_columns_ : list of str
        Fixed-effect columns dropped for rank deficiency.
    convergence_ : dict
        Optimiser, evaluations, return code, whether it converged, singularity, the
        solver and the reason it was chosen, and ``solution_solver``: the solver of the
        final estimates at the optimum (with ``solver="auto"``, the exact one wherever
        one exact factorisation is cheap).
    solver_ : str
        The solver used, ``"exact"`` or ``"iterative"``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> g = np.repeat(np.arange(20), 10)
    >>> data = pd.DataFrame({"g": g, "x": rng.normal(size=200)})
    >>> data["y"] = 1 + 2 * data["x"] + rng.normal(size=20)[g] + rng.normal(size=200)
    >>> model = MixedLM("y ~ x + (1 | g)").fit(data)
    >>> bool(abs(model.coef_["x"] - 2) < 0.2), model.n_levels_
    (True, {'g': 20})

    New rows, here of 20 new groups, update the fit without revisiting the old ones
    (theta held at its fitted value):

    >>> more = pd.DataFrame({"g": g + 20, "x": rng.normal(size=200)})
    >>> more["y"] = 1 + 2 * more["x"] + rng.normal(size=20)[g] + rng.normal(size=200)
    >>> model.update(more).n_obs_, model.n_levels_
    (400, {'g': 40})

    Rows that are means of several observations, weighted by their counts, and an
    offset; the criterion at any theta, without fitting, as lme4's ``devFunOnly``:

    >>> data["n"] = rng.integers(1, 5, size=200)
    >>> data["base"] = 0.5
    >>> weighted = MixedLM("y ~ x + offset(base) + (1 | g)", weights="n").fit(data)
    >>> devfun = MixedLM("y ~ x + offset(base) + (1 | g)", weights="n").deviance_function(data)
    >>> bool(np.isclose(devfun(weighted.theta_), weighted.objective_))
    True
    """

    def __init__(
        self,
        formula: str = "",
        *,
        reml: bool = True,
        new_levels: str = "population",
        na_action: str = "raise",
        solver: str = "auto",
        weights: str | int | None = None,
        offset: str | int | None = None,
    ) -> None:
        self.formula = formula
        self.reml = reml
        self.new_levels = new_levels
        self.na_action = na_action
        self.solver = solver
        self.weights = weights
        self.offset = offset

    # -- fitting ---------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, *, sample_weight: Any = None) -> MixedLM:
        """Fit the model.

        Parameters
        ----------
        X : DataFrame (pandas or polars) or 2-d array
            Every column the formula uses (and the ``weights`` and ``offset`` columns).
            An array's columns are named by their text: the formula's `` `0` `` is
            column 0 (in the fixed part write ``Q('1')``, since formulaic reads a
            backtick-quoted number as the number).
        y : array-like, optional
            The response; by default the formula's response column of X.
        sample_weight : array-like, optional
            Prior weights per row, with the meaning of the ``weights`` parameter
            (residual variance ``sigma^2 / w``); multiplied by the ``weights`` column
            when both are given.

        Returns
        -------
        self
        """
        parsed, design, dropped, objective, choice = self._prepare(X, y, sample_weight)
        qs = objective.qs
        lower = theta_lower_bounds(qs)
        start = theta_start(qs)
        if len(qs) > 1:
            # Each term fitted alone is cheap (no Schur complement) and starts the full
            # model much nearer its optimum than lme4's identity start.
            start = np.concatenate(
                [
                    minimize_bobyqa(single, theta_start([q]), theta_lower_bounds([q]))[0]
                    for single, q in (
                        (single_term_objective(objective, k), q) for k, q in enumerate(qs)
                    )
                ]
            )
        elif qs[0] > 1:
            # One vector-valued term: moments of its levels' sums start BOBYQA near the
            # optimum (sleepstudy 29 evaluations instead of 50, NAFLD 59 instead of 115).
            start = moment_start(objective)
        # Near the optimum already: a small first trust region saves evaluations.
        step = 0.1 * np.maximum(np.abs(start), 0.1) if len(qs) > 1 or qs[0] > 1 else None
        solution, final = None, choice.solver
        if choice.solver == "iterative":
            iterative = IterativeDeviance(objective)
            state, info = iterative.fit(start)
            theta = state.theta
            final = solver_at_theta(self.solver, objective, fitted="iterative")
            if final == "iterative":
                value, solution = iterative.criterion(state), iterative.solution(state)
        elif choice.solver == "sparse":
            sparse = SparseDeviance(objective)
            theta, value, info = minimize_bobyqa(sparse, start, lower, initial_step=step)
            final = solver_at_theta(self.solver, objective, fitted="sparse")
        else:
            theta, value, info = minimize_bobyqa(objective, start, lower, initial_step=step)
        if solution is None and choice.solver != "exact":
            # With solver="auto", the estimates at the optimum come from one exact
            # factorisation wherever that is cheap: the exact criterion and conditional
            # variances rather than the scalable solver's estimate or approximation.
            value, solution = solution_at(objective, theta, final)
        info.update(
            start=start.tolist(),
            solver=choice.solver,
            solver_reason=choice.reason,
            solution_solver=final,
        )
        if not np.isfinite(value):
            raise FloatingPointError("the objective is not finite at any theta tried")
        self._set_fitted(parsed, design, objective, theta, value, info, dropped, solution=solution)
        self._sample_weighted = sample_weight is not None
        return self

    def deviance_function(
        self, X: Any, y: Any = None, *, sample_weight: Any = None
    ) -> Callable[[Any], float]:
        """The profiled criterion as a function of theta, as lme4's
        ``lmer(..., devFunOnly = TRUE)`` gives it.

        The model need not be fitted, and is not changed. The design and the
        cross-products are built once here; each call of the returned function costs
        one factorisation.

        Parameters
        ----------
        X, y, sample_weight
            As for ``fit`` (the same weights, offsets and missing-value handling).

        Returns
        -------
        callable
            ``f(theta) -> float``: the REML criterion (``reml=True``) or the ML deviance
            at ``theta``, lme4's value including prior weights; theta in the layout of
            ``theta_`` for these data (terms ordered by number of levels, largest
            first; each template's lower triangle column by column). Infinite where
            the factorisation fails. It evaluates by the solver ``fit`` would choose
            (``solver``), the exact one for all but very large data.

        Examples
        --------
        >>> import numpy as np, pandas as pd
        >>> rng = np.random.default_rng(1)
        >>> g = np.repeat(np.arange(10), 5)
        >>> data = pd.DataFrame({"g": g, "y": rng.normal(size=10)[g] + rng.normal(size=50)})
        >>> devfun = MixedLM("y ~ 1 + (1 | g)").deviance_function(data)
        >>> model = MixedLM("y ~ 1 + (1 | g)").fit(data)
        >>> bool(np.isclose(devfun(model.theta_), model.objective_))
        True
        """
        # A fresh copy prepares the design, so that a fitted model keeps its state
        # (_prepare records X's columns as fit does).
        _, design, _, objective, choice = clone(self)._prepare(X, y, sample_weight)
        n_theta = sum(term.n_theta for term in design.terms)
        groups = [term.spec.group for term in design.terms]
        if choice.solver == "sparse":
            evaluate: Callable[[np.ndarray], float] = SparseDeviance(objective)
        elif choice.solver == "iterative":
            iterative = IterativeDeviance(objective)

            def evaluate(theta: np.ndarray) -> float:
                return iterative.criterion(iterative.evaluate(theta))
        else:
            evaluate = objective

        def deviance(theta: Any) -> float:
            theta = np.asarray(theta, dtype=float)
            if theta.shape != (n_theta,):
                raise ValueError(
                    f"theta: expected {n_theta} value(s) for the terms {groups}, got shape "
                    f"{theta.shape}"
                )
            return float(evaluate(theta))

        return deviance

    def _fit_at_theta(
        self, X: Any, y: Any = None, *, theta: Any, sample_weight: Any = None
    ) -> MixedLM:
        """Fit with theta held at a given value instead of optimised over.

        Everything else (fixed effects, sigma profiled at ``theta``, conditional modes
        and variances) is what ``fit`` computes at its optimum. This is the reference an
        ``update`` must reproduce: an update equals this on the old and new rows
        together, at the fitted theta.

        Parameters
        ----------
        X, y, sample_weight
            As for ``fit``.
        theta : array-like
            Relative covariance parameters in the layout of ``theta_`` for these data
            (terms ordered by number of levels, largest first).

        Returns
        -------
        self
        """
        parsed, design, dropped, objective, choice = self._prepare(X, y, sample_weight)
        theta = np.asarray(theta, dtype=float)
        if theta.shape != (sum(term.n_theta for term in design.terms),):
            raise ValueError(
                f"theta: expected {sum(term.n_theta for term in design.terms)} value(s) for "
                f"the terms {[term.spec.group for term in design.terms]}, got shape "
                f"{theta.shape}"
            )
        solver = solver_at_theta(self.solver, objective, fitted=choice.solver)
        value, solution = solution_at(objective, theta, solver)
        info = {
            "optimizer": "none (theta given)",
            "evaluations": 0,
            "converged": True,
            "solver": solver,
            "solver_reason": "theta given: one evaluation",
        }
        self._set_fitted(parsed, design, objective, theta, value, info, dropped, solution=solution)
        self._sample_weighted = sample_weight is not None
        return self

    def _prepare(self, X: Any, y: Any, sample_weight: Any = None):
        """Check the inputs and build the design and the objective (steps 1 and 2)."""
        check_policy(self.new_levels)
        if self.na_action not in ("raise", "drop"):
            raise ValueError(f"na_action: expected 'raise' or 'drop', got {self.na_action!r}")
        parsed = parse_formula(self.formula)
        frame = formula_frame(self, X, reset=True)
        name = "y" if y is not None else f"response column {parsed.response!r}"
        y = resolve_response(parsed, frame, y)
        if sample_weight is not None:
            sample_weight = sample_weights(sample_weight, len(frame))
        if self.na_action == "drop":
            frame, y, kept = self._drop_missing(parsed, frame, y)
            if sample_weight is not None:
                sample_weight = sample_weight[kept]
        target = as_target(y, len(frame))
        weights = self._prior_weights(frame, sample_weight)
        offset = self._offset_vector(frame)
        if len(target) and np.ptp(target) == 0:
            # Every criterion is -inf (no residual at all); lmer "converges" to sigma = 0.
            raise ValueError(
                f"{name} is constant (every value {target[0]:g}): there is no variation for "
                "the random effects and the residual to explain"
            )
        # An offset enters with coefficient 1: fit the response minus it.
        design, dropped = build_design(parsed, frame, target - offset)
        check_levels_below_rows(design)
        warn_dropped(dropped, stacklevel=3)
        objective = ProfiledDeviance(
            weighted_cross_products(design_matrices(design), design.y, weights),
            qs=[term.q for term in design.terms],
            levels=[len(term.levels) for term in design.terms],
            reml=bool(self.reml),
            log_weights=0.0 if weights is None else float(np.sum(np.log(weights))),
        )
        names = [term.spec.group for term in design.terms]
        choice = choose_solver(self.solver, objective, names, "MixedLM")
        return parsed, design, dropped, objective, choice

    # -- new rows --------------------------------------------------------------------
    def update(self, X_new: Any, y_new: Any = None, *, sample_weight: Any = None) -> MixedLM:
        """Add new rows to the fit, with the variance parameters held at their values.

        The fixed effects, sigma (profiled at the fitted theta, by REML or ML as
        fitted), the conditional modes and their conditional variances become those of
        the old and new rows together, exactly as a fit on all rows with theta held at
        ``theta_`` gives them; theta (the relative covariance) is not re-estimated. The
        old rows are not needed: the fit keeps their cross-products (sums over rows, whose
        size depends on the levels and on the pairs of levels that occur together, not
        on the number of rows), and the new rows' are added to them.

        Units (levels) first seen in the new rows get conditional modes, and predict
        uses them from then on; their codes follow the old levels'. Terms are re-ordered
        if the new levels change which factor has the most levels, as a fit would
        order them (``theta_`` is permuted accordingly).

        Parameters
        ----------
        X_new : DataFrame (pandas or polars)
            New rows with every column the formula uses. Fixed-effect columns are
            encoded as in fitting; a categorical level not seen in fitting is an error.
        y_new : array-like, optional
            Their outcomes; by default the formula's response column of ``X_new``.
        sample_weight : array-like, optional
            Prior weights of the new rows, as in ``fit`` (times the ``weights`` column,
            which ``X_new`` must hold if the model has one). Offsets are read from
            ``X_new`` as in ``fit``.

        Returns
        -------
        self

        Notes
        -----
        ``objective_`` and ``loglik_`` become the criterion at the fitted theta on all
        rows, no longer its optimum; ``convergence_["updates"]`` counts the updates
        since the last fit, and ``convergence_["n_obs_at_fit"]`` is the number of rows
        theta was estimated on. Profile intervals need an optimum and are refused
        after an update.
        """
        check_is_fitted(self, "coef_")
        parsed = self._parsed
        frame = formula_frame(self, X_new, reset=False)
        used = self._used_columns()
        missing = [c for c in sorted(used) if c not in frame.columns]
        if missing:
            raise ValueError(
                f"update: column(s) {missing} not found in X_new; X_new has {list(frame.columns)}"
            )
        y = resolve_response(parsed, frame, y_new)
        if sample_weight is not None:
            sample_weight = sample_weights(sample_weight, len(frame))
        if self.na_action == "drop":
            frame, y, kept = self._drop_missing(parsed, frame, y)
            if len(frame) == 0:
                raise ValueError("update: no rows left after dropping missing values")
            if sample_weight is not None:
                sample_weight = sample_weight[kept]
        check_finite(frame, sorted(used))
        weights = self._prior_weights(frame, sample_weight)
        target = as_target(y, len(frame)) - self._offset_vector(frame)
        old_terms = self._design_terms
        terms = extended_terms(old_terms, frame)
        rows = NewRows(
            X=encoded(self._fixed_spec, frame, "update")[:, self._fixed_kept],
            y=target,
            codes=[term.codes(factor_keys(frame, term.spec.group_cols)) for term in terms],
            values=[encoded(term.model_spec, frame, "update") for term in terms],
            weights=weights,
        )
        order = largest_first(terms, self._formula_index)
        cross = grown_cross_products(self._objective.cross, old_terms, terms, order, rows)
        theta_by_term = np.split(self.theta_, np.cumsum([t.n_theta for t in old_terms])[:-1])
        theta = np.concatenate([theta_by_term[k] for k in order])
        terms = [terms[k] for k in order]
        objective = ProfiledDeviance(
            cross,
            qs=[term.q for term in terms],
            levels=[len(term.levels) for term in terms],
            reml=self._objective.reml,
            log_weights=self._objective.log_weights
            + (0.0 if weights is None else float(np.sum(np.log(weights)))),
        )
        # One evaluation at the fitted theta: the exact solver wherever it is cheap.
        solver = solver_at_theta(self.solver, objective, fitted=self.solver_)
        value, solution = solution_at(objective, theta, solver)
        self._formula_index = [self._formula_index[k] for k in order]
        if self._category_rows is not None:
            # The new rows join the population an unseen categorical level is averaged over.
            grown = category_rows(self._fixed_spec, frame)
            self._category_rows = self._category_rows.add(grown, fill_value=0)
        self._set_solution(terms, objective, theta, solution=solution)
        self.objective_ = float(value)
        self.loglik_ = -0.5 * float(value)
        updates = self.convergence_.get("updates", 0)
        n_obs_at_fit = self.convergence_.get("n_obs_at_fit", cross.n - len(target))
        self.convergence_ = dict(
            self.convergence_, updates=updates + 1, n_obs_at_fit=n_obs_at_fit, update_solver=solver
        )
        return self

    def partial_fit(self, X: Any, y: Any = None, *, sample_weight: Any = None) -> MixedLM:
        """The same operation as ``update``, under scikit-learn's name for it.

        On a model not fitted yet, this fits it (theta is estimated from the first
        batch); afterwards every call is ``update(X, y, sample_weight=sample_weight)``.
        """
        if not hasattr(self, "coef_"):
            return self.fit(X, y, sample_weight=sample_weight)
        return self.update(X, y, sample_weight=sample_weight)

    def _drop_missing(self, parsed, frame: pd.DataFrame, y: Any):
        """The rows without missing or infinite values in a used column or the response:
        the frame, the response and the boolean mask of the rows kept."""
        used = set(required_columns(parsed.fixed))
        for term in parsed.random:
            used |= required_columns(term.expr) | set(term.group_cols)
        for expr in parsed.offsets:
            used |= offset_columns(expr)
        used |= {c for c in (self._weights_column, self._offset_column) if c is not None}
        used = [c for c in frame.columns if c in used]
        target = pd.Series(np.asarray(y, dtype=float), index=frame.index)
        bad = ~np.isfinite(target.to_numpy())
        for column in used:
            values = frame[column]
            bad |= values.isna().to_numpy()
            if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
                bad |= ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            warnings.warn(
                f"na_action='drop': dropped {int(bad.sum())} of {len(frame)} row(s) with "
                "missing or infinite values",
                UserWarning,
                stacklevel=3,
            )
        return frame.loc[~bad], target.to_numpy()[~bad], ~bad

    def _prior_weights(self, frame: pd.DataFrame, sample_weight: np.ndarray | None):
        """The prior weights of the rows: the ``weights`` column times ``sample_weight``,
        None when neither is given (the unweighted cross-products)."""
        weights = sample_weight
        name = self._weights_column
        if name is not None:
            column = check_weights(
                numeric_column(frame, name, "weights"), f"weights: column {name!r}"
            )
            weights = column if weights is None else weights * column
        return weights

    def _set_fitted(
        self,
        parsed,
        design: Design,
        objective: ProfiledDeviance,
        theta: np.ndarray,
        value: float,
        info: dict[str, Any],
        dropped: list[str],
        solution: Solution | None = None,
    ) -> None:
        self._parsed = parsed
        self._fixed_spec = design.fixed_spec
        self._fixed_kept = design.kept
        self._category_rows = design.category_rows
        # Each term's place in the formula, to order terms as build_design does after
        # an update changes their numbers of levels.
        self._formula_index = [
            next(k for k, spec in enumerate(parsed.random) if spec is term.spec)
            for term in design.terms
        ]
        self._set_solution(design.terms, objective, theta, design.fixed_names, solution=solution)
        self.objective_ = float(value)
        self.loglik_ = -0.5 * float(value)
        self.dropped_columns_ = dropped
        diagonal = np.isfinite(theta_lower_bounds(objective.qs))
        self.is_singular_ = bool(np.any(theta[diagonal] < SINGULAR_TOLERANCE))
        self.convergence_ = dict(info, singular=self.is_singular_)
        self.solver_ = info["solver"]
        if not info["converged"]:
            warnings.warn(
                f"MixedLM: the optimiser stopped without converging ({info})",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _set_solution(
        self,
        terms: list,
        objective: ProfiledDeviance,
        theta: np.ndarray,
        names: Sequence[str] | None = None,
        solution: Solution | None = None,
    ) -> None:
        """Everything estimated at ``theta`` given the data (the cross-products); lme4's
        tables of them (``varcorr_``, ``ranef_``, ...) are built when first read."""
        if solution is None:
            solution = solve(objective, theta)
        names = self.coef_.index if names is None else pd.Index(names, dtype=object)
        self._design_terms = terms
        self._objective = objective
        self.theta_ = theta
        self.sigma_ = solution.sigma
        self.coef_ = pd.Series(solution.beta, index=names)
        self.coef_cov_ = pd.DataFrame(solution.beta_cov, index=names, columns=names)
        self.coef_se_ = pd.Series(np.sqrt(np.diag(solution.beta_cov)), index=names)
        self.n_obs_ = int(objective.cross.n)
        # Per term (internal, aligned with the design's terms); per grouping factor in
        # the tables below.
        self._term_b = solution.b
        self._term_cov = solution.b_cov
        self.n_levels_ = {term.spec.group: len(term.levels) for term in terms}
        # The tables of the previous estimates, if they were read, are out of date.
        for name in LAZY_TABLES:
            self.__dict__.pop(name, None)

    # -- lme4's tables of the estimates, built when first read ------------------------
    # A sweep of thousands of fits reads the coefficients and predicts; building these
    # tables (pandas frames indexed by text) would cost more than the fit itself. Once
    # read, each is an ordinary attribute until the next fit or update.
    @functools.cached_property
    def varcorr_(self) -> pd.DataFrame:
        """Variance components, like ``as.data.frame(VarCorr(fit))``."""
        templates = self._objective.templates(self.theta_)
        rows = varcorr_rows(self._design_terms, templates, self.sigma_**2)
        rows.append(("Residual", None, None, self.sigma_**2, self.sigma_))
        return pd.DataFrame(rows, columns=VARCORR_COLUMNS)

    @functools.cached_property
    def _effects_by_factor(self) -> tuple[dict, dict, dict, dict]:
        return effects_by_factor(self._design_terms, self._term_b, self._term_cov)

    @functools.cached_property
    def ranef_(self) -> dict[str, pd.DataFrame]:
        """Conditional modes per grouping factor, indexed by level, like ``ranef(fit)``."""
        return self._effects_by_factor[0]

    @functools.cached_property
    def ranef_var_(self) -> dict[str, pd.DataFrame]:
        """Conditional variances per grouping factor, like ``condVar``."""
        return self._effects_by_factor[1]

    @functools.cached_property
    def ranef_cov_(self) -> dict[str, np.ndarray]:
        """Conditional covariance blocks per grouping factor, (levels, q, q)."""
        return self._effects_by_factor[2]

    # -- prediction ------------------------------------------------------------------
    def predict(
        self,
        X: Any,
        *,
        include_random: bool | Sequence[str] = True,
        return_std: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Predicted outcome for new rows.

        Parameters
        ----------
        X : DataFrame (pandas or polars)
            Holds every column the formula uses (the response is not needed).
        include_random : bool or sequence of str
            True: conditional on the estimated random effects; False: marginal
            (fixed effects only); a list of grouping-factor names: only those terms.
        return_std : bool
            Also return the predictive standard deviation: fixed-effects uncertainty,
            conditional variance of the included random effects and the residual
            variance (for an unseen level, the term's full variance). With prior
            weights, the residual variance of a row is ``sigma^2 / w``, w read from the
            ``weights`` column when X has it, else 1 (one observation).

        Returns
        -------
        prediction : numpy.ndarray
        std : numpy.ndarray, only with ``return_std=True``
        """
        check_is_fitted(self, "coef_")
        check_policy(self.new_levels)
        frame = formula_frame(self, X, reset=False)
        fixed = self._fixed_matrix(frame)
        prediction = fixed @ self.coef_.to_numpy() + self._offset_vector(frame)
        residual = self._residual_variance(frame)  # checks the weights column either way
        # The variance only when asked for: it gathers a q x q block per row.
        variance = None
        if return_std:
            variance = np.einsum("ij,jk,ik->i", fixed, self.coef_cov_.to_numpy(), fixed)
            variance += residual
        selected = self._included_factors(include_random)
        templates = self._objective.templates(self.theta_)
        for term, T, b, cov in zip(
            self._design_terms, templates, self._term_b, self._term_cov, strict=True
        ):
            group = factor_keys(frame, term.spec.group_cols)
            codes = term.codes(group)
            values = spec_matrix(term.model_spec, frame)
            unseen = codes < 0
            any_unseen = bool(unseen.any())
            if any_unseen and self.new_levels == "error":
                raise unseen_levels_error(term.spec.group, group[unseen])
            if term.spec.group in selected:
                # With every level seen (the usual case), whole arrays: no masked copies.
                seen = ~unseen if any_unseen else slice(None)
                seen_values, seen_codes = values[seen], codes[seen]
                prediction[seen] += np.einsum("ij,ij->i", seen_values, b[seen_codes])
                if variance is not None:
                    variance[seen] += np.einsum(
                        "ij,ijk,ik->i", seen_values, cov[seen_codes], seen_values
                    )
                    if any_unseen:
                        prior = self.sigma_**2 * (T @ T.T)
                        variance[unseen] += np.einsum(
                            "ij,jk,ik->i", values[unseen], prior, values[unseen]
                        )
            elif variance is not None:
                prior = self.sigma_**2 * (T @ T.T)
                variance += np.einsum("ij,jk,ik->i", values, prior, values)
        if return_std:
            return prediction, np.sqrt(variance)
        return prediction

    def _residual_variance(self, frame: pd.DataFrame) -> np.ndarray | float:
        """sigma^2 / w per row: w from the ``weights`` column if X has it, else 1."""
        name = self._weights_column
        if name is None or name not in frame.columns:
            return self.sigma_**2
        weights = check_weights(
            frame[name].to_numpy(dtype=float, na_value=np.nan),
            f"weights: column {name!r}",
        )
        return self.sigma_**2 / weights

    # -- inference -------------------------------------------------------------------
    def confint(self, level: float = 0.95, method: str = "wald") -> pd.DataFrame:
        """Confidence intervals.

        Parameters
        ----------
        level : float
            Coverage.
        method : {"wald", "profile"}
            Wald intervals for the fixed effects (NaN for the variance parameters, as
            lme4 gives), or profile-likelihood intervals for the standard deviations,
            correlations, the residual sd and the fixed effects, as lme4's default
            ``confint``.

        Returns
        -------
        pandas.DataFrame
            Rows named as lme4 names them (``.sig01``, ..., ``.sigma``, fixed effects),
            columns for the lower and upper bounds.
        """
        check_is_fitted(self, "coef_")
        lower, upper = f"{100 * (1 - level) / 2:.1f} %", f"{100 * (1 + level) / 2:.1f} %"
        if method == "wald":
            z = stats.norm.ppf(0.5 + level / 2)
            names = self.parameter_names()
            table = pd.DataFrame(np.nan, index=names, columns=[lower, upper])
            table.loc[self.coef_.index, lower] = (self.coef_ - z * self.coef_se_).to_numpy()
            table.loc[self.coef_.index, upper] = (self.coef_ + z * self.coef_se_).to_numpy()
            return table
        if method == "profile":
            if self.solver_ != "exact":
                raise ValueError(
                    "confint(method='profile') profiles the exact criterion; this fit used "
                    f"solver={self.solver_!r}: refit with solver='exact' (it needs the dense "
                    "block in memory), or use method='wald'"
                )
            if self.convergence_.get("updates"):
                raise ValueError(
                    "confint(method='profile'): theta was not re-estimated after update(), "
                    "so it is not the optimum a profile is measured from; fit() again first"
                )
            return profile_intervals(self, level).set_axis([lower, upper], axis=1)
        raise ValueError(f"method: expected 'wald' or 'profile', got {method!r}")

    def parameter_names(self) -> list[str]:
        """lme4's names for the parameters: .sig01, ... for the random-effects standard
        deviations and correlations, .sigma, then the fixed effects."""
        n_var = sum(term.n_theta for term in self._design_terms)
        return [f".sig{k + 1:02d}" for k in range(n_var)] + [".sigma", *self.coef_.index]

    # -- reporting -------------------------------------------------------------------
    def summary(self) -> str:
        """A summary table in the layout of lme4's ``print(summary(fit))``."""
        check_is_fitted(self, "coef_")
        method = "REML" if self.reml else "maximum likelihood"
        criterion = "REML criterion at convergence" if self.reml else "deviance"
        lines = [f"Linear mixed model fit by {method}", f"Formula: {self.formula}"]
        weights = [self.weights] if self.weights is not None else []
        if getattr(self, "_sample_weighted", False):
            weights.append("sample_weight")
        if weights:
            lines.append(f"Weights: {' * '.join(weights)}")
        if self.offset is not None:
            lines.append(f" Offset: {self.offset}")
        lines += [f"{criterion}: {self.objective_:.4f}    logLik: {self.loglik_:.4f}", ""]
        lines += [*self._random_effects_lines(residual_sd=self.sigma_), "", "Fixed effects:"]
        fixed = pd.DataFrame(
            {
                "Estimate": self.coef_,
                "Std. Error": self.coef_se_,
                "t value": self.coef_ / self.coef_se_,
            }
        )
        lines.append(fixed.to_string(float_format=lambda v: f"{v:.4f}"))
        if self.is_singular_:
            lines += ["", "boundary (singular) fit: see help('isSingular')"]
        return "\n".join(lines)


def solution_at(
    objective: ProfiledDeviance, theta: np.ndarray, solver: str
) -> tuple[float, Solution]:
    """The criterion and the solution at a given theta, by the given solver."""
    if solver == "iterative":
        iterative = IterativeDeviance(objective)
        state = iterative.evaluate(theta)
        return iterative.criterion(state), iterative.solution(state)
    if solver == "sparse":
        sparse = SparseDeviance(objective)
        state = sparse.state(theta)
        return state.value, sparse.solution(state)
    # One factorisation serves both the criterion and the solution.
    factor = objective.factor(theta)
    return objective.from_factor(factor), solve(objective, theta, factor=factor)
