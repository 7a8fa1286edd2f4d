# glmnet at one penalty on weighted impression rows, for test_vs_glmnet.py:
# Rscript glmnet_weighted.R rows.csv lambda alpha out.json
# rows.csv: user, display, click, weight. Returns the fitted probabilities of the rows.
suppressPackageStartupMessages({library(glmnet); library(Matrix); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
rows <- read.csv(args[1])
rows$user <- factor(rows$user)
x <- cbind(sparse.model.matrix(~ user - 1, rows), display = rows$display)
fit <- glmnet(x, rows$click, family = "binomial", weights = rows$weight,
              alpha = as.numeric(args[3]), lambda = as.numeric(args[2]),
              standardize = TRUE, thresh = 1e-14, maxit = 1e6)
probability <- as.numeric(predict(fit, x, type = "response"))
write(toJSON(list(probability = probability), digits = NA), args[4])
