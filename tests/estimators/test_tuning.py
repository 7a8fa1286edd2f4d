"""Choosing a penalty as cv.glmnet does: merged rows, folds by row or by cell, glmnet's
held-out deviance and standard error, the lambda.min and lambda.1se rules; and, on the
seed analysis's click data, what the choice of protocol does to LASSO and ridge."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from estimators import LassoOneHot, LogisticRidge, MixedGLM
from estimators._tuning import (
    choose_penalty,
    cross_validate,
    fold_weights,
    held_out_deviance,
    merge_rows,
)
from harness.runner import predicted_mean
from simulators import simulate


def test_the_1se_rule_takes_the_largest_penalty_within_one_standard_error_of_the_minimum():
    # A fixed CV curve on a grid ordered from the largest penalty (index 0) down.
    deviance = np.array([0.400, 0.330, 0.300, 0.262, 0.251, 0.250, 0.256, np.nan])
    standard_error = np.array([0.010, 0.010, 0.012, 0.011, 0.013, 0.015, 0.020, np.nan])
    # By hand: the minimum is 0.250 (index 5), its standard error 0.015, so the
    # threshold is 0.265; the deviances at or below it are at indices 3, 4, 5 and 6,
    # and the largest penalty among them is index 3 (0.262).
    assert choose_penalty(deviance, standard_error, "min") == 5
    assert choose_penalty(deviance, standard_error, "1se") == 3
    # Ties go to the larger penalty, as glmnet's lambda.min (max(lambda[cvm <= min])).
    tied = np.array([0.30, 0.25, 0.25, 0.27])
    assert choose_penalty(tied, np.zeros(4), "min") == 1
    with pytest.raises(ValueError, match="cv_rule: expected one of min, 1se"):
        choose_penalty(deviance, standard_error, "2se")


class _Constant:
    """A 'model' predicting one probability per fold, to check the arithmetic."""

    def __init__(self, probability: float) -> None:
        self.probability = probability

    def predict_proba(self, design):
        p = np.full(design.shape[0], self.probability)
        return np.column_stack([1 - p, p])


def test_the_curve_is_glmnets_weighted_mean_and_standard_error_over_folds():
    rng = np.random.default_rng(0)
    design = sp.csr_matrix(rng.integers(0, 3, size=(60, 1)).astype(float))
    target = (rng.random(60) < 0.4).astype(float)
    rows = merge_rows(design, target)
    folds = fold_weights(rows, "row", 3, random_state=0)

    # The fit at the grid's C predicts C itself on every held-out row (a fold is fitted
    # at C * n / n_fold, the grid's lambda on its rows).
    def fit(C, design, weight, previous):  # noqa: N803
        return _Constant(C * weight.sum() / rows.n_rows)

    curve = cross_validate(np.array([0.2, 0.4]), fit, rows, folds, "row", None)
    for i, p in enumerate([0.2, 0.4]):
        per_fold = np.array(
            [
                held_out_deviance(np.full(rows.count.size, p), rows.target, test) / test.sum()
                for _, test in folds
            ]
        )
        size = np.array([test.sum() for _, test in folds])
        mean = per_fold @ size / size.sum()
        spread = ((per_fold - mean) ** 2) @ size / size.sum()
        assert curve.deviance[i] == pytest.approx(mean)
        assert curve.standard_error[i] == pytest.approx(np.sqrt(spread / 2))
        # The mean is the held-out deviance per row over all folds.
        expected = -2 * np.mean(np.where(target == 1, np.log(p), np.log1p(-p)))
        assert curve.deviance[i] == pytest.approx(expected)


def test_merged_rows_fit_as_the_rows_do_and_cells_stay_in_one_fold():
    rng = np.random.default_rng(1)
    user = rng.integers(0, 40, 2000)
    display = rng.integers(0, 2, 2000)
    design = sp.hstack(
        [sp.csr_matrix(display[:, None].astype(float)), sp.csr_matrix(np.eye(40)[user])],
        format="csr",
    )
    target = (rng.random(2000) < 1 / (1 + np.exp(2 - rng.normal(0, 1, 40)[user]))).astype(float)
    rows = merge_rows(design, target)
    assert rows.n_rows == 2000 and rows.count.size <= 2 * 80
    assert rows.cell.max() + 1 == len({(u, d) for u, d in zip(user, display, strict=True)})
    merged = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(
        rows.design, rows.target, sample_weight=rows.count
    )
    full = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(design, target)
    np.testing.assert_allclose(merged.coef_, full.coef_, atol=1e-5)
    # Cells: every pattern of a cell in the same fold, fold sizes within one cell.
    folds = fold_weights(rows, "cell", 10, random_state=0)
    fold_of_pattern = np.argmax(np.array([test > 0 for _, test in folds]), axis=0)
    for cell in range(rows.cell.max() + 1):
        assert np.unique(fold_of_pattern[rows.cell == cell]).size == 1
    cells_per_fold = [np.unique(rows.cell[test > 0]).size for _, test in folds]
    assert max(cells_per_fold) - min(cells_per_fold) <= 1
    for train, test in folds:
        np.testing.assert_array_equal(train + test, rows.count)
    with pytest.raises(ValueError, match="cv: 200 folds need at least as many cells"):
        fold_weights(rows, "cell", 200, random_state=0)


def test_estimators_refuse_unknown_protocols():
    data = simulate("ctr_experiment", seed=3, n_users=40)
    roles = {"feature_cols": ["display"], "group_cols": ["user"]}
    with pytest.raises(ValueError, match="cv_unit: expected one of row, cell, got 'users'"):
        LassoOneHot(**roles, cv_unit="users").fit(data.X, data.y)
    with pytest.raises(ValueError, match="cv_rule: expected one of min, 1se"):
        LogisticRidge(**roles, cv_rule="max").fit(data.X, data.y)
    with pytest.raises(ValueError, match="penalty_grid: expected one of logspace, glmnet"):
        LogisticRidge(**roles, penalty_grid="grid").fit(data.X, data.y)


@pytest.fixture(scope="module")
def clicks():
    """The seed's click-through experiment with 300 users, and 20 future draws of them."""
    data = simulate("ctr_experiment", seed=16, n_users=300)
    future = [simulate("ctr_experiment", seed=16, n_users=300, draw=k) for k in range(1, 21)]
    return data, future


def _mspe_per_draw(model, future) -> np.ndarray:
    """The seed's MSPE (impression-weighted squared error of click rates) per draw."""
    return np.array([np.mean((draw.y - predicted_mean(model, draw.X)) ** 2) for draw in future])


@pytest.mark.slow
def test_the_seeds_protocol_makes_lasso_and_ridge_worse_than_the_glmm(clicks):
    data, future = clicks
    roles = {"feature_cols": ["display"], "group_cols": ["user"]}
    common = {"Cs": 100, "patience": 10, "standardize_groups": True, "random_state": 0}
    glmm = MixedGLM("click ~ display + (1 | user)", n_agq=10).fit(data.frame)
    reference = _mspe_per_draw(glmm, future)
    # The draws' standard error: of the GLMM's MSPE over the 20 future data sets.
    standard_error = reference.std(ddof=1) / np.sqrt(reference.size)
    for make, extra in [(LassoOneHot, {}), (LogisticRidge, {"penalty_grid": "glmnet"})]:
        on_cells = make(**roles, cv_unit="cell", cv_rule="1se", **common, **extra)
        on_rows = make(**roles, cv_unit="row", cv_rule="min", **common, **extra)
        on_cells.fit(data.X, data.y)
        on_rows.fit(data.X, data.y)
        # Holding out cells (an untreated user entirely) and taking lambda.1se picks a
        # much larger penalty than holding out impressions and taking the minimum.
        assert on_cells.penalty_ > 3 * on_rows.penalty_
        # The seed's conclusion: clearly worse than the GLMM ...
        worse = _mspe_per_draw(on_cells, future).mean() - reference.mean()
        assert worse > 3 * standard_error
        # ... which the same model tuned on impressions is not.
        level = _mspe_per_draw(on_rows, future).mean() - reference.mean()
        assert abs(level) < standard_error


def test_standardized_levels_are_penalised_by_their_spread(clicks):
    data, _ = clicks
    model = LassoOneHot(
        feature_cols=["display"],
        group_cols=["user"],
        Cs=10,
        standardize_groups=True,
        random_state=0,
    )
    model.fit(data.X, data.y)
    share = data.frame["user"].value_counts(normalize=True).sort_index()
    np.testing.assert_allclose(model.group_scale_, np.sqrt(share * (1 - share)).to_numpy())
    # The effects come back on the indicators' own scale: predictions use them directly.
    logit = model.intercept_ + model.coef_["display"] * data.frame["display"]
    logit += model.group_effects_["user"].reindex(data.frame["user"]).to_numpy()
    np.testing.assert_allclose(
        model.predict_proba(data.X)[:, 1], 1 / (1 + np.exp(-logit)), rtol=1e-10
    )
    assert isinstance(model.cv_standard_error_, pd.Series)
    assert (model.cv_standard_error_.index == model.cv_deviance_.index).all()


def test_deviances_equal_up_to_rounding_are_a_tie_won_by_the_largest_penalty():
    # A flat end of the curve (warm-started fits that stop at once) differs only in its
    # last digits; which of those digits is lowest must not pick the penalty.
    flat = 0.357445
    deviance = np.array([0.50, 0.37, flat, flat * (1 - 1e-12), flat * (1 - 2e-12)])
    standard_error = np.full(5, 0.01)
    assert choose_penalty(deviance, standard_error, "min") == 2
    # A real improvement, however small against the spread, is still taken.
    deviance[4] = flat * (1 - 1e-6)
    assert choose_penalty(deviance, standard_error, "min") == 4
