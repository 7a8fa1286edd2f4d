"""The report rendered from a stored results table with known numbers: sections,
findings that follow the numbers, escaping, a self-contained file, and a clean load in
headless Chromium with the leaderboard visible."""

import base64
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest

from harness.compare import stratified_interval
from harness.findings import compare, findings
from harness.report import render_report
from harness.store import ResultStore

CONFIG = """
name: stored
seed: 1
scenarios:
  - simulator: online_services
    params: {n_users: 50}
    sweep: {sd.user: [0.2, 0.8]}
splits:
  - {scheme: seen_units, folds: 5}
estimators: [fixed_effects, mixed_lm]
metrics: [rmse]
baseline: fixed_effects
"""


def _rows(gain: float, scenario_label: str = "online_services[sd.user={sd}]") -> list[dict]:
    """Five folds per scenario; mixed_lm's RMSE is ``gain`` below fixed_effects' on units
    with 1-2 training rows and equal to it on units with 100+ rows."""
    rng = np.random.default_rng(0)
    rows = []
    for sd in (0.2, 0.8):
        for fold in range(5):
            noise = rng.normal(0, 0.01)
            for estimator, shift in (("fixed_effects", 0.0), ("mixed_lm", -gain)):
                few, many = 1.3 + shift + noise, 1.0 + noise
                rows.append(
                    {
                        "job_id": f"{sd}-{fold}-{estimator}",
                        "status": "ok",
                        "scenario": scenario_label.format(sd=sd),
                        "sim.sd.user": sd,
                        "repeat": 0,
                        "split": "seen_units",
                        "fold": fold,
                        "estimator": estimator,
                        "n_train": 400,
                        "n_test": 100,
                        "test_train_ratio": 0.25,
                        "fit_seconds": 0.01,
                        "rmse": (few + many) / 2,
                        "rmse@seen": (few + many) / 2,
                        "rmse@unseen": float("nan"),
                        "n_test@seen": 100,
                        "n_test@unseen": 0,
                        "rmse@train_rows=1-2": few,
                        "n_test@train_rows=1-2": 50,
                        "rmse@train_rows=100+": many,
                        "n_test@train_rows=100+": 50,
                    }
                )
    return rows


def _store(directory, rows, config=CONFIG):
    store = ResultStore(directory)
    for row in rows:
        store.write(row)
    store.consolidate(row["job_id"] for row in rows)
    (directory / "config.yaml").write_text(config)
    return directory


def test_the_report_renders_every_section_from_a_stored_table(tmp_path):
    html = render_report(_store(tmp_path, _rows(gain=0.2))).read_text()
    for section in (
        "Regimes: who wins where",
        "Findings",
        "Leaderboard",
        "Plots",
        "Failures, skipped jobs and warnings",
    ):
        assert f"<h2>{section}</h2>" in html
    assert "<h2>Reproducibility</h2>" in html and "stored" in html
    # Figures are embedded; nothing is fetched from elsewhere.
    assert html.count("data:image/png;base64,") >= 3  # leaderboard, sweep, activity
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    assert 'href="comparison.csv"' in html and (tmp_path / "comparison.csv").exists()
    board = pd.read_csv(tmp_path / "comparison.csv")
    assert set(board["estimator"]) == {"fixed_effects", "mixed_lm"}
    assert board.loc[board["estimator"] == "mixed_lm", "win_rate"].eq(1.0).all()


def test_findings_follow_the_numbers(tmp_path):
    better = findings(pd.DataFrame(_rows(gain=0.2)), "rmse", "fixed_effects")
    text = " ".join(better)
    # 0.1 lower mean RMSE on a mean of 1.15: 8.7%.
    assert "ranks first by rmse; overall, mixed_lm beats fixed_effects by 8.7% rmse" in text
    assert "for seen units with 1-2 training rows, mixed_lm beats fixed_effects by 15%" in text
    # Equal on the most active units: a tie, in either order.
    assert re.search(
        r"100\+ training rows, (mixed_lm and fixed_effects|fixed_effects and mixed_lm) are "
        r"equivalent on rmse: \+0.00%, inside the margin",
        text,
    )
    worse = " ".join(findings(pd.DataFrame(_rows(gain=-0.2)), "rmse", "fixed_effects"))
    assert worse != text
    assert "the baseline ranks first by rmse" in worse
    assert "fixed_effects beats mixed_lm by 8.0% rmse" in worse
    # The rendered report carries the same sentences.
    html = render_report(_store(tmp_path, _rows(gain=0.2))).read_text()
    assert "mixed_lm beats fixed_effects by 15%" in html


def test_failed_jobs_are_counted_in_the_findings():
    rows = _rows(gain=0.2)
    rows[0] |= {"status": "failed", "error_type": "ValueError", "error": "bad"}
    sentences = findings(pd.DataFrame(rows), "rmse", "fixed_effects")
    assert sentences[-1] == "1 of 20 jobs failed (fixed_effects); see Failures."


def test_paired_comparison_matches_a_hand_computation():
    rows = pd.DataFrame(_rows(gain=0.2))
    result = compare(rows, "mixed_lm", "fixed_effects", "rmse@train_rows=1-2")
    # Per scenario: differences of -0.2 on a mean of about 1.3, identical in every fold.
    expected = []
    for _, group in rows.groupby("scenario"):
        base = group[group["estimator"] == "fixed_effects"]["rmse@train_rows=1-2"].mean()
        expected.append(0.2 / base * 100)
    assert result.percent == pytest.approx(np.mean(expected))
    assert result.low <= result.percent <= result.high and result.n == 10


def test_stratified_interval_ignores_differences_between_strata():
    values = np.r_[np.full(5, 1.0) + np.arange(5) * 0.01, np.full(5, 10.0) + np.arange(5) * 0.01]
    strata = np.repeat(["a", "b"], 5)
    interval = stratified_interval(values, strata, np.zeros(10))
    assert interval.mean == pytest.approx(5.52)
    # Within-stratum spread only: each stratum's sd is 0.0158, so the half-width is small.
    spread = np.var(np.arange(5) * 0.01, ddof=1)
    from scipy import stats

    half = stats.t.ppf(0.975, 8) * np.sqrt(2 * spread / 5) / 2
    assert interval.high - interval.mean == pytest.approx(half)


def test_hostile_labels_are_escaped(tmp_path):
    hostile = "<script>alert(1)</script>"
    rows = _rows(gain=0.2, scenario_label=hostile + "{sd}")
    html = render_report(_store(tmp_path, rows)).read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


CHROMIUM = next(
    (
        path
        for name in ("chromium", "chromium-browser", "google-chrome")
        if (path := shutil.which(name))
    ),
    None,
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DevTools:
    """A minimal DevTools-protocol client: commands by id, events collected."""

    def __init__(self, url: str) -> None:
        websocket = pytest.importorskip("websocket")
        self.connection = websocket.create_connection(url, timeout=30)
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        self.connection.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.connection.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, method: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while not any(event.get("method") == method for event in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(method)
            self.events.append(json.loads(self.connection.recv()))


@pytest.fixture
def browser(tmp_path):
    if CHROMIUM is None:
        pytest.skip("no Chromium here (.ci/run installs it)")
    port = _free_port()
    process = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--remote-debugging-port={port}",
            "--remote-allow-origins=*",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1280,900",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as response:
                    pages = [t for t in json.load(response) if t["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not start")
            time.sleep(0.2)
        client = DevTools(pages[0]["webSocketDebuggerUrl"])
        yield client
        client.connection.close()
    finally:
        process.kill()
        process.wait()


def test_report_loads_in_chromium_without_errors_and_shows_the_leaderboard(browser, tmp_path):
    """Headless Chromium, driven through the DevTools protocol."""
    report = render_report(_store(tmp_path / "sweep", _rows(gain=0.2)))
    for domain in ("Runtime", "Log", "Page", "Network"):
        browser.send(f"{domain}.enable")
    browser.send("Page.navigate", url=report.resolve().as_uri())
    browser.wait_for("Page.loadEventFired")
    state = browser.send(
        "Runtime.evaluate",
        returnByValue=True,
        expression="""(() => {
            const table = document.querySelector('#leaderboard table');
            table.scrollIntoView();
            const box = table.getBoundingClientRect();
            const images = [...document.images];
            return {
                visible: table.checkVisibility({checkOpacity: true, checkVisibilityCSS: true}),
                width: box.width, height: box.height, top: box.top,
                viewport: window.innerHeight,
                rows: table.querySelectorAll('tbody tr').length,
                images: images.length,
                brokenImages: images.filter(i => !i.complete || i.naturalWidth === 0).length,
            };
        })()""",
    )["result"]["value"]
    errors = [
        event
        for event in browser.events
        if event.get("method") in ("Runtime.exceptionThrown", "Network.loadingFailed")
        or (
            event.get("method") == "Runtime.consoleAPICalled"
            and event["params"]["type"] in ("error", "assert")
        )
        or (
            event.get("method") == "Log.entryAdded" and event["params"]["entry"]["level"] == "error"
        )
    ]
    assert errors == []
    assert state["visible"] and state["width"] > 300 and state["height"] > 50
    assert -1 < state["top"] < state["viewport"]  # scrolled into view (to a sub-pixel)
    assert state["rows"] == 2  # fixed_effects and mixed_lm
    assert state["images"] >= 3 and state["brokenImages"] == 0
    shot = base64.b64decode(browser.send("Page.captureScreenshot", format="png")["data"])
    assert shot.startswith(b"\x89PNG") and len(shot) > 10_000


def _two_studies() -> tuple[list[dict], str]:
    """The stored rows plus a second study with its own split scheme, swept parameter
    and estimators (as in the default config), and their config."""
    rows = _rows(gain=0.2)
    for users in (200, 1000):
        for repeat in range(2):
            for estimator, value in (("fixed_effects", 0.060), ("mixed_glm", 0.058)):
                rows.append(
                    {
                        "job_id": f"ctr-{users}-{repeat}-{estimator}",
                        "status": "ok",
                        "scenario": f"ctr_experiment[n_users={users}]",
                        "sim.n_users": users,
                        "repeat": repeat,
                        "split": "fresh_draw[draws=10]",
                        "fold": 0,
                        "estimator": estimator,
                        "n_train": 20 * users,
                        "n_test": 200 * users,
                        "test_train_ratio": 0.0,
                        "fit_seconds": users / 1000 * (2 if estimator == "mixed_glm" else 1),
                        "rmse": value + repeat * 0.001,
                    }
                )
    config = CONFIG.replace(
        "splits:",
        """  - simulator: ctr_experiment
    sweep: {n_users: [200, 1000]}
    splits: [{scheme: fresh_draw, draws: 10}]
    estimators: [fixed_effects, mixed_glm]
splits:""",
    ).replace("[fixed_effects, mixed_lm]", "[fixed_effects, mixed_lm, mixed_glm]")
    return rows, config


def test_scenarios_with_their_own_splits_and_estimators_render(tmp_path):
    """A second study sits beside the first in every figure and table."""
    rows, config = _two_studies()
    html = render_report(_store(tmp_path, rows, config)).read_text()
    assert "ctr_experiment[n_users=1000] · fresh_draw[draws=10]" in html
    assert "rmse against sim" not in html  # captions name the parameter, not the column
    assert "rmse against n_users" in html and "rmse against sd.user" in html
    # The map of regimes names the winner per scenario and split, never pooled.
    assert re.search(
        r"<td>ctr_experiment\[n_users=1000\]</td><td>fresh_draw\[draws=10\]</td><td>rmse</td>"
        r"\s*<td><strong>mixed_glm</strong>",
        html,
    )
    # Fresh draws are independent data sets, and the table says so.
    assert "<th>data sets</th>" in html and "<th>folds</th>" in html


WIDTH = 1400


def test_a_multi_regime_report_fits_1400_pixels_without_horizontal_scrolling(browser, tmp_path):
    rows, config = _two_studies()
    report = render_report(_store(tmp_path / "sweep", rows, config))
    browser.send(
        "Emulation.setDeviceMetricsOverride",
        width=WIDTH,
        height=900,
        deviceScaleFactor=1,
        mobile=False,
    )
    browser.send("Page.enable")
    browser.send("Page.navigate", url=report.resolve().as_uri())
    browser.wait_for("Page.loadEventFired")
    state = browser.send(
        "Runtime.evaluate",
        returnByValue=True,
        expression="""(() => {
            const page = document.documentElement;
            const boxes = [...document.querySelectorAll('.scroll')];
            return {
                page: [page.scrollWidth, page.clientWidth],
                tables: document.querySelectorAll('#leaderboard table.board').length,
                overflowing: boxes.filter(b => b.scrollWidth > b.clientWidth + 1)
                                  .map(b => b.querySelector('th') && b.parentElement.id),
            };
        })()""",
    )["result"]["value"]
    assert WIDTH - 20 <= state["page"][1] <= WIDTH  # the viewport, less any vertical scrollbar
    assert state["page"][0] <= state["page"][1], "the page scrolls horizontally"
    assert state["tables"] == 4  # two scenarios of each study, one split each
    assert state["overflowing"] == [], "a table is wider than the page"


def _fold_rows(levels: dict[str, dict[str, float]], folds: int = 6, sd: float = 0.01) -> list[dict]:
    """Rows of two estimators per scenario whose rmse per fold is ``level`` plus
    fold noise shared by both (paired) and a little of their own."""
    rng = np.random.default_rng(3)
    rows = []
    for scenario, by_estimator in levels.items():
        for fold in range(folds):
            shared = rng.normal(0, sd)
            for estimator, level in by_estimator.items():
                rows.append(
                    {
                        "status": "ok",
                        "scenario": scenario,
                        "repeat": 0,
                        "split": "seen_units",
                        "fold": fold,
                        "estimator": estimator,
                        "n_test": 100,
                        "test_train_ratio": 0.25,
                        "rmse": level + shared + rng.normal(0, sd / 5),
                    }
                )
    return rows


def test_a_model_truly_5_percent_better_is_found_better():
    rows = pd.DataFrame(_fold_rows({"s": {"fixed_effects": 1.0, "mixed_lm": 0.95}}))
    text = " ".join(findings(rows, "rmse", "fixed_effects"))
    assert re.search(r"mixed_lm beats fixed_effects by 5\.\d% rmse", text)


def test_two_copies_of_one_model_are_equivalent_never_better(tiny_config_text, tmp_path):
    import yaml

    from harness.config import parse_config
    from harness.runner import run_sweep

    raw = yaml.safe_load(tiny_config_text)
    raw |= {
        "repeats": 1,
        "estimators": ["fixed_effects", {"name": "fixed_effects", "label": "copy"}, "pooled_ols"],
        "baseline": "fixed_effects",
    }
    config = parse_config(yaml.safe_dump(raw))
    run_sweep(config, tmp_path, progress=False)
    table = pd.read_parquet(tmp_path / "results.parquet")
    for (scenario, split), rows in table.groupby(["scenario", "split"]):
        for column in ("rmse", "rmse@train_rows=3-9", "rmse@seen"):
            if column in rows and rows[column].notna().any():
                result = compare(rows, "copy", "fixed_effects", column, margin=0.5)
                assert result.verdict == "equivalent", (scenario, split, column)
    html = render_report(tmp_path).read_text()
    assert not re.search(r"copy beats|beats copy|copy wins|copy is ahead", html)


def test_a_finding_over_several_scenarios_names_the_one_that_reverses_it():
    levels = {
        "a": {"fixed_effects": 1.0, "mixed_lm": 0.90},
        "b": {"fixed_effects": 1.0, "mixed_lm": 0.92},
        "c": {"fixed_effects": 1.0, "mixed_lm": 1.04},
    }
    text = " ".join(findings(pd.DataFrame(_fold_rows(levels)), "rmse", "fixed_effects"))
    assert "mixed_lm beats fixed_effects" in text
    assert re.search(r"Reversed in c \(-4\.\d%, 95% CI", text)
    agreed = {key: levels[key] for key in ("a", "b")}
    text = " ".join(findings(pd.DataFrame(_fold_rows(agreed)), "rmse", "fixed_effects"))
    assert "No scenario of the 2 it averages reverses it." in text


def test_activity_buckets_that_few_test_rows_fall_in_give_no_sentence():
    rows = pd.DataFrame(_rows(gain=0.2))
    # Nearly every test row's unit has 100+ training rows: 1-2 is no comparison.
    rows["n_test@train_rows=1-2"], rows["n_test@train_rows=100+"] = 5, 95
    text = " ".join(findings(rows, "rmse", "fixed_effects"))
    assert "1-2 training rows" not in text and "100+ training rows" not in text
