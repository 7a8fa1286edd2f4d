"""Model summaries: every estimator of a scenario fitted once on the whole first data
set, with what an analyst reads off a fit — coefficients with confidence intervals,
variance components with (profile) intervals, and the units ranked by their estimated
effect — next to the simulation's truth. A config asks for them with
``summaries: true``; they are written to ``summaries.json`` and shown in the report.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

import simulators
from harness import metrics as metric_registry
from harness.config import Config
from harness.jobs import expand, stable_seed
from harness.runner import build_estimator, skip_reason


def _confint(model: Any) -> pd.DataFrame | None:
    """The model's 95% intervals, profile-likelihood ones where it offers them (a fit
    by a solver other than the exact one, at scale, gives Wald intervals instead)."""
    method = getattr(model, "confint", None)
    if method is None:
        return None
    if "method" in inspect.signature(method).parameters:
        exact = getattr(model, "solver_", "exact") == "exact"
        return method(method="profile" if exact else "wald")
    return method()


def _coefficients(model: Any, intervals: pd.DataFrame | None) -> list[dict[str, Any]]:
    coef = getattr(model, "coef_", None)
    if not isinstance(coef, pd.Series):
        return []
    values = coef.copy()
    if hasattr(model, "intercept_") and "(Intercept)" not in values.index:
        values = pd.concat([pd.Series({"(Intercept)": float(model.intercept_)}), values])
    rows = []
    for term, estimate in values.items():
        low = high = float("nan")
        if intervals is not None and term in intervals.index:
            low, high = (float(v) for v in intervals.loc[term].iloc[:2])
        rows.append({"term": str(term), "estimate": float(estimate), "low": low, "high": high})
    return rows


def _variance_components(model: Any, intervals: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Rows of ``varcorr_`` with their intervals; lme4 names the parameters of the
    standard deviations and correlations .sig01, .sig02, ... in this order, and the
    residual's .sigma."""
    varcorr = getattr(model, "varcorr_", None)
    if not isinstance(varcorr, pd.DataFrame):
        return []
    rows, k = [], 0
    for _, row in varcorr.iterrows():
        if row["grp"] == "Residual":
            name = ".sigma"
        else:
            k += 1
            name = f".sig{k:02d}"
        low = high = float("nan")
        if intervals is not None and name in intervals.index:
            low, high = (float(v) for v in intervals.loc[name].iloc[:2])
        var2 = row.get("var2")
        rows.append(
            {
                "group": str(row["grp"]),
                "term": "" if pd.isna(row["var1"]) else str(row["var1"]),
                "kind": "sd" if var2 is None or pd.isna(var2) else f"cor with {var2}",
                "value": float(row["sdcor"]),
                "low": low,
                "high": high,
            }
        )
    return rows


def fit_summary(spec: Any, dataset: Any) -> dict[str, Any]:
    """Fit ``spec`` on all of ``dataset`` and summarise the fit (or record why not)."""
    summary: dict[str, Any] = {"estimator": spec.label, "name": spec.name}
    reason = skip_reason(spec, dataset)
    if reason is not None:
        summary["skipped"] = reason
        return summary
    try:
        model, _ = build_estimator(spec, dataset, stable_seed(spec.label, dataset.meta["hash"]))
        if "standard_errors" in model.get_params(deep=False):
            model.set_params(standard_errors=True)  # a summary is about inference
        weighted = {} if dataset.weights is None else {"sample_weight": dataset.sample_weight}
        model.fit(dataset.X, dataset.y.to_numpy(), **weighted)
        intervals = _confint(model)
        summary["coefficients"] = _coefficients(model, intervals)
        summary["variance_components"] = _variance_components(model, intervals)
        factor = dataset.groups[0] if dataset.groups else None
        effects = metric_registry.estimated_effects(model, factor) if factor else None
        if effects is not None:
            summary["effects"] = {str(k): float(v) for k, v in effects.items()}
            summary["factor"] = str(factor)
    except Exception as error:  # a summary that fails is reported, not fatal
        summary["error"] = f"{type(error).__name__}: {error}"
    return summary


def rank_agreement(fits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Spearman correlation of the unit rankings of every pair of fits with effects."""
    with_effects = [fit for fit in fits if fit.get("effects")]
    pairs = []
    for i, first in enumerate(with_effects):
        for second in with_effects[i + 1 :]:
            common = sorted(set(first["effects"]) & set(second["effects"]))
            if len(common) < 3:
                continue
            a = [first["effects"][unit] for unit in common]
            b = [second["effects"][unit] for unit in common]
            rho = float(stats.spearmanr(a, b).statistic)
            pairs.append(
                {
                    "a": first["estimator"],
                    "b": second["estimator"],
                    "spearman": rho,
                    "units": len(common),
                }
            )
    return pairs


def write_summaries(config: Config, directory: str | Path) -> list[dict[str, Any]]:
    """Summaries of every scenario's first data set, written to ``summaries.json``."""
    seen, results = set(), []
    for task in expand(config):
        if task.repeat != 0 or task.scenario.label in seen:
            continue
        seen.add(task.scenario.label)
        dataset = simulators.simulate(
            task.scenario.simulator, seed=task.dataset_seed, **task.scenario.params
        )
        truth = {
            "fixed_effects": dataset.truth.get("fixed_effects", {}),
            "sd": dataset.truth.get("sd", {}),
        }
        fits = [fit_summary(job.estimator, dataset) for job in task.jobs]
        results.append(
            {
                "scenario": task.scenario.label,
                "rows": dataset.n_rows,
                "truth": json.loads(json.dumps(truth, default=float)),
                "fits": fits,
                "rank_agreement": rank_agreement(fits),
            }
        )
    path = Path(directory) / "summaries.json"
    path.write_text(json.dumps(results, indent=1, default=_plain))
    return results


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
