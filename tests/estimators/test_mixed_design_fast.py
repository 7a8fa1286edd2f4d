"""The design's direct paths give what the general ones give.

A formula of plain numeric columns is encoded by numpy with a cached formulaic spec,
dense integer ids are coded without hashing, clearly independent fixed columns skip the
Gram-Schmidt passes, a single term builds no sparse matrix, and lme4's tables are built
when first read. Each is compared here with the general path, forced by monkeypatching
the direct one away: the same matrices, names, dropped columns, levels, estimates and
predictions, to the last bit.
"""

from __future__ import annotations

import pickle
import warnings

import formulaic
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.utils.validation import check_is_fitted

import estimators.mixed._categories as categories_module
import estimators.mixed._design as design_module
from estimators import MixedLM
from estimators.mixed._design import (
    _independent_columns,
    build_design,
    design_matrices,
    effects_by_factor,
    factor_keys,
    factor_levels,
    formula_frame,
    level_codes,
    model_matrix,
    plain_matrix,
    term_matrix,
    weighted_cross_products,
)
from estimators.mixed._formula import parse_formula


def general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send every model matrix through formulaic and every rank check through
    Gram-Schmidt, as before the direct paths existed."""
    monkeypatch.setattr(design_module, "_lookup_columns", lambda expr: None)
    monkeypatch.setattr(design_module, "plain_matrix", lambda spec, frame: None)
    monkeypatch.setattr(categories_module, "plain_matrix", lambda spec, frame: None)
    monkeypatch.setattr(design_module, "_clearly_independent", lambda X: False)


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n, groups = 400, 25
    g = rng.integers(100, 100 + groups, n)
    frame = pd.DataFrame(
        {
            "g": g,
            "h": rng.choice(["p", "q", "r", "s"], n),
            "x": rng.normal(size=n),
            "z": rng.normal(size=n),
            "k": rng.integers(0, 5, n),
            "c": rng.choice(["lo", "mid", "hi"], n),
            "w": rng.uniform(0.5, 2.0, n),
            "off": rng.normal(scale=0.1, size=n),
        }
    )
    frame["x2"] = 2 * frame["x"]  # collinear with x: dropped
    effect = rng.normal(size=200)[g - 100]
    frame["y"] = 1 + frame["x"] - 0.5 * frame["k"] + effect + rng.normal(size=n)
    return frame


@pytest.mark.parametrize(
    "expr",
    ["1 + x", "x", "0 + x", "-1 + x + k", "1", "1 + x + k + x:k", "x:k:z + z:x", "k + z:k"],
)
def test_numeric_matrix_and_spec_equal_formulaic(data, expr):
    matrix, spec = model_matrix(expr, data)
    reference = formulaic.model_matrix(expr, data, na_action="raise")
    assert np.array_equal(matrix, np.asarray(reference, dtype=float))
    assert spec == reference.model_spec
    assert list(spec.column_names) == list(reference.columns)
    # New rows (integers where floats were fitted) are encoded as formulaic encodes them.
    new = data.head(30).astype({"k": float})
    assert np.array_equal(
        plain_matrix(spec, new), np.asarray(spec.get_model_matrix(new), dtype=float)
    )


@pytest.mark.parametrize("expr", ["1 + c", "x + C(k)", "log(w)", "I(x**2)", "x + h:x"])
def test_other_expressions_are_formulaic(data, expr):
    matrix, spec = model_matrix(expr, data)
    reference = formulaic.model_matrix(expr, data, na_action="raise")
    assert np.array_equal(matrix, np.asarray(reference, dtype=float))
    assert spec == reference.model_spec
    assert plain_matrix(spec, data) is None


def test_columns_formulaic_reads_otherwise_are_formulaic(data):
    frame = data.assign(flag=data["x"] > 0, nullable=data["k"].astype("Int64"))
    for expr in ["1 + flag", "1 + nullable"]:
        matrix, spec = model_matrix(expr, frame)
        reference = formulaic.model_matrix(expr, frame, na_action="raise")
        assert np.array_equal(matrix, np.asarray(reference, dtype=float))
        assert spec == reference.model_spec
    # A spec fitted on numbers meets text at predict time: formulaic decides.
    _, spec = model_matrix("1 + x", data)
    assert plain_matrix(spec, data.assign(x=data["x"].astype(str))) is None


CASES = [
    ("y ~ x + k + x:k + (1 + x | g)", {}),
    ("y ~ x + c + (1 | g)", {}),
    ("y ~ x * c + (x | g) + (1 | h)", {}),
    ("y ~ x + x2 + z + (1 | g)", {}),
    ("y ~ 0 + x + z:x:k + (0 + x | g) + (1 | g)", {}),
    ("y ~ x + offset(off) + (1 + z | g)", {"offset": "off", "weights": "w"}),
    ("y ~ x + z + (1 | g)", {"na_action": "drop"}),
]


@pytest.mark.parametrize(("formula", "options"), CASES)
def test_fits_and_predictions_equal_the_general_path(data, formula, options, monkeypatch):
    frame = data.copy()
    if options.get("na_action") == "drop":
        frame.loc[::17, "x"] = np.nan
    new = data.sample(60, random_state=1).assign(g=lambda d: d["g"] + 10)  # unseen too

    def fitted() -> tuple[MixedLM, dict]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dropped rows or columns: the same either way
            model = MixedLM(formula, **options).fit(frame)
        parsed = parse_formula(formula)
        kept = frame.dropna() if "na_action" in options else frame
        design, dropped = build_design(
            parsed, formula_frame(MixedLM(formula), kept, reset=True), np.zeros(len(kept))
        )
        return model, {"design": design, "dropped": dropped}

    fast, fast_design = fitted()
    with monkeypatch.context() as patch:
        general_path(patch)
        general, general_design = fitted()
        general_prediction = general.predict(new, return_std=True)
    assert_designs_equal(fast_design, general_design)
    pd.testing.assert_series_equal(fast.coef_, general.coef_, check_exact=True)
    pd.testing.assert_frame_equal(fast.coef_cov_, general.coef_cov_, check_exact=True)
    assert np.array_equal(fast.theta_, general.theta_)
    assert fast.sigma_ == general.sigma_ and fast.objective_ == general.objective_
    assert fast.dropped_columns_ == general.dropped_columns_
    assert fast.n_levels_ == general.n_levels_
    pd.testing.assert_frame_equal(fast.varcorr_, general.varcorr_, check_exact=True)
    for group in fast.ranef_:
        pd.testing.assert_frame_equal(fast.ranef_[group], general.ranef_[group], check_exact=True)
    for fast_part, general_part in zip(
        fast.predict(new, return_std=True), general_prediction, strict=True
    ):
        assert np.array_equal(fast_part, general_part)


def assert_designs_equal(fast: dict, general: dict) -> None:
    a, b = fast["design"], general["design"]
    assert fast["dropped"] == general["dropped"]
    assert np.array_equal(a.X, b.X) and a.X.flags.f_contiguous == b.X.flags.f_contiguous
    assert a.fixed_names == b.fixed_names and np.array_equal(a.kept, b.kept)
    assert a.fixed_spec == b.fixed_spec
    for term_a, term_b in zip(a.terms, b.terms, strict=True):
        assert term_a.spec == term_b.spec and term_a.columns == term_b.columns
        assert term_a.model_spec == term_b.model_spec
        pd.testing.assert_index_equal(term_a.levels, term_b.levels, exact=True)
    for codes_a, codes_b in zip(a.codes, b.codes, strict=True):
        assert np.array_equal(codes_a, codes_b) and codes_a.dtype == codes_b.dtype
    for values_a, values_b in zip(a.values, b.values, strict=True):
        assert np.array_equal(values_a, values_b)
    if a.category_rows is None:
        assert b.category_rows is None
    else:
        pd.testing.assert_series_equal(a.category_rows, b.category_rows)


@pytest.mark.parametrize(
    "ids",
    [
        np.array([5, 3, 5, 9, 3, 4]),
        np.array([-100, 100, 5, -100], dtype=np.int8),  # the range overflows int8
        np.array([2**64 - 1, 2**64 - 3, 2**64 - 1], dtype=np.uint64),
        np.array([-(2**63), -(2**63) + 5, 0, 7][:2], dtype=np.int64),
        np.array([0, 10**12, 0, 5]),  # too sparse a range: hashed
        np.array([3, 1, 2], dtype=np.int32),
        np.array(["b", "a", "b"], dtype=object),
        np.array([1.5, 0.5, 1.5]),
    ],
)
def test_level_codes_equal_hashed_levels(ids):
    frame = pd.DataFrame({"g": ids})
    levels, codes = level_codes(frame, ("g",))
    keys = factor_keys(frame, ("g",))
    expected = factor_levels(keys, ("g",))
    pd.testing.assert_index_equal(levels, expected, exact=True)
    assert np.array_equal(codes, expected.get_indexer(keys))


def test_level_codes_of_an_interaction_equal_hashed_levels():
    frame = pd.DataFrame({"a": [1, 2, 1, 2], "b": ["x", "x", "y", "x"]})
    levels, codes = level_codes(frame, ("a", "b"))
    keys = factor_keys(frame, ("a", "b"))
    pd.testing.assert_index_equal(levels, factor_levels(keys, ("a", "b")), exact=True)
    assert codes.tolist() == [0, 2, 1, 2]


def test_independent_columns_equal_gram_schmidt(monkeypatch):
    rng = np.random.default_rng(3)
    base = rng.normal(size=(200, 4))
    matrices = [
        base,
        np.column_stack([base, base[:, 0] + base[:, 1]]),  # exactly dependent
        np.column_stack([base, base[:, 2] + 1e-9 * rng.normal(size=200)]),  # nearly
        np.column_stack([base, np.zeros(200), 1e150 * base[:, :1]]),  # zero, huge
        np.column_stack([np.ones(200), 1e6 + rng.normal(size=200) * 1e-3]),  # ill-scaled
        base[:, :0],
    ]
    for X in matrices:
        kept = _independent_columns(X)
        with monkeypatch.context() as patch:
            patch.setattr(design_module, "_clearly_independent", lambda X: False)
            assert np.array_equal(kept, _independent_columns(X))


def reference_term_matrix(codes, values, n_levels):
    n, q = values.shape
    seen = codes >= 0
    rows = np.repeat(np.flatnonzero(seen), q)
    columns = (codes[seen][:, None] * q + np.arange(q)).ravel()
    return sp.csr_matrix((values[seen].ravel(), (rows, columns)), shape=(n, n_levels * q))


@pytest.mark.parametrize(
    "formula",
    ["y ~ x + z + (1 + x | g)", "y ~ x + z + (1 + x | g) + (1 | h)", "y ~ x + (x + z | g)"],
)
def test_cross_products_equal_the_sparse_products(data, formula):
    design, _ = build_design(
        parse_formula(formula),
        formula_frame(MixedLM(formula), data, reset=True),
        data["y"].to_numpy(),
    )
    matrices = design_matrices(design)
    Z1 = reference_term_matrix(matrices.codes1, matrices.values1, matrices.n_levels1)
    assert (Z1 != matrices.Z1).nnz == 0 and np.array_equal(Z1.indptr, matrices.Z1.indptr)
    for weights in [None, data["w"].to_numpy()]:
        cross = weighted_cross_products(matrices, design.y, weights)
        WX = design.X if weights is None else design.X * weights[:, None]
        Wy = design.y if weights is None else design.y * weights
        assert np.array_equal(cross.Z1X, Z1.T.tocsr() @ WX)
        assert np.array_equal(cross.Z1y, Z1.T.tocsr() @ Wy)
        n_rest = sum(q * n for _, values, n in matrices.rest for q in [values.shape[1]])
        assert cross.ZrZ1.shape == (n_rest, Z1.shape[1]) and cross.ZrX.shape == (
            n_rest,
            design.X.shape[1],
        )
    alone = weighted_cross_products(matrices, design.y, include_fixed=False)
    assert alone.Z1X.shape == (Z1.shape[1], 0) and alone.p == 0


def test_term_matrix_leaves_unseen_rows_empty():
    rng = np.random.default_rng(0)
    codes = rng.integers(-1, 6, 50)
    values = rng.normal(size=(50, 2))
    fast, reference = term_matrix(codes, values, 6), reference_term_matrix(codes, values, 6)
    assert (fast != reference).nnz == 0 and fast.nnz == reference.nnz


def test_tables_are_built_when_read_and_refreshed(data):
    model = MixedLM("y ~ x + (1 + x | g)")
    assert not hasattr(model, "varcorr_") and not hasattr(model, "ranef_")
    model.fit(data.iloc[:200])
    check_is_fitted(model)
    first = model.varcorr_
    assert model.varcorr_ is first  # kept once read
    expected = effects_by_factor(model._design_terms, model._term_b, model._term_cov)
    pd.testing.assert_frame_equal(model.ranef_["g"], expected[0]["g"])
    pd.testing.assert_frame_equal(model.ranef_var_["g"], expected[1]["g"])
    assert np.array_equal(model.ranef_cov_["g"], expected[2]["g"])
    copy = pickle.loads(pickle.dumps(model))
    pd.testing.assert_frame_equal(copy.varcorr_, first)
    ranef = model.ranef_["g"]
    model.update(data.iloc[200:])
    assert model.varcorr_ is not first and len(model.ranef_["g"]) >= len(ranef)
    at_theta = MixedLM("y ~ x + (1 + x | g)")._fit_at_theta(data, theta=model.theta_)
    pd.testing.assert_frame_equal(model.ranef_["g"], at_theta.ranef_["g"], rtol=1e-8)
    pd.testing.assert_frame_equal(model.varcorr_, at_theta.varcorr_, rtol=1e-8)
    model.fit(data.iloc[:100])
    assert model.n_levels_["g"] == len(model.ranef_["g"]) == data["g"].iloc[:100].nunique()
