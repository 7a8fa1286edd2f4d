#!/usr/bin/env Rscript
# Reference fixtures for mixbench's linear mixed model with prior weights, offsets and
# the coefficient names of categorical fixed effects, computed with lme4.
#
# Regenerate (from the repository root; overwrites only the files listed below):
#
#   Rscript benchmarks/reference/lmer_weights_offsets.R
#
# Needs R >= 4, lme4 and jsonlite, and the project's virtualenv (.venv), which
# simulates the online data set aggregated to user x day means. Another Python
# interpreter can be named with the environment variable MIXBENCH_PYTHON.
#
# Writes
#   tests/estimators/fixtures/data/sleepstudy_extra.csv.gz   sleepstudy with a weight
#       column w, positive exposure, a numeric offset column base, factors var1 and part
#   tests/estimators/fixtures/data/online_daily.csv.gz       online_services rows
#       aggregated to user x day means (y, x1, x2) with their number of rows n
#   tests/estimators/fixtures/data/<data>_new.csv.gz         new data for prediction
#   tests/estimators/fixtures/lmer_weights_offsets/<model>.json   one fit per model
#
# Notes
# * Weights are lmer's prior weights (residual variance sigma^2 / w); its criterion
#   subtracts sum(log(w)). "objective" is REMLcrit(fit) for REML fits and
#   deviance(fit) for ML fits; "devfun_at" evaluates the same criterion through
#   lmer(..., devFunOnly = TRUE) at theta, theta / 2 and 1.5 theta.
# * Offsets: "offset" names a column passed as lmer's offset= argument; offset(...)
#   terms are in the formula. Predictions on new data include both: they are
#   computed from the fit explicitly (X beta + offsets + Z b of the levels seen in
#   fitting) and checked against lme4's predict(), which leaves out the offset=
#   argument's values for new data (they are added to it for the check).
# * Models are fitted with the tight nloptwrap tolerances of lme4_reference.R.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

if (!file.exists("benchmarks/reference/lmer_weights_offsets.R")) {
  stop("run this script from the repository root")
}

data_dir <- file.path("tests", "estimators", "fixtures", "data")
json_dir <- file.path("tests", "estimators", "fixtures", "lmer_weights_offsets")
dir.create(json_dir, recursive = TRUE, showWarnings = FALSE)
source(file.path("benchmarks", "reference", "fixture_helpers.R"))
python <- Sys.getenv("MIXBENCH_PYTHON", file.path(".venv", "bin", "python"))

tight_control <- lmerControl(
  optimizer = "nloptwrap",
  optCtrl = list(xtol_abs = 1e-10, ftol_abs = 1e-12, xtol_rel = 0, maxeval = 1e5)
)


# ---------------------------------------------------------------------------
# Data sets
# ---------------------------------------------------------------------------

# sleepstudy with deterministic extra columns: weights varying by subject and day, an
# exposure for offset(log(exposure)), a numeric offset column and a five-level factor.
subject_code <- as.integer(sleepstudy$Subject)
rows <- seq_len(nrow(sleepstudy))
extra <- data.frame(
  Reaction = sleepstudy$Reaction,
  Days = sleepstudy$Days,
  Subject = sleepstudy$Subject,
  w = 1 + subject_code %% 3 + sleepstudy$Days / 10,
  exposure = 1 + ((rows * 7) %% 11) / 4,
  base = 250 + 10 * (subject_code %% 4),
  var1 = factor(subject_code %% 5 + 1),
  part = factor(c("a", "b", "c")[sleepstudy$Days %/% 4 + 1])
)
write_csv_gz(extra, "sleepstudy_extra.csv.gz")
check_round_trip(extra, "sleepstudy_extra.csv.gz")

# online_services rows aggregated to user x day means weighted by their counts: the
# mean of n rows has residual variance sigma^2 / n.
daily_file <- file.path(data_dir, "online_daily.csv.gz")
status <- system2(python, c("-c", shQuote(paste0(
  "from simulators import simulate; ",
  "d = simulate('online_services', seed=2016, n_users=400, n_items=60, n_features=2).frame; ",
  "g = d.groupby(['user', 'day'], as_index=False); ",
  "a = g[['x1', 'x2', 'y']].mean().merge(g.size().rename(columns={'size': 'n'})); ",
  "a.to_csv('", daily_file, "', index=False, float_format='%.17g', ",
  "compression={'method': 'gzip', 'mtime': 0})"
))))
if (status != 0) stop("simulating the online data set failed")
daily <- read.csv(daily_file, colClasses = c(
  user = "character", day = "integer", x1 = "numeric", x2 = "numeric", y = "numeric",
  n = "integer"
))
stopifnot(identical(names(daily), c("user", "day", "x1", "x2", "y", "n")))
daily$user <- factor(daily$user)
daily$day <- factor(daily$day)

datasets <- list(sleepstudy_extra = extra, online_daily = daily)

newdata <- list(
  sleepstudy_extra = data.frame(
    Days = c(0, 5, 9, 3, 2.5, 0, 4, 9),
    Subject = c("308", "308", "372", "335", "330", "999", "999", "999"),
    w = c(1, 2, 3, 1.5, 2, 1, 1, 4),
    exposure = c(1, 2, 3.5, 1.25, 2, 1, 3, 2.5),
    base = c(250, 260, 270, 280, 250, 260, 270, 280),
    var1 = c("1", "2", "3", "4", "5", "1", "3", "5"),
    part = c("a", "b", "c", "a", "a", "a", "b", "c")
  ),
  online_daily = data.frame(
    user = c(as.character(daily$user[c(1, 2)]), "u999", "u999", as.character(daily$user[3])),
    day = c(as.character(daily$day[c(1, 2)]), "0", "999", "999"),
    x1 = c(daily$x1[c(1, 2)], 0.5, -1.25, 0),
    x2 = c(daily$x2[c(1, 2)], -1, 0.75, 0),
    n = c(1, 2, 3, 1, 1)
  )
)
stopifnot(!"u999" %in% levels(daily$user), !"999" %in% levels(daily$day))


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------

model <- function(name, data, formula, reml, weights = NULL, offset = NULL,
                  profile = FALSE) {
  list(name = name, data = data, formula = formula, reml = reml, weights = weights,
       offset = offset, profile = profile)
}
sleep_slopes <- "Reaction ~ Days + (Days | Subject)"
daily_crossed <- "y ~ x1 + x2 + (1 | user) + (1 | day)"
sleep_offsets <- paste("Reaction ~ Days + offset(10 * log(exposure)) + offset(2 * Days)",
                       "+ (Days | Subject)")
models <- list(
  model("sleepstudy_weights", "sleepstudy_extra", sleep_slopes, TRUE, weights = "w",
        profile = TRUE),
  model("sleepstudy_weights_ml", "sleepstudy_extra", sleep_slopes, FALSE, weights = "w"),
  model("online_daily_weights", "online_daily", daily_crossed, TRUE, weights = "n"),
  model("online_daily_weights_ml", "online_daily", daily_crossed, FALSE, weights = "n"),
  model("sleepstudy_offset_terms", "sleepstudy_extra", sleep_offsets, TRUE),
  model("sleepstudy_offset_terms_ml", "sleepstudy_extra", sleep_offsets, FALSE),
  model("sleepstudy_offset_column", "sleepstudy_extra", sleep_slopes, TRUE, offset = "base"),
  model("sleepstudy_weights_offsets", "sleepstudy_extra",
        "Reaction ~ Days + offset(log(exposure)) + (1 | Subject)", FALSE,
        weights = "w", offset = "base"),
  model("names_no_intercept", "sleepstudy_extra",
        "Reaction ~ 0 + var1 + var1:Days + (1 | Subject)", TRUE),
  model("names_treatment", "sleepstudy_extra",
        "Reaction ~ var1 * Days + (1 | Subject)", FALSE),
  model("names_no_intercept_ml", "sleepstudy_extra",
        "Reaction ~ 0 + var1:Days + var1 + (1 | Subject)", FALSE),
  # R orders an interaction's variables by their first appearance in the formula.
  model("names_interaction_order", "sleepstudy_extra",
        "Reaction ~ Days + var1:Days + (1 | Subject)", TRUE),
  model("names_factor_interaction", "sleepstudy_extra",
        "Reaction ~ part + var1 + var1:part + (1 | Subject)", FALSE)
)

objective <- function(fit) if (isREML(fit)) REMLcrit(fit) else deviance(fit)

# The model's fixed-effects columns for new rows: the fitted terms (offsets dropped),
# with factors coded by the fitting data's levels.
fixed_matrix <- function(fit, new, data) {
  terms <- delete.response(terms(fit, fixed.only = TRUE))
  used <- intersect(all.vars(terms), names(Filter(is.factor, data)))
  levels <- lapply(data[used], levels)
  frame <- model.frame(terms, new, xlev = levels, na.action = na.fail)
  model.matrix(terms, frame, contrasts.arg = attr(getME(fit, "X"), "contrasts"))
}

# The formula's offset(...) terms plus the offset= column, for new rows.
offset_of <- function(spec, new) {
  terms <- terms(as.formula(spec$formula))
  total <- rep(0, nrow(new))
  for (k in attr(terms, "offset")) {
    total <- total + eval(attr(terms, "variables")[[k + 1]], new)
  }
  if (!is.null(spec$offset)) total <- total + new[[spec$offset]]
  total
}

# Conditional predictions: X beta + offsets + the random effects of seen levels.
conditional <- function(fit, new, spec, data) {
  value <- unname(drop(fixed_matrix(fit, new, data) %*% fixef(fit))) + offset_of(spec, new)
  marginal <- value
  re <- ranef(fit)
  for (bar in findbars(as.formula(spec$formula))) {
    group <- deparse(bar[[3]])
    lhs <- as.formula(paste("~", deparse(bar[[2]])))
    Zt <- model.matrix(lhs, new)
    modes <- as.matrix(re[[group]])
    hit <- match(as.character(new[[group]]), rownames(modes))
    seen <- !is.na(hit)
    value[seen] <- value[seen] +
      rowSums(Zt[seen, , drop = FALSE] * modes[hit[seen], colnames(Zt), drop = FALSE])
  }
  list(conditional = value, marginal = marginal)
}

summary_rows <- list()
for (spec in models) {
  cat(sprintf("== %s\n", spec$name))
  data <- datasets[[spec$data]]
  form <- as.formula(spec$formula)
  weights <- if (is.null(spec$weights)) NULL else data[[spec$weights]]
  offset <- if (is.null(spec$offset)) NULL else data[[spec$offset]]
  data$.weights <- if (is.null(weights)) rep(1, nrow(data)) else weights
  data$.offset <- if (is.null(offset)) rep(0, nrow(data)) else offset

  fit <- lmer(form, data = data, REML = spec$reml, control = tight_control,
              weights = .weights, offset = .offset)
  theta <- getME(fit, "theta")
  devfun <- lmer(form, data = data, REML = spec$reml, weights = .weights,
                 offset = .offset, devFunOnly = TRUE)
  devfun_at <- lapply(c(1, 0.5, 1.5), function(scale) {
    at <- unname(theta) * scale
    list(theta = json_array(at), value = json_number(devfun(at)))
  })

  new <- as_model_frame(newdata[[spec$data]], data)
  new_file <- paste0(spec$data, "_new.csv.gz")
  write_csv_gz(newdata[[spec$data]], new_file)
  ours <- conditional(fit, new, spec, data)
  # lme4's predict() evaluates the formula's offset(...) terms in newdata but leaves
  # out the offset= argument's values (lme4 1.1-31): add them to compare.
  argument <- if (is.null(spec$offset)) 0 else new[[spec$offset]]
  new$.offset <- 0
  new$.weights <- 1
  lme4_conditional <- predict(fit, newdata = new, allow.new.levels = TRUE) + argument
  lme4_marginal <- predict(fit, newdata = new, re.form = NA) + argument
  stopifnot(isTRUE(all.equal(unname(lme4_conditional), ours$conditional, tolerance = 1e-10)))
  stopifnot(isTRUE(all.equal(unname(lme4_marginal), ours$marginal, tolerance = 1e-10)))

  # Profile intervals of the standard deviations, correlation and sigma only: with
  # prior weights, lme4 1.1-31's profiles of the fixed effects are not monotonic and
  # its intervals for them collapse (narrower than Wald's by a factor of 50).
  profile_ci <- NULL
  if (spec$profile) {
    ci <- captured(paste(spec$name, "confint profile"),
                   confint(fit, method = "profile", parm = "theta_"))
    profile_ci <- json_intervals(ci)
  }

  record <- list(
    name = spec$name,
    formula = spec$formula,
    reml = spec$reml,
    weights = spec$weights,
    offset = spec$offset,
    data = paste0(spec$data, ".csv.gz"),
    newdata = new_file,
    n_obs = nobs(fit),
    objective = json_number(objective(fit)),
    loglik = json_number(as.numeric(logLik(fit))),
    theta = json_array(theta),
    sigma = json_number(sigma(fit)),
    fixef = json_named(fixef(fit)),
    fixef_se = json_named(sqrt(diag(as.matrix(vcov(fit))))),
    varcorr = varcorr_json(fit),
    ranef = ranef_json(fit),
    is_singular = isSingular(fit),
    predictions = json_array(ours$conditional),
    predictions_marginal = json_array(ours$marginal),
    fitted_head = json_array(head(fitted(fit), 10)),
    devfun_at = devfun_at,
    confint_profile = profile_ci,
    lme4_version = as.character(packageVersion("lme4")),
    R_version = as.character(getRversion())
  )
  text <- toJSON(record, auto_unbox = TRUE, json_verbatim = TRUE, pretty = TRUE,
                 null = "null", na = "null")
  writeLines(text, file.path(json_dir, paste0(spec$name, ".json")), useBytes = TRUE)
  summary_rows[[spec$name]] <- data.frame(
    model = spec$name, objective = objective(fit), devfun_at_optimum = devfun(unname(theta)),
    singular = isSingular(fit)
  )
}

cat("\n== summary\n")
print(do.call(rbind, c(summary_rows, make.row.names = FALSE)), digits = 12, row.names = FALSE)
