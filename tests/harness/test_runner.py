import json

import numpy as np
import polars as pl
import pytest
import yaml

from harness.config import parse_config
from harness.jobs import all_jobs, expand
from harness.report import render_report
from harness.runner import run_sweep
from harness.store import ResultStore


def _config(text, **changes):
    raw = yaml.safe_load(text)
    raw.update(changes)
    return parse_config(yaml.safe_dump(raw, sort_keys=False))


@pytest.fixture
def small_config(tiny_config_text):
    return _config(tiny_config_text, repeats=1)


def test_a_sweep_stores_one_complete_row_per_job(small_config, tmp_path):
    result = run_sweep(small_config, tmp_path, progress=False)
    table = pl.read_parquet(tmp_path / "results.parquet")
    jobs = all_jobs(expand(small_config))
    assert result.n_run == len(jobs) == table.height == 90
    assert sorted(table["job_id"]) == sorted(job.job_id for job in jobs)
    assert set(table["status"]) == {"ok"}
    assert (tmp_path / "results.csv").exists()
    assert len(list((tmp_path / "rows").glob("*.parquet"))) == 90

    row = table.filter(
        (pl.col("estimator") == "fixed_effects")
        & (pl.col("split_scheme") == "unseen_units")
        & (pl.col("fold") == 1)
        & (pl.col("scenario") == "online_services[sd.user=1.0]")
    ).to_dicts()[0]
    assert row["n_train"] + row["n_test"] == row["n_rows"]
    assert row["split"] == "unseen_units[by=user]" and row["split_folds"] == 3
    assert row["sim.sd.user"] == 1.0 and row["sim.n_users"] == 60
    assert json.loads(row["est.group_cols"]) == ["user", "item", "region"]
    assert json.loads(row["est.feature_cols"]) == ["x1", "x2", "x3", "account_age", "treat"]
    assert row["fit_seconds"] > 0 and row["peak_memory_mb"] > 0
    assert 0 < row["rmse"] < 5 and row["mae"] <= row["rmse"]
    gbm = table.filter(pl.col("estimator") == "hist_gbm")
    assert gbm["est.random_state"].null_count() == 0  # derived from the job, recorded


def test_identical_metrics_across_runs_and_worker_counts(small_config, tmp_path):
    run_sweep(small_config, tmp_path / "one", n_jobs=1, progress=False)
    run_sweep(small_config, tmp_path / "two", n_jobs=2, progress=False)
    columns = ["job_id", "rmse", "mae", "r2", "dataset_hash"]
    one = pl.read_parquet(tmp_path / "one" / "results.parquet").select(columns).sort("job_id")
    two = pl.read_parquet(tmp_path / "two" / "results.parquet").select(columns).sort("job_id")
    assert one.equals(two)


def test_rerun_skips_finished_jobs_and_resumes_lost_ones(small_config, tmp_path):
    run_sweep(small_config, tmp_path, progress=False)
    before = pl.read_parquet(tmp_path / "results.parquet").sort("job_id")
    again = run_sweep(small_config, tmp_path, progress=False)
    assert again.n_run == 0 and again.n_reused == 90
    lost = sorted((tmp_path / "rows").glob("*.parquet"))[:10]
    for path in lost:
        path.unlink()
    resumed = run_sweep(small_config, tmp_path, progress=False)
    assert resumed.n_run == 10
    after = pl.read_parquet(tmp_path / "results.parquet").sort("job_id")
    assert after["job_id"].to_list() == before["job_id"].to_list()
    assert after["rmse"].to_list() == before["rmse"].to_list()
    forced = run_sweep(small_config, tmp_path, force=True, progress=False)
    assert forced.n_run == 90


def test_a_failing_job_is_recorded_and_the_rest_finish(tiny_config_text, tmp_path):
    config = _config(
        tiny_config_text,
        repeats=1,
        estimators=[
            "pooled_ols",
            {"name": "hist_gbm", "label": "broken", "params": {"learning_rate": -1.0}},
        ],
    )
    result = run_sweep(config, tmp_path, progress=False)
    table = pl.read_parquet(tmp_path / "results.parquet")
    broken = table.filter(pl.col("estimator") == "broken")
    assert result.n_failed == broken.height == 18
    assert set(broken["status"]) == {"failed"}
    assert broken["error_type"][0] == "InvalidParameterError"
    assert "learning_rate" in broken["error"][0]
    assert set(table.filter(pl.col("estimator") == "pooled_ols")["status"]) == {"ok"}
    # A failed job is retried on the next run; finished ones are not.
    assert run_sweep(config, tmp_path, progress=False).n_run == 18


def test_a_failing_data_set_fails_its_jobs_only(tiny_config_text, tmp_path):
    config = _config(
        tiny_config_text,
        repeats=1,
        splits=[{"scheme": "unseen_units", "folds": 3, "by": "country"}],
    )
    result = run_sweep(config, tmp_path, progress=False)
    table = pl.read_parquet(tmp_path / "results.parquet")
    assert result.n_failed == table.height == 30
    assert "by: 'country' is not a grouping factor" in table["error"][0]


def test_store_writes_atomically_and_replaces_rows(tmp_path):
    store = ResultStore(tmp_path)
    store.write({"job_id": "abc", "status": "failed", "rmse": None})
    store.write({"job_id": "abc", "status": "ok", "rmse": 1.5})
    (tmp_path / "rows" / ".abc.parquet.x.tmp").write_bytes(b"half a row")
    table = store.read()
    assert table.height == 1 and table["rmse"][0] == 1.5
    assert store.finished_ids() == {"abc"}


def test_report_renders_every_section_and_escapes_user_strings(tiny_config_text, tmp_path):
    config = _config(
        tiny_config_text,
        repeats=1,
        estimators=[
            "pooled_ols",
            {"name": "group_mean", "label": "<script>alert(1)</script>"},
            {"name": "hist_gbm", "label": "broken", "params": {"learning_rate": -1.0}},
        ],
    )
    run_sweep(config, tmp_path, progress=False)
    html = render_report(tmp_path).read_text()
    for section in ("Leaderboard", "Plots", "Failures and skipped jobs", "Reproducibility"):
        assert f"<h2>{section}</h2>" in html
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "data:image/png;base64," in html
    assert "InvalidParameterError" in html
    assert "http://" not in html and "https://" not in html
    assert config.hash in html


def test_report_needs_results(tmp_path):
    with pytest.raises(FileNotFoundError, match="run `mixbench run CONFIG` first"):
        render_report(tmp_path)


def test_leaderboard_means_match_the_rows(small_config, tmp_path):
    from harness.compare import leaderboard

    run_sweep(small_config, tmp_path, progress=False)
    table = pl.read_parquet(tmp_path / "results.parquet").to_pandas()
    board = leaderboard(table, ["rmse"], "pooled_ols")
    first = board.iloc[0]
    rows = table[
        (table.scenario == first.scenario)
        & (table.split == first.split)
        & (table.estimator == first.estimator)
    ]
    assert first.rmse == pytest.approx(rows.rmse.mean())
    assert np.isfinite(first.rmse_low) and first.rmse_low < first.rmse < first.rmse_high
