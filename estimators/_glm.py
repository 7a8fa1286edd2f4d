"""Binary-outcome counterparts: logistic fixed effects, logistic ridge and lasso, boosted
classifier.

Each predicts the probability of the outcome 1 (the mean of a binary outcome, as R's
``predict(fit, type = "response")``), so the harness scores them like any other model;
``predict_proba`` gives both class probabilities.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import sklearn
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.fixes import parse_version
from sklearn.utils.validation import check_is_fitted

from estimators._baselines import HistGBM
from estimators._columns import (
    LevelCodes,
    as_target,
    check_columns,
    check_policy,
    default_features,
    linear_predictor,
    numeric_matrix,
    validated_frame,
)


def binary_target(y: Any, n_rows: int) -> np.ndarray:
    """The outcome as 0/1 floats; anything else is an error naming y."""
    target = as_target(y, n_rows)
    if not np.isin(target, (0.0, 1.0)).all():
        raise ValueError("y: a binary outcome must be 0 or 1 in every row")
    if np.unique(target).size < 2:
        raise ValueError("y: both outcomes (0 and 1) must occur in the training rows")
    return target


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

    def _design(self, frame: pd.DataFrame, fitting: bool) -> sp.csr_matrix:
        features = numeric_matrix(frame, self.feature_cols_, "feature_cols")
        if fitting:
            self.feature_mean_ = features.mean(axis=0)
            scale = features.std(axis=0)
            self.feature_scale_ = np.where(scale > 0, scale, 1.0)
        standardized = (features - self.feature_mean_) / self.feature_scale_
        return sp.hstack(
            [sp.csr_matrix(standardized), one_hot(frame, self.levels_, self.new_levels)],
            format="csr",
        )

    def _prepare(self, X: Any, y: Any) -> tuple[sp.csr_matrix, np.ndarray]:
        check_policy(self.new_levels)
        frame = validated_frame(self, X, reset=True)
        target = self._target(y, len(frame))
        group_cols = check_columns(frame, self.group_cols, "group_cols")
        self.feature_cols_ = default_features(frame, self.feature_cols, exclude=group_cols)
        self.levels_ = {name: LevelCodes(frame[name], name) for name in group_cols}
        return self._design(frame, fitting=True), target

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


class _LogisticOnGroups(RegressorMixin, _GLMOnGroups):
    """Logistic regression on features plus one indicator per group level."""

    def _target(self, y: Any, n_rows: int) -> np.ndarray:
        return binary_target(y, n_rows)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities of 0 and 1 per row, shape (n, 2)."""
        check_is_fitted(self, "model_")
        logit = linear_predictor(self, X)
        probability = 1.0 / (1.0 + np.exp(-logit))
        return np.column_stack([1.0 - probability, probability])

    def predict(self, X: Any) -> np.ndarray:
        """Probability that the outcome is 1."""
        return self.predict_proba(X)[:, 1]


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
    """

    def __init__(
        self,
        feature_cols: Sequence[Hashable] | None = None,
        group_cols: Sequence[Hashable] = (),
        *,
        new_levels: str = "population",
        max_iter: int = 1000,
    ) -> None:
        self.feature_cols = feature_cols
        self.group_cols = group_cols
        self.new_levels = new_levels
        self.max_iter = max_iter

    def fit(self, X: Any, y: Any) -> LogisticFixedEffects:
        """Fit by maximum likelihood; returns self."""
        design, target = self._prepare(X, y)
        model = LogisticRegression(C=np.inf, tol=1e-8, max_iter=self.max_iter)
        self._store(model.fit(design, target))
        return self


class LogisticRidge(_LogisticOnGroups):
    """L2-penalised logistic regression on standardised features and one-hot groups, the
    penalty chosen by stratified cross-validated log loss: the penalised GLM large
    online services often use instead of random effects.

    Parameters
    ----------
    feature_cols, group_cols, new_levels
        As :class:`LogisticFixedEffects`.
    Cs : int or sequence of float
        Inverse penalties to try (``LogisticRegressionCV``).
    cv : int
        Folds of the inner cross-validation; 10, as cv.glmnet uses.
    random_state : int or None
        Shuffling of the inner folds.

    Attributes
    ----------
    C_ : float
        The chosen inverse penalty.
    intercept_, coef_, group_effects_, model_
        As :class:`LogisticFixedEffects`.
    """

    def __init__(
        self,
        feature_cols: Sequence[Hashable] | None = None,
        group_cols: Sequence[Hashable] = (),
        *,
        Cs: int | Sequence[float] = 10,  # noqa: N803 - scikit-learn's name
        cv: int = 10,
        new_levels: str = "population",
        random_state: int | None = None,
    ) -> None:
        self.feature_cols = feature_cols
        self.group_cols = group_cols
        self.Cs = Cs
        self.cv = cv
        self.new_levels = new_levels
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> LogisticRidge:
        """Choose the penalty by inner cross-validation and fit; returns self."""
        design, target = self._prepare(X, y)
        folds = StratifiedKFold(self.cv, shuffle=True, random_state=self.random_state)
        model = LogisticRegressionCV(Cs=self.Cs, cv=folds, scoring="neg_log_loss", max_iter=1000)
        with warnings.catch_warnings():
            # scikit-learn >= 1.8 announces a change of its CV attributes; C_ is unaffected.
            warnings.simplefilter("ignore", FutureWarning)
            model.fit(design, target)
        self.C_ = float(np.ravel(model.C_)[0])
        self._store(model)
        return self


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


class LassoOneHot(_LogisticOnGroups):
    """L1-penalised logistic regression on standardised features and one-hot groups, the
    penalty chosen by cross-validated binomial deviance: R's ``cv.glmnet(x, y, family =
    "binomial")`` with ``lambda.min``.

    glmnet minimises ``deviance / (2 n) + lambda * sum |coef|``, which is scikit-learn's
    objective with ``C = 1 / (n lambda)``. As in glmnet, the penalties form a grid
    from ``lambda_max`` (the smallest penalty at which every coefficient is 0) down to
    ``lambda_max * min_penalty_ratio``, the folds share the grid of the whole training
    data, and the chosen penalty minimises the deviance of all held-out rows.
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
        Folds of the inner cross-validation (stratified by outcome).
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
        The chosen penalty on glmnet's scale, ``1 / (n C_)``: ``lambda.min``.
    cv_deviance_ : pandas.Series
        Mean held-out binomial deviance per row, indexed by ``C``: the grid up to
        where ``patience`` stopped it.
    n_nonzero_ : int
        Features and group levels with a non-zero coefficient at ``C_``.
    intercept_, coef_, group_effects_, model_
        As :class:`LogisticFixedEffects`; ``model_`` is the ``LogisticRegression``
        refitted on all training rows at ``C_``.

    Examples
    --------
    >>> from simulators import simulate
    >>> data = simulate("ctr_experiment", seed=1, n_users=100)
    >>> model = LassoOneHot(["display"], ["user"], Cs=8, random_state=0)
    >>> model.fit(data.X, data.y).predict(data.X.iloc[:3]).shape
    (3,)
    """

    def __init__(
        self,
        feature_cols: Sequence[Hashable] | None = None,
        group_cols: Sequence[Hashable] = (),
        *,
        Cs: int | Sequence[float] = 20,  # noqa: N803 - scikit-learn's name
        cv: int = 10,
        min_penalty_ratio: float = 1e-4,
        intercept_scaling: float = 100.0,
        patience: int | None = 3,
        new_levels: str = "population",
        random_state: int | None = None,
    ) -> None:
        self.feature_cols = feature_cols
        self.group_cols = group_cols
        self.Cs = Cs
        self.cv = cv
        self.min_penalty_ratio = min_penalty_ratio
        self.intercept_scaling = intercept_scaling
        self.patience = patience
        self.new_levels = new_levels
        self.random_state = random_state

    def _grid(self, design: sp.csr_matrix, target: np.ndarray) -> np.ndarray:
        """The inverse penalties to try, smallest ``C`` (largest penalty) first."""
        if not isinstance(self.Cs, int | np.integer) or isinstance(self.Cs, bool):
            grid = np.sort(np.asarray(self.Cs, dtype=float).ravel())
            if grid.size == 0 or not np.all(np.isfinite(grid) & (grid > 0)):
                raise ValueError(f"Cs: expected positive finite numbers, got {self.Cs!r}")
            return grid
        if self.Cs < 1:
            raise ValueError(f"Cs: expected a positive number of penalties, got {self.Cs!r}")
        ratio = self.min_penalty_ratio
        if not isinstance(ratio, int | float) or isinstance(ratio, bool) or not 0 < ratio < 1:
            raise ValueError(f"min_penalty_ratio: expected a number in (0, 1), got {ratio!r}")
        n_rows = len(target)
        gradient = np.abs(design.T @ (target - target.mean())) / n_rows
        penalty_max = float(gradient.max()) if gradient.size else 0.0
        if penalty_max <= 0:  # nothing to select: a single, tiny penalty
            return np.array([1.0 / (n_rows * 1e-8)])
        penalties = penalty_max * np.logspace(0.0, np.log10(ratio), int(self.Cs))
        return 1.0 / (n_rows * penalties)

    def fit(self, X: Any, y: Any) -> LassoOneHot:
        """Choose the penalty by inner cross-validation and refit on every row; returns
        self."""
        design, target = self._prepare(X, y)
        if not isinstance(self.cv, int | np.integer) or isinstance(self.cv, bool) or self.cv < 2:
            raise ValueError(f"cv: expected an integer of at least 2, got {self.cv!r}")
        if not np.isfinite(self.intercept_scaling) or self.intercept_scaling <= 0:
            raise ValueError(
                f"intercept_scaling: expected a positive number, got {self.intercept_scaling!r}"
            )
        patience = self.patience
        if patience is not None and (
            not isinstance(patience, int | np.integer) or isinstance(patience, bool) or patience < 1
        ):
            raise ValueError(f"patience: expected a positive integer or None, got {patience!r}")
        grid = self._grid(design, target)
        folds = list(
            StratifiedKFold(self.cv, shuffle=True, random_state=self.random_state).split(
                np.zeros(len(target)), target
            )
        )
        deviance = np.full(grid.size, np.inf)
        for k, C in enumerate(grid):  # noqa: N806 - scikit-learn's name
            deviance[k] = sum(self._held_out_deviance(C, design, target, fold) for fold in folds)
            best = int(np.argmin(deviance[: k + 1]))
            # Small penalties cost the most; stop once they have kept doing worse.
            if self.patience is not None and k - best >= self.patience:
                break
        visited = np.isfinite(deviance)
        self.cv_deviance_ = pd.Series(
            deviance[visited] / len(target), index=pd.Index(grid[visited], name="C")
        )
        # Ties go to the largest penalty, as glmnet's lambda.min does.
        self.C_ = float(grid[int(np.argmin(deviance))])
        self.penalty_ = 1.0 / (len(target) * self.C_)
        model = l1_logistic(self.C_, self.random_state, self.intercept_scaling)
        self._store(model.fit(design, target))
        self.n_nonzero_ = int(np.count_nonzero(model.coef_))
        return self

    def _held_out_deviance(
        self,
        C: float,  # noqa: N803 - scikit-learn's name
        design: sp.csr_matrix,
        target: np.ndarray,
        fold: tuple[np.ndarray, np.ndarray],
    ) -> float:
        """Binomial deviance of a fold's held-out rows under the fit to its other rows."""
        train, test = fold
        model = l1_logistic(C, self.random_state, self.intercept_scaling)
        p = model.fit(design[train], target[train]).predict_proba(design[test])[:, 1]
        p = np.clip(p, 1e-15, 1 - 1e-15)
        y = target[test]
        return float(-2 * np.sum(y * np.log(p) + (1 - y) * np.log1p(-p)))


class HistGBMClassifier(HistGBM):
    """scikit-learn's histogram gradient boosting classifier on features and group codes,
    encoded as :class:`HistGBM` does; ``predict`` gives the probability of 1."""

    def _booster(self, categorical: np.ndarray | None) -> HistGradientBoostingClassifier:
        return HistGradientBoostingClassifier(
            **self._booster_params(), categorical_features=categorical
        )

    def fit(self, X: Any, y: Any) -> HistGBMClassifier:
        """Fit the booster; returns self."""
        frame = validated_frame(self, X, reset=True)
        return super().fit(frame, binary_target(y, len(frame)))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities of 0 and 1 per row, shape (n, 2)."""
        check_is_fitted(self, "model_")
        frame = validated_frame(self, X, reset=False)
        check_columns(frame, list(self.levels_), "group_cols")
        return self.model_.predict_proba(self._matrix(frame))

    def predict(self, X: Any) -> np.ndarray:
        """Probability that the outcome is 1."""
        return self.predict_proba(X)[:, 1]
