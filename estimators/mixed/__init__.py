"""Mixed-effects models: the linear (lme4's lmer) and generalized linear (glmer) mixed
models and their building blocks."""

from estimators.mixed._boosting import MixedBoosting
from estimators.mixed._formula import FormulaError, parse_formula, quote_name
from estimators.mixed._glmm import MixedGLM
from estimators.mixed._lmm import MixedLM

__all__ = ["FormulaError", "MixedBoosting", "MixedGLM", "MixedLM", "parse_formula", "quote_name"]
