"""Profile-likelihood confidence intervals, as lme4's ``confint(fit, method = "profile")``.

As lme4 does (``profile.merMod`` / ``devfun2``), the profile is that of the maximum
likelihood deviance, even for a REML fit, over the parameters on the standard-deviation
scale: per term the standard deviations and correlations (``.sig01``, ...), the
residual standard deviation (``.sigma``) and the fixed effects. For a parameter held at
a value, the deviance is minimised over all the others; the signed square root of its
excess over the optimum, ``zeta``, is a standard normal quantile under the usual
asymptotics, and the interval is where ``|zeta| <= z_{(1+level)/2}``. Where lme4
interpolates a spline through profile points, this finds each bound by root finding.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import optimize, stats

from estimators.mixed._design import CrossProducts
from estimators.mixed._deviance import (
    LOG_2PI,
    ProfiledDeviance,
    solve,
    template,
    theta_lower_bounds,
)
from estimators.mixed._optimize import minimize_bobyqa

if TYPE_CHECKING:
    from estimators.mixed._lmm import MixedLM


def _positions(q: int) -> list[tuple[int, int]]:
    """(row, column) of each theta entry of a q x q template, column by column."""
    return [(i, j) for j in range(q) for i in range(j, q)]


class _ProfileProblem:
    """The ML deviance on the standard-deviation scale, and its profiles."""

    def __init__(self, model: MixedLM) -> None:
        fitted = model._objective
        self.qs, self.levels = fitted.qs, fitted.levels
        self.ml = ProfiledDeviance(fitted.cross, self.qs, self.levels, reml=False)
        self.theta_lower = theta_lower_bounds(self.qs)
        theta = model.theta_
        if model.reml:
            theta, _, _ = minimize_bobyqa(self.ml, theta, self.theta_lower)
        self.theta_hat = theta
        solution = solve(self.ml, theta)
        self.base = self.ml(theta)
        self.beta_hat = solution.beta
        self.sv_hat = np.append(self.theta_to_sv(theta, solution.sigma), solution.sigma)
        lower, upper = [], []
        for q in self.qs:
            for i, j in _positions(q):
                # Correlations of exactly +-1 make the template undefined: stop short.
                lower.append(0.0 if i == j else -1.0 + 1e-9)
                upper.append(np.inf if i == j else 1.0 - 1e-9)
        self.sv_lower = np.array([*lower, 1e-10 * solution.sigma])
        self.sv_upper = np.array([*upper, np.inf])

    # -- parameterisation --------------------------------------------------------------
    def theta_to_sv(self, theta: np.ndarray, sigma: float) -> np.ndarray:
        values, start = [], 0
        for q in self.qs:
            size = q * (q + 1) // 2
            T = template(theta[start : start + size], q)
            start += size
            covariance = sigma**2 * (T @ T.T)
            sd = np.sqrt(np.diag(covariance))
            for i, j in _positions(q):
                if i == j:
                    values.append(sd[i])
                else:
                    values.append(covariance[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] else 0.0)
        return np.array(values)

    def sv_to_theta(self, sv: np.ndarray, sigma: float) -> np.ndarray:
        theta, start = [], 0
        for q in self.qs:
            size = q * (q + 1) // 2
            block = sv[start : start + size]
            start += size
            sd = np.zeros(q)
            correlation = np.eye(q)
            for value, (i, j) in zip(block, _positions(q), strict=True):
                if i == j:
                    sd[i] = value
                else:
                    correlation[i, j] = correlation[j, i] = value
            # chol(D R D) = D chol(R) for D = diag(sd / sigma): defined at zero sds too.
            try:
                T = np.diag(sd / sigma) @ np.linalg.cholesky(correlation)
            except np.linalg.LinAlgError:  # |correlation| = 1 or inconsistent ones
                return np.full(sum(q * (q + 1) // 2 for q in self.qs), np.nan)
            theta += [T[i, j] for i, j in _positions(q)]
        return np.array(theta)

    def deviance_sv(self, sv: np.ndarray) -> float:
        """ML deviance at standard deviations/correlations ``sv[:-1]`` and sigma ``sv[-1]``."""
        sigma = sv[-1]
        theta = self.sv_to_theta(sv[:-1], sigma)
        if not np.all(np.isfinite(theta)):
            return np.inf
        try:
            factor = self.ml.factor(theta)
        except np.linalg.LinAlgError:
            return np.inf
        n = self.ml.cross.n
        return factor.logdet_Z + factor.pwrss / sigma**2 + n * (LOG_2PI + 2 * np.log(sigma))

    # -- profiles ----------------------------------------------------------------------
    def profile_sv(self, k: int, value: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        """Minimum deviance with parameter k held at ``value``; returns it and the argmin."""
        free = np.array([m for m in range(self.sv_hat.size) if m != k])

        def deviance(x: np.ndarray) -> float:
            sv = start.copy()
            sv[k] = value
            sv[free] = x
            return self.deviance_sv(sv)

        x, best, _ = minimize_bobyqa(
            deviance,
            np.clip(start[free], self.sv_lower[free], self.sv_upper[free]),
            self.sv_lower[free],
            self.sv_upper[free],
        )
        full = start.copy()
        full[k], full[free] = value, x
        return best, full

    def fixed_cross(self, j: int, value: float) -> CrossProducts:
        """Cross-products of the model with fixed effect j held at ``value`` (an offset)."""
        c = self.ml.cross
        keep = np.array([m for m in range(c.p) if m != j], dtype=int)
        return replace(
            c,
            p=c.p - 1,
            Z1X=c.Z1X[:, keep],
            Z1y=c.Z1y - c.Z1X[:, j] * value,
            ZrX=c.ZrX[:, keep],
            Zry=c.Zry - c.ZrX[:, j] * value,
            XX=c.XX[np.ix_(keep, keep)],
            Xy=c.Xy[keep] - c.XX[keep, j] * value,
            yy=c.yy - 2 * value * c.Xy[j] + value**2 * c.XX[j, j],
        )

    def profile_fixed(self, j: int, value: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        objective = ProfiledDeviance(self.fixed_cross(j, value), self.qs, self.levels, reml=False)
        theta, best, _ = minimize_bobyqa(objective, start, self.theta_lower)
        return best, theta


def _bound(zeta, estimate: float, step: float, limit: float, target: float) -> float:
    """Where ``zeta`` crosses ``target`` going from ``estimate`` toward ``limit``."""
    direction = np.sign(target)
    previous = estimate
    point = estimate + direction * step
    for _ in range(60):
        if direction * (point - limit) >= 0:
            point = limit
            value = zeta(point)
            if direction * (value - target) < 0:
                return float(limit)  # the whole range up to the bound is inside
            break
        value = zeta(point)
        if direction * (value - target) >= 0:
            break
        previous, point = point, estimate + 2 * (point - estimate)  # double the distance
    else:
        return float("nan")
    return float(
        optimize.brentq(
            lambda v: zeta(v) - target,
            min(previous, point),
            max(previous, point),
            xtol=1e-10 * max(1.0, abs(estimate)),
            rtol=1e-10,
        )
    )


def profile_intervals(model: MixedLM, level: float = 0.95) -> pd.DataFrame:
    """Profile-likelihood intervals of every parameter, named as lme4 names them."""
    problem = _ProfileProblem(model)
    z = float(stats.norm.ppf(0.5 + level / 2))
    names = model.parameter_names()
    rows = []
    n_sv = problem.sv_hat.size
    for k in range(n_sv):
        estimate = problem.sv_hat[k]
        warm = {"start": problem.sv_hat.copy()}

        def zeta(value: float, k: int = k, estimate: float = estimate, warm=warm) -> float:
            best, argmin = problem.profile_sv(k, value, warm["start"])
            warm["start"] = argmin
            excess = max(best - problem.base, 0.0)
            return float(np.sign(value - estimate) * np.sqrt(excess))

        scale = max(abs(estimate), 1e-3 * problem.sv_hat[-1])
        is_correlation = problem.sv_lower[k] < 0
        step = 0.1 if is_correlation else 0.2 * scale
        bounds = []
        for target, limit in ((-z, problem.sv_lower[k]), (z, problem.sv_upper[k])):
            warm["start"] = problem.sv_hat.copy()
            limit = limit if np.isfinite(limit) else estimate + 1e6 * scale
            bounds.append(_bound(zeta, estimate, step, limit, target))
        rows.append(bounds)
    se = model.coef_se_.to_numpy()
    for j in range(problem.beta_hat.size):
        estimate = problem.beta_hat[j]
        warm = {"start": problem.theta_hat.copy()}

        def zeta(value: float, j: int = j, estimate: float = estimate, warm=warm) -> float:
            best, theta = problem.profile_fixed(j, value, warm["start"])
            warm["start"] = theta
            excess = max(best - problem.base, 0.0)
            return float(np.sign(value - estimate) * np.sqrt(excess))

        bounds = []
        for target in (-z, z):
            warm["start"] = problem.theta_hat.copy()
            bounds.append(
                _bound(zeta, estimate, se[j], estimate + np.sign(target) * 1e3 * se[j], target)
            )
        rows.append(bounds)
    return pd.DataFrame(rows, index=names, columns=["lower", "upper"])
