"""scikit-learn's own estimator checks, for every registered estimator built as the harness
builds it.

Each model gets its roles pointed at the columns of the plain arrays the checks pass (the
harness fills them from a Dataset the same way): the group column is column 0
(``group_cols=[0]``, ``group_col=0``), every other column a feature, and formula models a
random intercept for column 0. Models whose inner cross-validation or ensembles make the
checks slow are built with small settings (fewer folds, penalties, trees or boosting
rounds); the settings change no code path the checks exercise.

What still fails is declared per check with its reason, scikit-learn's own pattern
(``expected_failed_checks``). For the models of this package's own modules the
declarations are strict: a declared check that starts passing fails, so the list cannot
go stale. ``MixedLM`` and ``MixedGLM`` are checked with the same declarations, not
strictly, since what they fail is theirs to fix (the reasons below say what).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

import estimators

# Small settings that keep the whole module near a minute on two cores.
SMALL: dict[str, dict[str, Any]] = {
    "hist_gbm": {"max_iter": 10},
    "hist_gbm_classifier": {"max_iter": 10},
    "hist_gbm_poisson": {"max_iter": 10},
    "target_encoded_gbm": {"max_iter": 10},
    "random_forest": {"n_estimators": 10},
    "mixed_boosting": {"max_iter": 10, "max_em_iter": 3},
    "logistic_ridge": {"cv": 3, "Cs": 4},
    "lasso_onehot": {"cv": 3, "Cs": 4},
    "poisson_ridge": {"cv": 3, "alphas": [0.1, 1.0, 10.0]},
}
# Models whose code belongs to estimators/mixed (their failures are declared, not strict).
NOT_STRICT = {"mixed_lm", "mixed_glm", "mixed_glm_nb"}


def build(name: str) -> Any:
    """The estimator ``name`` with its roles pointed at a plain array's columns."""
    entry = estimators.info(name)
    roles = {"group_cols": [0], "group_col": 0, "formula": "y ~ 1 + (1 | `0`)"}
    params = {role: roles[role] for role in entry.roles if role in roles}
    model = estimators.get(name, **params, **SMALL.get(name, {}))
    if "random_state" in model.get_params():
        model.set_params(random_state=0)
    return model


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    # The checks fit arrays of a few dozen rows thousands of times: OpenMP and BLAS
    # threads cost more to start than the work they share, most of all on busy cores.
    with threadpool_limits(limits=1):
        yield


# Why a check fails.
ONE_ROW_PER_UNIT = (
    "the checks' arrays are continuous, so group column 0 gives every unit one row; "
    "EBShrinkage needs a unit with two rows to estimate the within-unit variance and "
    "says so"
)
ONE_LEVEL_PER_ROW = (
    "the checks' arrays are continuous, so group column 0 has as many levels as rows; "
    "the random-intercept step (MixedLM, as lmer) refuses a grouping factor whose "
    "variance cannot be told apart from the residual one"
)
NUMPY_FORMULA = (
    "a plain array's columns are named 0..k-1 (integers, as validated_frame names them) "
    "while a formula names columns by text ('0'): the formula models cannot read a plain "
    "array, so the check fails with 'formula uses column(s) ['0'] not found in X'"
)
RESPONSE_FROM_X = (
    "y=None means the response is read from X's formula column, by design; with a plain "
    "array that column is missing, so the error names it instead of 'requires y'"
)
CONSTANT_NOT_ONE_SAMPLE = (
    "one row is refused as a constant response ('... is constant'), which says why but "
    "not in the words the check looks for ('1 sample')"
)
LABELS_AS_NUMBERS = (
    "MixedGLM (binomial) reads the outcome as the numbers 0/1 (or proportions with "
    "weights), not as two class labels: labels such as 1 and 2 or text are refused"
)
ZERO_WEIGHTS_WORDING = (
    "all-zero sample_weight is refused as 'sample_weight is 0 in every row'; the check "
    "looks for the word 'zero'"
)
ONE_CLASS_WORDING = (
    "a single outcome is refused as a constant response; the check looks for the word 'class'"
)
CONTINUOUS_WORDING = (
    "a continuous outcome is refused as not 0/1; the check looks for 'Unknown label type'"
)
MULTICLASS_WORDING = (
    "three outcomes are refused as not 0/1; the check looks for 'Only binary "
    "classification is supported.'"
)
FOLDS_AS_SPLITS = (
    "the check replaces `cv` by explicit row splits to compare weighted and repeated "
    "rows; the inner cross-validation takes a number of folds (it deals weighted row "
    "patterns or cells into folds itself)"
)
LOO_NOT_FREQUENCY = (
    "the penalty is chosen by exact leave-one-out error, which leaves out one copy of a "
    "repeated row but the whole of a row of weight 2; at a fixed penalty the weighted fit "
    "is the repeated-rows fit (test_conformance)"
)
BOOTSTRAP = (
    "bootstrap resampling draws rows, not weight: a row of weight 2 is not two rows "
    "(scikit-learn declares the same for its forests)"
)
ENCODER_UNWEIGHTED = (
    "scikit-learn's TargetEncoder takes no sample_weight, so the encodings are unweighted; "
    "the check also replaces `cv` by explicit splits, which the encoder's folds do not take"
)

EBSHRINKAGE_FAILURES = {
    "check_fit_score_takes_y": ONE_ROW_PER_UNIT,
    "check_estimators_overwrite_params": ONE_ROW_PER_UNIT,
    "check_dont_overwrite_parameters": ONE_ROW_PER_UNIT,
    "check_estimators_fit_returns_self": ONE_ROW_PER_UNIT,
    "check_readonly_memmap_input": ONE_ROW_PER_UNIT,
    "check_n_features_in_after_fitting": ONE_ROW_PER_UNIT,
    "check_estimators_dtypes": ONE_ROW_PER_UNIT,
    "check_dtype_object": ONE_ROW_PER_UNIT,
    "check_pipeline_consistency": ONE_ROW_PER_UNIT,
    "check_estimators_nan_inf": ONE_ROW_PER_UNIT,
    "check_estimators_pickle": ONE_ROW_PER_UNIT,
    "check_f_contiguous_array_estimator": ONE_ROW_PER_UNIT,
    "check_regressors_train": ONE_ROW_PER_UNIT,
    "check_regressor_data_not_an_array": ONE_ROW_PER_UNIT,
    "check_regressors_no_decision_function": ONE_ROW_PER_UNIT,
    "check_supervised_y_2d": ONE_ROW_PER_UNIT,
    "check_regressors_int": ONE_ROW_PER_UNIT,
    "check_methods_sample_order_invariance": ONE_ROW_PER_UNIT,
    "check_methods_subset_invariance": ONE_ROW_PER_UNIT,
    "check_fit2d_1sample": ONE_ROW_PER_UNIT,
    "check_fit2d_1feature": ONE_ROW_PER_UNIT,
    "check_dict_unchanged": ONE_ROW_PER_UNIT,
    "check_fit_idempotent": ONE_ROW_PER_UNIT,
    "check_fit_check_is_fitted": ONE_ROW_PER_UNIT,
    "check_n_features_in": ONE_ROW_PER_UNIT,
    "check_fit2d_predict1d": ONE_ROW_PER_UNIT,
}
MIXEDBOOSTING_FAILURES = {
    "check_fit_score_takes_y": ONE_LEVEL_PER_ROW,
    "check_estimators_overwrite_params": ONE_LEVEL_PER_ROW,
    "check_dont_overwrite_parameters": ONE_LEVEL_PER_ROW,
    "check_estimators_fit_returns_self": ONE_LEVEL_PER_ROW,
    "check_readonly_memmap_input": ONE_LEVEL_PER_ROW,
    "check_n_features_in_after_fitting": ONE_LEVEL_PER_ROW,
    "check_estimators_dtypes": ONE_LEVEL_PER_ROW,
    "check_sample_weights_list": ONE_LEVEL_PER_ROW,
    "check_sample_weight_equivalence_on_dense_data": ONE_LEVEL_PER_ROW,
    "check_dtype_object": ONE_LEVEL_PER_ROW,
    "check_pipeline_consistency": ONE_LEVEL_PER_ROW,
    "check_estimators_pickle": ONE_LEVEL_PER_ROW,
    "check_f_contiguous_array_estimator": ONE_LEVEL_PER_ROW,
    "check_regressors_train": ONE_LEVEL_PER_ROW,
    "check_regressor_data_not_an_array": ONE_LEVEL_PER_ROW,
    "check_regressors_no_decision_function": ONE_LEVEL_PER_ROW,
    "check_supervised_y_2d": ONE_LEVEL_PER_ROW,
    "check_regressors_int": ONE_LEVEL_PER_ROW,
    "check_methods_sample_order_invariance": ONE_LEVEL_PER_ROW,
    "check_methods_subset_invariance": ONE_LEVEL_PER_ROW,
    "check_fit2d_1sample": CONSTANT_NOT_ONE_SAMPLE,
    "check_fit2d_1feature": ONE_LEVEL_PER_ROW,
    "check_dict_unchanged": ONE_LEVEL_PER_ROW,
    "check_fit_idempotent": ONE_LEVEL_PER_ROW,
    "check_fit_check_is_fitted": ONE_LEVEL_PER_ROW,
    "check_n_features_in": ONE_LEVEL_PER_ROW,
    "check_fit2d_predict1d": ONE_LEVEL_PER_ROW,
}
STATSMODELSMIXEDLM_FAILURES = {
    "check_fit_score_takes_y": NUMPY_FORMULA,
    "check_estimators_overwrite_params": NUMPY_FORMULA,
    "check_dont_overwrite_parameters": NUMPY_FORMULA,
    "check_estimators_fit_returns_self": NUMPY_FORMULA,
    "check_readonly_memmap_input": NUMPY_FORMULA,
    "check_n_features_in_after_fitting": NUMPY_FORMULA,
    "check_positive_only_tag_during_fit": NUMPY_FORMULA,
    "check_estimators_dtypes": NUMPY_FORMULA,
    "check_dtype_object": NUMPY_FORMULA,
    "check_pipeline_consistency": NUMPY_FORMULA,
    "check_estimators_nan_inf": NUMPY_FORMULA,
    "check_estimators_pickle": NUMPY_FORMULA,
    "check_f_contiguous_array_estimator": NUMPY_FORMULA,
    "check_regressors_train": NUMPY_FORMULA,
    "check_regressor_data_not_an_array": NUMPY_FORMULA,
    "check_regressors_no_decision_function": NUMPY_FORMULA,
    "check_supervised_y_2d": NUMPY_FORMULA,
    "check_regressors_int": NUMPY_FORMULA,
    "check_methods_sample_order_invariance": NUMPY_FORMULA,
    "check_methods_subset_invariance": NUMPY_FORMULA,
    "check_fit2d_1sample": NUMPY_FORMULA,
    "check_fit2d_1feature": NUMPY_FORMULA,
    "check_dict_unchanged": NUMPY_FORMULA,
    "check_fit_idempotent": NUMPY_FORMULA,
    "check_fit_check_is_fitted": NUMPY_FORMULA,
    "check_n_features_in": NUMPY_FORMULA,
    "check_fit2d_predict1d": NUMPY_FORMULA,
    "check_requires_y_none": RESPONSE_FROM_X,
}
LME4_FAILURES = {
    "check_fit_score_takes_y": NUMPY_FORMULA,
    "check_estimators_overwrite_params": NUMPY_FORMULA,
    "check_dont_overwrite_parameters": NUMPY_FORMULA,
    "check_estimators_fit_returns_self": NUMPY_FORMULA,
    "check_readonly_memmap_input": NUMPY_FORMULA,
    "check_n_features_in_after_fitting": NUMPY_FORMULA,
    "check_positive_only_tag_during_fit": NUMPY_FORMULA,
    "check_estimators_dtypes": NUMPY_FORMULA,
    "check_dtype_object": NUMPY_FORMULA,
    "check_pipeline_consistency": NUMPY_FORMULA,
    "check_estimators_nan_inf": NUMPY_FORMULA,
    "check_estimators_pickle": NUMPY_FORMULA,
    "check_f_contiguous_array_estimator": NUMPY_FORMULA,
    "check_regressors_train": NUMPY_FORMULA,
    "check_regressor_data_not_an_array": NUMPY_FORMULA,
    "check_regressors_no_decision_function": NUMPY_FORMULA,
    "check_supervised_y_2d": NUMPY_FORMULA,
    "check_regressors_int": NUMPY_FORMULA,
    "check_methods_sample_order_invariance": NUMPY_FORMULA,
    "check_methods_subset_invariance": NUMPY_FORMULA,
    "check_fit2d_1sample": NUMPY_FORMULA,
    "check_fit2d_1feature": NUMPY_FORMULA,
    "check_dict_unchanged": NUMPY_FORMULA,
    "check_fit_idempotent": NUMPY_FORMULA,
    "check_fit_check_is_fitted": NUMPY_FORMULA,
    "check_n_features_in": NUMPY_FORMULA,
    "check_fit2d_predict1d": NUMPY_FORMULA,
    "check_requires_y_none": RESPONSE_FROM_X,
    "check_sample_weight_equivalence_on_dense_data": NUMPY_FORMULA,
    "check_sample_weights_list": NUMPY_FORMULA,
    "check_sample_weights_not_an_array": NUMPY_FORMULA,
    "check_sample_weights_not_overwritten": NUMPY_FORMULA,
    "check_sample_weights_pandas_series": NUMPY_FORMULA,
    "check_sample_weights_shape": NUMPY_FORMULA,
}
MIXEDLM_FAILURES = {
    "check_fit_score_takes_y": NUMPY_FORMULA,
    "check_estimators_overwrite_params": NUMPY_FORMULA,
    "check_dont_overwrite_parameters": NUMPY_FORMULA,
    "check_estimators_fit_returns_self": NUMPY_FORMULA,
    "check_readonly_memmap_input": NUMPY_FORMULA,
    "check_n_features_in_after_fitting": NUMPY_FORMULA,
    "check_positive_only_tag_during_fit": NUMPY_FORMULA,
    "check_estimators_dtypes": NUMPY_FORMULA,
    "check_sample_weights_pandas_series": NUMPY_FORMULA,
    "check_sample_weights_not_an_array": NUMPY_FORMULA,
    "check_sample_weights_list": NUMPY_FORMULA,
    "check_sample_weights_shape": NUMPY_FORMULA,
    "check_sample_weights_not_overwritten": NUMPY_FORMULA,
    "check_sample_weight_equivalence_on_dense_data": NUMPY_FORMULA,
    "check_dtype_object": NUMPY_FORMULA,
    "check_pipeline_consistency": NUMPY_FORMULA,
    "check_estimators_nan_inf": NUMPY_FORMULA,
    "check_estimators_pickle": NUMPY_FORMULA,
    "check_f_contiguous_array_estimator": NUMPY_FORMULA,
    "check_regressors_train": NUMPY_FORMULA,
    "check_regressor_data_not_an_array": NUMPY_FORMULA,
    "check_estimators_partial_fit_n_features": NUMPY_FORMULA,
    "check_regressors_no_decision_function": NUMPY_FORMULA,
    "check_supervised_y_2d": NUMPY_FORMULA,
    "check_regressors_int": NUMPY_FORMULA,
    "check_methods_sample_order_invariance": NUMPY_FORMULA,
    "check_methods_subset_invariance": NUMPY_FORMULA,
    "check_fit2d_1sample": CONSTANT_NOT_ONE_SAMPLE,
    "check_fit2d_1feature": NUMPY_FORMULA,
    "check_dict_unchanged": NUMPY_FORMULA,
    "check_fit_idempotent": NUMPY_FORMULA,
    "check_fit_check_is_fitted": NUMPY_FORMULA,
    "check_n_features_in": NUMPY_FORMULA,
    "check_fit2d_predict1d": NUMPY_FORMULA,
    "check_requires_y_none": RESPONSE_FROM_X,
}
MIXEDGLM_FAILURES = {
    "check_fit_score_takes_y": NUMPY_FORMULA,
    "check_estimators_overwrite_params": NUMPY_FORMULA,
    "check_dont_overwrite_parameters": NUMPY_FORMULA,
    "check_estimators_fit_returns_self": NUMPY_FORMULA,
    "check_readonly_memmap_input": NUMPY_FORMULA,
    "check_n_features_in_after_fitting": NUMPY_FORMULA,
    "check_positive_only_tag_during_fit": NUMPY_FORMULA,
    "check_estimators_dtypes": LABELS_AS_NUMBERS,
    "check_sample_weights_pandas_series": NUMPY_FORMULA,
    "check_sample_weights_not_an_array": LABELS_AS_NUMBERS,
    "check_sample_weights_list": NUMPY_FORMULA,
    "check_all_zero_sample_weights_error": ZERO_WEIGHTS_WORDING,
    "check_sample_weights_shape": LABELS_AS_NUMBERS,
    "check_sample_weights_not_overwritten": LABELS_AS_NUMBERS,
    "check_sample_weight_equivalence_on_dense_data": NUMPY_FORMULA,
    "check_dtype_object": NUMPY_FORMULA,
    "check_pipeline_consistency": NUMPY_FORMULA,
    "check_estimators_nan_inf": NUMPY_FORMULA,
    "check_estimators_pickle": NUMPY_FORMULA,
    "check_f_contiguous_array_estimator": NUMPY_FORMULA,
    "check_classifier_data_not_an_array": LABELS_AS_NUMBERS,
    "check_classifiers_one_label": ONE_CLASS_WORDING,
    "check_classifiers_one_label_sample_weights": ONE_CLASS_WORDING,
    "check_classifiers_classes": LABELS_AS_NUMBERS,
    "check_classifiers_train": NUMPY_FORMULA,
    "check_classifiers_regression_target": CONTINUOUS_WORDING,
    "check_supervised_y_2d": NUMPY_FORMULA,
    "check_decision_proba_consistency": NUMPY_FORMULA,
    "check_classifier_not_supporting_multiclass": MULTICLASS_WORDING,
    "check_methods_sample_order_invariance": NUMPY_FORMULA,
    "check_methods_subset_invariance": NUMPY_FORMULA,
    "check_fit2d_1sample": CONSTANT_NOT_ONE_SAMPLE,
    "check_fit2d_1feature": LABELS_AS_NUMBERS,
    "check_dict_unchanged": NUMPY_FORMULA,
    "check_fit_idempotent": NUMPY_FORMULA,
    "check_fit_check_is_fitted": NUMPY_FORMULA,
    "check_n_features_in": NUMPY_FORMULA,
    "check_fit2d_predict1d": NUMPY_FORMULA,
}

EXPECTED_FAILURES: dict[str, dict[str, str]] = {
    "EBShrinkage": EBSHRINKAGE_FAILURES,
    "MixedBoosting": MIXEDBOOSTING_FAILURES,
    "Lme4": LME4_FAILURES,
    "StatsmodelsMixedLM": STATSMODELSMIXEDLM_FAILURES,
    "MixedLM": MIXEDLM_FAILURES,
    "MixedGLM": MIXEDGLM_FAILURES,
    "RidgeOneHot": {"check_sample_weight_equivalence_on_dense_data": LOO_NOT_FREQUENCY},
    "RandomForest": {"check_sample_weight_equivalence_on_dense_data": BOOTSTRAP},
    "TargetEncodedGBM": {"check_sample_weight_equivalence_on_dense_data": ENCODER_UNWEIGHTED},
    "LogisticRidge": {"check_sample_weight_equivalence_on_dense_data": FOLDS_AS_SPLITS},
    "LassoOneHot": {"check_sample_weight_equivalence_on_dense_data": FOLDS_AS_SPLITS},
    "PoissonRidge": {"check_sample_weight_equivalence_on_dense_data": FOLDS_AS_SPLITS},
}


def expected_failures(estimator: Any) -> dict[str, str]:
    """The checks ``estimator`` is declared to fail, each with its reason."""
    return EXPECTED_FAILURES.get(type(estimator).__name__, {})


NAMES = estimators.available()


def test_every_registered_estimator_is_checked():
    # R (lme4) and statsmodels are installed here and in CI: nothing drops out.
    assert NAMES == estimators.registered()


@parametrize_with_checks(
    [build(name) for name in NAMES if name not in NOT_STRICT],
    expected_failed_checks=expected_failures,
    xfail_strict=True,
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@parametrize_with_checks(
    [build(name) for name in NAMES if name in NOT_STRICT],
    expected_failed_checks=expected_failures,
    xfail_strict=False,
)
def test_scikit_learn_estimator_checks_of_the_mixed_models(estimator, check):
    check(estimator)
