"""Binary-outcome counterparts: logistic fixed effects, logistic ridge and lasso, boosted
classifier.

Each is a scikit-learn classifier: ``predict`` gives class labels, ``predict_proba`` the
probabilities of ``classes_`` (its second column the probability of the outcome 1, R's
``predict(fit, type = "response")``, which the harness scores), ``score`` the accuracy,
and ``cross_val_score`` stratifies its folds by outcome. Each takes ``sample_weight`` in
``fit``: a row of weight w counts as w rows in the likelihood (glm's prior weights).
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.utils.fixes import parse_version
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from estimators._baselines import HistGBMBase
from estimators._columns import (
    LevelCodes,
    check_columns,
    check_policy,
    class_labels,
    default_features,
    linear_predictor,
    numeric_matrix,
    validated_frame,
    weighted_moments,
    weighted_rows,
)
from estimators._tuning import (
    CV_RULES,
    CV_UNITS,
    CVCurve,
    MergedRows,
    choose_penalty,
    cross_validate,
    fold_weights,
    merge_rows,
    weighted_spread,
)


def one_hot(
    frame: pd.DataFrame, levels: dict[Hashable, LevelCodes], new_levels: str
) -> sp.csr_matrix:
    """Sparse indicators of every training level of each factor; an unseen level is a
    row of zeros (the population part) or an error, by ``new_levels``."""
    blocks = []
    for name, codes_of in levels.items():
        codes = codes_of.encode(frame[name], new_levels)
        seen = codes >= 0
        blocks.append(
            sp.csr_matrix(
                (np.ones(seen.sum()), (np.flatnonzero(seen), codes[seen])),
                shape=(len(frame), len(codes_of)),
            )
        )
    return sp.hstack(blocks, format="csr") if blocks else sp.csr_matrix((len(frame), 0))


class _GLMOnGroups(BaseEstimator):
    """A GLM on standardised features plus one indicator per group level.

    Subclasses name the outcome check (``_target``), fit a scikit-learn GLM on the
    design ``_prepare`` returns, and hand it to ``_store``, which puts the coefficients
    back on the features' scale and centres each factor's effects.
    """

    def _target(self, y: Any, n_rows: int) -> np.ndarray:
        raise NotImplementedError

    def _design(
        self, frame: pd.DataFrame, fitting: bool, weight: np.ndarray | None = None
    ) -> sp.csr_matrix:
        features = numeric_matrix(frame, self.feature_cols_, "feature_cols")
        if fitting:
            # Weighted moments, so that a weight of 2 standardises as a duplicated row.
            self.feature_mean_, scale = weighted_moments(features, weight)
            self.feature_scale_ = np.where(scale > 0, scale, 1.0)
        standardized = (features - self.feature_mean_) / self.feature_scale_
        return sp.hstack(
            [sp.csr_matrix(standardized), one_hot(frame, self.levels_, self.new_levels)],
            format="csr",
        )

    def _prepare(
        self, X: Any, y: Any, sample_weight: Any = None
    ) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
        """The design, the outcome and the row weights (ones without ``sample_weight``);
        rows of weight 0 are left out."""
        check_policy(self.new_levels)
        frame = validated_frame(self, X, reset=True)
        frame, y, weight = weighted_rows(frame, y, sample_weight)
        target = self._target(y, len(frame))
        group_cols = check_columns(frame, self.group_cols, "group_cols")
        self.feature_cols_ = default_features(frame, self.feature_cols, exclude=group_cols)
        self.levels_ = {name: LevelCodes(frame[name], name) for name in group_cols}
        design = self._design(frame, fitting=True, weight=weight)
        return design, target, np.ones(len(frame)) if weight is None else weight

    def _store(
        self,
        model: Any,
        coef: np.ndarray | None = None,
        average_over: dict[Hashable, np.ndarray] | None = None,
    ) -> None:
        """Keep ``model`` and its coefficients as ``intercept_``, ``coef_`` and
        ``group_effects_``.

        ``coef`` (default ``model.coef_``) holds the standardised features' coefficients,
        then one per level of each factor. Each factor's effects are centred on the mean
        over its levels marked in ``average_over`` (default: all levels).
        """
        self.model_ = model
        coef = np.ravel(model.coef_) if coef is None else coef
        k = len(self.feature_cols_)
        self.coef_ = pd.Series(coef[:k] / self.feature_scale_, index=pd.Index(self.feature_cols_))
        intercept = float(np.ravel(model.intercept_)[0])
        intercept -= float(np.sum(self.coef_ * self.feature_mean_))
        self.group_effects_ = {}
        start = k
        for name, levels in self.levels_.items():
            effects = coef[start : start + len(levels)]
            start += len(levels)
            # Centred on the link scale: an unseen level is an average unit.
            counted = np.ones(len(levels), bool) if average_over is None else average_over[name]
            shift = effects[counted].mean()
            intercept += shift
            self.group_effects_[name] = pd.Series(effects - shift, index=levels.levels, name=name)
        self.intercept_ = intercept


def binary_tags(tags: Any) -> Any:
    """scikit-learn tags of a binary classifier: two classes only, so that scikit-learn's
    checks do not ask it to fit three or more."""
    tags.classifier_tags.multi_class = False
    return tags


class _LogisticOnGroups(ClassifierMixin, _GLMOnGroups):
    """Logistic regression on features plus one indicator per group level: a binary
    classifier whose second class (``classes_[1]``) is the modelled outcome."""

    def _target(self, y: Any, n_rows: int) -> np.ndarray:
        self.classes_, target = class_labels(y, n_rows)
        return target

    def __sklearn_tags__(self) -> Any:
        return binary_tags(super().__sklearn_tags__())

    def decision_function(self, X: Any) -> np.ndarray:
        """The log-odds of the second class, per row."""
        check_is_fitted(self, "model_")
        return linear_predictor(self, X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities of ``classes_`` per row, shape (n, 2)."""
        probability = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1.0 - probability, probability])

    def predict(self, X: Any) -> np.ndarray:
        """The more probable class of each row (the second on a tie)."""
        check_is_fitted(self, "model_")
        return self.classes_[(self.decision_function(X) >= 0).astype(int)]


class LogisticFixedEffects(_LogisticOnGroups):
    """Logistic regression with a dummy per group level, unpenalised: R's
    ``glm(y ~ x + user + item, family = binomial)``.

    A unit whose outcomes are all 0 or all 1 has no finite maximum-likelihood effect;
    the optimiser then stops at ``max_iter`` with a large effect, as ``glm`` does
    (with its "fitted probabilities numerically 0 or 1" warning).

    Parameters
    ----------
    feature_cols : sequence, optional
        Covariate columns; by default every column not in ``group_cols``.
    group_cols : sequence
        Grouping factors, each a set of dummies.
    new_levels : {"population", "error"}
        Unseen levels get effect 0 on the logit scale (effects are centred), or raise.
    max_iter : int
        Iterations of L-BFGS.

    Attributes
    ----------
    intercept_ : float
    coef_ : pandas.Series
        Per feature, on the logit scale.
    group_effects_ : dict of pandas.Series
        Centred effects per factor and level.
    model_ : LogisticRegression
    n_iter_ : int
        Iterations of L-BFGS.
    classes_ : numpy.ndarray
        The two outcomes seen in training, sorted; ``predict_proba`` gives their
        probabilities in that order.
    """

    def __init__(
        self,
        *,
        feature_cols: Sequence[Hashable] | None = None,
        group_cols: Sequence[Hashable] = (),
        new_levels: str = "population",
        max_iter: int = 1000,
    ) -> None:
        self.feature_cols = feature_cols
        self.group_cols = group_cols
        self.new_levels = new_levels
        self.max_iter = max_iter

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> LogisticFixedEffects:
        """Fit by maximum likelihood; returns self.

        ``sample_weight`` (optional, one non-negative weight per row) weights each row's
        log-likelihood, as glm's prior weights; rows of weight 0 are left out.
        """
        design, target, weight = self._prepare(X, y, sample_weight)
        model = LogisticRegression(C=np.inf, tol=1e-8, max_iter=self.max_iter)
        self._store(model.fit(design, target, sample_weight=weight))
        self.n_iter_ = int(np.max(model.n_iter_))
        return self


class _PenalisedLogistic(_LogisticOnGroups):
    """A penalised logistic regression whose penalty is chosen by cross-validation as
    cv.glmnet does (``estimators._tuning``): subclasses name the grid of inverse
    penalties (``_grid``) and the fit at one of them (``_fit_at``).

    Fitted attributes common to both: ``C_``, ``penalty_`` (``1 / (n C_)``, glmnet's
    lambda), ``cv_deviance_`` and ``cv_standard_error_`` (the curve, indexed by ``C``),
    ``group_scale_`` (the scale each level's indicator was divided by before
    penalising; 1 unless ``standardize_groups``).
    """

    def _grid(self, rows: MergedRows) -> np.ndarray:
        raise NotImplementedError

    def _fit_at(  # noqa: N803 - C is scikit-learn's name
        self, C: float, design: sp.csr_matrix, target: np.ndarray, weight: np.ndarray, previous: Any
    ) -> Any:
        raise NotImplementedError

    def _check_tuning(self) -> None:
        if not isinstance(self.cv, int | np.integer) or isinstance(self.cv, bool) or self.cv < 2:
            raise ValueError(f"cv: expected an integer of at least 2, got {self.cv!r}")
        if self.cv_unit not in CV_UNITS:
            raise ValueError(
                f"cv_unit: expected one of {', '.join(CV_UNITS)}, got {self.cv_unit!r}"
            )
        if self.cv_rule not in CV_RULES:
            raise ValueError(
                f"cv_rule: expected one of {', '.join(CV_RULES)}, got {self.cv_rule!r}"
            )
        patience = self.patience
        if patience is not None and (
            not isinstance(patience, int | np.integer) or isinstance(patience, bool) or patience < 1
        ):
            raise ValueError(f"patience: expected a positive integer or None, got {patience!r}")
        if not isinstance(self.standardize_groups, bool | np.bool_):
            raise ValueError(
                f"standardize_groups: expected true or false, got {self.standardize_groups!r}"
            )

    def _standardized(self, n_columns: int) -> np.ndarray:
        """The design columns scaled to unit variance before penalising: the features,
        and with ``standardize_groups`` the level indicators (glmnet's ``standardize =
        TRUE``)."""
        marked = np.full(n_columns, bool(self.standardize_groups))
        marked[: len(self.feature_cols_)] = True
        return marked

    def _column_scale(self, design: sp.csr_matrix, weight: np.ndarray) -> np.ndarray:
        """What each design column is divided by before penalising: 1 for the features
        (already standardised); for a level's indicator, 1, or with ``standardize_groups``
        its standard deviation over the rows, sqrt(f (1 - f)) for a level on a share f
        of them."""
        scale = np.ones(design.shape[1])
        if self.standardize_groups:
            k = len(self.feature_cols_)
            spread = weighted_spread(design[:, k:], weight)
            scale[k:] = np.where(spread > 0, spread, 1.0)
        return scale

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> _PenalisedLogistic:
        """Choose the penalty by inner cross-validation and refit on every row; returns
        self.

        ``sample_weight`` (optional, one non-negative weight per row) makes a row count
        as that many rows: in the likelihood, the standardisation, the folds' shares and
        glmnet's ``n`` in ``penalty_ = 1 / (n C_)`` (the total weight); rows of weight 0
        are left out.
        """
        design, target, weight = self._prepare(X, y, sample_weight)
        self._check_tuning()
        scale = self._column_scale(design, weight)
        rows = merge_rows(design @ sp.diags(1 / scale), target, weight)
        # scipy's L-BFGS-B makes many small BLAS calls, which a multithreaded OpenBLAS
        # slows several times over (see estimators._poisson.one_blas_thread).
        with threadpool_limits(limits=1, user_api="blas"):
            curve = self._cross_validate(rows)
            self.C_ = float(
                curve.C[choose_penalty(curve.deviance, curve.standard_error, self.cv_rule)]
            )
            model = self._fit_at(self.C_, rows.design, rows.target, rows.count, None)
        tried = np.isfinite(curve.deviance)
        index = pd.Index(curve.C[tried], name="C")
        self.cv_deviance_ = pd.Series(curve.deviance[tried], index=index)
        self.cv_standard_error_ = pd.Series(curve.standard_error[tried], index=index)
        self.penalty_ = 1.0 / (rows.n_rows * self.C_)
        self.group_scale_ = scale[len(self.feature_cols_) :]
        self._store(model, coef=np.ravel(model.coef_) / scale)
        return self

    def _cross_validate(self, rows: MergedRows) -> CVCurve:
        folds = fold_weights(rows, self.cv_unit, self.cv, self.random_state)
        with warnings.catch_warnings():
            # A fold's fit far below the chosen penalty may stop at max_iter (a unit with
            # all-0 outcomes has no finite effect without a penalty); it only makes its
            # held-out deviance worse. The final fit warns as usual.
            warnings.simplefilter("ignore", ConvergenceWarning)
            return cross_validate(
                self._grid(rows),
                lambda C, design, weight, previous: self._fit_at(  # noqa: N803
                    C, design, rows.target, weight, previous
                ),
                rows,
                folds,
                self.cv_unit,
                self.patience,
                self._standardized(rows.design.shape[1]),
            )


class LogisticRidge(_PenalisedLogistic):
    """L2-penalised logistic regression on standardised features and one-hot groups, the
    penalty chosen by cross-validated binomial deviance: the penalised GLM large online
    services often use instead of random effects; with ``cv_unit="cell"``,
    ``cv_rule="1se"``, ``penalty_grid="glmnet"`` and ``standardize_groups=True``, R's
    ``cv.glmnet(x, y, family = "binomial", alpha = 0)`` on the aggregated table,
    predicting at its default ``lambda.1se``.

    Parameters
    ----------
    feature_cols, group_cols, new_levels
        As :class:`LogisticFixedEffects`.
    Cs : int or sequence of float
        Number of penalties on the grid, or the inverse penalties ``C`` to try
        (scikit-learn's objective ``0.5 |w|^2 + C * sum(log loss)``, glmnet's with
        ``C = 1 / (n lambda)``).
    cv : int
        Folds of the inner cross-validation; 10, as cv.glmnet uses.
    cv_unit : {"row", "cell"}
        What a fold holds out: single rows, stratified by outcome, or cells (rows that
        share every covariate), as cv.glmnet does on an aggregated table
        (``estimators._tuning``).
    cv_rule : {"min", "1se"}
        The penalty with the smallest held-out deviance, or the largest within one
        standard error of it (glmnet's ``lambda.min`` / ``lambda.1se``).
    penalty_grid : {"logspace", "glmnet"}
        An integer ``Cs`` spread as ``logspace(-4, 4, Cs)`` (scikit-learn's
        ``LogisticRegressionCV``), or as glmnet's ridge path: from 1000 times the
        smallest penalty that zeroes a lasso (glmnet's rule for ``alpha = 0``) down by
        ``min_penalty_ratio``, evenly on the log scale.
    min_penalty_ratio : float
        Smallest penalty of the glmnet grid relative to its largest, in (0, 1).
    standardize_groups : bool
        Divide each level's indicator by its standard deviation over the rows before
        penalising (glmnet's ``standardize = TRUE``: a level on more rows is shrunk
        less per unit of its effect).
    patience : int or None
        Stop going down the grid once the held-out deviance has not improved on its
        minimum for this many penalties in a row; None tries the whole grid.
    tol : float
        Stopping tolerance of each L-BFGS fit (``LogisticRegression``'s ``tol``).
    random_state : int or None
        Shuffling of the inner folds.

    Attributes
    ----------
    C_ : float
        The chosen inverse penalty.
    penalty_ : float
        The chosen penalty on glmnet's scale, ``1 / (n C_)``.
    cv_deviance_, cv_standard_error_ : pandas.Series
        Mean held-out binomial deviance per row and its standard error, by ``C``.
    group_scale_ : numpy.ndarray
        What each level's indicator was divided by (1 unless ``standardize_groups``).
    intercept_, coef_, group_effects_
        As :class:`LogisticFixedEffects`, on the original scale.
    model_ : LogisticRegression
        Refitted on all rows at ``C_``, on the scaled design.

    Examples
    --------
    >>> from simulators import simulate
    >>> data = simulate("ctr_experiment", seed=1, n_users=100)
    >>> model = LogisticRidge(feature_cols=["display"], group_cols=["user"], Cs=8, random_state=0)
    >>> model.fit(data.X, data.y).predict_proba(data.X.iloc[:3]).shape
    (3, 2)
    """

    def __init__(
        self,
        *,
        feature_cols: Sequence[Hashable] | None = None,
        group_cols: Sequence[Hashable] = (),
        Cs: int | Sequence[float] = 10,  # noqa: N803 - scikit-learn's name
        cv: int = 10,
        cv_unit: str = "row",
        cv_rule: str = "min",
        penalty_grid: str = "logspace",
        min_penalty_ratio: float = 1e-4,
        standardize_groups: bool = False,
        patience: int | None = None,
        new_levels: str = "population",
        tol: float = 1e-4,
        random_state: int | None = None,
    ) -> None:
        self.feature_cols = feature_cols
        self.group_cols = group_cols
        self.Cs = Cs
        self.cv = cv
        self.cv_unit = cv_unit
        self.cv_rule = cv_rule
        self.penalty_grid = penalty_grid
        self.min_penalty_ratio = min_penalty_ratio
        self.standardize_groups = standardize_groups
        self.patience = patience
        self.new_levels = new_levels
        self.tol = tol
        self.random_state = random_state

    def _grid(self, rows: MergedRows) -> np.ndarray:
        if self.penalty_grid not in ("logspace", "glmnet"):
            raise ValueError(
                f"penalty_grid: expected one of logspace, glmnet, got {self.penalty_grid!r}"
            )
        explicit = explicit_grid(self.Cs)
        if explicit is not None:
            return explicit
        if self.penalty_grid == "logspace":
            return np.logspace(-4, 4, int(self.Cs))
        # glmnet computes the largest ridge penalty as the lasso's over alpha = 0.001.
        return glmnet_grid(rows, int(self.Cs), self.min_penalty_ratio, 1e3)

    def _fit_at(  # noqa: N803 - C is scikit-learn's name
        self, C: float, design: sp.csr_matrix, target: np.ndarray, weight: np.ndarray, previous: Any
    ) -> Any:
        # Warm-started from the same fold's fit at the previous (larger) penalty.
        model = previous or LogisticRegression(max_iter=1000, warm_start=True, tol=self.tol)
        keep = weight > 0
        return model.set_params(C=C).fit(design[keep], target[keep], sample_weight=weight[keep])


def explicit_grid(Cs: Any) -> np.ndarray | None:  # noqa: N803 - scikit-learn's name
    """``Cs`` as a sorted array when it lists inverse penalties; None when it counts
    them; a ValueError when it is neither."""
    if isinstance(Cs, int | np.integer) and not isinstance(Cs, bool):
        if Cs < 1:
            raise ValueError(f"Cs: expected a positive number of penalties, got {Cs!r}")
        return None
    grid = np.sort(np.asarray(Cs, dtype=float).ravel())
    if grid.size == 0 or not np.all(np.isfinite(grid) & (grid > 0)):
        raise ValueError(f"Cs: expected positive finite numbers, got {Cs!r}")
    return grid


def glmnet_grid(
    rows: MergedRows, n_penalties: int, ratio: float, stretch: float = 1.0
) -> np.ndarray:
    """glmnet's penalties as inverse penalties ``C = 1 / (n lambda)``, ascending: from
    ``stretch`` times ``lambda_max`` (the smallest lasso penalty at which every
    coefficient is 0) down to ``lambda_max * stretch * ratio``, evenly on the log
    scale."""
    if not isinstance(ratio, int | float) or isinstance(ratio, bool) or not 0 < ratio < 1:
        raise ValueError(f"min_penalty_ratio: expected a number in (0, 1), got {ratio!r}")
    n_rows = rows.n_rows
    mean = float(rows.count @ rows.target) / n_rows
    gradient = np.abs(rows.design.T @ (rows.count * (rows.target - mean))) / n_rows
    penalty_max = float(gradient.max()) * stretch if gradient.size else 0.0
    if penalty_max <= 0:  # nothing to select: a single, tiny penalty
        return np.array([1.0 / (n_rows * 1e-8)])
    penalties = penalty_max * np.logspace(0.0, np.log10(ratio), n_penalties)
    return 1.0 / (n_rows * penalties)


def l1_logistic(
    C: float,  # noqa: N803 - scikit-learn's name
    random_state: int | None,
    intercept_scaling: float,
) -> LogisticRegression:
    """An L1-penalised ``LogisticRegression`` solved by liblinear, spelt as the installed
    scikit-learn wants it (``penalty="l1"`` became ``l1_ratio=1`` in 1.8)."""
    if parse_version(sklearn.__version__) >= parse_version("1.8"):
        penalty: dict[str, Any] = {"l1_ratio": 1.0}
    else:
        penalty = {"penalty": "l1"}
    return LogisticRegression(
        **penalty,
        C=C,
        solver="liblinear",
        intercept_scaling=intercept_scaling,
        random_state=random_state,
        max_iter=1000,
    )


class LassoOneHot(_PenalisedLogistic):
    """L1-penalised logistic regression on standardised features and one-hot groups, the
    penalty chosen by cross-validated binomial deviance: R's ``cv.glmnet(x, y, family =
    "binomial")`` on impression rows with ``lambda.min`` by default; with
    ``cv_unit="cell"``, ``cv_rule="1se"`` and ``standardize_groups=True``, cv.glmnet on
    the aggregated table (one row per user x display, the response as counts) predicting
    at its default ``lambda.1se``, as the seed analysis ran it.

    glmnet minimises ``deviance / (2 n) + lambda * sum |coef|``, which is scikit-learn's
    objective with ``C = 1 / (n lambda)``. As in glmnet, the penalties form a grid
    from ``lambda_max`` (the smallest penalty at which every coefficient is 0) down to
    ``lambda_max * min_penalty_ratio``, every fold is fitted at the whole training
    data's penalties (standardised anew on its own rows), and the held-out deviance and
    its standard error are glmnet's (``estimators._tuning``).
    The fits use liblinear, which penalises the intercept as a coefficient of a
    constant column of value ``intercept_scaling``; the large default makes that
    penalty small (it moves the mean fitted probability by at most
    ``penalty / intercept_scaling``), close to glmnet's unpenalised intercept.

    Parameters
    ----------
    feature_cols, group_cols, new_levels
        As :class:`LogisticFixedEffects`.
    Cs : int or sequence of float
        Number of penalties on glmnet's grid, or the inverse penalties ``C`` to try.
    cv : int
        Folds of the inner cross-validation.
    cv_unit : {"row", "cell"}
        What a fold holds out: single rows, or cells (rows that share every covariate),
        as :class:`LogisticRidge`.
    cv_rule : {"min", "1se"}
        Which penalty is chosen: glmnet's ``lambda.min`` or ``lambda.1se``.
    standardize_groups : bool
        Scale each level's indicator to unit variance before penalising (glmnet's
        ``standardize = TRUE``).
    min_penalty_ratio : float
        Smallest penalty of the grid relative to ``lambda_max`` (glmnet's
        ``lambda.min.ratio``), in (0, 1).
    intercept_scaling : float
        Value of liblinear's constant column, which carries the intercept.
    patience : int or None
        Stop going down the grid once the held-out deviance has not improved on its
        minimum for this many penalties in a row: the smallest penalties cost the most
        to fit and, past the minimum, are rarely chosen. None tries the whole grid, as
        ``cv.glmnet`` does.
    random_state : int or None
        Shuffling of the inner folds and liblinear's coordinate order.

    Attributes
    ----------
    C_ : float
        The chosen inverse penalty.
    penalty_ : float
        The chosen penalty on glmnet's scale, ``1 / (n C_)``: ``lambda.min`` or
        ``lambda.1se``.
    cv_deviance_, cv_standard_error_ : pandas.Series
        Mean held-out binomial deviance per row and its standard error, indexed by
        ``C``: the grid up to where ``patience`` stopped it.
    n_nonzero_ : int
        Features and group levels with a non-zero coefficient at ``C_``.
    group_scale_ : numpy.ndarray
        What each level's indicator was divided by (1 unless ``standardize_groups``).
    intercept_, coef_, group_effects_, model_
        As :class:`LogisticFixedEffects`; ``model_`` is the ``LogisticRegression``
        refitted on all training rows at ``C_``, on the scaled design.

    Examples
    --------
    >>> from simulators import simulate
    >>> data = simulate("ctr_experiment", seed=1, n_users=100)
    >>> model = LassoOneHot(feature_cols=["display"], group_cols=["user"], Cs=8, random_state=0)
    >>> model.fit(data.X, data.y).predict_proba(data.X.iloc[:3]).shape
    (3, 2)
    """

    def __init__(
        self,
        *,
        feature_cols: Sequence[Hashable] | None = None,
        group_cols: Sequence[Hashable] = (),
        Cs: int | Sequence[float] = 20,  # noqa: N803 - scikit-learn's name
        cv: int = 10,
        cv_unit: str = "row",
        cv_rule: str = "min",
        min_penalty_ratio: float = 1e-4,
        standardize_groups: bool = False,
        intercept_scaling: float = 100.0,
        patience: int | None = 3,
        new_levels: str = "population",
        random_state: int | None = None,
    ) -> None:
        self.feature_cols = feature_cols
        self.group_cols = group_cols
        self.Cs = Cs
        self.cv = cv
        self.cv_unit = cv_unit
        self.cv_rule = cv_rule
        self.min_penalty_ratio = min_penalty_ratio
        self.standardize_groups = standardize_groups
        self.intercept_scaling = intercept_scaling
        self.patience = patience
        self.new_levels = new_levels
        self.random_state = random_state

    def _grid(self, rows: MergedRows) -> np.ndarray:
        """The inverse penalties to try, smallest ``C`` (largest penalty) first."""
        if not np.isfinite(self.intercept_scaling) or self.intercept_scaling <= 0:
            raise ValueError(
                f"intercept_scaling: expected a positive number, got {self.intercept_scaling!r}"
            )
        explicit = explicit_grid(self.Cs)
        if explicit is not None:
            return explicit
        return glmnet_grid(rows, int(self.Cs), self.min_penalty_ratio)

    def _fit_at(  # noqa: N803 - C is scikit-learn's name
        self, C: float, design: sp.csr_matrix, target: np.ndarray, weight: np.ndarray, previous: Any
    ) -> Any:
        keep = weight > 0
        model = l1_logistic(C, self.random_state, self.intercept_scaling)
        return model.fit(design[keep], target[keep], sample_weight=weight[keep])

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> LassoOneHot:
        """Choose the penalty by inner cross-validation and refit on every row; returns
        self. ``sample_weight`` as :meth:`LogisticRidge.fit`."""
        super().fit(X, y, sample_weight)
        self.n_nonzero_ = int(np.count_nonzero(self.model_.coef_))
        return self


class HistGBMClassifier(ClassifierMixin, HistGBMBase):
    """scikit-learn's histogram gradient boosting classifier on features and group codes,
    encoded as :class:`~estimators.HistGBM` does; a binary classifier (``predict`` gives
    labels, ``predict_proba`` the probabilities of ``classes_``).

    Parameters and attributes are those of :class:`~estimators.HistGBM`, plus
    ``classes_``, the two outcomes seen in training, sorted.
    """

    def _booster(self, categorical: np.ndarray | None) -> HistGradientBoostingClassifier:
        return HistGradientBoostingClassifier(
            **self._booster_params(), categorical_features=categorical
        )

    def __sklearn_tags__(self) -> Any:
        return binary_tags(super().__sklearn_tags__())

    def _target(self, y: Any, n_rows: int) -> np.ndarray:
        self.classes_, target = class_labels(y, n_rows)
        return target

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities of ``classes_`` per row, shape (n, 2)."""
        check_is_fitted(self, "model_")
        return self.model_.predict_proba(self._matrix(self._predict_frame(X)))

    def decision_function(self, X: Any) -> np.ndarray:
        """The booster's log-odds of the second class, per row."""
        check_is_fitted(self, "model_")
        return self.model_.decision_function(self._matrix(self._predict_frame(X)))

    def predict(self, X: Any) -> np.ndarray:
        """The more probable class of each row."""
        check_is_fitted(self, "model_")
        return self.classes_[(self.predict_proba(X)[:, 1] > 0.5).astype(int)]
