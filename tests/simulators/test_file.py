import pandas as pd
import polars as pl
import pytest

from harness.config import ConfigError, parse_config
from simulators import simulate


@pytest.fixture
def table():
    return pl.DataFrame(
        {
            "clicks": [0.0, 1.0, 1.0, 0.0, 1.0, 0.0],
            "user": ["a", "a", "b", "b", "c", "c"],
            "region": ["n", "n", "s", "s", "s", "s"],
            "x": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            "day": [1, 2, 3, 4, 5, 6],
            "label": ["p", "q", "p", "q", "p", "q"],
        }
    )


def _roles(path, **changes):
    roles = {
        "path": str(path),
        "target": "clicks",
        "groups": ["user", "region"],
        "features": ["x"],
        "time": "day",
        "family": "binomial",
        "nesting": {"user": "region"},
    }
    return roles | changes


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_reads_csv_and_parquet_with_roles(tmp_path, table, suffix):
    path = tmp_path / f"events{suffix}"
    (table.write_csv if suffix == ".csv" else table.write_parquet)(path)
    data = simulate("file", **_roles(path))
    assert data.family == "binomial" and data.target == "clicks"
    assert data.groups == ("user", "region") and data.features == ("x",)
    assert data.time == "day" and dict(data.nesting) == {"user": "region"}
    assert list(data.frame.columns) == ["clicks", "user", "region", "x", "day"]
    pd.testing.assert_series_equal(data.y, table["clicks"].to_pandas(), check_names=False)
    assert data.meta["hash"] == simulate("file", **_roles(path)).meta["hash"]


def test_clear_errors(tmp_path, table):
    path = tmp_path / "events.csv"
    table.write_csv(path)
    cases = [
        (_roles(tmp_path / "missing.csv"), "params.path: file .* not found"),
        (_roles(tmp_path / "events.xlsx"), "neither .csv nor .parquet"),
        (_roles(path, target="click"), "params.target: column 'click' not in events.csv"),
        (_roles(path, groups=["user", "country"]), "params.groups: column 'country' not in"),
        (_roles(path, features=["label"]), "params.features: column 'label' is String"),
        (_roles(path, family="binomial", target="day"), "binomial column 'day' has values"),
        (_roles(path, family="normal"), "params.family: expected one of"),
    ]
    for params, message in cases:
        with pytest.raises(ValueError, match=message):
            simulate("file", **params)
    empty = tmp_path / "empty.csv"
    table.head(0).write_csv(empty)
    with pytest.raises(ValueError, match="has no rows"):
        simulate("file", **_roles(empty))
    blank = tmp_path / "blank.csv"
    blank.write_text("")
    with pytest.raises(ValueError, match="cannot read"):
        simulate("file", **_roles(blank))
    holes = tmp_path / "holes.csv"
    table.with_columns(
        pl.when(pl.col("day") == 3).then(None).otherwise(pl.col("x")).alias("x")
    ).write_csv(holes)
    with pytest.raises(ValueError, match="column 'x' of holes.csv has 1 missing"):
        simulate("file", **_roles(holes))


def test_a_config_with_a_bad_column_fails_validation(tmp_path, table):
    path = tmp_path / "events.csv"
    table.write_csv(path)
    text = f"""
name: mine
scenarios:
  - simulator: file
    params: {{path: "{path}", target: clicks, groups: [usr], features: [x]}}
splits: [{{scheme: random}}]
estimators: [pooled_ols]
"""
    with pytest.raises(ConfigError, match="scenarios\\[0\\].params.groups: column 'usr' not in"):
        parse_config(text)


def test_a_weights_column_is_a_role(tmp_path, table):
    path = tmp_path / "events.csv"
    table.with_columns(impressions=pl.Series([1.0, 2.0, 0.0, 1.0, 3.0, 1.0])).write_csv(path)
    data = simulate("file", **_roles(path, weights="impressions"))
    assert data.weights == "impressions"
    assert "impressions" not in data.X.columns  # a weight is not a covariate
    assert data.sample_weight.tolist() == [1.0, 2.0, 0.0, 1.0, 3.0, 1.0]
    assert simulate("file", **_roles(path)).sample_weight is None


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([1.0, -1.0, 1.0, 1.0, 1.0, 1.0], "weights: column 'w' has 1 negative value"),
        ([0.0] * 6, "weights: column 'w' is zero in every row"),
        ([1.0, float("inf"), 1.0, 1.0, 1.0, 1.0], "weights: column 'w' has 1 missing or infinite"),
        (["a", "b", "c", "d", "e", "f"], "params.weights: column 'w' is String, not numeric"),
    ],
)
def test_weights_are_checked(tmp_path, table, weights, message):
    path = tmp_path / "events.parquet"
    table.with_columns(w=pl.Series(weights)).write_parquet(path)
    with pytest.raises(ValueError, match=message):
        simulate("file", **_roles(path, weights="w"))


def test_weights_naming_a_missing_column_fail_the_config(tmp_path, table):
    path = tmp_path / "events.csv"
    table.write_csv(path)
    with pytest.raises(ValueError, match="params.weights: column 'w' not in events.csv"):
        simulate("file", **_roles(path, weights="w"))
