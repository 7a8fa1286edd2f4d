"""A published click-through experiment: users shown a second display, with very
different click propensities from user to user."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from simulators._dataset import Dataset
from simulators._params import is_int, is_number

DEFAULTS: dict[str, Any] = {
    "n_users": 1000,
    # Impressions per half of a user's sequence: 1 + Poisson(pois_mean / 2), so a user
    # has pois_mean + 2 impressions on average.
    "pois_mean": 20.0,
    # Probability that a user is treated (sees display 2 in the second half).
    "p_treated": 0.5,
    # logit P(click) = mu + tau * [display 2] + alpha_user, alpha_user ~ N(0, sigma^2).
    "mu": -4.5,
    "tau": 0.5,
    "sigma": 5.0,
    # Draw k > 0: the same users with the same alpha, treatment and impressions drawn anew.
    "draw": 0,
}


def check_params(params: dict[str, Any]) -> None:
    """Raise a ValueError naming the first parameter with an invalid value."""
    if not is_int(params["n_users"]) or params["n_users"] < 1:
        raise ValueError(f"params.n_users: expected a positive integer, got {params['n_users']!r}")
    if not is_int(params["draw"]) or params["draw"] < 0:
        raise ValueError(f"params.draw: expected a non-negative integer, got {params['draw']!r}")
    for name in ("pois_mean", "p_treated", "mu", "tau", "sigma"):
        if not is_number(params[name]):
            raise ValueError(f"params.{name}: expected a number, got {params[name]!r}")
    for name in ("pois_mean", "sigma"):
        if params[name] < 0:
            raise ValueError(f"params.{name}: must be non-negative, got {params[name]!r}")
    if not 0 <= params["p_treated"] <= 1:
        raise ValueError(f"params.p_treated: must be in [0, 1], got {params['p_treated']!r}")


def _ids(prefix: str, n: int) -> pd.Index:
    width = len(str(n - 1))
    return pd.Index([f"{prefix}{i:0{width}d}" for i in range(n)])


def ctr_experiment(seed: int, params: dict[str, Any]) -> Dataset:
    """Simulate impressions of users in a two-display click-through experiment.

    Each user is treated with probability ``p_treated``. A user's impressions come in
    two halves of ``1 + Poisson(pois_mean / 2)`` impressions each; the first half is on
    display 1, the second on display 2 if the user is treated and on display 1
    otherwise. An impression of user u is clicked with probability

        logistic(mu + tau * [display 2] + alpha_u),   alpha_u ~ N(0, sigma^2).

    Parameters
    ----------
    seed : int
        Seed of the random streams; the same (seed, params) gives the same frame.
    params : dict
        Parameters merged with ``DEFAULTS`` and checked by :func:`check_params`
        (``simulators.simulate`` does both). ``draw=k`` (k > 0) keeps every user's
        alpha and redraws treatment, impressions and clicks.

    Returns
    -------
    Dataset
        One row per impression, ordered by user then impression: ``user``
        (categorical), ``treated`` (0/1, per user), ``impression`` (1, 2, ... within
        the user, the time column), ``display`` (0/1 indicator of display 2, the
        feature) and ``click`` (0/1, binomial family). The truth holds
        ``fixed_effects`` (``(Intercept)`` = mu, ``display`` = tau), ``sd``
        (``user`` = sigma), ``unit_effects["user"]`` (alpha by user id),
        ``probability`` (the true click probability of each row, aligned with the
        frame) and ``params``.

    Examples
    --------
    >>> from simulators import simulate
    >>> data = simulate("ctr_experiment", seed=1, n_users=20)
    >>> data.features, data.groups, data.target
    (('display',), ('user',), 'click')
    """
    n_users = int(params["n_users"])
    mu, tau, sigma = float(params["mu"]), float(params["tau"]), float(params["sigma"])

    # Users' propensities come from a stream that does not depend on the draw, so every
    # draw shows the same users with the same alpha.
    alpha = np.random.default_rng([seed, 0]).normal(0.0, sigma, n_users)

    events = np.random.default_rng([seed, 1, int(params["draw"])])
    treated = (events.random(n_users) < params["p_treated"]).astype(np.int8)
    halves = 1 + events.poisson(float(params["pois_mean"]) / 2, size=(n_users, 2))
    per_user = halves.sum(axis=1)
    user = np.repeat(np.arange(n_users, dtype=np.int32), per_user)
    starts = np.repeat(np.cumsum(per_user) - per_user, per_user)
    impression = np.arange(user.size) - starts + 1
    second_half = impression > halves[user, 0]
    display = (second_half & (treated[user] == 1)).astype(np.int8)
    probability = 1.0 / (1.0 + np.exp(-(mu + tau * display + alpha[user])))
    click = (events.random(user.size) < probability).astype(float)

    user_ids = _ids("u", n_users).rename("user")
    frame = pd.DataFrame(
        {
            "user": pd.Categorical.from_codes(user, categories=user_ids),
            "treated": treated[user],
            "impression": impression.astype(np.int32),
            "display": display,
            "click": click,
        }
    )
    truth = {
        "fixed_effects": {"(Intercept)": mu, "display": tau},
        "sd": {"user": sigma},
        "unit_effects": {"user": pd.Series(alpha, index=user_ids)},
        "probability": pd.Series(probability, name="probability"),
        "params": params,
    }
    return Dataset(
        frame=frame,
        target="click",
        family="binomial",
        features=("display",),
        groups=("user",),
        time="impression",
        truth=truth,
        meta={"name": "ctr_experiment", "params": params, "seed": seed},
    )
