"""The seed analysis's bow experiment: archers drawn at random shoot two bows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from simulators._dataset import Dataset

DEFAULTS: dict[str, Any] = {
    # 1: 3 archers x 2 bows x 10 shots; 2: 50 archers. n_archers overrides either.
    "experiment": 1,
    "n_archers": None,
    "shots": 10,
    # The seed analysis's generating values (its code: archers drawn from N(0, 20^2),
    # Northwood mean 160 m, Southwood 10 m shorter, shot noise sd 5 m); its fits, archer
    # sd 23.0 and a pooled mean of 168, are the reference results in
    # configs/seed_archers.yaml, not the truth.
    "intercept": 160.0,
    "southwood": -10.0,
    "sd": {"archer": 20.0, "shot": 5.0},
    "draw": 0,
}

NAMES = [
    "Aelfric",
    "Beatrix",
    "Cedric",
    "Dunstan",
    "Edith",
    "Fulke",
    "Godwin",
    "Hilda",
    "Ivo",
    "Juliana",
    "Kenric",
    "Leofric",
    "Matilda",
    "Nigel",
    "Osric",
    "Petronilla",
    "Quenby",
    "Ranulf",
    "Sibyl",
    "Thurstan",
    "Ulric",
    "Wulfstan",
    "Aldith",
    "Baldwin",
    "Cuthbert",
    "Ermengarde",
    "Fulbert",
    "Gunnhild",
    "Hereward",
    "Isolde",
    "Jocelyn",
    "Lambert",
    "Maud",
    "Odo",
    "Rohese",
    "Siward",
    "Tostig",
    "Waltheof",
    "Agatha",
    "Bertram",
    "Cecily",
    "Drogo",
    "Eadgyth",
    "Gervase",
    "Helewise",
    "Ingram",
    "Lettice",
    "Milo",
    "Orderic",
    "Roger",
]


def check_params(params: dict[str, Any]) -> None:
    """Raise a ValueError naming the first parameter with an invalid value."""
    if params["experiment"] not in (1, 2):
        raise ValueError(f"params.experiment: expected 1 or 2, got {params['experiment']!r}")
    n = params["n_archers"]
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 2):
        raise ValueError(f"params.n_archers: expected an integer of at least 2, got {n!r}")
    for name in ("shots", "draw"):
        value = params[name]
        minimum = 1 if name == "shots" else 0
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"params.{name}: expected an integer >= {minimum}, got {value!r}")
    numbers = {
        "intercept": params["intercept"],
        "southwood": params["southwood"],
        **{f"sd.{k}": v for k, v in params["sd"].items()},
    }
    for name, value in numbers.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or not np.isfinite(value):
            raise ValueError(f"params.{name}: expected a number, got {value!r}")
        if name.startswith("sd.") and value < 0:
            raise ValueError(f"params.{name}: must be non-negative, got {value!r}")


def _names(n: int) -> list[str]:
    """Distinct archer names; beyond the list, names get a number."""
    return [
        NAMES[k % len(NAMES)] + ("" if k < len(NAMES) else f" {k // len(NAMES) + 1}")
        for k in range(n)
    ]


def archers(seed: int, params: dict[str, Any]) -> Dataset:
    """Distances shot by archers with a Northwood and a Southwood bow.

    ``distance = intercept + southwood * [bow is Southwood] + archer effect + shot noise``,
    archer effects ~ N(0, sd.archer^2), shot noise ~ N(0, sd.shot^2); every archer shoots
    ``shots`` times with each bow.

    Returns
    -------
    Dataset
        Columns ``archer``, ``bow``, ``southwood`` (0/1, the fixed-effect feature),
        ``shot`` and ``distance``; the truth holds each archer's effect.
    """
    n_archers = params["n_archers"] or (3 if params["experiment"] == 1 else 50)
    shots = int(params["shots"])
    names = pd.Index(_names(n_archers), name="archer")
    units = np.random.default_rng([seed, 0])
    archer_effect = units.normal(0.0, params["sd"]["archer"], n_archers)
    shooting = np.random.default_rng([seed, 1, int(params["draw"])])
    archer = np.repeat(np.arange(n_archers), 2 * shots)
    southwood = np.tile(np.repeat([0, 1], shots), n_archers)
    distance = (
        params["intercept"]
        + params["southwood"] * southwood
        + archer_effect[archer]
        + shooting.normal(0.0, params["sd"]["shot"], archer.size)
    )
    frame = pd.DataFrame(
        {
            "archer": pd.Categorical.from_codes(archer, categories=names),
            "bow": np.where(southwood == 1, "Southwood", "Northwood"),
            "southwood": southwood,
            "shot": np.tile(np.arange(1, shots + 1), 2 * n_archers),
            "distance": distance,
        }
    )
    truth = {
        "fixed_effects": {
            "(Intercept)": float(params["intercept"]),
            "southwood": float(params["southwood"]),
        },
        "sd": {"archer": float(params["sd"]["archer"]), "noise": float(params["sd"]["shot"])},
        "unit_effects": {"archer": pd.Series(archer_effect, index=names)},
        "params": params,
    }
    return Dataset(
        frame=frame,
        target="distance",
        family="gaussian",
        features=("southwood",),
        groups=("archer",),
        truth=truth,
        meta={"name": "archers", "params": params, "seed": seed},
    )
