# Fits many small data sets with lme4 one after another, for bench_lmm.py's throughput case;
# prints the results as one JSON line.
# Arguments: CSV file (the data sets told apart by a `dataset` column), formula, factor
# columns (comma-separated), seconds after which no further fit is started.
suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})
args <- commandArgs(trailingOnly = TRUE)
form <- as.formula(args[[2]])
factors <- strsplit(args[[3]], ",", fixed = TRUE)[[1]]
limit <- as.numeric(args[[4]])

data <- read.csv(args[[1]], colClasses = setNames(rep("factor", length(factors)), factors))
# Split before timing, dropping the levels of the other data sets.
datasets <- lapply(split(data, data$dataset), droplevels)

notes <- character(0)
quiet_lmer <- function(frame) {
  withCallingHandlers(
    lmer(form, frame),
    warning = function(w) {
      notes <<- c(notes, conditionMessage(w))
      invokeRestart("muffleWarning")
    },
    message = function(m) {
      notes <<- c(notes, trimws(conditionMessage(m)))
      invokeRestart("muffleMessage")
    }
  )
}

invisible(quiet_lmer(datasets[[1]]))  # warm-up
remlcrit <- numeric(0)
start <- proc.time()[["elapsed"]]
for (frame in datasets) {
  remlcrit <- c(remlcrit, REMLcrit(quiet_lmer(frame)))
  if (proc.time()[["elapsed"]] - start > limit) break
}
seconds <- proc.time()[["elapsed"]] - start
result <- list(
  seconds = seconds,
  fits = length(remlcrit),
  remlcrit = I(sprintf("%.17g", remlcrit)),
  notes = I(notes),
  lme4 = as.character(packageVersion("lme4")),
  r = R.version.string,
  blas = extSoftVersion()[["BLAS"]]
)
cat("BENCH_JSON ", toJSON(result, auto_unbox = TRUE, digits = NA), "\n", sep = "")
