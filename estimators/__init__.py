"""Models behind the scikit-learn estimator interface, and their registry."""

from estimators._baselines import GroupMean, HistGBM
from estimators._glm import HistGBMClassifier, LogisticFixedEffects, LogisticRidge
from estimators._linear import FixedEffects, PooledOLS
from estimators._registry import ROLES, EstimatorInfo, available, get, info, registered
from estimators.mixed import MixedBoosting, MixedLM

__all__ = [
    "ROLES",
    "EstimatorInfo",
    "FixedEffects",
    "GroupMean",
    "HistGBM",
    "HistGBMClassifier",
    "LogisticFixedEffects",
    "LogisticRidge",
    "MixedBoosting",
    "MixedLM",
    "PooledOLS",
    "available",
    "get",
    "info",
    "registered",
]
