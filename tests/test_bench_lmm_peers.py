"""The peer adapters of benchmarks/bench_lmm.py fit the same model to the same optimum as
ours, so that the benchmark's ratios compare like with like. Correctness, not speed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import estimators

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
LME4_FIXTURES = ROOT / "tests" / "estimators" / "fixtures" / "lme4"
sys.path.insert(0, str(BENCHMARKS))

import _lmm_cases as cases  # noqa: E402
import bench_lmm  # noqa: E402
from _lmm_peers import PYTHON_PEERS, run_peer_case  # noqa: E402

SAME = bench_lmm.SAME_OPTIMUM
INSTEVAL = next(case for case in cases.CASES if case.name == "insteval")
SLOPES_1M = next(case for case in cases.CASES if case.name == "slopes_1m")


@pytest.fixture(scope="module")
def sleepstudy():
    return cases.SLEEPSTUDY.load()


def ours_loglik(formula: str, frame, reml: bool) -> float:
    return estimators.MixedLM(formula, reml=reml).fit(frame).loglik_


def peer_loglik(name: str, frame) -> float:
    peer = PYTHON_PEERS[name]
    pytest.importorskip(peer.module)
    case = cases.SLEEPSTUDY
    return peer.fit(peer.prepare(frame.copy(), case), case)["loglik"]


@pytest.mark.parametrize("name", ["statsmodels", "mixedlm-rs"])
def test_reml_peers_reach_our_sleepstudy_optimum(sleepstudy, name):
    ours = ours_loglik(cases.SLEEPSTUDY.formula, sleepstudy, reml=True)
    theirs = peer_loglik(name, sleepstudy)
    assert abs(theirs - ours) <= SAME * abs(ours)
    lme4 = json.loads((LME4_FIXTURES / "sleepstudy_reml.json").read_text())["loglik"]
    assert ours == pytest.approx(lme4, rel=SAME)


def test_gpboost_reaches_our_ml_optimum_of_the_uncorrelated_model(sleepstudy):
    # GPBoost maximises the ML likelihood with uncorrelated intercepts and slopes: the
    # benchmark compares it with ours fitting (Days || Subject) by ML.
    ours = ours_loglik(cases.SLEEPSTUDY.uncorrelated_formula, sleepstudy, reml=False)
    theirs = peer_loglik("gpboost", sleepstudy)
    assert cases.SLEEPSTUDY.uncorrelated_formula == "Reaction ~ Days + (1 + Days || Subject)"
    assert PYTHON_PEERS["gpboost"].criterion == "ML"
    assert abs(theirs - ours) <= SAME * abs(ours)


def test_a_peer_in_its_own_process_reports_time_memory_and_optimum(sleepstudy, tmp_path):
    pytest.importorskip("mixedlm_rs")
    path = tmp_path / "sleepstudy.pkl"
    sleepstudy.to_pickle(path)
    result = run_peer_case("mixedlm-rs", cases.SLEEPSTUDY, path, limit=120.0)
    assert result["status"] == "ok", result
    assert len(result["all_seconds"]) == cases.SLEEPSTUDY.repeats
    assert result["peak_mb"] > 0
    ours = {"loglik": ours_loglik(cases.SLEEPSTUDY.formula, sleepstudy, reml=True)}
    assert bench_lmm.compare_optimum(result, ours)["same"]


def test_the_comparison_flags_a_different_optimum():
    ours = {"loglik": -871.8141}
    assert bench_lmm.compare_optimum({"loglik": -871.8141 + 1e-5}, ours)["same"]
    flagged = bench_lmm.compare_optimum({"loglik": -871.8141 + 1e-2}, ours)
    assert not flagged["same"]
    assert flagged["difference"] == pytest.approx(1e-2)


def test_peers_that_cannot_express_a_model_say_why():
    assert "one grouping factor" in PYTHON_PEERS["mixedlm-rs"].cannot(INSTEVAL)
    assert PYTHON_PEERS["statsmodels"].cannot(INSTEVAL) is None
    assert "intercepts only" in PYTHON_PEERS["statsmodels"].cannot(SLOPES_1M)
    skipped = dict.fromkeys(bench_lmm.PEERS)
    result = bench_lmm._not_run("gpboost", SLOPES_1M, skipped)
    assert result["status"] == "cannot" and "uncorrelated" in result["reason"]
    assert bench_lmm._not_run("lme4", SLOPES_1M, skipped) is None


def test_lme4_formula_of_each_case_is_written_from_its_terms():
    assert cases.SLEEPSTUDY.formula == "Reaction ~ Days + (1 + Days | Subject)"
    assert INSTEVAL.formula == "y ~ 1 + (1 | s) + (1 | d)"
    assert SLOPES_1M.formula == "y ~ treat + (1 + treat | user) + (1 | item)"


def test_a_case_gpboost_cannot_fit_has_no_ml_ratio():
    # Ours by ML runs only where GPBoost does; its ratio is then absent, not an error.
    cannot = {"status": "cannot", "reason": "uncorrelated slopes only"}
    assert bench_lmm.ratio(None, cannot) is None
    assert bench_lmm.ratio({"status": "ok", "seconds": 2.0}, {"status": "ok", "seconds": 4.0}) == {
        "value": 0.5,
        "upper_bound": False,
    }
