import pytest
from sklearn.base import BaseEstimator

import estimators


def test_available_lists_the_first_estimators():
    assert {"pooled_ols", "fixed_effects", "group_mean", "hist_gbm"} <= set(estimators.available())
    assert estimators.available() == sorted(estimators.available())


@pytest.mark.parametrize("name", estimators.available())
def test_get_returns_an_unfitted_estimator_with_the_given_params(name):
    model = estimators.get(name)
    assert isinstance(model, BaseEstimator)
    assert not any(key.endswith("_") and not key.startswith("_") for key in vars(model))


def test_get_sets_params():
    model = estimators.get("hist_gbm", learning_rate=0.05, group_cols=["user"])
    assert model.get_params()["learning_rate"] == 0.05
    assert model.get_params()["group_cols"] == ["user"]


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(KeyError, match="fixed_efects.*did you mean 'fixed_effects'") as error:
        estimators.get("fixed_efects")
    for name in estimators.available():
        assert name in str(error.value)


def test_unknown_parameter_names_it_and_the_valid_ones():
    with pytest.raises(
        ValueError, match="hist_gbm: unknown parameter 'learning_rat'.*learning_rate"
    ):
        estimators.get("hist_gbm", learning_rat=0.1)


def test_a_family_picks_the_models_variant_for_it():
    from estimators import HistGBMClassifier, LogisticFixedEffects, LogisticRidge, RidgeOneHot

    assert isinstance(estimators.get("ridge_onehot"), RidgeOneHot)
    assert isinstance(estimators.get("ridge_onehot", family="gaussian"), RidgeOneHot)
    assert isinstance(estimators.get("ridge_onehot", family="binomial", Cs=5), LogisticRidge)
    assert isinstance(estimators.get("fixed_effects", family="binomial"), LogisticFixedEffects)
    assert isinstance(estimators.get("hist_gbm", family="binomial"), HistGBMClassifier)
    with pytest.raises(ValueError, match="pooled_ols does not support the poisson family"):
        estimators.get("pooled_ols", family="poisson")
    with pytest.raises(
        ValueError, match=r"ridge_onehot \(LogisticRidge, for binomial data\): unknown parameter"
    ):
        estimators.get("ridge_onehot", family="binomial", alphas=[1.0])
    assert {"alphas", "Cs"} <= set(estimators.info("ridge_onehot").parameter_names())
