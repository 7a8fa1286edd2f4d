"""Comparing estimators across scenarios: Friedman's test with its post-hoc procedures
against hand computations, scipy and R; the Bayesian signed-rank test against an
independent Monte Carlo of its posterior; the critical-difference diagram; the report's
section."""

import base64
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness import across
from harness.report import render_report
from harness.store import ResultStore

# Six cells, four estimators, smaller is better; cells 2 and 6 hold a tie.
LOSSES = pd.DataFrame(
    [
        [0.10, 0.20, 0.30, 0.40],
        [0.15, 0.15, 0.30, 0.40],
        [0.20, 0.10, 0.30, 0.40],
        [0.10, 0.30, 0.20, 0.40],
        [0.10, 0.20, 0.40, 0.30],
        [0.10, 0.20, 0.30, 0.30],
    ],
    columns=["A", "B", "C", "D"],
    index=[f"cell{i}" for i in range(1, 7)],
)
# By hand: ranks per cell (1 2 3 4), (1.5 1.5 3 4), (2 1 3 4), (1 3 2 4), (1 2 4 3),
# (1 2 3.5 3.5); rank sums 7.5, 11.5, 18.5, 22.5 (total 60 = N k (k + 1) / 2).
RANK_SUMS = np.array([7.5, 11.5, 18.5, 22.5])
N, K = 6, 4
# 12 / (N k (k + 1)) * sum(S^2) - 3 N (k + 1) = 0.1 * 1037 - 90 = 13.7, and two tied pairs
# make the correction 1 - 2 * (2^3 - 2) / (N k (k^2 - 1)) = 1 - 12 / 360 = 29 / 30.
UNCORRECTED = 13.7
CHI_SQUARE = 13.7 * 30 / 29  # = 411 / 29 = 14.1724...
# (N - 1) chi2 / (N (k - 1) - chi2) = (5 * 411 / 29) / (18 - 411 / 29) = 2055 / 111.
IMAN_DAVENPORT = 2055 / 111
# sqrt(k (k + 1) / (6 N)) = sqrt(20 / 36) = sqrt(5) / 3.
STANDARD_ERROR = np.sqrt(5) / 3


def test_friedman_statistic_matches_a_hand_computation_and_scipy():
    test = across.friedman(LOSSES)
    assert test.n_cells == N and test.n_estimators == K
    np.testing.assert_allclose(test.mean_ranks.to_numpy(), RANK_SUMS / N)
    assert list(test.mean_ranks.index) == ["A", "B", "C", "D"]
    assert test.statistic == pytest.approx(CHI_SQUARE, rel=1e-12)
    assert test.statistic * 29 / 30 == pytest.approx(UNCORRECTED, rel=1e-12)
    assert test.p_value == pytest.approx(stats.chi2.sf(CHI_SQUARE, K - 1), rel=1e-12)
    scipy_result = stats.friedmanchisquare(*LOSSES.to_numpy().T)
    assert test.statistic == pytest.approx(scipy_result.statistic, rel=1e-12)
    assert test.p_value == pytest.approx(scipy_result.pvalue, rel=1e-12)
    assert test.f_statistic == pytest.approx(IMAN_DAVENPORT, rel=1e-12)
    assert test.f_p_value == pytest.approx(stats.f.sf(IMAN_DAVENPORT, 3, 15), rel=1e-12)


def test_critical_difference_matches_a_hand_computation():
    test = across.friedman(LOSSES)
    assert test.critical_difference == pytest.approx(2.569 * STANDARD_ERROR, abs=5e-4)
    # Demsar's (2006) worked example: four classifiers on 14 data sets, CD = 1.25.
    assert across.critical_difference(4, 14) == pytest.approx(2.569 * np.sqrt(20 / 84), abs=5e-4)
    # A 1.25 mean-rank gap is not enough with CD 1.91; 2.5 is (the bars of the diagram).
    assert across.cliques(test.mean_ranks, test.critical_difference) == [
        ("A", "B", "C"),
        ("B", "C", "D"),
    ]


@pytest.mark.r
@pytest.mark.skipif(shutil.which("Rscript") is None, reason="Rscript not found")
def test_friedman_statistic_matches_r():
    values = ", ".join(f"{value:.2f}" for value in LOSSES.to_numpy().ravel())
    script = (
        f"r <- friedman.test(matrix(c({values}), nrow = {N}, byrow = TRUE)); "
        'cat(sprintf("%.15g %.15g %d", r$statistic, r$p.value, r$parameter))'
    )
    output = subprocess.run(
        ["Rscript", "-e", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    test = across.friedman(LOSSES)
    assert test.statistic == pytest.approx(float(output[0]), rel=1e-10)
    assert test.p_value == pytest.approx(float(output[1]), rel=1e-8)
    assert int(output[2]) == K - 1


# Demsar (2006), Table 5a: two-tailed Nemenyi critical values at alpha 0.05, k = 2..10.
DEMSAR_Q = [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]


def test_nemenyi_q_matches_demsars_table():
    for k, tabled in zip(range(2, 11), DEMSAR_Q, strict=True):
        q = across.nemenyi_q(k)
        assert abs(q - tabled) < 1e-3, k
        # The table divides the studentized range rounded to 3 decimals by sqrt(2)
        # (hence 2.343 for 2.3437 and 2.949 for 2.9483): done so, it is equal.
        studentized = stats.studentized_range.ppf(0.95, k, np.inf)
        assert round(round(studentized, 3) / np.sqrt(2), 3) == tabled, k


def test_holm_posthoc_against_the_best_matches_a_hand_computation():
    posthoc = across.friedman(LOSSES).posthoc
    # z = (R_i - R_A) / SE: (2/3) / (sqrt 5 / 3), (11/6) / (sqrt 5 / 3), (5/2) / (sqrt 5 / 3).
    z = {"B": 2 / np.sqrt(5), "C": 11 / (2 * np.sqrt(5)), "D": 7.5 / np.sqrt(5)}
    p = {name: 2 * stats.norm.sf(value) for name, value in z.items()}
    # Holm: the smallest p (D) times 3, then C times 2 (not below D's), then B times 1.
    step_d = min(1.0, 3 * p["D"])
    step_c = max(step_d, min(1.0, 2 * p["C"]))
    step_b = max(step_c, min(1.0, p["B"]))
    for name, expected in {"B": step_b, "C": step_c, "D": step_d}.items():
        assert posthoc.at[name, "z"] == pytest.approx(z[name], rel=1e-12)
        assert posthoc.at[name, "p"] == pytest.approx(p[name], rel=1e-12)
        assert posthoc.at[name, "p_holm"] == pytest.approx(expected, rel=1e-12)
    assert np.isnan(posthoc.at["A", "p_holm"])
    assert step_d < 0.05 < step_b  # D differs from the best, B does not


def test_the_rank_tests_do_not_apply_to_too_few_cells_or_estimators():
    with pytest.raises(ValueError, match="2 cells and 3 estimators"):
        across.friedman(LOSSES.iloc[:1])
    with pytest.raises(ValueError, match="2 cells and 3 estimators"):
        across.friedman(LOSSES[["A", "B"]])


def _monte_carlo(
    differences: np.ndarray, rope: float, samples: int, seed: int
) -> tuple[float, float, float]:
    """The Dirichlet-process posterior of Benavoli et al. (2017), sampled independently of
    baycomp: weights Dirichlet(0.5, 1, ..., 1) on (0, z_1, ..., z_n); for each sample, the
    mass of pairs whose mean lies above the rope, inside and below it; the region of
    largest mass wins the sample. Returns P(above), P(inside), P(below)."""
    points = np.concatenate([[0.0], differences])
    weights = np.random.default_rng(seed).dirichlet(
        np.concatenate([[0.5], np.ones(differences.size)]), samples
    )
    sums = points[:, None] + points[None, :]
    regions = [sums > 2 * rope, np.abs(sums) <= 2 * rope, sums < -2 * rope]
    mass = np.stack(
        [np.einsum("si,sj,ij->s", weights, weights, region.astype(float)) for region in regions]
    )
    return tuple(np.bincount(mass.argmax(axis=0), minlength=3) / samples)


def test_bayesian_signed_rank_matches_an_independent_monte_carlo():
    differences = np.array([1.31, -0.37, 0.83, 0.12, 2.09, -0.94, 0.66, 0.47, 0.04, 1.71])
    for rope in (0.5, 1.0):
        # No pair mean on the rope's edge, where baycomp counts half a pair on each side.
        points = np.concatenate([[0.0], differences])
        assert np.abs(np.abs(points[:, None] + points[None, :]) - 2 * rope).min() > 1e-6
        better, equivalent, worse = across.signed_rank(differences, rope)
        assert better + equivalent + worse == pytest.approx(1.0, abs=1e-12)
        expected = _monte_carlo(differences, rope, samples=50_000, seed=11)
        # Two estimates from 50,000 samples each: standard error under 0.0032.
        np.testing.assert_allclose([better, equivalent, worse], expected, atol=0.015)
    # Both sides of the test carry probability here, so the match is not trivial.
    assert 0.1 < across.signed_rank(differences, 0.5)[0] < 0.9
    # The same seed, the same report.
    assert across.signed_rank(differences, 0.5) == across.signed_rank(differences, 0.5)
    # Clearly better everywhere; the sign follows the differences.
    assert across.signed_rank(np.full(8, 5.0), 0.5)[0] == 1.0
    assert across.signed_rank(np.full(8, -5.0), 0.5)[2] == 1.0


def _cells(losses: pd.DataFrame) -> across.Cells:
    return across.Cells(
        family="gaussian",
        metric="rmse",
        losses=losses,
        means=losses,
        scenarios=tuple(losses.index),
        left_out={},
    )


def test_identical_estimators_are_equivalent_and_reversals_are_named():
    losses = LOSSES.assign(twin=LOSSES["A"])
    pairs = {pair.b: pair for pair in across.best_against_each(_cells(losses), "A", 0.5)}
    twin = pairs["twin"]
    assert (twin.better, twin.equivalent, twin.worse) == (0.0, 1.0, 0.0)
    assert twin.reversals.empty
    # B beats A in cell 3 only (0.10 against 0.20): 100% of B's mean, named as such.
    assert list(pairs["B"].reversals.index) == ["cell3"]
    assert pairs["B"].reversals["cell3"] == pytest.approx(-100.0)
    assert list(pairs["D"].reversals.index) == []


def test_cells_are_grouped_by_family_oriented_and_incomplete_estimators_left_out():
    board = pd.DataFrame(
        [
            ("s1", "seen", "m1", "rmse", 1.0, np.nan),
            ("s1", "seen", "m2", "rmse", 1.2, np.nan),
            ("s1", "seen", "only_here", "rmse", 0.9, np.nan),
            ("s2", "seen", "m1", "rmse", 2.0, np.nan),
            ("s2", "seen", "m2", "rmse", 1.8, np.nan),
            ("b1", "seen", "m1", "r2", np.nan, 0.3),
            ("b1", "seen", "m2", "r2", np.nan, 0.5),
        ],
        columns=["scenario", "split", "estimator", "primary", "rmse", "r2"],
    )
    table = pd.DataFrame(
        {
            "scenario": ["s1", "s2", "s2", "b1"],
            "split": ["seen"] * 4,
            "estimator": ["m1", "m1", "only_here", "m1"],
            "status": ["ok", "ok", "failed", "ok"],
            "family": ["gaussian", "gaussian", "gaussian", "binomial"],
        }
    )
    gaussian, binomial = across.cell_matrices(board, table=table)
    assert (gaussian.family, gaussian.metric) == ("gaussian", "rmse")
    assert list(gaussian.losses.columns) == ["m1", "m2"]
    assert list(gaussian.losses.index) == ["s1 · seen", "s2 · seen"]
    assert gaussian.left_out == {"only_here": "failed in s2 · seen"}
    # Higher R^2 is better: oriented so that smaller is better, scaled by the raw means.
    assert (binomial.family, binomial.metric) == ("binomial", "r2")
    assert binomial.losses.loc["b1 · seen"].tolist() == [-0.3, -0.5]
    assert across.relative_differences(binomial, "m2", "m1").tolist() == pytest.approx(
        [100 * 0.2 / 0.3]
    )


def test_the_cd_diagram_renders_labels_that_look_like_mathtext():
    names = ["$\\alpha$ model", "cost $5", "x_1^2", "plain"]
    ranks = pd.Series([1.2, 2.0, 3.1, 3.7], index=names)
    figure = across.cd_diagram(ranks, 1.5)
    texts = [text.get_text() for text in figure.axes[0].texts]
    for name, rank in ranks.items():
        assert f"{name} ({rank:.2f})" in texts
    assert "CD = 1.50" in texts
    # Three thick bars: neighbours are within the CD (1.5), ranks two apart are not.
    assert sum(line.get_linewidth() == 4 for line in figure.axes[0].lines) == 3
    image = base64.b64decode(across.cd_figure(ranks, 1.5))
    assert image.startswith(b"\x89PNG") and len(image) > 5_000


CONFIG = """
name: across
seed: 1
scenarios:
  - {simulator: online_services, label: calm, params: {n_users: 50},
     estimators: [fixed_effects, mixed_lm, pooled_ols, ridge_onehot, eb_shrinkage]}
  - {simulator: online_services, label: sparse, params: {n_users: 50},
     estimators: [fixed_effects, mixed_lm, pooled_ols, ridge_onehot]}
  - {simulator: online_services, label: crossed, params: {n_users: 50},
     estimators: [fixed_effects, mixed_lm, pooled_ols, ridge_onehot]}
splits:
  - {scheme: seen_units, folds: 3}
  - {scheme: unseen_units, folds: 3, by: user}
estimators: [fixed_effects, mixed_lm, pooled_ols, ridge_onehot, eb_shrinkage]
metrics: [rmse]
baseline: fixed_effects
"""
LEVELS = {
    "calm": {"fixed_effects": 1.10, "mixed_lm": 1.00, "pooled_ols": 1.20, "ridge_onehot": 1.02},
    "sparse": {"fixed_effects": 1.30, "mixed_lm": 1.10, "pooled_ols": 1.25, "ridge_onehot": 1.11},
    # pooled_ols wins here: the reversal the section must name.
    "crossed": {"fixed_effects": 1.40, "mixed_lm": 1.30, "pooled_ols": 1.20, "ridge_onehot": 1.31},
}


def _stored_study(directory: Path) -> Path:
    rng = np.random.default_rng(3)
    store = ResultStore(directory)
    ids = []
    for scenario, levels in LEVELS.items():
        extra = {"eb_shrinkage": 1.05} if scenario == "calm" else {}
        for split in ("seen_units", "unseen_units[by=user]"):
            for fold in range(3):
                for estimator, level in (levels | extra).items():
                    # Job ids name files: no brackets, which a Parquet reader globs.
                    ids.append(f"{scenario}-{split[:6]}-{fold}-{estimator}")
                    store.write(
                        {
                            "job_id": ids[-1],
                            "status": "ok",
                            "scenario": scenario,
                            "regime": scenario,
                            "family": "gaussian",
                            "repeat": 0,
                            "split": split,
                            "fold": fold,
                            "estimator": estimator,
                            "n_train": 400,
                            "n_test": 200,
                            "test_train_ratio": 0.5,
                            "fit_seconds": 0.01,
                            "rmse": level + rng.normal(0, 0.003),
                        }
                    )
    store.consolidate(ids)
    (directory / "config.yaml").write_text(CONFIG)
    return directory


def _section(html: str) -> str:
    start = html.index('<section id="across">')
    return html[start : html.index("</section>", start)]


def test_the_report_shows_the_across_scenarios_section(tmp_path):
    html = render_report(_stored_study(tmp_path)).read_text()
    assert '<a href="#across">Across scenarios</a>' in html
    # After the findings, before the leaderboard.
    assert html.index('id="findings"') < html.index('id="across"') < html.index('id="leaderboard"')
    section = _section(html)
    assert "<h2>Across scenarios</h2>" in section
    assert "6 cells, 4 estimators" in section
    # Fitted in 2 of the 6 cells: said by where it ran.
    assert "eb_shrinkage: run only in calm · seen_units, calm · unseen_units[by=user]" in section
    assert "Friedman test over 6 cells and 4 estimators" in section
    assert section.count("data:image/png;base64,") == 1
    # mixed_lm ranks first; pooled_ols beats it in both cells of `crossed`, by ~8%.
    assert '<tr class="best"><td>mixed_lm</td>' in section
    assert re.search(r"crossed · seen_units \(by 8\.\d%\)", section)
    assert "crossed · unseen_units[by=user]" in section
    assert "not quite independent" in section
    assert "calm (2 cells)" in section


@pytest.mark.slow
@pytest.mark.skipif(
    not Path("reports/default/results.parquet").exists(), reason="no default study here"
)
def test_the_default_studys_report_compares_across_scenarios(tmp_path):
    for name in ("results.parquet", "config.yaml"):
        shutil.copy(Path("reports/default") / name, tmp_path / name)
    section = _section(render_report(tmp_path).read_text())
    # Three families, never ranked together.
    for header in ("gaussian", "binomial", "poisson"):
        assert f"<h3>{header} " in section
    assert "10 cells, 6 estimators" in section  # Gaussian, with 3 estimators left out
    assert "mixed_lm_slopes: run only in user_slopes · seen_units[by=user]" in section
    assert "eb_shrinkage: not run in user_slopes · seen_units[by=user]" in section
    assert section.count("data:image/png;base64,") == 3
    # Boosting wins the nonlinear regime: the average must not hide it.
    assert "nonlinear · seen_units[by=user] (by" in section
