"""The generalized linear mixed model estimator (lme4's glmer): design -> deviance(theta,
beta) by PIRLS -> optimise in two stages -> fitted state."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from estimators._columns import (
    as_target,
    check_policy,
    numeric_matrix,
    unseen_levels_error,
    validated_frame,
)
from estimators.mixed._design import (
    Design,
    build_design,
    design_matrices,
    effects_by_factor,
    factor_keys,
    resolve_response,
    warn_dropped,
    weighted_cross_products,
)
from estimators.mixed._deviance import (
    ProfiledDeviance,
    Solution,
    solve,
    theta_lower_bounds,
    theta_start,
)
from estimators.mixed._fitted import VARCORR_COLUMNS, FittedMixedModel, varcorr_rows
from estimators.mixed._formula import parse_formula
from estimators.mixed._optimize import minimize_bobyqa
from estimators.mixed._pirls import FAMILIES, Family, GlmmDeviance, Modes
from estimators.mixed._pql import fit_pql
from estimators.mixed._solvers import choose_solver

SINGULAR_TOLERANCE = 1e-4  # lme4's isSingular default
HESSIAN_STEP = 1e-3  # central differences of the deviance for cov(beta)
# solver="auto": the Laplace fit costs about 35 exact linear-model fits (PIRLS at every
# evaluation, two stages; make bench-scale: 10.7 s at 100k rows and 169 s at 1M rows
# against 10.5 s and 161 s so estimated); it is kept while estimated under two minutes,
# since penalised quasi-likelihood is an approximation of another kind, not just a solver.
EXACT_SECONDS = 120.0
EXACT_WORK = 35.0
SCALES = ("response", "link")


def collapse_patterns(
    design: Design, y: np.ndarray, weights: np.ndarray, offset: np.ndarray
) -> tuple[Design, np.ndarray, np.ndarray, np.ndarray]:
    """Merge rows with identical fixed-effects row, random-effects levels and covariates
    and offset into one row of summed weights and weighted mean response.

    The log-likelihood kernels of the binomial and Poisson families are linear in
    (weights, weights * y) for a given linear predictor, so the merged data give the
    same estimates; 0/1 rows become (successes / trials, trials).
    """
    key = np.column_stack([design.X, *design.codes, *design.values, offset])
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    total = np.bincount(inverse, weights=weights)
    successes = np.bincount(inverse, weights=weights * y)
    mean = np.divide(successes, total, out=np.zeros_like(total), where=total > 0)
    collapsed = dataclasses.replace(
        design,
        X=design.X[first],
        codes=[codes[first] for codes in design.codes],
        values=[values[first] for values in design.values],
        y=mean,
    )
    return collapsed, mean, total, offset[first]


class MixedGLM(FittedMixedModel, RegressorMixin, BaseEstimator):
    """Generalized linear mixed model in lme4's formula syntax, fitted as ``glmer``.

    ``g(E[y | b]) = offset + X beta + Z b`` with ``b ~ N(0, Lambda Lambda')``, a logit
    link for ``family="binomial"`` and a log link for ``family="poisson"``. The
    conditional modes of b are found by penalised iteratively reweighted least squares
    inside the Laplace approximation of the likelihood (adaptive Gauss-Hermite
    quadrature with ``n_agq > 1``); glmer's two stages are followed: theta with beta
    found inside PIRLS, then (theta, beta) jointly, both with BOBYQA.

    Parameters
    ----------
    formula : str
        lme4 syntax, e.g. ``"y ~ x + (1 | user) + (1 | item)"``, with the random-effects
        terms :class:`MixedLM` takes. For binomial data the response is 0/1, or a
        proportion of successes when ``weights`` names the trials.
    family : {"binomial", "poisson"}
    n_agq : int
        Points of adaptive Gauss-Hermite quadrature; 1 is the Laplace approximation.
        More than 1 needs a single scalar term like ``(1 | g)``, as in glmer.
    weights : str, optional
        Column of X with prior weights: the number of trials of each row for binomial
        proportions (glmer's ``weights=``).
    offset : str, optional
        Column of X added to the linear predictor (log exposure for counts).
    new_levels : {"population", "error"}
        At predict time, a level not seen in fitting gets random effect 0 or raises; a
        level of a fixed-effect categorical column not seen in fitting raises, or gets
        the linear predictor's fixed part averaged over the levels seen in fitting,
        weighted by their rows (with a warning). Ids are matched by value across
        numbers and text.
    solver : {"auto", "exact", "iterative"}
        ``"exact"``: the Laplace approximation (or quadrature) with the exact factor,
        as glmer. ``"iterative"`` (random intercepts only): penalised quasi-likelihood
        with :class:`MixedLM`'s iterative solver for each working model, for crossed
        factors too large to factor; an approximation whose variance components are
        biased low for binary outcomes with few rows per unit (the scaling benchmark
        measures it), with conditional standard errors and ``objective_`` the Laplace
        value at its estimates (log-determinant estimated). ``"auto"`` takes the exact
        fit while it fits in memory and is estimated under two minutes (a million 0/1
        rows of 50k users crossed with 1k items are estimated just over).

    Attributes
    ----------
    coef_ : pandas.Series
        Fixed effects by name (lme4's names).
    coef_se_ : pandas.Series
        Their standard errors, from the finite-difference Hessian of the deviance in
        (theta, beta), as glmer's ``vcov`` (the conditional estimate where that Hessian
        is not positive definite; ``convergence_["standard_errors"]`` says which).
    coef_cov_ : pandas.DataFrame
    theta_ : numpy.ndarray
        Relative covariance parameters, as ``getME(fit, "theta")``.
    theta_se_ : numpy.ndarray
        Their standard errors from the same Hessian as ``coef_se_`` (NaN where the
        conditional estimate is used). The scale is 1 in these families, so for a
        scalar term like ``(1 | g)`` theta is the standard deviation of the random
        effect and ``theta_ +- 1.96 theta_se_`` its Wald interval.
    objective_ : float
        -2 log-likelihood (the Laplace or quadrature approximation).
    loglik_ : float
        ``logLik(fit)``.
    deviance_ : float
        ``deviance(fit)``: sum of squared deviance residuals at the conditional modes.
    aic_, bic_ : float
    varcorr_ : pandas.DataFrame
        Like ``as.data.frame(VarCorr(fit))``: columns grp, var1, var2, vcov, sdcor.
    ranef_ : dict of pandas.DataFrame
        Conditional modes per grouping factor, like ``ranef(fit)``.
    ranef_var_ : dict of pandas.DataFrame
        Conditional variances, like ``condVar``.
    ranef_cov_ : dict of numpy.ndarray
        Conditional covariance blocks per factor, shape (levels, q, q).
    is_singular_ : bool
    n_obs_ : int
        Rows of the data.
    n_patterns_ : int
        Distinct rows after merging identical ones (what the fit iterates over).
    n_levels_ : dict
    dropped_columns_ : list of str
    convergence_ : dict
        Per stage: optimiser, evaluations, return code, converged; PIRLS convergence at
        the optimum; singular fit; how the standard errors were computed.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(1)
    >>> g = np.repeat(np.arange(30), 40)
    >>> data = pd.DataFrame({"g": g, "x": rng.normal(size=g.size)})
    >>> eta = -0.5 + data["x"] + rng.normal(size=30)[g]
    >>> data["y"] = rng.binomial(1, 1 / (1 + np.exp(-eta)))
    >>> model = MixedGLM("y ~ x + (1 | g)", family="binomial").fit(data)
    >>> bool(abs(model.coef_["x"] - 1) < 0.3), model.predict_proba(data.head(2)).shape
    (True, (2, 2))
    """

    def __init__(
        self,
        formula: str = "",
        *,
        family: str = "binomial",
        n_agq: int = 1,
        weights: str | None = None,
        offset: str | None = None,
        new_levels: str = "population",
        solver: str = "auto",
    ) -> None:
        self.formula = formula
        self.family = family
        self.n_agq = n_agq
        self.weights = weights
        self.offset = offset
        self.new_levels = new_levels
        self.solver = solver

    # -- fitting ---------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> MixedGLM:
        """Fit the model; ``y`` may be omitted when the formula names the response."""
        check_policy(self.new_levels)
        if self.family not in FAMILIES:
            raise ValueError(f"family: expected one of {FAMILIES}, got {self.family!r}")
        if not isinstance(self.n_agq, int | np.integer) or self.n_agq < 1:
            raise ValueError(f"n_agq: expected a positive integer, got {self.n_agq!r}")
        family = Family(self.family)
        parsed = parse_formula(self.formula)
        frame = validated_frame(self, X, reset=True)
        response = parsed.response if y is None else "y"
        target = as_target(resolve_response(parsed, frame, y), len(frame))
        weights = self._column(frame, self.weights, "weights", default=1.0)
        offset = self._column(frame, self.offset, "offset", default=0.0)
        self._check_outcome(target, weights, response)
        design, dropped = build_design(parsed, frame, target)
        warn_dropped(dropped, stacklevel=2)
        qs = [term.q for term in design.terms]
        levels = [len(term.levels) for term in design.terms]
        names = [term.spec.group for term in design.terms]
        if self.n_agq > 1 and (len(qs) != 1 or qs[0] != 1):
            raise ValueError(
                f"n_agq={self.n_agq}: adaptive Gauss-Hermite quadrature needs a single "
                "scalar random-effects term like (1 | g); use n_agq=1 (Laplace)"
            )
        # Constants of the data as given, before rows are merged: glmer's Laplace value
        # keeps the normalising constants, its quadrature value uses deviance residuals.
        saturated = family.saturated(target, weights)
        constant = family.constant(target, weights) if self.n_agq == 1 else -saturated
        collapsed, y_rows, weight_rows, offset_rows = collapse_patterns(
            design, target, weights, offset
        )
        deviance = GlmmDeviance(
            design_matrices(collapsed),
            qs,
            levels,
            family,
            y_rows,
            weight_rows,
            offset_rows,
            n_agq=int(self.n_agq),
            constant=constant,
        )
        # Cross-products at the prior weights: the size of the problem for the choice.
        sized = weighted_cross_products(deviance.matrices, y_rows, weight_rows)
        choice = choose_solver(
            self.solver,
            ProfiledDeviance(sized, qs, levels, reml=False),
            names,
            "MixedGLM",
            exact_seconds=EXACT_SECONDS,
            exact_work=EXACT_WORK,
            solvers=("auto", "exact", "iterative"),
        )
        if choice.solver == "iterative":
            if self.n_agq > 1:
                raise ValueError(f"n_agq={self.n_agq}: quadrature needs solver='exact'")
            self._fit_pql(parsed, design, deviance, saturated, dropped)
        else:
            self._fit_laplace(parsed, design, deviance, saturated, dropped)
        self.n_patterns_ = int(len(y_rows))
        self.solver_ = choice.solver
        self.convergence_.update(solver=choice.solver, solver_reason=choice.reason)
        return self

    def _fit_laplace(self, parsed, design, deviance, saturated, dropped) -> None:
        """glmer's two stages, each minimised by BOBYQA over the Laplace (AGQ) value."""
        qs = deviance.qs
        lower = theta_lower_bounds(qs)
        # Stage 1 (glmer's nAGQ = 0): theta alone, beta inside PIRLS.
        theta, value, first = minimize_bobyqa(deviance.profiled, theta_start(qs), lower)
        stage1 = None
        if np.isfinite(value):
            with contextlib.suppress(np.linalg.LinAlgError, FloatingPointError):
                stage1 = deviance.modes(theta)
        if stage1 is None:
            # A numerical error deep in the factorisation would not say what is wrong
            # with the data; this does.
            raise FloatingPointError(
                "MixedGLM: the penalised least-squares system is singular at every theta "
                "tried, so no conditional modes exist; the outcome is probably separated "
                "(every row of some level or covariate pattern 0, or every one 1) or the "
                "weights leave too few rows"
            )
        beta = stage1.beta
        beta_se = np.sqrt(np.diag(solve(stage1.objective, theta, sigma=1.0).beta_cov))
        # Stage 2: (theta, beta) jointly from there, with a first trust region on the
        # scale of each parameter's uncertainty.
        start = np.concatenate([theta, beta])
        step = np.concatenate([0.1 * np.maximum(np.abs(theta), 0.1), np.maximum(beta_se, 1e-3)])
        bounds = np.concatenate([lower, np.full(beta.size, -np.inf)])
        parameters, value, second = minimize_bobyqa(deviance, start, bounds, initial_step=step)
        if not np.isfinite(value):
            raise FloatingPointError("the deviance is not finite at any (theta, beta) tried")
        theta, beta = deviance.split(parameters)
        modes = deviance.modes(theta, beta)
        solution = self._conditional_solution(deviance, modes)
        parameter_cov, method = self._hessian_cov(deviance, theta, beta)
        if parameter_cov is None:
            beta_cov, method = solution.beta_cov, "conditional"
            theta_se = np.full(deviance.n_theta, np.nan)
        else:
            beta_cov = parameter_cov[deviance.n_theta :, deviance.n_theta :]
            theta_se = np.sqrt(np.diag(parameter_cov)[: deviance.n_theta])
        self._set_fitted(
            parsed, design, deviance, modes.theta, modes.beta, modes.u, modes.eta, value,
            saturated, dropped, solution, beta_cov, theta_se,
        )  # fmt: skip
        self.convergence_.update(
            pirls_iterations=modes.iterations,
            pirls_converged=modes.converged,
            standard_errors=method,
            stage1=first,
            stage2=second,
        )
        if not (first["converged"] and second["converged"] and modes.converged):
            warnings.warn(
                f"MixedGLM: the fit stopped without converging ({self.convergence_})",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _fit_pql(self, parsed, design, deviance, saturated, dropped) -> None:
        """Penalised quasi-likelihood with the iterative solver (``_pql``)."""
        fit = fit_pql(deviance, theta_start(deviance.qs))
        theta_se = np.full(deviance.n_theta, np.nan)
        self._set_fitted(
            parsed, design, deviance, fit.theta, fit.beta, fit.u, fit.eta, fit.laplace,
            saturated, dropped, fit.solution, fit.solution.beta_cov, theta_se,
        )  # fmt: skip
        self.convergence_.update(fit.info, standard_errors="conditional")
        if not fit.info["converged"]:
            warnings.warn(
                f"MixedGLM: penalised quasi-likelihood stopped without converging ({fit.info})",
                ConvergenceWarning,
                stacklevel=3,
            )

    @staticmethod
    def _column(frame: pd.DataFrame, name: str | None, role: str, default: float) -> np.ndarray:
        if name is None:
            return np.full(len(frame), default)
        return numeric_matrix(frame, [name], role)[:, 0]

    def _check_outcome(self, y: np.ndarray, weights: np.ndarray, response: str | None) -> None:
        name = f"response column {response!r}" if response else "y"
        if np.any(weights < 0):
            raise ValueError(
                f"weights: column {self.weights!r} has {int(np.sum(weights < 0))} negative value(s)"
            )
        if not np.any(weights > 0):
            raise ValueError(
                f"weights: column {self.weights!r} is 0 in every row; there is nothing to fit"
            )
        observed = np.unique(y[weights > 0])
        if observed.size == 1:
            # The fixed effects' estimates are infinite (every probability 0 or 1, every
            # rate 0) and PIRLS has no finite mode; glmer stops: "Response is constant".
            raise ValueError(
                f"{name} is constant (every value {observed[0]:g}"
                f"{' where weights > 0' if self.weights else ''}): no variation to model "
                f"with family={self.family!r}; glmer refuses it too (Response is constant)"
            )
        if self.family == "binomial":
            if self.weights is None and not np.all((y == 0) | (y == 1)):
                bad = pd.unique(y[(y != 0) & (y != 1)])[:5]
                raise ValueError(
                    f"{name} must be 0/1 for family='binomial' (found e.g. {list(bad)}); "
                    "for proportions of successes name the trials with weights='column'"
                )
            if np.any((y < 0) | (y > 1)):
                raise ValueError(
                    f"{name} must be a proportion in [0, 1] for family='binomial' with "
                    f"weights={self.weights!r}"
                )
            successes = y * weights
            if not np.allclose(successes, np.round(successes), atol=1e-7):
                warnings.warn(
                    f"{name} times weights {self.weights!r} is not a whole number of "
                    "successes in some rows",
                    UserWarning,
                    stacklevel=3,
                )
        else:
            if np.any(y < 0):
                raise ValueError(
                    f"{name} has {int(np.sum(y < 0))} negative value(s); family='poisson' "
                    "needs counts"
                )
            if not np.allclose(y, np.round(y)):
                warnings.warn(
                    f"{name} has non-integer values for family='poisson'",
                    UserWarning,
                    stacklevel=3,
                )

    @staticmethod
    def _conditional_solution(deviance: GlmmDeviance, modes: Modes) -> Solution:
        """Conditional (co)variances from the exact factor at the modes, with X included
        for the conditional cov(beta) that is used where the Hessian fails."""
        family = deviance.family
        mu = family.mean(modes.eta)
        mu_eta = family.mu_eta(mu)
        cross = weighted_cross_products(
            deviance.matrices,
            modes.eta - deviance.offset + (deviance.y - mu) / mu_eta,
            deviance.weights * mu_eta,
        )
        return solve(
            ProfiledDeviance(cross, deviance.qs, deviance.levels, False), modes.theta, sigma=1.0
        )

    def _set_fitted(
        self,
        parsed,
        design: Design,
        deviance: GlmmDeviance,
        theta: np.ndarray,
        beta: np.ndarray,
        u: np.ndarray,
        eta: np.ndarray,
        value: float,
        saturated: float,
        dropped: list[str],
        solution: Solution,
        beta_cov: np.ndarray,
        theta_se: np.ndarray,
    ) -> None:
        family = deviance.family
        names = pd.Index(design.fixed_names, dtype=object)
        self._parsed = parsed
        self._deviance = deviance
        self._design_terms = design.terms
        self._fixed_spec = design.fixed_spec
        self._fixed_kept = design.kept
        self._category_rows = design.category_rows
        self._templates = deviance.templates(theta)
        self.theta_ = theta
        self.theta_se_ = theta_se
        self.coef_ = pd.Series(beta, index=names)
        self.coef_cov_ = pd.DataFrame(beta_cov, index=names, columns=names)
        self.coef_se_ = pd.Series(np.sqrt(np.diag(beta_cov)), index=names)
        n_parameters = deviance.n_theta + deviance.p
        self.objective_ = float(value)
        self.loglik_ = -0.5 * float(value)
        kernel = family.kernel(deviance.y, deviance.weights, eta)
        self.deviance_ = float(np.sum(kernel) - saturated)
        self.n_obs_ = int(len(design.y))
        self.aic_ = self.objective_ + 2 * n_parameters
        self.bic_ = self.objective_ + np.log(self.n_obs_) * n_parameters
        self.dropped_columns_ = dropped
        self._term_b = deviance.random_effects(self._templates, u)
        self._term_cov = solution.b_cov
        self.ranef_, self.ranef_var_, self.ranef_cov_, self.n_levels_ = effects_by_factor(
            design.terms, self._term_b, self._term_cov
        )
        self.varcorr_ = self._varcorr()
        diagonal = np.isfinite(theta_lower_bounds(deviance.qs))
        self.is_singular_ = bool(np.any(theta[diagonal] < SINGULAR_TOLERANCE))
        self.convergence_ = {"singular": self.is_singular_}

    @staticmethod
    def _hessian_cov(
        deviance: GlmmDeviance, theta: np.ndarray, beta: np.ndarray
    ) -> tuple[np.ndarray | None, str]:
        """cov(theta, beta) as 2 H^-1, H the central-difference Hessian of the deviance
        in (theta, beta); its beta block is glmer's default ``vcov``."""
        x = np.concatenate([theta, beta])
        k = x.size
        h = HESSIAN_STEP
        u = deviance.modes(theta, beta).u

        def at(shift: np.ndarray) -> float:
            theta_at, beta_at = deviance.split(x + shift)
            # Each evaluation starts PIRLS at the optimum's modes: no path dependence.
            return deviance.value(deviance.modes(theta_at, beta_at, u=u))

        center = at(np.zeros(k))
        H = np.zeros((k, k))
        unit = np.eye(k) * h
        for i in range(k):
            H[i, i] = (at(unit[i]) - 2 * center + at(-unit[i])) / h**2
            for j in range(i):
                H[i, j] = H[j, i] = (
                    at(unit[i] + unit[j])
                    - at(unit[i] - unit[j])
                    - at(-unit[i] + unit[j])
                    + at(-unit[i] - unit[j])
                ) / (4 * h**2)
        try:
            np.linalg.cholesky(H)
        except np.linalg.LinAlgError:
            warnings.warn(
                "MixedGLM: the Hessian of the deviance is not positive definite; standard "
                "errors are the conditional ones (glmer's use.hessian=FALSE)",
                UserWarning,
                stacklevel=4,
            )
            return None, "conditional"
        cov = 2 * np.linalg.inv(H)
        return (cov + cov.T) / 2, "hessian"

    def _varcorr(self) -> pd.DataFrame:
        rows = varcorr_rows(self._design_terms, self._templates, 1.0)
        return pd.DataFrame(rows, columns=VARCORR_COLUMNS)

    # -- prediction ------------------------------------------------------------------
    def predict(
        self,
        X: Any,
        *,
        include_random: bool | Sequence[str] = True,
        scale: str = "response",
    ) -> np.ndarray:
        """Predicted mean (probability or rate) or linear predictor for new rows.

        Parameters
        ----------
        X : DataFrame (pandas or polars)
            Holds every column the formula uses, and the offset column if any.
        include_random : bool or sequence of str
            True: conditional on the estimated random effects; False: fixed effects
            only (random effects at 0, as glmer's ``re.form = NA``); a list of
            grouping-factor names: only those terms.
        scale : {"response", "link"}
            The mean (``type = "response"``) or the linear predictor (``"link"``).

        Returns
        -------
        numpy.ndarray
        """
        check_is_fitted(self, "coef_")
        check_policy(self.new_levels)
        if scale not in SCALES:
            raise ValueError(f"scale: expected one of {SCALES}, got {scale!r}")
        frame = validated_frame(self, X, reset=False)
        eta = self._fixed_matrix(frame) @ self.coef_.to_numpy()
        eta += self._column(frame, self.offset, "offset", 0.0)
        selected = self._included_factors(include_random)
        for term, b in zip(self._design_terms, self._term_b, strict=True):
            group = factor_keys(frame, term.spec.group_cols)
            codes = term.codes(group)
            unseen = codes < 0
            if unseen.any() and self.new_levels == "error":
                raise unseen_levels_error(term.spec.group, group[unseen])
            if term.spec.group in selected:
                values = np.asarray(term.model_spec.get_model_matrix(frame), dtype=float)
                seen = ~unseen
                eta[seen] += np.einsum("ij,ij->i", values[seen], b[codes[seen]])
        if scale == "link":
            return eta
        return Family(self.family).mean(eta)

    def predict_proba(self, X: Any, *, include_random: bool | Sequence[str] = True) -> np.ndarray:
        """Probabilities of 0 and 1 per row, shape (n, 2); binomial family only."""
        check_is_fitted(self, "coef_")
        if self.family != "binomial":
            raise ValueError(f"predict_proba: needs family='binomial', not {self.family!r}")
        p = self.predict(X, include_random=include_random)
        return np.column_stack([1 - p, p])

    # -- inference -------------------------------------------------------------------
    def confint(self, level: float = 0.95) -> pd.DataFrame:
        """Wald confidence intervals for the fixed effects, as
        ``confint(fit, method = "Wald", parm = "beta_")``."""
        check_is_fitted(self, "coef_")
        lower, upper = f"{100 * (1 - level) / 2:.1f} %", f"{100 * (1 + level) / 2:.1f} %"
        z = stats.norm.ppf(0.5 + level / 2)
        return pd.DataFrame(
            {lower: self.coef_ - z * self.coef_se_, upper: self.coef_ + z * self.coef_se_}
        )

    # -- reporting -------------------------------------------------------------------
    def summary(self) -> str:
        """A summary table in the layout of lme4's ``print(summary(fit))``."""
        check_is_fitted(self, "coef_")
        link = "logit" if self.family == "binomial" else "log"
        if self.solver_ == "iterative":
            fitted_by = (
                "penalized quasi-likelihood (logLik: the Laplace approximation at its "
                "estimates; standard errors conditional)"
            )
        elif self.n_agq == 1:
            fitted_by = "maximum likelihood (Laplace Approximation)"
        else:
            fitted_by = (
                f"maximum likelihood (Adaptive Gauss-Hermite Quadrature, nAGQ = {self.n_agq})"
            )
        lines = [
            f"Generalized linear mixed model fit by {fitted_by}",
            f" Family: {self.family}  ( {link} )",
            f"Formula: {self.formula}",
            f"     AIC: {self.aic_:.4f}    BIC: {self.bic_:.4f}    logLik: {self.loglik_:.4f}"
            f"    deviance: {self.deviance_:.4f}",
            "",
        ]
        lines += [*self._random_effects_lines(), "", "Fixed effects:"]
        z = self.coef_ / self.coef_se_
        fixed = pd.DataFrame(
            {
                "Estimate": self.coef_,
                "Std. Error": self.coef_se_,
                "z value": z,
                "Pr(>|z|)": 2 * stats.norm.sf(np.abs(z)),
            }
        )
        lines.append(fixed.to_string(float_format=lambda v: f"{v:.4g}"))
        if self.is_singular_:
            lines += ["", "boundary (singular) fit: see help('isSingular')"]
        return "\n".join(lines)
