"""The reference wrappers Lme4 and StatsmodelsMixedLM against lme4's fixtures and MixedLM.

The lme4 tests run R (one Rscript process per fit, a handful of fits) and skip with the
reason when Rscript, lme4 or jsonlite is missing; the statsmodels tests skip when
statsmodels is not installed.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

import estimators._reference as reference_module
from estimators import MixedLM
from estimators._reference import (
    Lme4,
    ReferenceFitError,
    StatsmodelsMixedLM,
    component_modes,
    group_modes,
    lme4_missing_reason,
    statsmodels_missing_reason,
)

FIXTURES = Path(__file__).parent / "fixtures"
SLEEPSTUDY = "Reaction ~ Days + (Days | Subject)"


def read(name: str) -> pd.DataFrame:
    return pd.read_csv(FIXTURES / "data" / name)


@cache
def fixture(model: str) -> dict:
    return json.loads((FIXTURES / "lme4" / f"{model}.json").read_text())


@cache
def sleepstudy_mixed_lm() -> MixedLM:
    return MixedLM(SLEEPSTUDY).fit(read("sleepstudy.csv.gz"))


def crossed_data(seed: int = 5) -> pd.DataFrame:
    """Small crossed user x item data with one covariate."""
    rng = np.random.default_rng(seed)
    n, n_users, n_items = 300, 40, 8
    user, item = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    x = rng.normal(size=n)
    y = 2.0 + 0.7 * x + rng.normal(0, 0.8, n_users)[user] + rng.normal(0, 0.5, n_items)[item]
    return pd.DataFrame(
        {
            "user": [f"u{k}" for k in user],
            "item": [f"i{k}" for k in item],
            "x": x,
            "y": y + rng.normal(size=n),
        }
    )


@pytest.fixture(scope="module")
def lme4_ready() -> None:
    reason = lme4_missing_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def statsmodels_ready() -> None:
    reason = statsmodels_missing_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def sleepstudy_lme4(lme4_ready) -> Lme4:
    data = read("sleepstudy.csv.gz")
    return Lme4(SLEEPSTUDY).fit(data[["Days", "Subject"]], data["Reaction"])


# -- both wrappers: the estimator contract, without fitting --------------------------------


@pytest.mark.parametrize("cls", [Lme4, StatsmodelsMixedLM])
def test_params_round_trip_and_predict_before_fit(cls):
    model = cls(SLEEPSTUDY, reml=False, new_levels="error")
    twin = clone(model)
    assert twin.get_params() == model.get_params()
    assert twin.get_params()["formula"] == SLEEPSTUDY
    with pytest.raises(NotFittedError):
        model.predict(read("sleepstudy.csv.gz"))


def test_policy_is_checked_before_anything_runs():
    with pytest.raises(ValueError, match="new_levels: expected one of"):
        Lme4(SLEEPSTUDY, new_levels="zero", rscript="/nonexistent/Rscript").fit(
            read("sleepstudy.csv.gz")
        )


# -- lme4 ----------------------------------------------------------------------------------


def test_missing_rscript_gives_a_clear_error():
    assert "not found" in lme4_missing_reason("/nonexistent/Rscript")
    with pytest.raises(ReferenceFitError, match=r"Rscript not found \('/nonexistent/Rscript'\)"):
        Lme4(SLEEPSTUDY, rscript="/nonexistent/Rscript").fit(read("sleepstudy.csv.gz"))


@pytest.mark.r
def test_lme4_predictions_match_mixed_lm_including_a_new_subject(sleepstudy_lme4):
    ours = sleepstudy_mixed_lm()
    data, new = read("sleepstudy.csv.gz"), read("sleepstudy_reml_new.csv.gz")
    assert (new["Subject"] == 999).any()  # a subject not in the data
    for frame in (data, new):
        np.testing.assert_allclose(sleepstudy_lme4.predict(frame), ours.predict(frame), rtol=1e-4)
    np.testing.assert_allclose(
        sleepstudy_lme4.predict(new), fixture("sleepstudy_reml")["predictions"], rtol=1e-6
    )
    unseen = new["Subject"] == 999
    population = sleepstudy_lme4.coef_["(Intercept)"] + sleepstudy_lme4.coef_["Days"] * new["Days"]
    np.testing.assert_allclose(sleepstudy_lme4.predict(new)[unseen], population[unseen])


@pytest.mark.r
def test_lme4_estimates_match_the_fixture(sleepstudy_lme4):
    ref = fixture("sleepstudy_reml")
    fit = sleepstudy_lme4
    assert fit.objective_ == pytest.approx(ref["objective"], rel=1e-6)
    assert fit.loglik_ == pytest.approx(ref["loglik"], rel=1e-6)
    assert fit.sigma_ == pytest.approx(ref["sigma"], rel=1e-4)
    np.testing.assert_allclose(fit.theta_, ref["theta"], rtol=1e-3)
    np.testing.assert_allclose(fit.coef_[list(ref["fixef"])], list(ref["fixef"].values()))
    np.testing.assert_allclose(
        fit.coef_se_[list(ref["fixef_se"])], list(ref["fixef_se"].values()), rtol=1e-4
    )
    assert list(fit.varcorr_.columns) == ["grp", "var1", "var2", "vcov", "sdcor"]
    np.testing.assert_allclose(
        fit.varcorr_["sdcor"], [row["sdcor"] for row in ref["varcorr"]], rtol=1e-4
    )
    effects = fit.ranef_["Subject"]
    assert list(effects.index) == ref["ranef"]["Subject"]["levels"]
    assert list(effects.columns) == ["(Intercept)", "Days"]
    np.testing.assert_allclose(effects, ref["ranef"]["Subject"]["values"], rtol=1e-3, atol=1e-4)
    assert not fit.is_singular_
    assert fit.n_obs_ == ref["n_obs"]
    assert 0 < fit.fit_seconds_ < 60
    assert set(fit.versions_) == {"R", "lme4"}


@pytest.mark.r
def test_lme4_new_levels_error_raises(sleepstudy_lme4):
    strict = copy.deepcopy(sleepstudy_lme4).set_params(new_levels="error")
    new = read("sleepstudy_reml_new.csv.gz")
    with pytest.raises(ValueError, match="group column 'Subject': 1 level"):
        strict.predict(new)
    assert np.all(np.isfinite(strict.predict(new[new["Subject"] != 999])))


@pytest.mark.r
def test_lme4_polars_input_gives_the_same_predictions(sleepstudy_lme4):
    data = read("sleepstudy.csv.gz")
    from_polars = Lme4(SLEEPSTUDY).fit(pl.from_pandas(data))
    np.testing.assert_allclose(
        from_polars.predict(pl.from_pandas(data)), sleepstudy_lme4.predict(data), rtol=1e-10
    )


@pytest.mark.r
def test_lme4_crossed_factors_match_the_fixture(lme4_ready):
    ref = fixture("penicillin")
    fit = Lme4(ref["formula"]).fit(read(ref["data"]))  # the response read from the data
    assert fit.objective_ == pytest.approx(ref["objective"], rel=1e-6)
    assert set(fit.ranef_) == {"plate", "sample"}
    # New plates and a new sample get the population part.
    np.testing.assert_allclose(fit.predict(read(ref["newdata"])), ref["predictions"], rtol=1e-6)


@pytest.mark.r
def test_lmer_failure_quotes_r_error(lme4_ready):
    one_row_per_level = pd.DataFrame({"g": [f"g{k}" for k in range(12)], "y": np.arange(12.0)})
    with pytest.raises(ReferenceFitError, match="lmer failed: number of levels"):
        Lme4("y ~ 1 + (1 | g)").fit(one_row_per_level)


@pytest.mark.r
def test_missing_lme4_gives_a_clear_error(lme4_ready, tmp_path):
    # An Rscript that sees no site library: Debian's lme4 and jsonlite live there.
    rscript = tmp_path / "Rscript"
    rscript.write_text(
        '#!/bin/sh\nR_LIBS_SITE=/nonexistent R_LIBS_USER=/nonexistent exec Rscript "$@"\n'
    )
    rscript.chmod(0o755)
    reason = lme4_missing_reason(str(rscript))
    if reason is None:
        pytest.skip("lme4 is installed outside the site library; cannot hide it")
    assert "no package called" in reason
    with pytest.raises(ReferenceFitError, match="R cannot load lme4 and jsonlite: there is no"):
        Lme4(SLEEPSTUDY, rscript=str(rscript)).fit(read("sleepstudy.csv.gz"))


# -- statsmodels ---------------------------------------------------------------------------


def test_missing_statsmodels_gives_a_clear_error(monkeypatch):
    monkeypatch.setattr(reference_module, "statsmodels_missing_reason", lambda: "not installed")
    with pytest.raises(ImportError, match="StatsmodelsMixedLM: not installed"):
        StatsmodelsMixedLM(SLEEPSTUDY).fit(read("sleepstudy.csv.gz"))


def test_statsmodels_sleepstudy_matches_the_fixture(statsmodels_ready):
    ref = fixture("sleepstudy_reml")
    data, new = read("sleepstudy.csv.gz"), read("sleepstudy_reml_new.csv.gz")
    fit = StatsmodelsMixedLM(SLEEPSTUDY).fit(data)
    assert fit.formulation_ == "groups"
    np.testing.assert_allclose(
        fit.coef_[list(ref["fixef"])], list(ref["fixef"].values()), rtol=1e-3
    )
    assert fit.sigma_ == pytest.approx(ref["sigma"], rel=1e-2)
    assert fit.objective_ == pytest.approx(ref["objective"], rel=1e-5)
    np.testing.assert_allclose(fit.theta_, ref["theta"], rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(fit.predict(new), ref["predictions"], rtol=1e-3)
    np.testing.assert_allclose(fit.predict(data), sleepstudy_mixed_lm().predict(data), rtol=1e-3)
    with pytest.raises(ValueError, match="group column 'Subject': 1 level"):
        fit.set_params(new_levels="error").predict(new)


def test_statsmodels_crossed_factors_as_variance_components(statsmodels_ready):
    data = crossed_data()
    formula = "y ~ x + (1 | user) + (1 | item)"
    fit = StatsmodelsMixedLM(formula).fit(data)
    ours = MixedLM(formula).fit(data)
    assert fit.formulation_ == "variance_components"
    assert set(fit.ranef_) == {"user", "item"}
    np.testing.assert_allclose(fit.coef_[ours.coef_.index], ours.coef_, rtol=1e-2)
    np.testing.assert_allclose(fit.predict(data), ours.predict(data), rtol=1e-2)
    from_polars = StatsmodelsMixedLM(formula).fit(pl.from_pandas(data))
    np.testing.assert_allclose(from_polars.predict(data), fit.predict(data), rtol=1e-10)

    ref = fixture("penicillin")
    penicillin = StatsmodelsMixedLM(ref["formula"]).fit(read(ref["data"]))
    assert penicillin.objective_ == pytest.approx(ref["objective"], rel=1e-6)
    np.testing.assert_allclose(
        penicillin.predict(read(ref["newdata"])), ref["predictions"], rtol=1e-4
    )


@pytest.mark.parametrize(
    "formula, problem",
    [
        ("y ~ x + (1 + x || user)", "uncorrelated"),
        ("y ~ x + (1 | user) + (0 + x | user)", "several random-effects terms on one"),
        ("y ~ x + (1 + x | user) + (1 | item)", "random slopes when there are several"),
    ],
)
def test_statsmodels_refuses_what_it_cannot_express(statsmodels_ready, formula, problem):
    with pytest.raises(ValueError, match=f"statsmodels cannot express {problem}"):
        StatsmodelsMixedLM(formula).fit(crossed_data())


def test_fallback_modes_equal_statsmodels_random_effects(statsmodels_ready):
    data = read("sleepstudy.csv.gz")
    fit = StatsmodelsMixedLM(SLEEPSTUDY).fit(data)
    vc = fit.varcorr_
    covariance = np.array([[vc["vcov"][0], vc["vcov"][2]], [vc["vcov"][2], vc["vcov"][1]]])
    values = np.column_stack([np.ones(len(data)), data["Days"]])
    levels = fit.ranef_["Subject"].index
    modes = group_modes(
        levels.get_indexer(data["Subject"].astype(str)),
        values,
        data["Reaction"].to_numpy() - values @ fit.coef_.to_numpy(),
        covariance,
        fit.sigma_**2,
        len(levels),
    )
    np.testing.assert_allclose(modes, fit.ranef_["Subject"], rtol=1e-6)

    ref = fixture("penicillin")
    penicillin = read(ref["data"])
    crossed = StatsmodelsMixedLM(ref["formula"]).fit(penicillin)
    blocks = [
        pd.get_dummies(penicillin[name]).reindex(columns=crossed.ranef_[name].index)
        for name in ("plate", "sample")
    ]
    variances = crossed.varcorr_.set_index("grp")["vcov"]
    modes = component_modes(
        sp.csr_matrix(np.hstack(blocks).astype(float)),
        np.concatenate(
            [
                np.repeat(variances[name], len(b.columns))
                for name, b in zip(("plate", "sample"), blocks, strict=True)
            ]
        ),
        penicillin["diameter"].to_numpy() - crossed.coef_["(Intercept)"],
        crossed.sigma_**2,
    )
    expected = np.concatenate([crossed.ranef_[name]["(Intercept)"] for name in ("plate", "sample")])
    np.testing.assert_allclose(modes, expected, rtol=1e-6, atol=1e-10)


def test_lme4_sample_weight_is_lmers_prior_weights_as_in_mixed_lm(lme4_ready):
    """Weighted lmer through Rscript and MixedLM with the same sample_weight reach the
    same REML criterion and estimates; rows of weight 0 are left out of both."""
    data = read("sleepstudy.csv.gz")
    weight = np.random.default_rng(6).uniform(0.3, 3.0, len(data))
    weight[:7] = 0.0
    X, y = data[["Days", "Subject"]], data["Reaction"]
    ours = Lme4(SLEEPSTUDY).fit(X, y, sample_weight=weight)
    kept = weight > 0
    assert ours.n_obs_ == int(kept.sum())
    mixed = MixedLM(SLEEPSTUDY).fit(X[kept], y[kept], sample_weight=weight[kept])
    assert ours.objective_ == pytest.approx(mixed.objective_, rel=1e-6)
    np.testing.assert_allclose(ours.coef_.to_numpy(), mixed.coef_.to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(ours.sigma_, mixed.sigma_, rtol=1e-3)
    unweighted = Lme4(SLEEPSTUDY).fit(X, y)
    assert ours.objective_ != pytest.approx(unweighted.objective_, rel=1e-3)
