#!/usr/bin/env Rscript
# Reference fixtures for mixbench's generalized linear mixed model, computed with
# lme4's glmer.
#
# Regenerate (from the repository root; overwrites every fixture below):
#
#   Rscript benchmarks/reference/glmer_reference.R
#
# Needs R >= 4, lme4 and jsonlite, and the project's virtual environment
# (.venv/bin/python), which simulates the ctr_experiment data set.
#
# Writes
#   tests/estimators/fixtures/data/<data>.csv.gz        data sets used for fitting
#       (ctr.csv.gz is written by mixbench's ctr_experiment simulator, seed 1,
#       1000 users, through .venv/bin/python)
#   tests/estimators/fixtures/data/<model>_new.csv.gz   new data for prediction,
#       with levels seen in fitting and levels never seen
#   tests/estimators/fixtures/glmer/<model>.json        one reference fit per model
#
# Notes
# * The layout follows lme4_reference.R. "objective" is -2 * logLik(fit), the
#   Laplace (or adaptive Gauss-Hermite) approximation that glmer minimises;
#   "deviance" is deviance(fit), the sum of the squared deviance residuals at
#   the conditional modes. "devfun_at" evaluates the objective as a function of
#   c(theta, beta) through glmer(..., devFunOnly = TRUE), with PIRLS converged
#   tightly (tight_control, tolPwrss = 1e-12; 1e-14 makes PIRLS fail on ctr).
# * cbpp is fitted as cbind(incidence, size - incidence), which glmer treats
#   exactly as the proportion incidence / size with weights = size; mixbench
#   fits the proportion column with weights="size".
# * Every model is fitted twice: with glmer's default control and with tighter
#   nloptwrap tolerances (tight_control below). The fit with the lower objective
#   is stored (the default one when they tie); "optimizer_settings" says which.
#   The objectives are compared as the tightly converged devfun gives them at
#   each fit's optimum: at the default PIRLS tolerance, -2 logLik(fit) of an
#   adaptive-quadrature fit can be off by several 1e-2 (0.05 on ctr data with
#   nAGQ = 9), enough to pick the worse optimum. "objective_devfun" is that
#   tightly converged value at the stored optimum.
# * "fixef_se" is what glmer's vcov(fit) is based on, the beta block of
#   2 * solve(H), H the central-difference Hessian (lme4:::deriv12) of the
#   objective in (theta, beta) at the optimum, computed here from the tightly
#   converged devfun with step 1e-3 rather than glmer's 1e-4: with objectives in
#   the thousands, the PIRLS tolerance divided by 1e-8 swamps the second
#   differences (binary_crossed's vcov(fit) is off by a factor of 20). "fixef_se_vcov" is vcov(fit) as glmer gives
#   it, "fixef_se_rx" vcov(fit, use.hessian = FALSE), the conditional estimate.
# * grouseticks_height is grouseticks with the uncentred HEIGHT (403 to 533)
#   in place of cHEIGHT, fitted as written (no rescaling). Both of glmer's fits
#   warn "failed to converge" (max|grad| 0.04 by default, 0.0025 with
#   tight_control, against a tolerance of 0.002) and "nearly unidentifiable":
#   its gradient check on an intercept and slope of very different scales. Both
#   reach the optimum of the cHEIGHT model, a reparametrisation of the same one,
#   to 1e-8 in the objective (1975.876313902 and 1975.876313910 against
#   1975.876313899); the stored one is whichever is lower, as for every model.
# * ctr and ctr_agq25 are click ~ display + (1 | user) on ctr_experiment data,
#   with the Laplace approximation and with 25-point adaptive Gauss-Hermite
#   quadrature. With sigma = 5 and about 22 impressions per user, most users
#   never click and the Laplace approximation is far from the likelihood
#   (intercept about -7.4 against the simulated -4.5); quadrature recovers it.
# * Numbers are written with 17 significant digits, as in lme4_reference.R.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

if (!file.exists("benchmarks/reference/glmer_reference.R")) {
  stop("run this script from the repository root")
}

data_dir <- file.path("tests", "estimators", "fixtures", "data")
json_dir <- file.path("tests", "estimators", "fixtures", "glmer")
dir.create(data_dir, recursive = TRUE, showWarnings = FALSE)
dir.create(json_dir, recursive = TRUE, showWarnings = FALSE)
source(file.path("benchmarks", "reference", "fixture_helpers.R"))

tight_control <- glmerControl(
  optimizer = "nloptwrap", tolPwrss = 1e-12,
  optCtrl = list(xtol_abs = 1e-10, ftol_abs = 1e-12, xtol_rel = 0, maxeval = 1e5)
)


# ---------------------------------------------------------------------------
# Data sets
# ---------------------------------------------------------------------------

cbpp_data <- transform(cbpp, proportion = incidence / size)

grouseticks_data <- grouseticks[
  , c("INDEX", "TICKS", "BROOD", "YEAR", "LOCATION", "cHEIGHT", "HEIGHT")
]

# Impressions of a click-through experiment, simulated by mixbench itself so that
# the fixture and the simulation-truth tests share a generator.
ctr_file <- file.path(data_dir, "ctr.csv.gz")
status <- system2(file.path(".venv", "bin", "python"), c("-c", shQuote(paste(
  "import simulators",
  "frame = simulators.simulate('ctr_experiment', seed=1, n_users=1000).frame",
  "frame['click'] = frame['click'].astype(int)",
  sprintf("frame.to_csv('%s', index=False)", ctr_file),
  sep = "; "
))))
if (status != 0) stop("could not simulate ", ctr_file, " with .venv/bin/python")
ctr_data <- read.csv(ctr_file, stringsAsFactors = TRUE)

# 0/1 outcomes for users x items with a discrete covariate, so that many rows
# share their pattern of (x, user, item): the aggregation into successes and
# trials has something to collapse.
set.seed(20240611)
n_users <- 80
n_items <- 25
n_rows <- 4000
user <- sample(n_users, n_rows, replace = TRUE)
item <- sample(n_items, n_rows, replace = TRUE)
x <- sample(c(-1, 0, 1, 2), n_rows, replace = TRUE)
user_intercept <- rnorm(n_users, sd = 0.8)
user_slope <- 0.5 * user_intercept + rnorm(n_users, sd = 0.3)
item_intercept <- rnorm(n_items, sd = 0.5)
eta <- -0.4 + 0.6 * x + user_intercept[user] + user_slope[user] * x + item_intercept[item]
binary <- data.frame(
  user = factor(sprintf("u%02d", user)),
  item = factor(sprintf("i%02d", item)),
  x = x,
  y = rbinom(n_rows, 1, plogis(eta))
)

datasets <- list(cbpp = cbpp_data, grouseticks = grouseticks_data, binary = binary)
for (name in names(datasets)) {
  file <- paste0(name, ".csv.gz")
  write_csv_gz(datasets[[name]], file)
  check_round_trip(datasets[[name]], file)
}
datasets$ctr <- ctr_data  # written above by the simulator


# ---------------------------------------------------------------------------
# New data for prediction, mixing seen and unseen levels
# ---------------------------------------------------------------------------

newdata <- list(
  cbpp = data.frame(
    period = c("1", "2", "3", "4", "1", "4"),
    herd = c("1", "7", "15", "3", "99", "99")           # 99 is a new herd
  ),
  grouseticks = data.frame(
    YEAR = c("95", "96", "97", "96", "97"),
    cHEIGHT = c(0, -10.5, 20, 3, 0),
    HEIGHT = c(462, 451.5, 482, 465, 462),
    BROOD = c("501", "602", "999", "999", "720"),      # 999 is a new brood
    LOCATION = c("32", "14", "7", "999", "999")        # 999 is a new location
  ),
  binary = data.frame(
    user = c("u01", "u33", "u99", "u99", "u80"),       # u99 is new
    item = c("i01", "i25", "i07", "i99", "i99"),       # i99 is new
    x = c(0, 1, -1, 2, 1)
  ),
  ctr = data.frame(
    user = c("u000", "u001", "u500", "u999", "u9999"),  # u9999 is a new user
    display = c(0, 1, 1, 0, 1)
  )
)
stopifnot(
  !"99" %in% levels(cbpp$herd), !"999" %in% levels(grouseticks$BROOD),
  !"999" %in% levels(grouseticks$LOCATION), !"u99" %in% levels(binary$user),
  !"i99" %in% levels(binary$item), "u80" %in% levels(binary$user),
  !"u9999" %in% levels(ctr_data$user), "u999" %in% levels(ctr_data$user)
)

# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------

models <- list(
  list(name = "cbpp", data = "cbpp", family = "binomial", nagq = 1,
       formula_r = "cbind(incidence, size - incidence) ~ period + (1 | herd)",
       formula = "proportion ~ period + (1 | herd)", weights = "size"),
  list(name = "cbpp_agq9", data = "cbpp", family = "binomial", nagq = 9,
       formula_r = "cbind(incidence, size - incidence) ~ period + (1 | herd)",
       formula = "proportion ~ period + (1 | herd)", weights = "size"),
  list(name = "cbpp_agq25", data = "cbpp", family = "binomial", nagq = 25,
       formula_r = "cbind(incidence, size - incidence) ~ period + (1 | herd)",
       formula = "proportion ~ period + (1 | herd)", weights = "size"),
  list(name = "grouseticks", data = "grouseticks", family = "poisson", nagq = 1,
       formula_r = "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | LOCATION)",
       formula = "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | LOCATION)", weights = NULL),
  list(name = "grouseticks_height", data = "grouseticks", family = "poisson", nagq = 1,
       formula_r = "TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | LOCATION)",
       formula = "TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | LOCATION)", weights = NULL,
       beta_shift = 1e-3),
  list(name = "ctr", data = "ctr", family = "binomial", nagq = 1,
       formula_r = "click ~ display + (1 | user)",
       formula = "click ~ display + (1 | user)", weights = NULL),
  list(name = "ctr_agq25", data = "ctr", family = "binomial", nagq = 25,
       formula_r = "click ~ display + (1 | user)",
       formula = "click ~ display + (1 | user)", weights = NULL),
  list(name = "binary_slope", data = "binary", family = "binomial", nagq = 1,
       formula_r = "y ~ x + (1 + x | user)",
       formula = "y ~ x + (1 + x | user)", weights = NULL),
  list(name = "binary_crossed", data = "binary", family = "binomial", nagq = 1,
       formula_r = "y ~ x + (1 | user) + (1 | item)",
       formula = "y ~ x + (1 | user) + (1 | item)", weights = NULL)
)


# ---------------------------------------------------------------------------
# Helpers (the shared ones are in fixture_helpers.R)
# ---------------------------------------------------------------------------

objective <- function(fit) -2 * as.numeric(logLik(fit))

# ---------------------------------------------------------------------------
# Fit and write
# ---------------------------------------------------------------------------

summary_rows <- list()
for (spec in models) {
  cat(sprintf("== %s\n", spec$name))
  data <- datasets[[spec$data]]
  form <- as.formula(spec$formula_r)
  family <- get(spec$family)

  fits <- list()
  for (settings in c("default", "tight")) {
    control <- if (settings == "tight") tight_control else glmerControl()
    seconds <- captured(sprintf("%s [%s fit]", spec$name, settings), system.time(
      fit <- glmer(form, data = data, family = family, nAGQ = spec$nagq, control = control)
    ))[["elapsed"]]
    fits[[settings]] <- list(fit = fit, seconds = seconds)
    cat(sprintf("   %-7s objective %.10f  (%.2f s)\n", settings, objective(fit), seconds))
  }
  # PIRLS converged to tolPwrss = 1e-12: at glmer's default (1e-7) the value can be
  # off by up to ~1e-2 away from the optimum, and on the ctr data (users with no
  # click, whose modes PIRLS approaches slowly) still by 1.4e-2 at 1e-10.
  devfun <- glmer(form, data = data, family = family, nAGQ = spec$nagq,
                  control = tight_control, devFunOnly = TRUE)
  at_optimum <- function(fit) devfun(c(unname(getME(fit, "theta")), unname(fixef(fit))))
  for (settings in names(fits)) fits[[settings]]$devfun <- at_optimum(fits[[settings]]$fit)
  chosen <- if (fits$tight$devfun < fits$default$devfun) "tight" else "default"
  fit <- fits[[chosen]]$fit
  label <- sprintf("%s [%s fit]", spec$name, chosen)

  theta <- getME(fit, "theta")
  beta <- fixef(fit)
  # Points away from the optimum: theta scaled, every beta shifted by beta_shift
  # (smaller where a covariate in the hundreds would overflow the log link).
  beta_shift <- if (is.null(spec$beta_shift)) 0.1 else spec$beta_shift
  devfun_at <- lapply(list(c(1, 0), c(0.5, 1), c(1.5, -1)), function(change) {
    at <- c(unname(theta) * change[1], unname(beta) + beta_shift * change[2])
    list(theta = json_array(at[seq_along(theta)]), beta = json_array(at[-seq_along(theta)]),
         value = json_number(devfun(at)))
  })

  hessian <- lme4:::deriv12(devfun, c(unname(theta), unname(beta)), delta = 1e-3)$Hessian
  hessian_se <- sqrt(diag(2 * solve(hessian)))[-seq_along(theta)]
  names(hessian_se) <- names(beta)

  new <- as_model_frame(newdata[[spec$data]], data)
  new_file <- paste0(spec$name, "_new.csv.gz")
  write_csv_gz(newdata[[spec$data]], new_file)
  predict_new <- function(...) predict(fit, newdata = new, allow.new.levels = TRUE, ...)

  record <- list(
    name = spec$name,
    formula = spec$formula,
    formula_r = spec$formula_r,
    family = spec$family,
    n_agq = spec$nagq,
    weights = spec$weights,
    data = paste0(spec$data, ".csv.gz"),
    newdata = new_file,
    n_obs = nobs(fit),
    objective = json_number(objective(fit)),
    objective_devfun = json_number(fits[[chosen]]$devfun),
    loglik = json_number(as.numeric(logLik(fit))),
    deviance = json_number(deviance(fit)),
    aic = json_number(AIC(fit)),
    theta = json_array(theta),
    theta_names = I(names(theta)),
    fixef = json_named(beta),
    fixef_se = json_named(hessian_se),
    fixef_se_vcov = json_named(sqrt(diag(as.matrix(vcov(fit))))),
    fixef_se_rx = json_named(sqrt(diag(as.matrix(
      suppressWarnings(vcov(fit, use.hessian = FALSE))
    )))),
    varcorr = varcorr_json(fit),
    ranef = ranef_json(fit),
    is_singular = isSingular(fit),
    predictions = json_array(predict_new(type = "response")),
    predictions_link = json_array(predict_new(type = "link")),
    predictions_marginal = json_array(predict_new(type = "response", re.form = NA)),
    fitted_head = json_array(head(fitted(fit), 10)),
    devfun_at = devfun_at,
    confint_wald = json_intervals(confint(fit, method = "Wald", parm = "beta_")),
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
    objective_tight = objective(fits$tight$fit), devfun_default = fits$default$devfun,
    devfun_tight = fits$tight$devfun, chosen = chosen, singular = isSingular(fit)
  )
}

cat("\n== summary\n")
print(do.call(rbind, c(summary_rows, make.row.names = FALSE)), digits = 12, row.names = FALSE)
cat("\n== warnings and messages\n")
if (length(diagnostics)) writeLines(unique(diagnostics)) else cat("none\n")
