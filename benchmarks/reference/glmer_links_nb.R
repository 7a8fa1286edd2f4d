#!/usr/bin/env Rscript
# Reference fixtures for mixbench's MixedGLM beyond the canonical links: binomial
# outcomes with probit, cloglog and cauchit links, glmer's nAGQ = 0, a Poisson model
# with an offset, and negative binomial models fitted by lme4's glmer.nb.
#
# Regenerate (from the repository root; writes only the files listed below):
#
#   Rscript benchmarks/reference/glmer_links_nb.R
#
# Needs R >= 4, lme4, MASS and jsonlite. Reads cbpp.csv.gz, binary.csv.gz and
# grouseticks.csv.gz written by glmer_reference.R (so the data are the same).
#
# Writes
#   tests/estimators/fixtures/data/counts_nb.csv.gz         overdispersed counts
#   tests/estimators/fixtures/data/counts_exposure.csv.gz   Poisson counts with exposure
#   tests/estimators/fixtures/data/<model>_new.csv.gz       new data for prediction
#   tests/estimators/fixtures/glmer/<model>.json            one reference fit per model
#
# Notes
# * The layout of a record is glmer_reference.R's (objective = -2 logLik, devfun_at,
#   fixef_se from lme4:::deriv12 of the tightly converged deviance function with step
#   1e-3, ...), with "link" (NULL: canonical), "offset" (a column added to the linear
#   predictor, for fits that do not read the formula's offset term) and, for negative
#   binomial fits, "nb_theta" (getME(fit, "glmer.nb.theta")).
# * nAGQ = 0: "devfun_at" holds points theta only (the deviance function of
#   glmer(..., nAGQ = 0, devFunOnly = TRUE) takes theta, beta is found by PIRLS);
#   "fixef_se" is vcov(fit), which without a Hessian (glmer computes none at nAGQ = 0)
#   is the conditional estimate.
# * glmer.nb: theta of the negative binomial is chosen by optimize() over log(theta)
#   with a refit of the GLMM at each value (lme4's optTheta), tol = 5e-5 by default.
#   The default fit and a tight one (optTheta with tol = 1e-9 within log(theta) +- 1
#   of the default fit's, with tight_control) are both run; the
#   stored one is the one with the lower objective, evaluated by the tightly
#   converged deviance function at its own theta ("nb_default" records the default
#   fit's theta and objective either way). "devfun_at" is the deviance function at
#   the stored fit's theta of the negative binomial.
# * grouseticks_nb uses the centred height (cHEIGHT), as glmer_reference.R's
#   grouseticks model: with the uncentred HEIGHT glmer warns of a failure to converge
#   on a reparametrisation of the same optimum (see grouseticks_height there).
# * counts_exposure's offset is log(exposure), in the formula as
#   offset(log(exposure)); the column log_exposure holds the same values for the
#   offset= parameter.

suppressPackageStartupMessages({
  library(lme4)
  library(MASS)
  library(jsonlite)
})

if (!file.exists("benchmarks/reference/glmer_links_nb.R")) {
  stop("run this script from the repository root")
}

data_dir <- file.path("tests", "estimators", "fixtures", "data")
json_dir <- file.path("tests", "estimators", "fixtures", "glmer")
source(file.path("benchmarks", "reference", "fixture_helpers.R"))

tight_control <- glmerControl(
  optimizer = "nloptwrap", tolPwrss = 1e-12,
  optCtrl = list(xtol_abs = 1e-10, ftol_abs = 1e-12, xtol_rel = 0, maxeval = 1e5)
)


# ---------------------------------------------------------------------------
# Data sets
# ---------------------------------------------------------------------------

read_factors <- function(file, factors) {
  frame <- read.csv(file.path(data_dir, file))
  for (column in factors) frame[[column]] <- factor(frame[[column]])
  frame
}
cbpp_data <- transform(cbpp, proportion = incidence / size)
binary_data <- read_factors("binary.csv.gz", c("user", "item"))
grouseticks_data <- grouseticks[
  , c("INDEX", "TICKS", "BROOD", "YEAR", "LOCATION", "cHEIGHT", "HEIGHT")
]

# Overdispersed counts: a group intercept (sd 0.5) and negative binomial noise of
# size 1.5 around the conditional mean.
set.seed(20261207)
n_groups <- 60
n_rows <- 1500
group <- sample(n_groups, n_rows, replace = TRUE)
x <- round(rnorm(n_rows), 3)
treat <- sample(0:1, n_rows, replace = TRUE)
group_effect <- rnorm(n_groups, sd = 0.5)
counts_nb <- data.frame(
  g = factor(sprintf("g%02d", group)),
  x = x,
  treat = treat,
  y = rnbinom(n_rows, size = 1.5, mu = exp(0.8 + 0.3 * x - 0.4 * treat + group_effect[group]))
)

# Poisson counts over an exposure (days observed, say).
set.seed(20261208)
n_groups <- 40
n_rows <- 800
group <- sample(n_groups, n_rows, replace = TRUE)
exposure <- round(runif(n_rows, 0.5, 5), 2)
x <- round(rnorm(n_rows), 3)
group_effect <- rnorm(n_groups, sd = 0.6)
counts_exposure <- data.frame(
  g = factor(sprintf("g%02d", group)),
  x = x,
  exposure = exposure,
  log_exposure = log(exposure),
  y = rpois(n_rows, exposure * exp(-0.5 + 0.5 * x + group_effect[group]))
)

for (name in c("counts_nb", "counts_exposure")) {
  file <- paste0(name, ".csv.gz")
  write_csv_gz(get(name), file)
  check_round_trip(get(name), file)
}
datasets <- list(
  cbpp = cbpp_data, binary = binary_data, grouseticks = grouseticks_data,
  counts_nb = counts_nb, counts_exposure = counts_exposure
)


# ---------------------------------------------------------------------------
# New data for prediction, mixing seen and unseen levels
# ---------------------------------------------------------------------------

newdata <- list(
  cbpp = data.frame(
    period = c("1", "2", "3", "4", "1", "4"),
    herd = c("1", "7", "15", "3", "99", "99")           # 99 is a new herd
  ),
  binary = data.frame(
    user = c("u01", "u33", "u99", "u99", "u80"),       # u99 is new
    item = c("i01", "i25", "i07", "i99", "i99"),       # i99 is new
    x = c(0, 1, -1, 2, 1)
  ),
  grouseticks = data.frame(
    YEAR = c("95", "96", "97", "96", "97"),
    cHEIGHT = c(0, -10.5, 20, 3, 0),
    HEIGHT = c(462, 451.5, 482, 465, 462),
    BROOD = c("501", "602", "999", "999", "720"),      # 999 is a new brood
    LOCATION = c("32", "14", "7", "999", "999")        # 999 is a new location
  ),
  counts_nb = data.frame(
    g = c("g01", "g30", "g60", "g99", "g99"),          # g99 is new
    x = c(0, 1.5, -1, 0.25, 2),
    treat = c(0, 1, 0, 1, 0)
  ),
  counts_exposure = data.frame(
    g = c("g01", "g20", "g40", "g99"),                 # g99 is new
    x = c(0, 1, -0.5, 0.5),
    exposure = c(1, 2.5, 4, 3),
    log_exposure = log(c(1, 2.5, 4, 3))
  )
)
stopifnot(
  !"g99" %in% levels(counts_nb$g), "g60" %in% levels(counts_nb$g),
  !"g99" %in% levels(counts_exposure$g), "g40" %in% levels(counts_exposure$g)
)


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------

cbpp_r <- "cbind(incidence, size - incidence) ~ period + (1 | herd)"
cbpp_py <- "proportion ~ period + (1 | herd)"
models <- list(
  list(name = "cbpp_probit", data = "cbpp", family = "binomial", link = "probit",
       formula_r = cbpp_r, formula = cbpp_py, weights = "size"),
  list(name = "cbpp_cloglog", data = "cbpp", family = "binomial", link = "cloglog",
       formula_r = cbpp_r, formula = cbpp_py, weights = "size"),
  list(name = "cbpp_cauchit", data = "cbpp", family = "binomial", link = "cauchit",
       formula_r = cbpp_r, formula = cbpp_py, weights = "size"),
  list(name = "binary_probit", data = "binary", family = "binomial", link = "probit",
       formula_r = "y ~ x + (1 | user) + (1 | item)",
       formula = "y ~ x + (1 | user) + (1 | item)"),
  list(name = "cbpp_nagq0", data = "cbpp", family = "binomial", nagq = 0,
       formula_r = cbpp_r, formula = cbpp_py, weights = "size"),
  list(name = "counts_exposure", data = "counts_exposure", family = "poisson",
       formula_r = "y ~ x + offset(log(exposure)) + (1 | g)",
       formula = "y ~ x + offset(log(exposure)) + (1 | g)", offset_column = "log_exposure"),
  list(name = "counts_nb", data = "counts_nb", family = "negative_binomial",
       formula_r = "y ~ x + treat + (1 | g)", formula = "y ~ x + treat + (1 | g)"),
  list(name = "grouseticks_nb", data = "grouseticks", family = "negative_binomial",
       formula_r = "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | LOCATION)",
       formula = "TICKS ~ YEAR + cHEIGHT + (1 | BROOD) + (1 | LOCATION)")
)


# ---------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------

objective <- function(fit) -2 * as.numeric(logLik(fit))

family_of <- function(spec, nb_theta = NULL) {
  if (spec$family == "negative_binomial") return(MASS::negative.binomial(theta = nb_theta))
  link <- if (is.null(spec$link)) NULL else spec$link
  if (is.null(link)) get(spec$family)() else get(spec$family)(link = link)
}

# The fit under `settings` ("default" or "tight").
fit_model <- function(spec, data, settings) {
  form <- as.formula(spec$formula_r)
  nagq <- if (is.null(spec$nagq)) 1 else spec$nagq
  control <- if (settings == "tight") tight_control else glmerControl()
  if (spec$family == "negative_binomial") {
    if (settings == "default") return(glmer.nb(form, data = data))
    # glmer.nb passes its own tol on to glmer, so the tight search over log(theta)
    # calls lme4's optTheta directly, from the default fit's theta.
    start <- getME(glmer.nb(form, data = data), "glmer.nb.theta")
    first <- glmer(form, data = data, family = MASS::negative.binomial(theta = start),
                   control = control)
    return(lme4:::optTheta(first, interval = log(start) + c(-1, 1), tol = 1e-9,
                           control = control))
  }
  glmer(form, data = data, family = family_of(spec), nAGQ = nagq, control = control)
}

# glmer's deviance function with tightly converged PIRLS at the fit's family.
devfun_of <- function(spec, data, fit) {
  nagq <- if (is.null(spec$nagq)) 1 else spec$nagq
  nb_theta <- if (spec$family == "negative_binomial") getME(fit, "glmer.nb.theta") else NULL
  glmer(as.formula(spec$formula_r), data = data, family = family_of(spec, nb_theta),
        nAGQ = nagq, control = tight_control, devFunOnly = TRUE)
}

parameters_of <- function(spec, fit) {
  nagq <- if (is.null(spec$nagq)) 1 else spec$nagq
  theta <- unname(getME(fit, "theta"))
  if (nagq == 0) theta else c(theta, unname(fixef(fit)))
}

summary_rows <- list()
for (spec in models) {
  cat(sprintf("== %s\n", spec$name))
  data <- datasets[[spec$data]]
  nagq <- if (is.null(spec$nagq)) 1 else spec$nagq

  fits <- list()
  for (settings in c("default", "tight")) {
    seconds <- captured(sprintf("%s [%s fit]", spec$name, settings), system.time(
      fit <- fit_model(spec, data, settings)
    ))[["elapsed"]]
    devfun <- devfun_of(spec, data, fit)
    fits[[settings]] <- list(fit = fit, seconds = seconds, devfun = devfun,
                             value = devfun(parameters_of(spec, fit)))
    cat(sprintf("   %-7s objective %.10f  devfun %.10f  (%.2f s)\n", settings,
                objective(fit), fits[[settings]]$value, seconds))
  }
  chosen <- if (fits$tight$value < fits$default$value) "tight" else "default"
  fit <- fits[[chosen]]$fit
  devfun <- fits[[chosen]]$devfun

  theta <- getME(fit, "theta")
  beta <- fixef(fit)
  devfun_at <- lapply(list(c(1, 0), c(0.5, 1), c(1.5, -1)), function(change) {
    if (nagq == 0) {
      at <- unname(theta) * change[1]
      return(list(theta = json_array(at), value = json_number(devfun(at))))
    }
    at <- c(unname(theta) * change[1], unname(beta) + 0.1 * change[2])
    list(theta = json_array(at[seq_along(theta)]), beta = json_array(at[-seq_along(theta)]),
         value = json_number(devfun(at)))
  })

  if (nagq == 0) {
    fixef_se <- sqrt(diag(as.matrix(vcov(fit))))
  } else {
    hessian <- lme4:::deriv12(devfun, c(unname(theta), unname(beta)), delta = 1e-3)$Hessian
    fixef_se <- sqrt(diag(2 * solve(hessian)))[-seq_along(theta)]
  }
  names(fixef_se) <- names(beta)

  new <- as_model_frame(newdata[[spec$data]], data)
  new_file <- paste0(spec$name, "_new.csv.gz")
  write_csv_gz(newdata[[spec$data]], new_file)
  predict_new <- function(...) predict(fit, newdata = new, allow.new.levels = TRUE, ...)

  record <- list(
    name = spec$name,
    formula = spec$formula,
    formula_r = spec$formula_r,
    family = spec$family,
    link = spec$link,
    n_agq = nagq,
    weights = spec$weights,
    offset = spec$offset_column,
    data = paste0(spec$data, ".csv.gz"),
    newdata = new_file,
    n_obs = nobs(fit),
    objective = json_number(objective(fit)),
    objective_devfun = json_number(fits[[chosen]]$value),
    loglik = json_number(as.numeric(logLik(fit))),
    deviance = json_number(deviance(fit)),
    aic = json_number(AIC(fit)),
    theta = json_array(theta),
    theta_names = I(names(theta)),
    fixef = json_named(beta),
    fixef_se = json_named(fixef_se),
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
    optimizer_settings = chosen,
    lme4_version = as.character(packageVersion("lme4")),
    R_version = as.character(getRversion()),
    fit_seconds = json_number(round(fits[[chosen]]$seconds, 3))
  )
  if (spec$family == "negative_binomial") {
    record$nb_theta <- json_number(getME(fit, "glmer.nb.theta"))
    record$nb_default <- list(
      nb_theta = json_number(getME(fits$default$fit, "glmer.nb.theta")),
      objective = json_number(objective(fits$default$fit))
    )
  }
  text <- toJSON(record, auto_unbox = TRUE, json_verbatim = TRUE, pretty = TRUE,
                 null = "null", na = "null")
  writeLines(text, file.path(json_dir, paste0(spec$name, ".json")), useBytes = TRUE)

  summary_rows[[spec$name]] <- data.frame(
    model = spec$name, objective_default = objective(fits$default$fit),
    objective_tight = objective(fits$tight$fit), devfun_default = fits$default$value,
    devfun_tight = fits$tight$value, chosen = chosen, singular = isSingular(fit)
  )
}

cat("\n== summary\n")
print(do.call(rbind, c(summary_rows, make.row.names = FALSE)), digits = 12, row.names = FALSE)
cat("\n== warnings and messages\n")
if (length(diagnostics)) writeLines(unique(diagnostics)) else cat("none\n")
