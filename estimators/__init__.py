"""Models behind the scikit-learn estimator interface, and their registry."""

from estimators._baselines import GroupMean, HistGBM
from estimators._glm import HistGBMClassifier, LassoOneHot, LogisticFixedEffects, LogisticRidge
from estimators._linear import FixedEffects, PooledOLS
from estimators._poisson import HistGBMPoisson, PoissonFixedEffects, PoissonRidge
from estimators._reference import Lme4, StatsmodelsMixedLM
from estimators._registry import ROLES, EstimatorInfo, available, get, info, registered
from estimators._shrinkage import EBShrinkage, RidgeOneHot
from estimators._trees import RandomForest, TargetEncodedGBM
from estimators.mixed import MixedBoosting, MixedGLM, MixedLM

__all__ = [
    "ROLES",
    "EBShrinkage",
    "EstimatorInfo",
    "FixedEffects",
    "GroupMean",
    "HistGBM",
    "HistGBMClassifier",
    "HistGBMPoisson",
    "LassoOneHot",
    "Lme4",
    "LogisticFixedEffects",
    "LogisticRidge",
    "MixedBoosting",
    "MixedGLM",
    "MixedLM",
    "PoissonFixedEffects",
    "PoissonRidge",
    "PooledOLS",
    "RandomForest",
    "RidgeOneHot",
    "StatsmodelsMixedLM",
    "TargetEncodedGBM",
    "available",
    "get",
    "info",
    "registered",
]
