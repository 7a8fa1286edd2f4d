import numpy as np
import pandas as pd
import pytest

from estimators import FixedEffects, PooledOLS
from simulators import simulate


def _dense_dummy_lstsq(frame, features, groups, y):
    """Reference: numpy least squares on the dense treatment-coded design."""
    dummies = pd.get_dummies(frame[groups], columns=groups, drop_first=True, dtype=float)
    design = np.column_stack([np.ones(len(frame)), frame[features].to_numpy(), dummies])
    solution, *_ = np.linalg.lstsq(design, y, rcond=None)
    return solution, design


def test_fixed_effects_match_numpy_least_squares_on_the_dense_design():
    data = simulate("online_services", seed=21, n_users=150, n_items=12)
    # Per-event features and crossed users x items: a full-rank dummy design.
    features, groups = ["x1", "x2", "x3", "treat"], ["user", "item"]
    model = FixedEffects(feature_cols=features, group_cols=groups).fit(data.X, data.y)
    solution, design = _dense_dummy_lstsq(data.frame, features, groups, data.y.to_numpy())

    np.testing.assert_allclose(model.coef_.to_numpy(), solution[1:5], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model.predict(data.X), design @ solution, rtol=1e-8, atol=1e-9)
    # Centred effects: differences between levels equal the dummy coefficients.
    users = model.group_effects_["user"]
    n_users = data.frame["user"].nunique()
    np.testing.assert_allclose(
        (users - users.iloc[0]).to_numpy()[1:], solution[5 : 5 + n_users - 1], atol=1e-8
    )
    assert abs(users.mean()) < 1e-10 and abs(model.group_effects_["item"].mean()) < 1e-10


def test_fixed_effects_recover_the_true_coefficients():
    data = simulate(
        "online_services",
        seed=3,
        n_users=400,
        n_items=30,
        events_per_user={"mean": 20},
        sd={"user_slope": 0.0, "region": 0.0},
        account_age={"coef": 0.0},
    )
    # account_age is constant within a user: absorbed by the user dummies, not identified.
    features = ["x1", "x2", "x3", "treat"]
    model = FixedEffects(feature_cols=features, group_cols=["user", "item"])
    model.fit(data.X, data.y)
    truth = data.truth["fixed_effects"]
    for name in features:
        assert model.coef_[name] == pytest.approx(truth[name], abs=0.03)
    # Users with many events: estimated effects track the true ones closely.
    events = data.frame["user"].value_counts()
    active = events.index[events >= 40]
    assert len(active) > 30
    estimated = model.group_effects_["user"].loc[active]
    assert np.corrcoef(estimated, data.truth["unit_effects"]["user"].loc[active])[0, 1] > 0.9


def test_unseen_levels_get_the_population_part():
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 0.5, 1.5, 2.5], "g": ["a", "a", "a", "b", "b", "b"]})
    y = 2.0 * frame["x"] + np.where(frame["g"] == "a", 1.0, -1.0)
    model = FixedEffects(feature_cols=["x"], group_cols=["g"]).fit(frame, y)
    assert model.coef_["x"] == pytest.approx(2.0)
    assert model.intercept_ == pytest.approx(0.0, abs=1e-10)
    new = pd.DataFrame({"x": [1.0, 1.0], "g": ["a", "zzz"]})
    np.testing.assert_allclose(model.predict(new), [3.0, 2.0], atol=1e-10)


def test_rank_deficient_crossed_design_still_fits_least_squares():
    # Users u0,u1 only meet items i0,i1 and users u2,u3 only items i2,i3: two disconnected
    # blocks, so the user and item effects are identified only up to a shift per block.
    rng = np.random.default_rng(0)
    users = np.repeat(["u0", "u1", "u2", "u3"], 10)
    items = np.where(
        np.isin(users, ["u0", "u1"]), rng.choice(["i0", "i1"], 40), rng.choice(["i2", "i3"], 40)
    )
    frame = pd.DataFrame({"x": rng.normal(size=40), "user": users, "item": items})
    y = frame["x"].to_numpy() + rng.normal(size=40)
    model = FixedEffects(feature_cols=["x"], group_cols=["user", "item"]).fit(frame, y)
    solution, design = _dense_dummy_lstsq(frame, ["x"], ["user", "item"], y)
    np.testing.assert_allclose(model.predict(frame), design @ solution, atol=1e-8)
    assert model.coef_["x"] == pytest.approx(solution[1], abs=1e-8)


def test_thousands_of_levels_fit_sparse():
    data = simulate(
        "online_services", seed=8, n_users=5000, n_items=500, events_per_user={"mean": 4}
    )
    model = FixedEffects(feature_cols=list(data.features), group_cols=["user", "item"])
    model.fit(data.X, data.y)
    assert len(model.group_effects_["user"]) == 5000
    assert model.solver_info_["stop_reason"] in (1, 2)


def test_pooled_ols_matches_numpy_least_squares(small_data):
    features = list(small_data.features)
    model = PooledOLS(feature_cols=features).fit(small_data.X, small_data.y)
    design = np.column_stack([np.ones(small_data.n_rows), small_data.frame[features]])
    solution, *_ = np.linalg.lstsq(design, small_data.y.to_numpy(), rcond=None)
    assert model.intercept_ == pytest.approx(solution[0])
    np.testing.assert_allclose(model.coef_.to_numpy(), solution[1:])


@pytest.mark.parametrize(
    ("make", "X", "y", "message"),
    [
        (
            lambda: FixedEffects(feature_cols=["x"], group_cols=["user"]),
            pd.DataFrame({"x": [1.0, 2.0], "g": ["a", "b"]}),
            [1.0, 2.0],
            r"group_cols: column\(s\) \['user'\] not found in X",
        ),
        (
            lambda: PooledOLS(feature_cols=["x"]),
            pd.DataFrame({"x": ["a", "b"]}),
            [1.0, 2.0],
            "feature_cols: column 'x' is not numeric",
        ),
        (
            lambda: PooledOLS(feature_cols=["x"]),
            pd.DataFrame({"x": [1.0, np.nan]}),
            [1.0, 2.0],
            "feature_cols: column 'x' has 1 row",
        ),
        (
            lambda: PooledOLS(),
            pd.DataFrame({"x": [1.0, 2.0]}),
            [1.0],
            "y: has 1 values but X has 2 rows",
        ),
        (
            lambda: PooledOLS(),
            pd.DataFrame({"x": [1.0, 2.0]}),
            [1.0, np.inf],
            "y: 1 missing or infinite",
        ),
        (
            lambda: FixedEffects(feature_cols=["x"], group_cols=["g"]),
            pd.DataFrame({"x": [1.0, 2.0], "g": ["a", None]}),
            [1.0, 2.0],
            "group column 'g' has 1 missing value",
        ),
    ],
)
def test_bad_input_names_the_column(make, X, y, message):
    with pytest.raises(ValueError, match=message):
        make().fit(X, y)


# -- Standard errors and intervals, against statsmodels OLS on the dense dummy design --


def _dense_ols(frame, features, groups, y):
    """Reference: statsmodels OLS on the dense treatment-coded design (pinv, so it also
    handles rank-deficient designs); its first 1 + len(features) parameters are ours."""
    import warnings

    import statsmodels.api as sm
    from threadpoolctl import threadpool_limits

    # One BLAS thread: threaded SVDs of these small designs crawl on a busy machine.
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        if groups:
            _, design = _dense_dummy_lstsq(frame, features, groups, y)
        else:
            design = np.column_stack([np.ones(len(frame)), frame[features].to_numpy()])
        # Rank-deficient designs are intended in some tests; pinv handles them.
        warnings.simplefilter("ignore")
        return sm.OLS(y, design).fit()


def _assert_inference_matches(model, reference, n_features, *, skip_intercept, rtol=1e-8):
    """SEs, t values, 95% and 90% intervals, sigma and residual df agree with ``reference``."""
    rows = slice(1 if skip_intercept else 0, 1 + n_features)
    estimates = np.concatenate([[model.intercept_], model.coef_.to_numpy()])
    standard_errors = model.coef_se_.to_numpy()
    np.testing.assert_allclose(standard_errors[rows], reference.bse[rows], rtol=rtol)
    np.testing.assert_allclose(
        (estimates / standard_errors)[rows], reference.tvalues[rows], rtol=rtol
    )
    for level, columns in ((0.95, ["2.5 %", "97.5 %"]), (0.9, ["5.0 %", "95.0 %"])):
        interval = model.confint(level)
        assert list(interval.columns) == columns
        assert list(interval.index) == ["(Intercept)", *model.coef_.index]
        np.testing.assert_allclose(
            interval.to_numpy()[rows], reference.conf_int(1 - level)[rows], rtol=rtol
        )
    assert model.df_resid_ == pytest.approx(reference.df_resid)
    assert model.sigma_ == pytest.approx(np.sqrt(reference.scale), rel=rtol)


def test_pooled_ols_inference_matches_statsmodels(small_data):
    features = list(small_data.features)
    model = PooledOLS(feature_cols=features).fit(small_data.X, small_data.y)
    reference = _dense_ols(small_data.frame, features, [], small_data.y.to_numpy())
    _assert_inference_matches(model, reference, len(features), skip_intercept=False)
    assert model.rank_ == 1 + len(features)
    assert list(model.coef_se_.index) == ["(Intercept)", *features]
    table = model.summary()
    assert "Std. Error" in table and "t value" in table
    assert f"{model.coef_['x1'] / model.coef_se_['x1']:.4f}" in table
    assert f"on {model.df_resid_} degrees of freedom" in table


def test_fixed_effects_one_factor_inference_matches_statsmodels(small_data):
    features = ["x1", "x2", "x3", "treat"]
    model = FixedEffects(feature_cols=features, group_cols=["user"], standard_errors=True)
    model.fit(small_data.X, small_data.y)
    reference = _dense_ols(small_data.frame, features, ["user"], small_data.y.to_numpy())
    _assert_inference_matches(model, reference, len(features), skip_intercept=True)
    assert np.isnan(model.coef_se_["(Intercept)"])
    assert model.confint().loc["(Intercept)"].isna().all()
    assert model.rank_ == 1 + len(features) + small_data.frame["user"].nunique() - 1
    assert model.solver_info_["within_iterations"] == []


def test_fixed_effects_crossed_factors_inference_matches_statsmodels():
    data = simulate("online_services", seed=21, n_users=150, n_items=12)
    features, groups = ["x1", "x2", "x3", "treat"], ["user", "item"]
    model = FixedEffects(feature_cols=features, group_cols=groups, standard_errors=True).fit(
        data.X, data.y
    )
    reference = _dense_ols(data.frame, features, groups, data.y.to_numpy())
    _assert_inference_matches(model, reference, len(features), skip_intercept=True)
    n_levels = data.frame["user"].nunique() + data.frame["item"].nunique()
    assert model.rank_ == len(features) + n_levels - 1
    assert model.solver_info_["rank_exact"]
    assert len(model.solver_info_["within_iterations"]) == len(features)


def test_disconnected_crossed_factors_lose_one_dimension_per_component():
    # Two blocks of users and items that never meet: the dummies span levels - 2 dimensions.
    rng = np.random.default_rng(4)
    users = rng.choice([f"u{k}" for k in range(12)], 300)
    block = np.isin(users, [f"u{k}" for k in range(6)])
    items = np.where(block, rng.choice(["i0", "i1", "i2"], 300), rng.choice(["i3", "i4"], 300))
    frame = pd.DataFrame(
        {"x": rng.normal(size=300), "z": rng.normal(size=300), "user": users, "item": items}
    )
    y = frame["x"] - 0.5 * frame["z"] + rng.normal(size=300)
    model = FixedEffects(
        feature_cols=["x", "z"], group_cols=["user", "item"], standard_errors=True
    ).fit(frame, y)
    reference = _dense_ols(frame, ["x", "z"], ["user", "item"], y.to_numpy())
    assert model.rank_ == 2 + 12 + 5 - 2 == np.linalg.matrix_rank(reference.model.exog)
    _assert_inference_matches(model, reference, 2, skip_intercept=True)


def test_nested_factor_and_absorbed_feature_are_not_counted():
    # Region is constant within user and account_age is a user attribute: neither adds a
    # dimension, and account_age's coefficient is not identified.
    data = simulate("online_services", seed=5, n_users=80, n_items=10)
    features, groups = ["x1", "x2", "account_age", "treat"], ["user", "item", "region"]
    model = FixedEffects(feature_cols=features, group_cols=groups, standard_errors=True).fit(
        data.X, data.y
    )
    reference = _dense_ols(data.frame, features, groups, data.y.to_numpy())
    assert model.rank_ == np.linalg.matrix_rank(reference.model.exog)
    assert model.df_resid_ == reference.df_resid
    assert model.solver_info_["rank_exact"]
    assert np.isnan(model.coef_se_["account_age"])
    identified = ["x1", "x2", "treat"]
    positions = [1 + features.index(name) for name in identified]
    np.testing.assert_allclose(
        model.coef_se_[identified].to_numpy(), reference.bse[positions], rtol=1e-8
    )


def test_confint_refuses_a_level_outside_zero_one(small_data):
    model = PooledOLS(feature_cols=["x1"]).fit(small_data.X, small_data.y)
    with pytest.raises(ValueError, match="level: expected a number strictly between 0 and 1"):
        model.confint(95)


@pytest.mark.parametrize("experiment", [1, 2])
def test_archers_bow_effect_is_clear_once_archers_are_accounted_for(experiment):
    # Experiment 1: 3 archers x 2 bows x 10 shots; experiment 2: 50 archers.
    data = simulate("archers", seed=11, experiment=experiment)
    truth = data.truth["fixed_effects"]["southwood"]
    fixed = FixedEffects(feature_cols=["southwood"], group_cols=["archer"], standard_errors=True)
    fixed_interval = fixed.fit(data.frame, data.y).confint().loc["southwood"]
    pooled = PooledOLS(feature_cols=["southwood"]).fit(data.frame, data.y)
    pooled_interval = pooled.confint().loc["southwood"]
    # Balanced: every archer shoots both bows equally, so the estimates agree and only
    # the residual spread (archer differences left in or taken out) differs.
    assert fixed.coef_["southwood"] == pytest.approx(pooled.coef_["southwood"])
    assert fixed_interval["97.5 %"] < 0
    assert fixed_interval["2.5 %"] < truth < fixed_interval["97.5 %"]
    assert abs(fixed.coef_["southwood"] - truth) < 2
    fixed_width = fixed_interval["97.5 %"] - fixed_interval["2.5 %"]
    assert pooled_interval["97.5 %"] - pooled_interval["2.5 %"] > 2 * fixed_width
    assert fixed.df_resid_ == len(data.frame) - data.frame["archer"].nunique() - 1


@pytest.mark.r
def test_inference_matches_r_lm(tmp_path):
    import shutil
    import subprocess

    if shutil.which("Rscript") is None:
        pytest.skip("Rscript not found")
    data = simulate("online_services", seed=21, n_users=60, n_items=8)
    features, groups = ["x1", "x2", "treat"], ["user", "item"]
    frame = data.frame[[*features, *groups]].assign(y=data.y)
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    script = (
        f"d <- read.csv('{path}'); d$user <- factor(d$user); d$item <- factor(d$item); "
        "for (f in list(y ~ x1 + x2 + treat, y ~ x1 + x2 + treat + user + item)) {"
        "fit <- lm(f, d); s <- coef(summary(fit))[2:4, ]; ci <- confint(fit)[2:4, ]; "
        "cat(sprintf('%.17g', c(s[, 2], s[, 3], ci[, 1], ci[, 2], sigma(fit), "
        "df.residual(fit))), '\\n')}"
    )
    output = subprocess.run(
        ["Rscript", "-e", script], capture_output=True, text=True, check=True
    ).stdout
    expected = [np.array(line.split(), dtype=float) for line in output.strip().splitlines()]
    models = [
        PooledOLS(feature_cols=features),
        FixedEffects(feature_cols=features, group_cols=groups, standard_errors=True),
    ]
    for model, values in zip(models, expected, strict=True):
        model.fit(frame, frame["y"])
        interval = model.confint().loc[features]
        ours = np.concatenate(
            [
                model.coef_se_[features],
                model.coef_[features] / model.coef_se_[features],
                interval["2.5 %"],
                interval["97.5 %"],
                [model.sigma_, model.df_resid_],
            ]
        )
        np.testing.assert_allclose(ours, values, rtol=1e-8)


def test_fixed_effects_skip_standard_errors_unless_asked(small_data):
    model = FixedEffects(feature_cols=["x1"], group_cols=["user", "item"]).fit(
        small_data.X, small_data.y
    )
    assert not hasattr(model, "coef_se_")
    with pytest.raises(ValueError, match="fitted without standard errors; fit with standard_er"):
        model.confint()


def _dense_wls(frame, features, groups, y, weight):
    """Reference: statsmodels WLS (lm with weights) on the dense treatment-coded design."""
    import statsmodels.api as sm

    if groups:
        _, design = _dense_dummy_lstsq(frame, features, groups, y)
    else:
        design = np.column_stack([np.ones(len(frame)), frame[features].to_numpy()])
    return sm.WLS(y, design, weights=weight).fit()


@pytest.mark.parametrize("groups", [[], ["user"], ["user", "item"]])
def test_weighted_fits_and_inference_match_weighted_least_squares(groups):
    """sample_weight is lm's weights: coefficients, standard errors, intervals, sigma and
    residual df of weighted least squares; rows of weight 0 are not counted in n."""
    data = simulate("online_services", seed=21, n_users=150, n_items=12)
    features = ["x1", "x2", "x3", "treat"]
    weight = np.random.default_rng(3).uniform(0.2, 3.0, data.n_rows)
    weight[:40] = 0.0
    kept = weight > 0
    if groups:
        model = FixedEffects(feature_cols=features, group_cols=groups, standard_errors=True)
    else:
        model = PooledOLS(feature_cols=features)
    model.fit(data.X, data.y, sample_weight=weight)
    frame, y = data.frame[kept], data.y.to_numpy()[kept]
    reference = _dense_wls(frame, features, groups, y, weight[kept])
    np.testing.assert_allclose(
        model.coef_.to_numpy(), reference.params[1 : 1 + len(features)], rtol=1e-7
    )
    _assert_inference_matches(
        model, reference, len(features), skip_intercept=bool(groups), rtol=1e-6
    )
