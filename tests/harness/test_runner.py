import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest
import yaml

from estimators import LogisticFixedEffects, PooledOLS
from harness.config import parse_config
from harness.jobs import all_jobs, expand
from harness.report import render_report
from harness.runner import predicted_mean, run_job, run_sweep
from harness.splits import Fold
from harness.store import ResultStore
from simulators import simulate as simulate_online


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
    # A fit this small may reuse memory the worker already holds: an increase of 0 is real.
    assert row["fit_seconds"] > 0 and row["peak_memory_mb"] >= 0
    assert row["peak_rss_mb"] > row["peak_memory_mb"] and row["memory_measure"] == "vmhwm_reset"
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
    for section in (
        "Leaderboard",
        "Plots",
        "Failures, skipped jobs and warnings",
        "Reproducibility",
    ):
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


def test_temporal_and_fresh_draw_splits_with_every_kind_of_metric(tiny_config_text, tmp_path):
    config = _config(
        tiny_config_text,
        repeats=1,
        scenarios=[
            {"simulator": "online_services", "params": {"n_users": 60, "n_items": 8}},
        ],
        splits=[
            {"scheme": "temporal", "cut": [0.7, 0.85], "gap": 1},
            {"scheme": "fresh_draw", "draws": 2},
        ],
        estimators=["pooled_ols", "mixed_lm", "fixed_effects"],
        metrics=["rmse", "nlpd", "coverage90", "crps", "log_loss", "vc_error", "effect_corr"],
    )
    result = run_sweep(config, tmp_path, progress=False)
    assert result.n_failed == 0
    table = pl.read_parquet(tmp_path / "results.parquet")
    assert table.height == 3 * 3
    fresh = table.filter(pl.col("split_scheme") == "fresh_draw")
    mixed = fresh.filter(pl.col("estimator") == "mixed_lm").to_dicts()[0]
    # Fit on every row, tested on two new draws of the same users.
    assert mixed["n_train"] == mixed["n_rows"] and mixed["n_test"] > mixed["n_rows"]
    assert mixed["test_train_ratio"] == 0.0
    assert 0.0 < mixed["nlpd"] < 3.0 and 0.7 < mixed["coverage90"] <= 1.0
    assert 0.0 < mixed["crps"] < mixed["rmse"]
    assert np.isnan(mixed["log_loss"])  # gaussian data: binary metrics do not apply
    assert mixed["vc_error"] < 0.6 and mixed["effect_corr"] > 0.5
    assert mixed["sd_true.user"] == 0.5 and mixed["sd_est.user"] > 0
    # Only the mixed model gives a predictive sd or variance components.
    ols = fresh.filter(pl.col("estimator") == "pooled_ols").to_dicts()[0]
    assert np.isnan(ols["nlpd"]) and np.isnan(ols["vc_error"]) and np.isnan(ols["effect_corr"])
    # The solver the mixed model chose is recorded; models with one have none.
    assert mixed["solver"] == "exact" and ols["solver"] == ""
    fixed = fresh.filter(pl.col("estimator") == "fixed_effects").to_dicts()[0]
    assert fixed["effect_corr"] > 0.3  # per-level effects compared with the truth
    # Breakdowns: seen/unseen and activity buckets add up to the test rows.
    temporal = table.filter(
        (pl.col("split_scheme") == "temporal") & (pl.col("estimator") == "mixed_lm")
    ).to_dicts()
    assert len(temporal) == 2
    for row in temporal:
        assert row["n_test@seen"] + row["n_test@unseen"] == row["n_test"]
        buckets = [key for key in row if key.startswith("n_test@train_rows=")]
        assert sum(row[key] for key in buckets) == row["n_test"]
        assert np.isfinite(row["rmse@seen"])


def test_binary_metrics_on_binomial_data(tiny_config_text, tmp_path):
    config = _config(
        tiny_config_text,
        repeats=1,
        scenarios=[
            {"simulator": "online_services", "params": {"n_users": 80, "family": "binomial"}}
        ],
        splits=[{"scheme": "seen_units", "folds": 2}],
        estimators=["logistic_ridge", "hist_gbm_classifier"],
        metrics=["log_loss", "auc", "brier", "rmse"],
        baseline="logistic_ridge",
    )
    run_sweep(config, tmp_path, progress=False)
    table = pl.read_parquet(tmp_path / "results.parquet")
    assert set(table["status"]) == {"ok"}
    assert table["log_loss"].is_between(0.2, 1.0).all()
    assert table["auc"].is_between(0.5, 1.0).all()
    np.testing.assert_allclose(table["brier"].to_numpy(), table["rmse"].to_numpy() ** 2)


def test_a_job_over_the_time_limit_fails_and_the_sweep_goes_on(tiny_config_text, tmp_path):
    config = _config(
        tiny_config_text,
        repeats=1,
        scenarios=[{"simulator": "online_services", "params": {"n_users": 60}}],
        splits=[{"scheme": "random", "folds": 2}],
        estimators=["pooled_ols", {"name": "hist_gbm", "params": {"max_iter": 100000}}],
        time_limit=1.5,
    )
    result = run_sweep(config, tmp_path, progress=False)
    table = pl.read_parquet(tmp_path / "results.parquet")
    slow = table.filter(pl.col("estimator_name") == "hist_gbm")
    assert result.n_failed == 2
    assert set(slow["error_type"]) == {"JobTimeout"}
    assert "time limit of 1.5 s" in slow["error"][0]
    assert set(table.filter(pl.col("estimator") == "pooled_ols")["status"]) == {"ok"}


def test_changed_estimator_code_reruns_only_its_jobs(small_config, tmp_path, monkeypatch):
    import harness.jobs

    run_sweep(small_config, tmp_path, progress=False)
    real = harness.jobs.code_version

    def edited(estimator, simulator):
        return "edited" if estimator == "fixed_effects" else real(estimator, simulator)

    monkeypatch.setattr(harness.jobs, "code_version", edited)
    again = run_sweep(small_config, tmp_path, progress=False)
    assert again.n_run == 18  # fixed_effects' jobs: 2 scenarios x 9 folds
    table = pl.read_parquet(tmp_path / "results.parquet")
    assert set(table.filter(pl.col("estimator") == "fixed_effects")["code_version"]) == {"edited"}


def test_code_version_follows_the_modules_an_estimator_uses():
    from harness.jobs import _module_closure

    modules = _module_closure("estimators.mixed._lmm")
    assert {"estimators.mixed._deviance", "estimators._columns"} <= modules
    assert "estimators._trees" not in modules


def test_code_version_follows_family_variants_and_partial_factories(monkeypatch):
    import harness.jobs

    read = []
    real = harness.jobs._module_closure
    monkeypatch.setattr(
        harness.jobs, "_module_closure", lambda name: read.append(name) or real(name)
    )
    harness.jobs.code_version.cache_clear()
    harness.jobs.code_version("ridge_onehot", "online_services")
    # ridge_onehot builds LogisticRidge (estimators._glm) and PoissonRidge for binary and
    # count outcomes; their penalty search lives in estimators._tuning.
    assert {"estimators._shrinkage", "estimators._glm", "estimators._poisson"} <= set(read)
    assert "estimators._tuning" in real("estimators._glm")
    read.clear()
    harness.jobs.code_version("mixed_glm_nb", "online_services")  # a functools.partial
    assert "estimators.mixed._glmm" in read and "functools" not in read
    harness.jobs.code_version.cache_clear()


def test_dask_local_cluster_gives_the_same_results(small_config, tmp_path):
    pytest.importorskip("dask.distributed")
    run_sweep(small_config, tmp_path / "loky", n_jobs=1, progress=False)
    run_sweep(small_config, tmp_path / "dask", n_jobs=2, progress=False, backend="dask")
    columns = ["job_id", "rmse", "mae", "r2", "dataset_hash"]
    loky = pl.read_parquet(tmp_path / "loky" / "results.parquet").select(columns).sort("job_id")
    dask = pl.read_parquet(tmp_path / "dask" / "results.parquet").select(columns).sort("job_id")
    assert loky.equals(dask)


def test_a_sweep_killed_mid_way_resumes_without_loss_or_duplicates(small_config, tmp_path):
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(small_config.source)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "harness.cli", "run", str(config_path), "--out", str(out)]
    process = subprocess.Popen([*command, "--quiet"], start_new_session=True)
    rows = out / "rows"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(rows.glob("*.parquet"))) < 20:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the runner and its workers, without warning
    process.wait()
    done_before = len(list(rows.glob("*.parquet")))
    assert 20 <= done_before < 90
    assert not (out / "results.parquet").exists()
    subprocess.run([*command, "--quiet"], check=True, capture_output=True)
    table = pl.read_parquet(out / "results.parquet")
    jobs = all_jobs(expand(small_config))
    assert sorted(table["job_id"]) == sorted(job.job_id for job in jobs)  # each exactly once
    assert table["job_id"].n_unique() == table.height == 90
    assert set(table["status"]) == {"ok"}
    assert not list(rows.glob(".*.tmp"))  # no temporary file left behind


def test_two_scenarios_of_one_simulator_get_two_leaderboards(tiny_config_text, tmp_path):
    """Two unswept scenarios of one simulator used to be pooled under its name."""
    scenarios = [
        {"simulator": "online_services", "label": "linear", "params": {"n_users": 60}},
        {
            "simulator": "online_services",
            "label": "nonlinear",
            "params": {"n_users": 60, "nonlinear": {"strength": 1.0}},
        },
    ]
    config = _config(
        tiny_config_text,
        repeats=1,
        scenarios=scenarios,
        splits=[{"scheme": "seen_units", "folds": 2}],
        estimators=["pooled_ols", "group_mean"],
    )
    run_sweep(config, tmp_path, progress=False)
    table = pl.read_parquet(tmp_path / "results.parquet")
    assert sorted(set(table["scenario"])) == ["linear", "nonlinear"]
    assert set(table["regime"]) == {"linear", "nonlinear"} and set(table["family"]) == {"gaussian"}
    html = render_report(tmp_path).read_text()
    board = pl.read_csv(tmp_path / "comparison.csv")
    # A leaderboard per scenario, each over its own 2 folds, not one over 4.
    assert sorted(board["scenario"].unique()) == ["linear", "nonlinear"]
    assert set(board["n"]) == {2}
    assert html.count('<table class="board">') == 2
    assert "<h3>linear · seen_units</h3>" in html and "<h3>nonlinear · seen_units</h3>" in html


def test_an_estimators_warnings_are_kept_in_its_row_and_shown(tiny_config_text, tmp_path):
    config = _config(
        tiny_config_text,
        repeats=1,
        scenarios=[{"simulator": "online_services", "params": {"n_users": 60}}],
        splits=[{"scheme": "seen_units", "folds": 2}],
        # One alternation cannot meet a 1e-12 tolerance: a ConvergenceWarning.
        estimators=[
            "pooled_ols",
            {"name": "mixed_boosting", "params": {"max_em_iter": 1, "tol": 1e-12, "max_iter": 5}},
        ],
    )
    run_sweep(config, tmp_path, progress=False)
    table = pl.read_parquet(tmp_path / "results.parquet")
    warned = table.filter(pl.col("estimator") == "mixed_boosting")["warnings"].to_list()
    assert all(text and "Warning: " in text for text in warned)
    assert table.filter(pl.col("estimator") == "pooled_ols")["warnings"].null_count() == 2
    html = render_report(tmp_path).read_text()
    assert "Warnings of successful jobs" in html and html.count(warned[0][:40]) >= 1


def _weighted_file_config(tmp_path, estimator_names):
    """A file data set with an integer weights column, and a config over it."""
    data = simulate_online("online_services", seed=5, n_users=40, n_items=5)
    weights = np.random.default_rng(0).integers(0, 4, data.n_rows).astype(float)
    path = tmp_path / "weighted.parquet"
    pl.from_pandas(data.frame.assign(w=weights)).write_parquet(path)
    params = {
        "path": str(path),
        "target": data.target,
        "groups": list(data.groups[:1]),
        "features": list(data.features),
        "weights": "w",
    }
    config = parse_config(
        yaml.safe_dump(
            {
                "name": "weighted",
                "scenarios": [{"simulator": "file", "params": params}],
                "splits": [{"scheme": "random", "folds": 2}],
                "estimators": estimator_names,
                "metrics": ["rmse", "r2"],
            },
            sort_keys=False,
        )
    )
    return config, simulate_online("file", **params)


def test_weights_reach_fit_and_metrics_and_the_row(tmp_path):
    config, data = _weighted_file_config(tmp_path, ["pooled_ols", "statsmodels_mixedlm"])
    jobs = {job.estimator.name: job for job in all_jobs(expand(config)) if job.fold == 0}
    n = data.n_rows
    fold = Fold(train=np.arange(0, n, 2), test=np.arange(1, n, 2), unit_train_rows=None)
    row = run_job(jobs["pooled_ols"], data, fold, ("rmse", "r2"), "weighted")
    assert row["status"] == "ok" and row["weights"] == "w"
    weight = data.sample_weight
    model = PooledOLS(feature_cols=list(data.features))
    model.fit(data.X.iloc[fold.train], data.y.iloc[fold.train], sample_weight=weight[fold.train])
    error = data.y.to_numpy()[fold.test] - model.predict(data.X.iloc[fold.test])
    # The weighted RMSE is the RMSE of the test rows repeated by their weights.
    repeated = np.repeat(error, weight[fold.test].astype(int))
    assert row["rmse"] == pytest.approx(np.sqrt(np.mean(repeated**2)), rel=1e-10)
    # A model whose fit takes no weights is skipped with the reason, not fitted unweighted.
    skipped = run_job(jobs["statsmodels_mixedlm"], data, fold, ("rmse",), "weighted")
    assert skipped["status"] == "skipped"
    assert (
        "takes no sample_weight and the data set has row weights (column 'w')" in (skipped["error"])
    )


def test_binary_models_are_scored_from_predict_proba():
    """The runner scores a classifier's probability of the outcome 1, whichever column
    of predict_proba holds it, and any other model's predict."""
    data = simulate_online("online_services", seed=2, n_users=50, n_items=5, family="binomial")
    X, y = data.X, data.y.to_numpy()
    model = LogisticFixedEffects(feature_cols=list(data.features), group_cols=["user"])
    model.fit(X, y)
    np.testing.assert_array_equal(predicted_mean(model, X), model.predict_proba(X)[:, 1])
    assert set(np.unique(model.predict(X))) <= {0, 1}
    flipped = LogisticFixedEffects(feature_cols=list(data.features), group_cols=["user"])
    flipped.fit(X, np.where(y == 1, 1, 2))  # classes_ [1, 2]: the outcome 1 comes first
    np.testing.assert_allclose(predicted_mean(flipped, X), model.predict_proba(X)[:, 1], atol=1e-4)
    ridge = PooledOLS(feature_cols=list(data.features)).fit(X, y)
    np.testing.assert_array_equal(predicted_mean(ridge, X), ridge.predict(X))
    with pytest.raises(ValueError, match=r"classes_ \['no', 'yes'\] do not include the outcome 1"):
        predicted_mean(model.fit(X, np.where(y == 1, "yes", "no")), X)
