"""Mixed-effects models: the linear mixed model (lme4's lmer) and its building blocks."""

from estimators.mixed._boosting import MixedBoosting
from estimators.mixed._formula import FormulaError, parse_formula
from estimators.mixed._lmm import MixedLM

__all__ = ["FormulaError", "MixedBoosting", "MixedLM", "parse_formula"]
