"""Step 2 of a generalized linear mixed model: the deviance as a function of (theta, beta).

As in lme4's glmer, the conditional modes u of the spherical random effects (b = Lambda u)
are found by penalised iteratively reweighted least squares (PIRLS): each step solves the
weighted penalised least-squares problem with the blocked Cholesky factor of the linear
mixed model (``ProfiledDeviance.factor`` on weighted cross-products; with a single
random-effects term, the same factor from per-level sums), with step halving on the
penalised deviance. At the modes, the Laplace approximation of -2 log-likelihood is

    -2 log p(y | u) + ||u||^2 + log |L|^2,     L L' = Lambda'Z'WZ Lambda + I,

and, for a single scalar random-effects term, adaptive Gauss-Hermite quadrature refines
the one-dimensional integral of each level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.special import expit, gammaln, ndtr, ndtri, xlogy

from estimators.mixed._design import DesignMatrices, weighted_cross_products
from estimators.mixed._deviance import (
    Factor,
    ProfiledDeviance,
    first_term_modes,
    spherical_modes,
    template,
)

FAMILIES: tuple[str, ...] = ("binomial", "poisson", "negative_binomial")
# The links glmer's C++ family code evaluates itself (lme4's glmFamily.cpp), first the
# canonical one of each family.
LINKS: dict[str, tuple[str, ...]] = {
    "binomial": ("logit", "probit", "cloglog", "cauchit"),
    "poisson": ("log",),
    "negative_binomial": ("log",),
}
EPSILON = float(np.finfo(float).eps)
# PIRLS by Fisher scoring (non-canonical links): whole steps once they are smaller than
# FIXED_POINT_STEP, until they are smaller than STEP_TOLERANCE (in u and beta).
FIXED_POINT_STEP = 1e-3
STEP_TOLERANCE = 1e-10


def check_family(family: str, link: str | None, nb_theta: float | None) -> str:
    """Validate a family, its link and a fixed theta of the negative binomial; return
    the link (the canonical one for None), with errors that name the parameter."""
    if family not in FAMILIES:
        raise ValueError(f"family: expected one of {FAMILIES}, got {family!r}")
    links = LINKS[family]
    if link is None:
        link = links[0]
    elif link not in links:
        raise ValueError(
            f"link: family={family!r} takes one of {links} (None: {links[0]!r}), got {link!r}"
        )
    if nb_theta is not None:
        if family != "negative_binomial":
            raise ValueError(
                f"nb_theta: only family='negative_binomial' has a theta, not family={family!r}"
            )
        if (
            isinstance(nb_theta, bool)
            or not isinstance(nb_theta, int | float | np.integer | np.floating)
            or not np.isfinite(nb_theta)
            or nb_theta <= 0
        ):
            raise ValueError(
                f"nb_theta: expected a positive number or None (estimate it), got {nb_theta!r}"
            )
    return link


def _cauchy_cdf(eta: np.ndarray) -> np.ndarray:
    # R's pcauchy: atan(1/x) in the tails keeps the small tail probabilities accurate.
    with np.errstate(divide="ignore"):
        tail = np.arctan(1.0 / eta) / np.pi
    return np.where(
        np.abs(eta) > 1, np.where(eta > 0, 1.0 - tail, -tail), 0.5 + np.arctan(eta) / np.pi
    )


@dataclass(frozen=True)
class Family:
    """A response family and link as glmer evaluates them (lme4's ``glmFamily``): R's
    ``binomial(link)``, ``poisson()`` and ``MASS::negative.binomial(theta)``.

    ``y`` is the proportion (binomial, with ``weights`` the trials) or the count
    (poisson, negative binomial; ``weights`` prior weights), as glmer reads them.
    Means and their derivatives are clamped as lme4 clamps them (to machine epsilon
    away from 0 and 1 where lme4 does, and only there).

    Parameters
    ----------
    name : {"binomial", "poisson", "negative_binomial"}
    link : str, optional
        One of ``LINKS[name]``; None for the canonical link.
    nb_theta : float, optional
        The negative binomial's theta (R's ``size``): variance ``mu + mu^2 / theta``.
    """

    name: str
    link: str | None = None
    nb_theta: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "link", check_family(self.name, self.link, self.nb_theta))
        if self.name == "negative_binomial" and self.nb_theta is None:
            raise ValueError("nb_theta: family='negative_binomial' needs a theta")

    @property
    def canonical(self) -> bool:
        """Whether the link is canonical, so that Fisher scoring is Newton's method
        (logit for binomial, log for Poisson; the negative binomial's log link is not
        its canonical one)."""
        return (self.name, self.link) in {("binomial", "logit"), ("poisson", "log")}

    def mean(self, eta: np.ndarray) -> np.ndarray:
        """Inverse link."""
        # minimum(maximum()) rather than clip: the same values, a quarter of the cost
        # on small data (PIRLS calls this at every step).
        if self.link == "logit":
            return np.minimum(np.maximum(expit(eta), EPSILON), 1 - EPSILON)
        if self.link == "probit":
            return np.minimum(ndtr(eta), 1 - EPSILON)
        if self.link == "cloglog":
            return np.minimum(np.maximum(-np.expm1(-np.exp(eta)), EPSILON), 1 - EPSILON)
        if self.link == "cauchit":
            return np.minimum(_cauchy_cdf(eta), 1 - EPSILON)
        return np.maximum(np.exp(eta), EPSILON)

    def linkfun(self, mu: np.ndarray) -> np.ndarray:
        """The link, g(mu)."""
        if self.link == "logit":
            return np.log(mu / (1 - mu))
        if self.link == "probit":
            return ndtri(mu)
        if self.link == "cloglog":
            return np.log(-np.log1p(-mu))
        if self.link == "cauchit":
            return np.tan(np.pi * (mu - 0.5))
        return np.log(mu)

    def mu_eta(self, eta: np.ndarray) -> np.ndarray:
        """d mu / d eta at eta."""
        if self.link == "logit":
            e = np.exp(-np.abs(eta))
            return np.maximum(e / (1 + e) ** 2, EPSILON)
        if self.link == "probit":
            return np.exp(-0.5 * eta**2) / np.sqrt(2 * np.pi)
        if self.link == "cloglog":
            return np.maximum(np.exp(eta - np.exp(eta)), EPSILON)
        if self.link == "cauchit":
            return 1.0 / (np.pi * (1 + eta**2))
        return np.maximum(np.exp(eta), EPSILON)

    def variance(self, mu: np.ndarray) -> np.ndarray:
        if self.name == "binomial":
            return np.maximum(mu * (1 - mu), EPSILON)
        if self.name == "poisson":
            return mu
        return mu + mu**2 / self.nb_theta

    def working(
        self, y: np.ndarray, weights: np.ndarray, eta: np.ndarray, offset: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """PIRLS's working response ``eta - offset + (y - mu) / mu_eta`` and working
        weights ``weights * mu_eta^2 / variance`` (lme4's ``wrkResp`` and
        ``sqrtXwt^2``)."""
        mu = self.mean(eta)
        mu_eta = self.mu_eta(eta)
        if self.link not in ("probit", "cauchit"):
            return eta - offset + (y - mu) / mu_eta, weights * mu_eta**2 / self.variance(mu)
        # probit and cauchit leave mu_eta unclamped, as lme4: far in the tails it is 0,
        # and so is the row's weight; its working response is then the linear predictor.
        with np.errstate(divide="ignore", invalid="ignore"):
            response = eta - offset + (y - mu) / mu_eta
        response = np.where(mu_eta > 0, response, eta - offset)
        return response, weights * mu_eta**2 / self.variance(mu)

    def newton_working(
        self, y: np.ndarray, weights: np.ndarray, eta: np.ndarray, offset: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Working response and weights of a Newton step towards the conditional modes:
        with the observed information where it is positive for every y (the negative
        binomial's log link: ``(y + theta) mu theta / (mu + theta)^2``), so that PIRLS
        converges quadratically; Fisher scoring (``working``) otherwise. The modes are
        the same; the Laplace value takes the Fisher weights at them, as lme4."""
        if self.name != "negative_binomial":
            return self.working(y, weights, eta, offset)
        mu, theta = self.mean(eta), self.nb_theta
        observed = (y + theta) * mu * theta / (mu + theta) ** 2
        score = y - (y + theta) * mu / (mu + theta)
        return eta - offset + score / observed, weights * observed

    def start(self, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """R's starting means (``mustart`` of the family's ``initialize``)."""
        if self.name == "binomial":
            return (weights * y + 0.5) / (weights + 1)
        if self.name == "poisson":
            return y + 0.1
        return y + (y == 0) / 6

    def kernel(self, y: np.ndarray, weights: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """-2 log p(y_i | eta_i) per row, up to a term that does not depend on eta.

        Linear in (weights, weights * y), so rows with equal eta can be summed.
        """
        if self.link == "logit":
            # y log(mu) + (1 - y) log(1 - mu), with log(1 - mu) = log(mu) - eta: one
            # log-sigmoid instead of two, in numpy's exp and log1p (scipy's log_expit
            # takes twice as long; PIRLS evaluates this at every step).
            log_mu = np.minimum(eta, 0) - np.log1p(np.exp(-np.abs(eta)))
            return -2 * weights * (log_mu - (1 - y) * eta)
        if self.name == "binomial":
            mu = self.mean(eta)
            return -2 * weights * (xlogy(y, mu) + xlogy(1 - y, 1 - mu))
        if self.name == "poisson":
            return 2 * weights * (np.exp(eta) - y * eta)
        theta = self.nb_theta
        log_mu = np.log(self.mean(eta))
        return (
            -2
            * weights
            * (y * log_mu - (y + theta) * np.logaddexp(log_mu, np.log(theta)) + xlogy(theta, theta))
        )

    def constant(self, y: np.ndarray, weights: np.ndarray) -> float:
        """The term ``kernel`` leaves out, summed over rows: -2 log of the binomial
        coefficients, 2 log y!, or the negative binomial's gamma functions (R's
        ``family$aic`` keeps them)."""
        if self.name == "binomial":
            trials = np.round(weights)
            successes = np.round(weights * y)
            log_choose = (
                gammaln(trials + 1) - gammaln(successes + 1) - gammaln(trials - successes + 1)
            )
            return float(-2 * np.sum(log_choose))
        if self.name == "poisson":
            return float(2 * np.sum(weights * gammaln(y + 1)))
        theta = self.nb_theta
        log_coefficient = gammaln(y + theta) - gammaln(theta) - gammaln(y + 1)
        return float(-2 * np.sum(weights * log_coefficient))

    def saturated(self, y: np.ndarray, weights: np.ndarray) -> float:
        """``kernel`` of the saturated model (mu = y), summed: the deviance residuals
        are ``kernel`` minus this."""
        if self.name == "binomial":
            return float(-2 * np.sum(weights * (xlogy(y, y) + xlogy(1 - y, 1 - y))))
        if self.name == "poisson":
            return float(2 * np.sum(weights * (y - xlogy(y, y))))
        theta = self.nb_theta
        return float(
            -2
            * np.sum(
                weights * (xlogy(y, y) - (y + theta) * np.log(y + theta) + xlogy(theta, theta))
            )
        )


@dataclass
class Modes:
    """The outcome of PIRLS at one (theta, beta)."""

    theta: np.ndarray
    beta: np.ndarray
    u: np.ndarray  # spherical random effects, first term level by level, then the rest
    eta: np.ndarray
    factor: Factor  # of the working model at the modes, with the Fisher weights
    penalised_deviance: float  # sum of kernel + ||u||^2
    iterations: int
    converged: bool


class GlmmDeviance:
    """-2 log-likelihood of a generalized linear mixed model (Laplace or AGQ).

    Called with ``concatenate([theta, beta])``, it runs PIRLS over u and returns the
    approximation glmer minimises in its second stage; ``profiled(theta)`` runs PIRLS
    over (beta, u) jointly, glmer's first (nAGQ = 0) stage.

    Parameters
    ----------
    matrices : DesignMatrices
        X and the sparse Z blocks, built once (rows may be aggregated patterns).
    qs, levels : list of int
        Columns and levels per random-effects term, largest factor first.
    family : Family
    y, weights, offset : numpy.ndarray
        Response (proportion or count), prior weights (trials), offset per row.
    n_agq : int
        1 for the Laplace approximation; more for adaptive Gauss-Hermite quadrature
        (single scalar term only).
    constant : float
        Added to every value: ``Family.constant`` of the data as given, so that the
        Laplace value is -2 log-likelihood; for n_agq > 1, minus ``Family.saturated``,
        since glmer's quadrature deviance is built from deviance residuals.
    tolerance : float
        PIRLS stops when a step changes the penalised deviance by less than this,
        relative.

    Notes
    -----
    The last modes are kept as the starting point of the next evaluation (a private
    workspace: the value does not depend on it beyond the PIRLS tolerance).

    With a single random-effects term the penalised system is block-diagonal over the
    term's levels up to the fixed effects' (p + 1) x (p + 1) Schur complement, so each
    PIRLS step is a batch of q x q factors computed from per-level sums, the same
    arithmetic as ``ProfiledDeviance.factor`` without its sparse blocks, whose
    construction costs more than the solve on small data (cbpp: 56 rows, 15 herds).
    """

    def __init__(
        self,
        matrices: DesignMatrices,
        qs: list[int],
        levels: list[int],
        family: Family,
        y: np.ndarray,
        weights: np.ndarray,
        offset: np.ndarray,
        *,
        n_agq: int = 1,
        constant: float = 0.0,
        tolerance: float = 1e-12,
        max_iterations: int = 100,
    ) -> None:
        self.matrices = matrices
        self.qs = qs
        self.levels = levels
        self.family = family
        self.y = y
        self.weights = weights
        self.offset = offset
        self.n_agq = n_agq
        self.constant = constant
        self.tolerance = tolerance
        self.max_iterations = max_iterations
        self.p = matrices.X.shape[1]
        self.n_theta = int(sum(q * (q + 1) // 2 for q in qs))
        self._splits = np.cumsum([q * (q + 1) // 2 for q in qs])[:-1]
        self._size1 = qs[0] * levels[0]
        self._u = np.zeros(int(sum(q * n for q, n in zip(qs, levels, strict=True))))
        self._beta: np.ndarray | None = None
        self._one_term = matrices.Zr.shape[1] == 0
        self._no_rest = sp.csr_matrix((0, self._size1))
        if n_agq > 1:
            if len(qs) != 1 or qs[0] != 1:
                raise ValueError("n_agq > 1 needs a single scalar random-effects term like (1 | g)")
            nodes, node_weights = np.polynomial.hermite_e.hermegauss(n_agq)
            self._nodes = nodes
            self._node_weights = node_weights / np.sqrt(2 * np.pi)  # sum to 1

    # -- the linear predictor ----------------------------------------------------------
    def templates(self, theta: np.ndarray) -> list[np.ndarray]:
        return [template(t, q) for t, q in zip(np.split(theta, self._splits), self.qs, strict=True)]

    def random_effects(self, templates: list[np.ndarray], u: np.ndarray) -> list[np.ndarray]:
        """b = Lambda u per term, as (levels, q) arrays."""
        blocks, start = [], 0
        for T, q, n in zip(templates, self.qs, self.levels, strict=True):
            blocks.append(u[start : start + q * n].reshape(n, q) @ T.T)
            start += q * n
        return blocks

    def linear_predictor(
        self,
        templates: list[np.ndarray],
        beta: np.ndarray,
        u: np.ndarray,
        *,
        x_beta: np.ndarray | None = None,
    ) -> np.ndarray:
        """offset + X beta + Z Lambda u (``x_beta``: X beta, if already computed)."""
        b = self.random_effects(templates, u)
        m = self.matrices
        if x_beta is None:
            x_beta = m.X @ beta
        if self._one_term:
            # Z b row by row: each row's level's effects times its covariates.
            if m.values1.shape[1] == 1:
                random = m.values1[:, 0] * np.take(b[0][:, 0], m.codes1)
            else:
                random = np.einsum("ij,ij->i", m.values1, b[0][m.codes1])
            return self.offset + x_beta + random
        eta = self.offset + x_beta + m.Z1 @ b[0].ravel()
        if len(b) > 1:
            eta += self.matrices.Zr @ np.concatenate([block.ravel() for block in b[1:]])
        return eta

    def _penalised(self, eta: np.ndarray, u: np.ndarray) -> float:
        # einsum rather than u @ u: see the note on BLAS dot products in _design.
        return float(
            np.sum(self.family.kernel(self.y, self.weights, eta)) + np.einsum("i,i->", u, u)
        )

    # -- PIRLS --------------------------------------------------------------------------
    def modes(
        self,
        theta: np.ndarray,
        beta: np.ndarray | None = None,
        u: np.ndarray | None = None,
    ) -> Modes:
        """Conditional modes at theta by PIRLS: over u for a given beta, or over (beta,
        u) jointly when ``beta`` is None (then starting from R's starting means when no
        earlier joint solution exists)."""
        theta = np.asarray(theta, dtype=float)
        templates = self.templates(theta)
        joint = beta is None
        u = self._u.copy() if u is None else np.asarray(u, dtype=float).copy()
        if joint and self._beta is None:
            mu = self.family.start(self.y, self.weights)
            eta = self.family.linkfun(mu)
            current, beta = np.inf, np.zeros(self.p)
        else:
            beta = (self._beta if joint else np.asarray(beta, dtype=float)).copy()
            eta = self.linear_predictor(templates, beta, u)
            current = self._penalised(eta, u)
        # Over u alone, X beta is the same at every step.
        x_beta = None if joint else self.matrices.X @ beta
        converged, iterations = False, 0
        while True:
            done = converged or iterations >= self.max_iterations
            # Newton steps while iterating; at the modes the factor of the Laplace
            # value, with the Fisher weights.
            weigh = self.family.working if done else self.family.newton_working
            working, working_weights = weigh(self.y, self.weights, eta, self.offset)
            if not joint:
                working -= x_beta
            solve_step = self._one_term_step if self._one_term else self._blocked_step
            factor, beta_new, u_new = solve_step(
                theta, templates, working, working_weights, joint, done
            )
            if done:
                break
            iterations += 1
            if not joint:
                beta_new = beta
            size = max(np.max(np.abs(u_new - u), initial=0.0), np.max(np.abs(beta_new - beta)))
            if not self.family.canonical and np.isfinite(current) and size < FIXED_POINT_STEP:
                # Fisher scoring converges linearly, and near the mode a step lowers the
                # penalised deviance by less than its rounding error, so a stop on that
                # change leaves the modes ~1e-7 off and the Laplace value ~1e-7 noisy.
                # Close to the mode the iteration contracts: take whole steps until
                # they are negligible.
                u, beta = u_new, beta_new
                eta = self.linear_predictor(templates, beta, u, x_beta=x_beta)
                current = self._penalised(eta, u)
                converged = bool(size < STEP_TOLERANCE)
                continue
            # Step halving: accept the first fraction of the step that does not raise
            # the penalised deviance. A whole step that raises it by less than the
            # tolerance is taken too: the penalised deviance is flat at the mode and its
            # rounding hides such a step, but the log-determinant of the Laplace value
            # moves with u to first order (a step of 1e-9 left untaken moved cbpp's
            # deviance by 2e-8, and its finite-difference Hessian by 4e-4).
            step = 1.0
            for _ in range(12):
                whole = step == 1.0 or not np.isfinite(current)
                u_try = u_new if whole else u + step * (u_new - u)
                beta_try = beta_new if whole else beta + step * (beta_new - beta)
                eta_try = self.linear_predictor(templates, beta_try, u_try, x_beta=x_beta)
                value = self._penalised(eta_try, u_try)
                if value <= current or (
                    step == 1.0 and value - current <= self.tolerance * (abs(value) + 0.1)
                ):
                    break
                step /= 2
            else:
                # No fraction of the step decreases it: at the mode to rounding error.
                converged = True
                continue
            change = current - value
            u, beta, eta = u_try, beta_try, eta_try
            converged = bool(change <= self.tolerance * (abs(value) + 0.1))
            current = value
        self._u = u
        if joint:
            self._beta = beta
        return Modes(theta, beta, u, eta, factor, current, iterations, converged)

    def _blocked_step(
        self,
        theta: np.ndarray,
        templates: list[np.ndarray],
        working: np.ndarray,
        weights: np.ndarray,
        joint: bool,
        done: bool,
    ) -> tuple[Factor, np.ndarray, np.ndarray]:
        """One weighted penalised least-squares solve with the blocked factor of the
        linear mixed model: the factor, beta (empty unless ``joint``) and u (the last
        two empty when ``done``: only the factor is wanted)."""
        cross = weighted_cross_products(self.matrices, working, weights, include_fixed=joint)
        objective = ProfiledDeviance(cross, self.qs, self.levels, reml=False)
        factor = objective.factor(theta)
        if done:
            return factor, np.zeros(0), np.zeros(0)
        beta, u1, u_rest = spherical_modes(objective, factor)
        return factor, beta, np.concatenate([u1.ravel(), u_rest])

    def _one_term_step(
        self,
        theta: np.ndarray,
        templates: list[np.ndarray],
        working: np.ndarray,
        weights: np.ndarray,
        joint: bool,
        done: bool,
    ) -> tuple[Factor | None, np.ndarray, np.ndarray]:
        """``_blocked_step`` for a single random-effects term, from per-level sums; the
        factor only when ``done`` (the Laplace value needs it, a step does not)."""
        m = self.matrices
        codes, values, n_levels = m.codes1, m.values1, m.n_levels1
        q = values.shape[1]
        T = templates[0]
        weighted = values * weights[:, None]

        def by_level(column: np.ndarray) -> np.ndarray:
            """Z'W column as (levels, q): sums over each level's rows."""
            if q == 1:
                sums = np.bincount(codes, weights=weighted[:, 0] * column, minlength=n_levels)
                return sums.reshape(n_levels, 1)
            return np.column_stack(
                [
                    np.bincount(codes, weights=weighted[:, k] * column, minlength=n_levels)
                    for k in range(q)
                ]
            )

        if q == 1:
            # Scalar term: each level's 1 x 1 block of Lambda'Z'WZ Lambda + I, and
            # Lambda L11^-T a scaling per level.
            A11 = T[0, 0] ** 2 * by_level(values[:, 0])[:, 0] + 1.0
            if not np.all(A11 > 0):
                raise np.linalg.LinAlgError("the penalised system is not positive definite")
            L11 = np.sqrt(A11).reshape(n_levels, 1, 1)
            per_level_map = (T[0, 0] / L11).reshape(n_levels, 1, 1)
        else:
            G1 = np.empty((n_levels, q, q))
            for k in range(q):
                for j in range(k, q):
                    G1[:, k, j] = G1[:, j, k] = np.bincount(
                        codes, weights=weighted[:, k] * values[:, j], minlength=n_levels
                    )
            L11 = np.linalg.cholesky(np.einsum("ki,jkl,lm->jim", T, G1, T) + np.eye(q))
            # (Lambda L11^-T)' = L11^-1 T' per level.
            per_level_map = np.einsum("jik,lk->jil", np.linalg.inv(L11), T)

        def l21(sums: np.ndarray) -> np.ndarray:
            """Rows of L21 from Z'W sums (levels, q, columns)."""
            if q == 1:
                return sums * per_level_map
            return np.einsum("jik,jkc->jic", per_level_map, sums)

        L21_y = l21(by_level(working)[:, :, None]).ravel()
        if not joint:
            if not done:
                return None, np.zeros(0), first_term_modes(L11, L21_y).ravel()
            # The penalised residual sum of squares, whose square root is the factor's
            # last entry.
            pwrss = float(np.einsum("i,i->", working, working * weights)) - float(
                np.einsum("i,i->", L21_y, L21_y)
            )
            if not pwrss > 0:
                raise np.linalg.LinAlgError("the penalised system is not positive definite")
            LS = np.array([[np.sqrt(pwrss)]])
            no_fixed = np.zeros((0, L21_y.size))
            return (
                Factor([T], L11, self._no_rest, no_fixed, L21_y, LS, 0, 0),
                np.zeros(0),
                np.zeros(0),
            )
        X = m.X
        p = X.shape[1]
        Z1X = np.stack([by_level(X[:, c]) for c in range(p)], axis=-1)  # (levels, q, p)
        L21_X = l21(Z1X).reshape(n_levels * q, p).T
        WX = X * weights[:, None]
        # einsum, not BLAS: OpenBLAS threads X'Wy on long data (16 ms against 1 ms for
        # 200k rows on a busy machine).
        Xy = np.einsum("ij,i->j", WX, working)
        # The Schur complement of [X, y] after the random effects, (p + 1) x (p + 1).
        D = np.vstack([L21_X, L21_y[None, :]])
        S = -(D @ D.T)
        S[:p, :p] += X.T @ WX
        S[:p, -1] += Xy
        S[-1, :p] += Xy
        S[-1, -1] += float(np.einsum("i,i->", working, working * weights))
        LS = np.linalg.cholesky(S)
        if done:
            return Factor([T], L11, self._no_rest, L21_X, L21_y, LS, 0, p), np.zeros(0), np.zeros(0)
        beta = np.linalg.solve(LS[:p, :p].T, LS[-1, :p]) if p else np.zeros(0)
        return None, beta, first_term_modes(L11, L21_y - L21_X.T @ beta).ravel()

    def beta_cov(self, modes: Modes) -> np.ndarray:
        """cov(beta) given theta at the modes, the scale being 1: (L_X L_X')^-1 from the
        factor of the joint (beta, u) system with the Fisher weights there (glmer's
        vcov with use.hessian = FALSE).

        The small triangle is inverted by numpy's inv, not by a triangular solve against
        the identity: OpenBLAS threads that even at 4 x 4, and waking its threads cost
        10-30 ms a call on a busy machine, more than a whole fit of cbpp.
        """
        factor = modes.factor
        if factor.p != self.p:
            # Modes over u alone: factor the joint system at them.
            working, weights = self.family.working(self.y, self.weights, modes.eta, self.offset)
            solve_step = self._one_term_step if self._one_term else self._blocked_step
            templates = self.templates(modes.theta)
            factor = solve_step(modes.theta, templates, working, weights, True, True)[0]
        rest, p = factor.n_rest, factor.p
        inverse = np.linalg.inv(factor.LS[rest : rest + p, rest : rest + p])
        return inverse.T @ inverse

    # -- the deviance ---------------------------------------------------------------------
    def value(self, modes: Modes) -> float:
        """The Laplace (n_agq = 1) or adaptive Gauss-Hermite value at the modes."""
        if self.n_agq == 1:
            return modes.penalised_deviance + modes.factor.logdet_Z + self.constant
        # One scalar term: every level's integral is one-dimensional.
        codes, values = self.matrices.codes1, self.matrices.values1[:, 0]
        n_levels = self.levels[0]
        lam = modes.factor.templates[0][0, 0]
        L = modes.factor.L11[:, 0, 0]
        sd = 1.0 / L
        u = modes.u

        def per_level(eta: np.ndarray, u_at: np.ndarray) -> np.ndarray:
            kernel = self.family.kernel(self.y, self.weights, eta)
            return np.bincount(codes, weights=kernel, minlength=n_levels) + u_at**2

        at_mode = per_level(modes.eta, u)
        total = np.zeros(n_levels)
        for node, weight in zip(self._nodes, self._node_weights, strict=True):
            if node == 0:
                total += weight
                continue
            shift = node * sd
            eta = modes.eta + lam * values * shift[codes]
            change = per_level(eta, u + shift) - at_mode
            total += weight * np.exp(-0.5 * change + 0.5 * node**2)
        return float(
            np.sum(at_mode) + 2 * np.sum(np.log(L)) - 2 * np.sum(np.log(total)) + self.constant
        )

    def split(self, parameters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parameters = np.asarray(parameters, dtype=float)
        return parameters[: self.n_theta], parameters[self.n_theta :]

    def __call__(self, parameters: np.ndarray) -> float:
        """-2 log-likelihood at ``concatenate([theta, beta])`` (inf where PIRLS fails)."""
        theta, beta = self.split(parameters)
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                value = self.value(self.modes(theta, beta))
        except (np.linalg.LinAlgError, scipy.linalg.LinAlgError, FloatingPointError):
            return float("inf")
        return value if np.isfinite(value) else float("inf")

    def profiled(self, theta: np.ndarray) -> float:
        """glmer's first stage: the Laplace value with beta found inside PIRLS."""
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                modes = self.modes(theta)
                value = modes.penalised_deviance + modes.factor.logdet_Z + self.constant
        except (np.linalg.LinAlgError, scipy.linalg.LinAlgError, FloatingPointError):
            return float("inf")
        return value if np.isfinite(value) else float("inf")
