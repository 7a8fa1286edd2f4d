"""Shared fixtures: small data sets and configs that run in seconds."""

from __future__ import annotations

import pytest
import sklearn.ensemble  # noqa: F401 - loads the OpenMP runtime, so the limit below reaches it
from threadpoolctl import threadpool_limits

from simulators import simulate

# Tests fit small models: one OpenMP thread each is as fast, and spinning OpenMP threads
# slow a shared 2-core machine down badly when anything else runs beside the tests.
threadpool_limits(limits=1, user_api="openmp")

TINY_CONFIG = """
name: tiny
seed: 7
repeats: 2
scenarios:
  - simulator: online_services
    params: {n_users: 60, n_items: 8, events_per_user: {mean: 6}}
    sweep:
      sd.user: [0.2, 1.0]
splits:
  - {scheme: random, folds: 3}
  - {scheme: seen_units, folds: 3}
  - {scheme: unseen_units, folds: 3, by: user}
estimators:
  - pooled_ols
  - fixed_effects
  - mixed_lm
  - group_mean
  - {name: hist_gbm, params: {max_iter: 20}}
metrics: [rmse, mae, r2]
baseline: pooled_ols
"""


@pytest.fixture
def tiny_config_text() -> str:
    return TINY_CONFIG


@pytest.fixture(scope="session")
def small_data():
    return simulate("online_services", seed=3, n_users=120, n_items=15)
