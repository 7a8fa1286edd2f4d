"""Least-squares baselines: pooled OLS and fixed effects with sparse group dummies.

Both report R ``lm``-style inference for their coefficients: standard errors from
``sigma^2 (X'X)^-1`` with ``sigma^2 = RSS / (n - rank)``, and t-distribution intervals
as ``confint.lm`` gives them. Both take ``sample_weight`` in ``fit`` as ``lm`` takes
``weights``: weighted least squares (rows scaled by the square root of their weight),
the residual sum of squares weighted, rows of weight 0 left out (and not counted in
``n``).
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import lsqr
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from estimators._columns import (
    LevelCodes,
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

# R's lm declares a column aliased once its norm, after removing what earlier columns
# explain, falls below 1e-7 of its original norm; the same tolerance applies here to the
# singular values of the regressors scaled by their original column norms.
RANK_TOLERANCE = 1e-7
INTERCEPT = "(Intercept)"


class _CoefficientInference:
    """``confint`` and ``summary`` for models that set ``coef_``, ``intercept_``,
    ``coef_se_``, ``sigma_`` and ``df_resid_``."""

    def _check_inference(self) -> None:
        check_is_fitted(self, "coef_")
        if not hasattr(self, "coef_se_"):
            raise ValueError(
                f"{type(self).__name__} was fitted without standard errors; "
                "fit with standard_errors=True for confint and summary"
            )

    def _estimates(self) -> pd.Series:
        """The intercept and feature coefficients, indexed as ``coef_se_``."""
        return pd.concat([pd.Series([self.intercept_], index=[INTERCEPT]), self.coef_]).set_axis(
            self.coef_se_.index
        )

    def confint(self, level: float = 0.95) -> pd.DataFrame:
        """Confidence intervals of the intercept and features, as R's ``confint.lm``.

        ``estimate -/+ t(df_resid_) * std. error``; a coefficient without a standard
        error (not identified, or a centred fixed-effects intercept) gets NaN bounds.

        Parameters
        ----------
        level : float
            Coverage, strictly between 0 and 1.

        Returns
        -------
        pandas.DataFrame
            Rows ``(Intercept)`` and the feature columns; columns for the lower and
            upper bounds named as ``MixedLM.confint`` names them (``"2.5 %"``,
            ``"97.5 %"``).
        """
        self._check_inference()
        if not 0 < level < 1:
            raise ValueError(f"level: expected a number strictly between 0 and 1, got {level!r}")
        lower, upper = f"{100 * (1 - level) / 2:.1f} %", f"{100 * (1 + level) / 2:.1f} %"
        quantile = stats.t.ppf(0.5 + level / 2, self.df_resid_) if self.df_resid_ > 0 else np.nan
        estimates = self._estimates()
        return pd.DataFrame(
            {
                lower: estimates - quantile * self.coef_se_,
                upper: estimates + quantile * self.coef_se_,
            }
        )

    def _summary_header(self) -> list[str]:
        """Lines naming the model, its features and factors, above the table."""
        raise NotImplementedError

    def summary(self) -> str:
        """A coefficient table in the layout of R's ``print(summary(lm(...)))``."""
        self._check_inference()
        estimates = self._estimates()
        table = pd.DataFrame(
            {
                "Estimate": estimates,
                "Std. Error": self.coef_se_,
                "t value": estimates / self.coef_se_,
            }
        )
        return "\n".join(
            [
                *self._summary_header(),
                "",
                "Coefficients:",
                table.to_string(float_format=lambda v: f"{v:.4f}"),
                "",
                f"Residual standard error: {self.sigma_:.4g} on {self.df_resid_} "
                "degrees of freedom",
            ]
        )


class PooledOLS(_CoefficientInference, RegressorMixin, BaseEstimator):
    """Ordinary least squares on the features alone, ignoring every grouping factor.

    Standard errors and intervals are those of R's ``lm(y ~ features)``. A coefficient
    that is not identified (its feature is collinear with others) keeps the
    minimum-norm estimate and gets a NaN standard error.

    Parameters
    ----------
    feature_cols : sequence of str or int, optional
        Covariate columns of ``X``; by default every column.

    Attributes
    ----------
    intercept_ : float
    coef_ : pandas.Series
        Coefficient per feature column.
    coef_se_ : pandas.Series
        Standard errors, indexed by ``(Intercept)`` then the feature columns.
    sigma_ : float
        Residual standard deviation, ``sqrt(RSS / df_resid_)``.
    df_resid_ : int
        Residual degrees of freedom, rows minus the rank of the design.
    rank_ : int
        Numerical rank of the design (intercept and features).
    feature_cols_ : list
        The feature columns used.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    >>> PooledOLS().fit(X, [1.0, 3.0, 5.0, 7.0]).coef_["x"].round(6)
    np.float64(2.0)
    >>> model = PooledOLS().fit(X, [1.0, 3.2, 4.9, 7.1])
    >>> model.confint().round(3)
                 2.5 %  97.5 %
    (Intercept)  0.481   1.619
    x            1.696   2.304
    """

    def __init__(self, *, feature_cols: Sequence[Hashable] | None = None) -> None:
        self.feature_cols = feature_cols

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> PooledOLS:
        """Fit by least squares; returns self.

        ``sample_weight`` (optional, one non-negative weight per row): weighted least
        squares, as ``lm(weights = )``; rows of weight 0 are left out.
        """
        frame = validated_frame(self, X, reset=True)
        frame, y, weight = weighted_rows(frame, y, sample_weight)
        target = as_target(y, len(frame))
        root = np.ones(len(frame)) if weight is None else np.sqrt(weight)
        self.feature_cols_ = default_features(frame, self.feature_cols, exclude=())
        design = root[:, None] * np.column_stack(
            [np.ones(len(frame)), numeric_matrix(frame, self.feature_cols_, "feature_cols")]
        )
        target = root * target
        solution, *_ = np.linalg.lstsq(design, target, rcond=None)
        self.intercept_ = float(solution[0])
        self.coef_ = pd.Series(solution[1:], index=pd.Index(self.feature_cols_, dtype=object))

        residual = target - design @ solution
        standard_errors, self.sigma_, self.df_resid_, self.rank_ = _least_squares_inference(
            design, np.linalg.norm(design, axis=0), float(residual @ residual), absorbed_rank=0
        )
        self.coef_se_ = pd.Series(
            standard_errors, index=pd.Index([INTERCEPT, *self.feature_cols_], dtype=object)
        )
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predicted outcome for each row of ``X``."""
        check_is_fitted(self, "coef_")
        frame = validated_frame(self, X, reset=False)
        features = numeric_matrix(frame, self.feature_cols_, "feature_cols")
        return self.intercept_ + features @ self.coef_.to_numpy()

    def _summary_header(self) -> list[str]:
        return [
            "Linear model fit by least squares, grouping factors ignored",
            f"Features: {', '.join(map(str, self.feature_cols_))}",
        ]


class FixedEffects(_CoefficientInference, RegressorMixin, BaseEstimator):
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

    Standard errors of the feature coefficients are those of R's ``lm`` on the dummy
    design, computed without forming it densely (Frisch-Waugh-Lovell): the features
    are residualised on the intercept and dummies (exact demeaning for one factor, one
    LSQR solve per feature column for several), and the standard errors are
    ``sigma_ * sqrt(diag((X_w' X_w)^-1))`` for the residualised features ``X_w``, with
    ``sigma_^2 = RSS / df_resid_``. A feature that the dummies absorb (constant
    within the levels of a factor) is not identified and gets a NaN standard error.
    The intercept's standard error is NaN: after centring it is the prediction for an
    average level, not a coefficient of the treatment-coded fit.

    ``df_resid_`` is rows minus ``rank_``, the rank of the whole design: the
    intercept and the dummies span as many dimensions as their identifiable
    contrasts, plus the rank of the residualised features. One factor with ``L``
    levels spans ``L`` dimensions. Two crossed factors span ``L_1 + L_2 - C``, where
    ``C`` counts the connected components of the graph linking each level of the
    first to the levels of the second it meets in a row (one per set of units and
    items that never meet another set). Each further factor adds at most its levels
    minus its components with every earlier factor, taken at the smallest; this is
    exact when it is nested in an earlier factor (adds nothing, as a region within
    users) and otherwise an upper bound on the rank, making intervals slightly
    conservative; ``solver_info_["rank_exact"]`` records which.

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
    standard_errors : bool
        Also compute standard errors (for ``confint`` and ``summary``). With two or
        more factors that costs one extra sparse solve per feature (about 3x the fit
        time at 1M rows x 100k users x 1k items), which predictions do not need, so it
        is off by default.

    Attributes
    ----------
    intercept_ : float
    coef_ : pandas.Series
        Coefficient per feature column.
    coef_se_ : pandas.Series
        Standard errors indexed by ``(Intercept)`` (always NaN) then the features;
        only with ``standard_errors=True``, as are ``sigma_``, ``df_resid_``, ``rank_``.
    sigma_ : float
        Residual standard deviation, ``sqrt(RSS / df_resid_)``.
    df_resid_ : int
        Residual degrees of freedom, rows minus ``rank_``.
    rank_ : int
        Rank of the design: intercept, dummies and features.
    group_effects_ : dict of pandas.Series
        Per factor, the centred effect of every training level, indexed by level.
    feature_cols_ : list
    solver_info_ : dict
        LSQR's stopping reason, iterations and condition estimate for the fit; the
        iterations of each feature's residualising solve (empty for one factor, which
        is demeaned exactly); whether ``rank_`` is exact.

    Examples
    --------
    >>> from simulators import simulate
    >>> data = simulate("archers", seed=1)
    >>> model = FixedEffects(
    ...     feature_cols=["southwood"], group_cols=["archer"], standard_errors=True
    ... )
    >>> model.fit(data.frame, data.y).confint().round(1)
                 2.5 %  97.5 %
    (Intercept)    NaN     NaN
    southwood    -11.8    -7.2
    """

    def __init__(
        self,
        *,
        feature_cols: Sequence[Hashable] | None = None,
        group_cols: Sequence[Hashable] = (),
        new_levels: str = "population",
        tol: float = 1e-12,
        standard_errors: bool = False,
    ) -> None:
        self.feature_cols = feature_cols
        self.group_cols = group_cols
        self.new_levels = new_levels
        self.tol = tol
        self.standard_errors = standard_errors

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> FixedEffects:
        """Fit by sparse least squares; returns self.

        ``sample_weight`` (optional, one non-negative weight per row): weighted least
        squares, as ``lm(weights = )``; rows of weight 0 are left out (a level seen
        only in them is unseen).
        """
        check_policy(self.new_levels)
        frame = validated_frame(self, X, reset=True)
        frame, y, weight = weighted_rows(frame, y, sample_weight)
        target = as_target(y, len(frame))
        root = np.ones(len(frame)) if weight is None else np.sqrt(weight)
        group_cols = check_columns(frame, self.group_cols, "group_cols")
        self.feature_cols_ = default_features(frame, self.feature_cols, exclude=group_cols)
        features = numeric_matrix(frame, self.feature_cols_, "feature_cols")
        self.levels_ = {name: LevelCodes(frame[name], name) for name in group_cols}

        n_rows = len(frame)
        codes = [levels.encode(frame[name]) for name, levels in self.levels_.items()]
        sizes = [len(levels) for levels in self.levels_.values()]
        dummies = _treatment_dummies(codes, sizes, n_rows)
        # Weighted least squares is least squares on rows scaled by sqrt(weight).
        design = sp.diags(root) @ sp.hstack(
            [sp.csr_matrix(np.column_stack([np.ones(n_rows), features])), *dummies], format="csc"
        )
        design = design.tocsc()
        target = root * target
        scaled, norms = _unit_columns(design)
        unit_solution, stop_reason, iterations, condition = _lsqr(scaled, target, self.tol)
        solution = unit_solution / norms
        self.solver_info_ = {
            "stop_reason": stop_reason,
            "iterations": iterations,
            "condition_estimate": condition,
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
        if not self.standard_errors:
            return self

        residual = target - design @ solution
        within, within_iterations = self._within_features(features, codes, sizes, dummies, root)
        absorbed_rank, rank_exact = _dummy_rank(codes, sizes)
        standard_errors, self.sigma_, self.df_resid_, self.rank_ = _least_squares_inference(
            within,
            np.linalg.norm(root[:, None] * features, axis=0),
            float(residual @ residual),
            absorbed_rank,
        )
        self.coef_se_ = pd.Series(
            np.concatenate([[np.nan], standard_errors]),
            index=pd.Index([INTERCEPT, *self.feature_cols_], dtype=object),
        )
        self.solver_info_["within_iterations"] = within_iterations
        self.solver_info_["rank_exact"] = rank_exact
        return self

    def _within_features(
        self,
        features: np.ndarray,
        codes: list[np.ndarray],
        sizes: list[int],
        dummies: list[sp.csr_matrix],
        root: np.ndarray,
    ) -> tuple[np.ndarray, list[int]]:
        """The features scaled by ``root`` (the square root of the row weights) minus
        their weighted least-squares projection on the intercept and dummies, and the
        LSQR iterations each took (none when the projection is exact)."""
        weight = root**2
        if not codes:
            mean, _ = weighted_moments(features, weight)
            return root[:, None] * (features - mean), []
        if len(codes) == 1:
            # One factor: the projection is the weighted mean within each level, exactly.
            totals = np.bincount(codes[0], weights=weight, minlength=sizes[0])
            sums = np.column_stack(
                [
                    np.bincount(codes[0], weights=weight * column, minlength=sizes[0])
                    for column in features.T
                ]
            ).reshape(sizes[0], features.shape[1])
            return root[:, None] * (features - (sums / totals[:, None])[codes[0]]), []
        absorber = sp.diags(root) @ sp.hstack(
            [sp.csr_matrix(np.ones((len(features), 1))), *dummies], format="csc"
        )
        scaled, _ = _unit_columns(absorber.tocsc())
        features = root[:, None] * features
        within = np.empty_like(features)
        iterations = []
        for k, name in enumerate(self.feature_cols_):
            # A contiguous copy: BLAS norms and dot products on a strided column are far slower.
            column = np.ascontiguousarray(features[:, k])
            projection, stop_reason, used, _ = _lsqr(scaled, column, self.tol)
            within[:, k] = column - scaled @ projection
            iterations.append(used)
            if stop_reason == 7:
                warnings.warn(
                    f"FixedEffects: LSQR stopped at its iteration limit ({used}) while "
                    f"removing the group effects from feature {name!r}; its standard error "
                    "may be inaccurate",
                    ConvergenceWarning,
                    stacklevel=3,
                )
        return within, iterations

    def predict(self, X: Any) -> np.ndarray:
        """Predicted outcome: population part plus the effect of each seen level."""
        check_is_fitted(self, "coef_")
        return linear_predictor(self, X)

    def _summary_header(self) -> list[str]:
        factors = ", ".join(
            f"{name} ({len(levels)} levels)" for name, levels in self.levels_.items()
        )
        return [
            "Linear model fit by least squares with fixed effects",
            f"Features: {', '.join(map(str, self.feature_cols_))}",
            f"Fixed effects: {factors or 'none'}",
            "The intercept is the prediction for an average level; it has no standard error.",
        ]


def _treatment_dummies(
    codes: list[np.ndarray], sizes: list[int], n_rows: int
) -> list[sp.csr_matrix]:
    """One sparse dummy block per factor; the first level is the reference and has no column."""
    blocks = []
    for factor_codes, size in zip(codes, sizes, strict=True):
        keep = factor_codes > 0
        blocks.append(
            sp.csr_matrix(
                (np.ones(keep.sum()), (np.flatnonzero(keep), factor_codes[keep] - 1)),
                shape=(n_rows, size - 1),
            )
        )
    return blocks


def _unit_columns(design: sp.spmatrix) -> tuple[sp.spmatrix, np.ndarray]:
    """``design`` with unit-norm columns (LSQR converges faster), and the norms divided out."""
    norms = np.sqrt(np.asarray(design.multiply(design).sum(axis=0))).ravel()
    norms[norms == 0] = 1.0
    return design @ sp.diags(1.0 / norms), norms


def _lsqr(scaled: sp.spmatrix, rhs: np.ndarray, tol: float) -> tuple[np.ndarray, int, int, float]:
    """LSQR's solution, stopping reason, iterations and condition estimate."""
    result = lsqr(
        scaled, rhs, atol=tol, btol=tol, conlim=1e14, iter_lim=max(1000, 10 * scaled.shape[1])
    )
    return result[0], int(result[1]), int(result[2]), float(result[6])


def _dummy_rank(codes: list[np.ndarray], sizes: list[int]) -> tuple[int, bool]:
    """Dimensions spanned by the intercept and the treatment dummies, and whether exact.

    See :class:`FixedEffects` for the rule: ``L`` for one factor, ``L_1 + L_2 - C`` for
    two, and a bound on what each further factor adds.
    """
    if not codes:
        return 1, True
    rank, exact = sizes[0], True
    for k in range(1, len(codes)):
        added = min(
            sizes[k] - _connected_components(codes[earlier], codes[k], sizes[earlier], sizes[k])
            for earlier in range(k)
        )
        rank += added
        exact = exact and (k == 1 or added == 0)
    return rank, exact


def _connected_components(
    first: np.ndarray, second: np.ndarray, n_first: int, n_second: int
) -> int:
    """Connected components of the graph joining the levels of two factors met in a row."""
    edges = sp.coo_matrix(
        (np.ones(len(first)), (first, n_first + second)),
        shape=(n_first + n_second, n_first + n_second),
    )
    n_components, _ = connected_components(edges, directed=False)
    return int(n_components)


def _least_squares_inference(
    regressors: np.ndarray, original_norms: np.ndarray, residual_ss: float, absorbed_rank: int
) -> tuple[np.ndarray, float, int, int]:
    """Standard errors of the coefficients of ``regressors`` and the residual sd, df, rank.

    ``regressors`` are the columns whose coefficients are wanted, already residualised
    on whatever else the model holds (spanning ``absorbed_rank`` dimensions). A
    coefficient is identified when its unit vector lies in the row space of the
    regressors; otherwise its standard error is NaN.
    """
    n_rows, n_columns = regressors.shape
    scale = np.where(original_norms > 0, original_norms, 1.0)
    if n_columns:
        triangle = np.linalg.qr(regressors / scale, mode="r")
        _, singular, right = np.linalg.svd(triangle, full_matrices=False)
    else:
        singular, right = np.zeros(0), np.zeros((0, 0))
    keep = singular > RANK_TOLERANCE
    basis = right[keep].T
    rank = absorbed_rank + int(keep.sum())
    df_resid = n_rows - rank
    sigma = float(np.sqrt(residual_ss / df_resid)) if df_resid > 0 else np.nan
    # diag of the pseudo-inverse of X'X: V diag(1 / s^2) V', undoing the column scaling.
    variance = (basis**2 / singular[keep] ** 2).sum(axis=1) / scale**2
    # A unit vector lies in the row space when projecting it on the kept right singular
    # vectors preserves its length; aliased coefficients lose a sizeable share of it.
    identified = (basis**2).sum(axis=1) > 1 - 1e-6
    standard_errors = np.where(identified, sigma * np.sqrt(variance), np.nan)
    return standard_errors, sigma, df_resid, rank
