"""The profiled deviance's fast evaluations equal the general elimination.

``ProfiledDeviance.__call__`` computes only the criterion, by array operations over
the first term's levels (one term) or a precomputed sparsity pattern (scalar terms);
``factor`` of a one-term model eliminates its levels the same way. Both are compared
here with ``_general_factor``, the sparse elimination every design supports, at
random thetas, with and without prior weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from estimators import MixedLM
from estimators.mixed import _deviance
from estimators.mixed._deviance import (
    UNROLLED_MAX_Q,
    ProfiledDeviance,
    moment_start,
    theta_lower_bounds,
    theta_start,
)

DATA = Path(__file__).parent / "fixtures" / "data"


def objective_of(formula: str, frame: pd.DataFrame, reml: bool, weights=None) -> ProfiledDeviance:
    """The objective MixedLM.fit minimises, built from the same design."""
    return MixedLM(formula, reml=reml)._prepare(frame, None, weights)[3]


def random_thetas(objective: ProfiledDeviance, count: int, seed: int) -> list[np.ndarray]:
    """Thetas around the identity start, diagonal entries kept positive."""
    rng = np.random.default_rng(seed)
    diagonal = np.isfinite(theta_lower_bounds(objective.qs))
    thetas = []
    for _ in range(count):
        theta = theta_start(objective.qs) + rng.normal(0, 0.6, diagonal.size)
        theta[diagonal] = np.abs(theta[diagonal]) + 0.01
        thetas.append(theta)
    return thetas


def assert_fast_equals_general(objective: ProfiledDeviance, seed: int = 0) -> None:
    for theta in random_thetas(objective, 8, seed):
        general = objective.from_factor(objective._general_factor(theta))
        assert np.isfinite(general)
        assert objective(theta) == pytest.approx(general, rel=1e-12, abs=0)
        fast, reference = objective.factor(theta), objective._general_factor(theta)
        for field in ("L11", "L21_X", "L21_y", "LS"):
            np.testing.assert_allclose(
                getattr(fast, field), getattr(reference, field), rtol=1e-10, atol=1e-10
            )
        assert fast.L21_R.shape == reference.L21_R.shape


def grouped_frame(q: int, levels: int, seed: int) -> pd.DataFrame:
    """Rows per level like NAFLD's patients (a few to a dozen visits), q - 1 slopes."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 12, levels)
    group = np.repeat(np.arange(levels), counts)
    frame = pd.DataFrame({"g": group.astype(str)})
    effects = rng.normal(0, 1, (levels, q))
    signal = effects[group, 0]
    for k in range(1, q):
        frame[f"x{k}"] = rng.normal(0, 1, group.size)
        signal = signal + effects[group, k] * 0.3 * frame[f"x{k}"]
    frame["y"] = signal + rng.normal(0, 0.5, group.size)
    frame["w"] = rng.uniform(0.5, 2.0, group.size)
    return frame


@pytest.mark.parametrize("reml", [True, False])
def test_sleepstudy(reml):
    frame = pd.read_csv(DATA / "sleepstudy.csv.gz")
    objective = objective_of("Reaction ~ Days + (Days | Subject)", frame, reml)
    assert_fast_equals_general(objective)


@pytest.mark.parametrize("q", [1, 2, 3, UNROLLED_MAX_Q + 1])
@pytest.mark.parametrize("weighted", [False, True])
def test_one_term_blocks(q, weighted):
    frame = grouped_frame(q, 400, seed=q)
    slopes = " + ".join(f"x{k}" for k in range(1, q))
    formula = (
        f"y ~ 1 {'+ ' + slopes if slopes else ''} + ({'1 + ' + slopes if slopes else '1'} | g)"
    )
    weights = frame["w"].to_numpy() if weighted else None
    assert_fast_equals_general(objective_of(formula, frame, reml=True, weights=weights), seed=q)


def insteval_subset(rows: int = 8000) -> pd.DataFrame:
    frame = pd.read_csv(DATA / "insteval.csv.gz", nrows=rows)
    frame = frame.astype({"s": str, "d": str, "dept": str})
    frame["studage"] = frame["studage"].astype(float)  # a slope
    return frame


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize(
    "formula",
    [
        "y ~ 1 + (1 | s) + (1 | d)",
        "y ~ service + (1 | s) + (1 | d) + (1 | dept)",
        "y ~ service + (1 + service | d) + (1 | s)",
        "y ~ service + (1 + service + studage | d) + (1 | s) + (1 | dept)",
    ],
)
def test_scalar_rest_terms(formula, weighted):
    frame = insteval_subset()
    rng = np.random.default_rng(5)
    weights = rng.uniform(0.5, 2.0, len(frame)) if weighted else None
    objective = objective_of(formula, frame, reml=True, weights=weights)
    assert objective._scalar_rest() is not None  # the fast path is the one tested
    for theta in random_thetas(objective, 8, seed=3):
        general = objective.from_factor(objective._general_factor(theta))
        assert objective(theta) == pytest.approx(general, rel=1e-12, abs=0)


def test_scalar_rest_falls_back_when_the_pattern_is_too_dense(monkeypatch):
    # Few first-term levels shared by every rest column: pairs exceed the dense block.
    monkeypatch.setattr(_deviance, "WORKSPACE_PAIRS", 0)
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(
        {
            "a": rng.integers(0, 3, 3000).astype(str),
            "b": rng.integers(0, 40, 3000).astype(str),
            "y": rng.normal(size=3000),
        }
    )
    objective = objective_of("y ~ 1 + (1 | a) + (1 | b)", frame, reml=False)
    assert objective.levels[0] == 40  # largest first
    assert objective._scalar_rest() is None
    theta = np.array([0.7, 0.4])
    assert objective(theta) == objective.from_factor(objective._general_factor(theta))


def test_not_finite_theta_gives_infinity():
    frame = pd.read_csv(DATA / "sleepstudy.csv.gz")
    objective = objective_of("Reaction ~ Days + (Days | Subject)", frame, reml=True)
    assert objective(np.array([np.nan, 0.0, 1.0])) == np.inf
    crossed = objective_of("y ~ 1 + (1 | s) + (1 | d)", insteval_subset(), reml=True)
    assert crossed(np.array([np.nan, 1.0])) == np.inf


def test_moment_start_is_near_the_optimum():
    frame = pd.read_csv(DATA / "sleepstudy.csv.gz")
    objective = objective_of("Reaction ~ Days + (Days | Subject)", frame, reml=True)
    start = moment_start(objective)
    optimum = np.array([0.96673, 0.01516906, 0.23090960])  # lme4's theta
    np.testing.assert_allclose(start, optimum, atol=0.05)
    assert objective(start) < objective(theta_start(objective.qs))


def test_moment_start_recovers_the_simulated_covariance():
    rng = np.random.default_rng(11)
    levels = 3000
    counts = rng.integers(1, 8, levels)  # many levels with one or two rows, as in NAFLD
    group = np.repeat(np.arange(levels), counts)
    x = rng.normal(0, 1, group.size)
    relative = np.array([[1.5, 0.0], [0.3, 0.4]])  # Lambda: Sigma_b / sigma^2 = T T'
    effects = rng.normal(size=(levels, 2)) @ relative.T
    y = 2.0 + 0.5 * x + effects[group, 0] + effects[group, 1] * x + rng.normal(size=x.size)
    frame = pd.DataFrame({"g": group.astype(str), "x": x, "y": y})
    objective = objective_of("y ~ x + (1 + x | g)", frame, reml=True)
    np.testing.assert_allclose(moment_start(objective), [1.5, 0.3, 0.4], atol=0.1)


def test_moment_start_without_residual_degrees_of_freedom_is_the_identity():
    # Four rows, an intercept and three levels: nothing is left within the levels.
    frame = pd.DataFrame({"g": ["a", "b", "c", "c"], "y": [1.0, 2.0, 0.5, 3.0]})
    objective = objective_of("y ~ 1 + (1 | g)", frame, reml=True)
    np.testing.assert_array_equal(moment_start(objective), theta_start([1]))


def test_scalar_rest_workspace_built_in_chunks_of_levels(monkeypatch):
    original = _deviance._level_pairs
    monkeypatch.setattr(_deviance, "_level_pairs", lambda A, q: original(A, q, chunk=50))
    frame = insteval_subset(3000)
    objective = objective_of("y ~ service + (1 + service | d) + (1 | s)", frame, reml=False)
    assert objective._scalar_rest() is not None
    for theta in random_thetas(objective, 3, seed=8):
        general = objective.from_factor(objective._general_factor(theta))
        assert objective(theta) == pytest.approx(general, rel=1e-12, abs=0)


@pytest.mark.parametrize("q", [1, 2, 3, UNROLLED_MAX_Q + 1])
def test_batched_block_helpers_equal_numpy_linalg(q):
    rng = np.random.default_rng(q)
    blocks = rng.normal(size=(50, q, q))
    L = np.linalg.cholesky(blocks @ np.transpose(blocks, (0, 2, 1)) + np.eye(q))
    inverse = np.linalg.inv(L)
    np.testing.assert_allclose(_deviance.lower_inverse_blocks(L), inverse, rtol=1e-12, atol=1e-14)
    rhs = rng.normal(size=50 * q)
    expected = np.linalg.solve(np.transpose(L, (0, 2, 1)), rhs.reshape(50, q, 1))[..., 0]
    np.testing.assert_allclose(_deviance.first_term_modes(L, rhs), expected, rtol=1e-12)
    T = np.tril(rng.normal(size=(q, q)))
    np.testing.assert_allclose(_deviance.congruence_blocks(T, blocks), T @ blocks @ T.T, rtol=1e-12)
