"""scikit-learn's own estimator checks, for every registered model that takes plain arrays.

Models that need grouping columns or a formula cannot be built from an arbitrary array,
so they are covered by the conformance tests instead. The binomial models return
P(y = 1) from ``predict`` (the quantity the harness scores), which makes them neither
scikit-learn regressors nor classifiers, so the regressor checks do not apply to them.
"""

import numpy as np
from sklearn.utils.estimator_checks import parametrize_with_checks

import estimators


def _takes_plain_arrays(name: str) -> bool:
    """Whether the model, with default parameters, fits a numeric array."""
    if "gaussian" not in estimators.info(name).families:
        return False
    rng = np.random.default_rng(0)
    try:
        estimators.get(name).fit(rng.normal(size=(30, 2)), rng.normal(size=30))
    except (TypeError, ValueError):
        return False
    return True


PLAIN_ARRAY_MODELS = [name for name in estimators.available() if _takes_plain_arrays(name)]


def _with_fixed_seed(name: str):
    model = estimators.get(name)
    if "random_state" in model.get_params():
        model.set_params(random_state=0)
    return model


def test_the_plain_array_models_are_the_expected_ones():
    # A model dropping out of this list would silently lose the checks below.
    assert set(PLAIN_ARRAY_MODELS) == {
        "pooled_ols",
        "fixed_effects",
        "ridge_onehot",
        "hist_gbm",
        "random_forest",
        "target_encoded_gbm",
    }


@parametrize_with_checks([_with_fixed_seed(name) for name in PLAIN_ARRAY_MODELS])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)
