# glmer's (or glmer.nb's) side of benchmarks/bench_glmm.py: fit a formula to a CSV file a
# number of times and print the fit times, -2 logLik and notes as one BENCH_JSON line.
#
#   Rscript benchmarks/bench_glmm.R <csv> <formula> <factor columns, comma-separated>
#       <repeats> <family: binomial | negative_binomial>
#
# binomial: glmer(formula, data, family = binomial) with default control;
# negative_binomial: glmer.nb(formula, data) with its defaults. system.time is taken
# around the fitting call only.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})
args <- commandArgs(trailingOnly = TRUE)
data <- read.csv(args[1])
for (column in strsplit(args[3], ",")[[1]]) data[[column]] <- factor(data[[column]])
repeats <- as.integer(args[4])
family <- args[5]
form <- as.formula(args[2])
fit_once <- if (family == "negative_binomial") {
  function() glmer.nb(form, data)
} else {
  function() glmer(form, data, family = get(family))
}
seconds <- numeric(0)
notes <- character(0)
note <- function(condition, restart) {
  notes <<- c(notes, conditionMessage(condition))
  invokeRestart(restart)
}
for (k in seq_len(repeats)) {
  seconds[k] <- system.time(withCallingHandlers(
    fit <- fit_once(),
    warning = function(w) note(w, "muffleWarning"),
    message = function(m) note(m, "muffleMessage")
  ))[["elapsed"]]
}
result <- list(seconds = seconds, objective = -2 * as.numeric(logLik(fit)),
               notes = unique(notes), lme4 = as.character(packageVersion("lme4")),
               blas = extSoftVersion()[["BLAS"]])
if (family == "negative_binomial") result$nb_theta <- getME(fit, "glmer.nb.theta")
cat("BENCH_JSON ", toJSON(result, auto_unbox = TRUE, digits = NA), "\n", sep = "")
