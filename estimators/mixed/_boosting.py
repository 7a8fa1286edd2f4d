"""Mixed-effects boosting: trees for the fixed part, random intercepts for the groups.

In the spirit of MERF (Hajjem et al. 2014) and GPBoost (Sigrist 2022): alternate between
(1) boosting the outcome minus the current random-effects part on the features, and
(2) fitting a linear mixed model with a random intercept per grouping factor to the
outcome minus the boosted part, until the random-effects part stops changing. Seen units
are predicted with their conditional modes, unseen ones with the population part.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from estimators._columns import (
    as_target,
    check_columns,
    check_policy,
    default_features,
    numeric_matrix,
    unseen_levels_error,
    validated_frame,
)
from estimators.mixed._lmm import MixedLM


class MixedBoosting(RegressorMixin, BaseEstimator):
    """Gradient boosting for the fixed part with random intercepts for each group column.

    Parameters
    ----------
    feature_cols : sequence of str or int, optional
        Covariate columns for the trees; by default every column not in ``group_cols``.
    group_cols : sequence of str or int
        Grouping factors, each with a random intercept (crossed if several).
    learning_rate, max_iter, max_leaf_nodes, min_samples_leaf, l2_regularization
        Passed to :class:`sklearn.ensemble.HistGradientBoostingRegressor`.
    max_em_iter : int
        At most this many alternations of boosting and mixed-model fits.
    tol : float
        Stop when the mean squared change of the random-effects part, relative to the
        outcome's variance, falls below this.
    new_levels : {"population", "error"}
        Unseen levels at predict time get random effect 0, or raise.
    random_state : int or None
        Seed of the booster (its early-stopping split), for determinism.

    Attributes
    ----------
    booster_ : HistGradientBoostingRegressor
        The last fitted booster.
    mixed_ : MixedLM
        The last fitted mixed model of the outcome minus the boosted part.
    n_em_iter_ : int
        Alternations done.
    history_ : list of float
        The relative change of the random-effects part at each alternation.
    converged_ : bool

    Examples
    --------
    >>> from simulators import simulate
    >>> data = simulate("online_services", seed=1, n_users=200, n_items=20)
    >>> model = MixedBoosting(feature_cols=["x1", "x2"], group_cols=["user"], max_iter=30)
    >>> model.fit(data.X, data.y).predict(data.X.iloc[:3]).shape
    (3,)
    """

    def __init__(
        self,
        feature_cols: Sequence[Hashable] | None = None,
        group_cols: Sequence[Hashable] = (),
        *,
        learning_rate: float = 0.1,
        max_iter: int = 100,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 20,
        l2_regularization: float = 0.0,
        max_em_iter: int = 10,
        tol: float = 1e-3,
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
        self.max_em_iter = max_em_iter
        self.tol = tol
        self.new_levels = new_levels
        self.random_state = random_state

    def _groups_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        # Internal names g0, g1, ... so any column label (even an integer) works in a formula.
        return pd.DataFrame(
            {f"g{k}": frame[name].to_numpy() for k, name in enumerate(self.group_cols_)}
        )

    def fit(self, X: Any, y: Any) -> MixedBoosting:
        """Alternate boosting and mixed-model fits; returns self."""
        check_policy(self.new_levels)
        frame = validated_frame(self, X, reset=True)
        target = as_target(y, len(frame))
        self.group_cols_ = check_columns(frame, self.group_cols, "group_cols")
        if not self.group_cols_:
            raise ValueError("group_cols: MixedBoosting needs at least one grouping column")
        self.feature_cols_ = default_features(frame, self.feature_cols, exclude=self.group_cols_)
        features = numeric_matrix(frame, self.feature_cols_, "feature_cols", allow_missing=True)
        groups = self._groups_frame(frame)
        formula = "r ~ 1 + " + " + ".join(f"(1 | {name})" for name in groups.columns)
        random_part = np.zeros_like(target)
        scale = max(float(np.var(target)), np.finfo(float).tiny)
        self.history_ = []
        self.converged_ = False
        for _ in range(self.max_em_iter):
            self.booster_ = HistGradientBoostingRegressor(
                learning_rate=self.learning_rate,
                max_iter=self.max_iter,
                max_leaf_nodes=self.max_leaf_nodes,
                min_samples_leaf=self.min_samples_leaf,
                l2_regularization=self.l2_regularization,
                random_state=self.random_state,
            ).fit(features, target - random_part)
            boosted = self.booster_.predict(features)
            self.mixed_ = MixedLM(formula, new_levels=self.new_levels).fit(
                groups.assign(r=target - boosted)
            )
            updated = self.mixed_.predict(groups)
            change = float(np.mean((updated - random_part) ** 2) / scale)
            self.history_.append(change)
            random_part = updated
            if change < self.tol:
                self.converged_ = True
                break
        self.n_em_iter_ = len(self.history_)
        if not self.converged_:
            warnings.warn(
                f"MixedBoosting: the random-effects part still changed by {change:.2g} "
                f"(relative) after {self.max_em_iter} alternations",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Boosted fixed part plus the conditional modes of seen units (0 for unseen)."""
        check_is_fitted(self, "mixed_")
        frame = validated_frame(self, X, reset=False)
        check_columns(frame, self.group_cols_, "group_cols")
        features = numeric_matrix(frame, self.feature_cols_, "feature_cols", allow_missing=True)
        groups = self._groups_frame(frame)
        if self.new_levels == "error":
            # Checked here so the error names the user's column, not the internal one.
            for name, internal in zip(self.group_cols_, groups.columns, strict=True):
                unseen = ~groups[internal].isin(self.mixed_.ranef_[internal].index)
                if unseen.any():
                    raise unseen_levels_error(name, groups.loc[unseen, internal])
        return self.booster_.predict(features) + self.mixed_.predict(groups)
