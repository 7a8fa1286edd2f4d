# lmer fits of the random designs of test_vs_lme4_live.py, read from CSV files.
#
#   Rscript tests/estimators/lme4_live.R designs.json
#
# designs.json lists {path, formula, reml}; every data set has a prior-weight column w
# and an offset column o (1 and 0 where a design has none). Prints a JSON array with,
# per design, the objective (REML criterion or deviance), theta, fixef by name,
# VarCorr's sdcor column and isSingular.
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
designs <- fromJSON(args[1], simplifyVector = FALSE)
out <- list()
for (d in designs) {
  data <- read.csv(d$path, stringsAsFactors = TRUE)
  data$g <- factor(data$g); data$h <- factor(data$h)
  fit <- lmer(as.formula(d$formula), data, REML = d$reml, weights = w, offset = o,
              control = lmerControl(optCtrl = list(xtol_abs = 1e-10, ftol_abs = 1e-12,
                                                   xtol_rel = 0)))
  vc <- as.data.frame(VarCorr(fit))
  out[[length(out) + 1]] <- list(
    objective = if (d$reml) REMLcrit(fit) else deviance(fit),
    theta = unname(getME(fit, "theta")),
    fixef = as.list(fixef(fit)),
    sdcor = vc$sdcor, singular = isSingular(fit))
}
cat(toJSON(out, digits = NA, auto_unbox = TRUE))
