"""Least-squares baselines: pooled OLS and fixed effects with sparse group dummies."""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.linalg import lsqr
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from estimators._columns import (
    LevelCodes,
    add_group_effects,
    as_target,
    check_columns,
    check_policy,
    default_features,
    numeric_matrix,
    validated_frame,
)


class PooledOLS(RegressorMixin, BaseEstimator):
    """Ordinary least squares on the features alone, ignoring every grouping factor.

    Parameters
    ----------
    feature_cols : sequence of str or int, optional
        Covariate columns of ``X``; by default every column.

    Attributes
    ----------
    intercept_ : float
    coef_ : pandas.Series
        Coefficient per feature column.
    feature_cols_ : list
        The feature columns used.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    >>> PooledOLS().fit(X, [1.0, 3.0, 5.0, 7.0]).coef_["x"].round(6)
    np.float64(2.0)
    """

    def __init__(self, feature_cols: Sequence[Hashable] | None = None) -> None:
        self.feature_cols = feature_cols

    def fit(self, X: Any, y: Any) -> PooledOLS:
        """Fit by least squares; returns self."""
        frame = validated_frame(self, X, reset=True)
        target = as_target(y, len(frame))
        self.feature_cols_ = default_features(frame, self.feature_cols, exclude=())
        design = np.column_stack(
            [np.ones(len(frame)), numeric_matrix(frame, self.feature_cols_, "feature_cols")]
        )
        solution, *_ = np.linalg.lstsq(design, target, rcond=None)
        self.intercept_ = float(solution[0])
        self.coef_ = pd.Series(solution[1:], index=pd.Index(self.feature_cols_, dtype=object))
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted outcome for each row of ``X``."""
        check_is_fitted(self, "coef_")
        frame = validated_frame(self, X, reset=False)
        features = numeric_matrix(frame, self.feature_cols_, "feature_cols")
        return self.intercept_ + features @ self.coef_.to_numpy()


class FixedEffects(RegressorMixin, BaseEstimator):
    """Least squares with a dummy per level of each grouping factor, built sparse.

    The model is ``y ~ features + group_1 + group_2 + ...`` as R's ``lm`` fits it
    (treatment contrasts). The dummy design is sparse and solved by LSQR on
    unit-norm columns, so thousands of levels and crossed factors are fine; where
    the design is rank-deficient (say, users and items that split into disconnected
    sets) LSQR returns the minimum-norm solution, whose fitted values are still the
    least-squares ones.

    After fitting, each factor's effects are centred to an unweighted mean of zero
    over its training levels and the intercept absorbs the shift, so the intercept
    plus the features is the prediction for an average unit. A level never seen in
    training gets effect zero (``new_levels="population"``) or raises
    (``new_levels="error"``).

    Parameters
    ----------
    feature_cols : sequence of str or int, optional
        Covariate columns; by default every column not in ``group_cols``.
    group_cols : sequence of str or int
        Grouping-factor columns, each one a set of dummies.
    new_levels : {"population", "error"}
        What to do with levels not seen in training at predict time.
    tol : float
        LSQR's relative tolerance (``atol`` and ``btol``).

    Attributes
    ----------
    intercept_ : float
    coef_ : pandas.Series
        Coefficient per feature column.
    group_effects_ : dict of pandas.Series
        Per factor, the centred effect of every training level, indexed by level.
    feature_cols_ : list
    solver_info_ : dict
        LSQR's stopping reason, iterations and condition estimate.
    """

    def __init__(
        self,
        feature_cols: Sequence[Hashable] | None = None,
        group_cols: Sequence[Hashable] = (),
        *,
        new_levels: str = "population",
        tol: float = 1e-12,
    ) -> None:
        self.feature_cols = feature_cols
        self.group_cols = group_cols
        self.new_levels = new_levels
        self.tol = tol

    def fit(self, X: Any, y: Any) -> FixedEffects:
        """Fit by sparse least squares; returns self."""
        check_policy(self.new_levels)
        frame = validated_frame(self, X, reset=True)
        target = as_target(y, len(frame))
        group_cols = check_columns(frame, self.group_cols, "group_cols")
        self.feature_cols_ = default_features(frame, self.feature_cols, exclude=group_cols)
        features = numeric_matrix(frame, self.feature_cols_, "feature_cols")
        self.levels_ = {name: LevelCodes(frame[name], name) for name in group_cols}

        n_rows = len(frame)
        blocks = [sp.csr_matrix(np.column_stack([np.ones(n_rows), features]))]
        for name, levels in self.levels_.items():
            codes = levels.encode(frame[name])
            # Treatment contrasts: the first level is the reference and has no column.
            keep = codes > 0
            blocks.append(
                sp.csr_matrix(
                    (np.ones(keep.sum()), (np.flatnonzero(keep), codes[keep] - 1)),
                    shape=(n_rows, len(levels) - 1),
                )
            )
        design = sp.hstack(blocks, format="csc")
        norms = np.sqrt(np.asarray(design.multiply(design).sum(axis=0))).ravel()
        norms[norms == 0] = 1.0
        result = lsqr(
            design @ sp.diags(1.0 / norms),
            target,
            atol=self.tol,
            btol=self.tol,
            conlim=1e14,
            iter_lim=max(1000, 10 * design.shape[1]),
        )
        solution, stop_reason, iterations = result[0] / norms, result[1], result[2]
        self.solver_info_ = {
            "stop_reason": int(stop_reason),
            "iterations": int(iterations),
            "condition_estimate": float(result[6]),
        }
        if stop_reason == 7:
            warnings.warn(
                f"FixedEffects: LSQR stopped at its iteration limit ({iterations}); "
                "the coefficients may be inaccurate",
                ConvergenceWarning,
                stacklevel=2,
            )

        n_features = len(self.feature_cols_)
        intercept = float(solution[0])
        self.coef_ = pd.Series(
            solution[1 : 1 + n_features], index=pd.Index(self.feature_cols_, dtype=object)
        )
        self.group_effects_ = {}
        start = 1 + n_features
        for name, levels in self.levels_.items():
            effects = np.concatenate([[0.0], solution[start : start + len(levels) - 1]])
            start += len(levels) - 1
            shift = effects.mean()
            intercept += shift
            self.group_effects_[name] = pd.Series(effects - shift, index=levels.levels, name=name)
        self.intercept_ = intercept
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted outcome: population part plus the effect of each seen level."""
        check_is_fitted(self, "coef_")
        check_policy(self.new_levels)
        frame = validated_frame(self, X, reset=False)
        check_columns(frame, list(self.levels_), "group_cols")
        features = numeric_matrix(frame, self.feature_cols_, "feature_cols")
        prediction = self.intercept_ + features @ self.coef_.to_numpy()
        return add_group_effects(
            prediction, frame, self.levels_, self.group_effects_, self.new_levels
        )
