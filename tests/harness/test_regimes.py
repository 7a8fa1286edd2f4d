"""The map of regimes: per scenario and split, the winner on the scenario's own primary
metric, its lead with an interval, and where a winner loses."""

import numpy as np
import pandas as pd

from harness.compare import leaderboard, primary_metrics
from harness.regimes import losses, regime_map, summary_sentences


def _table() -> pd.DataFrame:
    """Two regimes: mixed_lm is 10% better in `linear`, boosting 20% better in
    `nonlinear`; a binary regime where rmse and log loss disagree."""
    rng = np.random.default_rng(1)
    rows = []
    truth = {
        "linear": {"fixed_effects": 1.1, "mixed_lm": 1.0, "boosting": 1.05},
        "nonlinear": {"fixed_effects": 1.5, "mixed_lm": 1.45, "boosting": 1.2},
    }
    for scenario, levels in truth.items():
        for fold in range(6):
            noise = rng.normal(0, 0.005)
            for estimator, level in levels.items():
                rows.append(
                    {
                        "status": "ok",
                        "scenario": scenario,
                        "regime": scenario,
                        "family": "gaussian",
                        "repeat": 0,
                        "split": "seen_units",
                        "fold": fold,
                        "estimator": estimator,
                        "test_train_ratio": 0.5,
                        "fit_seconds": 0.1,
                        "rmse": level + noise + rng.normal(0, 0.002),
                        "log_loss": np.nan,
                    }
                )
    for fold in range(6):
        for estimator, (rmse, log_loss) in {
            "fixed_effects": (0.40, 0.60),
            "mixed_glm": (0.41, 0.45),
        }.items():
            rows.append(
                {
                    "status": "ok",
                    "scenario": "binary",
                    "regime": "binary",
                    "family": "binomial",
                    "repeat": 0,
                    "split": "seen_units",
                    "fold": fold,
                    "estimator": estimator,
                    "test_train_ratio": 0.5,
                    "fit_seconds": 0.2,
                    "rmse": rmse + rng.normal(0, 0.001),
                    "log_loss": log_loss + rng.normal(0, 0.001),
                }
            )
    return pd.DataFrame(rows)


def test_each_regime_has_its_winner_and_each_winner_its_losses():
    table = _table()
    primary = primary_metrics(table, ["rmse", "log_loss"])
    assert primary == {"linear": "rmse", "nonlinear": "rmse", "binary": "log_loss"}
    board = leaderboard(table, ["rmse", "log_loss"], "fixed_effects", primary)
    cells = {cell.scenario: cell for cell in regime_map(table, board, primary)}
    assert cells["linear"].winner == "mixed_lm" and cells["linear"].runner_up == "boosting"
    assert cells["nonlinear"].winner == "boosting"
    # Binary outcomes are ranked by log loss, where the mixed model wins, not by rmse.
    assert cells["binary"].winner == "mixed_glm" and cells["binary"].metric == "log_loss"
    lead = cells["linear"].lead
    # mixed_lm's lead over boosting: 0.05 on 1.05, about 4.8%, clearly away from zero.
    assert abs(lead.percent - 100 * 0.05 / 1.05) < 0.5 and lead.low > 0 and cells["linear"].clear
    lost = losses(table, list(cells.values()))
    beaten = [
        (loss.model, loss.scenario, loss.by.a) for loss in lost if loss.by.verdict == "better"
    ]
    assert sorted(beaten) == [
        ("boosting", "linear", "mixed_lm"),
        ("mixed_lm", "nonlinear", "boosting"),
    ]
    sentences = " ".join(summary_sentences(list(cells.values()), lost))
    assert "mixed_lm wins beyond the margin in linear · seen_units" in sentences
    assert "it loses in nonlinear · seen_units (boosting better by 17%" in sentences


def test_a_lead_inside_the_margin_is_equivalent_even_when_it_excludes_zero():
    table = _table()
    linear = table["scenario"] == "linear"
    # mixed_lm 0.1% better than boosting in every fold: beyond noise, inside a 0.5% margin.
    boosting = linear & (table["estimator"] == "boosting")
    mixed = linear & (table["estimator"] == "mixed_lm")
    table.loc[mixed, "rmse"] = table.loc[boosting, "rmse"].to_numpy() * 0.999
    primary = primary_metrics(table, ["rmse", "log_loss"])
    board = leaderboard(table, ["rmse", "log_loss"], "fixed_effects", primary)
    cells = regime_map(table, board, primary, margin=lambda metric: 0.5)
    cell = next(c for c in cells if c.scenario == "linear")
    assert cell.lead.low > 0 and cell.verdict == "equivalent" and not cell.clear
    assert "equivalent: inside the margin" in cell.lead_text()
    sentences = " ".join(summary_sentences(cells, losses(table, cells, lambda metric: 0.5)))
    assert "mixed_lm is first, but not by a margin that counts, in linear" in sentences


def test_a_lead_inside_the_noise_is_not_called_clear():
    table = _table()
    noisy = table["scenario"] == "linear"
    rng = np.random.default_rng(5)
    # Identical means, large fold-to-fold noise: the winner is a coin toss.
    table.loc[noisy, "rmse"] = 1.0 + rng.normal(0, 0.05, noisy.sum())
    primary = primary_metrics(table, ["rmse", "log_loss"])
    board = leaderboard(table, ["rmse", "log_loss"], "fixed_effects", primary)
    cell = next(c for c in regime_map(table, board, primary) if c.scenario == "linear")
    assert not cell.clear
    assert "not distinguishable" in cell.lead_text()
