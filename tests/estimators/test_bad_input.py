"""Bad input and faults in the mixed models: refused with a message that names the cause,
or handled by a documented rule; never a silent wrong answer or a numpy traceback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from estimators import MixedLM
from harness.config import EstimatorSpec
from harness.runner import build_estimator
from simulators import Dataset


def grouped(n_groups: int = 20, per_group: int = 10, seed: int = 0) -> pd.DataFrame:
    """Gaussian data with a random intercept per group ``g`` (integer ids), a covariate
    ``x`` and a three-level categorical column ``c`` with an effect."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), per_group)
    n = g.size
    data = pd.DataFrame({"g": g, "x": rng.normal(size=n), "c": rng.choice(["a", "b", "c"], n)})
    shift = data["c"].map({"a": 0.0, "b": 1.0, "c": -2.0})
    data["y"] = 1 + data["x"] + shift + rng.normal(size=n_groups)[g] + rng.normal(size=n)
    return data


# -- 10: column names that are not bare identifiers ------------------------------------
def test_backticks_name_any_column_in_fixed_and_random_parts():
    data = grouped()
    odd = data.rename(columns={"g": "user id", "x": "user-x", "y": "click rate"})
    plain = MixedLM("y ~ x + (1 + x | g)").fit(data)
    quoted = MixedLM("`click rate` ~ `user-x` + (1 + `user-x` | `user id`)").fit(odd)
    assert quoted.objective_ == pytest.approx(plain.objective_, rel=1e-9)
    np.testing.assert_allclose(quoted.coef_.to_numpy(), plain.coef_.to_numpy(), rtol=1e-6)
    assert list(quoted.ranef_) == ["user id"]
    np.testing.assert_allclose(quoted.predict(odd), plain.predict(data), rtol=1e-6)


def test_roles_filled_from_a_file_quote_such_names():
    frame = grouped().rename(columns={"g": "user id", "x": "user-x", "y": "click rate"})
    dataset = Dataset(frame=frame, target="click rate", features=("user-x",), groups=("user id",))
    spec = EstimatorSpec(name="mixed_lm", params={}, label="mixed_lm")
    estimator, params = build_estimator(spec, dataset, seed=0)
    assert params["formula"] == "`click rate` ~ `user-x` + (1 | `user id`)"
    estimator.fit(frame)
    assert estimator.n_levels_ == {"user id": 20}
