"""Tree ensembles on grouped data: a random forest on group codes, and gradient boosting on
cross-fitted target encodings of the groups."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import TargetEncoder
from sklearn.utils.fixes import parse_version
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


def _plain_values(column: pd.Series) -> np.ndarray:
    """A group column's values without a categorical dtype.

    Trees split codes by order, so codes must not depend on a categorical's category
    order, which differs between a pandas frame and the same frame through polars.
    """
    return column.to_numpy(dtype=object)


class _TreesOnGroups(RegressorMixin, BaseEstimator):
    """Shared input handling: features and the group columns as training-level codes."""

    def __sklearn_tags__(self) -> Any:
        return allow_missing_features(super().__sklearn_tags__())

    def _prepare(
        self, X: Any, y: Any, sample_weight: Any = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The matrix, the outcome and the weights (None without ``sample_weight``);
        rows of weight 0 are left out before the levels are coded."""
        check_policy(self.new_levels)
        frame = validated_frame(self, X, reset=True)
        frame, y, weight = weighted_rows(frame, y, sample_weight)
        target = as_target(y, len(frame))
        group_cols = check_columns(frame, self.group_cols, "group_cols")
        self.feature_cols_ = default_features(frame, self.feature_cols, exclude=group_cols)
        # A missing group value is no level: coded as missing, the trees route it.
        self.levels_ = {
            name: LevelCodes(_plain_values(frame[name]), name, allow_missing=True)
            for name in group_cols
        }
        return self._matrix(frame), target, weight

    def _matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """Features, then one column of level codes per factor (-1 for an unseen or
        missing level)."""
        check_policy(self.new_levels)
        check_columns(frame, list(self.levels_), "group_cols")
        features = numeric_matrix(frame, self.feature_cols_, "feature_cols", allow_missing=True)
        codes = [
            levels.encode(_plain_values(frame[name]), self.new_levels).astype(float)
            for name, levels in self.levels_.items()
        ]
        return np.column_stack([features, *codes]) if codes else features


class RandomForest(_TreesOnGroups):
    """scikit-learn's random forest on the features and integer codes of the groups.

    Each factor enters as one ordinal column: its training levels, sorted by value, are
    coded 0..L-1. The order means nothing, so trees learn a unit's effect only by
    isolating ranges of codes, which is what this baseline measures. A level unseen in
    training is coded as missing: the forest saw no missing values in that column, so
    at each split on it such a row follows the child with more training samples, an
    average over units rather than any one unit's effect (``new_levels="population"``).

    Parameters
    ----------
    feature_cols : sequence of str or int, optional
        Covariate columns; by default every column not in ``group_cols``. Missing
        values are allowed (the forest routes them).
    group_cols : sequence of str or int
        Grouping-factor columns.
    n_estimators, min_samples_leaf, max_features, max_samples, n_jobs, random_state
        Passed to :class:`sklearn.ensemble.RandomForestRegressor`. ``max_features="sqrt"``
        rather than scikit-learn's 1.0 (every column at each split): with a handful of
        columns it is close to Breiman's p/3 for regression, and on online_services data
        it was about 3.5 times faster to fit and no less accurate.
    new_levels : {"population", "error"}
        What to do with levels not seen in training at predict time.

    Attributes
    ----------
    model_ : RandomForestRegressor
        The fitted forest; its columns are ``feature_cols_`` then one per group column.
    feature_cols_ : list
    levels_ : dict of LevelCodes
        The training levels per factor, in code order.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"x": [0.0, 1.0] * 20, "g": ["a"] * 20 + ["b"] * 20})
    >>> y = [0.0] * 20 + [10.0] * 20
    >>> model = RandomForest(group_cols=["g"], n_estimators=10, random_state=0).fit(X, y)
    >>> model.predict(pd.DataFrame({"x": [0.0, 0.0], "g": ["a", "b"]})).tolist()
    [0.0, 10.0]
    """

    def __init__(
        self,
        *,
        feature_cols: Sequence[Hashable] | None = None,
        group_cols: Sequence[Hashable] = (),
        n_estimators: int = 200,
        min_samples_leaf: int = 5,
        max_features: float | str | None = "sqrt",
        max_samples: float | int | None = None,
        n_jobs: int | None = None,
        new_levels: str = "population",
        random_state: int | None = None,
    ) -> None:
        self.feature_cols = feature_cols
        self.group_cols = group_cols
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.max_samples = max_samples
        self.n_jobs = n_jobs
        self.new_levels = new_levels
        self.random_state = random_state

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> RandomForest:
        """Fit the forest; returns self.

        ``sample_weight`` (optional, one non-negative weight per row) goes to the
        forest; rows of weight 0 are left out before the levels are coded.
        """
        matrix, target, weight = self._prepare(X, y, sample_weight)
        self.model_ = RandomForestRegressor(
            n_estimators=self.n_estimators,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            max_samples=self.max_samples,
            n_jobs=self.n_jobs,
            random_state=self.random_state,
        )
        self.model_.fit(self._with_missing(matrix), target, sample_weight=weight)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """The forest's prediction for each row of ``X``."""
        check_is_fitted(self, "model_")
        return self.model_.predict(
            self._with_missing(self._matrix(validated_frame(self, X, reset=False)))
        )

    def _with_missing(self, matrix: np.ndarray) -> np.ndarray:
        codes = matrix[:, len(self.feature_cols_) :]
        codes[codes < 0] = np.nan
        return matrix


def _target_encoder(cv: int, random_state: int | None) -> TargetEncoder:
    """A target encoder for a continuous outcome whose cross-fitting folds are shuffled
    by ``random_state``; scikit-learn 1.9 moved the shuffling into the ``cv`` splitter."""
    if parse_version(sklearn.__version__) >= parse_version("1.9"):
        folds = KFold(cv, shuffle=True, random_state=random_state)
        return TargetEncoder(target_type="continuous", cv=folds)
    return TargetEncoder(target_type="continuous", cv=cv, shuffle=True, random_state=random_state)


class TargetEncodedGBM(_TreesOnGroups):
    """Histogram gradient boosting on the features and a target encoding of each group.

    A :class:`sklearn.pipeline.Pipeline`: scikit-learn's
    :class:`~sklearn.preprocessing.TargetEncoder` replaces each group column by a
    shrunken mean outcome of its level (an empirical-Bayes blend of the level's mean
    and the overall mean), then :class:`~sklearn.ensemble.HistGradientBoostingRegressor`
    fits the features and those encodings. During ``fit`` the encoder cross-fits (each
    row is encoded from the other folds), so the booster never sees a row's own outcome
    in its encoding; at predict time it uses the encodings learnt on all training rows.
    A level unseen in training gets the overall training mean, the encoder's value for
    unknown categories (``new_levels="population"``).

    Parameters
    ----------
    feature_cols : sequence of str or int, optional
        Covariate columns; by default every column not in ``group_cols``. Missing
        values are allowed (the booster routes them).
    group_cols : sequence of str or int
        Grouping-factor columns, each target encoded.
    learning_rate, max_iter, max_leaf_nodes, min_samples_leaf, l2_regularization,
    early_stopping
        Passed to :class:`~sklearn.ensemble.HistGradientBoostingRegressor`.
    smooth : "auto" or float
        The encoder's shrinkage toward the overall mean (``TargetEncoder``'s ``smooth``).
    cv : int
        Folds of the encoder's cross-fitting.
    new_levels : {"population", "error"}
        What to do with levels not seen in training at predict time.
    random_state : int or None
        Seeds the cross-fitting folds and the booster's early-stopping split.

    Attributes
    ----------
    model_ : Pipeline
        The fitted pipeline, steps ``"encode"`` (a ColumnTransformer whose output is the
        features then one encoding per group column) and ``"boost"``.
    feature_cols_ : list
    levels_ : dict of LevelCodes
        The training levels per factor.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"x": [0.0, 1.0] * 50, "g": ["a"] * 50 + ["b"] * 50})
    >>> y = [0.0] * 50 + [10.0] * 50
    >>> model = TargetEncodedGBM(group_cols=["g"], random_state=0).fit(X, y)
    >>> model.predict(pd.DataFrame({"x": [0.0, 0.0], "g": ["a", "b"]})).round(1).tolist()
    [0.0, 10.0]
    """

    def __init__(
        self,
        *,
        feature_cols: Sequence[Hashable] | None = None,
        group_cols: Sequence[Hashable] = (),
        learning_rate: float = 0.1,
        max_iter: int = 200,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 20,
        l2_regularization: float = 0.0,
        early_stopping: str | bool = "auto",
        smooth: str | float = "auto",
        cv: int = 5,
        new_levels: str = "population",
        random_state: int | None = None,
    ) -> None:
        self.feature_cols = feature_cols
        self.group_cols = group_cols
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.early_stopping = early_stopping
        self.smooth = smooth
        self.cv = cv
        self.new_levels = new_levels
        self.random_state = random_state

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> TargetEncodedGBM:
        """Fit the encoder (cross-fitted) and the booster; returns self.

        ``sample_weight`` (optional, one non-negative weight per row) weights the
        booster's loss; scikit-learn's ``TargetEncoder`` takes no weights, so the
        encodings are unweighted means (a weight of 2 is not a duplicated row there).
        Rows of weight 0 are left out altogether.
        """
        matrix, target, weight = self._prepare(X, y, sample_weight)
        n_features = len(self.feature_cols_)
        encoder = _target_encoder(self.cv, self.random_state)
        encoder.set_params(smooth=self.smooth)
        encode = ColumnTransformer(
            [
                ("features", "passthrough", list(range(n_features))),
                ("groups", encoder, list(range(n_features, matrix.shape[1]))),
            ]
        )
        boost = HistGradientBoostingRegressor(
            learning_rate=self.learning_rate,
            max_iter=self.max_iter,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            early_stopping=self.early_stopping,
            random_state=self.random_state,
        )
        self.model_ = Pipeline([("encode", encode), ("boost", boost)])
        self.model_.fit(matrix, target, boost__sample_weight=weight)
        self.n_iter_ = boost.n_iter_
        return self

    def predict(self, X: Any) -> np.ndarray:
        """The boosted prediction for each row of ``X``."""
        check_is_fitted(self, "model_")
        return self.model_.predict(self._matrix(validated_frame(self, X, reset=False)))
