"""Bad input and faults: refused with one line naming the field, never a traceback, a
silent wrong answer or a hang."""

import json
import os
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
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


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


# --- data files: roles that share a column ------------------------------------------


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
