import numpy as np
import pytest

from estimators import MixedLM
from simulators import simulate


def test_experiment_sizes_and_names():
    first = simulate("archers", seed=1)
    assert first.n_rows == 3 * 2 * 10
    assert first.groups == ("archer",) and first.features == ("southwood",)
    assert list(first.frame["archer"].cat.categories) == ["Aelfric", "Beatrix", "Cedric"]
    counts = first.frame.groupby(["archer", "bow"], observed=True).size()
    assert (counts == 10).all()
    second = simulate("archers", seed=1, experiment=2)
    assert second.frame["archer"].nunique() == 50 and second.n_rows == 1000
    many = simulate("archers", seed=1, n_archers=120, shots=2)
    assert many.frame["archer"].nunique() == 120


def test_southwood_indicator_matches_the_bow():
    frame = simulate("archers", seed=2).frame
    assert ((frame["bow"] == "Southwood") == (frame["southwood"] == 1)).all()


def test_distances_follow_the_recorded_truth():
    data = simulate("archers", seed=3, experiment=2, shots=200)
    frame, truth = data.frame, data.truth
    expected = (
        truth["fixed_effects"]["(Intercept)"]
        + truth["fixed_effects"]["southwood"] * frame["southwood"]
        + frame["archer"].astype(str).map(truth["unit_effects"]["archer"])
    )
    residual = frame["distance"] - expected
    assert residual.std() == pytest.approx(5.0, rel=0.02)
    assert abs(residual.mean()) < 4 * 5.0 / np.sqrt(len(residual))
    assert truth["unit_effects"]["archer"].std() == pytest.approx(23.0, rel=0.25)


def test_a_mixed_model_recovers_the_seed_fits():
    data = simulate("archers", seed=4, experiment=2)
    fit = MixedLM("distance ~ southwood + (1 | archer)").fit(data.frame)
    assert fit.coef_["(Intercept)"] == pytest.approx(168, abs=10)
    assert fit.coef_["southwood"] == pytest.approx(-10, abs=1)
    sd = fit.varcorr_.set_index("grp")["sdcor"]
    assert sd["archer"] == pytest.approx(23, rel=0.3)
    assert sd["Residual"] == pytest.approx(5, rel=0.1)
    # Balanced design: ranking archers by conditional mode equals ranking by their means.
    means = data.frame.groupby("archer", observed=True)["distance"].mean()
    modes = fit.ranef_["archer"]["(Intercept)"].loc[means.index]
    assert np.array_equal(np.argsort(means.to_numpy()), np.argsort(modes.to_numpy()))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"experiment": 3}, "params.experiment: expected 1 or 2"),
        ({"n_archers": 1}, "params.n_archers: expected an integer of at least 2"),
        ({"shots": 0}, "params.shots: expected an integer >= 1"),
        ({"sd": {"archer": -1.0}}, "params.sd.archer: must be non-negative"),
    ],
)
def test_invalid_params(params, message):
    with pytest.raises(ValueError, match=message):
        simulate("archers", **params)
