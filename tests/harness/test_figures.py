"""The report's figures on hand-made results: a panel per scenario on its own metric with
only its estimators, the Pareto front, variance components as estimate / truth, the
fit-time legend's orders of growth, dot plots that do not start at zero, and labels that
are text, not mathtext."""

import base64

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from harness import figures
from harness.compare import leaderboard, primary_metrics

METRICS = ["rmse", "log_loss", "coverage90"]
# scenario -> (regime, family, sweep value, true user sd, estimators and their gains)
SCENARIOS = {
    "well_specified[sd.user=0.5]": ("well_specified", "gaussian", 0.5, 0.5),
    "well_specified[sd.user=1]": ("well_specified", "gaussian", 1.0, 1.0),
    "clicks": ("clicks", "binomial", 5.0, 5.0),
}
ESTIMATORS = {
    "gaussian": {"fixed_effects": 0.0, "mixed_lm": -0.1, "pooled_ols": 0.1},
    "binomial": {"fixed_effects": 0.0, "mixed_glm": -0.05},
}
SPLITS = ["seen_units", "temporal"]


def _table(rename: dict[str, str] | None = None) -> pd.DataFrame:
    """Three folds per (scenario, split, estimator); seen_units scores units with 1-2 and
    100+ training rows, temporal scores seen and unseen units."""
    rng = np.random.default_rng(0)
    rows = []
    for scenario, (regime, family, swept, true_sd) in SCENARIOS.items():
        for split in SPLITS:
            for fold in range(3):
                for estimator, gain in ESTIMATORS[family].items():
                    level = (1.0 if family == "gaussian" else 0.6) + gain
                    noise = rng.normal(0, 0.005)
                    row = {
                        "status": "ok",
                        "scenario": scenario,
                        "regime": regime,
                        "family": family,
                        "sim.sd.user": swept,
                        "split": split,
                        "estimator": estimator,
                        "repeat": 0,
                        "fold": fold,
                        "n_train": 800,
                        "n_test": 200,
                        "fit_seconds": 0.1 * (1 + len(estimator)) + 0.01 * fold,
                        "predict_seconds": 0.01,
                        "peak_memory_mb": 100.0,
                        "rmse": (level if family == "gaussian" else 0.45 + gain) + noise,
                        "log_loss": level + noise if family == "binomial" else np.nan,
                        "coverage90": 0.88 + noise if estimator == "mixed_lm" else np.nan,
                        "sd_true.user": true_sd,
                        "sd_est.user": true_sd * (1 + gain) if "mixed" in estimator else np.nan,
                        "sd_true.noise": 1.0 if family == "gaussian" else np.nan,
                        "sd_est.noise": 1.0 if estimator == "mixed_lm" else np.nan,
                    }
                    metric = "rmse" if family == "gaussian" else "log_loss"
                    if split == "seen_units":
                        row[f"{metric}@train_rows=1-2"] = level + 0.2 + noise
                        row[f"{metric}@train_rows=100+"] = level - 0.1 + noise
                    else:
                        row[f"{metric}@seen"] = level + noise
                        row[f"{metric}@unseen"] = level + 0.05 + gain / 2 + noise
                    rows.append(row)
    table = pd.DataFrame(rows)
    if rename:
        table["estimator"] = table["estimator"].replace(rename)
        table["scenario"] = table["scenario"].replace(rename)
    return table


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return _table()


@pytest.fixture(scope="module")
def primary(table) -> dict[str, str]:
    return primary_metrics(table, METRICS)


@pytest.fixture(scope="module")
def board(table, primary) -> pd.DataFrame:
    return leaderboard(table, METRICS, "fixed_effects", primary)


def _panels(figure: Figure) -> list:
    return [axis for axis in figure.axes if axis.get_visible()]


def _legend_texts(figure: Figure) -> list[str]:
    return [text.get_text() for legend in figure.legends for text in legend.get_texts()]


def test_each_scenario_is_a_panel_on_its_own_metric_with_only_its_estimators(board, primary):
    assert primary == {
        "well_specified[sd.user=0.5]": "rmse",
        "well_specified[sd.user=1]": "rmse",
        "clicks": "log_loss",
    }
    figure = figures.leaderboard_plot(board, primary)
    panels = _panels(figure)
    # In the board's order of scenarios.
    assert [axis.get_title() for axis in panels] == list(dict.fromkeys(board["scenario"]))
    for axis in panels:
        family = SCENARIOS[axis.get_title()][1]
        shown = [label.get_text() for label in axis.get_yticklabels()]
        # Only the scenario's estimators, the best (lowest loss) at the top.
        assert shown == sorted(ESTIMATORS[family], key=ESTIMATORS[family].get)
        metric = "rmse" if family == "gaussian" else "log_loss"
        assert axis.get_xlabel() == f"{metric} (lower is better)"
    assert sorted(_legend_texts(figure)) == [f"split: {split}" for split in SPLITS]


def test_a_missing_primary_metric_drops_the_scenario_not_the_figure(board, primary):
    figure = figures.leaderboard_plot(board, {**primary, "clicks": "auc"})
    assert [axis.get_title() for axis in _panels(figure)] == [
        scenario for scenario in dict.fromkeys(board["scenario"]) if scenario != "clicks"
    ]
    assert figures.leaderboard_plot(board, {}) is None


def test_the_pareto_front_keeps_what_nothing_beats_on_both_time_and_accuracy():
    rows = pd.DataFrame(
        {
            "estimator": ["slow_best", "fast_bad", "middle", "dominated", "tie_worse", "no_time"],
            "fit_seconds": [10.0, 0.1, 1.0, 5.0, 1.0, np.nan],
            "rmse": [0.8, 1.2, 0.9, 0.95, 0.92, 0.1],
        }
    )
    assert figures.pareto_front(rows, "rmse") == ["fast_bad", "middle", "slow_best"]
    # Higher is better for AUC: the front runs the other way.
    auc = rows.assign(auc=1 - rows["rmse"]).drop(columns="rmse")
    assert figures.pareto_front(auc, "auc") == ["fast_bad", "middle", "slow_best"]
    # Equal on both: neither dominates the other.
    twins = pd.DataFrame({"estimator": ["a", "b"], "fit_seconds": [1.0, 1.0], "rmse": [1.0, 1.0]})
    assert figures.pareto_front(twins, "rmse") == ["a", "b"]


def test_the_pareto_figure_has_a_panel_per_scenario_and_split_with_its_front(board, primary):
    figure = figures.pareto_plot(board, primary)
    panels = _panels(figure)
    assert len(panels) == len(SCENARIOS) * len(SPLITS)
    figure.draw_without_rendering()
    # Log-axis ticks as plain numbers, not matplotlib's mathtext ($10^{-1}$).
    ticks = [label.get_text() for axis in panels for label in axis.get_xticklabels()]
    assert ticks and not any("$" in tick for tick in ticks)
    for axis in panels:
        scenario, split = axis.get_title().rsplit("\nsplit: ", 1)
        rows = board[(board["scenario"] == scenario) & (board["split"] == split)]
        metric = primary[scenario]
        assert axis.get_xscale() == "log"
        assert axis.get_ylabel().startswith(metric)
        # Every estimator of the panel is named beside its point, no other.
        names = sorted(text.get_text() for text in axis.texts)
        assert names == sorted(rows["estimator"])
        (step,) = [line for line in axis.lines if line.get_label() == "Pareto front"]
        front = rows.set_index("estimator").loc[figures.pareto_front(rows, metric)]
        np.testing.assert_allclose(step.get_xdata(), front["fit_seconds"])
        np.testing.assert_allclose(step.get_ydata(), front[metric])


def test_pareto_labels_do_not_overlap_when_points_crowd():
    board = pd.DataFrame(
        {
            "scenario": "crowded",
            "split": "seen_units",
            "estimator": [f"estimator_{k}" for k in range(6)],
            "fit_seconds": [1.0, 1.02, 1.04, 1.06, 1.08, 1.1],
            "rmse": [1.0, 1.001, 1.002, 1.003, 1.004, 1.005],
            "rmse_low": np.nan,
            "rmse_high": np.nan,
        }
    )
    figure = figures.pareto_plot(board, {"crowded": "rmse"})
    renderer = figure.canvas.get_renderer()
    figure.draw_without_rendering()
    boxes = [text.get_window_extent(renderer) for text in _panels(figure)[0].texts]
    overlaps = [
        (a, b) for k, a in enumerate(boxes) for b in boxes[k + 1 :] if a.overlaps(b)
    ]  # fmt: skip
    assert overlaps == []


def test_variance_components_are_estimate_over_truth_a_panel_per_scenario(table):
    figure = figures.variance_components_plot(table)
    panels = _panels(figure)
    # Truths of 0.5, 1 and 5 (a logit scale) never share an axis.
    assert [axis.get_title() for axis in panels] == list(SCENARIOS)
    for axis, (_, family, _, true_sd) in zip(panels, SCENARIOS.values(), strict=True):
        assert any(
            line.get_linestyle() == "--" and set(line.get_ydata()) == {1.0} for line in axis.lines
        )
        ticks = [label.get_text() for label in axis.get_xticklabels()]
        assert ticks[0] == f"user\n(true {true_sd:.3g})"
        # The noise has no truth on the binomial scenario: no column for it there.
        assert len(ticks) == (2 if family == "gaussian" else 1)
        ratios = {}  # the first column of points per estimator: the user sd
        for collection in axis.collections:
            ratios.setdefault(collection.get_label(), collection.get_offsets()[:, 1])
        mixed = "mixed_lm" if family == "gaussian" else "mixed_glm"
        gain = ESTIMATORS[family][mixed]
        # A point per fold and split at estimate / truth.
        assert len(ratios[mixed]) == 3 * len(SPLITS)
        np.testing.assert_allclose(ratios[mixed], 1 + gain)


def _timed(slopes: dict[str, float], rows: tuple[int, ...]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"status": "ok", "estimator": name, "n_train": n, "fit_seconds": 0.01 * n**slope}
            for name, slope in slopes.items()
            for n in rows
            for _ in range(2)
        ]
    )


def test_fit_time_names_an_order_of_growth_only_for_a_positive_slope_over_tenfold_rows():
    table = pd.concat(
        [
            _timed({"grows": 1.3, "shrinks": -0.4, "flat": 0.0}, (100, 1000, 10_000)),
            _timed({"narrow": 1.0}, (100, 300)),
        ]
    )
    slopes = figures.fit_time_slopes(table)
    assert set(slopes) == {"grows", "shrinks", "flat"}
    assert slopes["grows"] == pytest.approx(1.3)
    assert slopes["shrinks"] == pytest.approx(-0.4)
    texts = _legend_texts(figures.fit_time_plot(table))
    assert "grows: time ~ rows^1.30" in texts
    assert "shrinks: no growth with rows (slope -0.40)" in texts
    assert "flat: no growth with rows (slope +0.00)" in texts
    assert "narrow" in texts  # no trend fitted: just its name
    for text in texts:
        if not text.startswith("grows"):
            assert "~ rows^" not in text and "order of growth" not in text
    # Over a threefold range only: the jobs, without a trend.
    alone = figures.fit_time_plot(_timed({"narrow": 1.0}, (100, 300)))
    assert _legend_texts(alone) == ["narrow"]
    assert len(alone.axes[0].lines) == 0
    # Under a twofold range: nothing to read, no figure.
    assert figures.fit_time_plot(_timed({"narrow": 1.0}, (100, 150))) is None


def test_fit_time_separates_an_estimator_used_on_two_families(table):
    wide = pd.concat([table.assign(n_train=n, fit_seconds=n / 1000) for n in (100, 10_000)])
    assert set(figures.fit_time_slopes(wide)) == {
        "fixed_effects (gaussian)",
        "fixed_effects (binomial)",
        "mixed_lm",
        "pooled_ols",
        "mixed_glm",
    }


def test_seen_against_unseen_is_a_dot_plot_that_does_not_start_at_zero(table, primary):
    figure = figures.seen_unseen_plot(table, primary)
    panels = _panels(figure)
    # Only the temporal split scores both kinds of unit.
    assert [axis.get_title() for axis in panels] == [
        figures._title(scenario, "temporal") for scenario in SCENARIOS
    ]
    for axis in panels:
        low, high = axis.get_xlim()
        assert low > 0.3 and high < 1.3  # values near 0.5-1.1: the axis spans them
        assert not axis.patches  # no bars


def test_sweep_panels_are_per_regime_that_sweeps_and_split(table, primary):
    figure = figures.sweep_plot(table, primary, "sd.user")
    panels = _panels(figure)
    # clicks has sd.user but one value of it: not a sweep.
    assert [axis.get_title() for axis in panels] == [
        figures._title("well_specified", split) for split in SPLITS
    ]
    for axis in panels:
        assert axis.get_ylabel() == "rmse (lower is better)"
        assert sorted(line.get_label() for line in axis.lines) == sorted(ESTIMATORS["gaussian"])
    assert figures.sweep_plot(table, primary, "n_users") is None


def test_activity_panels_need_two_buckets_with_data(table, primary):
    figure = figures.activity_plot(table, primary)
    panels = _panels(figure)
    # temporal scores seen / unseen only (no buckets here): seen_units panels only.
    assert [axis.get_title() for axis in panels] == [
        figures._title(scenario, "seen_units") for scenario in SCENARIOS
    ]
    clicks = panels[-1]
    assert [label.get_text() for label in clicks.get_xticklabels()] == ["1-2", "100+"]
    assert clicks.get_ylabel() == "log_loss (lower is better)"
    assert sorted(line.get_label() for line in clicks.lines) == sorted(ESTIMATORS["binomial"])


def test_coverage_is_drawn_only_where_intervals_were_scored(table):
    figure = figures.coverage_plot(table)
    panels = _panels(figure)
    # The two gaussian scenarios, a row for the one estimator with intervals.
    assert [axis.get_title() for axis in panels] == [
        scenario for scenario, (_, family, *_) in SCENARIOS.items() if family == "gaussian"
    ]
    for axis in panels:
        assert [label.get_text() for label in axis.get_yticklabels()] == ["mixed_lm"]
        low, high = axis.get_xlim()
        assert low <= 0.85 and high >= 0.95  # a miss of 0.02 does not fill the panel
    assert sorted(_legend_texts(figure)) == ["90% interval"] + [
        f"split: {split}" for split in SPLITS
    ]


def test_labels_are_text_not_mathtext(board, primary):
    trap = r"$\frac{a$ lmm"
    # The label is a real trap: matplotlib's default parses it and fails at draw time.
    figure = Figure()
    figure.text(0.5, 0.5, trap)
    with pytest.raises(ValueError):
        figure.savefig(__import__("io").BytesIO(), format="png")

    rename = {"mixed_lm": trap, "mixed_glm": "$x_1$ glm", "clicks": "$clicks$"}
    table = _table(rename)
    primary = primary_metrics(table, METRICS)
    board = leaderboard(table, METRICS, "fixed_effects", primary)
    timed = pd.concat([table.assign(n_train=n) for n in (100, 10_000)])
    images = [
        figures.leaderboard_figure(board, primary),
        figures.pareto_figure(board, primary),
        figures.sweep_figure(table, primary, "sd.user"),
        figures.activity_figure(table, primary),
        figures.seen_unseen_figure(table, primary),
        figures.fit_time_figure(timed),
        figures.variance_components_figure(table),
        figures.coverage_figure(table),
    ]
    for image in images:
        assert base64.b64decode(image).startswith(b"\x89PNG")
    # And the setting does not leak: matplotlib parses mathtext again outside.
    assert matplotlib.rcParams["text.parse_math"] is True
    texts = [
        text.get_text() for axis in figures.pareto_plot(board, primary).axes for text in axis.texts
    ]
    assert trap in texts
