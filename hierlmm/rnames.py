"""R's names of model-matrix columns and terms, from formulaic's.

formulaic names a column ``Sex[T.Female]`` (a factor's level in treatment coding), ``Sex[Female]``
(in indicator coding), ``poly(Days, 2)[1]``, ``I(Days ** 2)``, and writes an interaction's factors
in the order they were typed in that term (``x:f[T.b]`` for ``f + x + x:f``). R names them
``SexFemale`` either way, ``poly(Days, 2)1``, ``I(Days^2)``, and orders an interaction's factors by
the first appearance of each variable in the whole formula (``fb:x`` for ``f + x + x:f``). A
logical column used as a factor (``late``; hierlmm.rsyntax codes it ``C(late, contr.treatment)``
as R codes a logical) is ``lateTRUE``; an ordered factor's polynomial contrasts are ``o.L``,
``o^4``.

Names are built factor by factor from the model spec (each term's factors and their columns),
never by pattern-matching a whole name, so a level containing ``:``, ``[`` or ``]`` cannot be
split in the wrong place. Where R's names of two columns would coincide (factor ``a`` with level
``b1`` beside factor ``ab`` with level ``1``: both ``ab1``), those columns keep formulaic's names,
which are unique.
"""

from __future__ import annotations

import re

from hierlmm.rsyntax import INTERCEPT_COLUMN, R_DOTTED

__all__ = ["column_names", "term_name", "variable_name", "variable_order"]

_POLY = re.compile(r"^C\((.+), contr\.poly\)$")
_LOGICAL = re.compile(r"^C\((.+), contr\.treatment\)$")


def variable_order(formula_text: str) -> dict[str, int]:
    """The position of each variable's first appearance in ``formula_text`` (R's ``terms()``
    orders an interaction's factors by it)."""
    from formulaic.parser import DefaultFormulaParser

    order: dict[str, int] = {}
    try:
        tokens = list(DefaultFormulaParser().get_tokens(formula_text))
    except Exception:  # noqa: BLE001 - an order is a nicety: formulaic's own order stands
        return order
    for tok in tokens:
        if tok.kind.value in ("name", "python"):
            order.setdefault(str(tok).strip("`"), len(order))
    return order


def variable_name(expr: str, logical=frozenset()) -> str:
    """R's name of a factor (a variable) of a term: ``C(o, contr.poly)`` → ``o``, a logical's
    ``C(late, contr.treatment)`` → ``late``, ``I(x ** 2)`` → ``I(x^2)``, ``as_numeric(x)`` →
    ``as.numeric(x)``, ``Intercept`` → ``(Intercept)``."""
    if expr in ("Intercept", "1"):
        return "(Intercept)" if expr == "Intercept" else expr
    name = expr.replace("`", "").replace(INTERCEPT_COLUMN, "Intercept")
    m = _POLY.match(name)
    if m:
        return m.group(1)
    m = _LOGICAL.match(name)
    if m and m.group(1) in logical:
        return m.group(1)
    for r, py in R_DOTTED.items():
        name = name.replace(py + "(", r + "(")
    return _deparse(name)


_KEYWORD = re.compile(r"(?<=[\w)\]'\"])\s*=\s*(?!=)")


def _deparse(code: str) -> str:
    """Python's spelling of a call (formulaic's normalised code) as R's ``deparse`` writes it:
    ``x ** 2`` → ``x^2``, ``a / b`` → ``a/b``, ``df=4`` → ``df = 4``, ``'b'`` → ``"b"``. A
    plain column name is left as it is (``O'Brien`` stays)."""
    if "(" not in code:
        return code
    code = code.replace(" ** ", "^").replace("**", "^").replace(" / ", "/").replace("'", '"')
    out = []
    for part in re.split(r'("[^"]*")', code):  # leave string literals alone
        if part.startswith('"'):
            out.append(part)
        else:
            out.append(_KEYWORD.sub(" = ", part))
    return "".join(out)


def _level_name(expr: str, level: str, logical) -> str:
    """R's suffix of a factor's level: ``T.Female`` and ``Female`` → ``Female``; a logical's
    ``T.True`` → ``TRUE``; polynomial contrasts' ``.L`` stay ``.L``."""
    level = level[2:] if level.startswith("T.") else level
    m = _LOGICAL.match(expr.replace("`", ""))
    if m and m.group(1) in logical and level in ("True", "False"):
        return level.upper()
    return level


def _split(column: str, factors: list[str]) -> list[tuple[str, str | None]] | None:
    """``column`` cut into one ``(factor, level or None)`` per factor of its term, in the term's
    order; None where the name does not read as formulaic writes it."""
    parts, pos = [], 0
    for k, f in enumerate(factors):
        if not column.startswith(f, pos):
            return None
        pos += len(f)
        last = k == len(factors) - 1
        if pos < len(column) and column[pos] == "[":
            close = len(column) - 1 if last else column.find("]:" + factors[k + 1], pos)
            if close < 0 or column[close] != "]":
                return None
            parts.append((f, column[pos + 1 : close]))
            pos = close + 1
        else:
            parts.append((f, None))
        if not last:
            if not column.startswith(":", pos):
                return None
            pos += 1
    return parts if pos == len(column) else None


def _sorted(items, factors, order):
    """``items`` (one per factor) in R's order of the factors' variables."""
    rank = {f: (order.get(f.replace("`", ""), len(order)), i) for i, f in enumerate(factors)}
    return [it for _, it in sorted(zip(factors, items), key=lambda p: rank[p[0]])]


def term_name(term, order: dict[str, int], logical=frozenset()) -> str:
    """R's label of a formulaic term (``x:f`` as ``f:x`` where ``f`` appears first)."""
    factors = [str(f) for f in term.factors]
    if factors == ["1"]:
        return "1"
    return ":".join(_sorted([variable_name(f, logical) for f in factors], factors, order))


def column_names(spec, columns, formula_text: str, logical=frozenset()) -> list[str]:
    """R's names of the columns of the model matrix that formulaic's ``spec`` made from
    ``formula_text`` (``columns``: formulaic's names, in the matrix's order)."""
    order = variable_order(formula_text)
    out = {c: c for c in columns}
    for term, idx in spec.term_indices.items():
        factors = [str(f) for f in term.factors]
        for i in idx:
            c = columns[i]
            if factors == ["1"]:
                out[c] = "(Intercept)"
                continue
            parts = _split(c, factors)
            if parts is None:
                out[c] = variable_name(c, logical)
                continue
            named = [variable_name(f, logical) + ("" if lev is None else _level_name(f, lev, logical))
                     for f, lev in parts]
            out[c] = ":".join(_sorted(named, factors, order))
    names = [out[c] for c in columns]
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    return [n if seen[n] == 1 else variable_name(c, logical) for n, c in zip(names, columns)]
