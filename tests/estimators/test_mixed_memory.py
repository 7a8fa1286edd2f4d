"""The mixed models refuse, before any work, a fit whose dense block cannot fit in memory."""

import pytest

import estimators.mixed._deviance as deviance
from estimators import MixedGLM, MixedLM
from simulators import simulate


@pytest.fixture
def crossed():
    return simulate("online_services", seed=1, n_users=300, n_items=40, family="binomial")


def test_a_fit_that_would_not_fit_in_memory_is_refused_with_the_reason(crossed, monkeypatch):
    # 40 items and 10 regions after the 300 users: a 40 + 10 + 2 + 1 = 53-square block.
    monkeypatch.setattr(deviance, "available_memory_bytes", lambda: 3 * 53**2 * 8)
    formula = "y ~ x1 + (1 | user) + (1 | item) + (1 | region)"
    for model in (MixedLM(formula), MixedGLM(formula)):
        with pytest.raises(MemoryError) as error:
            model.fit(crossed.frame)
        message = str(error.value)
        assert "dense 53 x 53 matrix" in message
        assert "item: 40 levels, region: 10 levels" in message
        assert "fixed_effects and ridge_onehot solve such designs sparsely" in message


def test_fits_within_memory_and_unknown_memory_go_ahead(crossed, monkeypatch):
    formula = "y ~ x1 + (1 | user) + (1 | item)"
    monkeypatch.setattr(deviance, "available_memory_bytes", lambda: 10 * 3 * 43**2 * 8)
    assert MixedLM(formula).fit(crossed.frame).coef_.size == 2
    monkeypatch.setattr(deviance, "available_memory_bytes", lambda: None)
    assert MixedLM(formula).fit(crossed.frame).coef_.size == 2


def test_available_memory_is_read_from_the_system():
    available = deviance.available_memory_bytes()
    assert available is None or available > 2**20
