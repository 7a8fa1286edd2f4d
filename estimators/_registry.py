"""Registry of estimators: short name -> factory plus what the harness must know."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import Any

from sklearn.base import BaseEstimator

from estimators._baselines import GroupMean, HistGBM
from estimators._glm import (
    HistGBMClassifier,
    LassoOneHot,
    LogisticFixedEffects,
    LogisticRidge,
)
from estimators._linear import FixedEffects, PooledOLS
from estimators._poisson import HistGBMPoisson, PoissonFixedEffects, PoissonRidge
from estimators._reference import (
    Lme4,
    StatsmodelsMixedLM,
    lme4_missing_reason,
    statsmodels_missing_reason,
)
from estimators._shrinkage import EBShrinkage, RidgeOneHot
from estimators._trees import RandomForest, TargetEncodedGBM
from estimators.mixed import MixedBoosting, MixedGLM, MixedLM
from simulators._params import suggest

# Roles an estimator may take from a Dataset, each an ordinary constructor parameter:
# feature_cols <- Dataset.features, group_cols <- Dataset.groups,
# group_col <- Dataset.groups[0], formula <- "target ~ features + (1 | g) + ..." with a
# random intercept per grouping factor.
ROLES: tuple[str, ...] = ("feature_cols", "group_cols", "group_col", "formula")


@dataclass(frozen=True)
class EstimatorInfo:
    """A registered estimator.

    Attributes
    ----------
    name : str
        Short name used in configs and result rows.
    factory : callable
        Returns an unfitted scikit-learn estimator from keyword parameters.
    description : str
        One line for ``mixbench list``.
    families : tuple of str
        Outcome families the estimator supports.
    roles : tuple of str
        Which of ``ROLES`` it takes; the harness fills those a config leaves out.
    needs_groups : bool
        Whether it is meaningless without a grouping factor.
    missing : callable or None
        For an optional dependency: returns why it cannot be used here, or None.
    variants : mapping
        Family -> factory for families the model handles with another class (ridge on
        one-hot groups is ``LogisticRidge`` for binary outcomes, ``PoissonRidge`` for
        counts); ``factory`` serves the first family.
    """

    name: str
    factory: Callable[..., BaseEstimator]
    description: str
    families: tuple[str, ...] = ("gaussian",)
    roles: tuple[str, ...] = ("feature_cols",)
    needs_groups: bool = False
    missing: Callable[[], str | None] | None = None
    variants: Mapping[str, Callable[..., BaseEstimator]] = field(default_factory=dict)

    def factory_for(self, family: str | None = None) -> Callable[..., BaseEstimator]:
        """The factory serving ``family`` (default: the first supported family).

        Raises
        ------
        ValueError
            When the estimator does not support ``family``.
        """
        if family is None or family == self.families[0]:
            return self.factory
        if family not in self.families:
            raise ValueError(
                f"{self.name} does not support the {family} family; it supports "
                f"{', '.join(self.families)}"
            )
        return self.variants.get(family, self.factory)

    def parameter_names(self) -> list[str]:
        """Every constructor parameter of any of its factories, sorted."""
        factories = [self.factory, *self.variants.values()]
        return sorted({key for make in factories for key in make().get_params(deep=False)})

    def missing_reason(self) -> str | None:
        """Why the estimator cannot be used here, or None when it can."""
        return self.missing() if self.missing is not None else None


_REGISTRY: Mapping[str, EstimatorInfo] = MappingProxyType(
    {
        info.name: info
        for info in [
            EstimatorInfo(
                "pooled_ols",
                PooledOLS,
                "least squares on the features, no group terms",
            ),
            EstimatorInfo(
                "fixed_effects",
                FixedEffects,
                "least squares with sparse dummies per group level (lm with factors); "
                "logistic or Poisson regression with them for binary or count outcomes (glm)",
                families=("gaussian", "binomial", "poisson"),
                roles=("feature_cols", "group_cols"),
                needs_groups=True,
                variants={"binomial": LogisticFixedEffects, "poisson": PoissonFixedEffects},
            ),
            EstimatorInfo(
                "group_mean",
                GroupMean,
                "per-unit training mean, no pooling; unseen units get the overall mean",
                roles=("group_col",),
                needs_groups=True,
            ),
            EstimatorInfo(
                "mixed_lm",
                MixedLM,
                "linear mixed model, lme4 formula syntax, REML or ML (lmer)",
                roles=("formula",),
                needs_groups=True,
            ),
            EstimatorInfo(
                "mixed_glm",
                MixedGLM,
                "generalized linear mixed model, lme4 formula syntax, Laplace or adaptive "
                "quadrature (glmer); binomial (logit, probit, cloglog, cauchit) or poisson (log)",
                families=("binomial", "poisson"),
                roles=("formula",),
                needs_groups=True,
                variants={"poisson": partial(MixedGLM, family="poisson")},
            ),
            EstimatorInfo(
                "mixed_glm_nb",
                partial(MixedGLM, family="negative_binomial"),
                "negative binomial generalized linear mixed model for overdispersed counts, "
                "lme4 formula syntax, theta estimated by alternating with the fit (glmer.nb)",
                families=("poisson",),
                roles=("formula",),
                needs_groups=True,
            ),
            EstimatorInfo(
                "lme4",
                Lme4,
                "lme4's lmer through Rscript (reference implementation)",
                roles=("formula",),
                needs_groups=True,
                missing=lme4_missing_reason,
            ),
            EstimatorInfo(
                "statsmodels_mixedlm",
                StatsmodelsMixedLM,
                "statsmodels MixedLM (reference implementation; crossed factors as variance "
                "components)",
                roles=("formula",),
                needs_groups=True,
                missing=statsmodels_missing_reason,
            ),
            EstimatorInfo(
                "mixed_boosting",
                MixedBoosting,
                "boosted trees for the features, random intercepts per group (MERF-style EM)",
                roles=("feature_cols", "group_cols"),
                needs_groups=True,
            ),
            EstimatorInfo(
                "hist_gbm",
                HistGBM,
                "scikit-learn histogram gradient boosting on features and group codes "
                "(the classifier for binary outcomes, the Poisson loss for counts)",
                families=("gaussian", "binomial", "poisson"),
                roles=("feature_cols", "group_cols"),
                variants={"binomial": HistGBMClassifier, "poisson": HistGBMPoisson},
            ),
            EstimatorInfo(
                "ridge_onehot",
                RidgeOneHot,
                "ridge on one-hot groups and features, penalty by exact leave-one-out; "
                "L2 logistic regression, penalty by cross-validated log loss, for binary "
                "outcomes; L2 Poisson regression, penalty by cross-validated Poisson deviance, "
                "for counts",
                families=("gaussian", "binomial", "poisson"),
                roles=("feature_cols", "group_cols"),
                variants={"binomial": LogisticRidge, "poisson": PoissonRidge},
            ),
            EstimatorInfo(
                "eb_shrinkage",
                EBShrinkage,
                "empirical-Bayes shrinkage of unit means toward a regression (closed form)",
                roles=("feature_cols", "group_col"),
                needs_groups=True,
            ),
            EstimatorInfo(
                "random_forest",
                RandomForest,
                "scikit-learn random forest on features and group codes",
                roles=("feature_cols", "group_cols"),
            ),
            EstimatorInfo(
                "target_encoded_gbm",
                TargetEncodedGBM,
                "cross-fitted target encoding of groups, then histogram gradient boosting",
                roles=("feature_cols", "group_cols"),
            ),
            EstimatorInfo(
                "logistic_fixed_effects",
                LogisticFixedEffects,
                "logistic regression with dummies per group level (glm, binomial)",
                families=("binomial",),
                roles=("feature_cols", "group_cols"),
                needs_groups=True,
            ),
            EstimatorInfo(
                "logistic_ridge",
                LogisticRidge,
                "L2 logistic regression on one-hot groups, penalty by cross-validated log loss",
                families=("binomial",),
                roles=("feature_cols", "group_cols"),
            ),
            EstimatorInfo(
                "lasso_onehot",
                LassoOneHot,
                "L1 logistic regression on one-hot groups and features, penalty by 10-fold CV "
                "on the deviance (cv.glmnet's lambda.min)",
                families=("binomial",),
                roles=("feature_cols", "group_cols"),
            ),
            EstimatorInfo(
                "hist_gbm_classifier",
                HistGBMClassifier,
                "scikit-learn histogram gradient boosting classifier on features and group codes",
                families=("binomial",),
                roles=("feature_cols", "group_cols"),
            ),
            EstimatorInfo(
                "poisson_fixed_effects",
                PoissonFixedEffects,
                "Poisson regression with dummies per group level (glm, poisson)",
                families=("poisson",),
                roles=("feature_cols", "group_cols"),
                needs_groups=True,
            ),
            EstimatorInfo(
                "poisson_ridge",
                PoissonRidge,
                "L2 Poisson regression on one-hot groups, penalty by cross-validated Poisson "
                "deviance",
                families=("poisson",),
                roles=("feature_cols", "group_cols"),
            ),
            EstimatorInfo(
                "hist_gbm_poisson",
                HistGBMPoisson,
                "scikit-learn histogram gradient boosting with the Poisson loss on features "
                "and group codes",
                families=("poisson",),
                roles=("feature_cols", "group_cols"),
            ),
        ]
    }
)


def registered() -> list[str]:
    """Every registered name, installed or not, sorted."""
    return sorted(_REGISTRY)


def available() -> list[str]:
    """Names of the estimators usable here (optional dependencies present), sorted."""
    return [name for name in registered() if _REGISTRY[name].missing_reason() is None]


def info(name: str) -> EstimatorInfo:
    """The registered estimator called ``name``.

    Raises
    ------
    KeyError
        Listing the valid names when ``name`` is not registered.
    """
    if name not in _REGISTRY:
        raise KeyError(
            f"unknown estimator {name!r}{suggest(name, registered())} "
            f"Available estimators: {', '.join(available())}"
        )
    return _REGISTRY[name]


def get(name: str, family: str | None = None, **params: Any) -> BaseEstimator:
    """An unfitted estimator from the registry.

    Parameters
    ----------
    name : str
        A name from :func:`available`.
    family : str, optional
        Outcome family of the data; picks the model's variant for it (``ridge_onehot``
        on binary outcomes is an L2-penalised logistic regression). Default: the
        estimator's first family.
    **params
        Constructor parameters.

    Returns
    -------
    sklearn.base.BaseEstimator

    Raises
    ------
    KeyError
        For an unknown name.
    ImportError
        When the estimator's optional dependency is not installed.
    ValueError
        For a parameter the estimator does not take.

    Examples
    --------
    >>> from estimators import get
    >>> get("fixed_effects", group_cols=["user"])
    FixedEffects(group_cols=['user'])
    """
    entry = info(name)
    reason = entry.missing_reason()
    if reason:
        raise ImportError(reason)
    estimator = entry.factory_for(family)()
    valid = sorted(estimator.get_params(deep=False))
    unknown = [key for key in params if key not in valid]
    if unknown:
        variant = f" ({type(estimator).__name__}, for {family} data)" if family else ""
        raise ValueError(
            f"{name}{variant}: unknown parameter {unknown[0]!r}{suggest(unknown[0], valid)} "
            f"Valid parameters: {', '.join(valid)}"
        )
    return estimator.set_params(**params)
