"""What a fitted linear and a fitted generalized mixed model share: variance components
in lme4's layout, the fixed-effects part of a prediction, which random-effects terms a
prediction includes, and the random-effects block of a summary."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from estimators.mixed._categories import fixed_matrix
from estimators.mixed._design import (
    check_finite,
    offset_columns,
    offset_values,
    required_columns,
)
from estimators.mixed._formula import parse_formula

VARCORR_COLUMNS = ["grp", "var1", "var2", "vcov", "sdcor"]


def varcorr_rows(terms: Sequence[Any], templates: Sequence[np.ndarray], scale: float) -> list:
    """Rows of ``VarCorr`` (grp, var1, var2, vcov, sdcor) for the random-effects terms:
    the variances and standard deviations of each term's columns, then the correlations
    of each pair; ``scale`` multiplies the relative covariance ``T T'`` (sigma squared
    for a linear model, 1 for a generalized one)."""
    rows = []
    for term, T in zip(terms, templates, strict=True):
        covariance = scale * (T @ T.T)
        sd = np.sqrt(np.diag(covariance))
        for i, name in enumerate(term.columns):
            rows.append((term.spec.group, name, None, covariance[i, i], sd[i]))
        for j in range(term.q):
            for i in range(j + 1, term.q):
                product = sd[i] * sd[j]
                correlation = covariance[i, j] / product if product > 0 else np.nan
                rows.append(
                    (
                        term.spec.group,
                        term.columns[j],
                        term.columns[i],
                        covariance[i, j],
                        correlation,
                    )
                )
    return rows


def numeric_column(frame: pd.DataFrame, name: str, role: str) -> np.ndarray:
    """Column ``name`` of X, which a parameter ``role`` names, as floats (NaN where
    missing); errors name the role and the column. Booleans are not numbers here."""
    if name not in frame.columns:
        raise ValueError(f"{role}: column {name!r} not found in X")
    values = frame[name]
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        raise ValueError(f"{role}: column {name!r} is not numeric ({values.dtype})")
    return values.to_numpy(dtype=float, na_value=np.nan)


class FittedMixedModel:
    """Shared methods of MixedLM and MixedGLM once fitted (they set ``_parsed``,
    ``_design_terms``, ``_fixed_spec``, ``_fixed_kept``, ``_category_rows``,
    ``varcorr_``, ``n_levels_`` and ``n_obs_``)."""

    @property
    def _weights_column(self) -> str | None:
        """The ``weights`` column as the frame the model reads names it: by its text, so
        that ``weights=2`` names column 2 of a plain array (``formula_frame``)."""
        name = getattr(self, "weights", None)
        return name if name is None or isinstance(name, str) else str(name)

    @property
    def _offset_column(self) -> str | None:
        """The ``offset`` column by its text, as ``_weights_column``."""
        name = getattr(self, "offset", None)
        return name if name is None or isinstance(name, str) else str(name)

    def _used_columns(self) -> set:
        """Columns of X the formula reads, apart from the response, with those of its
        offsets and the ``offset`` column, if any."""
        used = set(required_columns(self._parsed.fixed) - {self._parsed.response})
        for term in self._design_terms:
            used |= required_columns(term.spec.expr) | set(term.spec.group_cols)
        for expr in self._parsed.offsets:
            used |= offset_columns(expr)
        if self._offset_column is not None:
            used.add(self._offset_column)
        return used

    def _offset_vector(self, frame: pd.DataFrame) -> np.ndarray:
        """The offset of each row of ``frame``: the sum of the formula's ``offset(...)``
        terms and of the column named by the ``offset`` parameter (for models that have
        one), zeros without any; it adds to the linear predictor with coefficient 1,
        in fitting and in prediction alike.

        The formula is parsed from ``self.formula``, so this works before a fit stores
        its parsed form.
        """
        offset = np.zeros(len(frame))
        for expr in parse_formula(self.formula).offsets:
            offset += offset_values(expr, frame)
        column = self._offset_column
        if column is not None:
            values = numeric_column(frame, column, "offset")
            bad = ~np.isfinite(values)
            if bad.any():
                raise ValueError(
                    f"offset: column {column!r} has {int(bad.sum())} missing or infinite value(s)"
                )
            offset += values
        return offset

    def _fixed_matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The fitted fixed-effects columns for new rows, after checking that every
        column the formula uses is there and finite. A categorical level not seen in
        fitting follows ``new_levels``: an error, or the fixed part averaged over the
        fitted levels (``_categories``)."""
        used = self._used_columns()
        missing = [c for c in sorted(used) if c not in frame.columns]
        if missing:
            raise ValueError(f"predict: column(s) {missing} not found in X")
        check_finite(frame, sorted(used))
        matrix = fixed_matrix(
            self._fixed_spec, self._category_rows, frame, self.new_levels, type(self).__name__
        )
        return matrix[:, self._fixed_kept]

    def _included_factors(self, include_random: bool | Sequence[str]) -> set:
        """The grouping factors whose random effects a prediction includes."""
        groups = {term.spec.group for term in self._design_terms}
        if include_random is True:
            return groups
        if include_random is False:
            return set()
        selected = set(include_random)
        unknown = selected - groups
        if unknown:
            raise ValueError(
                f"include_random: unknown grouping factor(s) {sorted(unknown)}; "
                f"the model has {sorted(groups)}"
            )
        return selected

    def _random_effects_lines(self, residual_sd: float | None = None) -> list[str]:
        """The "Random effects:" table of lme4's summary and its counts line; a
        ``Residual`` row when ``residual_sd`` is given."""
        table = [("Groups", "Name", "Variance", "Std.Dev.", "Corr")]
        for term in self._design_terms:
            block = self.varcorr_[
                (self.varcorr_["grp"] == term.spec.group) & self.varcorr_["var1"].isin(term.columns)
            ]
            variances = block[block["var2"].isna()]
            correlations = block[block["var2"].notna()]
            for i, row in enumerate(variances.itertuples()):
                corr = correlations[correlations["var2"] == row.var1]["sdcor"].tolist()
                table.append(
                    (
                        term.spec.group if i == 0 else "",
                        row.var1,
                        f"{row.vcov:.4g}",
                        f"{row.sdcor:.4g}",
                        " ".join(f"{c:.2f}" for c in corr),
                    )
                )
        if residual_sd is not None:
            table.append(("Residual", "", f"{residual_sd**2:.4g}", f"{residual_sd:.4g}", ""))
        widths = [max(len(row[k]) for row in table) for k in range(5)]
        lines = ["Random effects:"]
        lines += [
            " " + " ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in table
        ]
        groups = ", ".join(f"{g}, {n}" for g, n in self.n_levels_.items())
        lines.append(f"Number of obs: {self.n_obs_}, groups:  {groups}")
        return lines
