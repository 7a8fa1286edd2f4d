"""The seed's tuning protocol against R's cv.glmnet, live (skipped without R's glmnet).

cv.glmnet is given the aggregated click table (one row per user x display, the response
as failure and success counts), the folds our ``cv_unit="cell"`` deals the cells into and
our grid of penalties; its held-out deviance, standard error, lambda.min and lambda.1se
must be ours.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.utils import check_random_state

from estimators import LassoOneHot, LogisticRidge
from simulators import simulate

pytestmark = pytest.mark.r

SCRIPT = Path(__file__).with_name("glmnet_cv.R")


def _glmnet_available() -> bool:
    if shutil.which("Rscript") is None:
        return False
    check = subprocess.run(
        ["Rscript", "-e", "library(glmnet); library(jsonlite)"], capture_output=True, check=False
    )
    return check.returncode == 0


@pytest.mark.skipif(not _glmnet_available(), reason="needs R with glmnet and jsonlite")
@pytest.mark.parametrize(("make", "alpha"), [(LassoOneHot, 1), (LogisticRidge, 0)])
def test_cell_folds_and_the_1se_rule_are_cv_glmnets(tmp_path, make, alpha):
    data = simulate("ctr_experiment", seed=3, n_users=150)
    extra = {"penalty_grid": "glmnet"} if make is LogisticRidge else {}
    model = make(
        feature_cols=["display"],
        group_cols=["user"],
        cv_unit="cell",
        cv_rule="1se",
        Cs=30,
        standardize_groups=True,
        patience=None,
        random_state=0,
        **extra,
    ).fit(data.X, data.y)
    # The cells in the order our folds number them (first appearance), and their folds.
    frame = data.frame.assign(successes=data.frame["click"], trials=1)
    cells = frame.groupby(["user", "display"], observed=True, sort=False)[
        ["successes", "trials"]
    ].sum()
    cells = cells.reset_index().assign(failures=lambda t: t["trials"] - t["successes"])
    order = frame[["user", "display"]].drop_duplicates().reset_index(drop=True)
    cells = order.merge(cells, on=["user", "display"], how="left")
    cells["fold"] = check_random_state(0).permutation(np.arange(len(cells)) % 10) + 1
    cells.to_csv(tmp_path / "cells.csv", index=False)
    n_rows = len(data.frame)
    lambdas = 1 / (n_rows * model.cv_deviance_.index.to_numpy())
    pd.DataFrame({"lambda": lambdas}).to_csv(tmp_path / "lambdas.csv", index=False)
    out = tmp_path / "out.json"
    subprocess.run(
        [
            "Rscript",
            str(SCRIPT),
            str(tmp_path / "cells.csv"),
            str(tmp_path / "lambdas.csv"),
            str(alpha),
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    reference = json.loads(out.read_text())
    np.testing.assert_allclose(reference["lambda"], lambdas, rtol=1e-10)
    # The curves down to a little past the minimum: beyond it, almost unpenalised fits of
    # users without a click diverge and each solver stops somewhere else (never chosen).
    upto = int(np.argmin(reference["cvm"])) + 3
    ours = model.cv_deviance_.to_numpy()[:upto]
    np.testing.assert_allclose(ours, reference["cvm"][:upto], rtol=2e-3)
    np.testing.assert_allclose(
        model.cv_standard_error_.to_numpy()[:upto], reference["cvsd"][:upto], rtol=0.02
    )
    assert model.penalty_ == pytest.approx(reference["lambda_1se"], rel=1e-8)
    # lambda.min sits on a flat stretch of the curve: the same penalty or its neighbour,
    # as good as glmnet's minimum to within the solvers' tolerance.
    minimum = make(**{**model.get_params(), "cv_rule": "min"}).fit(data.X, data.y)
    index = np.flatnonzero(np.isclose(lambdas, minimum.penalty_, rtol=1e-8))[0]
    assert abs(index - int(np.argmin(reference["cvm"]))) <= 1
    assert reference["cvm"][index] == pytest.approx(min(reference["cvm"]), rel=1e-3)


@pytest.mark.skipif(not _glmnet_available(), reason="needs R with glmnet and jsonlite")
def test_weighted_ridge_is_glmnet_with_weights(tmp_path):
    """sample_weight is glmnet's weights: at one penalty (the inverse penalty C of a
    total weight W is lambda = 1 / (W C)), with every column standardised by weighted
    moments, the fitted probabilities are glmnet's."""
    data = simulate("ctr_experiment", seed=3, n_users=60)
    weight = np.random.default_rng(8).uniform(0.5, 3.0, data.n_rows)
    penalty = 0.01
    model = LogisticRidge(
        feature_cols=["display"],
        group_cols=["user"],
        Cs=[1.0 / (weight.sum() * penalty)],
        cv=2,
        standardize_groups=True,
        tol=1e-10,
    ).fit(data.X, data.y, sample_weight=weight)
    assert model.penalty_ == pytest.approx(penalty, rel=1e-12)
    rows = data.frame[["user", "display", "click"]].assign(weight=weight)
    rows.to_csv(tmp_path / "rows.csv", index=False)
    out = tmp_path / "out.json"
    subprocess.run(
        [
            "Rscript",
            str(SCRIPT.with_name("glmnet_weighted.R")),
            str(tmp_path / "rows.csv"),
            repr(penalty),
            "0",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    reference = np.asarray(json.loads(out.read_text())["probability"])
    np.testing.assert_allclose(model.predict_proba(data.X)[:, 1], reference, rtol=1e-5)
