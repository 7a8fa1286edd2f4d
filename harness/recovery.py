"""Whether the estimated variance components recover the simulator's truth.

The report's variance-components figure plots each fit's estimated standard deviation
over the true one. A plot of estimates far from the truth, without a word, reads as a
broken model; so the figure's caption says where an estimate is off beyond its sampling
error, and names the likely cause.

A component is flagged in a scenario when, over its data sets (each data set's folds
averaged first: they share one truth and one sample of units), the mean of estimate /
truth has a 95% t interval that excludes 1 *and* lies more than ``RELATIVE_BIAS`` away
from it. The interval makes it more than chance; the threshold makes it large enough to
matter. 20% is beyond what a correct fit shows in these designs: the ML or REML
estimate of a standard deviation from m units is biased low by roughly 1/(4m) in
relative terms and scatters by about 1/sqrt(2m) (7% for 100 units), so a bias of a
fifth points at the fitting method or at the model, not at the sample.

The cause is named from what the results table records: the family, the estimator, its
``n_agq`` and solver, and the simulator's parameters (structure in the data that the
fitted formula leaves out).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

import estimators

RELATIVE_BIAS = 0.2
# Simulator parameters (result columns) that put structure in the data which a random
# intercept model leaves out, and what to call it; a component may absorb it.
LEFT_OUT = {
    "sim.nonlinear.strength": "nonlinear effects of the features",
    "sim.time.drift_sd": "per-user drift over time",
    "sim.heteroscedasticity": "noise whose spread changes with a feature",
    "sim.sd.user_slope": "per-user slopes of the treatment",
}


@dataclass(frozen=True)
class Recovery:
    """The mean over data sets of estimate / truth of one component, with its 95% t
    interval."""

    scenario: str
    regime: str
    estimator: str
    component: str
    truth: float
    ratio: float
    low: float
    high: float
    n: int

    @property
    def off(self) -> bool:
        """Beyond sampling error (the interval excludes 1) and beyond the threshold."""
        return (self.low > 1 + RELATIVE_BIAS) or (self.high < 1 - RELATIVE_BIAS)


def recovery(table: pd.DataFrame) -> list[Recovery]:
    """Every (scenario, estimator, component) with a true sd above 0 and estimates on
    two or more data sets."""
    ok = table[table["status"] == "ok"] if "status" in table else table
    names = [
        column.removeprefix("sd_est.")
        for column in ok.columns
        if column.startswith("sd_est.") and f"sd_true.{column.removeprefix('sd_est.')}" in ok
    ]
    found = []
    for (scenario, estimator), rows in ok.groupby(["scenario", "estimator"], sort=False):
        regime = str(rows["regime"].iloc[0]) if "regime" in rows else str(scenario).split("[")[0]
        for name in names:
            truth = rows[f"sd_true.{name}"].astype(float)
            ratio = (rows[f"sd_est.{name}"].astype(float) / truth.where(truth > 0)).dropna()
            if ratio.empty:
                continue
            per_data_set = ratio.groupby(rows.loc[ratio.index, "repeat"]).mean()
            n = per_data_set.size
            if n < 2:
                continue
            mean = float(per_data_set.mean())
            half = float(stats.t.ppf(0.975, n - 1) * per_data_set.std(ddof=1) / np.sqrt(n))
            found.append(
                Recovery(
                    str(scenario),
                    regime,
                    str(estimator),
                    name,
                    float(truth[ratio.index].mean()),
                    mean,
                    mean - half,
                    mean + half,
                    n,
                )
            )
    return found


def _parameter(rows: pd.DataFrame, name: str) -> object:
    """The estimator's parameter ``name`` as the rows record it, else its default."""
    column = f"est.{name}"
    if column in rows and rows[column].notna().any():
        return rows[column].dropna().iloc[0]
    try:
        return estimators.get(str(rows["estimator_name"].iloc[0])).get_params().get(name)
    except (KeyError, ImportError, ValueError):
        return None


def likely_cause(rows: pd.DataFrame, component: str, too_high: bool) -> str:
    """The likely cause of a biased component, from the rows of one scenario and
    estimator: the family, the fit's method and what the simulator put in the data."""
    family = str(rows["family"].iloc[0]) if "family" in rows else ""
    solver = str(rows["solver"].dropna().iloc[0]) if "solver" in rows else ""
    estimator = str(rows["estimator_name"].iloc[0]) if "estimator_name" in rows else ""
    units = rows.get(f"sim.n_{component}s")
    per_unit = ""
    if units is not None and units.notna().any():
        per_unit = f" (about {float((rows['n_train'] / units).mean()):.0f} rows per {component})"
    if family in ("binomial", "poisson") and estimator == "mixed_glm":
        if solver == "iterative":
            return (
                "penalised quasi-likelihood (solver iterative), which is biased low for "
                f"{'binary outcomes' if family == 'binomial' else 'small counts'} with few "
                f"rows per unit{per_unit}"
            )
        n_agq = pd.to_numeric(pd.Series([_parameter(rows, "n_agq")]), errors="coerce").iloc[0]
        if not n_agq > 1:  # 1, or not recorded: glmer's default, the Laplace approximation
            data = "binary outcomes with few trials" if family == "binomial" else "small counts"
            return (
                f"the Laplace approximation (n_agq = 1) on {data} per unit{per_unit}; "
                "adaptive Gauss-Hermite quadrature (n_agq: 10, glmer's nAGQ) removes most "
                "of it for a single random intercept"
            )
    # A random slope in the formula (``(1 + treat | user)``) models the slopes.
    has_slope = re.search(r"\(\s*1\s*\+[^|)]+\|", str(_parameter(rows, "formula")))
    left_out = [
        words
        for column, words in LEFT_OUT.items()
        if column in rows
        and (pd.to_numeric(rows[column], errors="coerce").fillna(0) > 0).any()
        and not (column == "sim.sd.user_slope" and has_slope)
    ]
    if left_out:
        return (
            "a model that leaves out structure the simulator put in the data ("
            + ", ".join(left_out)
            + f"), which the {component} component absorbs"
        )
    if too_high:
        return "structure in the data that the fitted formula leaves out, absorbed here"
    return "too few units to estimate it, or a model that attributes its variation elsewhere"


def variance_warnings(table: pd.DataFrame) -> list[str]:
    """One sentence per (regime, estimator, component) whose estimate is off in some of
    the regime's scenarios, with the ratios, their intervals and the likely cause."""
    flagged = [entry for entry in recovery(table) if entry.off]
    ok = table[table["status"] == "ok"] if "status" in table else table
    sentences = []
    groups: dict[tuple[str, str, str], list[Recovery]] = {}
    for entry in flagged:
        groups.setdefault((entry.regime, entry.estimator, entry.component), []).append(entry)
    for (regime, estimator, component), entries in groups.items():
        rows = ok[
            (ok["scenario"].isin([e.scenario for e in entries])) & (ok["estimator"] == estimator)
        ]
        too_high = entries[0].ratio > 1
        ratios = "; ".join(
            f"{entry.scenario} {entry.ratio:.2f} (95% {entry.low:.2f}-{entry.high:.2f}, "
            f"{entry.n} data sets, true sd {entry.truth:.3g})"
            for entry in entries
        )
        sentences.append(
            f"Warning: {estimator} {'over' if too_high else 'under'}estimates the {component} "
            f"sd in {regime} beyond its sampling error and by more than {RELATIVE_BIAS:.0%}; "
            f"estimate / truth: {ratios}. Likely cause: "
            f"{likely_cause(rows, component, too_high)}."
        )
    return sentences
