from pathlib import Path

import pytest
import yaml

from harness.config import ConfigError, load_config, parse_config
from harness.jobs import all_jobs, expand

ROOT = Path(__file__).resolve().parents[2]


def _with(text: str, **changes) -> str:
    raw = yaml.safe_load(text)
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return yaml.safe_dump(raw)


def test_tiny_config_expands_to_the_product_of_its_parts(tiny_config_text):
    config = parse_config(tiny_config_text)
    assert [s.label for s in config.scenarios] == [
        "online_services[sd.user=0.2]",
        "online_services[sd.user=1.0]",
    ]
    assert config.scenarios[1].params["sd"]["user"] == 1.0
    assert config.scenarios[1].params["events_per_user"]["mean"] == 6
    # 2 scenarios x 2 repeats x (3 + 3 + 3) folds x 4 estimators
    assert len(all_jobs(expand(config))) == 2 * 2 * 9 * 5
    assert len({job.job_id for job in all_jobs(expand(config))}) == 180


def test_estimator_grid_expands_with_printable_labels(tiny_config_text):
    text = _with(
        tiny_config_text,
        estimators=[
            "pooled_ols",
            {"name": "hist_gbm", "params": {"max_iter": 5}, "grid": {"learning_rate": [0.05, 0.1]}},
        ],
    )
    config = parse_config(text)
    assert [spec.label for spec in config.estimators] == [
        "pooled_ols",
        "hist_gbm[learning_rate=0.05]",
        "hist_gbm[learning_rate=0.1]",
    ]
    assert config.estimators[2].params == {"max_iter": 5, "learning_rate": 0.1}


def test_seeds_follow_identity_not_position(tiny_config_text):
    config = parse_config(tiny_config_text)
    fewer = parse_config(_with(tiny_config_text, estimators=["hist_gbm", "pooled_ols"]))
    ids = {job.job_id: job.dataset_seed for job in all_jobs(expand(config))}
    for job in all_jobs(expand(fewer)):
        if job.estimator.name == "pooled_ols":
            assert ids[job.job_id] == job.dataset_seed


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": None}, "name: required field is missing"),
        ({"name": "../evil"}, "name: expected letters"),
        ({"repeat": 3}, "repeat: unknown field; did you mean 'repeats'"),
        ({"repeats": 0}, "repeats: must be at least 1"),
        ({"seed": "x"}, "seed: expected an integer, got 'x'"),
        ({"scenarios": []}, "scenarios: must not be empty"),
        (
            {"scenarios": [{"simulator": "online_service"}]},
            "scenarios\\[0\\].simulator: unknown simulator 'online_service'; "
            "did you mean 'online_services'",
        ),
        (
            {"scenarios": [{"simulator": "online_services", "params": {"n_user": 5}}]},
            "scenarios\\[0\\].params.n_user: unknown parameter; did you mean 'n_users'",
        ),
        (
            {"scenarios": [{"simulator": "online_services", "params": {"n_users": "many"}}]},
            "scenarios\\[0\\].params.n_users: expected a positive integer",
        ),
        (
            {"scenarios": [{"simulator": "online_services", "sweep": {"sd.usr": [1, 2]}}]},
            "scenarios\\[0\\].sweep.sd.usr: unknown parameter; did you mean 'user'",
        ),
        (
            {"scenarios": [{"simulator": "online_services", "sweep": {"n_users": 5}}]},
            "scenarios\\[0\\].sweep.n_users: expected a non-empty list",
        ),
        (
            {"splits": [{"scheme": "unseen_unit"}]},
            "splits\\[0\\].scheme: unknown split scheme 'unseen_unit'; did you mean 'unseen_units'",
        ),
        ({"splits": [{"scheme": "random", "folds": 1}]}, "splits\\[0\\].folds: must be at least 2"),
        ({"splits": [{"scheme": "random", "by": "user"}]}, "splits\\[0\\].by: the random scheme"),
        (
            {"estimators": ["pooled_ol"]},
            "estimators\\[0\\].name: unknown estimator 'pooled_ol'; did you mean 'pooled_ols'",
        ),
        (
            {"estimators": [{"name": "hist_gbm", "params": {"learning_rat": 0.1}}]},
            "estimators\\[0\\].params.learning_rat: hist_gbm has no parameter 'learning_rat'",
        ),
        (
            {"estimators": [{"name": "hist_gbm", "grid": {"max_iter": []}}]},
            "estimators\\[0\\].grid.max_iter: expected a non-empty list",
        ),
        ({"estimators": [{"name": ["a"]}]}, "estimators\\[0\\].name: expected a name"),
        ({"splits": [{"scheme": 5}]}, "splits\\[0\\].scheme: expected a name"),
        ({"estimators": ["pooled_ols", "pooled_ols"]}, "label 'pooled_ols' is used twice"),
        (
            {"metrics": ["rmse", "rmsee"]},
            "metrics\\[1\\]: unknown metric 'rmsee'; did you mean 'rmse'",
        ),
        ({"baseline": "fixed_effect"}, "baseline: 'fixed_effect' is not one of the estimators"),
        (
            {"splits": [{"scheme": "temporal", "cut": 1.5}]},
            "splits\\[0\\].cut: expected a fraction of the rows in \\(0, 1\\)",
        ),
        (
            {"splits": [{"scheme": "temporal", "gap": -1}]},
            "splits\\[0\\].gap: expected a time span >= 0",
        ),
        (
            {"splits": [{"scheme": "random", "cut": 0.5}]},
            "splits\\[0\\].cut: the random scheme takes no 'cut' Its options: folds, shuffle",
        ),
        (
            {"splits": [{"scheme": "seen_units", "shufle": False}]},
            "splits\\[0\\].shufle: the seen_units scheme takes no 'shufle'; did you mean 'shuffle'",
        ),
        ({"splits": [{"scheme": "random", "shuffle": "no"}]}, "shuffle: expected true or false"),
        ({"splits": [{"scheme": "fresh_draw", "draws": 0}]}, "draws: must be at least 1"),
        ({"time_limit": 0}, "time_limit: expected a positive number of seconds"),
        ({"backend": "dusk"}, "backend: unknown backend 'dusk'; did you mean 'dask'"),
        ({"scheduler": "tcp://x:1"}, "scheduler: expected the address of a dask scheduler"),
        (
            {"scenarios": [{"simulator": "online_services", "sweep": {"n_users, sd.user": [[5]]}}]},
            "sweep.n_users, sd.user\\[0\\]: expected a list of 2 values",
        ),
    ],
)
def test_each_kind_of_mistake_names_its_path(tiny_config_text, changes, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_with(tiny_config_text, **changes))


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config("name: [unclosed")
    with pytest.raises(ConfigError, match="expected a mapping of fields"):
        parse_config("- a list")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_shipped_configs_are_valid():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        assert all_jobs(expand(load_config(path))), path


def test_joint_keys_vary_together_and_split_options_label_the_split(tiny_config_text):
    config = parse_config(
        _with(
            tiny_config_text,
            scenarios=[
                {
                    "simulator": "online_services",
                    "params": {"n_users": 60},
                    "sweep": {"n_items, sd.item": [[10, 0.5], [20, 0.1]], "sd.user": [0.2, 0.4]},
                }
            ],
            splits=[
                {"scheme": "temporal", "cut": [0.6, 0.8], "gap": 1},
                {"scheme": "fresh_draw", "draws": 3},
                {"scheme": "random", "folds": 2, "shuffle": False},
            ],
        )
    )
    points = [
        (s.params["n_items"], s.params["sd"]["item"], s.params["sd"]["user"])
        for s in config.scenarios
    ]
    assert points == [(10, 0.5, 0.2), (10, 0.5, 0.4), (20, 0.1, 0.2), (20, 0.1, 0.4)]
    temporal, fresh, random = config.splits
    assert (temporal.folds, temporal.cut, temporal.gap) == (2, (0.6, 0.8), 1.0)
    assert temporal.label == "temporal[cut=[0.6, 0.8], gap=1.0]"
    assert (fresh.folds, fresh.draws, fresh.label) == (1, 3, "fresh_draw[draws=3]")
    assert random.label == "random[shuffle=false]"
    assert random.as_dict() == {"scheme": "random", "folds": 2, "shuffle": False}


def test_fresh_draws_need_a_simulator_that_can_draw_again(tiny_config_text, tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("user,x,y\nu1,0.5,1.0\nu2,0.1,2.0\n")
    scenario = {
        "simulator": "file",
        "params": {"path": str(path), "target": "y", "groups": ["user"]},
    }
    with pytest.raises(ConfigError, match="splits\\[0\\].scheme: fresh_draw needs a simulator"):
        parse_config(
            _with(tiny_config_text, scenarios=[scenario], splits=[{"scheme": "fresh_draw"}])
        )


def test_a_scenario_may_bring_its_own_splits_and_estimators(tiny_config_text):
    from harness.jobs import all_jobs, expand

    config = parse_config(
        _with(
            tiny_config_text,
            repeats=1,
            scenarios=[
                {"simulator": "online_services", "params": {"n_users": 60}},
                {
                    "simulator": "online_services",
                    "label": "binary",
                    "params": {"n_users": 60, "family": "binomial"},
                    "splits": [{"scheme": "fresh_draw", "draws": 2}],
                    "estimators": ["fixed_effects", "hist_gbm"],
                },
            ],
        )
    )
    first, second = config.scenarios
    jobs = all_jobs(expand(config))
    assert {job.split.scheme for job in jobs if job.scenario == first} == {
        "random",
        "seen_units",
        "unseen_units",
    }
    own = [job for job in jobs if job.scenario == second]
    assert {job.split.scheme for job in own} == {"fresh_draw"}
    assert {job.estimator.label for job in own} == {"fixed_effects", "hist_gbm"}
    assert len(jobs) == 9 * 5 + 2
    with pytest.raises(ConfigError, match=r"scenarios\[0\].estimators\[0\]: 'mixed_glm' is not"):
        parse_config(
            _with(
                tiny_config_text,
                scenarios=[{"simulator": "online_services", "estimators": ["mixed_glm"]}],
            )
        )


def test_scenarios_are_named_by_their_label_and_names_never_collide(tiny_config_text):
    scenarios = [
        {"simulator": "online_services", "label": "well_specified", "params": {"n_users": 60}},
        {
            "simulator": "online_services",
            "label": "drift",
            "params": {"n_users": 60, "time": {"drift_sd": 1.0}},
            "sweep": {"sd.user": [0.2, 0.5]},
        },
    ]
    config = parse_config(_with(tiny_config_text, scenarios=scenarios))
    assert [scenario.label for scenario in config.scenarios] == [
        "well_specified",
        "drift[sd.user=0.2]",
        "drift[sd.user=0.5]",
    ]
    assert [scenario.regime for scenario in config.scenarios] == [
        "well_specified",
        "drift",
        "drift",
    ]
    # Two unlabelled scenarios of one simulator would share its name: refused.
    unlabelled = [{"simulator": "online_services"}, {"simulator": "online_services"}]
    with pytest.raises(
        ConfigError, match=r"scenarios\[1\].label: scenarios\[0\] is already called"
    ):
        parse_config(_with(tiny_config_text, scenarios=unlabelled))
    twice = [dict(scenarios[0]), dict(scenarios[0], params={"n_users": 80})]
    with pytest.raises(ConfigError, match="'well_specified'"):
        parse_config(_with(tiny_config_text, scenarios=twice))
    # A label is text for tables and plots, never markup.
    with pytest.raises(ConfigError, match=r"scenarios\[0\].label: expected letters"):
        parse_config(_with(tiny_config_text, scenarios=[dict(scenarios[0], label="$x$")]))


def test_a_scenario_may_set_its_own_number_of_data_sets(tiny_config_text):
    scenarios = [
        {"simulator": "online_services", "label": "few", "params": {"n_users": 60}},
        {"simulator": "online_services", "label": "many", "params": {"n_users": 60}, "repeats": 5},
    ]
    config = parse_config(_with(tiny_config_text, repeats=2, scenarios=scenarios))
    repeats = {
        scenario.label: {task.repeat for task in expand(config) if task.scenario == scenario}
        for scenario in config.scenarios
    }
    assert repeats == {"few": {0, 1}, "many": {0, 1, 2, 3, 4}}
    with pytest.raises(ConfigError, match=r"scenarios\[0\].repeats: must be at least 1"):
        parse_config(_with(tiny_config_text, scenarios=[dict(scenarios[0], repeats=0)]))


def test_a_scenario_lists_relabelled_estimators_by_their_label(tiny_config_text):
    estimators_ = [
        "mixed_lm",
        {"name": "mixed_lm", "label": "slopes", "params": {"reml": False}},
        {"name": "hist_gbm", "grid": {"max_iter": [10, 20]}},
    ]
    scenarios = [{"simulator": "online_services", "estimators": ["mixed_lm", "hist_gbm"]}]
    config = parse_config(
        _with(tiny_config_text, scenarios=scenarios, estimators=estimators_, baseline="mixed_lm")
    )
    ran = {job.estimator.label for job in all_jobs(expand(config))}
    assert ran == {"mixed_lm", "hist_gbm[max_iter=10]", "hist_gbm[max_iter=20]"}
