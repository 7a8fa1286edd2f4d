"""The mixed models take what scikit-learn estimators take: plain arrays (a formula names
their columns by text), any two class labels for a binomial outcome, rows of weight 0
(left out), and they refuse bad input in the words scikit-learn's checks look for.

``test_sklearn_checks.py`` runs scikit-learn's own checks; this module checks the same
contract on data with real groups, against the fits these inputs must equal.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score

from estimators import MixedGLM, MixedLM

N_GROUPS, PER_GROUP = 25, 12


@cache
def grouped() -> pd.DataFrame:
    """Rows in groups with a random intercept: a Gaussian y, a 0/1 click and a count."""
    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(N_GROUPS), PER_GROUP)
    x = rng.normal(size=g.size)
    effect = rng.normal(scale=0.8, size=N_GROUPS)[g]
    return pd.DataFrame(
        {
            "g": g,
            "x": x,
            "y": 1 + 0.5 * x + effect + rng.normal(size=g.size),
            "click": rng.binomial(1, 1 / (1 + np.exp(-(-0.3 + x + effect)))),
            "count": rng.negative_binomial(3, 3 / (3 + np.exp(0.5 + 0.4 * x + effect))),
        }
    )


# -- plain arrays -------------------------------------------------------------------------


def test_a_formula_reads_a_plain_arrays_columns_by_their_text():
    data = grouped()
    array = data[["g", "x", "y"]].to_numpy()
    framed = MixedLM("y ~ x + (1 | g)").fit(data)
    # formulaic reads a backtick-quoted number in the fixed part as that number (`1` is
    # the intercept), so an array's fixed-effect column is named with Q("1").
    plain = MixedLM("`2` ~ Q('1') + (1 | `0`)").fit(array)
    np.testing.assert_array_equal(plain.coef_.to_numpy(), framed.coef_.to_numpy())
    assert plain.objective_ == framed.objective_
    np.testing.assert_array_equal(plain.predict(array), framed.predict(data))
    # The same with the response given as y, and for the generalized model.
    given = MixedLM("y ~ Q('1') + (1 | `0`)").fit(array[:, :2], data["y"])
    np.testing.assert_array_equal(given.coef_.to_numpy(), framed.coef_.to_numpy())
    counts = MixedGLM("count ~ x + (1 | g)", family="poisson").fit(data)
    plain_counts = MixedGLM("y ~ Q('1') + (1 | `0`)", family="poisson").fit(
        data[["g", "x"]].to_numpy(), data["count"]
    )
    np.testing.assert_allclose(plain_counts.coef_.to_numpy(), counts.coef_.to_numpy(), rtol=1e-12)
    # Other estimators keep integer labels: only the frame the mixed models read changes.
    assert plain.n_features_in_ == 3 and not hasattr(plain, "feature_names_in_")


def test_weights_and_offset_columns_of_a_plain_array_are_named_by_index():
    data = grouped().assign(w=np.tile([1.0, 2.0, 3.0], N_GROUPS * PER_GROUP // 3), base=0.3)
    array = data[["g", "x", "y", "w", "base"]].to_numpy()
    framed = MixedLM("y ~ x + (1 | g)", weights="w", offset="base").fit(data)
    plain = MixedLM("`2` ~ Q('1') + (1 | `0`)", weights=3, offset=4).fit(array)
    np.testing.assert_array_equal(plain.coef_.to_numpy(), framed.coef_.to_numpy())
    for got, expected in zip(
        plain.predict(array, return_std=True), framed.predict(data, return_std=True), strict=True
    ):
        np.testing.assert_array_equal(got, expected)
    counts = MixedGLM("count ~ x + (1 | g)", family="poisson", offset="base").fit(data)
    plain_counts = MixedGLM("y ~ Q('1') + (1 | `0`)", family="poisson", offset=2).fit(
        data[["g", "x", "base"]].to_numpy(), data["count"]
    )
    np.testing.assert_allclose(plain_counts.coef_.to_numpy(), counts.coef_.to_numpy(), rtol=1e-12)


def test_labels_that_read_the_same_as_text_are_refused_by_name():
    frame = pd.DataFrame({0: [1.0, 2.0], "0": [3.0, 4.0], "y": [0.0, 1.0]})
    with pytest.raises(ValueError, match=r"columns \['0'\] are named twice"):
        MixedLM("y ~ 1 + (1 | `0`)").fit(frame)


# -- binomial outcomes are class labels ----------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "expected"),
    [((1, 2), [1, 2]), (("no", "yes"), ["no", "yes"]), ((False, True), [False, True])],
)
def test_any_two_labels_fit_as_the_zero_one_outcome(labels, expected):
    data = grouped()
    as_numbers = MixedGLM("click ~ x + (1 | g)").fit(data)
    outcome = np.where(data["click"] == 1, labels[1], labels[0])
    as_labels = MixedGLM("y ~ x + (1 | g)").fit(data.drop(columns="y"), outcome)
    assert as_labels.classes_.tolist() == expected
    np.testing.assert_array_equal(as_labels.coef_.to_numpy(), as_numbers.coef_.to_numpy())
    # predict_proba[:, 1] is the probability of classes_[1]; predict gives the labels.
    np.testing.assert_array_equal(as_labels.predict_proba(data), as_numbers.predict_proba(data))
    predicted = as_labels.predict(data)
    np.testing.assert_array_equal(predicted == labels[1], as_numbers.predict(data) == 1)
    assert as_labels.score(data, outcome) == pytest.approx(accuracy_score(outcome, predicted))
    assert as_labels.score(data, outcome) == pytest.approx(as_numbers.score(data))


def test_proportions_with_weights_are_still_proportions():
    data = grouped()
    # Two rows per group and x, as successes out of trials: the same likelihood.
    trials = data.assign(x=np.round(data["x"])).groupby(["g", "x"], as_index=False)
    merged = trials["click"].agg(["sum", "count"]).reset_index()
    merged["share"] = merged["sum"] / merged["count"]
    assert not np.all(np.isin(merged["share"], [0.0, 1.0]))
    by_column = MixedGLM("share ~ x + (1 | g)", weights="count").fit(merged)
    by_sample_weight = MixedGLM("share ~ x + (1 | g)").fit(merged, sample_weight=merged["count"])
    assert by_column.classes_.tolist() == [0, 1] == by_sample_weight.classes_.tolist()
    np.testing.assert_allclose(by_sample_weight.coef_, by_column.coef_, rtol=1e-10)
    with pytest.raises(ValueError, match="Unknown label type: continuous.*sample_weight"):
        MixedGLM("share ~ x + (1 | g)").fit(merged)


def test_bad_binary_outcomes_are_refused_in_scikit_learns_words():
    data = grouped()
    model = MixedGLM("click ~ x + (1 | g)")
    with pytest.raises(ValueError, match="Only binary classification is supported"):
        model.fit(data.assign(click=data["g"] % 3))
    with pytest.raises(ValueError, match="is constant.*only one class"):
        model.fit(data.assign(click="yes"))
    # One class left where the weights are positive.
    with pytest.raises(ValueError, match="only one class"):
        model.fit(data, sample_weight=data["click"].to_numpy(dtype=float))
    with pytest.raises(ValueError, match="every weight is zero"):
        model.fit(data, sample_weight=np.zeros(len(data)))
    with pytest.raises(ValueError, match="Unknown label type: mixed"):
        mixed = pd.Series(["a" if click else 1 for click in data["click"]], dtype=object)
        model.fit(data.assign(click=mixed))


# -- rows of weight 0 ----------------------------------------------------------------------


@pytest.mark.parametrize("family", ["binomial", "poisson"])
def test_rows_of_weight_zero_are_left_out(family):
    data = grouped()
    response = "click" if family == "binomial" else "count"
    formula = f"{response} ~ x + (1 | g)"
    weight = np.ones(len(data))
    weight[:PER_GROUP] = 0.0  # all of group 0
    weight[PER_GROUP + 1 :: 5] = 0.0
    weighted = MixedGLM(formula, family=family).fit(data, sample_weight=weight)
    subset = MixedGLM(formula, family=family).fit(data[weight > 0])
    np.testing.assert_array_equal(weighted.coef_.to_numpy(), subset.coef_.to_numpy())
    assert weighted.objective_ == subset.objective_
    assert weighted.n_obs_ == int(np.sum(weight > 0)) and weighted.n_levels_ == {"g": 24}
    # Group 0 was seen only with weight 0: it is predicted as an unseen group.
    first = data.iloc[:PER_GROUP]
    np.testing.assert_array_equal(
        weighted.predict(first), weighted.predict(first, include_random=False)
    )


def test_negative_binomial_weights_of_two_are_repeated_rows():
    data = grouped()
    weight = np.tile([1.0, 2.0, 1.0], len(data) // 3)
    repeated = data.loc[data.index.repeat(weight.astype(int))]
    formula = "count ~ x + (1 | g)"
    weighted = MixedGLM(formula, family="negative_binomial").fit(data, sample_weight=weight)
    as_rows = MixedGLM(formula, family="negative_binomial").fit(repeated)
    assert weighted.nb_theta_ == pytest.approx(as_rows.nb_theta_, rel=1e-10)
    np.testing.assert_allclose(weighted.coef_, as_rows.coef_, rtol=1e-8)


def test_a_count_model_is_a_regressor_without_class_methods():
    fit = MixedGLM("count ~ x + (1 | g)", family="poisson").fit(grouped())
    assert not hasattr(fit, "predict_proba") and not hasattr(fit, "decision_function")
    np.testing.assert_allclose(
        np.exp(fit.predict(grouped(), scale="link")), fit.predict(grouped()), rtol=1e-12
    )


# -- refusals in scikit-learn's words --------------------------------------------------------


@pytest.mark.parametrize(
    "model", [MixedLM("y ~ x + (1 | g)"), MixedGLM("click ~ x + (1 | g)")], ids=type
)
def test_one_row_and_a_missing_response_are_refused_in_scikit_learns_words(model):
    data = grouped()
    with pytest.raises(ValueError, match="X: 1 sample"):
        model.fit(data.head(1))
    with pytest.raises(ValueError, match="requires y to be passed, but the target y is None"):
        model.fit(data.drop(columns=["y", "click"]))
    # Still a clear refusal for an unhashable group value, naming what is allowed.
    odd = data.astype({"g": object})
    odd.at[0, "g"] = {"a": 1}
    with pytest.raises(TypeError, match="must be a string or a number"):
        model.fit(odd)
