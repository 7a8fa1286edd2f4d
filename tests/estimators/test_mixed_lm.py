"""MixedLM properties beyond lme4 parity: truth recovery, shrinkage, inputs, policies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.base import clone

from estimators import MixedLM
from estimators.mixed import FormulaError, parse_formula
from simulators import simulate

FORMULA = "y ~ x1 + x2 + account_age + treat + (1 | user) + (1 | item)"


@pytest.fixture(scope="module")
def crossed():
    return simulate(
        "online_services",
        seed=31,
        n_users=600,
        n_items=40,
        n_features=2,
        sd={"user": 0.8, "item": 0.4, "noise": 1.0, "region": 0.0, "user_slope": 0.0},
        events_per_user={"mean": 12},
    )


@pytest.fixture(scope="module")
def crossed_fit(crossed):
    return MixedLM(FORMULA).fit(crossed.frame)


def test_formula_parsing_expands_lme4_shorthands():
    parsed = parse_formula("y ~ x * z + (1 + x || g) + (1 | a/b/c) + (0 + x | h:k)")
    assert parsed.response == "y"
    assert parsed.fixed == "1 + x * z"
    assert [(t.expr, t.group) for t in parsed.random] == [
        ("1", "g"),
        ("0 + x", "g"),
        ("1", "a"),
        ("1", "b:a"),
        ("1", "c:b:a"),
        ("0 + x", "h:k"),
    ]
    assert parsed.random[4].group_cols == ("c", "b", "a")
    assert parse_formula("~ 0 + x + (1 | g)").fixed == "0 + x"
    assert parse_formula("y ~ (1 | g)").fixed == "1"


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("y ~ x + (1 | g", "unbalanced"),
        ("y ~ x ~ z + (1 | g)", "more than one"),
        ("y ~ x + ( | g)", "no left-hand side"),
        ("y ~ x + (1 | )", "no grouping factor"),
        ("y ~ x + (1 | g h)", "not a column name"),
        ("y ~ x + ", "empty term"),
        ("", "expected a string"),
    ],
)
def test_formula_errors_quote_the_problem(formula, message):
    with pytest.raises(FormulaError, match=message):
        parse_formula(formula)


def test_recovers_simulation_truth(crossed, crossed_fit):
    truth = crossed.truth
    for name in ("x1", "x2", "treat"):
        assert crossed_fit.coef_[name] == pytest.approx(truth["fixed_effects"][name], abs=0.03)
    sd = crossed_fit.varcorr_.set_index("grp")["sdcor"]
    assert sd["user"] == pytest.approx(0.8, rel=0.1)
    assert sd["item"] == pytest.approx(0.4, rel=0.3)
    assert sd["Residual"] == pytest.approx(1.0, rel=0.03)
    users = crossed_fit.ranef_["user"]["(Intercept)"]
    true_users = truth["unit_effects"]["user"].loc[users.index]
    assert np.corrcoef(users, true_users)[0, 1] > 0.85


def test_conditional_modes_shrink_units_with_few_rows(crossed, crossed_fit):
    """BLUPs are the unit's own deviation pulled toward 0, the more so the fewer its rows:
    their ratio to the raw mean residual is the shrinkage factor n/(n + sigma^2/tau^2)."""
    frame = crossed.frame
    marginal = crossed_fit.predict(frame, include_random=["item"])
    residual = (frame["y"] - marginal).groupby(frame["user"]).agg(["mean", "size"])
    blup = crossed_fit.ranef_["user"]["(Intercept)"].loc[residual.index]
    tau2 = crossed_fit.varcorr_.set_index("grp").loc["user", "vcov"]
    sigma2 = crossed_fit.sigma_**2
    expected = residual["size"] / (residual["size"] + sigma2 / tau2) * residual["mean"]
    # Exact for a single factor; the crossed item effects perturb it only slightly.
    np.testing.assert_allclose(blup, expected, atol=0.05)
    few, many = residual["size"] <= 2, residual["size"] >= 30
    ratio = (blup / residual["mean"]).where(residual["mean"].abs() > 0.2)
    assert ratio[few].median() < 0.6 < 0.9 < ratio[many].median()


def test_single_factor_blups_match_the_closed_form():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(30), rng.integers(1, 15, 30))
    frame = pd.DataFrame({"g": groups})
    frame["y"] = 2.0 + rng.normal(0, 1.5, 30)[groups] + rng.normal(size=groups.size)
    fit = MixedLM("y ~ 1 + (1 | g)").fit(frame)
    tau2 = fit.varcorr_["vcov"].iloc[0]
    stats = (frame["y"] - fit.coef_["(Intercept)"]).groupby(frame["g"]).agg(["mean", "size"])
    shrink = stats["size"] / (stats["size"] + fit.sigma_**2 / tau2)
    np.testing.assert_allclose(fit.ranef_["g"]["(Intercept)"], shrink * stats["mean"], rtol=1e-6)
    # Conditional variance sigma^2 tau^2 / (n tau^2 + sigma^2).
    expected_var = fit.sigma_**2 * tau2 / (stats["size"] * tau2 + fit.sigma_**2)
    np.testing.assert_allclose(fit.ranef_var_["g"]["(Intercept)"], expected_var, rtol=1e-6)


def test_predict_policies_for_new_levels(crossed, crossed_fit):
    known_user, known_item = crossed.frame["user"].iloc[0], crossed.frame["item"].iloc[0]
    new = pd.DataFrame(
        {
            "x1": [0.0] * 4,
            "account_age": [0.0] * 4,
            "treat": [0] * 4,
            "x2": [0.0] * 4,
            "user": [known_user, known_user, "nobody", "nobody"],
            "item": [known_item, "new item", known_item, "new item"],
        }
    )
    prediction, std = crossed_fit.predict(new, return_std=True)
    intercept = crossed_fit.coef_["(Intercept)"]
    user_effect = crossed_fit.ranef_["user"].loc[known_user, "(Intercept)"]
    item_effect = crossed_fit.ranef_["item"].loc[known_item, "(Intercept)"]
    np.testing.assert_allclose(
        prediction,
        [
            intercept + user_effect + item_effect,
            intercept + user_effect,
            intercept + item_effect,
            intercept,
        ],
        rtol=1e-10,
    )
    # Unknown units are less certain: the full variance of their effect is added.
    assert std[0] < std[1] < std[3] and std[0] < std[2] < std[3]
    assert std[3] == pytest.approx(
        np.sqrt(crossed_fit.varcorr_["vcov"].sum() + crossed_fit.coef_cov_.iloc[0, 0]), rel=1e-6
    )
    strict = clone(crossed_fit).set_params(new_levels="error").fit(crossed.frame)
    with pytest.raises(ValueError, match="group column 'item': 1 level"):
        strict.predict(new.iloc[:2])
    np.testing.assert_allclose(strict.predict(new.iloc[:1]), prediction[:1])
    with pytest.raises(ValueError, match="include_random: unknown grouping factor"):
        crossed_fit.predict(new, include_random=["region"])


def test_prediction_std_covers_held_out_rows(crossed):
    frame = crossed.frame
    test = frame.index % 5 == 0
    fit = MixedLM(FORMULA).fit(frame[~test])
    prediction, std = fit.predict(frame[test], return_std=True)
    z = (frame.loc[test, "y"] - prediction) / std
    assert np.mean(np.abs(z) < 1.645) == pytest.approx(0.90, abs=0.03)


@pytest.mark.parametrize(
    "ids",
    [
        lambda codes: np.array([f"user-{c}" for c in codes], dtype=object),
        lambda codes: codes * 7 + 1000,  # integers, unsorted and non-contiguous
        lambda codes: codes * 0.5 + 0.25,  # floats
        lambda codes: pd.Categorical([f"c{c}" for c in codes]),
    ],
)
def test_id_types_all_work_and_agree(ids):
    rng = np.random.default_rng(5)
    codes = rng.permutation(np.repeat(np.arange(25), 6))
    x = rng.normal(size=codes.size)
    y = 1 + x + rng.normal(size=25)[codes] + rng.normal(size=codes.size)
    reference = MixedLM("y ~ x + (1 | g)").fit(pd.DataFrame({"x": x, "g": codes, "y": y}))
    frame = pd.DataFrame({"x": x, "g": ids(codes), "y": y})
    fit = MixedLM("y ~ x + (1 | g)").fit(frame)
    # Level order differs by type, so the optimiser's path does too, by rounding only.
    assert fit.objective_ == pytest.approx(reference.objective_, rel=1e-10)
    np.testing.assert_allclose(
        fit.predict(frame), reference.predict(frame.assign(g=codes)), rtol=1e-6, atol=1e-6
    )


def test_polars_input_and_fit_with_separate_y(crossed, crossed_fit):
    frame = pl.from_pandas(crossed.frame)
    fit = MixedLM(FORMULA).fit(frame)
    assert fit.objective_ == pytest.approx(crossed_fit.objective_, rel=1e-12)
    separate = MixedLM(FORMULA).fit(crossed.frame.drop(columns="y"), crossed.frame["y"])
    assert separate.objective_ == pytest.approx(crossed_fit.objective_, rel=1e-12)


def test_singular_fit_is_detected():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"g": np.repeat(np.arange(10), 10), "y": rng.normal(size=100)})
    # Every group has the same mean: no between-group variance, a boundary estimate.
    frame["y"] -= frame.groupby("g")["y"].transform("mean")
    fit = MixedLM("y ~ 1 + (1 | g)").fit(frame)
    assert fit.theta_[0] < 1e-4 and fit.is_singular_
    assert fit.convergence_["singular"]
    assert "boundary (singular) fit" in fit.summary()


def test_rank_deficient_fixed_effects_are_dropped_with_a_warning():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"x": rng.normal(size=60), "g": np.repeat(np.arange(12), 5)})
    frame["x2"] = 2 * frame["x"]
    frame["y"] = frame["x"] + rng.normal(size=12)[frame["g"]] + rng.normal(size=60)
    with pytest.warns(UserWarning, match=r"rank deficient so dropping 1 column\(s\): \['x2'\]"):
        fit = MixedLM("y ~ x + x2 + (1 | g)").fit(frame)
    assert list(fit.coef_.index) == ["(Intercept)", "x"]
    assert fit.dropped_columns_ == ["x2"]
    assert np.all(np.isfinite(fit.predict(frame)))


def test_bad_input_names_the_column():
    frame = pd.DataFrame(
        {"x": [1.0, np.nan, 3.0, 4.0] * 5, "g": list("aabb") * 5, "y": np.arange(20.0)}
    )
    with pytest.raises(ValueError, match="column 'x' has 5 missing or infinite"):
        MixedLM("y ~ x + (1 | g)").fit(frame)
    with pytest.warns(UserWarning, match="dropped 5 of 20 row"):
        fit = MixedLM("y ~ x + (1 | g)", na_action="drop").fit(frame)
    assert fit.n_obs_ == 15
    with pytest.raises(ValueError, match=r"column\(s\) \['z'\] not found"):
        MixedLM("y ~ z + (1 | g)").fit(frame)
    with pytest.raises(ValueError, match="grouping factor 'g' has 1 level"):
        MixedLM("y ~ 1 + (1 | g)").fit(frame.assign(g="a"))
    with pytest.raises(ValueError, match="y: 1 missing or infinite"):
        MixedLM("y ~ 1 + (1 | g)").fit(frame.drop(columns="x").assign(y=[np.inf] + [1.0] * 19))
    with pytest.raises(FormulaError, match="no random-effects term"):
        MixedLM("y ~ x").fit(frame.dropna())
    with pytest.raises(ValueError, match="formula has no response"):
        MixedLM("~ 1 + (1 | g)").fit(frame)


def test_summary_reads_like_lme4(crossed_fit):
    text = crossed_fit.summary()
    for piece in (
        "Linear mixed model fit by REML",
        "REML criterion at convergence",
        "Random effects:",
        "Groups",
        "Std.Dev.",
        "Residual",
        "Number of obs:",
        "Fixed effects:",
        "Estimate",
        "Std. Error",
        "t value",
        "(Intercept)",
    ):
        assert piece in text


def test_sparse_quadratic_diagonal_matches_the_dense_product():
    import scipy.sparse as sp

    from estimators.mixed._deviance import _sparse_quadratic_diagonal

    rng = np.random.default_rng(2)
    B = sp.random(30, 200, density=0.1, random_state=3, format="csc")
    A = rng.normal(size=(30, 30))
    M = A @ A.T
    np.testing.assert_allclose(
        _sparse_quadratic_diagonal(B, M), np.diag(B.T.toarray() @ M @ B.toarray()), rtol=1e-12
    )
