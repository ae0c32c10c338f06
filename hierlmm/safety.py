"""What a formula may contain: a formula is data, never code.

formulaic evaluates the inside of a call (``I(x^2)``, ``log(x)``) as Python, and so would run
``I(__import__('os').system('…'))`` or ``I(open('f', 'w').write('x'))`` while merely listing
a formula's variables. R and patsy evaluate code too; hierlmm does not: every formula is
checked here, before formulaic sees it, against a small grammar of what a model formula needs.

A formula may contain
* names (the data's columns, plain, dotted as R writes them, or in backquotes), numbers,
  string literals (``Q('my var')``, ``C(f, levels=['a', 'b'])``), lists of these;
* R's operators ``~ + - * / : ^ | || %in%``, arithmetic and comparisons inside calls,
  ``=`` for a call's keyword arguments;
* calls of the functions in :data:`FUNCTIONS` (R's and formulaic's), ``np.f`` / ``numpy.f``
  for a numpy ufunc ``f`` or one of :data:`NUMPY_EXTRA`, and ``contr.*`` (contrasts); numpy's
  constants (``np.pi``, ``np.e``).

It may not contain attribute access other than those (``x.__class__``, ``f(x).attr``),
names with a double underscore, subscripts (``x[0]``), calls of anything but a named function
(``(open)('f')``), ``lambda``, f-strings, ``{}``, ``;``, ``:=``, ``@`` or backslashes. A formula
that does not fit raises :class:`~hierlmm.errors.FormulaError` naming the piece at fault.
"""

from __future__ import annotations

import re

import numpy as np

from hierlmm.errors import FormulaError

__all__ = ["FUNCTIONS", "NUMPY_EXTRA", "check_formula"]

# R's and formulaic's functions a model formula may call
FUNCTIONS = frozenset({
    # formulaic's transforms and R's
    "I", "C", "Q", "offset", "poly", "scale", "center", "standardize", "bs", "cr", "cs", "cc", "te", "lag",
    "hashed", "factor", "as.factor", "ordered", "relevel", "as.numeric", "as.integer", "c", "ns",
    # elementwise mathematics
    "log", "log2", "log10", "log1p", "exp", "exp2", "exp10", "expm1", "sqrt", "abs", "sign", "floor", "ceiling",
    "round", "trunc", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "pmin", "pmax",
    "Treatment", "Sum", "Helmert", "Diff", "Poly",
    # glmmTMB's covariance structures around a random-effects term (hierlmm.covariance; the
    # formula parser allows them only there)
    "us", "diag", "homdiag", "homcs", "ar1", "toep",
})
# numpy functions beyond the ufuncs (``np.log`` etc. are ufuncs)
NUMPY_EXTRA = frozenset({"round", "clip", "where", "around", "log1p", "expm1", "abs", "absolute"})
# a keyword is harmless as a column name (Oats' ``yield``, a school's ``class``): Python code
# needs a call to do anything, and calls are checked; ``lambda`` makes a function of code
_KEYWORDS = {"lambda"}
_IDENT = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")
_FORBIDDEN = {"{": "'{'", "}": "'}'", ";": "';'", "@": "'@'", "\\": "a backslash", "$": "'$'", "!": "'!'"}


def _numpy_function(name: str) -> bool:
    """A numpy ufunc, one of :data:`NUMPY_EXTRA`, or a constant (``np.pi``, ``np.e``)."""
    func = getattr(np, name, None)
    return isinstance(func, (np.ufunc, float)) or name in NUMPY_EXTRA


def _refuse(formula: str, piece: str, why: str):
    raise FormulaError(f"formula {formula!r}: {piece} is not allowed ({why}); a formula holds column names, "
                       "numbers and the functions R's and formulaic's formulas use (see hierlmm.safety)")


def check_formula(formula: str) -> None:
    """Refuse a formula that could run code (module doc); return quietly otherwise."""
    if not isinstance(formula, str):
        raise FormulaError(f"a formula must be a string, got {type(formula).__name__}")
    text, i, prev = formula, 0, ""  # prev: the last significant token's kind
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "'\"":
            if prev == "name":
                _refuse(formula, f"the string prefix before {text[i:i + 12]!r}", "f-strings and prefixed strings run code")
            j = text.find(ch, i + 1)
            if j < 0:
                raise FormulaError(f"formula {formula!r}: a string opened at position {i} is not closed")
            if "__" in text[i:j]:
                _refuse(formula, text[i : j + 1], "a string with a double underscore names Python's internals")
            i, prev = j + 1, "value"
            continue
        if ch == "`":
            j = text.find("`", i + 1)
            if j < 0:
                raise FormulaError(f"formula {formula!r}: a backquoted name opened at position {i} is not closed")
            if "__" in text[i + 1 : j] and text[i + 1 : j].strip().startswith("__"):
                _refuse(formula, text[i : j + 1], "names with a leading double underscore")
            i, prev = j + 1, "value"
            continue
        if ch == "%":  # R's %in% (and only it)
            j = text.find("%", i + 1)
            op = text[i : j + 1] if j > 0 else text[i:]
            if op != "%in%":
                _refuse(formula, repr(op), "of R's %op% operators only %in% has a formula meaning")
            i, prev = j + 1, "op"
            continue
        if ch in _FORBIDDEN:
            _refuse(formula, _FORBIDDEN[ch], "not part of a model formula")
        if text.startswith(":=", i):
            _refuse(formula, "':='", "assignment")
        if ch.isdigit() or (ch == "." and text[i + 1 : i + 2].isdigit()):
            m = re.compile(r"[0-9.]+(?:[eE][+-]?[0-9]+)?[jJ]?").match(text, i)
            i, prev = m.end(), "value"
            continue
        if ch == "." and prev in ("close", "value", "name"):  # (x).attr, 'a'.join, x .attr
            _refuse(formula, repr(text[i:i + 12]), "attribute access on an expression")
        m = _IDENT.match(text, i)
        if m:
            name = m.group(0)
            if "__" in name:
                _refuse(formula, repr(name), "names with a double underscore reach Python's internals")
            if name in _KEYWORDS:
                _refuse(formula, f"the keyword {name!r}", "Python code")
            call = text[m.end():].lstrip().startswith("(")
            head, _, attr = name.partition(".")
            if head in ("np", "numpy") and attr:
                if not _numpy_function(attr):
                    _refuse(formula, repr(name), "only numpy's elementwise functions")
            elif head == "contr" and attr:
                pass
            elif call and name not in FUNCTIONS:
                _refuse(formula, f"the call {name}(...)", "not one of the functions a formula may use")
            i, prev = m.end(), "name"
            continue
        if ch == "(" and prev in ("close", "value"):  # (open)('f'): a call of an expression
            _refuse(formula, f"the call {text[max(0, i - 12):i + 1]!r}", "only named functions may be called")
        if ch == "[" and prev in ("name", "close", "value"):
            _refuse(formula, f"the subscript {text[i:i + 12]!r}", "indexing reaches Python objects")
        prev = "close" if ch in ")]" else "op"
        i += 1
