"""The generalized linear mixed model estimator (lme4's glmer and glmer.nb): design ->
deviance(theta, beta) by PIRLS -> optimise in two stages (and over the negative
binomial's theta) -> fitted state."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import minimize_scalar
from scipy.special import digamma, polygamma
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import ClassifierTags, RegressorTags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from estimators._columns import (
    as_target,
    check_policy,
    numeric_matrix,
    outcome_vector,
    unseen_levels_error,
)
from estimators.mixed._design import (
    Design,
    DesignMatrices,
    build_design,
    design_matrices,
    effects_by_factor,
    factor_keys,
    formula_frame,
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
from estimators.mixed._formula import ParsedFormula, parse_formula
from estimators.mixed._optimize import minimize_bobyqa
from estimators.mixed._pirls import Family, GlmmDeviance, Modes, check_family
from estimators.mixed._pql import fit_pql
from estimators.mixed._solvers import choose_solver

SINGULAR_TOLERANCE = 1e-4  # lme4's isSingular default
HESSIAN_STEP = 1e-3  # central differences of the deviance for cov(beta)
# Diagonal theta entries the optimisers leave below BOUNDARY_THETA are set to 0 where the
# deviance is higher there by less than BOUNDARY_RISE, relative: its rounding error.
BOUNDARY_THETA = 1e-3
BOUNDARY_RISE = 1e-12
# solver="auto": the Laplace fit costs about 35 exact linear-model fits (PIRLS at every
# evaluation, two stages; make bench-scale: 10.7 s at 100k rows and 169 s at 1M rows
# against 10.5 s and 161 s so estimated); it is kept while estimated under two minutes,
# since penalised quasi-likelihood is an approximation of another kind, not just a solver.
EXACT_SECONDS = 120.0
EXACT_WORK = 35.0
SCALES = ("response", "link")
# glmer.nb: log(theta) is searched within +-3 of the first estimate (its `interval`);
# glmer.nb's own tolerance is 5e-5 in log(theta), ours tighter so that the estimate is
# the profile's optimum to the precision of the fits inside it.
NB_INTERVAL = 3.0
NB_TOLERANCE = 1e-5
# MASS::theta.ml as est_theta calls it: at most 20 Newton steps, to 2 * 5e-5.
THETA_ML_LIMIT = 20
THETA_ML_EPS = 1e-4


@dataclasses.dataclass
class GlmmData:
    """The data of a fit, read and checked once: the design on the rows as given and
    the rows merged into patterns (what PIRLS iterates over)."""

    parsed: ParsedFormula
    design: Design
    dropped: list[str]
    y: np.ndarray  # response per row as given (proportion or count)
    weights: np.ndarray  # prior weights per row as given
    matrices: DesignMatrices  # of the merged rows
    y_rows: np.ndarray
    weight_rows: np.ndarray
    offset_rows: np.ndarray
    row_pattern: np.ndarray  # the merged row of each row as given
    classes: np.ndarray | None = None  # binomial: the class labels, y's 1 is classes[1]

    @property
    def qs(self) -> list[int]:
        return [term.q for term in self.design.terms]

    @property
    def levels(self) -> list[int]:
        return [len(term.levels) for term in self.design.terms]

    @property
    def names(self) -> list[str]:
        return [term.spec.group for term in self.design.terms]

    def deviance(self, family: Family, n_agq: int) -> GlmmDeviance:
        """The deviance function of these data under ``family``.

        Constants of the data as given, before rows are merged: glmer's Laplace value
        (and its nAGQ = 0 value) keeps the normalising constants, its quadrature value
        uses deviance residuals.
        """
        if n_agq <= 1:
            constant = family.constant(self.y, self.weights)
        else:
            constant = -family.saturated(self.y, self.weights)
        return GlmmDeviance(
            self.matrices,
            self.qs,
            self.levels,
            family,
            self.y_rows,
            self.weight_rows,
            self.offset_rows,
            n_agq=max(n_agq, 1),
            constant=constant,
        )


@dataclasses.dataclass
class Optimum:
    """Where glmer's stages end: (theta, beta), or theta alone at nAGQ = 0."""

    parameters: np.ndarray
    value: float
    stages: dict


def collapse_patterns(
    design: Design, y: np.ndarray, weights: np.ndarray, offset: np.ndarray
) -> tuple[Design, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge rows with identical fixed-effects row, random-effects levels and covariates
    and offset into one row of summed weights and weighted mean response.

    The log-likelihood kernels of the families are linear in (weights, weights * y) for
    a given linear predictor, so the merged data give the same estimates; 0/1 rows
    become (successes / trials, trials). Also returns the merged row of every row.
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
    return collapsed, mean, total, offset[first], inverse


def at_boundary(
    function: Callable[[np.ndarray], float],
    parameters: np.ndarray,
    value: float,
    qs: list[int],
    stage: dict,
) -> tuple[np.ndarray, float]:
    """The optimum with its small diagonal theta entries set to 0 where the deviance is
    the same there to rounding error.

    A variance that the data cannot tell from 0 leaves the deviance flat near it, to
    fourth order in theta for a random intercept per row of a 0/1 outcome, so where
    an optimiser stops in [0, ``BOUNDARY_THETA``) is decided by rounding error (2e-4
    on one such fit, whose deviance is 1 ulp below the boundary's); such a fit is
    singular, as glmer's. The boundary is tried once; ``stage`` records whether it
    was taken (``boundary``).
    """
    diagonal = np.flatnonzero(np.isfinite(theta_lower_bounds(qs)))
    small = diagonal[(parameters[diagonal] > 0) & (parameters[diagonal] < BOUNDARY_THETA)]
    stage["boundary"] = False
    if small.size == 0:
        return parameters, value
    trial = parameters.copy()
    trial[small] = 0.0
    at_zero = function(trial)
    if not at_zero - value <= BOUNDARY_RISE * (abs(value) + 0.1):
        return parameters, value
    stage["boundary"] = True
    return trial, float(at_zero)


def theta_ml(y: np.ndarray, mu: np.ndarray, weights: np.ndarray) -> float:
    """The maximum-likelihood theta of a negative binomial with known means, by
    Newton's method from the moment estimate (MASS's ``theta.ml``, as lme4's
    ``est_theta`` calls it on a Poisson fit's fitted values)."""
    n = float(np.sum(weights))
    theta = n / float(np.sum(weights * (y / mu - 1) ** 2))
    for _ in range(THETA_ML_LIMIT - 1):
        theta = abs(theta)
        score = np.sum(
            weights
            * (
                digamma(theta + y)
                - digamma(theta)
                + np.log(theta)
                + 1
                - np.log(theta + mu)
                - (y + theta) / (mu + theta)
            )
        )
        information = np.sum(
            weights
            * (
                -polygamma(1, theta + y)
                + polygamma(1, theta)
                - 1 / theta
                + 2 / (mu + theta)
                - (y + theta) / (mu + theta) ** 2
            )
        )
        step = score / information
        theta += step
        if abs(step) <= THETA_ML_EPS:
            break
    return float(max(theta, 0.0))


def sample_weights(sample_weight: Any, n_rows: int) -> np.ndarray:
    """``sample_weight`` as prior weights, one per row, checked."""
    if sample_weight is None:
        return np.ones(n_rows)
    if type(sample_weight).__module__.startswith("polars"):
        sample_weight = sample_weight.to_numpy()
    try:
        values = np.asarray(sample_weight, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("sample_weight: expected numbers, one per row of X") from None
    if values.ndim == 0:
        values = np.full(n_rows, float(values))
    if values.shape != (n_rows,):
        raise ValueError(
            f"sample_weight: expected {n_rows} values (one per row of X), got shape {values.shape}"
        )
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"sample_weight: {int(bad.sum())} missing or infinite value(s)")
    if np.any(values < 0):
        raise ValueError(f"sample_weight: {int(np.sum(values < 0))} negative value(s)")
    return values


def binary_outcome(
    outcome: Any, weights: np.ndarray, *, name: str, weighted: bool
) -> tuple[np.ndarray, np.ndarray]:
    """A binomial outcome as the classes and, per row, 1 for ``classes[1]`` and 0 for
    ``classes[0]``, or the proportion of successes.

    Two labels of any kind (0/1, 1/2, text, booleans) are classes, sorted as
    ``numpy.unique`` sorts them, as scikit-learn's classifiers read them. Numbers in
    [0, 1] that are not all 0 or 1 are proportions of successes when there are prior
    weights (``weighted``: the trials, glmer's ``weights=``); the classes are then
    ``[0, 1]``.

    Parameters
    ----------
    outcome : array-like
        One value per row (``len(weights)`` rows).
    weights : numpy.ndarray
        The prior weights, already checked: a class seen only in rows of weight 0 is
        not seen.
    name : str
        The outcome as errors name it (``y`` or the response column).
    weighted : bool
        Whether there are prior weights (a weights column or ``sample_weight``).

    Returns
    -------
    classes : numpy.ndarray
    target : numpy.ndarray
        Floats: 0/1, or proportions.

    Raises
    ------
    ValueError
        Naming the outcome: missing values, a continuous outcome (without weights,
        or outside [0, 1]), more than two classes, one class among the rows of
        positive weight.
    """
    n_rows = len(weights)
    values = outcome_vector(outcome, n_rows, name, stacklevel=5)
    missing = pd.isna(values) if values.dtype.kind in "OUS" else np.zeros(n_rows, bool)
    if values.dtype.kind in "fc":
        missing = ~np.isfinite(values)
    if missing.any():
        raise ValueError(f"{name}: {int(missing.sum())} missing or infinite value(s)")
    if values.dtype.kind == "f" and not np.all(values == np.round(values)):
        if weighted and np.all((values >= 0) & (values <= 1)):
            return np.array([0, 1]), values.astype(float)
        bad = pd.unique(values[values != np.round(values)])[:5]
        raise ValueError(
            f"{name} must be 0/1 or two class labels for family='binomial' (found e.g. "
            f"{list(bad)}: Unknown label type: continuous); for proportions of successes "
            "in [0, 1] name the trials with weights='column' or pass them as sample_weight"
        )
    try:
        classes, codes = np.unique(values, return_inverse=True)
    except TypeError:
        raise ValueError(
            f"{name} mixes values of several types (Unknown label type: mixed); convert "
            "the labels to one type"
        ) from None
    if classes.size > 2:
        raise ValueError(
            f"{name} must be 0/1 or two class labels for family='binomial', got "
            f"{classes.size} classes (e.g. {list(classes[:5])}). Only binary "
            "classification is supported. For proportions of successes name the trials "
            "with weights='column' or pass them as sample_weight"
        )
    present = np.unique(codes[weights > 0])
    if present.size < 2:
        # Every probability would be 0 or 1, the fixed effects infinite; glmer stops:
        # "Response is constant".
        where = " where weights > 0" if weighted else ""
        raise ValueError(
            f"{name} is constant (every value {classes[present[0]]!r}{where}): only one "
            "class, and a classifier needs two; glmer refuses it too (Response is constant)"
        )
    return classes, codes.astype(float)


def _is_classifier(model: MixedGLM) -> bool:
    """Whether ``model`` is a classifier (``family="binomial"``): only then does it have
    ``predict_proba`` and ``decision_function``, so that scikit-learn (``hasattr``)
    treats a count model as the regressor it is."""
    if model.family != "binomial":
        raise AttributeError(
            f"this method needs family='binomial' (a classifier), not {model.family!r}"
        )
    return True


class MixedGLM(FittedMixedModel, BaseEstimator):
    """Generalized linear mixed model in lme4's formula syntax, fitted as ``glmer`` (and
    ``glmer.nb``).

    ``g(E[y | b]) = offset + X beta + Z b`` with ``b ~ N(0, Lambda Lambda')``. The
    conditional modes of b are found by penalised iteratively reweighted least squares
    inside the Laplace approximation of the likelihood (adaptive Gauss-Hermite
    quadrature with ``n_agq > 1``); glmer's two stages are followed: theta with beta
    found inside PIRLS, then (theta, beta) jointly, both with BOBYQA. With
    ``n_agq=0`` the first stage is the fit, as ``glmer(..., nAGQ = 0)``.

    With ``family="binomial"`` the model is a scikit-learn classifier: the outcome is
    any two class labels (0/1, 1/2, text), ``classes_`` holds them sorted and the model
    is of the probability of ``classes_[1]``; ``predict`` gives labels,
    ``predict_proba`` their probabilities, ``score`` the accuracy. With the count
    families it is a regressor (``predict`` gives the mean, ``score`` R^2) and has no
    ``predict_proba`` or ``decision_function``.

    Parameters
    ----------
    formula : str
        lme4 syntax, e.g. ``"y ~ x + (1 | user) + (1 | item)"``, with the random-effects
        terms :class:`MixedLM` takes and ``offset(...)`` terms (``offset(log(days))``),
        added to the linear predictor in fitting and prediction. For binomial data the
        response is two class labels (the model is of the second, in sorted order), or
        numbers in [0, 1], not all 0 or 1, that are proportions of successes when there
        are prior weights (``weights`` or ``sample_weight``: the trials), as in glmer.
    family : {"binomial", "poisson", "negative_binomial"}
        ``"negative_binomial"`` is ``glmer.nb``'s model: variance ``mu + mu^2 / theta``
        with theta (R's ``size``) estimated by maximising the Laplace likelihood over
        it, a GLMM refitted at each value, or fixed by ``nb_theta``. With ``n_agq > 1``
        the full quadrature likelihoods are compared across theta (glmer.nb compares
        its quadrature deviances, which leave out terms that depend on theta, and
        can end at the edge of its interval: theta 0.083 and a singular fit on
        simulated counts whose theta is 1.5).
    link : str, optional
        None for the canonical link (logit for binomial, log for the counts); for
        binomial also ``"probit"``, ``"cloglog"`` or ``"cauchit"``, as
        ``binomial(link = ...)``.
    n_agq : int
        Points of adaptive Gauss-Hermite quadrature; 1 is the Laplace approximation.
        More than 1 needs a single scalar term like ``(1 | g)``, as in glmer. 0 is
        glmer's ``nAGQ = 0``: theta maximises the Laplace likelihood with the fixed
        effects found inside PIRLS (faster; the fixed effects are the conditional
        modes, their standard errors conditional).
    nb_theta : float, optional
        For ``family="negative_binomial"``: a fixed theta, or None to estimate it.
    weights : str or int, optional
        Column of X (of a plain array, its index) with prior weights: the number of
        trials of each row for binomial proportions (glmer's ``weights=``);
        multiplied by ``sample_weight`` in fit.
    offset : str or int, optional
        Column of X (of a plain array, its index) added to the linear predictor (log
        exposure for counts), besides any ``offset(...)`` terms of the formula.
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
        rows of 50k users crossed with 1k items are estimated just over). A negative
        binomial theta is estimated with the exact fit only.

    Attributes
    ----------
    coef_ : pandas.Series
        Fixed effects by name (lme4's names).
    coef_se_ : pandas.Series
        Their standard errors, from the finite-difference Hessian of the deviance in
        (theta, beta), as glmer's ``vcov`` (the conditional estimate where that Hessian
        is not positive definite, and at ``n_agq=0``, as glmer;
        ``convergence_["standard_errors"]`` says which).
    coef_cov_ : pandas.DataFrame
    theta_ : numpy.ndarray
        Relative covariance parameters, as ``getME(fit, "theta")``.
    theta_se_ : numpy.ndarray
        Their standard errors from the same Hessian as ``coef_se_`` (NaN where the
        conditional estimate is used). The scale is 1 in these families, so for a
        scalar term like ``(1 | g)`` theta is the standard deviation of the random
        effect and ``theta_ +- 1.96 theta_se_`` its Wald interval.
    nb_theta_ : float or None
        The negative binomial's theta (``getME(fit, "glmer.nb.theta")``); None for the
        other families.
    classes_ : numpy.ndarray
        For ``family="binomial"`` only: the two class labels, sorted (``[0, 1]`` for
        proportions).
    objective_ : float
        -2 log-likelihood (the Laplace or quadrature approximation).
    loglik_ : float
        ``logLik(fit)``.
    deviance_ : float
        ``deviance(fit)``: sum of squared deviance residuals at the conditional modes.
    aic_, bic_ : float
        As ``AIC(fit)``, ``BIC(fit)``: a negative binomial's theta counts as a
        parameter, as in lme4.
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
        Rows of the data, apart from those of weight 0 (left out of the fit).
    n_patterns_ : int
        Distinct rows after merging identical ones (what the fit iterates over).
    n_levels_ : dict
    dropped_columns_ : list of str
    convergence_ : dict
        Per stage: optimiser, evaluations, return code, converged; PIRLS convergence at
        the optimum; singular fit; how the standard errors were computed; for an
        estimated negative binomial theta, ``nb_theta`` (first estimate, interval,
        fits, the profile as (theta, -2 log-likelihood) pairs, whether the estimate is
        at the interval's edge).

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
    >>> labels = model.predict(data)
    >>> model.classes_.tolist(), sorted(set(labels.tolist())), bool(model.score(data) > 0.6)
    ([0, 1], [0, 1], True)

    Any two class labels, as scikit-learn's classifiers take them; the model is of the
    probability of the second in sorted order, ``classes_[1]``:

    >>> text = np.where(data["y"] == 1, "yes", "no")
    >>> as_text = MixedGLM("y ~ x + (1 | g)").fit(data.drop(columns="y"), text)
    >>> as_text.classes_.tolist(), bool(np.allclose(as_text.coef_, model.coef_))
    (['no', 'yes'], True)
    """

    def __init__(
        self,
        formula: str = "",
        *,
        family: str = "binomial",
        link: str | None = None,
        n_agq: int = 1,
        nb_theta: float | None = None,
        weights: str | int | None = None,
        offset: str | int | None = None,
        new_levels: str = "population",
        solver: str = "auto",
    ) -> None:
        self.formula = formula
        self.family = family
        self.link = link
        self.n_agq = n_agq
        self.nb_theta = nb_theta
        self.weights = weights
        self.offset = offset
        self.new_levels = new_levels
        self.solver = solver

    def __sklearn_tags__(self) -> Any:
        # One class, two kinds of estimator: a classifier of 0/1 outcomes, a regressor
        # of counts (scikit-learn's is_classifier reads estimator_type).
        tags = super().__sklearn_tags__()
        if self.family == "binomial":
            tags.estimator_type = "classifier"
            tags.classifier_tags = ClassifierTags(multi_class=False)
            tags.regressor_tags = None
        else:
            tags.estimator_type = "regressor"
            tags.classifier_tags = None
            tags.regressor_tags = RegressorTags()
            # Counts are never negative (scikit-learn's checks then draw y >= 1).
            tags.target_tags.positive_only = True
        return tags

    # -- the data --------------------------------------------------------------------
    def _check_settings(self) -> None:
        check_policy(self.new_levels)
        check_family(self.family, self.link, self.nb_theta)
        if (
            isinstance(self.n_agq, bool)
            or not isinstance(self.n_agq, int | np.integer)
            or self.n_agq < 0
        ):
            raise ValueError(
                f"n_agq: expected a non-negative integer (0, 1 for Laplace, or more "
                f"quadrature points), got {self.n_agq!r}"
            )

    def _read(self, X: Any, y: Any, sample_weight: Any) -> GlmmData:
        """Read and check the data of a fit (records the columns of X on ``self``)."""
        self._check_settings()
        parsed = parse_formula(self.formula)
        frame = formula_frame(self, X, reset=True)
        response = parsed.response if y is None else None
        outcome = resolve_response(parsed, frame, y)
        weights = self._column(frame, self._weights_column, "weights", default=1.0)
        weights = weights * sample_weights(sample_weight, len(frame))
        offset = self._offset_vector(frame)
        weighted = sample_weight is not None
        self._check_weights(weights, weighted)
        classes = None
        if self.family == "binomial":
            classes, target = binary_outcome(
                outcome,
                weights,
                name=f"response column {response!r}" if response else "y",
                weighted=weighted or self.weights is not None,
            )
        else:
            target = as_target(outcome, len(frame))
        self._check_outcome(target, weights, response, weighted)
        if not np.all(weights > 0):
            # A row of weight 0 adds nothing to the likelihood; it is left out before the
            # design, as R's glm drops zero-weight cases, so that the fit is the fit to
            # the other rows to the last digit (its levels alone would add effects fixed
            # at 0 and change the optimiser's path). Such levels count as unseen.
            rows = np.flatnonzero(weights > 0)
            frame, target = frame.iloc[rows], target[rows]
            weights, offset = weights[rows], offset[rows]
        design, dropped = build_design(parsed, frame, target)
        qs = [term.q for term in design.terms]
        if self.n_agq > 1 and (len(qs) != 1 or qs[0] != 1):
            raise ValueError(
                f"n_agq={self.n_agq}: adaptive Gauss-Hermite quadrature needs a single "
                "scalar random-effects term like (1 | g); use n_agq=1 (Laplace)"
            )
        collapsed, y_rows, weight_rows, offset_rows, row_pattern = collapse_patterns(
            design, target, weights, offset
        )
        return GlmmData(
            parsed=parsed,
            design=design,
            dropped=dropped,
            y=target,
            weights=weights,
            matrices=design_matrices(collapsed),
            y_rows=y_rows,
            weight_rows=weight_rows,
            offset_rows=offset_rows,
            row_pattern=row_pattern,
            classes=classes,
        )

    def deviance_function(
        self, X: Any, y: Any = None, *, sample_weight: Any = None
    ) -> Callable[[np.ndarray], float]:
        """The objective the fit minimises, as a function, without fitting (glmer's
        ``devFunOnly = TRUE``).

        Parameters
        ----------
        X : DataFrame
            The data, as for :meth:`fit`.
        y : array-like, optional
            The response, when the formula does not name it.
        sample_weight : array-like, optional
            Prior weights, as for :meth:`fit`.

        Returns
        -------
        callable
            For ``n_agq >= 1``, ``f(concatenate([theta, beta]))``: -2 log-likelihood
            (Laplace or quadrature) with the conditional modes found by PIRLS, glmer's
            stage-2 function; for ``n_agq = 0``, ``f(theta)`` with beta found inside
            PIRLS too. It returns inf where PIRLS fails. For
            ``family="negative_binomial"`` it is the function at ``nb_theta``, which
            must then be given.
        """
        model = clone(self)  # reading the data records the columns of X
        data = model._read(X, y, sample_weight)
        if self.family == "negative_binomial" and self.nb_theta is None:
            raise ValueError(
                "nb_theta: the deviance function of family='negative_binomial' is at a "
                "fixed theta; set nb_theta"
            )
        deviance = data.deviance(Family(self.family, self.link, self.nb_theta), self.n_agq)
        return deviance.profiled if self.n_agq == 0 else deviance

    # -- fitting ---------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, *, sample_weight: Any = None) -> MixedGLM:
        """Fit the model.

        Parameters
        ----------
        X : DataFrame (pandas or polars) or 2-d array
            Every column the formula uses, and the ``weights`` and ``offset`` columns.
            An array's columns are named by their text: the formula's `` `0` `` is
            column 0 (in the fixed part write ``Q('1')``, since formulaic reads a
            backtick-quoted number as the number).
        y : array-like, optional
            The response; may be omitted when the formula names it.
        sample_weight : array-like, optional
            Prior weights per row, as glmer's ``weights=`` (multiplied by the
            ``weights`` column when both are given): for binomial proportions, the
            trials. Rows of weight 0 are left out of the fit.

        Returns
        -------
        MixedGLM
            self, fitted.
        """
        data = self._read(X, y, sample_weight)
        warn_dropped(data.dropped, stacklevel=2)
        n_agq = int(self.n_agq)
        estimate_nb = self.family == "negative_binomial" and self.nb_theta is None
        # An estimated theta starts from a Poisson fit, as glmer.nb does.
        family = Family("poisson") if estimate_nb else Family(self.family, self.link, self.nb_theta)
        deviance = data.deviance(family, n_agq)
        # Cross-products at the prior weights: the size of the problem for the choice.
        sized = weighted_cross_products(data.matrices, data.y_rows, data.weight_rows)
        choice = choose_solver(
            self.solver,
            ProfiledDeviance(sized, data.qs, data.levels, reml=False),
            data.names,
            "MixedGLM",
            exact_seconds=EXACT_SECONDS,
            exact_work=EXACT_WORK,
            solvers=("auto", "exact", "iterative"),
        )
        nb_info = None
        if choice.solver == "iterative":
            if n_agq != 1:
                what = "glmer's nAGQ = 0 stage" if n_agq == 0 else "quadrature"
                raise ValueError(f"n_agq={n_agq}: {what} needs solver='exact'")
            if estimate_nb:
                raise ValueError(
                    "nb_theta: an estimated negative binomial theta needs the exact fit "
                    "(solver='exact'); or give nb_theta to fit at a fixed theta"
                )
            self._fit_pql(data, deviance)
        else:
            optimum = None
            if estimate_nb:
                deviance, optimum, nb_info = self._estimate_nb_theta(data, deviance, n_agq)
            self._fit_laplace(data, deviance, optimum)
        self.nb_theta_ = deviance.family.nb_theta
        if self.family == "binomial":
            self.classes_ = data.classes
        elif hasattr(self, "classes_"):
            del self.classes_  # from an earlier fit as a classifier
        self.n_patterns_ = int(len(data.y_rows))
        self.solver_ = choice.solver
        self.convergence_.update(solver=choice.solver, solver_reason=choice.reason)
        if nb_info is not None:
            self.convergence_["nb_theta"] = nb_info
        return self

    def _optimise(
        self, deviance: GlmmDeviance, start: np.ndarray | None = None, step_scale: float = 1.0
    ) -> Optimum:
        """glmer's stages, each minimised by BOBYQA: theta with beta inside PIRLS, then
        (theta, beta) jointly (not at n_agq = 0); ``start`` skips the first stage where
        an earlier optimum (of a neighbouring negative binomial theta, or the same
        optimum before polishing) is known, and ``step_scale`` shrinks the first trust
        region of stage 2 from there."""
        qs = deviance.qs
        lower = theta_lower_bounds(qs)
        stages: dict = {}
        if start is None or self.n_agq == 0:
            theta0 = theta_start(qs) if start is None else deviance.split(start)[0]
            theta, value, stages["stage1"] = minimize_bobyqa(deviance.profiled, theta0, lower)
            stage1 = None
            if np.isfinite(value):
                with contextlib.suppress(np.linalg.LinAlgError, FloatingPointError):
                    stage1 = deviance.modes(theta)
            if stage1 is None:
                # A numerical error deep in the factorisation would not say what is wrong
                # with the data; this does.
                raise FloatingPointError(
                    "MixedGLM: the penalised least-squares system is singular at every "
                    "theta tried, so no conditional modes exist; the outcome is probably "
                    "separated (every row of some level or covariate pattern 0, or every "
                    "one 1) or the weights leave too few rows"
                )
            if self.n_agq == 0:
                theta, value = at_boundary(deviance.profiled, theta, value, qs, stages["stage1"])
                return Optimum(theta, value, stages)
            beta = stage1.beta
            beta_se = np.sqrt(np.diag(deviance.beta_cov(stage1)))
        else:
            theta, beta = deviance.split(start)
            modes = deviance.modes(theta, beta)
            beta_se = np.sqrt(np.diag(deviance.beta_cov(modes)))
        # Stage 2: (theta, beta) jointly, with a first trust region on the scale of each
        # parameter's uncertainty.
        start = np.concatenate([theta, beta])
        step = step_scale * np.concatenate(
            [0.1 * np.maximum(np.abs(theta), 0.1), np.maximum(beta_se, 1e-3)]
        )
        bounds = np.concatenate([lower, np.full(beta.size, -np.inf)])
        parameters, value, stages["stage2"] = minimize_bobyqa(
            deviance, start, bounds, initial_step=step
        )
        if not np.isfinite(value):
            raise FloatingPointError("the deviance is not finite at any (theta, beta) tried")
        parameters, value = at_boundary(deviance, parameters, value, qs, stages["stage2"])
        return Optimum(parameters, value, stages)

    def _estimate_nb_theta(
        self, data: GlmmData, poisson: GlmmDeviance, n_agq: int
    ) -> tuple[GlmmDeviance, Optimum, dict]:
        """glmer.nb: a first theta by maximum likelihood given a Poisson GLMM's fitted
        means, then the theta maximising the GLMM's likelihood, the GLMM refitted at
        every theta tried (Brent's search over log(theta), as lme4's optTheta)."""
        optimum = self._optimise(poisson)
        if n_agq == 0:
            modes = poisson.modes(optimum.parameters)
        else:
            modes = poisson.modes(*poisson.split(optimum.parameters))
        # Rows of one pattern and one count share a mean: summed as one row of their
        # total weight, a row of weight 2 and two equal rows give the same sums to the
        # last digit (and so the same interval and fits below).
        cells = np.column_stack([data.row_pattern, data.y])
        _, first_row, cell = np.unique(cells, axis=0, return_index=True, return_inverse=True)
        cell_weights = np.bincount(cell.ravel(), weights=data.weights)
        mu = poisson.family.mean(modes.eta)[data.row_pattern[first_row]]
        first = theta_ml(data.y[first_row], mu, cell_weights)
        if not np.isfinite(first) or first <= 0:
            raise ValueError(
                "family='negative_binomial': the counts show no overdispersion beyond the "
                "Poisson GLMM's (the first estimate of theta is not finite); fit "
                "family='poisson'"
            )
        fits: dict[float, tuple[GlmmDeviance, Optimum, float]] = {}
        start = optimum.parameters

        def profile(log_theta: float) -> float:
            nonlocal start
            family = Family("negative_binomial", nb_theta=float(np.exp(log_theta)))
            deviance = data.deviance(family, n_agq)
            fit = self._optimise(deviance, start=start, step_scale=0.02)
            start = fit.parameters
            value = fit.value
            if n_agq > 1:
                # Quadrature values are built from deviance residuals, whose saturated
                # part depends on theta: compare the full -2 log-likelihoods.
                value += family.saturated(data.y, data.weights) + family.constant(
                    data.y, data.weights
                )
            fits[log_theta] = (deviance, fit, value)
            return value

        low, high = np.log(first) - NB_INTERVAL, np.log(first) + NB_INTERVAL
        result = minimize_scalar(
            profile, bounds=(low, high), method="bounded", options={"xatol": NB_TOLERANCE}
        )
        best = min(fits, key=lambda k: fits[k][2])
        at_edge = bool(min(best - low, high - best) < 1e3 * NB_TOLERANCE)
        if at_edge:
            warnings.warn(
                f"MixedGLM: the negative binomial theta {np.exp(best):.6g} is at the edge "
                f"of the searched interval [{np.exp(low):.6g}, {np.exp(high):.6g}] "
                "(glmer.nb's: the first estimate times exp(+-3)); the likelihood may keep "
                "rising beyond it",
                ConvergenceWarning,
                stacklevel=3,
            )
        info = {
            "first_estimate": first,
            "interval": (float(np.exp(low)), float(np.exp(high))),
            "fits": len(fits),
            # -2 log-likelihood at each theta tried (the full one with quadrature).
            "profile": [(float(np.exp(k)), float(fits[k][2])) for k in sorted(fits)],
            "converged": bool(result.success),
            "at_edge": at_edge,
        }
        deviance, fit, _ = fits[best]
        return deviance, fit, info

    def _fit_laplace(
        self, data: GlmmData, deviance: GlmmDeviance, optimum: Optimum | None = None
    ) -> None:
        """The fitted state at glmer's optimum (found here unless given)."""
        if optimum is None:
            optimum = self._optimise(deviance)
        if self.n_agq == 0:
            modes = deviance.modes(optimum.parameters)
            value = modes.penalised_deviance + modes.factor.logdet_Z + deviance.constant
            solution = self._conditional_solution(deviance, modes)
            # glmer computes no Hessian at nAGQ = 0: vcov is the conditional estimate.
            beta_cov, method = deviance.beta_cov(modes), "conditional"
            theta_se = np.full(deviance.n_theta, np.nan)
        else:
            theta, beta = deviance.split(optimum.parameters)
            modes = deviance.modes(theta, beta)
            value = optimum.value
            solution = self._conditional_solution(deviance, modes)
            parameter_cov, method = self._hessian_cov(deviance, theta, beta)
            if parameter_cov is None:
                beta_cov, method = deviance.beta_cov(modes), "conditional"
                theta_se = np.full(deviance.n_theta, np.nan)
            else:
                beta_cov = parameter_cov[deviance.n_theta :, deviance.n_theta :]
                theta_se = np.sqrt(np.diag(parameter_cov)[: deviance.n_theta])
        point = (modes.theta, modes.beta, modes.u, modes.eta)
        self._set_fitted(data, deviance, point, value, solution, beta_cov, theta_se)
        self.convergence_.update(
            pirls_iterations=modes.iterations,
            pirls_converged=modes.converged,
            standard_errors=method,
            **optimum.stages,
        )
        stages_converged = all(stage["converged"] for stage in optimum.stages.values())
        if not (stages_converged and modes.converged):
            warnings.warn(
                f"MixedGLM: the fit stopped without converging ({self.convergence_})",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _fit_pql(self, data: GlmmData, deviance: GlmmDeviance) -> None:
        """Penalised quasi-likelihood with the iterative solver (``_pql``)."""
        fit = fit_pql(deviance, theta_start(deviance.qs))
        theta_se = np.full(deviance.n_theta, np.nan)
        point = (fit.theta, fit.beta, fit.u, fit.eta)
        self._set_fitted(
            data, deviance, point, fit.laplace, fit.solution, fit.solution.beta_cov, theta_se
        )
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

    def _weight_source(self, weighted: bool) -> str:
        """Where the prior weights come from, for errors."""
        return " and ".join(
            ([f"column {self.weights!r}"] if self.weights else [])
            + (["sample_weight"] if weighted else [])
        )

    def _check_weights(self, weights: np.ndarray, weighted: bool) -> None:
        """Refuse negative prior weights and weights that are all zero."""
        source = self._weight_source(weighted)
        if np.any(weights < 0):
            raise ValueError(
                f"weights: column {self.weights!r} has {int(np.sum(weights < 0))} negative value(s)"
            )
        if not np.any(weights > 0):
            raise ValueError(
                f"weights: {source} {'is' if ' and ' not in source else 'are'} 0 in every "
                "row (every weight is zero); there is nothing to fit"
            )

    def _check_outcome(
        self, y: np.ndarray, weights: np.ndarray, response: str | None, weighted: bool
    ) -> None:
        name = f"response column {response!r}" if response else "y"
        source = self._weight_source(weighted)
        observed = np.unique(y[weights > 0])
        if observed.size == 1:
            # The fixed effects' estimates are infinite (every probability 0 or 1, every
            # rate 0) and PIRLS has no finite mode; glmer stops: "Response is constant".
            raise ValueError(
                f"{name} is constant (every value {observed[0]:g}"
                f"{' where weights > 0' if source else ''}): no variation to model "
                f"with family={self.family!r}; glmer refuses it too (Response is constant)"
            )
        if self.family == "binomial":
            if not source and not np.all((y == 0) | (y == 1)):
                bad = pd.unique(y[(y != 0) & (y != 1)])[:5]
                raise ValueError(
                    f"{name} must be 0/1 for family='binomial' (found e.g. {list(bad)}); "
                    "for proportions of successes name the trials with weights='column' "
                    "or pass them as sample_weight"
                )
            if np.any((y < 0) | (y > 1)):
                raise ValueError(
                    f"{name} must be a proportion in [0, 1] for family='binomial' with "
                    f"weights ({source})"
                )
            successes = y * weights
            if not np.allclose(successes, np.round(successes), atol=1e-7):
                warnings.warn(
                    f"{name} times weights ({source}) is not a whole number of successes "
                    "in some rows",
                    UserWarning,
                    stacklevel=4,
                )
        else:
            if np.any(y < 0):
                raise ValueError(
                    f"{name} has {int(np.sum(y < 0))} negative value(s); "
                    f"family={self.family!r} needs counts"
                )
            if not np.allclose(y, np.round(y)):
                warnings.warn(
                    f"{name} has non-integer values for family={self.family!r}",
                    UserWarning,
                    stacklevel=4,
                )

    @staticmethod
    def _conditional_solution(deviance: GlmmDeviance, modes: Modes) -> Solution:
        """Conditional variances of the random effects given beta, from the exact factor
        at the modes, as lme4's condVar; X is left out (they do not depend on it), and
        cov(beta) is ``GlmmDeviance.beta_cov``."""
        working, working_weights = deviance.family.working(
            deviance.y, deviance.weights, modes.eta, deviance.offset
        )
        working -= deviance.matrices.X @ modes.beta
        cross = weighted_cross_products(
            deviance.matrices, working, working_weights, include_fixed=False
        )
        return solve(
            ProfiledDeviance(cross, deviance.qs, deviance.levels, False), modes.theta, sigma=1.0
        )

    def _set_fitted(
        self,
        data: GlmmData,
        deviance: GlmmDeviance,
        point: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        value: float,
        solution: Solution,
        beta_cov: np.ndarray,
        theta_se: np.ndarray,
    ) -> None:
        """Store the fit at ``point``, (theta, beta, u, eta), with -2 log-likelihood
        ``value``."""
        family, design = deviance.family, data.design
        theta, beta, u, eta = point
        names = pd.Index(design.fixed_names, dtype=object)
        self._parsed = data.parsed
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
        # lme4 counts a negative binomial's theta as a parameter (npar.merMod).
        n_parameters = deviance.n_theta + deviance.p + (family.name == "negative_binomial")
        self.objective_ = float(value)
        self.loglik_ = -0.5 * float(value)
        kernel = family.kernel(deviance.y, deviance.weights, eta)
        self.deviance_ = float(np.sum(kernel) - family.saturated(data.y, data.weights))
        self.n_obs_ = int(len(design.y))
        self.aic_ = self.objective_ + 2 * n_parameters
        self.bic_ = self.objective_ + np.log(self.n_obs_) * n_parameters
        self.dropped_columns_ = data.dropped
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
    def _linear_predictor(self, X: Any, include_random: bool | Sequence[str]) -> np.ndarray:
        check_is_fitted(self, "coef_")
        check_policy(self.new_levels)
        frame = formula_frame(self, X, reset=False)
        eta = self._fixed_matrix(frame) @ self.coef_.to_numpy()
        eta += self._offset_vector(frame)
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
        return eta

    def predict(
        self,
        X: Any,
        *,
        include_random: bool | Sequence[str] = True,
        scale: str | None = None,
    ) -> np.ndarray:
        """Class labels (binomial) or the predicted mean or linear predictor (counts).

        Parameters
        ----------
        X : DataFrame (pandas or polars)
            Holds every column the formula uses, and the offset column if any.
        include_random : bool or sequence of str
            True: conditional on the estimated random effects; False: fixed effects
            only (random effects at 0, as glmer's ``re.form = NA``); a list of
            grouping-factor names: only those terms.
        scale : {"response", "link"}, optional
            For the count families: the mean (``type = "response"``, the default) or
            the linear predictor (``"link"``). Not taken with ``family="binomial"``,
            whose ``predict`` is a classifier's: the class of probability above 1/2
            (``classes_[1]`` where ``predict_proba(X)[:, 1] > 0.5``); the
            probabilities are ``predict_proba``, the linear predictor
            ``decision_function``.

        Returns
        -------
        numpy.ndarray
        """
        if self.family == "binomial":
            if scale is not None:
                raise ValueError(
                    f"scale: family='binomial' predicts class labels, so scale={scale!r} "
                    "is not taken; use predict_proba(X)[:, 1] for probabilities or "
                    "decision_function(X) for the linear predictor"
                )
            probability = self.predict_proba(X, include_random=include_random)[:, 1]
            return self.classes_[(probability > 0.5).astype(int)]
        scale = "response" if scale is None else scale
        if scale not in SCALES:
            raise ValueError(f"scale: expected one of {SCALES}, got {scale!r}")
        eta = self._linear_predictor(X, include_random)
        return eta if scale == "link" else self._deviance.family.mean(eta)

    @available_if(_is_classifier)
    def predict_proba(self, X: Any, *, include_random: bool | Sequence[str] = True) -> np.ndarray:
        """Probabilities of ``classes_`` per row, shape (n, 2): glmer's
        ``predict(type = "response")``, the probability of ``classes_[1]``, in the second
        column. Binomial family only (a count model has no such attribute)."""
        check_is_fitted(self, "coef_")
        p = self._deviance.family.mean(self._linear_predictor(X, include_random))
        return np.column_stack([1 - p, p])

    @available_if(_is_classifier)
    def decision_function(
        self, X: Any, *, include_random: bool | Sequence[str] = True
    ) -> np.ndarray:
        """The linear predictor per row (glmer's ``predict(type = "link")``), offsets
        included: the log-odds of ``classes_[1]`` with the logit link; with other links a
        monotone transform of its probability (positive above 1/2 for probit and
        cauchit, above log(log 2) for cloglog). Binomial family only; for the count
        families the linear predictor is ``predict(X, scale="link")``."""
        return self._linear_predictor(X, include_random)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Accuracy for ``family="binomial"``, R^2 of the mean for the count families.

        ``y`` may be omitted when the formula names the response. With binomial
        proportions (``weights`` naming the trials) the accuracy is over the trials:
        the share of successes where class 1 is predicted, of failures elsewhere.
        """
        check_is_fitted(self, "coef_")
        parsed = parse_formula(self.formula)
        frame = formula_frame(self, X, reset=False)
        outcome = resolve_response(parsed, frame, y)
        weights = self._column(frame, self._weights_column, "weights", default=1.0)
        weights = weights * sample_weights(sample_weight, len(frame))
        if self.family == "binomial":
            label = self.predict(frame)
            values = np.asarray(outcome)
            if values.dtype.kind in "biuf" and set(self.classes_.tolist()) == {0, 1}:
                # 0/1 outcomes or proportions: the share of the trials predicted right.
                target = as_target(outcome, len(frame))
                correct = np.where(label == 1, target, 1 - target)
            else:
                correct = (label == values.ravel()).astype(float)
            return float(np.sum(weights * correct) / np.sum(weights))
        target = as_target(outcome, len(frame))
        mean = self.predict(frame)
        centre = np.average(target, weights=weights)
        residual = np.sum(weights * (target - mean) ** 2)
        total = np.sum(weights * (target - centre) ** 2)
        return float(1 - residual / total) if total > 0 else float("nan")

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
        family = self._deviance.family
        name = (
            f"Negative Binomial({self.nb_theta_:.4g})"
            if family.name == "negative_binomial"
            else family.name
        )
        if self.solver_ == "iterative":
            fitted_by = (
                "penalized quasi-likelihood (logLik: the Laplace approximation at its "
                "estimates; standard errors conditional)"
            )
        elif self.n_agq == 0:
            fitted_by = "maximum likelihood (Adaptive Gauss-Hermite Quadrature, nAGQ = 0)"
        elif self.n_agq == 1:
            fitted_by = "maximum likelihood (Laplace Approximation)"
        else:
            fitted_by = (
                f"maximum likelihood (Adaptive Gauss-Hermite Quadrature, nAGQ = {self.n_agq})"
            )
        lines = [
            f"Generalized linear mixed model fit by {fitted_by}",
            f" Family: {name}  ( {family.link} )",
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
