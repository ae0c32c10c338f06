"""The model matrices of plain columns, without formulaic (issue 28: no per-call overhead).

Most formulas of small models name columns and nothing else: ``Reaction ~ Days``,
``y ~ 1 + x + f``, ``(1 + Days | Subject)``. formulaic parses and materialises such a formula in
about a millisecond per piece; these functions build the same matrices in microseconds, and
return ``None`` for anything else (calls, interactions, ``-``, dotted or backquoted names,
ordered factors, columns of numbers stored as objects), which then goes through formulaic.

What "the same" means is what formulaic gives on the same frame (the tests compare the two on
random frames): an intercept column unless the expression has ``0`` or ``-1``; a numeric column
as itself (integers as doubles, R's arithmetic); a factor in treatment coding (its first level
the reference) named ``f`` + level as R names it (``SexFemale``, a logical's ``lateTRUE``), except
the first factor of an expression without an intercept, which gets one indicator per level
(R's and formulaic's full-rank rule for main effects).
"""

from __future__ import annotations

import keyword
import re

import numpy as np
import pandas as pd

__all__ = ["plain_columns", "plain_fixed", "plain_matrix", "plain_names", "plain_variables"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MINUS_ONE = re.compile(r"-\s*1(?![\w.])")


def plain_names(expr: str) -> tuple[list[str], bool] | None:
    """The column names of ``expr`` and whether it has an intercept, when ``expr`` is a sum of
    plain names and ``1`` / ``0`` / ``-1`` (no calls, interactions, other ``-``, ``.``, quotes);
    else ``None``.
    ``"1 + Days"`` → ``(["Days"], True)``; ``"0 + f"`` → ``(["f"], False)``."""
    names, ones, zeros = [], 0, 0
    for tok in _MINUS_ONE.sub("+ 0", expr).strip().removeprefix("+").split("+"):
        tok = tok.strip()
        if tok in ("0", "1"):
            ones, zeros = ones + (tok == "1"), zeros + (tok == "0")
        elif (_NAME.match(tok) and tok not in names and tok not in ("Intercept", "C", "I", "Q")
              and not keyword.iskeyword(tok)):
            names.append(tok)
        else:
            return None
    if ones and zeros:
        return None
    return names, not zeros


def _kind(col: pd.Series) -> str | None:
    """``"numeric"``, ``"factor"`` (unordered categorical of strings, strings, booleans) or
    ``None`` (formulaic decides: ordered factors, numbers as objects or categories, …)."""
    dtype = col.dtype
    if pd.api.types.is_bool_dtype(dtype):  # both values present (formulaic decides a constant one)
        return "factor" if dtype == bool and 0 < int(col.sum()) < len(col) else None
    if isinstance(dtype, pd.CategoricalDtype):
        ok = not dtype.ordered and all(isinstance(c, str) for c in dtype.categories)
        return "factor" if ok else None
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        return "numeric"
    if dtype == object or pd.api.types.is_string_dtype(dtype):
        return "factor" if all(isinstance(v, str) for v in pd.unique(col)) else None
    return None


def _factor(col: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes and levels of a factor column in R's order (a categorical's own, else sorted;
    a logical's ``FALSE``, ``TRUE``)."""
    if col.dtype == bool:
        return col.to_numpy().astype(np.intp), ["FALSE", "TRUE"]
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.cat.codes.to_numpy().astype(np.intp), [str(c) for c in col.cat.categories]
    levels, codes = np.unique(col.to_numpy(dtype=object).astype(str), return_inverse=True)
    return codes.astype(np.intp), levels.tolist()


def plain_matrix(expr: str, frame: pd.DataFrame, factors: bool = True) -> tuple[np.ndarray, list[str]] | None:
    """``(X, R's column names)`` of ``expr`` on ``frame`` (complete rows, unused categories
    dropped), or ``None`` where formulaic is needed (with ``factors=False``, also wherever
    ``expr`` names a factor). A factor with fewer than two levels, and names R would give two
    columns, are left to formulaic (and its messages)."""
    plain = plain_names(expr)
    if plain is None:
        return None
    names, intercept = plain
    if not names and not intercept:
        return None
    kinds = []
    for name in names:
        if name not in frame.columns:
            return None
        kinds.append(_kind(frame[name]))
        if kinds[-1] is None or (kinds[-1] == "factor" and not factors):
            return None
    n = len(frame)
    labels = ["(Intercept)"] if intercept else []
    parts = []  # (its column in X, the values) or (its first column in X, codes, the first code used)
    full = not intercept  # the first factor of an expression without intercept: every level
    for name, kind in zip(names, kinds):
        if kind == "numeric":
            parts.append((len(labels), frame[name].to_numpy(dtype=float, na_value=np.nan)))
            labels.append(name)
            continue
        codes, levels = _factor(frame[name])
        if len(levels) < 2:
            return None
        first = 0 if full else 1
        full = False
        parts.append((len(labels), codes, first))
        labels += [name + level for level in levels[first:]]
    if len(set(labels)) < len(labels):
        return None
    X = np.zeros((n, len(labels)), order="F")  # column-major, as the cross-product reads it
    if intercept:
        X[:, 0] = 1.0
    rows = np.arange(n)
    for part in parts:
        if len(part) == 2:
            X[:, part[0]] = part[1]
        else:
            at, codes, first = part
            used = codes >= first
            X[rows[used], at + codes[used] - first] = 1.0
    return X, labels


def plain_columns(expr: str, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]] | None:
    """A random term's ``Z``: :func:`plain_matrix` of plain numeric columns only (a factor
    left of the bar goes through formulaic), the intercept-only ``(1 | g)`` as a read-only
    column of ones that takes no memory."""
    if plain_names(expr) == ([], True):
        return np.broadcast_to(np.ones((1, 1)), (len(frame), 1)), ["(Intercept)"]
    return plain_matrix(expr, frame, factors=False)


def plain_variables(expr: str) -> set[str] | None:
    """The variables of ``expr`` (``response ~ rhs`` or a right-hand side) when every piece is
    plain (:func:`plain_names`), else ``None``."""
    lhs, tilde, rhs = expr.rpartition("~")
    plain = plain_names(rhs)
    if plain is None or (tilde and not _NAME.match(lhs.strip())):
        return None
    return set(plain[0]) | ({lhs.strip()} if tilde else set())


def plain_fixed(response: str, fixed: str, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """``(y, X, names)`` of the fixed part ``response ~ fixed`` when the response is a numeric
    column and the right-hand side is plain (:func:`plain_matrix`), else ``None``."""
    if response not in frame.columns or _kind(frame[response]) != "numeric":
        return None
    plain = plain_matrix(fixed, frame)
    if plain is None:
        return None
    return frame[response].to_numpy(dtype=float, na_value=np.nan), *plain
