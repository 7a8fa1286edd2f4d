"""Bad input and faults: refused with one line naming the field, never a traceback, a
silent wrong answer or a hang."""

import contextlib
import errno
import json
import os
import re
import resource
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
import yaml

import estimators
from harness.cli import main
from harness.config import ConfigError, parse_config
from harness.store import ResultStore


def _with(text: str, **changes) -> str:
    raw = yaml.safe_load(text)
    raw.update(changes)
    return yaml.safe_dump(raw, sort_keys=False)


def _write(tmp_path, text: str, name: str = "sweep.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- estimator parameters: types and documented choices --------------------------------


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"name": "mixed_lm", "params": {"reml": "false"}},
            r"estimators\[0\].params.reml: expected true or false .* got 'false' "
            r"\(text: write false without quotes\)",
        ),
        (
            {"name": "mixed_lm", "params": {"reml": "maybe"}},
            r"estimators\[0\].params.reml: expected true or false",
        ),
        (
            {"name": "mixed_lm", "params": {"solver": "fastest"}},
            r"estimators\[0\].params.solver: expected one of 'auto', 'exact', 'sparse', "
            r"'iterative'",
        ),
        (
            {"name": "hist_gbm", "params": {"learning_rate": "fast"}},
            r"estimators\[0\].params.learning_rate: expected a number .* got 'fast'",
        ),
        (
            {"name": "hist_gbm", "grid": {"max_iter": [10, "many"]}},
            r"estimators\[0\].grid.max_iter: expected an integer .* got 'many'",
        ),
        (
            {"name": "fixed_effects", "params": {"new_levels": "eror"}},
            r"new_levels: expected one of 'population', 'error' .*did you mean 'error'",
        ),
        (
            {"name": "fixed_effects", "params": {"standard_errors": 1}},
            r"standard_errors: expected true or false",
        ),
        (
            {"name": "ridge_onehot", "params": {"alphas": ["small"]}},
            r"alphas: expected a list of numbers",
        ),
    ],
)
def test_estimator_parameters_of_the_wrong_type_or_choice_are_refused(
    tiny_config_text, entry, message
):
    with pytest.raises(ConfigError, match=message):
        parse_config(_with(tiny_config_text, estimators=[entry], baseline=entry["name"]))


def test_reml_given_as_text_is_refused_by_validate(tmp_path, tiny_config_text, capsys):
    text = _with(
        tiny_config_text,
        estimators=[{"name": "mixed_lm", "params": {"reml": "false"}}],
        baseline="mixed_lm",
    )
    assert main(["validate", str(_write(tmp_path, text))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "estimators[0].params.reml" in err


def test_every_estimators_defaults_and_harness_roles_pass_the_parameter_checks(
    tiny_config_text,
):
    """The checks read each class's annotations and documented choices: they must
    accept what every registered estimator uses by default, and the roles the harness
    fills in."""
    roles = {
        "feature_cols": ["x1", "x2"],
        "group_cols": ["user", "item"],
        "group_col": "user",
        "formula": "y ~ x1 + (1 | user)",
    }
    entries = []
    for name in estimators.registered():
        entry = estimators.info(name)
        for k, factory in enumerate([entry.factory, *entry.variants.values()]):
            params = {
                key: list(value) if isinstance(value, tuple) else value
                for key, value in factory().get_params(deep=False).items()
            }
            params |= {key: value for key, value in roles.items() if key in params}
            entries.append({"name": name, "label": f"{name}_{k}", "params": params})
    config = parse_config(_with(tiny_config_text, estimators=entries, baseline=entries[0]["label"]))
    assert len(config.estimators) == len(entries)


def test_well_typed_parameters_still_pass(tiny_config_text):
    entries = [
        {"name": "mixed_lm", "params": {"reml": False, "solver": "exact"}},
        {"name": "hist_gbm", "params": {"learning_rate": 1, "early_stopping": False}},
        {"name": "fixed_effects", "label": "fe", "params": {"group_cols": "user"}},
        {"name": "random_forest", "params": {"max_features": None, "max_samples": 0.5}},
        {"name": "lasso_onehot", "params": {"Cs": [0.1, 1.0], "patience": None}},
    ]
    config = parse_config(_with(tiny_config_text, estimators=entries, baseline="mixed_lm"))
    assert config.estimators[0].params == {"reml": False, "solver": "exact"}


# --- YAML: duplicate keys, aliases, deep nesting ---------------------------------------


def test_a_key_given_twice_is_refused(tiny_config_text):
    text = tiny_config_text + "estimators: [pooled_ols]\n"
    with pytest.raises(ConfigError, match=r"line \d+: key 'estimators' appears twice"):
        parse_config(text)
    nested = tiny_config_text.replace(
        "  - {scheme: random, folds: 3}", "  - {scheme: random, folds: 3, folds: 4}"
    )
    with pytest.raises(ConfigError, match="key 'folds' appears twice"):
        parse_config(nested)


def test_merge_keys_may_be_overridden(tiny_config_text):
    text = tiny_config_text.replace(
        "  - {scheme: random, folds: 3}",
        "  - &base {scheme: random, folds: 3}\n  - {<<: *base, folds: 4}",
    )
    assert [split.folds for split in parse_config(text).splits[:2]] == [3, 4]


def _alias_bomb(levels: int) -> str:
    """About 1 KB of YAML that expands to 9**levels strings."""
    lines = ['  - &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels):
        lines.append(f"  - &a{level} [{','.join([f'*a{level - 1}'] * 9)}]")
    return "\n".join(lines)


def test_an_alias_bomb_is_refused_at_once(tmp_path, tiny_config_text, capsys):
    text = tiny_config_text.replace("name: tiny", "name: tiny\ndescription:\n" + _alias_bomb(9))
    text = text.replace("params: {n_users: 60,", "params: {n_users: *a8,")
    assert len(text) < 2000
    started = time.perf_counter()
    assert main(["validate", str(_write(tmp_path, text))]) == 2
    assert time.perf_counter() - started < 5
    err = capsys.readouterr().err
    assert "expands to more than 100,000 values" in err and len(err) < 300


def test_recursive_aliases_and_deep_nesting_are_refused(tiny_config_text):
    with pytest.raises(ConfigError, match="an alias refers to a collection that contains it"):
        parse_config(tiny_config_text + "description: &loop [*loop]\n")
    with pytest.raises(ConfigError, match="nested more than"):
        parse_config(tiny_config_text + "description: " + "[" * 5000 + "]" * 5000 + "\n")


def test_a_message_quotes_at_most_a_bounded_part_of_a_value(tiny_config_text):
    # 9**4 values pass the size bound; the message quoting them stays short.
    text = tiny_config_text.replace("name: tiny", "name: tiny\ndescription:\n" + _alias_bomb(5))
    text = text.replace("params: {n_users: 60,", "params: {n_users: *a3,")
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    message = str(caught.value)
    assert message.startswith("scenarios[0].params.n_users: expected a positive integer")
    assert len(message) < 1100


# --- subprocesses honour the job's time limit ------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child not yet reaped by its parent is a zombie: dead for our purpose.
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_the_time_limit_kills_an_lme4_fit_and_everything_it_started(tmp_path, small_data):
    from estimators import Lme4
    from harness.runner import JobTimeout, time_limit

    # A stand-in for Rscript that starts a child of its own and never finishes.
    pids = tmp_path / "pids"
    fake = tmp_path / "Rscript"
    fake.write_text(f"#!/bin/sh\nsleep 60 &\necho $$ $! > {pids}\nsleep 60\n")
    fake.chmod(0o755)
    model = Lme4("y ~ x1 + (1 | user)", rscript=str(fake))
    started = time.perf_counter()
    with pytest.raises(JobTimeout), time_limit(1.0):
        model.fit(small_data.X, small_data.y)
    assert time.perf_counter() - started < 3.0
    deadline = time.monotonic() + 2.0
    while any(_alive(int(pid)) for pid in pids.read_text().split()):
        assert time.monotonic() < deadline, "Rscript's process group outlived the time limit"
        time.sleep(0.05)


# --- Ctrl-C and a killed runner: one line, and no process outlives the run -------------


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(status.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            continue
        children.setdefault(parent, []).append(int(status.parent.name))
    found, stack = set(), [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


@pytest.fixture
def hanging_rscript_sweep(tmp_path, tiny_config_text):
    """A sweep whose lme4 jobs hang in a stand-in for Rscript (on the PATH of the run),
    which records its pid and its child's; and the environment to run it in."""
    bin_dir, pids = tmp_path / "bin", tmp_path / "rscript.pids"
    bin_dir.mkdir()
    fake = bin_dir / "Rscript"
    fake.write_text(
        '#!/bin/sh\n[ "$1" = "-e" ] && exit 0\n'  # the load check passes
        f"sleep 60 &\necho $$ $! >> {pids}\nsleep 60\n"
    )
    fake.chmod(0o755)
    text = _with(
        tiny_config_text,
        repeats=1,
        n_jobs=2,
        scenarios=[{"simulator": "online_services", "params": {"n_users": 60}}],
        splits=[{"scheme": "random", "folds": 2}],
        estimators=["pooled_ols", "lme4"],
    )
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    command = [sys.executable, "-m", "harness.cli", "run", str(_write(tmp_path, text))]
    return command + ["--out", str(tmp_path / "out"), "--quiet"], env, pids


def _started(pids: Path, count: int):
    return lambda: pids.exists() and len(pids.read_text().split()) >= 2 * count


def test_ctrl_c_prints_one_line_exits_130_and_kills_every_fit(hanging_rscript_sweep):
    command, env, pids = hanging_rscript_sweep
    run = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for(_started(pids, 2), 60, "the lme4 fits did not start")
        os.killpg(run.pid, signal.SIGINT)  # what a terminal's Ctrl-C sends
        out, err = run.communicate(timeout=10)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 130
    assert err == "mixbench: interrupted; 0 of 4 jobs stored; rerun to resume\n"
    rscripts = [int(pid) for pid in pids.read_text().split()]
    _wait_for(lambda: not any(map(_alive, rscripts)), 2, "an Rscript outlived the run")


def test_workers_and_their_rscripts_die_with_a_killed_runner(hanging_rscript_sweep):
    command, env, pids = hanging_rscript_sweep
    run = subprocess.Popen(command, env=env, start_new_session=True)
    helpers: set[int] = set()
    try:
        _wait_for(_started(pids, 2), 60, "the lme4 fits did not start")
        helpers = _descendants(run.pid)
        run.kill()  # kill -9: the runner cannot stop anything itself
        run.wait()
        _wait_for(
            lambda: not any(map(_alive, helpers)),
            5,
            f"still alive 5 s after the runner: {sorted(filter(_alive, helpers))}",
        )
    finally:
        for pid in helpers | {int(p) for p in pids.read_text().split()}:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


# --- the store: a full disk, an unwritable folder, file modes ---------------------------


def test_a_full_disk_is_named_and_leaves_the_store_sound(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    store.write({"job_id": "a", "status": "ok", "rmse": 1.0})
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, descriptor, mode):
            self.file = real_fdopen(descriptor, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fdopen", FullDisk)
    row = tmp_path / "rows" / "a.parquet"
    with pytest.raises(OSError, match=f"^no space left on device writing {re.escape(str(row))}$"):
        store.write({"job_id": "a", "status": "ok", "rmse": 2.0})
    monkeypatch.undo()
    assert [path.name for path in (tmp_path / "rows").iterdir()] == ["a.parquet"]
    assert store.read()["rmse"].to_list() == [1.0]


def test_a_run_that_cannot_write_its_rows_stops_with_one_line(tmp_path, tiny_config_text):
    """A file-size limit makes every write of a row fail as a full disk would (the
    Parquet writer then reported a thrift error in a 32-line traceback)."""
    text = _with(
        tiny_config_text,
        repeats=1,
        scenarios=[{"simulator": "online_services", "params": {"n_users": 60}}],
        splits=[{"scheme": "random", "folds": 2}],
        estimators=["pooled_ols", "group_mean"],
    )
    config, out = _write(tmp_path, text), tmp_path / "out"
    command = [sys.executable, "-m", "harness.cli", "run", str(config), "--out", str(out)]

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write over it fails, EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    run = subprocess.run(
        [*command, "--quiet"], env=env, capture_output=True, text=True, preexec_fn=limit_file_size
    )
    assert run.returncode == 1
    assert re.fullmatch(
        r"mixbench: error: file too large writing \S+/rows/\w+\.parquet\n", run.stderr
    )
    assert list((out / "rows").iterdir()) == []  # no half-written row, no temporary file
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 0


@pytest.mark.parametrize("kind", ["file", "below_a_file", "unwritable"])
def test_an_output_folder_that_cannot_be_written_is_refused_up_front(
    tmp_path, tiny_config_text, capsys, kind
):
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder")
    if kind == "unwritable":
        if not Path("/proc").is_dir():
            pytest.skip("needs /proc: a folder no one can create files in")
        out = Path("/proc/mixbench-out")
    else:
        out = a_file if kind == "file" else a_file / "sub"
    config = _write(tmp_path, _with(tiny_config_text, repeats=1))
    assert main(["run", str(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mixbench: error: --out: {out}") or f"cannot write to {out}" in err
    assert err.count("\n") == 1


def test_result_files_follow_the_users_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        store = ResultStore(tmp_path)
        store.write({"job_id": "a", "status": "ok", "rmse": 1.0})
        store.consolidate(["a"])
        store.write_text("config.yaml", "name: x\n")
    finally:
        os.umask(previous)
    files = [tmp_path / name for name in ("results.csv", "results.parquet", "config.yaml")]
    for path in [*files, tmp_path / "rows" / "a.parquet"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


# --- reruns: skipped jobs are stored and stay finished ---------------------------------


def test_jobs_skipped_for_their_family_are_not_redone_but_missing_dependencies_are(
    tmp_path, tiny_config_text, monkeypatch
):
    from harness.runner import run_sweep

    config = parse_config(
        _with(
            tiny_config_text,
            repeats=1,
            scenarios=[{"simulator": "online_services", "params": {"n_users": 60}}],
            splits=[{"scheme": "random", "folds": 2}],
            estimators=["pooled_ols", "logistic_ridge"],  # logistic_ridge: binary outcomes
        )
    )
    first = run_sweep(config, tmp_path, progress=False)
    assert (first.n_run, first.n_skipped) == (4, 2)
    again = run_sweep(config, tmp_path, progress=False)
    assert (again.n_run, again.n_reused) == (0, 4)
    # A job skipped because its estimator's dependency is missing is retried.
    monkeypatch.setattr(
        estimators.EstimatorInfo,
        "missing_reason",
        lambda self: "not installed here" if self.name == "pooled_ols" else None,
    )
    missing = run_sweep(config, tmp_path, force=True, progress=False)
    assert missing.n_skipped == 4
    assert run_sweep(config, tmp_path, progress=False).n_run == 2


# --- data files and splits: what every job would trip on is refused before running -----


@pytest.fixture
def data_file(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "user": rng.integers(0, 20, 200).astype(str),
            "years": rng.uniform(0, 10, 200).round(2),
            "x": rng.normal(size=200),
        }
    )
    frame["y"] = frame["x"] + 0.1 * frame["years"] + rng.normal(size=200)
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return path


def test_a_time_column_that_is_also_a_feature_works(tmp_path, tiny_config_text, data_file):
    from harness.runner import run_sweep

    params = {"path": str(data_file), "target": "y", "groups": ["user"]}
    params |= {"features": ["x", "years"], "time": "years"}
    config = parse_config(
        _with(
            tiny_config_text,
            repeats=1,
            scenarios=[{"simulator": "file", "params": params}],
            splits=[{"scheme": "temporal", "cut": 0.8}, {"scheme": "random", "folds": 2}],
            estimators=["pooled_ols", "mixed_lm", "hist_gbm"],
        )
    )
    result = run_sweep(config, tmp_path, progress=False)
    assert (result.n_run, result.n_failed) == (9, 0)
    table = pl.read_parquet(tmp_path / "results.parquet")
    assert all(
        json.loads(cols) == ["x", "years"] for cols in table["est.feature_cols"].drop_nulls()
    )


@pytest.mark.parametrize(
    ("scenario", "split", "message"),
    [
        (
            {"simulator": "online_services", "params": {"n_users": 60}},
            {"scheme": "unseen_units", "by": "usr"},
            r"splits\[0\].by: 'usr' is not a grouping factor of online_services",
        ),
        (
            "file",
            {"scheme": "seen_units", "by": "region"},
            r"splits\[0\].by: 'region' is not a grouping factor of file:data.csv",
        ),
        ("file", {"scheme": "temporal"}, r"splits\[0\].scheme: temporal: .* has no time column"),
        (
            {"simulator": "online_services", "params": {"n_users": 3}},
            {"scheme": "unseen_units", "by": "user", "folds": 5},
            r"splits\[0\].folds: unseen_units: 3 units cannot fill 5 folds",
        ),
    ],
)
def test_split_and_role_errors_are_caught_at_validation(
    tmp_path, tiny_config_text, capsys, data_file, scenario, split, message
):
    if scenario == "file":
        params = {"path": str(data_file), "target": "y", "groups": ["user"], "features": ["x"]}
        scenario = {"simulator": "file", "params": params}
    text = _with(tiny_config_text, scenarios=[scenario], splits=[split])
    assert main(["validate", str(_write(tmp_path, text))]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert re.search(message, captured.err), captured.err


def test_a_very_large_sweep_is_warned_of(tmp_path, tiny_config_text, capsys):
    path = _write(tmp_path, _with(tiny_config_text, warn_jobs=100))
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert "warning: 180 jobs, more than warn_jobs (100)" in err
    path = _write(tmp_path, _with(tiny_config_text))
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().err == ""


# --- labels are text, never mathtext ---------------------------------------------------


def test_estimator_labels_with_dollar_signs_render_as_text(tmp_path, tiny_config_text, capsys):
    text = _with(
        tiny_config_text,
        repeats=1,
        scenarios=[
            {"simulator": "online_services", "label": "a", "params": {"n_users": 60}},
            {"simulator": "online_services", "label": "b", "params": {"n_users": 80}},
        ],
        splits=[{"scheme": "seen_units", "folds": 2}],
        estimators=[
            "pooled_ols",
            {"name": "mixed_lm", "label": "$\\frac{a$ lmm"},
            {"name": "group_mean", "label": "$x^2$"},
        ],
        metrics=["rmse", "vc_error"],
    )
    out = tmp_path / "out"
    assert main(["run", str(_write(tmp_path, text)), "--out", str(out), "--quiet"]) == 0
    html = (out / "index.html").read_text()
    assert "$\\frac{a$ lmm" in html and "data:image/png;base64," in html
