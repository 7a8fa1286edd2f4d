import numpy as np
import pandas as pd
import pytest
from sklearn.base import is_classifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from estimators import HistGBMClassifier, LassoOneHot, LogisticFixedEffects, LogisticRidge
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
        ours.predict_proba(frame)[:, 1], reference.predict_proba(design)[:, 1], rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(ours.coef_.to_numpy(), reference.coef_[0, :3], rtol=1e-3)
    assert abs(ours.group_effects_["user"].mean()) < 1e-10


def test_unseen_level_is_the_average_unit_on_the_logit_scale(dense_units):
    frame, y = dense_units.frame, dense_units.y
    model = LogisticFixedEffects(feature_cols=["x1"], group_cols=["user"]).fit(frame, y)
    new = frame.iloc[:3].copy()
    new["user"] = "nobody"
    expected = 1 / (1 + np.exp(-(model.intercept_ + model.coef_["x1"] * new["x1"])))
    np.testing.assert_allclose(model.predict_proba(new)[:, 1], expected)
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
    assert log_loss(y[test], ridge.predict_proba(X[test])[:, 1]) < log_loss(
        y[test], fixed.predict_proba(X[test])[:, 1]
    )


def test_boosted_classifier_gives_probabilities(dense_units):
    model = HistGBMClassifier(feature_cols=["x1", "x2"], group_cols=["user"], random_state=0)
    probability = model.fit(dense_units.X, dense_units.y).predict_proba(dense_units.X)[:, 1]
    assert np.all((probability > 0) & (probability < 1))
    by_user = pd.Series(probability).groupby(dense_units.frame["user"].to_numpy()).mean()
    observed = dense_units.y.groupby(dense_units.frame["user"].to_numpy()).mean()
    assert np.corrcoef(by_user, observed.loc[by_user.index])[0, 1] > 0.9


@pytest.mark.parametrize("model", [LogisticFixedEffects, LogisticRidge, HistGBMClassifier])
def test_binary_target_is_checked(model):
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "g": ["a", "a", "b", "b"]})
    with pytest.raises(ValueError, match="y: a binary outcome takes two values, got 3"):
        model(feature_cols=["x"], group_cols=["g"]).fit(frame, [0.0, 1.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="y: only one class"):
        model(feature_cols=["x"], group_cols=["g"]).fit(frame, [1.0, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="y: a binary outcome takes two values.*continuous"):
        model(feature_cols=["x"], group_cols=["g"]).fit(frame, [0.0, 0.5, 1.0, 1.0])


@pytest.mark.parametrize("model", [LogisticFixedEffects, LogisticRidge, HistGBMClassifier])
def test_binary_models_are_classifiers_of_any_two_labels(model, dense_units):
    """Labels are the outcomes as given, sorted into ``classes_``; two text labels give
    the same fit as 0/1 coded in the same order."""
    X, y = dense_units.X, dense_units.y.to_numpy()
    named = np.where(y == 1, "yes", "no")
    settings = {"random_state": 0} if "random_state" in model().get_params() else {}
    if model is LogisticRidge:
        settings["cv"] = 3
    by_label = model(feature_cols=["x1"], group_cols=["user"], **settings).fit(X, named)
    by_number = model(feature_cols=["x1"], group_cols=["user"], **settings).fit(X, y)
    assert is_classifier(by_label)
    assert list(by_label.classes_) == ["no", "yes"]
    assert list(by_number.classes_) == [0, 1]
    np.testing.assert_allclose(by_label.predict_proba(X), by_number.predict_proba(X), rtol=1e-9)
    np.testing.assert_array_equal(by_label.predict(X) == "yes", by_number.predict(X) == 1)
    labels = by_number.predict(X)
    assert set(np.unique(labels)) <= {0, 1}
    np.testing.assert_array_equal(labels, (by_number.predict_proba(X)[:, 1] > 0.5).astype(int))
    assert by_number.score(X, y) == np.mean(labels == y)


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


def _l1_options() -> dict:
    """scikit-learn's spelling of an L1 penalty (``penalty="l1"`` before 1.8)."""
    import sklearn
    from sklearn.utils.fixes import parse_version

    if parse_version(sklearn.__version__) >= parse_version("1.8"):
        return {"l1_ratio": 1.0}
    return {"penalty": "l1"}


@pytest.fixture(scope="module")
def lasso_data():
    """40 users with 60 rows each, a strong feature x and two null features."""
    rng = np.random.default_rng(61)
    user = np.repeat(np.arange(40), 60)
    frame = pd.DataFrame(
        {
            "x": rng.standard_normal(user.size),
            "null1": rng.standard_normal(user.size),
            "null2": rng.standard_normal(user.size),
            "user": pd.Categorical([f"u{k:02d}" for k in user]),
        }
    )
    logit = -0.5 + 1.5 * frame["x"] + rng.normal(0.0, 1.0, 40)[user]
    y = (rng.random(user.size) < 1 / (1 + np.exp(-logit))).astype(float)
    return frame, y


def test_lasso_recovers_a_strong_feature_and_picks_the_glmnet_minimum(lasso_data):
    frame, y = lasso_data
    model = LassoOneHot(
        feature_cols=["x", "null1", "null2"], group_cols=["user"], Cs=12, random_state=0
    )
    model.fit(frame, y)
    assert model.coef_["x"] == pytest.approx(1.5, abs=0.4)
    assert abs(model.coef_["null1"]) < 0.2 and abs(model.coef_["null2"]) < 0.2
    assert model.C_ == model.cv_deviance_.idxmin()
    assert model.penalty_ == pytest.approx(1 / (len(y) * model.C_))
    # Stopping early down the grid finds the same minimum as the whole grid.
    whole = LassoOneHot(
        feature_cols=["x", "null1", "null2"],
        group_cols=["user"],
        Cs=12,
        patience=None,
        random_state=0,
    )
    assert whole.fit(frame, y).C_ == model.C_
    assert len(whole.cv_deviance_) == 12 >= len(model.cv_deviance_)


def test_lasso_sparsifies_at_a_large_penalty(lasso_data):
    frame, y = lasso_data
    roles = {"feature_cols": ["x", "null1", "null2"], "group_cols": ["user"]}
    # One penalty on the grid: lambda_max, the smallest that zeroes every coefficient.
    empty = LassoOneHot(**roles, Cs=1).fit(frame, y)
    assert empty.n_nonzero_ == 0
    np.testing.assert_allclose(empty.predict_proba(frame)[:, 1], y.mean(), atol=5e-3)
    # Between the extremes the strong feature enters first; null features stay out.
    partial = LassoOneHot(**roles, Cs=[5e-3]).fit(frame, y)
    assert partial.coef_["x"] > 0.3
    assert partial.coef_["null1"] == 0 and partial.coef_["null2"] == 0
    assert (partial.model_.coef_[0, 3:] == 0).mean() > 0.5


def test_lasso_matches_scikit_learn_l1_logistic_regression_at_the_chosen_c(lasso_data):
    frame, y = lasso_data
    features = ["x", "null1", "null2"]
    model = LassoOneHot(feature_cols=features, group_cols=["user"], Cs=8, random_state=1).fit(
        frame, y
    )
    standardized = (frame[features] - frame[features].mean()) / frame[features].std(ddof=0)
    dummies = pd.get_dummies(frame["user"], dtype=float)
    design = np.column_stack([standardized.to_numpy(), dummies.to_numpy()])
    reference = LogisticRegression(
        **_l1_options(), C=model.C_, solver="saga", tol=1e-10, max_iter=100_000
    ).fit(design, y)
    np.testing.assert_allclose(
        model.predict_proba(frame)[:, 1], reference.predict_proba(design)[:, 1], atol=2e-3
    )
    scale = frame[features].std(ddof=0).to_numpy()
    np.testing.assert_allclose(model.coef_.to_numpy(), reference.coef_[0, :3] / scale, atol=1e-2)


def test_lasso_unseen_levels_get_the_population_prediction(lasso_data):
    frame, y = lasso_data
    model = LassoOneHot(feature_cols=["x"], group_cols=["user"], Cs=6, random_state=0).fit(frame, y)
    new = frame.iloc[:4].copy()
    new["user"] = "nobody"
    expected = 1 / (1 + np.exp(-(model.intercept_ + model.coef_["x"] * new["x"])))
    np.testing.assert_allclose(model.predict_proba(new)[:, 1], expected)
    np.testing.assert_allclose(model.predict_proba(new).sum(axis=1), 1.0)
    strict = LassoOneHot(feature_cols=["x"], group_cols=["user"], Cs=6, new_levels="error").fit(
        frame, y
    )
    with pytest.raises(ValueError, match="group column 'user': 1 level"):
        strict.predict(new)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"Cs": 0}, "Cs: expected a positive number of penalties"),
        ({"Cs": [1.0, -2.0]}, "Cs: expected positive finite numbers"),
        ({"cv": 1}, "cv: expected an integer of at least 2"),
        ({"min_penalty_ratio": 1.5}, r"min_penalty_ratio: expected a number in \(0, 1\)"),
        ({"patience": 0}, "patience: expected a positive integer or None"),
        ({"intercept_scaling": -1.0}, "intercept_scaling: expected a positive number"),
        ({"new_levels": "zero"}, "new_levels: expected one of"),
    ],
)
def test_lasso_parameter_errors(lasso_data, params, message):
    frame, y = lasso_data
    with pytest.raises(ValueError, match=message):
        LassoOneHot(feature_cols=["x"], group_cols=["user"], **params).fit(frame, y)


def test_lasso_checks_the_binary_target():
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0], "g": ["a", "a", "b", "b"]})
    with pytest.raises(ValueError, match="y: a binary outcome takes two values"):
        LassoOneHot(feature_cols=["x"], group_cols=["g"]).fit(frame, [0.0, 1.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="feature_cols: column\\(s\\) \\['z'\\] not found"):
        LassoOneHot(feature_cols=["z"], group_cols=["g"]).fit(frame, [0.0, 1.0, 0.0, 1.0])


def test_weighted_logistic_fixed_effects_is_the_glm_with_prior_weights(dense_units):
    """sample_weight is glm's prior weights (statsmodels' var_weights for a binomial
    GLM of 0/1 outcomes): the same fitted probabilities; rows of weight 0 left out."""
    sm = pytest.importorskip("statsmodels.api")
    frame, y = dense_units.frame, dense_units.y.to_numpy()
    features = ["x1", "x2", "treat"]
    weight = np.random.default_rng(10).uniform(0.2, 3.0, len(y))
    weight[:30] = 0.0
    ours = LogisticFixedEffects(feature_cols=features, group_cols=["user", "item"])
    ours.fit(frame, y, sample_weight=weight)
    kept = weight > 0
    dummies = pd.get_dummies(frame[["user", "item"]][kept], drop_first=True, dtype=float)
    design = sm.add_constant(np.column_stack([frame[features][kept].to_numpy(float), dummies]))
    reference = sm.GLM(
        y[kept], design, family=sm.families.Binomial(), var_weights=weight[kept]
    ).fit(tol=1e-12, maxiter=100)
    np.testing.assert_allclose(
        ours.predict_proba(frame[kept])[:, 1], reference.predict(design), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(ours.coef_.to_numpy(), reference.params[1:4], rtol=1e-3)
