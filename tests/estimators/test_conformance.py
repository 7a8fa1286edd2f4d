"""One conformance test over every registered estimator: the scikit-learn contract."""

from functools import cache

import numpy as np
import polars as pl
import pytest
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.exceptions import NotFittedError
from sklearn.metrics import log_loss, mean_poisson_deviance
from sklearn.model_selection import GroupKFold, StratifiedKFold, check_cv, cross_validate

import estimators
from harness.config import EstimatorSpec
from harness.runner import accepts_sample_weight, fill_roles, predicted_mean
from simulators import simulate

NAMES = estimators.available()


@cache
def dataset(name: str):
    """Small online-services data of the estimator's first supported family."""
    family = estimators.info(name).families[0]
    return simulate("online_services", seed=3, n_users=120, n_items=15, family=family)


def _model(name, data, **extra):
    params = fill_roles(EstimatorSpec(name=name, params={}, label=name), data) | extra
    model = estimators.get(name, **params)
    if "random_state" in model.get_params() and "random_state" not in extra:
        model.set_params(random_state=0)  # comparisons below need the same random choices
    return model


@pytest.mark.parametrize("name", NAMES)
def test_clone_and_params_round_trip(name):
    small_data = dataset(name)
    model = _model(name, small_data)
    twin = clone(model)
    assert twin.get_params() == model.get_params()
    assert twin is not model


@pytest.mark.parametrize("name", NAMES)
def test_predict_before_fit_raises_not_fitted(name):
    small_data = dataset(name)
    with pytest.raises(NotFittedError):
        _model(name, small_data).predict(small_data.X)


@pytest.mark.parametrize("name", NAMES)
def test_fit_returns_self_and_predicts_one_value_per_row(name):
    small_data = dataset(name)
    model = _model(name, small_data)
    assert model.fit(small_data.X, small_data.y) is model
    prediction = model.predict(small_data.X.iloc[:17])
    assert prediction.shape == (17,)
    assert np.all(np.isfinite(prediction))


@pytest.mark.parametrize("name", NAMES)
def test_polars_and_pandas_inputs_agree(name):
    small_data = dataset(name)
    from_pandas = _model(name, small_data).fit(small_data.X, small_data.y).predict(small_data.X)
    X = pl.from_pandas(small_data.X)
    y = pl.Series(small_data.y.to_numpy())
    from_polars = _model(name, small_data).fit(X, y).predict(X)
    # Categories may come back from polars in another order: the same fit up to the
    # iterative solvers' tolerance.
    np.testing.assert_allclose(from_polars, from_pandas, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", [n for n in NAMES if "formula" not in estimators.info(n).roles])
def test_numpy_input_with_column_indices(name):
    small_data = dataset(name)
    # Columns 0..2 are the features, 3 and 4 the user and item codes.
    frame = small_data.X[["x1", "x2", "x3", "user", "item"]]
    codes = frame.assign(
        user=frame["user"].str[1:].astype(int), item=frame["item"].str[1:].astype(int)
    )
    roles = {"feature_cols": [0, 1, 2], "group_cols": [3, 4], "group_col": 3}
    wanted = {key: roles[key] for key in estimators.info(name).roles}
    if "random_state" in estimators.get(name).get_params():
        wanted["random_state"] = 0
    by_index = estimators.get(name, **wanted).fit(codes.to_numpy(), small_data.y)
    by_name = estimators.get(
        name,
        **{
            key: (
                value
                if key == "random_state"
                else list(codes.columns[value])
                if isinstance(value, list)
                else codes.columns[value]
            )
            for key, value in wanted.items()
        },
    ).fit(codes, small_data.y)
    np.testing.assert_allclose(
        by_index.predict(codes.to_numpy()), by_name.predict(codes), rtol=1e-4, atol=1e-6
    )


@pytest.mark.parametrize("name", NAMES)
def test_cross_validate_with_group_folds(name):
    small_data = dataset(name)
    scores = cross_validate(
        _model(name, small_data),
        small_data.X,
        small_data.y,
        groups=small_data.frame["user"],
        cv=GroupKFold(n_splits=3),
        scoring="neg_root_mean_squared_error",
    )
    assert np.all(np.isfinite(scores["test_score"]))


@pytest.mark.parametrize(
    "name", [n for n in NAMES if "new_levels" in estimators.get(n).get_params()]
)
def test_unseen_levels_population_or_error(name):
    small_data = dataset(name)
    train = small_data.frame["user"] != small_data.frame["user"].iloc[0]
    X, y = small_data.X, small_data.y
    model = _model(name, small_data).fit(X[train], y[train])
    assert np.all(np.isfinite(model.predict(X[~train])))
    strict = _model(name, small_data, new_levels="error").fit(X[train], y[train])
    with pytest.raises(ValueError, match="group column 'user': 1 level"):
        strict.predict(X[~train])
    with pytest.raises(ValueError, match="new_levels: expected one of"):
        _model(name, small_data, new_levels="zero").fit(X, y)


@pytest.mark.parametrize("name", NAMES)
def test_works_inside_a_pipeline_and_is_deterministic(name):
    from sklearn.pipeline import Pipeline

    small_data = dataset(name)
    extra = {"random_state": 7} if "random_state" in estimators.get(name).get_params() else {}
    first = Pipeline([("model", _model(name, small_data, **extra))])
    second = clone(first)
    np.testing.assert_array_equal(
        first.fit(small_data.X, small_data.y).predict(small_data.X),
        second.fit(small_data.X, small_data.y).predict(small_data.X),
    )


@pytest.mark.parametrize("name", NAMES)
def test_missing_target_is_a_clear_error(name):
    small_data = dataset(name)
    y = small_data.y.to_numpy().copy()
    y[3] = np.nan
    with pytest.raises(ValueError, match="y: 1 missing or infinite"):
        _model(name, small_data).fit(small_data.X, y)


@pytest.mark.parametrize("name", NAMES)
def test_a_shuffled_pandas_index_does_not_scramble_rows(name):
    """Rows are matched by position, as in scikit-learn: relabelling the index of X and
    giving y another index changes nothing."""
    small_data = dataset(name)
    X, y = small_data.X, small_data.y
    relabelled = X.set_axis(np.random.default_rng(0).permutation(len(X)) + 1000)
    y_other = y.set_axis(np.arange(len(y))[::-1])
    np.testing.assert_allclose(
        _model(name, small_data).fit(relabelled, y_other).predict(relabelled),
        _model(name, small_data).fit(X, y).predict(X),
        rtol=1e-6,
        atol=1e-8,
    )


def _every_build():
    """Every registered estimator, for each family it supports."""
    return [(name, family) for name in NAMES for family in estimators.info(name).families]


@pytest.mark.parametrize(("name", "family"), _every_build())
def test_binomial_builds_and_only_they_are_classifiers(name, family):
    model = estimators.get(name, family=family)
    assert is_classifier(model) == (family == "binomial")
    assert is_regressor(model) == (family != "binomial")


@pytest.mark.parametrize("name", [n for n in NAMES if "binomial" in estimators.info(n).families])
def test_classifiers_give_labels_probabilities_and_classes(name):
    data = simulate("online_services", seed=3, n_users=120, n_items=15, family="binomial")
    params = fill_roles(EstimatorSpec(name=name, params={}, label=name), data)
    model = estimators.get(name, family="binomial", **params)
    if "random_state" in model.get_params():
        model.set_params(random_state=0)
    model.fit(data.X, data.y)
    np.testing.assert_array_equal(model.classes_, [0, 1])
    probability = model.predict_proba(data.X.iloc[:30])
    assert probability.shape == (30, 2)
    np.testing.assert_allclose(probability.sum(axis=1), 1.0)
    labels = model.predict(data.X.iloc[:30])
    np.testing.assert_array_equal(labels, model.classes_[np.argmax(probability, axis=1)])
    # score is the accuracy of the labels; cross-validation stratifies by outcome.
    assert model.score(data.X, data.y) == np.mean(model.predict(data.X) == data.y)
    assert isinstance(check_cv(5, data.y, classifier=is_classifier(model)), StratifiedKFold)


# What sample_weight means to each estimator; None: its fit takes none (the harness
# skips it on weighted data, with the reason).
WEIGHT_MEANING: dict[str, str | None] = {
    # A row of weight k is k rows: the fit equals the fit to repeated rows.
    "pooled_ols": "frequency",
    "fixed_effects": "frequency",
    "group_mean": "frequency",
    "eb_shrinkage": "frequency",
    "logistic_fixed_effects": "frequency",
    "poisson_fixed_effects": "frequency",
    # Frequency at a fixed penalty; the penalty's cross-validation (leave-one-out, inner
    # folds) leaves out a repeated row's copies one at a time but a weighted row whole.
    "ridge_onehot": "frequency at a fixed penalty",
    "logistic_ridge": "frequency at a fixed penalty",
    "lasso_onehot": "frequency at a fixed penalty",
    "poisson_ridge": "frequency at a fixed penalty",
    # Weighted loss, but not repeated rows: leaf sizes (min_samples_leaf) count rows;
    # bootstrap draws rows; the target encoder takes no weights; lmer's prior weights
    # are precisions (sigma^2 / w).
    "hist_gbm": "weighted loss",
    "hist_gbm_classifier": "weighted loss",
    "hist_gbm_poisson": "weighted loss",
    "random_forest": "weighted loss",
    "target_encoded_gbm": "weighted loss",
    "mixed_boosting": "weighted loss",
    "mixed_lm": "precision",
    "mixed_glm": "prior weights (binomial trials)",
    "mixed_glm_nb": "prior weights",
    "lme4": "precision",
    "statsmodels_mixedlm": None,
}
UNBOUNDED_EFFECTS = {"logistic_fixed_effects", "poisson_fixed_effects"}
FIXED_PENALTY = {
    "ridge_onehot": {"alphas": [1.0]},
    "logistic_ridge": {"Cs": [0.5]},
    "lasso_onehot": {"Cs": [0.5]},
    "poisson_ridge": {"alphas": [1.0]},
}


def test_every_estimator_declares_what_its_weights_mean():
    assert set(WEIGHT_MEANING) == set(estimators.registered())


@pytest.mark.parametrize("name", NAMES)
def test_sample_weight_is_accepted_where_declared(name):
    for family in estimators.info(name).families:
        model = estimators.get(name, family=family)
        assert accepts_sample_weight(model) == (WEIGHT_MEANING[name] is not None)


def _weights(n_rows: int) -> np.ndarray:
    return np.random.default_rng(4).integers(1, 3, n_rows).astype(float)


def _mean_prediction(model, X) -> np.ndarray:
    return predicted_mean(model, X)


@pytest.mark.parametrize("name", [n for n in NAMES if WEIGHT_MEANING[n] is not None])
def test_a_weighted_fit_differs_from_an_unweighted_one(name):
    small_data = dataset(name)
    X, y = small_data.X, small_data.y
    weight = _weights(len(X))
    weighted = _model(name, small_data).fit(X, y, sample_weight=weight)
    plain = _model(name, small_data).fit(X, y)
    assert not np.allclose(_mean_prediction(weighted, X), _mean_prediction(plain, X))
    if name != "random_forest":  # its bootstrap draws rows by weight once weights are given
        ones = _model(name, small_data).fit(X, y, sample_weight=np.ones(len(X)))
        np.testing.assert_allclose(
            _mean_prediction(ones, X), _mean_prediction(plain, X), rtol=1e-6, atol=1e-8
        )


@pytest.mark.parametrize(
    "name", [n for n in NAMES if str(WEIGHT_MEANING[n]).startswith("frequency")]
)
def test_weights_of_two_are_repeated_rows(name):
    small_data = dataset(name)
    X, y = small_data.X, small_data.y
    weight = _weights(len(X))
    repeated = np.repeat(np.arange(len(X)), weight.astype(int))
    extra = FIXED_PENALTY.get(name, {})
    weighted = _model(name, small_data, **extra).fit(X, y, sample_weight=weight)
    copies = _model(name, small_data, **extra).fit(X.iloc[repeated], y.iloc[repeated])
    if name in UNBOUNDED_EFFECTS:
        # Both reach the maximum of one likelihood, the repeated rows'; units whose
        # outcomes are all 0 (or all 1) have no finite effect, so where each optimiser
        # stops along them differs: compare the likelihood, not the coefficients.
        family = estimators.info(name).families[0]
        deviance = mean_poisson_deviance if family == "poisson" else log_loss
        y_copies = y.iloc[repeated]
        np.testing.assert_allclose(
            deviance(y_copies, _mean_prediction(weighted, X.iloc[repeated])),
            deviance(y_copies, _mean_prediction(copies, X.iloc[repeated])),
            # The Newton solver meets a singular Hessian on these designs and finishes
            # with L-BFGS, whose stopping rule leaves a few 1e-6 of the deviance.
            rtol=2e-5,
        )
        return
    np.testing.assert_allclose(
        _mean_prediction(weighted, X), _mean_prediction(copies, X), rtol=1e-6, atol=1e-8
    )
