"""R's ``factor()``, ``as.factor()`` and ``relevel()`` in a formula, as columns of the data.

An lme4 user's first formula is often ``y ~ factor(dose) + (1 | id)``. formulaic has no such
function, and a factor made inside formulaic would be invisible to what hierlmm does with a
model's factors (emmeans' reference grid, Type II/III containment, new data in ``predict``).
So each such call on a column is made a column of its own before anything else reads the
formula: ``factor(dose)`` becomes a categorical column named ``factor(dose)`` (the call as
written, as R names its coefficients) and the formula refers to it in backquotes. Its levels
are fixed at the fit (:class:`Derived` re-encodes new data with them).

R's meaning, call by call:

* ``factor(x)``: the sorted distinct values of ``x`` (numbers in numeric order, labelled as R
  prints them: ``1``, ``2.5``; logicals ``FALSE``, ``TRUE``); of a categorical column, its
  categories in their order, unused ones dropped. ``factor(x, levels = c(...))`` takes that
  order; a value not among them is missing (the row is dropped, as R's NA).
* ``as.factor(x)``: as ``factor(x)``, but a categorical column keeps every category.
* ``relevel(f, ref)``: ``f`` (a column or one of the calls above) with level ``ref`` first, so
  that treatment contrasts compare with it; a number is a position, as in R.

``ordered(x)`` is refused with what to write instead (an ordered categorical column).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hierlmm.errors import DataError, FormulaError

__all__ = ["Derived", "derive_factors"]

_CALL = re.compile(r"(?<![\w.`])(as\.factor|factor|relevel|ordered)\s*\(")


@dataclass(frozen=True)
class Derived:
    """A categorical column made from a formula's call: ``name`` (the call as written), the
    data column ``source`` it is made of, and its ``levels`` (labels, in order)."""

    name: str
    source: str
    levels: tuple[str, ...]

    def apply(self, data: pd.DataFrame) -> pd.Categorical:
        """The column on (new) data, with the fit's levels; other values are missing."""
        labels = _labels(data[self.source])
        labels[~pd.Series(labels).isin(self.levels).to_numpy()] = None
        return pd.Categorical(labels, categories=list(self.levels))


def _label(v) -> str | None:
    """R's ``as.character`` of one value (15 significant digits for a double)."""
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (bool, np.bool_)):
        return "TRUE" if v else "FALSE"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return format(float(v), ".15g")
    return str(v)


def _labels(col: pd.Series) -> np.ndarray:
    values = col.astype(object).to_numpy()
    return np.array([_label(v) for v in values], dtype=object)


def _split_arguments(text: str) -> list[str]:
    """Top-level comma-separated pieces of a call's argument list."""
    out, depth, start, quote = [], 0, 0, None
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"`":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(text[start:i].strip())
            start = i + 1
    out.append(text[start:].strip())
    return [a for a in out if a]


def _closing(text: str, open_at: int) -> int:
    """Index of the parenthesis closing the one at ``open_at``."""
    depth, quote = 0, None
    for i in range(open_at, len(text)):
        ch = text[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
    raise FormulaError(f"formula {text!r}: a parenthesis opened at position {open_at} is not closed")


def _literal(text: str, where: str):
    """A number, string, logical or ``c(...)`` of these, as Python values."""
    text = text.strip()
    if text.startswith("c(") and text.endswith(")"):
        return [_literal(a, where) for a in _split_arguments(text[2:-1])]
    if text in ("TRUE", "FALSE"):
        return text == "TRUE"
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise FormulaError(f"{where}: {text!r} is not a number, a string or c(...) of these") from None
    if not isinstance(value, (int, float, str)):
        raise FormulaError(f"{where}: {text!r} is not a number, a string or c(...) of these")
    return value


def _column(arg: str, data: pd.DataFrame, where: str) -> str:
    name = arg[1:-1] if arg.startswith("`") and arg.endswith("`") else arg
    if name not in data.columns:
        if re.fullmatch(r"[\w.]+", name):
            raise FormulaError(f"{where}: column {name!r} is not in the data; the data has "
                               f"{', '.join(map(str, data.columns))}")
        raise FormulaError(f"{where}: hierlmm's factor(), as.factor() and relevel() take a column of the data, "
                           f"not the expression {arg!r}; compute it as a column (a pandas Categorical) and use "
                           "that column's name")
    return name


def _levels_of(call: str, data: pd.DataFrame, where: str) -> tuple[str, tuple[str, ...]]:
    """The source column and levels of one call (``call`` is its whole text)."""
    m = _CALL.match(call)
    func = m.group(1)
    args = _split_arguments(call[m.end():-1])
    if func == "ordered":
        raise FormulaError(f"{where}: ordered() is not evaluated in a formula; give the column an ordered "
                           "categorical dtype in the data (pd.Categorical(x, categories=[...], ordered=True)), "
                           "which hierlmm codes by R's polynomial contrasts (o.L, o.Q, ...)")
    if not args:
        raise FormulaError(f"{where}: {func}() needs a column")
    first = args[0]
    if func == "relevel":
        if len(args) != 2:
            raise FormulaError(f"{where}: relevel() takes a factor and a reference level: relevel(f, \"b\")")
        ref = _literal(args[1].split("=", 1)[1] if re.match(r"\s*ref\s*=", args[1]) else args[1], where)
        if _CALL.match(first):
            source, levels = _levels_of(first, data, where)
        else:
            source = _column(first, data, where)
            col = data[source]
            if isinstance(col.dtype, pd.CategoricalDtype) and col.cat.ordered:
                raise FormulaError(f"{where}: relevel() is for unordered factors (as R's); {source!r} is ordered")
            levels = _default_levels(col, keep_unused=True)
        if isinstance(ref, str):
            if ref not in levels:
                raise DataError(f"{where}: reference level {ref!r} is not a level of {first} "
                                f"(levels: {', '.join(levels)})")
            k = levels.index(ref)
        elif isinstance(ref, int) and not isinstance(ref, bool) and 1 <= ref <= len(levels):
            k = ref - 1  # R: a number is a position
        else:
            raise DataError(f"{where}: reference level {ref!r} must be a level of {first} or a position 1.."
                            f"{len(levels)} (levels: {', '.join(levels)})")
        return source, (levels[k],) + levels[:k] + levels[k + 1:]
    source = _column(first, data, where)
    given = None
    for a in args[1:]:
        key, eq, value = a.partition("=")
        if eq and key.strip() == "levels":
            given = _literal(value, where)
        else:
            raise FormulaError(f"{where}: hierlmm's {func}() takes a column and levels = c(...), not {a!r}")
    if given is not None:
        levels = tuple(_label(v) for v in (given if isinstance(given, list) else [given]))
        if len(set(levels)) != len(levels):
            raise DataError(f"{where}: levels are repeated")
        return source, levels
    return source, _default_levels(data[source], keep_unused=func == "as.factor")


def _default_levels(col: pd.Series, keep_unused: bool) -> tuple[str, ...]:
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = list(col.cat.categories)
        if not keep_unused:
            present = set(col.dropna().unique())
            cats = [c for c in cats if c in present]
        return tuple(_label(c) for c in cats)
    values = pd.unique(col.dropna())
    try:
        values = sorted(values)
    except TypeError:
        raise DataError(f"column {col.name!r} mixes values that cannot be ordered ({', '.join(map(repr, values[:4]))}"
                        "); make it a pandas Categorical with the levels in the order you want") from None
    labels = [_label(v) for v in values]
    return tuple(dict.fromkeys(labels))


def derive_factors(formula: str, data: pd.DataFrame) -> tuple[str, pd.DataFrame, tuple[Derived, ...]]:
    """The formula with each outermost ``factor()``/``as.factor()``/``relevel()`` call on a
    column replaced by a backquoted name, the data with those columns added, and their
    recipes. A formula without such calls comes back as it is."""
    if not _CALL.search(formula):
        return formula, data, ()
    out, derived, i = [], {}, 0
    for m in _CALL.finditer(formula):
        if m.start() < i:  # inside a call already replaced (relevel(factor(x), ...))
            continue
        end = _closing(formula, m.end() - 1)
        call = formula[m.start():end + 1]
        name = re.sub(r"\s+", " ", call)
        if name not in derived:
            source, levels = _levels_of(call, data, f"formula {formula!r}, {call}")
            if name in data.columns:
                raise DataError(f"the data has a column named {name!r}, which is also a call in the formula; rename it")
            derived[name] = Derived(name, source, levels)
        out.append(formula[i:m.start()] + f"`{name}`")
        i = end + 1
    out.append(formula[i:])
    recipes = tuple(derived.values())
    data = data.assign(**{d.name: d.apply(data) for d in recipes})
    return "".join(out), data, recipes
