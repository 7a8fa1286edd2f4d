"""Mixed-effects boosting: trees for the fixed part, random intercepts for the groups.

In the spirit of MERF (Hajjem et al. 2014) and GPBoost (Sigrist 2022): alternate between
(1) boosting the outcome minus the current random-effects part on the features, and
(2) fitting a linear mixed model with a random intercept per grouping factor to the
outcome minus the boosted part, until the random-effects part stops changing. Seen units
are predicted with their conditional modes, unseen ones with the population part.
"""

from __future__ import annotations

import copy
import inspect
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
    allow_missing_features,
    as_target,
    check_columns,
    check_policy,
    default_features,
    numeric_matrix,
    validated_frame,
    weighted_rows,
)
from estimators.mixed._formula import quote_name
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
    n_iter_ : int
        Boosting iterations of the last booster (at most ``max_iter``).
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
        *,
        feature_cols: Sequence[Hashable] | None = None,
        group_cols: Sequence[Hashable] = (),
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

    def __sklearn_tags__(self) -> Any:
        # The trees route missing feature values (group values must not be missing).
        return allow_missing_features(super().__sklearn_tags__())

    def _features(self, frame: pd.DataFrame) -> np.ndarray:
        """The feature columns for the trees; without any, one constant column, so that
        the trees fit the mean and the model is a random-intercept model."""
        features = numeric_matrix(frame, self.feature_cols_, "feature_cols", allow_missing=True)
        return features if features.shape[1] else np.zeros((len(frame), 1))

    def _groups_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The group columns under their own names (as text, so that a column index
        works in a formula too): the mixed model's messages then name the user's
        columns, e.g. 'user', never an internal one."""
        groups = pd.DataFrame({str(name): frame[name].to_numpy() for name in self.group_cols_})
        if groups.shape[1] != len(self.group_cols_):
            raise ValueError(
                f"group_cols: {list(self.group_cols_)} name the same column twice once "
                "written as text"
            )
        for name in self.group_cols_:
            missing = int(frame[name].isna().sum())
            if missing:
                raise ValueError(
                    f"group_cols: column {name!r} has {missing} missing value(s); drop "
                    "those rows or give them a level of their own"
                )
        return groups

    def _formula(self, groups: pd.DataFrame) -> tuple[str, str]:
        """The mixed model's formula and its response column, named apart from the groups."""
        response = "r"
        while response in groups.columns:
            response = "_" + response
        terms = " + ".join(f"(1 | {quote_name(name)})" for name in groups.columns)
        return f"{response} ~ 1 + {terms}", response

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> MixedBoosting:
        """Alternate boosting and mixed-model fits; returns self.

        ``sample_weight`` (optional, one non-negative weight per row) weights the
        booster's loss and is the mixed model's prior weight of each row (residual
        variance ``sigma^2 / w``, lmer's ``weights``); rows of weight 0 are left out.

        Raises
        ------
        TypeError
            For ``sample_weight`` when the installed ``MixedLM.fit`` takes no weights.
        """
        check_policy(self.new_levels)
        frame = validated_frame(self, X, reset=True)
        frame, y, weight = weighted_rows(frame, y, sample_weight)
        mixed_weight = {}
        if weight is not None:
            if "sample_weight" not in inspect.signature(MixedLM.fit).parameters:
                raise TypeError(
                    "sample_weight: MixedBoosting's random-effects step (MixedLM) takes no "
                    "weights in this version"
                )
            mixed_weight = {"sample_weight": weight}
        target = as_target(y, len(frame))
        self.group_cols_ = check_columns(frame, self.group_cols, "group_cols")
        if not self.group_cols_:
            raise ValueError("group_cols: MixedBoosting needs at least one grouping column")
        self.feature_cols_ = default_features(frame, self.feature_cols, exclude=self.group_cols_)
        features = self._features(frame)
        groups = self._groups_frame(frame)
        formula, response = self._formula(groups)
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
            ).fit(features, target - random_part, sample_weight=weight)
            boosted = self.booster_.predict(features)
            self.mixed_ = MixedLM(formula, new_levels=self.new_levels).fit(
                groups.assign(**{response: target - boosted}), **mixed_weight
            )
            updated = self.mixed_.predict(groups)
            change = float(np.mean((updated - random_part) ** 2) / scale)
            self.history_.append(change)
            random_part = updated
            if change < self.tol:
                self.converged_ = True
                break
        self.n_em_iter_ = len(self.history_)
        self.n_iter_ = int(self.booster_.n_iter_)
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
        check_policy(self.new_levels)
        frame = validated_frame(self, X, reset=False)
        check_columns(frame, self.group_cols_, "group_cols")
        features = self._features(frame)
        groups = self._groups_frame(frame)
        # The policy as set now, even if changed since fitting (set_params).
        mixed = copy.copy(self.mixed_).set_params(new_levels=self.new_levels)
        return self.booster_.predict(features) + mixed.predict(groups)
