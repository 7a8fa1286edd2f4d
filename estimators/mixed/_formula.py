"""lme4 formula syntax: split a formula into its fixed part and random-effects terms.

The fixed part is handed to formulaic (treatment contrasts, interactions); this module
only finds the parenthesised random-effects terms ``(expr | group)`` and expands the
shorthands lme4 accepts: nested ``(1 | a/b)`` is ``(1 | a) + (1 | b:a)``, and the
uncorrelated ``(1 + x || g)`` is ``(1 | g) + (0 + x | g)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class FormulaError(ValueError):
    """A formula that cannot be parsed; the message quotes the offending part."""


@dataclass(frozen=True)
class RandomTermSpec:
    """One ``(expr | group)`` term.

    Attributes
    ----------
    expr : str
        The left-hand side, e.g. ``"1 + Days"`` or ``"0 + x"``.
    group : str
        The grouping factor as lme4 names it, e.g. ``"Subject"`` or ``"cask:batch"``.
    group_cols : tuple of str
        The data columns whose combination forms the factor.
    """

    expr: str
    group: str
    group_cols: tuple[str, ...]


@dataclass(frozen=True)
class ParsedFormula:
    """A formula split into its parts."""

    response: str | None
    fixed: str
    random: tuple[RandomTermSpec, ...]


def _split_top_level(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside parentheses."""
    parts, depth, current = [], 0, []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise FormulaError(f"unbalanced ')' in {text!r}")
        if depth == 0 and text.startswith(separator, i):
            parts.append("".join(current))
            current = []
            i += len(separator)
            continue
        current.append(char)
        i += 1
    if depth != 0:
        raise FormulaError(f"unbalanced '(' in {text!r}")
    parts.append("".join(current))
    return parts


def _group_columns(group: str) -> tuple[str, ...]:
    columns = tuple(part.strip() for part in group.split(":"))
    for column in columns:
        if not re.fullmatch(r"[A-Za-z_.][A-Za-z0-9_.]*", column):
            raise FormulaError(f"grouping factor {group!r}: {column!r} is not a column name")
    return columns


def _expand_term(expr: str, group: str, uncorrelated: bool) -> list[RandomTermSpec]:
    expr = expr.strip()
    group = group.strip()
    if not expr:
        raise FormulaError(f"random-effects term '( | {group})' has no left-hand side")
    if not group:
        raise FormulaError(f"random-effects term '({expr} | )' has no grouping factor")
    # Nesting a/b/c means a, b within a, c within b within a (lme4 names them c:b:a).
    nested = [part.strip() for part in group.split("/")]
    groups = [":".join(reversed(nested[: k + 1])) for k in range(len(nested))]
    exprs = [expr]
    if uncorrelated:
        pieces = [piece.strip() for piece in expr.split("+")]
        no_intercept = any(piece == "0" or piece == "-1" for piece in pieces)
        variables = [piece for piece in pieces if piece not in ("0", "1", "-1")]
        exprs = ([] if no_intercept else ["1"]) + [f"0 + {v}" for v in variables]
    return [
        RandomTermSpec(expr=e, group=g, group_cols=_group_columns(g)) for g in groups for e in exprs
    ]


def parse_formula(formula: str) -> ParsedFormula:
    """Split an lme4 formula into response, fixed part and random-effects terms.

    Parameters
    ----------
    formula : str
        e.g. ``"Reaction ~ Days + (Days | Subject)"``; the response is optional.

    Returns
    -------
    ParsedFormula

    Examples
    --------
    >>> parsed = parse_formula("y ~ x + (1 | batch/cask)")
    >>> parsed.fixed, [t.group for t in parsed.random]
    ('1 + x', ['batch', 'cask:batch'])
    """
    if not isinstance(formula, str) or not formula.strip():
        raise FormulaError(f"formula: expected a string like 'y ~ x + (1 | g)', got {formula!r}")
    sides = _split_top_level(formula, "~")
    if len(sides) > 2:
        raise FormulaError(f"formula {formula!r} has more than one '~'")
    response = sides[0].strip() if len(sides) == 2 else None
    if response == "":
        response = None
    fixed_parts: list[str] = []
    random: list[RandomTermSpec] = []
    for part in _split_top_level(sides[-1], "+"):
        text = part.strip()
        if not text:
            raise FormulaError(f"formula {formula!r} has an empty term")
        inner = text[1:-1] if text.startswith("(") and text.endswith(")") else None
        if inner is not None and "|" in inner and len(_split_top_level(inner, "|")) > 1:
            uncorrelated = len(_split_top_level(inner, "||")) == 2
            separator = "||" if uncorrelated else "|"
            pieces = _split_top_level(inner, separator)
            if len(pieces) != 2:
                raise FormulaError(f"random-effects term {text!r} needs exactly one '|'")
            random.extend(_expand_term(pieces[0], pieces[1], uncorrelated))
        else:
            fixed_parts.append(text)
    fixed = " + ".join(fixed_parts) if fixed_parts else "1"
    # An explicit 0/-1 removes the intercept; otherwise it is there, as in R.
    if not any(p.strip() in ("0", "-1", "1") for p in fixed_parts):
        fixed = "1 + " + fixed if fixed_parts else "1"
    return ParsedFormula(response=response, fixed=fixed, random=tuple(random))
