"""Bad input and faults in the mixed models: refused with a message that names the cause,
or handled by a documented rule; never a silent wrong answer or a numpy traceback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from estimators import GroupMean, MixedBoosting, MixedGLM, MixedLM
from harness.config import EstimatorSpec
from harness.runner import build_estimator
from simulators import Dataset


def grouped(n_groups: int = 20, per_group: int = 10, seed: int = 0) -> pd.DataFrame:
    """Gaussian data with a random intercept per group ``g`` (integer ids), a covariate
    ``x`` and a three-level categorical column ``c`` with an effect."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per_group)
    n = g.size
    data = pd.DataFrame({"g": g, "x": rng.normal(size=n), "c": rng.choice(["a", "b", "c"], n)})
    shift = data["c"].map({"a": 0.0, "b": 1.0, "c": -2.0})
    data["y"] = 1 + data["x"] + shift + rng.normal(size=n_groups)[g] + rng.normal(size=n)
    return data


# -- 2: an unseen level of a fixed-effect categorical column -------------------------
def test_unseen_fixed_effect_level_follows_new_levels():
    data = grouped()
    new = data.head(4).assign(c="zzz")
    strict = MixedLM("y ~ x + c + (1 | g)", new_levels="error").fit(data)
    with pytest.raises(ValueError, match=r"column 'c' has 1 level\(s\) not seen in fitting"):
        strict.predict(new)

    model = MixedLM("y ~ x + c + (1 | g)").fit(data)
    with pytest.warns(UserWarning, match="column 'c'.*averaged over the levels seen"):
        prediction, std = model.predict(new, return_std=True)
    # The documented population rule: the average over the fitted levels, weighted by
    # their rows, never the reference level.
    shares = data["c"].value_counts(normalize=True)
    expected = sum(share * model.predict(new.assign(c=level)) for level, share in shares.items())
    np.testing.assert_allclose(prediction, expected)
    assert np.all(np.abs(prediction - model.predict(new.assign(c="a"))) > 1e-3)
    assert np.all(np.isfinite(std))
    # Rows with seen levels are untouched by a neighbour's unseen one.
    mixed = pd.concat([data.head(3), new.head(1)])
    with pytest.warns(UserWarning):
        np.testing.assert_allclose(model.predict(mixed)[:3], model.predict(data.head(3)))

    glm_data = data.assign(click=(data["y"] > data["y"].median()).astype(int))
    glm = MixedGLM("click ~ x + c + (1 | g)", new_levels="error").fit(glm_data)
    with pytest.raises(ValueError, match="column 'c'"):
        glm.predict(new)


# -- 3: a grouping factor with one row per level ------------------------------------
def test_one_row_per_level_is_refused_as_lmer_refuses_it():
    data = grouped(n_groups=200, per_group=1)
    with pytest.raises(
        ValueError,
        match=r"number of levels of each grouping factor must be < number of observations "
        r"\(problems: g\)",
    ):
        MixedLM("y ~ x + (1 | g)").fit(data)
    # glmer allows it (no residual variance to confuse it with); so does MixedGLM.
    clicks = data.assign(click=(data["y"] > 0).astype(int))
    assert MixedGLM("click ~ x + (1 | g)").fit(clicks).n_levels_ == {"g": 200}


# -- 5: interaction levels are told apart by value, not by text joined with ':' -------
def test_interaction_levels_come_from_the_values_not_joined_text():
    rng = np.random.default_rng(5)
    n = 400
    data = pd.DataFrame(
        {
            "a": np.where(np.arange(n) % 2 == 0, "1:2", "1"),
            "b": np.where(np.arange(n) % 2 == 0, "3", "2:3"),
            "h": np.arange(n) % 8,
            "x": rng.normal(size=n),
        }
    )
    # The two combinations (joined, both '1:2:3') differ by 3.
    data["y"] = 3.0 * (np.arange(n) % 2) + rng.normal(size=8)[data["h"]] + rng.normal(size=n)
    data = pd.concat([data, data.assign(a="0", b="0", y=data["y"] + 1.5)], ignore_index=True)
    model = MixedLM("y ~ x + (1 | a:b) + (1 | h)").fit(data)
    assert model.n_levels_["a:b"] == 3
    modes = model.ranef_["a:b"]["(Intercept)"]
    assert list(modes.index).count("1:2:3") == 2  # lme4's label, two levels
    # The same model as with ids whose joined text is unambiguous.
    relabelled = data.assign(a=data["a"].replace({"1:2": "p"}), b=data["b"].replace({"2:3": "q"}))
    reference = MixedLM("y ~ x + (1 | a:b) + (1 | h)").fit(relabelled)
    assert model.objective_ == pytest.approx(reference.objective_, rel=1e-9)
    np.testing.assert_allclose(model.predict(data), reference.predict(relabelled), rtol=1e-6)
    first, second = model.predict(data.iloc[[0, 1]])
    assert second > first + 0.5


# -- 6: ids matched by value across numbers and text -----------------------------------
def test_ids_fitted_as_numbers_match_when_given_as_text():
    data = grouped()
    as_text = data.assign(g=data["g"].astype(str))
    model = MixedLM("y ~ x + (1 | g)", new_levels="error").fit(data)
    np.testing.assert_allclose(model.predict(as_text), model.predict(data))
    # ... and the other way round, with ids written by a CSV file as '3' or 3.0.
    text_model = MixedLM("y ~ x + (1 | g)", new_levels="error").fit(as_text)
    np.testing.assert_allclose(text_model.predict(data), text_model.predict(as_text))
    floats = data.assign(g=data["g"].astype(float))
    np.testing.assert_allclose(text_model.predict(floats), text_model.predict(as_text))
    # An id that is no fitted level is still unseen.
    unseen = as_text.head(2).assign(g="nobody")
    with pytest.raises(ValueError, match="group column 'g': 1 level"):
        model.predict(unseen)

    clicks = data.assign(click=(data["y"] > data["y"].median()).astype(int))
    glm = MixedGLM("click ~ x + (1 | g)").fit(clicks)
    np.testing.assert_allclose(glm.predict(as_text), glm.predict(data))
    # update: text ids join the fitted integer levels, and new ones are added as numbers.
    later = as_text.assign(g=(data["g"] + 15).astype(str))  # 15..19 seen, 20..34 new
    updated = MixedLM("y ~ x + (1 | g)").fit(data).update(later)
    assert updated.n_levels_ == {"g": 35}
    assert pd.api.types.is_integer_dtype(updated.ranef_["g"].index)

    means = GroupMean(group_col="g").fit(data, data["y"])
    np.testing.assert_allclose(means.predict(as_text), means.predict(data))


# -- 8: a fixed part that saturates the data ---------------------------------------------
def test_a_fixed_part_with_a_column_per_row_is_refused_naming_the_column():
    data = grouped()
    data["rid"] = np.arange(len(data)).astype(str)  # a numeric column read as text
    for model in (MixedLM("y ~ rid + (1 | g)"), MixedLM("y ~ rid + (1 | g)", reml=False)):
        with pytest.raises(ValueError, match=r"column 'rid' is categorical with 200 levels"):
            model.fit(data)
    with pytest.raises(ValueError, match="response column 'y' is constant"):
        MixedLM("y ~ x + (1 | g)").fit(data.assign(y=5.0))


# -- 9: a binary outcome with no events, or weights all 0 ---------------------------------
def test_mixed_glm_refuses_a_constant_outcome_or_zero_weights_clearly():
    data = grouped().assign(click=0, w=0.0)
    with pytest.raises(ValueError, match="response column 'click' is constant"):
        MixedGLM("click ~ x + (1 | g)").fit(data)
    with pytest.raises(ValueError, match="response column 'click' is constant"):
        MixedGLM("click ~ x + (1 | g)", family="poisson").fit(data)
    events = data.assign(click=np.arange(len(data)) % 2)
    with pytest.raises(ValueError, match="weights: column 'w' is 0 in every row"):
        MixedGLM("click ~ x + (1 | g)", weights="w").fit(events)


# -- 10: column names that are not bare identifiers ------------------------------------
def test_backticks_name_any_column_in_fixed_and_random_parts():
    data = grouped()
    odd = data.rename(columns={"g": "user id", "x": "user-x", "y": "click rate"})
    plain = MixedLM("y ~ x + (1 + x | g)").fit(data)
    quoted = MixedLM("`click rate` ~ `user-x` + (1 + `user-x` | `user id`)").fit(odd)
    assert quoted.objective_ == pytest.approx(plain.objective_, rel=1e-9)
    np.testing.assert_allclose(quoted.coef_.to_numpy(), plain.coef_.to_numpy(), rtol=1e-6)
    assert list(quoted.ranef_) == ["user id"]
    np.testing.assert_allclose(quoted.predict(odd), plain.predict(data), rtol=1e-6)


def test_roles_filled_from_a_file_quote_such_names():
    frame = grouped().rename(columns={"g": "user id", "x": "user-x", "y": "click rate"})
    dataset = Dataset(frame=frame, target="click rate", features=("user-x",), groups=("user id",))
    spec = EstimatorSpec(name="mixed_lm", params={}, label="mixed_lm")
    estimator, params = build_estimator(spec, dataset, seed=0)
    assert params["formula"] == "`click rate` ~ `user-x` + (1 | `user id`)"
    estimator.fit(frame)
    assert estimator.n_levels_ == {"user id": 20}


# -- 11: mixed boosting's errors name the user's columns ---------------------------------
def test_mixed_boosting_errors_name_the_users_column():
    data = grouped().rename(columns={"g": "user"})
    with_missing = data.astype({"user": float})
    with_missing.loc[3, "user"] = np.nan
    boosting = MixedBoosting(feature_cols=["x"], group_cols=["user"], max_iter=5)
    with pytest.raises(ValueError, match="column 'user' has 1 missing value"):
        boosting.fit(with_missing, with_missing["y"])
    boosting.fit(data, data["y"])
    with pytest.raises(ValueError, match="column 'user' has 1 missing value"):
        boosting.predict(with_missing)
    one_per_row = grouped(n_groups=200, per_group=1).rename(columns={"g": "user"})
    with pytest.raises(ValueError, match=r"problems: user\)") as error:
        boosting.fit(one_per_row, one_per_row["y"])
    assert "g0" not in str(error.value)


# -- and no traceback from deep inside pandas or numpy -----------------------------------
def test_a_group_column_of_mixed_types_is_refused_naming_it():
    data = grouped()
    data["g"] = data["g"].astype(object)
    data.loc[data["g"] == 3, "g"] = "3"  # 3 and '3' would be two levels
    with pytest.raises(ValueError, match=r"group column 'g' holds values of several types"):
        MixedLM("y ~ x + (1 | g)").fit(data)
