"""Count-outcome counterparts: Poisson fixed effects, Poisson ridge, boosted Poisson trees.

Each predicts the mean count (R's ``predict(fit, type = "response")``), so the harness
scores them with the Poisson deviance like the mixed Poisson model. Each takes
``sample_weight`` in ``fit``: a row of weight w counts as w rows in the likelihood.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import RegressorMixin
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import PoissonRegressor
from sklearn.metrics import mean_poisson_deviance
from sklearn.model_selection import KFold
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from estimators._baselines import HistGBM
from estimators._columns import as_target, linear_predictor
from estimators._glm import _GLMOnGroups
from estimators._shrinkage import DEFAULT_ALPHAS

SOLVERS: tuple[str, ...] = ("auto", "newton-cholesky", "lbfgs")
# The Newton solver forms the dense Hessian, columns^2 doubles (32 MB at 2,000) and a
# Cholesky factor of it per iteration; past this width L-BFGS is the affordable one.
NEWTON_MAX_COLUMNS = 2000
# On scikit-learn's scale (gradient of the mean half-deviance): tight enough that the
# Newton solver agrees with glm's IRLS (statsmodels) well within 1e-6 relative.
TOLERANCE = 1e-10


def count_target(y: Any, n_rows: int) -> np.ndarray:
    """The outcome as non-negative floats with a positive total; anything else is an
    error naming y. Non-integer values are allowed (the Poisson deviance is defined for
    them, as for rates)."""
    target = as_target(y, n_rows)
    if (target < 0).any():
        raise ValueError("y: a count outcome must be non-negative in every row")
    if not (target > 0).any():
        raise ValueError("y: at least one count must be positive in the training rows")
    return target


def count_tags(tags: Any) -> Any:
    """scikit-learn tags of a model of counts: the outcome must be non-negative."""
    tags.target_tags.positive_only = True
    return tags


def one_blas_thread() -> threadpool_limits:
    """A context in which BLAS runs on one thread.

    scipy's L-BFGS-B (1.15 and later, used by scikit-learn's solver and its Newton
    solver's fallback) makes many small BLAS calls, which a multithreaded OpenBLAS
    slows many times over on a busy machine (scipy issue #22438); the Hessians of the
    Newton solver are small enough (``NEWTON_MAX_COLUMNS``) to lose little on one thread.
    """
    return threadpool_limits(limits=1, user_api="blas")


def poisson_solver(solver: str, n_columns: int) -> str:
    """The scikit-learn solver for ``solver`` on a design of ``n_columns`` columns:
    ``"auto"`` is the Newton solver up to ``NEWTON_MAX_COLUMNS`` columns, else L-BFGS."""
    if solver not in SOLVERS:
        raise ValueError(f"solver: expected one of {SOLVERS}, got {solver!r}")
    if solver != "auto":
        return solver
    return "newton-cholesky" if n_columns <= NEWTON_MAX_COLUMNS else "lbfgs"


class _PoissonOnGroups(RegressorMixin, _GLMOnGroups):
    """Poisson regression (log link) on features plus one indicator per group level."""

    def _target(self, y: Any, n_rows: int) -> np.ndarray:
        return count_target(y, n_rows)

    def __sklearn_tags__(self) -> Any:
        return count_tags(super().__sklearn_tags__())

    def _regressor(self, alpha: float, **options: Any) -> PoissonRegressor:
        return PoissonRegressor(
            alpha=alpha, solver=self.solver_, tol=TOLERANCE, max_iter=self.max_iter, **options
        )

    def predict(self, X: Any) -> np.ndarray:
        """Predicted mean count: the exponential of the linear predictor."""
        check_is_fitted(self, "model_")
        return np.exp(linear_predictor(self, X))


class PoissonFixedEffects(_PoissonOnGroups):
    """Poisson regression with a dummy per group level, unpenalised: R's
    ``glm(y ~ x + factor(user) + factor(item), family = poisson)``.

    Fitted by scikit-learn's ``PoissonRegressor`` with ``alpha=0`` on standardised
    features and sparse dummies with R's treatment contrasts (the first level of each
    factor is the reference); effects are centred after the fit.

    A level whose training counts are all 0 has no finite maximum-likelihood effect
    (it tends to -inf), as an all-0 or all-1 unit has none in logistic regression. As
    :class:`LogisticFixedEffects` and ``glm`` do, the optimiser is left to stop where
    the gradient vanishes numerically: such a level gets a large negative effect
    (about -20 to -25 on the log scale; L-BFGS may stop earlier, at ``max_iter``, with
    a ``ConvergenceWarning``) and a fitted mean near 0. These levels are listed in
    ``zero_levels_`` and left out of the centring, so that their arbitrary values do
    not move the intercept, the prediction for an unseen level.

    A design without full column rank (a feature constant within each level of a
    factor, as a per-user covariate; a factor nested in another, as region in user)
    has no unique coefficients: scikit-learn's Newton solver then warns and continues
    with L-BFGS. The fitted means are still the maximum-likelihood ones; ``glm``
    reports the aliased coefficients as NA instead.

    Parameters
    ----------
    feature_cols : sequence, optional
        Covariate columns; by default every column not in ``group_cols``.
    group_cols : sequence
        Grouping factors, each a set of dummies.
    new_levels : {"population", "error"}
        Unseen levels get effect 0 on the log scale (effects are centred), or raise.
    solver : {"auto", "newton-cholesky", "lbfgs"}
        ``PoissonRegressor``'s solver. Newton (IRLS, as ``glm``) converges in a few
        iterations but holds a dense Hessian; ``"auto"`` uses it up to 2,000 design
        columns and L-BFGS beyond.
    max_iter : int
        Iterations of the solver.

    Attributes
    ----------
    intercept_ : float
    coef_ : pandas.Series
        Per feature, on the log scale.
    group_effects_ : dict of pandas.Series
        Per factor, the effect of every training level, centred over the levels with
        a positive training total.
    zero_levels_ : dict of pandas.Index
        Per factor, the levels whose training counts are all 0.
    solver_ : str
        The solver asked of scikit-learn.
    n_iter_ : int
        Its iterations.
    model_ : PoissonRegressor
        The fit on the treatment-coded design.

    Examples
    --------
    >>> from simulators import simulate
    >>> data = simulate("online_services", seed=1, n_users=40, n_items=5, family="poisson")
    >>> model = PoissonFixedEffects(feature_cols=["x1", "treat"], group_cols=["user", "item"])
    >>> model = model.fit(data.X, data.y)
    >>> bool(model.predict(data.X).min() > 0), model.solver_
    (True, 'newton-cholesky')
    """

    def __init__(
        self,
        *,
        feature_cols: Sequence[Hashable] | None = None,
        group_cols: Sequence[Hashable] = (),
        new_levels: str = "population",
        solver: str = "auto",
        max_iter: int = 1000,
    ) -> None:
        self.feature_cols = feature_cols
        self.group_cols = group_cols
        self.new_levels = new_levels
        self.solver = solver
        self.max_iter = max_iter

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> PoissonFixedEffects:
        """Fit by maximum likelihood; returns self.

        ``sample_weight`` (optional, one non-negative weight per row) weights each row's
        log-likelihood, as glm's prior weights; rows of weight 0 are left out.
        """
        design, target, weight = self._prepare(X, y, sample_weight)
        totals = design.T @ (weight * target)
        dummies = np.ones(design.shape[1], dtype=bool)
        counted, self.zero_levels_ = {}, {}
        start = len(self.feature_cols_)
        for name, levels in self.levels_.items():
            dummies[start] = False  # the reference level, absorbed by the intercept
            level_totals = totals[start : start + len(levels)]
            counted[name] = level_totals > 0
            self.zero_levels_[name] = levels.levels[level_totals == 0]
            start += len(levels)
        self.solver_ = poisson_solver(self.solver, int(dummies.sum()))
        with one_blas_thread():
            model = self._regressor(0.0).fit(design[:, dummies], target, sample_weight=weight)
        self.n_iter_ = int(model.n_iter_)
        coef = np.zeros(design.shape[1])
        coef[dummies] = model.coef_
        self._store(model, coef=coef, average_over=counted)
        return self


class PoissonRidge(_PoissonOnGroups):
    """L2-penalised Poisson regression on standardised features and one-hot groups, the
    penalty chosen by cross-validated mean Poisson deviance: the penalised GLM large
    online services often use instead of random effects, for counts.

    The fit minimises ``deviance + alpha * ||coef||^2`` (intercept unpenalised), the
    Poisson counterpart of :class:`RidgeOneHot`'s ``RSS + alpha * ||coef||^2``: a
    Gaussian prior of variance ``1 / alpha`` on each effect gives that penalised
    deviance, so ``alpha`` near ``1 / sd_user**2`` is the random-effects analogue.
    scikit-learn's ``PoissonRegressor`` scales the deviance by ``1 / (2 n)``, so it is
    given ``alpha / n``. Each inner fold fits the grid from the largest penalty down,
    each fit starting from the previous one; the chosen ``alpha_`` minimises the
    Poisson deviance of all held-out rows (ties go to the larger penalty).

    Parameters
    ----------
    feature_cols, group_cols, new_levels, solver, max_iter
        As :class:`PoissonFixedEffects`.
    alphas : sequence of float
        Penalties to choose from, each positive.
    cv : int
        Folds of the inner cross-validation (rows shuffled).
    random_state : int or None
        Shuffling of the inner folds.

    Attributes
    ----------
    alpha_ : float
        The chosen penalty.
    cv_deviance_ : pandas.Series
        Mean held-out Poisson deviance per row, indexed by ``alpha``.
    intercept_, coef_, group_effects_, solver_, model_
        As :class:`PoissonFixedEffects`; effects are centred over every level and
        ``model_`` is the fit to all training rows at ``alpha_``.
    n_iter_ : int
        Iterations of the solver in that final fit.

    Examples
    --------
    >>> from simulators import simulate
    >>> data = simulate("online_services", seed=1, n_users=40, n_items=5, family="poisson")
    >>> model = PoissonRidge(
    ...     feature_cols=["x1"], group_cols=["user"], alphas=[0.1, 1.0, 10.0], cv=3, random_state=0
    ... )
    >>> model.fit(data.X, data.y).cv_deviance_.index.tolist()
    [0.1, 1.0, 10.0]
    """

    def __init__(
        self,
        *,
        feature_cols: Sequence[Hashable] | None = None,
        group_cols: Sequence[Hashable] = (),
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        cv: int = 10,
        new_levels: str = "population",
        solver: str = "auto",
        max_iter: int = 1000,
        random_state: int | None = None,
    ) -> None:
        self.feature_cols = feature_cols
        self.group_cols = group_cols
        self.alphas = alphas
        self.cv = cv
        self.new_levels = new_levels
        self.solver = solver
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> PoissonRidge:
        """Choose the penalty by inner cross-validation and refit on every row; returns
        self.

        ``sample_weight`` (optional, one non-negative weight per row) weights each row's
        deviance in the fits and in the held-out deviance; the penalty is scaled by the
        total weight instead of the number of rows. Rows of weight 0 are left out.
        """
        alphas = np.asarray(self.alphas, dtype=float).ravel()
        if alphas.size == 0 or not np.all(np.isfinite(alphas) & (alphas > 0)):
            raise ValueError(f"alphas: expected one or more positive numbers, got {self.alphas}")
        if not isinstance(self.cv, int | np.integer) or isinstance(self.cv, bool) or self.cv < 2:
            raise ValueError(f"cv: expected an integer of at least 2, got {self.cv!r}")
        design, target, weight = self._prepare(X, y, sample_weight)
        self.solver_ = poisson_solver(self.solver, design.shape[1])
        path = np.unique(alphas)[::-1]  # largest penalty first: each fit warm-starts the next
        folds = KFold(self.cv, shuffle=True, random_state=self.random_state).split(design)
        deviance = np.zeros(path.size)
        with one_blas_thread():
            for train, test in folds:
                # scikit-learn divides the deviance by the total weight: the penalty too.
                total = weight[train].sum()
                model = self._regressor(path[0] / total, warm_start=True)
                for k, alpha in enumerate(path):
                    model.set_params(alpha=alpha / total).fit(
                        design[train], target[train], sample_weight=weight[train]
                    )
                    mean = model.predict(design[test])
                    held = mean_poisson_deviance(target[test], mean, sample_weight=weight[test])
                    deviance[k] += held * weight[test].sum()
        self.cv_deviance_ = pd.Series(
            deviance / weight.sum(), index=pd.Index(path, name="alpha"), name="poisson_deviance"
        ).sort_index()
        self.alpha_ = float(path[int(np.argmin(deviance))])
        with one_blas_thread():
            model = self._regressor(self.alpha_ / weight.sum())
            model.fit(design, target, sample_weight=weight)
        self.n_iter_ = int(model.n_iter_)
        self._store(model)
        return self


class HistGBMPoisson(HistGBM):
    """scikit-learn's histogram gradient boosting with the Poisson loss (log link) on
    features and group codes, encoded as :class:`HistGBM` does; ``predict`` gives the
    mean count."""

    def _booster(self, categorical: np.ndarray | None) -> HistGradientBoostingRegressor:
        return HistGradientBoostingRegressor(
            loss="poisson", **self._booster_params(), categorical_features=categorical
        )

    def _target(self, y: Any, n_rows: int) -> np.ndarray:
        return count_target(y, n_rows)

    def __sklearn_tags__(self) -> Any:
        return count_tags(super().__sklearn_tags__())
