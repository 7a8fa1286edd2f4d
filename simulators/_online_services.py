"""Online-services events: many users with heavy-tailed activity, crossed with items,
nested in regions, with a treatment that works differently per user, time effects, and a
Gaussian, binary or count outcome."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from simulators._dataset import FAMILIES, Dataset
from simulators._params import is_int, is_number

DEFAULTS: dict[str, Any] = {
    "n_users": 1000,
    "n_items": 100,
    "n_regions": 10,
    "n_features": 3,
    # Events per user: 1 + Poisson(rate), the rate lognormal with mean `mean - 1` and
    # log-scale sd `tail`; a larger tail gives a heavier tail (more events in fewer users).
    "events_per_user": {"mean": 10.0, "tail": 1.0},
    # Item k of a random popularity order is picked with weight rank**-exponent.
    "item_popularity": {"exponent": 1.0},
    "intercept": 1.0,
    # Coefficient of per-event feature x_k (k = 1, 2, ...) is coef_scale * (-0.5)**(k - 1).
    "coef_scale": 0.5,
    # A per-user covariate (years since sign-up) and its coefficient.
    "account_age": {"mean": 2.0, "coef": 0.1},
    # A per-event treatment indicator with an average effect and a per-user random slope.
    "treatment": {"p": 0.5, "effect": 0.3},
    "sd": {"user": 0.5, "item": 0.3, "region": 0.2, "user_slope": 0.2, "noise": 1.0},
    # Correlation of a user's intercept and treatment slope.
    "correlation": {"user_intercept_slope": 0.0},
    "time": {
        "n_days": 28,
        "weekly_amplitude": 0.2,  # day-of-week effect: amplitude * sin(2 pi weekday / 7)
        "trend": 0.0,  # change of the outcome per day
        "drift_sd": 0.0,  # sd of each user's change of effect over the whole period
    },
    # Nonlinear fixed part for trees to find: strength * (x1 * x2 + 1[x3 > 0.5]).
    "nonlinear": {"strength": 0.0},
    # Gaussian noise sd multiplied by exp(heteroscedasticity * x1) (normalised to mean 1).
    "heteroscedasticity": 0.0,
    "family": "gaussian",
    # Which draw of events for the same units: draw k > 0 gives new events of the same
    # users, items and regions with the same true effects (to score on future data).
    "draw": 0,
}


def check_params(params: dict[str, Any]) -> None:
    """Raise a ValueError naming the first parameter with an invalid value."""
    for name in ["n_users", "n_items", "n_regions"]:
        if not is_int(params[name]) or params[name] < 1:
            raise ValueError(f"params.{name}: expected a positive integer, got {params[name]!r}")
    if not is_int(params["time"]["n_days"]) or params["time"]["n_days"] < 1:
        raise ValueError(
            f"params.time.n_days: expected a positive integer, got {params['time']['n_days']!r}"
        )
    for name in ["n_features", "draw"]:
        if not is_int(params[name]) or params[name] < 0:
            raise ValueError(
                f"params.{name}: expected a non-negative integer, got {params[name]!r}"
            )
    numbers = {
        "intercept": params["intercept"],
        "coef_scale": params["coef_scale"],
        "heteroscedasticity": params["heteroscedasticity"],
        "nonlinear.strength": params["nonlinear"]["strength"],
        "events_per_user.mean": params["events_per_user"]["mean"],
        "events_per_user.tail": params["events_per_user"]["tail"],
        "item_popularity.exponent": params["item_popularity"]["exponent"],
        "account_age.mean": params["account_age"]["mean"],
        "account_age.coef": params["account_age"]["coef"],
        "treatment.p": params["treatment"]["p"],
        "treatment.effect": params["treatment"]["effect"],
        "correlation.user_intercept_slope": params["correlation"]["user_intercept_slope"],
        **{f"sd.{key}": value for key, value in params["sd"].items()},
        **{f"time.{key}": value for key, value in params["time"].items() if key != "n_days"},
    }
    for name, value in numbers.items():
        if not is_number(value):
            raise ValueError(f"params.{name}: expected a number, got {value!r}")
    non_negative = [n for n in numbers if n.startswith("sd.") or n.endswith(("tail", "drift_sd"))]
    for name in [*non_negative, "account_age.mean"]:
        if numbers[name] < 0:
            raise ValueError(f"params.{name}: must be non-negative, got {numbers[name]!r}")
    if params["events_per_user"]["mean"] < 1:
        raise ValueError(
            "params.events_per_user.mean: must be at least 1 (every user has an event), "
            f"got {params['events_per_user']['mean']!r}"
        )
    if not 0 <= params["treatment"]["p"] <= 1:
        raise ValueError(f"params.treatment.p: must be in [0, 1], got {params['treatment']['p']!r}")
    if not -1 <= numbers["correlation.user_intercept_slope"] <= 1:
        raise ValueError("params.correlation.user_intercept_slope: must be in [-1, 1]")
    if params["family"] not in FAMILIES:
        raise ValueError(f"params.family: expected one of {FAMILIES}, got {params['family']!r}")


def _ids(prefix: str, n: int) -> pd.Index:
    width = len(str(n - 1))
    return pd.Index([f"{prefix}{i:0{width}d}" for i in range(n)])


def online_services(seed: int, params: dict[str, Any]) -> Dataset:
    """Simulate user-item events with known effects.

    The linear predictor of an event of user u (in region r) on item i at day t is

        intercept + sum_k coef_k x_k + coef_age * age_u + (effect + s_u) * treat
        + b_u + drift_u * t / n_days + c_i + d_r + weekly(t) + trend * t
        + strength * (x1 x2 + 1[x3 > 0.5])

    with user intercepts and slopes (b_u, s_u) bivariate normal, item effects c_i and
    region effects d_r normal. The outcome is the predictor plus Gaussian noise
    (``family="gaussian"``), Bernoulli with the logistic of it (``"binomial"``), or
    Poisson with its exponential (``"poisson"``).

    Parameters
    ----------
    seed : int
        Seed of the random streams; the same (seed, params) gives the same frame.
    params : dict
        Parameters merged with ``DEFAULTS`` and checked by :func:`check_params`
        (``simulators.simulate`` does both).

    Returns
    -------
    Dataset
        Columns ``user``, ``item``, ``region`` (categorical), ``day``, ``weekday``,
        ``x1..xK``, ``account_age``, ``treat`` and ``y``, in time order. The truth holds
        every generating parameter and each unit's true effects, keyed by unit id.
    """
    n_users, n_items, n_regions = (int(params[k]) for k in ("n_users", "n_items", "n_regions"))
    n_features = int(params["n_features"])
    sd, time = params["sd"], params["time"]
    n_days = int(time["n_days"])

    # Units (effects, activity, popularity, region, covariates) come from a stream that
    # does not depend on the draw, so every draw shows the same units with the same truth.
    units = np.random.default_rng([seed, 0])
    rho = float(params["correlation"]["user_intercept_slope"])
    z = units.standard_normal((n_users, 2))
    user_effect = sd["user"] * z[:, 0]
    user_slope = sd["user_slope"] * (rho * z[:, 0] + np.sqrt(1 - rho**2) * z[:, 1])
    user_drift = units.normal(0.0, time["drift_sd"], n_users)
    item_effect = units.normal(0.0, sd["item"], n_items)
    region_effect = units.normal(0.0, sd["region"], n_regions)
    user_region = units.integers(0, n_regions, n_users)
    account_age = (
        units.exponential(params["account_age"]["mean"], n_users)
        if params["account_age"]["mean"] > 0
        else np.zeros(n_users)
    )
    tail = float(params["events_per_user"]["tail"])
    extra_mean = float(params["events_per_user"]["mean"]) - 1.0
    activity = extra_mean * units.lognormal(-0.5 * tail**2, tail, n_users)
    popularity_rank = units.permutation(n_items) + 1.0
    item_weight = popularity_rank ** -float(params["item_popularity"]["exponent"])
    item_weight /= item_weight.sum()

    events = np.random.default_rng([seed, 1, int(params["draw"])])
    events_per_user = 1 + events.poisson(activity)
    user = np.repeat(np.arange(n_users, dtype=np.int32), events_per_user)
    n_rows = user.size
    item = events.choice(n_items, size=n_rows, p=item_weight).astype(np.int32)
    day = events.integers(0, n_days, size=n_rows, dtype=np.int32)
    features = events.standard_normal((n_rows, n_features))
    treat = (events.random(n_rows) < params["treatment"]["p"]).astype(np.int8)
    coef = float(params["coef_scale"]) * (-0.5) ** np.arange(n_features)

    weekday = day % 7
    eta = float(params["intercept"]) + features @ coef
    eta += params["account_age"]["coef"] * account_age[user]
    eta += (params["treatment"]["effect"] + user_slope[user]) * treat
    eta += user_effect[user] + user_drift[user] * (day / n_days)
    eta += item_effect[item] + region_effect[user_region[user]]
    eta += time["weekly_amplitude"] * np.sin(2 * np.pi * weekday / 7) + time["trend"] * day
    strength = float(params["nonlinear"]["strength"])
    if strength and n_features >= 3:
        eta += strength * (features[:, 0] * features[:, 1] + (features[:, 2] > 0.5))
    family = params["family"]
    if family == "gaussian":
        noise_sd = np.full(n_rows, float(sd["noise"]))
        if params["heteroscedasticity"] and n_features >= 1:
            # Normalised so the mean noise variance stays sd.noise^2.
            h = float(params["heteroscedasticity"])
            noise_sd *= np.exp(h * features[:, 0] - h**2)
        y = eta + noise_sd * events.standard_normal(n_rows)
    elif family == "binomial":
        y = (events.random(n_rows) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    else:
        y = events.poisson(np.exp(np.minimum(eta, 20.0))).astype(float)

    # Events in time order (by day, then user), as a log would hold them.
    order = np.argsort(day.astype(np.int64) * n_users + user, kind="stable")
    user_ids, item_ids, region_ids = _ids("u", n_users), _ids("i", n_items), _ids("r", n_regions)
    feature_names = [f"x{k + 1}" for k in range(n_features)]
    columns = {
        "user": pd.Categorical.from_codes(user[order], categories=user_ids),
        "item": pd.Categorical.from_codes(item[order], categories=item_ids),
        "region": pd.Categorical.from_codes(user_region[user][order], categories=region_ids),
        "day": day[order],
        "weekday": weekday[order],
        **{name: features[order, k] for k, name in enumerate(feature_names)},
        "account_age": account_age[user][order],
        "treat": treat[order],
        "y": y[order],
    }
    frame = pd.DataFrame(columns)
    fixed = {"(Intercept)": float(params["intercept"])}
    fixed |= {name: float(c) for name, c in zip(feature_names, coef, strict=True)}
    fixed |= {
        "account_age": float(params["account_age"]["coef"]),
        "treat": float(params["treatment"]["effect"]),
    }
    truth = {
        "fixed_effects": fixed,
        "sd": {key: float(value) for key, value in sd.items()},
        "correlation": {"user_intercept_slope": rho},
        "unit_effects": {
            "user": pd.Series(user_effect, index=user_ids.rename("user")),
            "user_slope": pd.Series(user_slope, index=user_ids.rename("user")),
            "user_drift": pd.Series(user_drift, index=user_ids.rename("user")),
            "item": pd.Series(item_effect, index=item_ids.rename("item")),
            "region": pd.Series(region_effect, index=region_ids.rename("region")),
        },
        "user_region": pd.Series(region_ids[user_region], index=user_ids.rename("user")),
        "activity": pd.Series(1.0 + activity, index=user_ids.rename("user")),
        "params": params,
    }
    return Dataset(
        frame=frame,
        target="y",
        family=family,
        features=(*feature_names, "account_age", "treat"),
        groups=("user", "item", "region"),
        nesting={"user": "region"},
        time="day",
        truth=truth,
        meta={"name": "online_services", "params": params, "seed": seed},
    )
