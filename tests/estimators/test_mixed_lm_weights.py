"""MixedLM's prior weights, offsets and deviance function: properties that follow from
the model (the lme4 comparisons are in test_vs_lme4_weights_offsets.py), and the errors
for weights and offsets it cannot use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from estimators import MixedLM
from estimators.mixed._design import lme4_name, required_columns
from estimators.mixed._formula import parse_formula

DATA = Path(__file__).parent / "fixtures" / "data"
FORMULA = "Reaction ~ Days + (Days | Subject)"


def sleepstudy() -> pd.DataFrame:
    """sleepstudy with a weight column w, an exposure and a numeric offset column base."""
    return pd.read_csv(DATA / "sleepstudy_extra.csv.gz")


def crossed() -> pd.DataFrame:
    """Online data aggregated to user x day means, n rows each (random intercepts)."""
    return pd.read_csv(DATA / "online_daily.csv.gz")


CROSSED = "y ~ x1 + x2 + (1 | user) + (1 | day)"


def close(actual, expected, rtol=1e-6):
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


@pytest.mark.parametrize("reml", [True, False], ids=["reml", "ml"])
@pytest.mark.parametrize("c", [0.25, 4.0])
def test_equal_weights_keep_the_estimates_and_scale_sigma(reml, c):
    """Weights all c: residual variance sigma_w^2 / c equals the unweighted sigma^2, so
    sigma grows by sqrt(c); theta, relative to sigma, shrinks by sqrt(c), leaving the
    random-effects covariance as it was; beta, its standard errors, the criterion and
    predictions do not change."""
    frame = sleepstudy()
    plain = MixedLM(FORMULA, reml=reml).fit(frame)
    weighted = MixedLM(FORMULA, reml=reml).fit(frame, sample_weight=np.full(len(frame), c))
    close(weighted.theta_, plain.theta_ / np.sqrt(c), rtol=1e-4)
    random = weighted.varcorr_["grp"] != "Residual"
    close(weighted.varcorr_["vcov"][random], plain.varcorr_["vcov"][random], rtol=2e-4)
    close(weighted.coef_, plain.coef_, rtol=1e-6)
    close(weighted.coef_se_, plain.coef_se_, rtol=1e-4)
    assert weighted.sigma_ == pytest.approx(np.sqrt(c) * plain.sigma_, rel=1e-5)
    assert weighted.objective_ == pytest.approx(plain.objective_, rel=1e-9)
    close(weighted.predict(frame), plain.predict(frame), rtol=1e-6)


def test_sample_weight_equals_the_weights_column_and_both_multiply():
    frame = sleepstudy()
    by_column = MixedLM(FORMULA, weights="w").fit(frame)
    by_argument = MixedLM(FORMULA).fit(frame, sample_weight=frame["w"].to_numpy())
    close(by_argument.coef_, by_column.coef_)
    assert by_argument.objective_ == pytest.approx(by_column.objective_, rel=1e-12)
    frame["half"] = np.sqrt(frame["w"])
    both = MixedLM(FORMULA, weights="half").fit(frame, sample_weight=frame["half"])
    close(both.coef_, by_column.coef_)
    assert both.objective_ == pytest.approx(by_column.objective_, rel=1e-9)


def test_weights_change_the_fit_toward_heavy_rows():
    """A row weighted w counts like the mean of w rows: the weighted fit differs from the
    unweighted one, and its residual variance for a row of weight w is sigma^2 / w."""
    frame = sleepstudy()
    plain = MixedLM(FORMULA).fit(frame)
    weighted = MixedLM(FORMULA, weights="w").fit(frame)
    assert not np.allclose(weighted.coef_, plain.coef_, rtol=1e-3)
    _, std_heavy = weighted.predict(frame.assign(w=4.0), return_std=True)
    _, std_light = weighted.predict(frame.assign(w=1.0), return_std=True)
    assert np.all(std_heavy < std_light)
    _, std_without = weighted.predict(frame.drop(columns="w"), return_std=True)
    close(std_without, std_light)


@pytest.mark.parametrize("reml", [True, False], ids=["reml", "ml"])
def test_an_offset_equals_subtracting_it_from_the_response(reml):
    frame = sleepstudy()
    shifted = frame.assign(Reaction=frame["Reaction"] - frame["base"])
    reference = MixedLM(FORMULA, reml=reml).fit(shifted)
    for model in (
        MixedLM(FORMULA, reml=reml, offset="base"),
        MixedLM("Reaction ~ Days + offset(base) + (Days | Subject)", reml=reml),
    ):
        model.fit(frame)
        close(model.coef_, reference.coef_)
        close(model.theta_, reference.theta_, rtol=1e-4)
        assert model.objective_ == pytest.approx(reference.objective_, rel=1e-9)
        close(model.predict(frame), reference.predict(frame) + frame["base"])


def test_offset_terms_add_up_and_take_expressions():
    frame = sleepstudy()
    frame["total"] = np.log(frame["exposure"]) + 2 * frame["Days"] + frame["base"]
    by_column = MixedLM(FORMULA, offset="total").fit(frame)
    by_terms = MixedLM(
        "Reaction ~ Days + offset(log(exposure)) + offset(2 * Days) + (Days | Subject)",
        offset="base",
    ).fit(frame)
    close(by_terms.coef_, by_column.coef_)
    close(by_terms.predict(frame), by_column.predict(frame))


def test_offset_is_read_at_predict_time_and_its_absence_named():
    frame = sleepstudy()
    model = MixedLM("Reaction ~ Days + offset(log(exposure)) + (1 | Subject)").fit(frame)
    shifted = model.predict(frame.assign(exposure=frame["exposure"] * np.e))
    close(shifted, model.predict(frame) + 1.0)
    with pytest.raises(ValueError, match="exposure"):
        model.predict(frame.drop(columns="exposure"))
    column = MixedLM(FORMULA, offset="base").fit(frame)
    with pytest.raises(ValueError, match="'base'"):
        column.predict(frame.drop(columns="base"))


def test_formula_offsets_are_parsed_and_not_columns():
    parsed = parse_formula("y ~ x + offset(log(n)) + offset(`m x`) + (1 | g)")
    assert parsed.fixed == "1 + x"
    assert parsed.offsets == ("log(n)", "`m x`")
    assert parse_formula("y ~ offset(o) + (1 | g)").fixed == "1"
    assert required_columns("1 + x + offset(2 * z) + offset(log(n))") == {"x", "z", "n"}


def test_update_with_weights_and_offsets_equals_a_fit_at_the_same_theta():
    frame = sleepstudy()
    formula = "Reaction ~ Days + offset(log(exposure)) + (Days | Subject)"
    old, new = frame[frame["Days"] < 7], frame[frame["Days"] >= 7]
    model = MixedLM(formula, weights="w").fit(old, sample_weight=np.full(len(old), 2.0))
    model.update(new, sample_weight=np.full(len(new), 3.0))
    weights = np.where(frame["Days"] < 7, 2.0, 3.0)
    reference = MixedLM(formula, weights="w")._fit_at_theta(
        frame, theta=model.theta_, sample_weight=weights
    )
    close(model.coef_, reference.coef_)
    assert model.sigma_ == pytest.approx(reference.sigma_, rel=1e-6)
    assert model.objective_ == pytest.approx(reference.objective_, rel=1e-9)
    close(model.ranef_["Subject"], reference.ranef_["Subject"])
    close(model.predict(frame), reference.predict(frame))


def test_deviance_function_needs_no_fit_and_matches_the_fit():
    frame = crossed()
    model = MixedLM(CROSSED, weights="n", reml=False)
    devfun = model.deviance_function(frame)
    assert not hasattr(model, "coef_")
    model.fit(frame)
    assert devfun(model.theta_) == pytest.approx(model.objective_, rel=1e-12)
    # On a fitted model it leaves the fit as it was (here: X's recorded width).
    model.fit(frame.assign(extra=0.0))
    model.deviance_function(frame)
    assert model.n_features_in_ == frame.shape[1] + 1
    assert devfun(model.theta_ * 1.2) > model.objective_
    with pytest.raises(ValueError, match="theta: expected 2 value"):
        devfun([1.0])


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (-1.0, "weights: column 'w' has 1 negative"),
        (0.0, "weights: column 'w' has 1 zero"),
        (np.nan, "weights: column 'w' has 1 missing or infinite"),
    ],
)
def test_bad_weights_are_refused_naming_the_column(weights, message):
    frame = sleepstudy()
    frame.loc[3, "w"] = weights
    with pytest.raises(ValueError, match=message):
        MixedLM(FORMULA, weights="w").fit(frame)


def test_bad_sample_weight_and_missing_columns_are_named():
    frame = sleepstudy()
    with pytest.raises(ValueError, match="sample_weight: expected 180 value"):
        MixedLM(FORMULA).fit(frame, sample_weight=np.ones(10))
    with pytest.raises(ValueError, match="sample_weight has 1 negative"):
        MixedLM(FORMULA).fit(frame, sample_weight=np.r_[-1.0, np.ones(179)])
    with pytest.raises(ValueError, match="weights: column 'count' not found"):
        MixedLM(FORMULA, weights="count").fit(frame)
    with pytest.raises(ValueError, match="offset: column 'shift' not found"):
        MixedLM(FORMULA, offset="shift").fit(frame)
    with pytest.raises(ValueError, match=r"offset\(log\(Days\)\) has 18 missing or infinite"):
        MixedLM("Reaction ~ Days + offset(log(Days)) + (1 | Subject)").fit(frame)


def test_rows_dropped_for_missing_values_drop_their_sample_weight():
    frame = sleepstudy()
    weights = frame["w"].to_numpy()
    gappy = frame.copy()
    gappy.loc[[0, 5], "base"] = np.nan
    model = MixedLM(FORMULA, offset="base", na_action="drop")
    with pytest.warns(UserWarning, match="dropped 2"):
        model.fit(gappy, sample_weight=weights)
    kept = frame.drop(index=[0, 5])
    reference = MixedLM(FORMULA, offset="base").fit(kept, sample_weight=weights[kept.index])
    close(model.coef_, reference.coef_)


def test_parameters_survive_clone():
    model = MixedLM(FORMULA, weights="w", offset="base")
    assert clone(model).get_params()["weights"] == "w"
    assert clone(model).get_params()["offset"] == "base"


@pytest.mark.parametrize(
    ("formulaic_name", "lme4"),
    [
        ("Intercept", "(Intercept)"),
        ("var1[T.2]", "var12"),
        ("var1[5]", "var15"),
        ("var1[5]:var2", "var15:var2"),
        ("var1[T.b]:g[T.c]", "var1b:gc"),
    ],
)
def test_lme4_names_of_categorical_columns(formulaic_name, lme4):
    assert lme4_name(formulaic_name) == lme4


def test_summary_names_the_weights_and_the_offset_as_lme4_prints_them():
    frame = sleepstudy()
    text = MixedLM(FORMULA, weights="w", offset="base").fit(frame).summary()
    assert "\nWeights: w\n Offset: base\n" in text
    text = MixedLM(FORMULA).fit(frame, sample_weight=frame["w"]).summary()
    assert "\nWeights: sample_weight\n" in text
    assert "Weights" not in MixedLM(FORMULA).fit(frame).summary()
