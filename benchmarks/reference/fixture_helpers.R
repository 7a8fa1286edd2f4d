# Helpers shared by lme4_reference.R and glmer_reference.R: writing data sets that
# round-trip exactly, keeping fitting-data factor levels, collecting lme4's warnings,
# and JSON numbers written with 17 significant digits. Sourced after `data_dir` is set.

# Doubles are written with the fewest of 15, 16 or 17 significant digits that
# read back as the same double; factors as their labels; no quoting (checked).
format_column <- function(x) {
  if (is.factor(x)) {
    return(as.character(x))
  }
  if (is.integer(x) || is.character(x)) {
    return(as.character(x))
  }
  stopifnot(is.double(x), !anyNA(x))
  out <- sprintf("%.15g", x)
  for (digits in 16:17) {
    redo <- as.numeric(out) != x
    out[redo] <- sprintf(paste0("%.", digits, "g"), x[redo])
  }
  out
}

write_csv_gz <- function(frame, file) {
  text <- as.data.frame(lapply(frame, format_column), check.names = FALSE)
  fields <- c(names(text), unlist(text, use.names = FALSE))
  if (any(grepl("[,\"\r\n]", fields))) {
    stop(file, ": a field would need quoting")
  }
  con <- gzfile(file.path(data_dir, file), open = "wb")
  on.exit(close(con))
  write.table(text, con, sep = ",", quote = FALSE, row.names = FALSE,
              col.names = TRUE, eol = "\n")
}

# Read a CSV file written above with every column as text; numeric columns are
# converted back with as.numeric.
read_csv_gz <- function(file) {
  read.csv(file.path(data_dir, file), colClasses = "character",
           check.names = FALSE)
}

# The CSV file must hold exactly the values and labels of `frame`.
check_round_trip <- function(frame, file) {
  back <- read_csv_gz(file)
  stopifnot(identical(names(back), names(frame)), nrow(back) == nrow(frame))
  for (column in names(frame)) {
    x <- frame[[column]]
    same <- if (is.numeric(x)) {
      identical(as.numeric(back[[column]]), as.numeric(x))
    } else {
      identical(back[[column]], as.character(x))
    }
    if (!same) stop(file, ": column ", column, " does not round-trip")
  }
}

# Factors used as fixed effects keep the levels of the fitting data.
as_model_frame <- function(new, data) {
  for (column in names(new)) {
    if (is.factor(data[[column]]) && all(new[[column]] %in% levels(data[[column]]))) {
      new[[column]] <- factor(new[[column]], levels = levels(data[[column]]))
    }
  }
  new
}

# Evaluate `expr`, collecting lme4's warnings and messages (e.g. singular fits)
# instead of printing them mid-run.
diagnostics <- character(0)
captured <- function(label, expr) {
  withCallingHandlers(expr,
    warning = function(w) {
      diagnostics <<- c(diagnostics, sprintf("%s: warning: %s", label, conditionMessage(w)))
      invokeRestart("muffleWarning")
    },
    message = function(m) {
      diagnostics <<- c(diagnostics, sprintf("%s: message: %s", label, trimws(conditionMessage(m))))
      invokeRestart("muffleMessage")
    }
  )
}

# JSON numbers: 17 significant digits, NA as null, inserted verbatim.
format_numbers <- function(x) {
  x <- as.numeric(x)
  if (any(!is.finite(x) & !is.na(x))) stop("non-finite number")
  ifelse(is.na(x), "null", sprintf("%.17g", x))
}

json_number <- function(x) {
  stopifnot(length(x) == 1)
  structure(format_numbers(x), class = "json")
}

json_array <- function(x) {
  structure(paste0("[", paste(format_numbers(x), collapse = ","), "]"), class = "json")
}

json_named <- function(x) {                   # named numeric vector -> object
  stats::setNames(lapply(unname(x), json_number), names(x))
}

json_intervals <- function(ci) {              # interval matrix -> {row: [lo, hi]}
  stats::setNames(lapply(seq_len(nrow(ci)), function(i) json_array(ci[i, ])), rownames(ci))
}

ranef_json <- function(fit) {
  re <- ranef(fit, condVar = TRUE)
  lapply(re, function(block) {
    post <- attr(block, "postVar")
    # One array per term when a grouping factor has several terms, e.g.
    # (1 | Subject) + (0 + Days | Subject); the diagonals are concatenated in
    # the order of the columns.
    if (!is.list(post)) post <- list(post)
    diag_of <- function(level) {
      unlist(lapply(post, function(a) diag(as.matrix(a[, , level]))), use.names = FALSE)
    }
    stopifnot(length(diag_of(1)) == ncol(block))
    list(
      columns = I(colnames(block)),
      levels = I(rownames(block)),
      values = lapply(seq_len(nrow(block)), function(i) json_array(unlist(block[i, ]))),
      condvar = lapply(seq_len(nrow(block)), function(i) json_array(diag_of(i)))
    )
  })
}

varcorr_json <- function(fit) {
  vc <- as.data.frame(VarCorr(fit))
  lapply(seq_len(nrow(vc)), function(i) list(
    grp = vc$grp[i], var1 = vc$var1[i], var2 = vc$var2[i],
    vcov = json_number(vc$vcov[i]), sdcor = json_number(vc$sdcor[i])
  ))
}
