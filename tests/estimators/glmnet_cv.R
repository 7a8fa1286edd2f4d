# cv.glmnet on an aggregated click table with given folds and penalties, for
# test_vs_glmnet.py: Rscript glmnet_cv.R cells.csv lambdas.csv alpha out.json
suppressPackageStartupMessages({library(glmnet); library(Matrix); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
cells <- read.csv(args[1])
lambda <- read.csv(args[2])$lambda
cells$user <- factor(cells$user)
x <- cbind(sparse.model.matrix(~ user - 1, cells), cells$display)
y <- cbind(cells$failures, cells$successes)
fit <- cv.glmnet(x, y, family = "binomial", alpha = as.numeric(args[3]), lambda = lambda,
                 foldid = cells$fold, thresh = 1e-12, maxit = 1e6)
write(toJSON(list(lambda = fit$lambda, cvm = fit$cvm, cvsd = fit$cvsd,
                  lambda_min = fit$lambda.min, lambda_1se = fit$lambda.1se),
             digits = NA, auto_unbox = TRUE), args[4])
