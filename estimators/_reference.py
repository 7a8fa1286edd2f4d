"""Reference implementations behind the estimator interface: lme4's lmer and statsmodels.

Both wrappers take the same lme4-syntax formula as :class:`estimators.MixedLM` and store
the same fitted attributes, so a sweep can put the reference fits next to ours. The fit
happens in the reference implementation; prediction happens here, from its estimates:
the fixed part through formulaic (exactly as ``MixedLM`` encodes it) plus, for every
level seen in fitting, its conditional mode (BLUP). A level not seen in fitting gets
random effect 0 (``new_levels="population"``) or raises (``new_levels="error"``).

``Lme4`` runs ``Rscript`` once per fit on a temporary CSV file of the columns the
formula uses; ``StatsmodelsMixedLM`` maps the formula onto statsmodels' two
formulations (one grouping factor with correlated random effects, or crossed random
intercepts as variance components of a single group holding every row).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from estimators._columns import (
    as_target,
    check_policy,
    unseen_levels_error,
    weighted_rows,
)
from estimators._process import run_in_session
from estimators.mixed._design import (
    Design,
    RandomTerm,
    build_design,
    check_finite,
    check_levels_below_rows,
    factor_values,
    formula_frame,
    lme4_name,
    required_columns,
    resolve_response,
    warn_dropped,
)
from estimators.mixed._formula import ParsedFormula, parse_formula

SINGULAR_TOLERANCE = 1e-4  # lme4's isSingular default, on the diagonal of theta's templates
R_CHECK_TIMEOUT = 120.0  # seconds for Rscript to start and load lme4


# Loads the packages; a failure is one marked line on stderr, as in LMER_SCRIPT below.
LOAD_CHECK = (
    "tryCatch(suppressPackageStartupMessages({library(lme4); library(jsonlite)}), "
    "error = function(e) {cat('mixbench-error [packages]:', conditionMessage(e), '\\n', "
    "file = stderr()); quit(save = 'no', status = 3)})"
)


class ReferenceFitError(RuntimeError):
    """The reference implementation is missing or its fit failed; the message says which."""


# ---------------------------------------------------------------------------------------
# Availability
# ---------------------------------------------------------------------------------------


@functools.cache
def lme4_missing_reason(rscript: str = "Rscript") -> str | None:
    """Why :class:`Lme4` cannot run here, or None when it can.

    Checks once per process (the answer is cached) that ``rscript`` is on the PATH and
    loads ``lme4`` and ``jsonlite``.

    Parameters
    ----------
    rscript : str
        The ``Rscript`` executable, a name on the PATH or a path.

    Returns
    -------
    str or None
    """
    if shutil.which(rscript) is None:
        return f"Rscript not found ({rscript!r}); install R with the lme4 and jsonlite packages"
    try:
        check = run_in_session([rscript, "-e", LOAD_CHECK], timeout=R_CHECK_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"Rscript ({rscript!r}) could not be run: {error}"
    if check.returncode != 0:
        return f"R cannot load lme4 and jsonlite: {_r_error(check.stderr)}"
    return None


@functools.cache
def statsmodels_missing_reason() -> str | None:
    """Why :class:`StatsmodelsMixedLM` cannot run here, or None when it can."""
    if importlib.util.find_spec("statsmodels") is None:
        return "statsmodels is not installed (pip install 'mixbench[statsmodels]')"
    return None


def _r_error(stderr: str) -> str:
    """R's error message from its stderr: the line our scripts mark, else the last line
    starting "Error", else the last line."""
    marked = re.findall(r"^mixbench-error \[\w+\]: (.*)$", stderr, flags=re.MULTILINE)
    if marked:
        return marked[-1].strip()
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error")]
    return (errors or lines or ["(no message)"])[-1]


# ---------------------------------------------------------------------------------------
# Shared: the design in Python, prediction from the reference's estimates
# ---------------------------------------------------------------------------------------


def _level_keys(frame: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    """A grouping factor's level per row as text, the labels R and ``ranef_`` use."""
    return factor_values(frame, columns).astype(str).to_numpy(dtype=object)


class _ConditionalPrediction:
    """Fitting preamble and prediction shared by the reference wrappers.

    A subclass's fit calls :meth:`_prepare`, then sets ``coef_`` and ``ranef_`` (per
    grouping factor, a DataFrame indexed by level label with lme4's column names) and
    calls :meth:`_link_estimates`; :meth:`predict` needs nothing else.
    """

    formula: str
    new_levels: str

    def _prepare(self, X: Any, y: Any) -> tuple[ParsedFormula, pd.DataFrame, np.ndarray, Design]:
        check_policy(self.new_levels)
        parsed = parse_formula(self.formula)
        frame = formula_frame(self, X, reset=True)
        y = resolve_response(parsed, frame, y)
        target = as_target(y, len(frame))
        design, dropped = build_design(parsed, frame, target)
        warn_dropped(dropped, stacklevel=3)
        self._parsed = parsed
        self._terms = design.terms
        self._fixed_spec = design.fixed_spec
        return parsed, frame, target, design

    def _link_estimates(self, frame: pd.DataFrame) -> None:
        """Match the reference's names and labels to the Python design, or raise."""
        names = [lme4_name(name) for name in self._fixed_spec.column_names]
        unknown = [name for name in self.coef_.index if name not in names]
        if unknown:
            raise ReferenceFitError(
                f"fixed effect(s) {unknown} of the reference fit have no column in the "
                f"formulaic design {names}; write the formula so both encode it alike"
            )
        self._fixed_index = np.array([names.index(name) for name in self.coef_.index], dtype=int)
        self._ranef_order = {}
        for group, effects in self.ranef_.items():
            terms = [term for term in self._terms if term.spec.group == group]
            columns = [column for term in terms for column in term.columns]
            if not terms or sorted(columns) != sorted(effects.columns):
                raise ReferenceFitError(
                    f"random effects of {group!r}: the reference has columns "
                    f"{list(effects.columns)}, the formula's design {columns}"
                )
            keys = pd.unique(_level_keys(frame, terms[0].spec.group_cols))
            missing = effects.index.get_indexer(keys) < 0
            if missing.any():
                raise ReferenceFitError(
                    f"random effects of {group!r}: the reference labels its levels "
                    f"differently, e.g. no {list(keys[missing][:3])} among "
                    f"{list(effects.index[:3])}; give the grouping column as text"
                )
            self._ranef_order[group] = [columns.index(column) for column in effects.columns]

    def predict(self, X: Any) -> np.ndarray:
        """Predicted outcome, conditional on the conditional modes of the random effects.

        Parameters
        ----------
        X : DataFrame (pandas or polars)
            Holds every column the formula uses (the response is not needed).

        Returns
        -------
        numpy.ndarray
            The fixed part plus, per grouping factor, the level's conditional mode times
            its covariates; a level not seen in fitting contributes 0
            (``new_levels="population"``) or raises (``new_levels="error"``).
        """
        check_is_fitted(self, "coef_")
        check_policy(self.new_levels)
        frame = formula_frame(self, X, reset=False)
        used = set(required_columns(self._parsed.fixed)) - {self._parsed.response}
        for term in self._terms:
            used |= required_columns(term.spec.expr) | set(term.spec.group_cols)
        missing = [column for column in sorted(used) if column not in frame.columns]
        if missing:
            raise ValueError(f"predict: column(s) {missing} not found in X")
        check_finite(frame, sorted(used))
        fixed = np.asarray(self._fixed_spec.get_model_matrix(frame), dtype=float)
        prediction = fixed[:, self._fixed_index] @ self.coef_.to_numpy()
        for group, effects in self.ranef_.items():
            terms: list[RandomTerm] = [term for term in self._terms if term.spec.group == group]
            keys = _level_keys(frame, terms[0].spec.group_cols)
            codes = effects.index.get_indexer(keys)
            seen = codes >= 0
            if not seen.all() and self.new_levels == "error":
                raise unseen_levels_error(group, keys[~seen])
            values = np.hstack(
                [np.asarray(term.model_spec.get_model_matrix(frame), dtype=float) for term in terms]
            )[:, self._ranef_order[group]]
            prediction[seen] += np.einsum(
                "ij,ij->i", values[seen], effects.to_numpy(dtype=float)[codes[seen]]
            )
        return prediction


def _varcorr_rows(group: str, names: list[str], covariance: np.ndarray) -> list[tuple]:
    """Rows of ``as.data.frame(VarCorr(fit))`` for one term: variances, then correlations."""
    sd = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    rows = [(group, name, None, covariance[i, i], sd[i]) for i, name in enumerate(names)]
    for j in range(len(names)):
        for i in range(j + 1, len(names)):
            scale = sd[i] * sd[j]
            correlation = covariance[i, j] / scale if scale > 0 else np.nan
            rows.append((group, names[j], names[i], covariance[i, j], correlation))
    return rows


def _varcorr_frame(rows: list[tuple], sigma: float) -> pd.DataFrame:
    rows = [*rows, ("Residual", None, None, sigma**2, sigma)]
    return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])


# ---------------------------------------------------------------------------------------
# lme4
# ---------------------------------------------------------------------------------------

# Errors go to stderr on one line starting "mixbench-error [stage]:" so that Python can
# quote R's own message without its traceback. Numbers are written with sprintf("%.17g")
# (read back as the same doubles) and inserted verbatim: jsonlite stops at 15 digits.
LMER_SCRIPT = r"""
fail <- function(stage, message) {
  cat(sprintf("mixbench-error [%s]: %s\n", stage, paste(trimws(message), collapse = " ")),
      file = stderr())
  quit(save = "no", status = 3)
}
problem <- tryCatch({
  suppressPackageStartupMessages({library(lme4); library(jsonlite)})
  NULL
}, error = function(e) conditionMessage(e))
if (!is.null(problem)) fail("packages", problem)
# Sorting as Python sorts, should R ever order levels itself.
invisible(Sys.setlocale("LC_COLLATE", "C"))

spec <- fromJSON(commandArgs(trailingOnly = TRUE)[1], simplifyVector = FALSE)
columns <- spec$columns
classes <- vapply(columns, function(column) {
  if (column$kind == "numeric") "numeric" else "character"
}, "")
names(classes) <- vapply(columns, function(column) column$name, "")
data <- tryCatch(
  read.csv(spec$data, colClasses = classes, check.names = FALSE, na.strings = character(0),
           encoding = "UTF-8"),
  error = function(e) fail("data", conditionMessage(e)))
for (column in columns) {
  if (column$kind == "factor") {
    levels <- unlist(column$levels)
    data[[column$name]] <- if (is.null(levels)) factor(data[[column$name]]) else
      factor(data[[column$name]], levels = levels)
  }
}

diagnostics <- character(0)
keep <- function(kind) function(condition) {
  diagnostics <<- c(diagnostics, sprintf("%s: %s", kind, trimws(conditionMessage(condition))))
  invokeRestart(if (kind == "warning") "muffleWarning" else "muffleMessage")
}
fit <- NULL
seconds <- tryCatch(
  withCallingHandlers(
    system.time(
      fit <- if (is.null(spec$weights)) {
        lmer(as.formula(spec$formula), data = data, REML = isTRUE(spec$reml))
      } else {
        # The weights as a value in the call: lmer's weights are prior weights.
        do.call(lmer, list(as.formula(spec$formula), data = data,
                           REML = isTRUE(spec$reml), weights = data[[spec$weights]]))
      }
    )[["elapsed"]],
    warning = keep("warning"), message = keep("message")),
  error = function(e) fail("lmer", conditionMessage(e)))

# The R process's peak resident size (kB): the caller's own never includes it.
status_kb <- function(field) {
  if (!file.exists("/proc/self/status")) return(NA_real_)
  line <- grep(paste0("^", field, ":"), readLines("/proc/self/status"), value = TRUE)
  if (length(line) == 0) NA_real_ else as.numeric(gsub("[^0-9]", "", line))
}

number <- function(x) {
  x <- as.numeric(x)
  ifelse(is.finite(x), sprintf("%.17g", x), "null")
}
json_scalar <- function(x) structure(number(x), class = "json")
json_array <- function(x) {
  structure(paste0("[", paste(number(x), collapse = ","), "]"), class = "json")
}
beta <- fixef(fit)
theta <- getME(fit, "theta")
vc <- as.data.frame(VarCorr(fit))
record <- list(
  fixef_names = I(names(beta)),
  fixef = json_array(beta),
  fixef_cov = json_array(as.matrix(vcov(fit))),
  sigma = json_scalar(sigma(fit)),
  theta = json_array(theta),
  theta_names = I(names(theta)),
  objective = json_scalar(if (isREML(fit)) REMLcrit(fit) else deviance(fit)),
  is_singular = isSingular(fit),
  n_obs = nobs(fit),
  varcorr = list(grp = I(vc$grp), var1 = I(vc$var1), var2 = I(vc$var2),
                 vcov = json_array(vc$vcov), sdcor = json_array(vc$sdcor)),
  ranef = lapply(ranef(fit), function(block) list(
    columns = I(colnames(block)),
    levels = I(rownames(block)),
    values = json_array(t(as.matrix(block)))       # row by row
  )),
  fit_seconds = json_scalar(seconds),
  peak_rss_kb = json_scalar(status_kb("VmHWM")),
  diagnostics = I(diagnostics),
  versions = list(R = as.character(getRversion()),
                  lme4 = as.character(packageVersion("lme4")))
)
writeLines(toJSON(record, auto_unbox = TRUE, json_verbatim = TRUE, null = "null",
                  na = "null", digits = NA),
           spec$output, useBytes = TRUE)
"""

_R_NAME = re.compile(r"[A-Za-z.][A-Za-z0-9._]*")


class Lme4(_ConditionalPrediction, RegressorMixin, BaseEstimator):
    """lme4's ``lmer``, fitted by ``Rscript``, behind the scikit-learn interface.

    Each fit writes the columns the formula uses to a temporary CSV file and runs one
    ``Rscript`` process: ``lmer(formula, data, REML = reml)`` with lme4's default
    control. Grouping columns go to R as text (factors), so the levels keep the labels
    they have in Python; categorical fixed-effect columns go as factors with the level
    order formulaic uses, so both name the coefficients alike. Predictions are computed
    in Python from the returned estimates (gaussian outcomes only, like ``lmer``).

    Parameters
    ----------
    formula : str
        lme4 syntax, e.g. ``"Reaction ~ Days + (Days | Subject)"``; handed to R as
        written (with the response renamed when ``y`` is given), so it must be valid in
        both R and formulaic.
    reml : bool
        REML (default, like ``lmer``) or maximum likelihood.
    new_levels : {"population", "error"}
        At predict time, a level not seen in fitting gets random effect 0, or raises.
    rscript : str
        The ``Rscript`` executable, a name on the PATH or a path.

    Attributes
    ----------
    coef_ : pandas.Series
        Fixed effects by lme4's names (``fixef(fit)``).
    coef_se_ : pandas.Series
        Their standard errors.
    coef_cov_ : pandas.DataFrame
        ``vcov(fit)``.
    sigma_ : float
        Residual standard deviation.
    theta_ : numpy.ndarray
        ``getME(fit, "theta")``.
    objective_ : float
        ``REMLcrit(fit)`` for REML fits, ``deviance(fit)`` for ML fits.
    loglik_ : float
        ``-objective_ / 2``.
    varcorr_ : pandas.DataFrame
        ``as.data.frame(VarCorr(fit))``: columns grp, var1, var2, vcov, sdcor.
    ranef_ : dict of pandas.DataFrame
        ``ranef(fit)``: conditional modes per grouping factor, indexed by level label.
    is_singular_ : bool
        ``isSingular(fit)``.
    fit_seconds_ : float
        Elapsed seconds of the ``lmer`` call alone (R's ``system.time``), without
        starting R or moving the data.
    n_obs_ : int
    subprocess_peak_memory_mb_ : float
        Peak resident size of the ``Rscript`` process in MB (its VmHWM after the fit,
        from ``/proc/self/status``: R, lme4, the data it read and the fit); NaN where
        R cannot read it (not Linux). The memory of the calling Python process
        does not include it; the harness adds it to the row's ``peak_memory_mb``.
    messages_ : list of str
        lme4's warnings and messages during the fit (e.g. singular fits); warnings are
        also raised as Python warnings.
    versions_ : dict
        R's and lme4's versions.

    Examples
    --------
    Needs R with lme4 (so not run as a doctest):

    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> g = np.repeat(np.arange(20), 10)
    >>> data = pd.DataFrame({"g": g, "x": rng.normal(size=200)})
    >>> data["y"] = 1 + 2 * data["x"] + rng.normal(size=20)[g] + rng.normal(size=200)
    >>> model = Lme4("y ~ x + (1 | g)").fit(data)  # doctest: +SKIP
    >>> bool(abs(model.coef_["x"] - 2) < 0.2), list(model.ranef_)  # doctest: +SKIP
    (True, ['g'])
    """

    def __init__(
        self,
        formula: str = "",
        *,
        reml: bool = True,
        new_levels: str = "population",
        rscript: str = "Rscript",
    ) -> None:
        self.formula = formula
        self.reml = reml
        self.new_levels = new_levels
        self.rscript = rscript

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> Lme4:
        """Fit with ``lmer``; ``y`` may be omitted when the formula names the response.

        ``sample_weight`` (optional, one non-negative weight per row) is ``lmer``'s
        ``weights`` (prior weights: residual variance ``sigma^2 / w``); rows of weight 0
        are left out before R sees the data.

        Raises
        ------
        ReferenceFitError
            When ``Rscript`` is missing, R cannot load lme4 or jsonlite, or ``lmer``
            fails; the message quotes R's error.
        """
        weight = None
        if sample_weight is not None:
            X, y, weight = weighted_rows(formula_frame(self, X, reset=True), y, sample_weight)
        parsed, frame, target, design = self._prepare(X, y)
        columns, table = self._r_table(parsed, frame, target, design)
        response = table.columns[-1]
        weights_column = None
        if weight is not None:
            weights_column = "mixbench_weights"
            while weights_column in table.columns:
                weights_column += "_"
            # Before the response, which stays the table's last column.
            table.insert(len(table.columns) - 1, weights_column, weight)
            columns.insert(
                len(columns) - 1, {"name": weights_column, "kind": "numeric", "levels": []}
            )
        formula = f"{response} ~ {self.formula.split('~', 1)[-1].strip()}"
        if shutil.which(self.rscript) is None:
            raise ReferenceFitError(
                f"Lme4: Rscript not found ({self.rscript!r}); install R with the lme4 and "
                "jsonlite packages, or pass rscript= the path of Rscript"
            )
        with tempfile.TemporaryDirectory(prefix="mixbench-lme4-") as tmp:
            folder = Path(tmp)
            table.to_csv(folder / "data.csv", index=False)
            (folder / "fit.R").write_text(LMER_SCRIPT, encoding="utf-8")
            spec = {
                "data": str(folder / "data.csv"),
                "output": str(folder / "fit.json"),
                "formula": formula,
                "reml": bool(self.reml),
                "columns": columns,
                "weights": weights_column,
            }
            (folder / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
            self._run(folder)
            result = json.loads((folder / "fit.json").read_text(encoding="utf-8"))
        self._set_fitted(result)
        self._link_estimates(frame)
        return self

    def _r_table(
        self, parsed: ParsedFormula, frame: pd.DataFrame, target: np.ndarray, design: Design
    ) -> tuple[list[dict[str, Any]], pd.DataFrame]:
        """The columns R reads, how it should read each, and the table; response last."""
        modelled = set(required_columns(parsed.fixed)) - {parsed.response}
        grouping: set[str] = set()
        for term in design.terms:
            modelled |= required_columns(term.spec.expr)
            grouping |= set(term.spec.group_cols)
        categorical: dict[str, list[str]] = {}
        for spec in [design.fixed_spec, *(term.model_spec for term in design.terms)]:
            for name, (kind, state) in spec.encoder_state.items():
                if getattr(kind, "value", kind) == "categorical" and name in frame.columns:
                    categorical[name] = [str(level) for level in state["categories"]]
        columns, table = [], {}
        for name in [c for c in frame.columns if c in modelled | grouping]:
            values = frame[name]
            is_number = pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
            if name in categorical:
                columns.append({"name": name, "kind": "factor", "levels": categorical[name]})
                table[name] = values.astype(str)
            elif name in modelled and is_number:
                columns.append({"name": name, "kind": "numeric", "levels": []})
                table[name] = values.to_numpy(dtype=float)
            else:  # grouping factors, and text the formula uses in R-only ways
                columns.append({"name": name, "kind": "factor", "levels": []})
                table[name] = values.astype(str)
        response = parsed.response if parsed.response and _R_NAME.fullmatch(parsed.response) else ""
        response = response or "response"
        while response in table:
            response += "_"
        columns.append({"name": response, "kind": "numeric", "levels": []})
        table[response] = target
        return columns, pd.DataFrame(table, index=frame.index)

    def _run(self, folder: Path) -> None:
        # In a session of its own, waited on in a loop: a job's time limit (an exception
        # sent to this thread) or Ctrl-C kills R and anything it started.
        try:
            run = run_in_session([self.rscript, str(folder / "fit.R"), str(folder / "spec.json")])
        except OSError as error:
            raise ReferenceFitError(
                f"Lme4: cannot run Rscript ({self.rscript!r}): {error}"
            ) from None
        if run.returncode == 0:
            return
        marked = re.findall(r"^mixbench-error \[(\w+)\]: (.*)$", run.stderr, flags=re.MULTILINE)
        if marked and marked[-1][0] == "packages":
            raise ReferenceFitError(f"Lme4: R cannot load lme4 and jsonlite: {marked[-1][1]}")
        if marked:
            stage, message = marked[-1]
            what = "lme4's lmer failed" if stage == "lmer" else f"R failed ({stage})"
            raise ReferenceFitError(f"Lme4: {what}: {message}")
        raise ReferenceFitError(
            f"Lme4: Rscript exited with status {run.returncode}: {_r_error(run.stderr)}"
        )

    def _set_fitted(self, result: dict[str, Any]) -> None:
        names = pd.Index(result["fixef_names"], dtype=object)
        p = len(names)
        cov = np.asarray(result["fixef_cov"], dtype=float).reshape(p, p)
        self.coef_ = pd.Series(np.asarray(result["fixef"], dtype=float), index=names)
        self.coef_cov_ = pd.DataFrame(cov, index=names, columns=names)
        self.coef_se_ = pd.Series(np.sqrt(np.diag(cov)), index=names)
        self.sigma_ = float(result["sigma"])
        self.theta_ = np.asarray(result["theta"], dtype=float)
        self.objective_ = float(result["objective"])
        self.loglik_ = -0.5 * self.objective_
        self.is_singular_ = bool(result["is_singular"])
        self.n_obs_ = int(result["n_obs"])
        self.fit_seconds_ = float(result["fit_seconds"])
        # null where R could not read /proc (not Linux)
        peak_kb = result.get("peak_rss_kb")
        self.subprocess_peak_memory_mb_ = np.nan if peak_kb is None else float(peak_kb) / 1024.0
        vc = result["varcorr"]
        self.varcorr_ = pd.DataFrame(
            {
                "grp": vc["grp"],
                "var1": vc["var1"],
                "var2": vc["var2"],
                "vcov": np.asarray(vc["vcov"], dtype=float),
                "sdcor": np.asarray(vc["sdcor"], dtype=float),
            }
        )
        self.ranef_ = {}
        for group, block in result["ranef"].items():
            values = np.asarray(block["values"], dtype=float)
            self.ranef_[group] = pd.DataFrame(
                values.reshape(len(block["levels"]), len(block["columns"])),
                index=pd.Index(block["levels"], dtype=object),
                columns=list(block["columns"]),
            )
        self.messages_ = list(result["diagnostics"])
        self.versions_ = dict(result["versions"])
        for message in self.messages_:
            if message.startswith("warning: "):
                category = ConvergenceWarning if "converge" in message else UserWarning
                warnings.warn(f"lme4: {message[9:]}", category, stacklevel=3)


# ---------------------------------------------------------------------------------------
# statsmodels
# ---------------------------------------------------------------------------------------


def _semidefinite_cholesky(covariance: np.ndarray) -> np.ndarray:
    """Lower-triangular L with L L' = covariance, a zero column where a pivot vanishes
    (numpy's Cholesky refuses singular matrices, which boundary fits produce)."""
    q = covariance.shape[0]
    L = np.zeros_like(covariance)
    for j in range(q):
        pivot = covariance[j, j] - L[j, :j] @ L[j, :j]
        if pivot <= 1e-14 * max(covariance[j, j], 1e-300):
            continue
        L[j, j] = np.sqrt(pivot)
        L[j + 1 :, j] = (covariance[j + 1 :, j] - L[j + 1 :, :j] @ L[j, :j]) / L[j, j]
    return L


def group_modes(
    codes: np.ndarray,
    values: np.ndarray,
    residual: np.ndarray,
    covariance: np.ndarray,
    scale: float,
    n_levels: int,
) -> np.ndarray:
    """Conditional modes of one grouping factor's correlated random effects.

    ``b_g = (C Z_g'Z_g + s I)^-1 C Z_g' r_g``: the same BLUP as ``C Z_g' V_g^-1 r_g``
    (push-through identity) without inverting ``C``, so it holds on the boundary too.

    Returns
    -------
    numpy.ndarray
        Shape (n_levels, q).
    """
    q = values.shape[1]
    ZtZ = np.zeros((n_levels, q, q))
    np.add.at(ZtZ, codes, values[:, :, None] * values[:, None, :])
    Ztr = np.zeros((n_levels, q))
    np.add.at(Ztr, codes, values * residual[:, None])
    lhs = covariance @ ZtZ + scale * np.eye(q)
    return np.linalg.solve(lhs, (Ztr @ covariance.T)[..., None])[..., 0]


def component_modes(
    Z: sp.spmatrix, variances: np.ndarray, residual: np.ndarray, scale: float
) -> np.ndarray:
    """Conditional modes of independent random effects with the given variances (one per
    column of ``Z``), by the same identity as :func:`group_modes`."""
    ZtZ = (Z.T @ Z).toarray()
    lhs = variances[:, None] * ZtZ + scale * np.eye(ZtZ.shape[0])
    return np.linalg.solve(lhs, variances * (Z.T @ residual))


class StatsmodelsMixedLM(_ConditionalPrediction, RegressorMixin, BaseEstimator):
    """statsmodels' MixedLM from an lme4-syntax formula, behind the scikit-learn interface.

    statsmodels has two formulations, and the formula is mapped onto one of them:

    * one random-effects term on one grouping factor, ``(1 | g)``, ``(1 + x | g)``,
      ``(x | g)``, ``(0 + x | g)``: ``groups=g`` with the term's columns as random
      effects (``re_formula``), their covariance unstructured as in lme4;
    * several random intercepts on distinct factors (crossed, or nested ``(1 | a/b)``):
      variance components (``vc_formula={"a": "0 + C(a)", ...}``) of one group that
      holds every row, with sparse indicator matrices.

    Anything else (uncorrelated ``||`` terms, several terms on one factor, random slopes
    next to other factors) raises a ValueError: statsmodels cannot express it. The
    fixed part is encoded by formulaic, exactly as :class:`estimators.MixedLM` does,
    and handed to statsmodels as a matrix. Gaussian outcomes only.

    Predictions add the conditional modes from statsmodels' ``random_effects`` to the
    fixed part, in both formulations. Where statsmodels refuses to compute them (a
    singular random-effects covariance) the same modes are computed here by
    :func:`group_modes` or :func:`component_modes`, and ``convergence_["ranef"]`` says so.

    Parameters
    ----------
    formula : str
        lme4 syntax, e.g. ``"Reaction ~ Days + (Days | Subject)"``.
    reml : bool
        REML (default) or maximum likelihood.
    new_levels : {"population", "error"}
        At predict time, a level not seen in fitting gets random effect 0, or raises.

    Attributes
    ----------
    coef_ : pandas.Series
        Fixed effects by lme4's names.
    coef_se_ : pandas.Series
    coef_cov_ : pandas.DataFrame
    sigma_ : float
        Residual standard deviation.
    theta_ : numpy.ndarray
        The estimates as lme4's relative covariance parameters (terms largest first,
        each template's lower triangle column by column), for comparison with lme4.
    objective_ : float
        ``-2 * llf``: the REML criterion or the deviance, on lme4's scale.
    loglik_ : float
    varcorr_ : pandas.DataFrame
        Columns grp, var1, var2, vcov, sdcor, like ``as.data.frame(VarCorr(fit))``.
    ranef_ : dict of pandas.DataFrame
        Conditional modes per grouping factor, indexed by level label.
    is_singular_ : bool
        Whether a diagonal element of theta is below 1e-4, lme4's rule.
    formulation_ : {"groups", "variance_components"}
    convergence_ : dict
        statsmodels' ``converged`` and ``method``, and where ``ranef_`` came from.
    fit_seconds_ : float
        Seconds to build and fit the statsmodels model.
    n_obs_ : int

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> g = np.repeat(np.arange(20), 10)
    >>> data = pd.DataFrame({"g": g, "x": rng.normal(size=200)})
    >>> data["y"] = 1 + 2 * data["x"] + rng.normal(size=20)[g] + rng.normal(size=200)
    >>> model = StatsmodelsMixedLM("y ~ x + (1 | g)").fit(data)
    >>> bool(abs(model.coef_["x"] - 2) < 0.2), model.formulation_
    (True, 'groups')
    """

    def __init__(
        self, formula: str = "", *, reml: bool = True, new_levels: str = "population"
    ) -> None:
        self.formula = formula
        self.reml = reml
        self.new_levels = new_levels

    def fit(self, X: Any, y: Any = None) -> StatsmodelsMixedLM:
        """Fit with statsmodels; ``y`` may be omitted when the formula names the response.

        Raises
        ------
        ValueError
            For random-effects structures statsmodels cannot express, and for a
            grouping factor with as many levels as rows (as lmer refuses it).
        ImportError
            When statsmodels is not installed.
        """
        reason = statsmodels_missing_reason()
        if reason:
            raise ImportError(f"StatsmodelsMixedLM: {reason}")
        if isinstance(self.formula, str) and "||" in self.formula:
            raise ValueError(
                "statsmodels cannot express uncorrelated random effects ('||'); "
                "use Lme4 or MixedLM for this formula"
            )
        parsed, frame, target, design = self._prepare(X, y)
        # statsmodels would stop on a singular matrix deep inside numpy; say why, as lmer.
        check_levels_below_rows(design)
        terms = design.terms
        if len(terms) > 1:
            groups = [term.spec.group for term in terms]
            if len(set(groups)) < len(groups):
                raise ValueError(
                    "statsmodels cannot express several random-effects terms on one "
                    f"grouping factor ({groups}); use one term, e.g. (1 + x | g)"
                )
            slopes = [term.spec.group for term in terms if term.columns != ["(Intercept)"]]
            if slopes:
                raise ValueError(
                    "statsmodels cannot express random slopes when there are several "
                    f"grouping factors (slopes on {slopes}); only random intercepts "
                    "(1 | a) + (1 | b) become variance components"
                )
        started = time.perf_counter()
        if len(terms) == 1:
            self._fit_groups(design, frame)
        else:
            self._fit_components(design, frame)
        self.fit_seconds_ = time.perf_counter() - started
        self._link_estimates(frame)
        return self

    def _fit_groups(self, design: Design, frame: pd.DataFrame) -> None:
        from statsmodels.regression.mixed_linear_model import MixedLM as StatsmodelsModel

        term = design.terms[0]
        keys = _level_keys(frame, term.spec.group_cols)
        values = design.values[0]
        result = StatsmodelsModel(design.y, design.X, groups=keys, exog_re=values).fit(
            reml=bool(self.reml)
        )
        self._set_common(design, result)
        covariance = np.atleast_2d(np.asarray(result.cov_re, dtype=float))
        labels = pd.Index(np.unique(keys), dtype=object)
        modes, source = None, "statsmodels"
        try:
            effects = result.random_effects
            modes = np.vstack([np.asarray(effects[label], dtype=float) for label in labels])
        except (ValueError, np.linalg.LinAlgError):
            pass
        if modes is None or not np.all(np.isfinite(modes)):
            residual = design.y - design.X @ self.coef_.to_numpy()
            modes = group_modes(
                labels.get_indexer(keys), values, residual, covariance, result.scale, len(labels)
            )
            source = "computed (statsmodels refused: singular covariance)"
        self.ranef_ = {term.spec.group: pd.DataFrame(modes, index=labels, columns=term.columns)}
        self.theta_ = _semidefinite_cholesky(covariance / result.scale).T[np.triu_indices(term.q)]
        diagonal = np.diag(_semidefinite_cholesky(covariance / result.scale))
        self.is_singular_ = bool(np.any(diagonal < SINGULAR_TOLERANCE))
        rows = _varcorr_rows(term.spec.group, term.columns, covariance)
        self.varcorr_ = _varcorr_frame(rows, self.sigma_)
        self.formulation_ = "groups"
        self.convergence_ = self._convergence(result, source)

    def _fit_components(self, design: Design, frame: pd.DataFrame) -> None:
        from statsmodels.regression.mixed_linear_model import MixedLM as StatsmodelsModel
        from statsmodels.regression.mixed_linear_model import VCSpec

        n = len(design.y)
        names, labels, matrices = [], [], []
        for term in design.terms:
            level_labels, codes = np.unique(
                _level_keys(frame, term.spec.group_cols).astype(str), return_inverse=True
            )
            names.append(term.spec.group)
            labels.append(pd.Index(level_labels, dtype=object))
            matrices.append(
                sp.csr_matrix((np.ones(n), (np.arange(n), codes)), shape=(n, len(level_labels)))
            )
        spec = VCSpec(names, [[list(index)] for index in labels], [[m] for m in matrices])
        # One group holding every row: the variance components are then crossed.
        result = StatsmodelsModel(design.y, design.X, groups=np.zeros(n), exog_vc=spec).fit(
            reml=bool(self.reml)
        )
        self._set_common(design, result)
        variances = np.asarray(result.vcomp, dtype=float)
        sizes = [len(index) for index in labels]
        modes, source = None, "statsmodels"
        try:
            modes = np.asarray(result.random_effects[0], dtype=float)
        except (ValueError, np.linalg.LinAlgError):
            pass
        if modes is None or not np.all(np.isfinite(modes)):
            residual = design.y - design.X @ self.coef_.to_numpy()
            modes = component_modes(
                sp.hstack(matrices, format="csr"),
                np.repeat(variances, sizes),
                residual,
                result.scale,
            )
            source = "computed (statsmodels refused: a zero variance component)"
        starts = np.cumsum([0, *sizes])
        self.ranef_ = {
            name: pd.DataFrame(
                modes[starts[k] : starts[k + 1], None], index=index, columns=["(Intercept)"]
            )
            for k, (name, index) in enumerate(zip(names, labels, strict=True))
        }
        self.theta_ = np.sqrt(np.clip(variances, 0.0, None)) / self.sigma_
        self.is_singular_ = bool(np.any(self.theta_ < SINGULAR_TOLERANCE))
        rows = [
            row
            for name, variance in zip(names, variances, strict=True)
            for row in _varcorr_rows(name, ["(Intercept)"], np.array([[variance]]))
        ]
        self.varcorr_ = _varcorr_frame(rows, self.sigma_)
        self.formulation_ = "variance_components"
        self.convergence_ = self._convergence(result, source)

    def _set_common(self, design: Design, result: Any) -> None:
        names = pd.Index(design.fixed_names, dtype=object)
        p = len(names)
        cov = np.asarray(result.cov_params(), dtype=float)[:p, :p]
        self.coef_ = pd.Series(np.asarray(result.fe_params, dtype=float), index=names)
        self.coef_cov_ = pd.DataFrame(cov, index=names, columns=names)
        self.coef_se_ = pd.Series(np.asarray(result.bse_fe, dtype=float), index=names)
        self.sigma_ = float(np.sqrt(result.scale))
        self.objective_ = -2.0 * float(result.llf)
        self.loglik_ = float(result.llf)
        self.n_obs_ = len(design.y)

    @staticmethod
    def _convergence(result: Any, ranef_source: str) -> dict[str, Any]:
        return {
            "converged": bool(result.converged),
            "criterion": str(getattr(result, "method", "")),
            "ranef": ranef_source,
        }
