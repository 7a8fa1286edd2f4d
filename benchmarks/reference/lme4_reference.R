#!/usr/bin/env Rscript
# Reference fixtures for mixbench's linear mixed model, computed with lme4.
#
# Regenerate (from the repository root; overwrites every fixture below):
#
#   Rscript benchmarks/reference/lme4_reference.R
#
# Needs R >= 4, lme4 and jsonlite, and the project's virtualenv (.venv), which
# simulates the crossed user x item data set. Another Python interpreter can be
# named with the environment variable MIXBENCH_PYTHON.
#
# Writes
#   tests/estimators/fixtures/data/<data>.csv.gz        data sets used for fitting
#   tests/estimators/fixtures/data/<model>_new.csv.gz   new data for prediction,
#       with levels seen in fitting and levels never seen
#   tests/estimators/fixtures/lme4/<model>.json         one reference fit per model
#
# Notes
# * "objective" is what print(fit) shows: the REML criterion, REMLcrit(fit),
#   for REML fits and the deviance, deviance(fit), i.e. -2 * log-likelihood, for
#   ML fits. "devfun_at" evaluates the same objective, as a function of theta,
#   through lmer(..., devFunOnly = TRUE).
# * Every model is fitted twice: with lmer's default control and with tighter
#   nloptwrap tolerances (tight_control below). The fit with the lower objective is stored (the default
#   one when they tie); "optimizer_settings" says which.
# * Numbers are written with 17 significant digits (sprintf("%.17g")), so they
#   read back as the same doubles. jsonlite builds the JSON documents, but its
#   own number formatting stops at 15 significant digits, so numbers are
#   formatted here and inserted verbatim.
# * The lme4 data sets are fitted as shipped with lme4 (their factor level order
#   decides the order of "levels" in "ranef"); the script first checks that the
#   CSV files read back to exactly the same values and labels. The crossed data
#   set is fitted as read from its CSV file.
# * "fit_seconds" is the only value that changes from run to run.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

if (!file.exists("benchmarks/reference/lme4_reference.R")) {
  stop("run this script from the repository root")
}

data_dir <- file.path("tests", "estimators", "fixtures", "data")
json_dir <- file.path("tests", "estimators", "fixtures", "lme4")
dir.create(data_dir, recursive = TRUE, showWarnings = FALSE)
dir.create(json_dir, recursive = TRUE, showWarnings = FALSE)
source(file.path("benchmarks", "reference", "fixture_helpers.R"))
python <- Sys.getenv("MIXBENCH_PYTHON", file.path(".venv", "bin", "python"))

# Tighter than lmer's default nloptwrap settings (xtol_abs = ftol_abs = 1e-8).
# xtol_rel = 0 switches off nloptr's default relative tolerance (1e-4), which
# otherwise stops BOBYQA first, so that the absolute tolerances take effect.
tight_control <- lmerControl(
  optimizer = "nloptwrap",
  optCtrl = list(xtol_abs = 1e-10, ftol_abs = 1e-12, xtol_rel = 0, maxeval = 1e5)
)


# ---------------------------------------------------------------------------
# Data sets
# ---------------------------------------------------------------------------

datasets <- list(
  sleepstudy = sleepstudy,
  dyestuff = Dyestuff,
  penicillin = Penicillin,
  pastes = Pastes,
  insteval = InstEval[, c("s", "d", "studage", "lectage", "service", "dept", "y")]
)
for (name in names(datasets)) {
  file <- paste0(name, ".csv.gz")
  write_csv_gz(datasets[[name]], file)
  check_round_trip(datasets[[name]], file)
}

# Crossed user x item data, simulated by mixbench itself. mtime = 0 keeps the
# gzip header, and so the file, identical from run to run.
crossed_file <- file.path(data_dir, "crossed.csv.gz")
status <- system2(python, c("-c", shQuote(paste0(
  "from simulators import simulate; ",
  "d = simulate('online_services', seed=2016, n_users=400, n_items=60, n_features=2); ",
  "d.frame.to_csv('", crossed_file, "', index=False, ",
  "compression={'method': 'gzip', 'mtime': 0})"
))))
if (status != 0) stop("simulating the crossed data set failed")
crossed <- read.csv(crossed_file, colClasses = c(
  user = "character", item = "character", day = "integer",
  x1 = "numeric", x2 = "numeric", y = "numeric"
))
stopifnot(identical(names(crossed), c("user", "item", "day", "x1", "x2", "y")))
crossed$user <- factor(crossed$user)
crossed$item <- factor(crossed$item)
datasets$crossed <- crossed


# ---------------------------------------------------------------------------
# New data for prediction: the model's predictors only, no response. Each set
# mixes levels seen in fitting with levels that do not occur in the data.
# ---------------------------------------------------------------------------

ie <- datasets$insteval
ie_rows <- c(1, 1000, 50000)                  # three observed rows
ie_known <- data.frame(
  s = as.character(ie$s[ie_rows]),
  d = as.character(ie$d[ie_rows]),
  service = as.character(ie$service[ie_rows]),
  dept = as.character(ie$dept[ie_rows])
)
ie_flip <- ie_known[1, ]                      # the same s and d, other service
ie_flip$service <- setdiff(c("0", "1"), ie_flip$service)

newdata <- list(
  sleepstudy = data.frame(
    Days = c(0, 5, 9, 3, 2.5, 0, 4, 9),
    Subject = c("308", "308", "372", "335", "330", "999", "999", "999")
  ),
  dyestuff = data.frame(
    Batch = c("A", "D", "F", "G", "H")         # G, H are new batches
  ),
  penicillin = data.frame(
    plate = c("a", "x", "m", "y", "z", "b", "z"),  # y, z are new plates
    sample = c("A", "F", "D", "A", "C", "G", "G")  # G is a new sample
  ),
  pastes = data.frame(
    batch = c("A", "J", "E", "K", "K", "A", "F", "L"),  # K, L are new batches
    cask = c("a", "c", "b", "a", "b", "d", "d", "d")    # d is a new cask
  ),
  insteval = rbind(
    ie_known,                                           # s and d seen
    transform(ie_known[1, ], d = "99999"),              # seen s, new d
    transform(ie_known[2, ], s = "99999"),              # new s, seen d
    transform(ie_known[3, ], s = "99999", d = "99999"), # both new
    transform(ie_known[1, ], dept = "99"),              # new dept:service
    ie_flip
  ),
  crossed = data.frame(
    user = c(as.character(crossed$user[c(1, 2)]), "u000", "u999", "u999"),
    item = c(as.character(crossed$item[c(1, 2)]), "i99", "i00", "i99"),
    x1 = c(crossed$x1[c(1, 2)], 0.5, -1.25, 0),
    x2 = c(crossed$x2[c(1, 2)], -1, 0.75, 0)
  )
)
stopifnot(
  "u000" %in% levels(crossed$user), "i00" %in% levels(crossed$item),
  !"u999" %in% levels(crossed$user), !"i99" %in% levels(crossed$item),
  !"99999" %in% c(levels(ie$s), levels(ie$d)), !"99" %in% levels(ie$dept)
)
rownames(newdata$insteval) <- NULL

# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------

models <- list(
  list(name = "sleepstudy_reml", data = "sleepstudy", reml = TRUE, profile = TRUE,
       formula = "Reaction ~ Days + (Days | Subject)"),
  list(name = "sleepstudy_ml", data = "sleepstudy", reml = FALSE, profile = TRUE,
       formula = "Reaction ~ Days + (Days | Subject)"),
  list(name = "sleepstudy_uncorrelated", data = "sleepstudy", reml = TRUE, profile = FALSE,
       formula = "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)"),
  list(name = "dyestuff", data = "dyestuff", reml = TRUE, profile = TRUE,
       formula = "Yield ~ 1 + (1 | Batch)"),
  list(name = "dyestuff_ml", data = "dyestuff", reml = FALSE, profile = TRUE,
       formula = "Yield ~ 1 + (1 | Batch)"),
  list(name = "penicillin", data = "penicillin", reml = TRUE, profile = TRUE,
       formula = "diameter ~ 1 + (1 | plate) + (1 | sample)"),
  list(name = "pastes", data = "pastes", reml = TRUE, profile = FALSE,
       formula = "strength ~ 1 + (1 | batch/cask)"),
  list(name = "insteval", data = "insteval", reml = TRUE, profile = FALSE,
       formula = "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)"),
  list(name = "crossed", data = "crossed", reml = TRUE, profile = FALSE,
       formula = "y ~ x1 + x2 + (1 | user) + (1 | item)"),
  list(name = "crossed_ml", data = "crossed", reml = FALSE, profile = FALSE,
       formula = "y ~ x1 + x2 + (1 | user) + (1 | item)")
)


# ---------------------------------------------------------------------------
# Helpers (the shared ones are in fixture_helpers.R)
# ---------------------------------------------------------------------------

objective <- function(fit) if (isREML(fit)) REMLcrit(fit) else deviance(fit)

# ---------------------------------------------------------------------------
# Fit and write
# ---------------------------------------------------------------------------

summary_rows <- list()
for (spec in models) {
  cat(sprintf("== %s\n", spec$name))
  data <- datasets[[spec$data]]
  form <- as.formula(spec$formula)

  fits <- list()
  for (settings in c("default", "tight")) {
    control <- if (settings == "tight") tight_control else lmerControl()
    seconds <- captured(sprintf("%s [%s fit]", spec$name, settings), system.time(
      fit <- lmer(form, data = data, REML = spec$reml, control = control)
    ))[["elapsed"]]
    fits[[settings]] <- list(fit = fit, seconds = seconds)
    cat(sprintf("   %-7s objective %.10f  (%.2f s)\n", settings, objective(fit), seconds))
  }
  chosen <- if (objective(fits$tight$fit) < objective(fits$default$fit)) "tight" else "default"
  fit <- fits[[chosen]]$fit
  label <- sprintf("%s [%s fit]", spec$name, chosen)

  theta <- getME(fit, "theta")
  devfun <- lmer(form, data = data, REML = spec$reml, devFunOnly = TRUE)
  devfun_at <- lapply(c(1, 0.5, 1.5), function(scale) {
    at <- unname(theta) * scale
    list(theta = json_array(at), value = json_number(devfun(at)))
  })

  new <- as_model_frame(newdata[[spec$data]], data)
  new_file <- paste0(spec$name, "_new.csv.gz")
  write_csv_gz(newdata[[spec$data]], new_file)
  predictions <- predict(fit, newdata = new, allow.new.levels = TRUE)
  marginal <- predict(fit, newdata = new, re.form = NA)

  profile_ci <- NULL
  if (spec$profile) {
    profile_ci <- json_intervals(captured(paste(label, "confint profile"),
                                          confint(fit, method = "profile")))
  }

  record <- list(
    name = spec$name,
    formula = spec$formula,
    reml = spec$reml,
    data = paste0(spec$data, ".csv.gz"),
    newdata = new_file,
    n_obs = nobs(fit),
    objective = json_number(objective(fit)),
    loglik = json_number(as.numeric(logLik(fit))),
    theta = json_array(theta),
    theta_names = I(names(theta)),
    sigma = json_number(sigma(fit)),
    fixef = json_named(fixef(fit)),
    fixef_se = json_named(sqrt(diag(as.matrix(vcov(fit))))),
    varcorr = varcorr_json(fit),
    ranef = ranef_json(fit),
    is_singular = isSingular(fit),
    predictions = json_array(predictions),
    predictions_marginal = json_array(marginal),
    fitted_head = json_array(head(fitted(fit), 10)),
    devfun_at = devfun_at,
    confint_wald = json_intervals(confint(fit, method = "Wald")),
    confint_profile = profile_ci,
    optimizer_settings = chosen,
    lme4_version = as.character(packageVersion("lme4")),
    R_version = as.character(getRversion()),
    fit_seconds = json_number(round(fits[[chosen]]$seconds, 3))
  )
  text <- toJSON(record, auto_unbox = TRUE, json_verbatim = TRUE, pretty = TRUE,
                 null = "null", na = "null")
  writeLines(text, file.path(json_dir, paste0(spec$name, ".json")), useBytes = TRUE)

  summary_rows[[spec$name]] <- data.frame(
    model = spec$name, objective_default = objective(fits$default$fit),
    objective_tight = objective(fits$tight$fit), chosen = chosen,
    devfun_at_optimum = devfun(unname(theta)), singular = isSingular(fit)
  )
}

cat("\n== summary\n")
print(do.call(rbind, c(summary_rows, make.row.names = FALSE)), digits = 12, row.names = FALSE)
cat("\n== warnings and messages\n")
if (length(diagnostics)) writeLines(unique(diagnostics)) else cat("none\n")
