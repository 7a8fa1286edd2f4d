from pathlib import Path

import yaml

from harness.cli import main


def _write(tmp_path, text, **changes) -> Path:
    raw = yaml.safe_load(text)
    raw.update(changes)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_list_names_every_component(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in (
        "online_services",
        "pooled_ols",
        "fixed_effects",
        "group_mean",
        "hist_gbm",
        "seen_units",
        "unseen_units",
        "rmse",
    ):
        assert name in out


def test_validate_counts_jobs(tmp_path, tiny_config_text, capsys):
    assert main(["validate", str(_write(tmp_path, tiny_config_text))]) == 0
    assert "tiny: 180 jobs" in capsys.readouterr().out


def test_run_writes_the_report_and_prints_its_path(tmp_path, tiny_config_text, capsys):
    config = _write(tmp_path, tiny_config_text, repeats=1, estimators=["pooled_ols", "group_mean"])
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "36 jobs: 36 run, 0 reused, 0 failed" in printed
    assert f"Report: {(out / 'index.html').resolve()}" in printed
    assert (out / "run.json").exists()
    assert main(["report", str(out)]) == 0


def test_failed_jobs_give_a_non_zero_exit_unless_allowed(tmp_path, tiny_config_text):
    config = _write(
        tmp_path,
        tiny_config_text,
        repeats=1,
        estimators=[{"name": "hist_gbm", "params": {"learning_rate": -1.0}}],
        baseline="hist_gbm",
    )
    args = ["run", str(config), "--out", str(tmp_path / "out"), "--quiet"]
    assert main(args) == 1
    assert main([*args, "--allow-failures"]) == 0


def test_config_errors_exit_2_with_the_path(tmp_path, tiny_config_text, capsys):
    config = _write(tmp_path, tiny_config_text, estimators=["pooled_ol"])
    assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    assert "estimators[0].name: unknown estimator 'pooled_ol'" in capsys.readouterr().err


def test_validate_refuses_two_scenarios_with_one_name(tmp_path, tiny_config_text, capsys):
    scenarios = [{"simulator": "online_services"}, {"simulator": "online_services"}]
    path = _write(tmp_path, tiny_config_text, scenarios=scenarios)
    assert main(["validate", str(path)]) == 2
    error = capsys.readouterr().err
    assert "scenarios[1].label" in error and "already called 'online_services'" in error
