"""MixedLM.update: new rows added to a fit at the fitted theta equal a fit at that theta on
all rows (fixed effects, sigma, conditional modes and variances, predictions)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError

from estimators import MixedLM
from estimators.mixed._deviance import _sparse_quadratic_diagonal, quadratic_diagonal_by_count
from simulators import simulate

DATA = Path(__file__).parent / "fixtures" / "data"
RTOL = 1e-6


def sleepstudy() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Old rows: days 0-6 of 15 subjects; new rows: days 7-9 of those and all days of 3
    subjects not seen before."""
    frame = pd.read_csv(DATA / "sleepstudy.csv.gz")
    subjects = frame["Subject"].unique()
    new = frame["Subject"].isin(subjects[-3:]) | (frame["Days"] >= 7)
    return frame[~new], frame[new]


def crossed() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Online-services events; the new rows hold 30 new users, 3 new items and a day of
    events of known ones. Their ids are fresh Categoricals, with other categories."""
    frame = simulate(
        "online_services",
        seed=8,
        n_users=400,
        n_items=40,
        n_features=2,
        events_per_user={"mean": 8},
    ).frame
    new_users = frame["user"].cat.categories[-30:]
    new_items = frame["item"].cat.categories[-3:]
    new = frame["user"].isin(new_users) | frame["item"].isin(new_items) | (frame["day"] == 27)
    old, new_rows = frame[~new], frame[new].copy()
    for column in ("user", "item"):
        new_rows[column] = pd.Categorical(new_rows[column].astype(str))
    return old, new_rows


CASES = {
    "intercept": ("Reaction ~ Days + (1 | Subject)", sleepstudy),
    "slope": ("Reaction ~ Days + (1 + Days | Subject)", sleepstudy),
    "crossed": ("y ~ x1 + x2 + treat + (1 | user) + (1 | item)", crossed),
}


def assert_same_fit(fit: MixedLM, reference: MixedLM, rows: pd.DataFrame) -> None:
    """Every estimate at theta agrees to RTOL; levels are compared by label."""

    def close(actual, expected):
        actual, expected = np.asarray(actual, float), np.asarray(expected, float)
        scale = np.max(np.abs(expected)) if expected.size else 1.0
        np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=RTOL * scale)

    assert fit.n_obs_ == reference.n_obs_
    assert fit.n_levels_ == reference.n_levels_
    np.testing.assert_array_equal(fit.theta_, reference.theta_)
    close(fit.coef_, reference.coef_)
    close(fit.coef_cov_, reference.coef_cov_)
    close(fit.sigma_, reference.sigma_)
    close(fit.objective_, reference.objective_)
    close(fit.varcorr_["vcov"], reference.varcorr_["vcov"])
    for group, expected in reference.ranef_.items():
        close(fit.ranef_[group].loc[expected.index], expected)
        close(fit.ranef_var_[group].loc[expected.index], reference.ranef_var_[group])
        position = fit.ranef_[group].index.get_indexer(expected.index)
        close(fit.ranef_cov_[group][position], reference.ranef_cov_[group])
    for prediction, expected in zip(
        fit.predict(rows, return_std=True), reference.predict(rows, return_std=True), strict=True
    ):
        close(prediction, expected)


@pytest.mark.parametrize("reml", [True, False], ids=["reml", "ml"])
@pytest.mark.parametrize("case", list(CASES))
def test_update_equals_a_fit_at_the_same_theta_on_all_rows(case, reml):
    formula, load = CASES[case]
    old, new = load()
    fit = MixedLM(formula, reml=reml).fit(old)
    theta = fit.theta_.copy()
    assert fit.update(new) is fit
    np.testing.assert_array_equal(fit.theta_, theta)
    everything = pd.concat([old, new])
    reference = MixedLM(formula, reml=reml)._fit_at_theta(everything, theta=theta)
    assert_same_fit(fit, reference, everything)
    assert fit.convergence_["updates"] == 1 and fit.convergence_["n_obs_at_fit"] == len(old)


def test_updating_twice_equals_updating_once_with_both_batches():
    formula, load = CASES["crossed"]
    old, new = load()
    first, second = new.iloc[: len(new) // 2], new.iloc[len(new) // 2 :]
    twice = MixedLM(formula).fit(old).update(first).update(second)
    once = MixedLM(formula).fit(old).update(pd.concat([first, second]))
    assert_same_fit(twice, once, pd.concat([old, new]))
    assert twice.convergence_["updates"] == 2


def test_partial_fit_is_update_and_fits_an_unfitted_model():
    formula, load = CASES["intercept"]
    old, new = load()
    by_partial_fit = MixedLM(formula).partial_fit(old)
    fitted = MixedLM(formula).fit(old)
    np.testing.assert_array_equal(by_partial_fit.theta_, fitted.theta_)
    assert_same_fit(by_partial_fit.partial_fit(new), fitted.update(new), new)


def test_new_units_are_predicted_with_their_new_conditional_modes():
    formula, load = CASES["crossed"]
    old, new = load()
    fit = MixedLM(formula).fit(old)
    unseen = new[~new["user"].isin(old["user"]) & new["item"].isin(old["item"])]
    population = fit.predict(unseen, include_random=["item"])
    np.testing.assert_allclose(fit.predict(unseen), population)  # no mode yet for the user
    fit.update(new)
    users = fit.ranef_["user"]["(Intercept)"]
    expected = fit.predict(unseen, include_random=["item"]) + users.loc[unseen["user"]].to_numpy()
    np.testing.assert_allclose(fit.predict(unseen), expected, rtol=1e-12)
    assert np.all(users.loc[unseen["user"]].to_numpy() != 0)
    # Old codes stay, new levels come after them.
    assert list(users.index[: old["user"].nunique()]) == sorted(old["user"].unique())


def test_terms_are_reordered_when_new_levels_change_the_largest_factor():
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "a": rng.integers(0, 120, 1200),
            "b": rng.integers(0, 30, 1200),
            "x": rng.normal(size=1200),
        }
    )
    frame["y"] = (
        rng.normal(size=120)[frame["a"]] + rng.normal(size=30)[frame["b"]] + frame["x"]
    ) + rng.normal(size=1200)
    old, new = frame[frame["a"] < 15], frame[frame["a"] >= 15]
    formula = "y ~ x + (1 + x | a) + (1 | b)"
    fit = MixedLM(formula).fit(old)
    assert [term.spec.group for term in fit._design_terms] == ["b", "a"]
    fit.update(new)
    assert [term.spec.group for term in fit._design_terms] == ["a", "b"]
    reference = MixedLM(formula)._fit_at_theta(frame, theta=fit.theta_)
    assert_same_fit(fit, reference, frame)


def test_update_errors_are_clear():
    formula, load = CASES["intercept"]
    old, new = load()
    with pytest.raises(NotFittedError):
        MixedLM(formula).update(new)
    fit = MixedLM(formula).fit(old)
    with pytest.raises(ValueError, match=r"update: column\(s\) \['Days'\] not found in X_new"):
        fit.update(new.drop(columns="Days"))
    with pytest.raises(ValueError, match="response column 'Reaction' not found"):
        fit.update(new.drop(columns="Reaction"))
    with pytest.raises(ValueError, match="y: 1 missing or infinite"):
        fit.update(new.assign(Reaction=[np.nan] + [1.0] * (len(new) - 1)))
    with pytest.raises(ValueError, match="column 'Days' has 1 missing or infinite"):
        fit.update(new.assign(Days=[np.nan] + [1.0] * (len(new) - 1)))
    with pytest.raises(ValueError, match="y: has 3 values but X has"):
        fit.update(new, np.zeros(3))
    assert fit.n_obs_ == len(old)  # a refused update leaves the fit as it was

    dropping = MixedLM(formula, na_action="drop").fit(old)
    with pytest.warns(UserWarning, match="dropped 1 of"):
        dropping.update(new.assign(Days=[np.nan] + list(new["Days"].iloc[1:])))
    assert dropping.n_obs_ == len(old) + len(new) - 1


def test_an_unseen_fixed_effect_category_is_an_error_naming_the_column():
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(
        {
            "g": np.repeat(np.arange(20), 6),
            "c": rng.choice(["a", "b"], 120),
            "y": rng.normal(size=120),
        }
    )
    fit = MixedLM("y ~ c + (1 | g)").fit(frame)
    with pytest.raises(ValueError, match=r"column 'c' has 1 categorical level\(s\) not seen.*'z'"):
        fit.update(frame.assign(c="z"))
    with pytest.raises(ValueError, match="confint.*update"):
        fit.update(frame).confint(method="profile")


def test_quadratic_diagonal_by_count_matches_the_pairwise_version():
    rng = np.random.default_rng(2)
    B = sp.random(40, 300, density=0.08, format="csc", random_state=rng)
    A = rng.normal(size=(40, 40))
    M = A @ A.T
    expected = np.diag(B.T.toarray() @ M @ B.toarray())
    # Batches of columns, and (max_elements below k * k) single columns in row chunks.
    for max_elements in (2_000_000, 50, 5):
        np.testing.assert_allclose(
            quadratic_diagonal_by_count(B, M, max_elements=max_elements), expected
        )
    np.testing.assert_allclose(_sparse_quadratic_diagonal(B, M), expected)


@pytest.mark.parametrize("q", [1, 2, 3])
def test_quadratic_blocks_by_count_match_the_dense_blocks(q):
    """The blocks B_j' M B_j of each level's q columns, from the pairs of nonzeros the
    level's columns share (rows missing from some of its columns included), equal the
    dense product's diagonal blocks."""
    from estimators.mixed._deviance import level_patterns, quadratic_blocks_by_count

    rng = np.random.default_rng(q)
    n_rows, levels = 40, 25
    B = sp.random(n_rows, levels * q, density=0.15, random_state=rng, format="csc")
    A = rng.normal(size=(n_rows, n_rows))
    M = A @ A.T
    dense = B.toarray()
    expected = np.stack(
        [dense[:, j * q : (j + 1) * q].T @ M @ dense[:, j * q : (j + 1) * q] for j in range(levels)]
    )
    for max_elements in (2_000_000, 30):  # batched, and one group at a time in row chunks
        blocks = quadratic_blocks_by_count(*level_patterns(B, q), M, max_elements=max_elements)
        np.testing.assert_allclose(blocks, expected, rtol=1e-12, atol=1e-10)


def test_fill_upper_from_lower_gives_the_symmetric_matrix():
    from estimators.mixed._deviance import fill_upper_from_lower

    M = np.random.default_rng(1).normal(size=(23, 23))
    expected = np.tril(M) + np.tril(M, -1).T
    fill_upper_from_lower(M, block=5)
    np.testing.assert_array_equal(M, expected)
