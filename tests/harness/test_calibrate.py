import math

import pandas as pd
import pytest
import yaml

from harness.calibrate import Proportion, assess, calibrate, replication_config
from harness.cli import main
from harness.config import parse_config

Z = 1.959963984540054


def _wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson's score interval by its formula."""
    p = k / n
    center = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z / (1 + Z**2 / n) * math.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2))
    return center - half, center + half


def _board(mean_interval, pct_interval, pct=-2.0, mean=1.0) -> pd.DataFrame:
    """A leaderboard of one scenario and split: the baseline and one model on RMSE."""
    common = {"scenario": "s", "split": "seen_units", "primary": "rmse"}
    baseline = common | {
        "estimator": "fixed_effects",
        "rmse": 1.1,
        "rmse_low": 1.0,
        "rmse_high": 1.2,
        "rmse_diff_pct": 0.0,
        "rmse_pct_low": 0.0,
        "rmse_pct_high": 0.0,
    }
    model = common | {
        "estimator": "mixed_lm",
        "rmse": mean,
        "rmse_low": mean_interval[0],
        "rmse_high": mean_interval[1],
        "rmse_diff_pct": pct,
        "rmse_pct_low": pct_interval[0],
        "rmse_pct_high": pct_interval[1],
    }
    return pd.DataFrame([baseline, model])


def test_coverage_counts_the_intervals_holding_the_leave_one_out_target():
    # Every replication estimates 1.0 (difference -2%), so each leave-one-out target is
    # exactly that; 7 of 10 intervals of the mean hold it, 9 of 10 of the difference.
    boards = [
        _board((0.9, 1.1) if r < 7 else (1.01, 1.2), (-3.0, -1.0) if r < 9 else (-1.9, -1.0))
        for r in range(10)
    ]
    result = assess(boards, "fixed_effects", lambda metric: 0.005)
    table = result.table.set_index(["estimator", "quantity"])
    model_mean = table.loc[("mixed_lm", "mean")]
    assert model_mean["covered"] == 7 and model_mean["intervals"] == 10
    assert model_mean["coverage"] == pytest.approx(0.7)
    assert (model_mean["coverage_low"], model_mean["coverage_high"]) == pytest.approx(
        _wilson(7, 10)
    )
    # The baseline's own interval (1.0 to 1.2 around 1.1) holds its target every time;
    # its difference to itself is no quantity.
    assert table.loc[("fixed_effects", "mean"), "covered"] == 10
    assert ("fixed_effects", "difference_pct") not in table.index
    assert table.loc[("mixed_lm", "difference_pct"), "covered"] == 9
    assert (result.means.k, result.means.n) == (17, 20)
    assert (result.differences.k, result.differences.n) == (9, 10)
    assert result.differences.interval == pytest.approx(_wilson(9, 10))


def test_the_target_leaves_the_replication_out():
    # Estimates 1, 2, 3: targets 2.5, 2, 1.5. The intervals [1.9, 2.6] hold the first
    # two targets only; with the replication itself in, the third would hold 2 too.
    boards = [_board((1.9, 2.6), (-3.0, -1.0), mean=mean) for mean in (1.0, 2.0, 3.0)]
    result = assess(boards, "fixed_effects", lambda metric: 0.005)
    rows = result.intervals.query("estimator == 'mixed_lm' and quantity == 'mean'")
    assert list(rows["target"]) == pytest.approx([2.5, 2.0, 1.5])
    assert list(rows["covered"]) == [1.0, 1.0, 0.0]


def test_a_verdict_is_wrong_where_its_target_contradicts_it():
    # The target difference is -2% RMSE: the model is 2% better, beyond a 0.5% margin.
    intervals = [
        (-3.0, -1.0),  # better: right
        (-0.4, 0.4),  # equivalent: wrong, the target lies beyond the margin
        (-3.0, 0.3),  # inconclusive: claims nothing
        (0.6, 1.0),  # worse: wrong
        (-0.8, -0.2),  # small better: right, the target is an improvement
    ]
    boards = [_board((0.9, 1.1), pct) for pct in intervals]
    result = assess(boards, "fixed_effects", lambda metric: 0.005)
    rows = result.intervals.query("quantity == 'difference_pct'")
    assert list(rows["verdict"]) == [
        "better",
        "equivalent",
        "inconclusive",
        "worse",
        "small better",
    ]
    assert (result.wrong_verdicts.k, result.wrong_verdicts.n) == (2, 4)
    assert result.n_verdicts == 5
    assert result.table.set_index("quantity").loc["difference_pct", "wrong_verdicts"] == 2


def test_a_proportion_without_trials_has_no_rate():
    empty = Proportion(0, 0)
    assert math.isnan(empty.rate) and all(math.isnan(bound) for bound in empty.interval)


TINY = """
name: tiny-calibration
seed: 5
repeats: 1
scenarios:
  - simulator: online_services
    params: {n_users: 60, n_items: 8, events_per_user: {mean: 6}}
splits:
  - {scheme: seen_units, folds: 2}
estimators: [pooled_ols, group_mean]
metrics: [rmse]
baseline: pooled_ols
"""


def test_replications_differ_only_by_their_seed():
    config = parse_config(TINY)
    first, second = replication_config(config, 0), replication_config(config, 1)
    assert first.seed != second.seed != config.seed
    assert parse_config(first.source).seed == first.seed
    assert first.scenarios == config.scenarios and first.estimators == config.estimators


def test_a_tiny_calibration_runs_resumes_and_writes_its_table(tmp_path):
    config = parse_config(TINY)
    result = calibrate(config, tmp_path, replications=4, n_jobs=1, progress=False)
    assert result.n_jobs_total == result.n_run == 4 * 2 * 2 and result.n_failed == 0
    table = pd.read_csv(tmp_path / "calibration.csv")
    # One scenario and split: two means and one difference (group_mean to pooled_ols).
    assert len(table) == 3 and set(table["quantity"]) == {"mean", "difference_pct"}
    assert table["coverage"].between(0, 1).all() and (table["intervals"] == 4).all()
    assert (tmp_path / "calibration.md").read_text().startswith("# Calibration of")
    assert len(list(tmp_path.glob("replication-*/results.parquet"))) == 4

    again = calibrate(config, tmp_path, replications=4, n_jobs=1, progress=False)
    assert again.n_run == 0
    pd.testing.assert_frame_equal(again.assessment.table, result.assessment.table)


def test_the_cli_refuses_data_that_cannot_be_redrawn(tmp_path, capsys):
    data = tmp_path / "data.csv"
    data.write_text("y,user\n1.0,a\n2.0,b\n")
    raw = yaml.safe_load(TINY)
    raw["scenarios"] = [
        {"simulator": "file", "params": {"path": str(data), "target": "y", "groups": ["user"]}}
    ]
    path = tmp_path / "file.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["calibrate", str(path), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "'file' cannot redraw its data" in error
    assert not (tmp_path / "out").exists()


def test_the_cli_refuses_a_single_replication(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    assert main(["calibrate", str(path), "--replications", "1", "--out", str(tmp_path)]) == 2
    assert "at least 2" in capsys.readouterr().err
