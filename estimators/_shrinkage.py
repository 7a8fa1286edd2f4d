"""Shrinkage baselines without a likelihood: ridge on one-hot groups, empirical Bayes."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from estimators._columns import (
    LevelCodes,
    add_group_effects,
    as_target,
    check_columns,
    check_policy,
    default_features,
    linear_predictor,
    numeric_matrix,
    validated_frame,
    weighted_moments,
    weighted_rows,
)

# Penalties 1e-3 .. 1e3, two per decade. With standardised features and 0/1 level
# indicators, a penalty is the ratio noise variance / effect variance of a mixed model,
# so the grid spans effects far larger and far smaller than the noise.
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(alpha) for alpha in np.logspace(-3, 3, 13))


class RidgeOneHot(RegressorMixin, BaseEstimator):
    """Ridge regression on standardised features and one-hot groups, the penalty chosen by
    exact leave-one-out error.

    Every level of every grouping factor gets an indicator (no reference level), all
    penalised by the same ``alpha``; the intercept is not penalised. This is the
    penalised regression often used in place of random intercepts: ``alpha`` plays the
    role of noise variance / effect variance, shared by all factors. Because each
    training row has exactly one level per factor, the unpenalised intercept forces each
    factor's effects to sum to zero, so a level unseen in training (an all-zero
    indicator row) gets the population prediction.

    The leave-one-out error of each ``alpha`` is the exact one, ``mean((e_i / (1 -
    h_ii))^2)`` with the hat-matrix diagonal ``h``, as in scikit-learn's ``RidgeCV``
    (its "GCV" mode). ``RidgeCV`` on this sparse design decomposes the dense ``p x p``
    Gram matrix, which for ten thousand levels takes minutes and gigabytes. Here the
    factor with the most levels, whose block of the Gram matrix is diagonal, is
    eliminated: each ``alpha`` costs inverting the Schur complement, a dense matrix of
    size ``m`` (features plus the levels of the other factors) and work linear in the
    rows, so users x a few hundred items fit in seconds; ``m`` in the thousands costs
    about ``m**3`` flops per ``alpha``, and memory grows as ``m`` times the number of
    levels of the eliminated factor. Features are standardised with all training
    rows before the leave-one-out, as ``RidgeCV`` does with a fixed design.

    Parameters
    ----------
    feature_cols : sequence of str or int, optional
        Covariate columns; by default every column not in ``group_cols``.
    group_cols : sequence of str or int
        Grouping-factor columns, each one-hot encoded.
    alphas : sequence of float
        Penalties to choose from, each positive.
    new_levels : {"population", "error"}
        What to do with levels not seen in training at predict time.

    Attributes
    ----------
    alpha_ : float
        The penalty with the smallest leave-one-out error.
    cv_scores_ : pandas.Series
        Leave-one-out mean squared error per penalty, indexed by ``alphas``.
    intercept_ : float
    coef_ : pandas.Series
        Coefficient per feature column, on the original scale of the features.
    group_effects_ : dict of pandas.Series
        Per factor, the effect of every training level, indexed by level.
    feature_cols_ : list
    levels_ : dict of LevelCodes
        The training levels per factor.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 0.0, 1.0, 2.0], "g": list("aaabbb")})
    >>> y = [1.0, 3.0, 5.0, -1.0, 1.0, 3.0]
    >>> model = RidgeOneHot(feature_cols=["x"], group_cols=["g"], alphas=[0.01, 1.0])
    >>> model.fit(X, y).alpha_
    0.01
    >>> model.group_effects_["g"].round(2).tolist()
    [1.0, -1.0]
    """

    def __init__(
        self,
        *,
        feature_cols: Sequence[Hashable] | None = None,
        group_cols: Sequence[Hashable] = (),
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        new_levels: str = "population",
    ) -> None:
        self.feature_cols = feature_cols
        self.group_cols = group_cols
        self.alphas = alphas
        self.new_levels = new_levels

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> RidgeOneHot:
        """Choose the penalty by leave-one-out error and fit with it; returns self.

        With ``sample_weight`` (one non-negative weight per row) the fit minimises
        ``sum_i w_i (y_i - fit_i)^2 + alpha * ||coef||^2``, the features are standardised
        with weighted moments, and the leave-one-out error is exact for the weighted
        fit (leverage ``w_i x_i' (X'WX + P)^-1 x_i``), averaged with the weights. Rows of
        weight 0 are left out.
        """
        check_policy(self.new_levels)
        alphas = np.asarray(self.alphas, dtype=float).ravel()
        if alphas.size == 0 or not np.all(np.isfinite(alphas) & (alphas > 0)):
            raise ValueError(f"alphas: expected one or more positive numbers, got {self.alphas}")
        frame = validated_frame(self, X, reset=True)
        frame, y, weight = weighted_rows(frame, y, sample_weight)
        target = as_target(y, len(frame))
        weight = np.ones(len(frame)) if weight is None else weight
        group_cols = check_columns(frame, self.group_cols, "group_cols")
        self.feature_cols_ = default_features(frame, self.feature_cols, exclude=group_cols)
        features = numeric_matrix(frame, self.feature_cols_, "feature_cols")
        self.levels_ = {name: LevelCodes(frame[name], name) for name in group_cols}
        codes = {name: levels.encode(frame[name]) for name, levels in self.levels_.items()}

        mean, scale = weighted_moments(features, weight)
        scale = np.where(scale > 0, scale, 1.0)
        problem = _RidgeProblem((features - mean) / scale, codes, target, weight)

        scores = np.array([problem.solve(alpha)[2] for alpha in alphas])
        self.cv_scores_ = pd.Series(scores, index=pd.Index(alphas, name="alpha"), name="loo_mse")
        self.alpha_ = float(alphas[int(np.argmin(scores))])
        dense_part, eliminated_effects, _ = problem.solve(self.alpha_)

        k = len(self.feature_cols_)
        self.coef_ = pd.Series(dense_part[1 : 1 + k] / scale, index=pd.Index(self.feature_cols_))
        self.intercept_ = float(dense_part[0] - np.sum(self.coef_.to_numpy() * mean))
        effects = dict(zip(problem.other_factors, problem.split(dense_part), strict=True))
        if problem.eliminated is not None:
            effects[problem.eliminated] = eliminated_effects
        self.group_effects_ = {
            name: pd.Series(effects[name], index=levels.levels, name=name)
            for name, levels in self.levels_.items()
        }
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted outcome: population part plus the effect of each seen level."""
        check_is_fitted(self, "coef_")
        return linear_predictor(self, X)


class _RidgeProblem:
    """Ridge normal equations with the largest factor eliminated, and their exact
    leave-one-out error, for one design and any penalty.

    The design is ``[u | r]``: ``u`` the one-hot columns of the factor with the most
    levels and ``r`` the dense part (intercept, standardised features) followed by the
    one-hot columns of the other factors. With ``d = counts + alpha``, ``A = D^-1 u'r``
    and the Schur complement ``S = r'r + P - r'u A`` (``P`` the penalty, 0 for the
    intercept), the leverage of row ``i`` of level ``j`` is
    ``1 / d_j + (r_i - a_j)' S^-1 (r_i - a_j)``; every row of ``r`` has the same
    sparsity (dense part, one 1 per other factor), so that quadratic form costs a few
    dozen flops per row.
    """

    def __init__(
        self,
        features: np.ndarray,
        codes: dict[Hashable, np.ndarray],
        target: np.ndarray,
        weight: np.ndarray,
    ) -> None:
        n_rows = len(target)
        self.target = target
        self.weight = weight
        self.dense = np.column_stack([np.ones(n_rows), features])
        sizes = {name: int(code.max()) + 1 for name, code in codes.items()}
        self.eliminated = max(sizes, key=sizes.get) if sizes else None
        self.other_factors = [name for name in codes if name != self.eliminated]
        # Column of each row's level in r, per other factor.
        self.columns = []
        self.offsets = [self.dense.shape[1]]
        for name in self.other_factors:
            self.columns.append(self.offsets[-1] + codes[name])
            self.offsets.append(self.offsets[-1] + sizes[name])
        width = self.offsets[-1]
        n_dense = self.dense.shape[1]
        indicators = sp.csr_matrix(
            (
                np.ones(n_rows * len(self.columns)),
                np.column_stack(self.columns).ravel() - n_dense if self.columns else [],
                np.arange(n_rows + 1) * len(self.columns),
            ),
            shape=(n_rows, width - n_dense),
        )
        self.r = sp.hstack([sp.csr_matrix(self.dense), indicators], format="csr")
        self.gram = (self.r.T @ sp.diags(weight) @ self.r).toarray()
        self.r_target = self.r.T @ (weight * target)
        if self.eliminated is None:
            self.level = np.zeros(n_rows, dtype=int)
            self.counts = np.zeros(0)
            self.cross = sp.csr_matrix((0, width))
            self.u_target = np.zeros(0)
        else:
            self.level = codes[self.eliminated]
            n_levels = sizes[self.eliminated]
            # u'W: the eliminated factor's indicators, each row's entry its weight.
            self.counts = np.bincount(self.level, weights=weight, minlength=n_levels)
            u = sp.csr_matrix((weight, (self.level, np.arange(n_rows))), shape=(n_levels, n_rows))
            self.cross = (u @ self.r).tocsr()
            self.u_target = np.bincount(self.level, weights=weight * target, minlength=n_levels)

    def split(self, dense_part: np.ndarray) -> list[np.ndarray]:
        """The other factors' effects, in order, from the dense part's solution."""
        return [
            dense_part[start:stop]
            for start, stop in zip(self.offsets[:-1], self.offsets[1:], strict=True)
        ]

    def solve(self, alpha: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Coefficients of r, effects of the eliminated factor, leave-one-out MSE."""
        width = self.gram.shape[0]
        diagonal = self.counts + alpha
        a = sp.diags(1.0 / diagonal) @ self.cross
        penalty = np.full(width, alpha)
        penalty[0] = 0.0
        schur = self.gram + np.diag(penalty) - (self.cross.T @ a).toarray()
        # The whole inverse, not just a factor: the leverages read every block of it.
        inverse = np.linalg.inv(schur)

        dense_part = inverse @ (self.r_target - a.T @ self.u_target)
        eliminated_effects = (self.u_target - self.cross @ dense_part) / diagonal
        fitted = self.r @ dense_part
        if self.eliminated is not None:
            fitted += eliminated_effects[self.level]

        leverage = self._quadratic_form(inverse)
        if self.eliminated is not None:
            # (r_i - a_j)' S^-1 (r_i - a_j) = r_i'S^-1 r_i - 2 r_i'(S^-1 a_j) + a_j'S^-1 a_j
            toward_levels = np.asarray(a @ inverse)
            level_quadratic = np.asarray(a.multiply(toward_levels).sum(axis=1)).ravel()
            n_dense = self.dense.shape[1]
            row_cross = np.einsum(
                "ij,ij->i", toward_levels[self.level, :n_dense], self.dense, optimize=True
            )
            for column in self.columns:
                row_cross += toward_levels[self.level, column]
            leverage += 1.0 / diagonal[self.level] - 2.0 * row_cross
            leverage += level_quadratic[self.level]
        # The hat matrix of weighted ridge is X (X'WX + P)^-1 X'W: row i's leverage is
        # its weight times the quadratic form above.
        leverage *= self.weight
        loo_residuals = (self.target - fitted) / (1.0 - leverage)
        return (
            dense_part,
            eliminated_effects,
            float(np.average(loo_residuals**2, weights=self.weight)),
        )

    def _quadratic_form(self, matrix: np.ndarray) -> np.ndarray:
        """``r_i' M r_i`` for every row, using r's fixed sparsity."""
        n_dense = self.dense.shape[1]
        values = np.einsum(
            "ij,jk,ik->i", self.dense, matrix[:n_dense, :n_dense], self.dense, optimize=True
        )
        for column in self.columns:
            values += 2.0 * np.einsum("ij,ji->i", self.dense, matrix[:n_dense, column])
            for other in self.columns:
                values += matrix[column, other]
        return values


class EBShrinkage(RegressorMixin, BaseEstimator):
    """Empirical-Bayes shrinkage of each unit's mean residual toward a pooled regression.

    A James-Stein-type estimator in three moment steps, no likelihood: fit least squares
    on the features ignoring units; from its residuals ``r`` take each unit's count
    ``n_j`` and mean ``rbar_j``; estimate the within-unit variance ``sigma2`` (pooled
    within-unit variance of ``r``, ``N - J`` degrees of freedom) and the between-unit
    variance by the one-way ANOVA method of moments,
    ``tau2 = (sum_j n_j (rbar_j - rbar)^2 - (J - 1) sigma2) / (N - sum_j n_j^2 / N)``,
    clipped at 0. A unit's shrinkage factor is ``B_j = tau2 / (tau2 + sigma2 / n_j)`` and
    its prediction the regression plus ``B_j rbar_j``; an unseen unit gets the
    regression alone. The degrees of freedom the regression uses are ignored, which
    matters only with few rows per feature.

    Parameters
    ----------
    feature_cols : sequence of str or int, optional
        Covariate columns; by default every column except ``group_col``.
    group_col : str or int
        The grouping column whose units are shrunk.
    new_levels : {"population", "error"}
        What to do with units not seen in training at predict time.

    Attributes
    ----------
    intercept_ : float
    coef_ : pandas.Series
        Least-squares coefficient per feature column (the pooled regression).
    sigma2_ : float
        Within-unit residual variance.
    tau2_ : float
        Between-unit variance of the mean residuals, at least 0.
    shrinkage_ : pandas.Series
        ``B_j`` per unit, indexed by unit.
    unit_effects_ : pandas.Series
        ``B_j rbar_j`` per unit, added to the regression for that unit.
    unit_counts_ : pandas.Series
        Training rows per unit.
    feature_cols_ : list
    levels_ : LevelCodes

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"user": list("aabbcc")})
    >>> model = EBShrinkage(group_col="user").fit(X, [0.0, 2.0, 4.0, 6.0, 8.0, 10.0])
    >>> model.sigma2_, round(model.tau2_, 6)
    (2.0, 15.0)
    >>> model.shrinkage_.tolist()
    [0.9375, 0.9375, 0.9375]
    >>> model.predict(pd.DataFrame({"user": ["a", "new"]})).round(6).tolist()
    [1.25, 5.0]
    """

    def __init__(
        self,
        *,
        feature_cols: Sequence[Hashable] | None = None,
        group_col: Hashable = None,
        new_levels: str = "population",
    ) -> None:
        self.feature_cols = feature_cols
        self.group_col = group_col
        self.new_levels = new_levels

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> EBShrinkage:
        """Fit the regression, the variances and the shrinkage factors; returns self.

        ``sample_weight`` (optional, one non-negative weight per row) are frequency
        weights: a row of weight w counts as w rows in the regression (weighted least
        squares), the unit means, the variance estimates (``n_j`` and ``N`` are total
        weights) and so the shrinkage. Rows of weight 0 are left out.
        """
        check_policy(self.new_levels)
        if self.group_col is None:
            raise ValueError("group_col: EBShrinkage needs the name of a grouping column")
        frame = validated_frame(self, X, reset=True)
        frame, y, weight = weighted_rows(frame, y, sample_weight)
        target = as_target(y, len(frame))
        weight = np.ones(len(frame)) if weight is None else weight
        (name,) = check_columns(frame, [self.group_col], "group_col")
        self.feature_cols_ = default_features(frame, self.feature_cols, exclude=[name])
        features = numeric_matrix(frame, self.feature_cols_, "feature_cols")
        design = np.column_stack([np.ones(len(frame)), features])
        root = np.sqrt(weight)
        solution, *_ = np.linalg.lstsq(root[:, None] * design, root * target, rcond=None)
        self.intercept_ = float(solution[0])
        self.coef_ = pd.Series(solution[1:], index=pd.Index(self.feature_cols_, dtype=object))
        residuals = target - design @ solution

        self.levels_ = LevelCodes(frame[name], name)
        codes = self.levels_.encode(frame[name])
        n_units = len(self.levels_)
        rows_per_unit = np.bincount(codes, minlength=n_units)
        counts = np.bincount(codes, weights=weight, minlength=n_units)
        means = np.bincount(codes, weights=weight * residuals, minlength=n_units) / counts
        n_rows = float(weight.sum())
        if n_rows <= n_units:
            raise ValueError(
                f"group_col: every unit of {name!r} has one row, so the within-unit "
                "variance cannot be estimated"
            )
        within = np.sum(weight * (residuals - means[codes]) ** 2)
        self.sigma2_ = float(within / (n_rows - n_units))
        overall = np.average(residuals, weights=weight)
        between = np.sum(counts * (means - overall) ** 2)
        effective_n = n_rows - np.sum(counts**2) / n_rows
        # One unit leaves no between-unit variation to estimate: no shrinkage toward it.
        tau2 = (between - (n_units - 1) * self.sigma2_) / effective_n if effective_n > 0 else 0
        self.tau2_ = float(max(tau2, 0.0))

        if self.tau2_ > 0:
            shrinkage = self.tau2_ / (self.tau2_ + self.sigma2_ / counts)
        else:
            shrinkage = np.zeros(n_units)
        index = self.levels_.levels
        self.unit_counts_ = pd.Series(rows_per_unit, index=index, name=name)
        self.shrinkage_ = pd.Series(shrinkage, index=index, name=name)
        self.unit_effects_ = pd.Series(shrinkage * means, index=index, name=name)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """The regression plus the unit's shrunken mean residual (0 for unseen units)."""
        check_is_fitted(self, "unit_effects_")
        check_policy(self.new_levels)
        frame = validated_frame(self, X, reset=False)
        (name,) = check_columns(frame, [self.levels_.name], "group_col")
        features = numeric_matrix(frame, self.feature_cols_, "feature_cols")
        prediction = self.intercept_ + features @ self.coef_.to_numpy()
        return add_group_effects(
            prediction, frame, {name: self.levels_}, {name: self.unit_effects_}, self.new_levels
        )
