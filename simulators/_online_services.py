"""Online-services events: many users with heavy-tailed activity, crossed with items."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from simulators._dataset import Dataset

DEFAULTS: dict[str, Any] = {
    "n_users": 1000,
    "n_items": 100,
    "n_features": 3,
    # Events per user: 1 + Poisson(rate), rate lognormal with this mean (minus the
    # guaranteed first event) and log-scale sd `tail`; larger tail = heavier tail.
    "events_per_user": {"mean": 10.0, "tail": 1.0},
    # Item i (in a random order of popularity) is picked with weight rank**-exponent.
    "item_popularity": {"exponent": 1.0},
    "intercept": 1.0,
    # Coefficient of feature k (0-based) is coef_scale * (-0.5)**k.
    "coef_scale": 0.5,
    "sd": {"user": 0.5, "item": 0.3, "noise": 1.0},
    "n_days": 28,
    # Which draw of events for the same units: draw k > 0 gives new events of the
    # same users and items with the same true effects (for scoring on future data).
    "draw": 0,
}


def check_params(params: dict[str, Any]) -> None:
    """Raise a ValueError naming the first parameter with an invalid value."""
    positive_ints = ["n_users", "n_items", "n_days"]
    for name in positive_ints:
        value = params[name]
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
            raise ValueError(f"params.{name}: expected a positive integer, got {value!r}")
    for name in ["n_features", "draw"]:
        value = params[name]
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
            raise ValueError(f"params.{name}: expected a non-negative integer, got {value!r}")
    numbers = {
        "events_per_user.mean": params["events_per_user"]["mean"],
        "events_per_user.tail": params["events_per_user"]["tail"],
        "item_popularity.exponent": params["item_popularity"]["exponent"],
        "intercept": params["intercept"],
        "coef_scale": params["coef_scale"],
        **{f"sd.{k}": v for k, v in params["sd"].items()},
    }
    for name, value in numbers.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or not np.isfinite(value):
            raise ValueError(f"params.{name}: expected a number, got {value!r}")
    if params["events_per_user"]["mean"] < 1:
        raise ValueError(
            f"params.events_per_user.mean: must be at least 1 (every user has an event), "
            f"got {params['events_per_user']['mean']!r}"
        )
    for name, value in numbers.items():
        if (name.startswith("sd.") or name.endswith("tail")) and value < 0:
            raise ValueError(f"params.{name}: must be non-negative, got {value!r}")


def _unit_ids(prefix: str, n: int) -> np.ndarray:
    width = len(str(n - 1))
    return np.array([f"{prefix}{i:0{width}d}" for i in range(n)], dtype=object)


def online_services(seed: int, params: dict[str, Any]) -> Dataset:
    """Simulate user-item events with a Gaussian outcome and known effects.

    ``y = intercept + sum_k coef_k * x_k + b_user + b_item + noise``, with
    ``b_user ~ N(0, sd.user^2)``, ``b_item ~ N(0, sd.item^2)`` and Gaussian noise.
    Users' activity is heavy-tailed (most have a few events, a few have very many)
    and items' popularity follows a Zipf-like law.

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
        Columns ``user``, ``item``, ``day``, ``x1..xK`` and ``y``; the truth holds the
        fixed effects, the standard deviations and every unit's true effect.
    """
    n_users, n_items = int(params["n_users"]), int(params["n_items"])
    n_features = int(params["n_features"])
    sd = params["sd"]
    # Units (their effects, activity and popularity) come from a stream that does not
    # depend on the draw, so every draw shows the same units with the same truth.
    unit_rng = np.random.default_rng([seed, 0])
    user_effect = unit_rng.normal(0.0, sd["user"], n_users)
    item_effect = unit_rng.normal(0.0, sd["item"], n_items)
    tail = float(params["events_per_user"]["tail"])
    extra_mean = float(params["events_per_user"]["mean"]) - 1.0
    activity = extra_mean * unit_rng.lognormal(-0.5 * tail**2, tail, n_users)
    popularity_rank = unit_rng.permutation(n_items) + 1.0
    item_weight = popularity_rank ** -float(params["item_popularity"]["exponent"])
    item_weight /= item_weight.sum()

    event_rng = np.random.default_rng([seed, 1, int(params["draw"])])
    events_per_user = 1 + event_rng.poisson(activity)
    user_index = np.repeat(np.arange(n_users), events_per_user)
    n_rows = user_index.size
    item_index = event_rng.choice(n_items, size=n_rows, p=item_weight)
    day = event_rng.integers(0, int(params["n_days"]), size=n_rows)
    features = event_rng.normal(size=(n_rows, n_features))
    coef = float(params["coef_scale"]) * (-0.5) ** np.arange(n_features)
    noise = event_rng.normal(0.0, sd["noise"], n_rows)
    y = (
        float(params["intercept"])
        + features @ coef
        + user_effect[user_index]
        + item_effect[item_index]
        + noise
    )

    user_ids, item_ids = _unit_ids("u", n_users), _unit_ids("i", n_items)
    feature_names = [f"x{k + 1}" for k in range(n_features)]
    frame = pd.DataFrame(
        {
            "user": user_ids[user_index],
            "item": item_ids[item_index],
            "day": day,
            **{name: features[:, k] for k, name in enumerate(feature_names)},
            "y": y,
        }
    )
    # Events in time order within the data set, as a log would hold them.
    frame = frame.sort_values(["day", "user"], kind="stable", ignore_index=True)
    truth = {
        "fixed_effects": {"(Intercept)": float(params["intercept"])}
        | {name: float(c) for name, c in zip(feature_names, coef, strict=True)},
        "sd": {"user": float(sd["user"]), "item": float(sd["item"]), "noise": float(sd["noise"])},
        "unit_effects": {
            "user": pd.Series(user_effect, index=pd.Index(user_ids, name="user")),
            "item": pd.Series(item_effect, index=pd.Index(item_ids, name="item")),
        },
    }
    return Dataset(
        frame=frame,
        target="y",
        family="gaussian",
        features=tuple(feature_names),
        groups=("user", "item"),
        time="day",
        truth=truth,
        meta={"name": "online_services", "params": params, "seed": seed},
    )
