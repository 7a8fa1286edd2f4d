"""lme4 formula syntax: split a formula into its fixed part and random-effects terms.

The fixed part is handed to formulaic (treatment contrasts, interactions); this module
only finds the parenthesised random-effects terms ``(expr | group)`` and expands the
shorthands lme4 accepts: nested ``(1 | a/b)`` is ``(1 | a) + (1 | b:a)``, and the
uncorrelated ``(1 + x || g)`` is ``(1 | g) + (0 + x | g)``. A column whose name is not a
bare identifier ("user id", "user-id") is named in backticks, as in R: ``(1 | `user id`)``.
"""

from __future__ import annotations

import functools
import keyword
import re
from dataclasses import dataclass

# A grouping column named without backticks: letters (any alphabet), digits, '_' and
# '.' (R's syntactic names may hold dots), not starting with a digit.
_BARE_GROUP = re.compile(r"(?!\d)[\w.]+")
_QUOTED = re.compile(r"`([^`]+)`")


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
        The grouping factor as lme4 names it, e.g. ``"Subject"``, ``"cask:batch"`` or
        ``"user id"`` (a single column by its bare name; columns of an interaction in
        backticks where they need them, as R prints them).
    group_cols : tuple of str
        The data columns whose combination forms the factor.
    """

    expr: str
    group: str
    group_cols: tuple[str, ...]


@dataclass(frozen=True)
class ParsedFormula:
    """A formula split into its parts.

    Attributes
    ----------
    response : str or None
        The response column, if the formula names one.
    fixed : str
        The fixed part as formulaic reads it, without its ``offset(...)`` terms.
    random : tuple of RandomTermSpec
        The random-effects terms.
    offsets : tuple of str
        The expressions inside the fixed part's ``offset(...)`` terms, e.g.
        ``("log(exposure)",)``; they add up, with coefficient 1, to the linear predictor.
    """

    response: str | None
    fixed: str
    random: tuple[RandomTermSpec, ...]
    offsets: tuple[str, ...] = ()


def quote_name(name: str) -> str:
    """A column name as a formula names it: bare when it is an identifier that both
    formulaic and lme4 read as one column, otherwise in backticks.

    Parameters
    ----------
    name : str

    Returns
    -------
    str

    Examples
    --------
    >>> quote_name("user"), quote_name("user id"), quote_name("user.id")
    ('user', '`user id`', '`user.id`')
    """
    name = str(name)
    if "`" in name:
        raise FormulaError(f"column name {name!r} holds a backtick and cannot be quoted")
    if name.isidentifier() and not keyword.iskeyword(name):
        return name
    return f"`{name}`"


_OFFSET = re.compile(r"offset\s*\(")


def offset_expression(term: str) -> str | None:
    """The expression inside an ``offset(...)`` term, or None for any other term.

    Examples
    --------
    >>> offset_expression("offset(log(exposure))"), offset_expression("x")
    ('log(exposure)', None)
    """
    term = term.strip()
    opening = _OFFSET.match(term)
    if opening is None or not term.endswith(")"):
        return None
    # The parenthesis opened by "offset(" must close at the end: "offset(a) * b" is not one.
    depth, i = 1, opening.end()
    while i < len(term) and depth:
        if term[i] in "`'\"":
            i = _skip_quoted(term, i)
            continue
        depth += {"(": 1, ")": -1}.get(term[i], 0)
        i += 1
    if depth or i != len(term):
        return None
    inner = term[opening.end() : -1].strip()
    if not inner:
        raise FormulaError(f"{term!r}: offset() needs an expression, e.g. offset(log(n))")
    return inner


def split_offsets(expr: str) -> tuple[str, tuple[str, ...]]:
    """A fixed-part expression without its ``offset(...)`` terms, and their expressions.

    Examples
    --------
    >>> split_offsets("1 + x + offset(log(n)) + offset(z)")
    ('1 + x', ('log(n)', 'z'))
    """
    kept, offsets = [], []
    for part in _split_top_level(expr, "+"):
        inner = offset_expression(part) if part.strip() else None
        if inner is None:
            kept.append(part.strip())
        else:
            offsets.append(inner)
    return " + ".join(kept), tuple(offsets)


def _skip_quoted(text: str, i: int) -> int:
    """The index after the quoted span (backticks or a string literal) starting at i."""
    end = text.find(text[i], i + 1)
    if end < 0:
        raise FormulaError(f"unclosed {text[i]} in {text!r}")
    return end + 1


def _split_top_level(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside parentheses and outside backticks or quotes."""
    parts, depth, start = [], 0, 0
    i = 0
    while i < len(text):
        char = text[i]
        if char in "`'\"":
            i = _skip_quoted(text, i)
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise FormulaError(f"unbalanced ')' in {text!r}")
        if depth == 0 and text.startswith(separator, i):
            parts.append(text[start:i])
            i += len(separator)
            start = i
            continue
        i += 1
    if depth != 0:
        raise FormulaError(f"unbalanced '(' in {text!r}")
    parts.append(text[start:])
    return parts


def _unquote(text: str) -> str:
    """A name without its backticks, if it has them."""
    text = text.strip()
    quoted = _QUOTED.fullmatch(text)
    return quoted.group(1) if quoted else text


def _column_name(text: str, group: str) -> str:
    """One column of a grouping factor: a bare name or a name in backticks."""
    text = text.strip()
    if _QUOTED.fullmatch(text) or _BARE_GROUP.fullmatch(text):
        return _unquote(text)
    quoted = re.fullmatch(r"Q\(\s*(['\"])(.+)\1\s*\)", text)  # patsy's quoting
    name = quoted.group(2) if quoted else text
    hint = f"; write it in backticks: `{name}`" if name and "`" not in name else ""
    raise FormulaError(f"grouping factor {group!r}: {text!r} is not a column name{hint}")


def _factor_name(columns: tuple[str, ...]) -> str:
    """lme4's name of a grouping factor: a column's bare name, or the columns of an
    interaction joined with ':', each in backticks where R's deparse puts them."""
    if len(columns) == 1:
        return columns[0]
    return ":".join(c if _BARE_GROUP.fullmatch(c) else f"`{c}`" for c in columns)


def _expand_term(expr: str, group: str, uncorrelated: bool) -> list[RandomTermSpec]:
    expr = expr.strip()
    group = group.strip()
    if not expr:
        raise FormulaError(f"random-effects term '( | {group})' has no left-hand side")
    if not group:
        raise FormulaError(f"random-effects term '({expr} | )' has no grouping factor")
    # Nesting a/b/c means a, b within a, c within b within a (lme4 names them c:b:a).
    nested = [
        [_column_name(part, group) for part in _split_top_level(level, ":")]
        for level in _split_top_level(group, "/")
    ]
    groups = [
        tuple(column for level in reversed(nested[: k + 1]) for column in level)
        for k in range(len(nested))
    ]
    exprs = [expr]
    if uncorrelated:
        pieces = [piece.strip() for piece in _split_top_level(expr, "+")]
        no_intercept = any(piece == "0" or piece == "-1" for piece in pieces)
        variables = [piece for piece in pieces if piece not in ("0", "1", "-1")]
        exprs = ([] if no_intercept else ["1"]) + [f"0 + {v}" for v in variables]
    return [
        RandomTermSpec(expr=e, group=_factor_name(columns), group_cols=columns)
        for columns in groups
        for e in exprs
    ]


def parse_formula(formula: str) -> ParsedFormula:
    """Split an lme4 formula into response, fixed part and random-effects terms.

    Parameters
    ----------
    formula : str
        e.g. ``"Reaction ~ Days + (Days | Subject)"``; the response is optional. Names
        that are not bare identifiers go in backticks, as in R: ``(1 | `user id`)``.

    Returns
    -------
    ParsedFormula

    Examples
    --------
    >>> parsed = parse_formula("y ~ x + (1 | batch/cask)")
    >>> parsed.fixed, [t.group for t in parsed.random]
    ('1 + x', ['batch', 'cask:batch'])
    >>> parse_formula("`click rate` ~ `user-x` + (1 | `user id`)").random[0].group_cols
    ('user id',)
    >>> parse_formula("y ~ x + offset(log(n)) + (1 | g)").offsets
    ('log(n)',)
    """
    if not isinstance(formula, str) or not formula.strip():
        raise FormulaError(f"formula: expected a string like 'y ~ x + (1 | g)', got {formula!r}")
    return _parse_formula(formula)


# A sweep fits one formula thousands of times: parse each once. The result is frozen,
# so sharing it between fits cannot change one fit from another.
@functools.lru_cache(maxsize=256)
def _parse_formula(formula: str) -> ParsedFormula:
    sides = _split_top_level(formula, "~")
    if len(sides) > 2:
        raise FormulaError(f"formula {formula!r} has more than one '~'")
    response = _unquote(sides[0]) if len(sides) == 2 else None
    if response == "":
        response = None
    fixed_parts: list[str] = []
    random: list[RandomTermSpec] = []
    offsets: list[str] = []
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
        elif (offset := offset_expression(text)) is not None:
            offsets.append(offset)
        else:
            fixed_parts.append(text)
    fixed = " + ".join(fixed_parts) if fixed_parts else "1"
    # An explicit 0/-1 removes the intercept; otherwise it is there, as in R.
    if not any(p.strip() in ("0", "-1", "1") for p in fixed_parts):
        fixed = "1 + " + fixed if fixed_parts else "1"
    return ParsedFormula(
        response=response, fixed=fixed, random=tuple(random), offsets=tuple(offsets)
    )
