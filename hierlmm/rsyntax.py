"""R's meaning of a model formula, given to formulaic.

hierlmm's formulas are lme4's, but formulaic evaluates the code inside a call (``I(x^2)``,
``log(x)``) as Python, where ``^`` is exclusive or, and codes every factor by treatment
contrasts. Four rewrites give a formula formulaic evaluates as R would:

* ``^`` inside a function call is a power (``I(Days^2)`` → ``I(Days**2)``); at the formula's
  top level it keeps its formula meaning (``(a + b)^2``: all interactions up to order 2).
* An ordered factor (pandas ``Categorical(ordered=True)``, R's ``ordered``) used as a term gets
  R's default for ordered factors, orthogonal polynomial contrasts (``contr.poly``), with R's
  coefficient names ``o.L, o.Q, o.C, o^4, …``. ``C(o, contr.treatment)`` still overrides.
* A logical (boolean) column used as a term is a factor with levels FALSE, TRUE, as R codes
  it (``(0 + late | g)`` has two columns, ``lateFALSE`` and ``lateTRUE``).
* Functions R users write that formulaic lacks or spells differently are supplied by
  :func:`formula_context`: ``sqrt``, and ``log(x, base)``.

R's names of the resulting columns are :mod:`hierlmm.rnames`'.
"""

from __future__ import annotations

import functools
import numbers
import re

import numpy as np
import pandas as pd

__all__ = ["to_formulaic", "formula_context", "numeric_view"]

_IDENT = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")
# formulaic names its intercept "Intercept" and reads a data column of that name as the
# intercept's values: a column named Intercept reaches formulaic under this name instead
INTERCEPT_COLUMN = "Intercept_column_"
_POLY = ", contr.poly)"


def _call_depths(text: str) -> list[bool]:
    """For each character: is it inside the parentheses of a function call?"""
    inside, stack = [], []
    for i, ch in enumerate(text):
        if ch == "(":
            j = i - 1
            while j >= 0 and text[j] == " ":
                j -= 1
            stack.append(j >= 0 and (text[j].isalnum() or text[j] in "_."))
        inside.append(any(stack))
        if ch == ")" and stack:
            stack.pop()
    return inside


def python_attribute(name: str) -> bool:
    """``np.pi``, ``contr.treatment``: a dotted name formulaic evaluates as an attribute of
    a namespace it knows, not an R column name such as ``my.var``."""
    return name.split(".", 1)[0] in ("np", "numpy", "contr")


def to_formulaic(expr: str, ordered: set[str] = frozenset(), logical: set[str] = frozenset()) -> str:
    """Rewrite an R formula (or one side of it) so formulaic evaluates it as R would.

    ``ordered`` columns used as terms get polynomial contrasts; ``logical`` (boolean) columns
    used as terms are factors with levels FALSE, TRUE, as R codes a logical in a formula
    (``C(late, contr.treatment)``; inside a call, ``I(2 * late)``, they stay 0/1 numbers).

    A bare R name with a dot (``my.var``, not followed by ``(``) is backquoted, which
    formulaic reads as a column (for Python it would be an attribute access); quoted strings
    (``Q('my.var')``) are copied as they are."""
    inside = _call_depths(expr)
    response_end = max(expr.find("~"), 0)  # the response is never recoded
    inside = [True] * response_end + inside[response_end:]
    out, i = [], 0
    while i < len(expr):
        ch = expr[i]
        if ch in "'\"":  # a string literal, e.g. formulaic's Q('my.var')
            j = expr.find(ch, i + 1)
            j = len(expr) - 1 if j < 0 else j
            out.append(expr[i : j + 1])
            i = j + 1
            continue
        if ch == "`":  # a backquoted name: R's way of quoting a column name
            j = expr.find("`", i + 1)
            j = len(expr) - 1 if j < 0 else j
            quoted = expr[i : j + 1]
            name = quoted[1:-1]
            if name == "Intercept":
                quoted = name = INTERCEPT_COLUMN
            out.append(_as_factor(quoted, name, ordered, logical) if not inside[i] else quoted)
            i = j + 1
            continue
        if expr.startswith("%in%", i):  # R's nesting operator: the columns of a:b
            out.append(":")
            i += 4
            continue
        if ch == "^" and inside[i]:
            out.append("**")
            i += 1
            continue
        m = _IDENT.match(expr, i)
        if m and (i == 0 or not (expr[i - 1].isalnum() or expr[i - 1] in "_.")):
            name = m.group(0)
            rest = expr[m.end() :].lstrip()
            if name == "Intercept" and not rest.startswith("("):
                name = INTERCEPT_COLUMN
            dotted = "." in name and not python_attribute(name) and not rest.startswith("(")
            quoted = f"`{name}`" if dotted else name
            if rest.startswith("(") and name in R_DOTTED:  # as.numeric(x): `as` is Python's keyword
                quoted = R_DOTTED[name]
            out.append(_as_factor(quoted, name, ordered, logical)
                       if not inside[i] and not rest.startswith("(") else quoted)
            i = m.end()
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _as_factor(quoted: str, name: str, ordered, logical) -> str:
    """A bare column name as formulaic should read it: an ordered factor with R's polynomial
    contrasts, a logical as a factor (FALSE the reference), anything else as it is."""
    if name in ordered:
        return f"C({quoted}{_POLY}"
    if name in logical:
        return f"C({quoted}, contr.treatment)"
    return quoted


def _log(x, base=np.e):
    """R's ``log(x, base)``."""
    x = np.asarray(x, dtype=float)
    return np.log(x) if base == np.e else np.log(x) / np.log(base)


def _as_numeric(x):
    """R's ``as.numeric`` of a numeric or logical column (of a factor R gives its codes, a
    trap: refused)."""
    x = pd.Series(x) if not isinstance(x, pd.Series) else x
    if isinstance(x.dtype, pd.CategoricalDtype) or not (pd.api.types.is_numeric_dtype(x) or pd.api.types.is_bool_dtype(x)):
        raise TypeError(f"as.numeric() of the non-numeric column {x.name!r}: R would give a factor's codes or NA; "
                        "convert the column in the data")
    return x.to_numpy(dtype=float, na_value=np.nan)


def _as_integer(x):
    """R's ``as.integer``: truncation towards 0 (kept as double, as hierlmm's numbers are)."""
    return np.trunc(_as_numeric(x))


def _c(*values):
    """R's ``c(...)`` of literals (``factor(x, levels = c(1, 2))`` is read by hierlmm.rfactors)."""
    return list(values)


def _pmin(*xs):
    """R's ``pmin``: the elementwise minimum of any number of vectors."""
    return functools.reduce(np.minimum, [np.asarray(x, dtype=float) for x in xs])


def _pmax(*xs):
    """R's ``pmax``: the elementwise maximum of any number of vectors."""
    return functools.reduce(np.maximum, [np.asarray(x, dtype=float) for x in xs])


def _round(x, digits=0):
    """R's ``round(x, digits)``: to even at a tie (IEC 60559), as numpy's."""
    return np.round(np.asarray(x, dtype=float), int(digits))


# R's elementwise mathematics under R's names (numpy's functions: the same results)
_R_MATH = {"abs": np.abs, "sign": np.sign, "floor": np.floor, "ceiling": np.ceil, "trunc": np.trunc,
           "round": _round, "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin, "acos": np.arccos,
           "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh, "pmin": _pmin, "pmax": _pmax}

# R's function names with a dot, and the names formulaic is given for them
R_DOTTED = {"as.numeric": "as_numeric", "as.integer": "as_integer"}


def formula_context() -> dict:
    """Functions formulaic lacks that R formulas use: ``sqrt``, ``log`` with a base, ``log1p``,
    ``expm1``, ``as.numeric``, ``as.integer``, ``c``, natural splines ``ns``, R's names of
    elementwise mathematics (``ceiling``, ``asin``, ``pmin``, …); R's ``TRUE``, ``FALSE``."""
    from hierlmm.splines import ns  # imports formulaic: only when a formula is evaluated

    return {**_R_MATH, "ns": ns, "TRUE": True, "FALSE": False, "sqrt": np.sqrt, "log": _log, "log1p": np.log1p,
            "expm1": np.expm1, "as_numeric": _as_numeric, "as_integer": _as_integer, "c": _c}


_FACTOR_ARGUMENT = re.compile(r"\bC\(\s*`?([^,`()]+?)`?\s*[,)]")


def number_objects(col: pd.Series) -> bool:
    """A column of Python objects that are all real numbers (Decimal, Fraction, int, float;
    missing values aside): R's numeric, as :func:`numeric_view` reads it."""
    if col.dtype != object:
        return False
    values = col.dropna()
    return bool(len(values)) and all(isinstance(v, numbers.Number) and not isinstance(v, (bool, np.bool_, complex))
                                     for v in values)


def numeric_view(data: pd.DataFrame, formula: str) -> pd.DataFrame:
    """``data`` as formulaic should evaluate ``formula`` on it, with R's arithmetic: integer
    columns (numpy's of any width, unsigned, pandas' nullable, pyarrow's) as float64, so
    ``I(k^2)`` of an int8, ``I(a*b)`` of int32s or ``I(t^2)`` of epoch milliseconds do not wrap
    around (R promotes integers to double); a column that ``formula`` codes as a factor
    (``C(k)``) as int64 instead, so its levels keep their names (``C(k)[T.2]``, not ``2.0``).
    Nullable and pyarrow floats become float64 too, and pandas' string dtypes (``"string"``,
    pandas 3's ``str``) Python strings, which formulaic codes as a factor (it passes a
    ``StringDtype`` column through as numbers). Other columns are shared, not copied."""
    factors = {m.strip() for m in _FACTOR_ARGUMENT.findall(formula)}
    if "Intercept" in data.columns and INTERCEPT_COLUMN not in data.columns:
        data = data.assign(**{INTERCEPT_COLUMN: data["Intercept"]})  # see INTERCEPT_COLUMN
    changes = {}
    for c in data.columns:
        dtype = data[c].dtype
        if pd.api.types.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
            continue
        if dtype == object and c not in factors:  # Python numbers (Decimal, Fraction, int): as R's numeric
            if number_objects(data[c]):
                changes[c] = pd.to_numeric(data[c].astype(float))
            continue
        if pd.api.types.is_string_dtype(dtype) and dtype != object:  # formulaic reads pandas' strings as numbers
            changes[c] = data[c].astype(object)
            continue
        integer = pd.api.types.is_integer_dtype(dtype)
        if integer and c in factors and not data[c].isna().any():
            if dtype != np.int64:
                changes[c] = data[c].to_numpy(dtype=np.int64)
        elif integer or (pd.api.types.is_float_dtype(dtype) and dtype != np.float64):
            changes[c] = data[c].to_numpy(dtype=float, na_value=np.nan)
    return data.assign(**changes) if changes else data
