import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from estimators import HistGBMClassifier, LogisticFixedEffects, LogisticRidge
from harness.config import parse_config
from harness.runner import run_sweep
from simulators import simulate


@pytest.fixture(scope="module")
def dense_units():
    """Few users with many events each: no unit has all-0 or all-1 outcomes."""
    return simulate(
        "online_services",
        seed=51,
        n_users=12,
        n_items=5,
        family="binomial",
        events_per_user={"mean": 150, "tail": 0.2},
        sd={"user": 1.0},
    )


def test_logistic_fixed_effects_is_the_maximum_likelihood_glm(dense_units):
    frame, y = dense_units.frame, dense_units.y.to_numpy()
    features = ["x1", "x2", "treat"]
    ours = LogisticFixedEffects(feature_cols=features, group_cols=["user", "item"]).fit(frame, y)
    dummies = pd.get_dummies(frame[["user", "item"]], drop_first=True, dtype=float)
    design = np.column_stack([frame[features].to_numpy(float), dummies])
    reference = LogisticRegression(C=np.inf, tol=1e-10, max_iter=5000).fit(design, y)
    np.testing.assert_allclose(
        ours.predict(frame), reference.predict_proba(design)[:, 1], rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(ours.coef_.to_numpy(), reference.coef_[0, :3], rtol=1e-3)
    assert abs(ours.group_effects_["user"].mean()) < 1e-10


def test_unseen_level_is_the_average_unit_on_the_logit_scale(dense_units):
    frame, y = dense_units.frame, dense_units.y
    model = LogisticFixedEffects(feature_cols=["x1"], group_cols=["user"]).fit(frame, y)
    new = frame.iloc[:3].copy()
    new["user"] = "nobody"
    expected = 1 / (1 + np.exp(-(model.intercept_ + model.coef_["x1"] * new["x1"])))
    np.testing.assert_allclose(model.predict(new), expected)
    np.testing.assert_allclose(model.predict_proba(new).sum(axis=1), 1.0)


def test_ridge_shrinks_sparse_units_and_predicts_better_than_fixed_effects():
    data = simulate(
        "online_services",
        seed=52,
        n_users=800,
        n_items=20,
        family="binomial",
        events_per_user={"mean": 4},
    )
    test = np.arange(data.n_rows) % 4 == 0
    X, y = data.X, data.y.to_numpy()
    roles = {"feature_cols": list(data.features), "group_cols": ["user", "item"]}
    ridge = LogisticRidge(**roles, random_state=0).fit(X[~test], y[~test])
    fixed = LogisticFixedEffects(**roles, max_iter=300)
    with pytest.warns(Warning):  # separated units: no finite maximum-likelihood effect
        fixed.fit(X[~test], y[~test])
    assert 0 < ridge.C_ < 1e4
    assert log_loss(y[test], ridge.predict(X[test])) < log_loss(y[test], fixed.predict(X[test]))


def test_boosted_classifier_gives_probabilities(dense_units):
    model = HistGBMClassifier(feature_cols=["x1", "x2"], group_cols=["user"], random_state=0)
    probability = model.fit(dense_units.X, dense_units.y).predict(dense_units.X)
    assert np.all((probability > 0) & (probability < 1))
    by_user = pd.Series(probability).groupby(dense_units.frame["user"].to_numpy()).mean()
    observed = dense_units.y.groupby(dense_units.frame["user"].to_numpy()).mean()
    assert np.corrcoef(by_user, observed.loc[by_user.index])[0, 1] > 0.9


@pytest.mark.parametrize("model", [LogisticFixedEffects, LogisticRidge, HistGBMClassifier])
def test_binary_target_is_checked(model):
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "g": ["a", "a", "b", "b"]})
    with pytest.raises(ValueError, match="y: a binary outcome must be 0 or 1"):
        model(feature_cols=["x"], group_cols=["g"]).fit(frame, [0.0, 1.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="y: both outcomes"):
        model(feature_cols=["x"], group_cols=["g"]).fit(frame, [1.0, 1.0, 1.0, 1.0])


def test_harness_skips_pairings_of_the_wrong_family(tmp_path):
    config = parse_config("""
name: clicks
scenarios:
  - simulator: online_services
    params: {n_users: 80, n_items: 8, family: binomial}
splits: [{scheme: seen_units, folds: 2}]
estimators:
  - pooled_ols
  - {name: logistic_ridge, params: {random_state: 0}}
  - hist_gbm_classifier
  - {name: ridge_onehot, params: {random_state: 0}}
  - fixed_effects
baseline: logistic_ridge
""")
    run_sweep(config, tmp_path, progress=False)
    table = pd.read_parquet(tmp_path / "results.parquet").set_index("estimator")
    assert set(table.loc["pooled_ols", "status"]) == {"skipped"}
    assert "does not support the binomial family" in table.loc["pooled_ols", "error"].iloc[0]
    fitted = ["logistic_ridge", "hist_gbm_classifier", "ridge_onehot", "fixed_effects"]
    assert set(table.loc[fitted, "status"]) == {"ok"}
    # ridge_onehot on binary outcomes is the L2 logistic regression: the same numbers.
    np.testing.assert_allclose(
        table.loc["ridge_onehot", "rmse"], table.loc["logistic_ridge", "rmse"], rtol=1e-9
    )
