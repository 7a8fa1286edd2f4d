"""No-pooling and machine-learning baselines."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.utils.validation import check_is_fitted

from estimators._columns import (
    LevelCodes,
    allow_missing_features,
    as_target,
    check_columns,
    check_policy,
    default_features,
    numeric_matrix,
    validated_frame,
    weighted_rows,
)


class GroupMean(RegressorMixin, BaseEstimator):
    """Each unit's own training mean (no pooling); unseen units get the overall mean.

    Parameters
    ----------
    group_col : str or int
        The grouping column whose units each get their own mean.
    new_levels : {"population", "error"}
        What to do with units not seen in training at predict time.

    Attributes
    ----------
    overall_mean_ : float
        Mean of all training outcomes, the prediction for an unseen unit.
    group_means_ : pandas.Series
        Training mean per unit, indexed by unit.
    group_counts_ : pandas.Series
        Training rows per unit.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"user": ["a", "a", "b"]})
    >>> GroupMean(group_col="user").fit(X, [1.0, 3.0, 5.0]).predict(
    ...     pd.DataFrame({"user": ["a", "c"]})).tolist()
    [2.0, 3.0]
    """

    def __init__(self, *, group_col: Hashable = None, new_levels: str = "population") -> None:
        self.group_col = group_col
        self.new_levels = new_levels

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> GroupMean:
        """Compute the per-unit means; returns self.

        With ``sample_weight`` (one non-negative weight per row) the means are weighted
        means; rows of weight 0 are left out (a unit seen only in them is unseen).
        """
        check_policy(self.new_levels)
        if self.group_col is None:
            raise ValueError("group_col: GroupMean needs the name of a grouping column")
        frame = validated_frame(self, X, reset=True)
        frame, y, weight = weighted_rows(frame, y, sample_weight)
        target = as_target(y, len(frame))
        weight = np.ones(len(frame)) if weight is None else weight
        (name,) = check_columns(frame, [self.group_col], "group_col")
        self.levels_ = LevelCodes(frame[name], name)
        codes = self.levels_.encode(frame[name])
        counts = np.bincount(codes, minlength=len(self.levels_))
        totals = np.bincount(codes, weights=weight, minlength=len(self.levels_))
        sums = np.bincount(codes, weights=weight * target, minlength=len(self.levels_))
        self.overall_mean_ = float(np.average(target, weights=weight))
        self.group_means_ = pd.Series(sums / totals, index=self.levels_.levels, name=name)
        self.group_counts_ = pd.Series(counts, index=self.levels_.levels, name=name)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """The unit's training mean, or the overall mean for an unseen unit."""
        check_is_fitted(self, "group_means_")
        frame = validated_frame(self, X, reset=False)
        (name,) = check_columns(frame, [self.levels_.name], "group_col")
        codes = self.levels_.encode(frame[name], self.new_levels)
        means = self.group_means_.to_numpy()
        return np.where(codes >= 0, means[np.maximum(codes, 0)], self.overall_mean_)


class HistGBMBase(BaseEstimator):
    """What the histogram boosters share: parameters, the coding of the group columns,
    fitting; subclasses name the booster (``_booster``) and the outcome (``_target``)."""

    def __init__(
        self,
        *,
        feature_cols: Sequence[Hashable] | None = None,
        group_cols: Sequence[Hashable] = (),
        learning_rate: float = 0.1,
        max_iter: int = 100,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 20,
        l2_regularization: float = 0.0,
        max_bins: int = 255,
        early_stopping: str | bool = "auto",
        random_state: int | None = None,
    ) -> None:
        self.feature_cols = feature_cols
        self.group_cols = group_cols
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.max_bins = max_bins
        self.early_stopping = early_stopping
        self.random_state = random_state

    def _matrix(self, frame: pd.DataFrame) -> np.ndarray:
        features = numeric_matrix(frame, self.feature_cols_, "feature_cols", allow_missing=True)
        # Unseen and missing levels are both coded -1, then NaN: the booster routes them.
        codes = [levels.encode(frame[name]).astype(float) for name, levels in self.levels_.items()]
        matrix = np.column_stack([features, *codes]) if codes else features
        matrix[:, features.shape[1] :][matrix[:, features.shape[1] :] < 0] = np.nan
        return matrix

    def _booster_params(self) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "max_iter": self.max_iter,
            "max_leaf_nodes": self.max_leaf_nodes,
            "min_samples_leaf": self.min_samples_leaf,
            "l2_regularization": self.l2_regularization,
            "max_bins": self.max_bins,
            "early_stopping": self.early_stopping,
            "random_state": self.random_state,
        }

    def __sklearn_tags__(self) -> Any:
        return allow_missing_features(super().__sklearn_tags__())

    def _target(self, y: Any, n_rows: int) -> np.ndarray:
        """The outcome the booster fits (a finite number per row here)."""
        return as_target(y, n_rows)

    def _predict_frame(self, X: Any) -> pd.DataFrame:
        frame = validated_frame(self, X, reset=False)
        check_columns(frame, list(self.levels_), "group_cols")
        return frame

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> HistGBMBase:
        """Fit the booster; returns self.

        ``sample_weight`` (optional, one non-negative weight per row) goes to the
        booster; rows of weight 0 are left out before the levels are coded.
        """
        frame = validated_frame(self, X, reset=True)
        frame, y, weight = weighted_rows(frame, y, sample_weight)
        target = self._target(y, len(frame))
        group_cols = check_columns(frame, self.group_cols, "group_cols")
        self.feature_cols_ = default_features(frame, self.feature_cols, exclude=group_cols)
        self.levels_ = {
            name: LevelCodes(frame[name], name, allow_missing=True) for name in group_cols
        }
        self.group_encoding_ = {
            name: "categorical" if len(levels) <= self.max_bins else "ordinal"
            for name, levels in self.levels_.items()
        }
        categorical = [False] * len(self.feature_cols_) + [
            encoding == "categorical" for encoding in self.group_encoding_.values()
        ]
        mask = np.array(categorical, dtype=bool) if any(categorical) else None
        self.model_ = self._booster(mask)
        self.model_.fit(self._matrix(frame), target, sample_weight=weight)
        self.n_iter_ = self.model_.n_iter_
        return self


class HistGBM(RegressorMixin, HistGBMBase):
    """scikit-learn's histogram gradient boosting on features and group columns.

    Group columns are integer-coded from the training levels. A factor with at most
    ``max_bins`` levels is a native categorical feature; one with more levels (users,
    typically) enters as its integer code, an ordering with no meaning that trees can
    only exploit by isolating ranges of units. Which encoding each factor got is
    stored in ``group_encoding_``. Levels unseen in training are coded as missing.

    Parameters
    ----------
    feature_cols : sequence of str or int, optional
        Covariate columns; by default every column not in ``group_cols``.
    group_cols : sequence of str or int
        Grouping-factor columns.
    learning_rate, max_iter, max_leaf_nodes, min_samples_leaf, l2_regularization,
    max_bins, early_stopping, random_state
        Passed to :class:`sklearn.ensemble.HistGradientBoostingRegressor`.

    Attributes
    ----------
    model_ : HistGradientBoostingRegressor
        The fitted booster.
    group_encoding_ : dict
        Per group column, ``"categorical"`` or ``"ordinal"``.
    feature_cols_ : list
    """

    def _booster(self, categorical: np.ndarray | None) -> HistGradientBoostingRegressor:
        return HistGradientBoostingRegressor(
            **self._booster_params(), categorical_features=categorical
        )

    def predict(self, X: Any) -> np.ndarray:
        """Boosted prediction for each row of ``X``."""
        check_is_fitted(self, "model_")
        return self.model_.predict(self._matrix(self._predict_frame(X)))
