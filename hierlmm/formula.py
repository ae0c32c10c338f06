"""Stage 1 of the pipeline: split an lme4 formula into its fixed and random parts.

formulaic parses the fixed part (``a*b``, ``C(x)``, ``I(x**2)``, ``np.log(x)``, splines);
it rejects lme4's ``(expr | group)`` terms, so these are split off here first.

Grammar of a random-effects term, as lme4's ``findbars``/``expandDoubleVerts``:

* ``(expr | g)``   one term with correlated effects for the columns of ``expr``
  (``1``, ``x``, ``1 + x + z``, ``0 + x``, ``-1 + x``, ``0 + f`` with a factor ``f``);
* ``(expr || g)``  uncorrelated: one term per formula term of ``expr``;
* ``g`` may be ``a:b`` (the interaction of grouping factors) or ``a/b`` (nested:
  ``(expr | a) + (expr | b:a)``; ``a/b/c`` likewise);
* ``s(expr | g)`` with ``s`` one of glmmTMB's structures (``us``, ``diag``, ``homdiag``, ``cs``,
  ``homcs``, ``ar1``, ``toep``; :mod:`hierlmm.covariance`): the term with that covariance.

``offset(expr)`` terms of the fixed part are set apart (``ParsedFormula.offsets``): known
terms added to the linear predictor, as in R.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hierlmm.covariance import STRUCTURES
from hierlmm.errors import FormulaError
from hierlmm.safety import check_formula

__all__ = ["RandomSpec", "ParsedFormula", "parse_formula"]

_NAME = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.]*$|^`[^`]+`$")


@dataclass(frozen=True)
class RandomSpec:
    """One random-effects term before it meets the data.

    Attributes
    ----------
    expr : str
        The left of the bar, e.g. ``"1 + Days"`` or ``"0 + age"``.
    factors : tuple of str
        The grouping variables; more than one for an interaction ``a:b``.
    source : str
        The term as the user wrote it, for error messages.
    """

    expr: str
    factors: tuple[str, ...]
    source: str
    name: str = ""  # lme4's name where it is not a:b (a nesting of three: k:(h:g))
    structure: str = "us"  # the covariance structure (hierlmm.covariance.STRUCTURES)

    @property
    def group(self) -> str:
        """lme4's name of the grouping factor (``cask:batch`` for ``batch/cask``,
        ``k:(h:g)`` for ``g/h/k``)."""
        return self.name or ":".join(self.factors)

    @property
    def text(self) -> str:
        """The term alone, as a formula writes it: ``(1 + x | g)``, ``diag(1 + x | g)``."""
        inner = f"({self.expr} | {self.group})"
        return inner if self.structure == "us" else f"{self.structure}{inner}"


@dataclass(frozen=True)
class ParsedFormula:
    """A formula split into response, fixed part and random terms."""

    formula: str
    response: str
    fixed: str
    random: tuple[RandomSpec, ...]
    offsets: tuple[str, ...] = ()  # the expressions of the fixed part's offset(...) terms

    @property
    def fixed_formula(self) -> str:
        """The formulaic formula of the fixed part, ``response ~ fixed``."""
        return f"{self.response} ~ {self.fixed}"


def _split_top(text: str, sep: str) -> list[str]:
    """Split ``text`` at top-level (parenthesis depth 0) occurrences of ``sep``."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(text[start:])
    return parts


def _depths(text: str):
    """``(position, character, nesting depth after it)`` for each parenthesis of ``text``."""
    depth = 0
    for pos, ch in enumerate(text):
        if ch in "()":
            depth += 1 if ch == "(" else -1
            yield pos, ch, depth


def _check_parentheses(formula: str) -> None:
    depth = 0
    for pos, _, depth in _depths(formula):
        if depth < 0:
            raise FormulaError(f"unbalanced parentheses in formula {formula!r}: ')' at position {pos} "
                               "closes nothing")
    if depth:
        raise FormulaError(f"unbalanced parentheses in formula {formula!r}: {depth} '(' not closed")


def _find_bar(inner: str) -> tuple[int, int] | None:
    """Position and width of the top-level ``|`` or ``||`` inside a parenthesised group."""
    depth = 0
    for i, ch in enumerate(inner):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "|" and depth == 0:
            return i, 2 if inner[i + 1 : i + 2] == "|" else 1
    return None


def _grouping(text: str, source: str) -> list[tuple[tuple[str, ...], str]]:
    """Expand the grouping side of a bar into the factor tuples of its terms and lme4's names
    of them (``g/h/k``: ``g``, ``h:g``, ``k:(h:g)``: lme4's ``expandSlash`` parenthesises an
    outer factor that is itself an interaction)."""
    text = text.strip()
    if not text:
        raise FormulaError(f"random-effects term {source!r} has no grouping factor after '|'")
    nested = [p.strip() for p in text.split("/")]
    groups: list[tuple[tuple[str, ...], str]] = []
    outer: tuple[str, ...] = ()
    name = ""
    for piece in nested:
        factors = tuple(f.strip().strip("`") for f in piece.split(":"))
        for f in factors:
            if not f or not _NAME.match(f):
                raise FormulaError(
                    f"grouping factor {f!r} in random-effects term {source!r} is not a column "
                    "name: write a variable, an interaction a:b or a nesting a/b"
                )
        # lme4 names a nested factor inner:outer (batch/cask -> cask:batch)
        outer = factors + outer
        here = ":".join(factors)
        name = here if not name else f"{here}:{name}" if ":" not in name else f"{here}:({name})"
        groups.append((outer, name))
    return groups


_WRAPPED = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(\(.*\))$", re.S)
# a structure's name called anywhere (the fixed part may not use them)
_STRUCTURE_CALL = re.compile(r"(?<![\w.])(" + "|".join(k for k in STRUCTURES if k != "cs") + r")\s*\(")


def random_piece(piece: str) -> tuple[str, str] | None:
    """``(structure, inner)`` when ``piece`` is one random-effects term, ``(x | g)`` or
    ``diag(x | g)``, else ``None`` (a call such as glmmTMB's ``ou(...)`` that hierlmm lacks is an
    error naming those it has)."""
    piece = piece.strip()
    structure, group = "us", piece
    wrapped = _WRAPPED.match(piece)
    if wrapped and not piece.startswith("("):
        structure, group = wrapped.group(1), wrapped.group(2)
    if not (group.startswith("(") and _matching(group) == len(group) - 1):
        return None
    inner = group[1:-1]
    if _find_bar(inner) is None:
        return None
    if structure not in STRUCTURES:
        raise FormulaError(f"{structure}() around the random-effects term {piece!r} is no covariance structure "
                           f"hierlmm has; it has {', '.join(s + '()' for s in STRUCTURES)} (glmmTMB's names)")
    return structure, inner


def _random_terms(inner: str, source: str, structure: str = "us") -> list[RandomSpec]:
    pos, width = _find_bar(inner)
    if width == 2 and structure != "us":
        raise FormulaError(f"{source}: '||' already makes the effects independent; write {structure}({inner.replace('||', '|')}) "
                           "or (... || g)")
    expr, group = inner[:pos].strip(), inner[pos + width :]
    if not expr:
        raise FormulaError(
            f"random-effects term {source!r} has nothing before '|': write (1 | g) for a "
            "random intercept"
        )
    specs = []
    for factors, name in _grouping(group, source):
        name = "" if name == ":".join(factors) else name
        if width == 1:
            specs.append(RandomSpec(expr, factors, source, name, structure))
        else:
            specs.extend(RandomSpec(e, factors, source, name) for e in _uncorrelated(expr))
    return specs


def _uncorrelated(expr: str) -> list[str]:
    """``(1 + x + z || g)`` -> ``(1|g) + (0 + x|g) + (0 + z|g)``, as lme4's expandDoubleVerts."""
    pieces = [p.strip() for p in _split_top(expr.replace("-", "+-"), "+") if p.strip()]
    intercept = True
    terms = []
    for p in pieces:
        if p in ("0", "-1"):
            intercept = False
        elif p == "1":
            continue
        elif p.startswith("-"):
            raise FormulaError(f"cannot remove {p[1:]!r} inside an uncorrelated term ({expr} || g)")
        else:
            terms.append(p)
    out = ["1"] if intercept else []
    out.extend(f"0 + {t}" for t in terms)
    return out


def parse_formula(formula: str, random_required: bool = True) -> ParsedFormula:
    """Split an lme4 formula into response, fixed part and random-effects terms.

    Parameters
    ----------
    formula : str
        e.g. ``"Reaction ~ Days + (Days | Subject)"``.

    random_required : bool
        A formula without random-effects terms is an error (a model with a residual structure
        may have none: nlme's ``gls``).

    Returns
    -------
    ParsedFormula
        The fixed part defaults to ``1`` (an intercept) when nothing but random terms is given.

    Raises
    ------
    FormulaError
        Naming the piece at fault: a missing ``~``, unbalanced parentheses, ``(x |)``,
        ``(| g)``, an unusable grouping variable, or no random-effects term at all.
    """
    check_formula(formula)
    if not isinstance(formula, str):
        raise FormulaError(f"the formula must be a string, got {type(formula).__name__}")
    _check_parentheses(formula)
    sides = _split_top(formula, "~")
    if len(sides) != 2 or not sides[0].strip():
        raise FormulaError(f"formula {formula!r} must have the form 'response ~ terms'")
    response, rhs = sides[0].strip(), sides[1].strip()
    if not rhs:
        raise FormulaError(f"formula {formula!r} has nothing to the right of '~'")

    fixed_parts: list[str] = []
    offsets: list[str] = []
    random: list[RandomSpec] = []
    # split the right-hand side into top-level '+' pieces, keeping '-' pieces with the fixed part
    for piece in _split_top(rhs, "+"):
        stripped = piece.strip()
        if not stripped:
            raise FormulaError(f"empty term (a stray '+') in formula {formula!r}")
        signed = _signed_pieces(stripped)
        if any(s == "+" and _is_offset(p) for s, p in signed):  # "offset(o)", "offset(o) - 1"
            offsets.extend(_offset_expr(p, formula) for s, p in signed if s == "+" and _is_offset(p))
            rest = [(s, p) for s, p in signed if not (s == "+" and _is_offset(p))]
            if not rest:
                continue
            stripped = " ".join(f"{s} {p}" for s, p in rest).lstrip("+ ")
            if stripped.startswith("-"):
                stripped = "1 " + stripped
        found = random_piece(stripped)
        if found is not None:
            random.extend(_random_terms(found[1], stripped, found[0]))
            continue
        if "|" in stripped:
            raise FormulaError(
                f"term {stripped!r} of formula {formula!r} uses '|' outside a parenthesised "
                "random-effects term: write (expr | group)"
            )
        called = _STRUCTURE_CALL.search(stripped)
        if called:
            raise FormulaError(f"term {stripped!r} of formula {formula!r}: {called.group(1)}() is a covariance "
                               f"structure and wraps a random-effects term, e.g. {called.group(1)}(0 + f | g)")
        fixed_parts.append(stripped)
    if not random and random_required:
        raise FormulaError(
            f"formula {formula!r} has no random-effects term such as (1 | group); "
            "a linear mixed model needs at least one"
        )
    fixed = " + ".join(fixed_parts) if fixed_parts else "1"
    return ParsedFormula(formula=formula, response=response, fixed=fixed, random=tuple(random),
                         offsets=tuple(offsets))


def _is_offset(term: str) -> bool:
    """``term`` is one whole ``offset(...)`` call."""
    return term.startswith("offset(") and _matching(term[6:]) == len(term) - 7


def _offset_expr(term: str, formula: str) -> str:
    """The expression of an ``offset(expr)`` term."""
    expr = term.strip()[7:-1].strip()
    if not expr:
        raise FormulaError(f"offset() in formula {formula!r} needs an expression, e.g. offset(log(exposure))")
    return expr


def _matching(text: str) -> int:
    """Index of the parenthesis closing the one at position 0."""
    return next((pos for pos, _, depth in _depths(text) if depth == 0), -1)


def _signed_pieces(rhs: str) -> list[tuple[str, str]]:
    """The top-level ``+``/``-`` pieces of a right-hand side, with their signs."""
    pieces, depth, start, sign = [], 0, 0, "+"
    for i, ch in enumerate(rhs):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and ch in "+-":
            if rhs[start:i].strip():
                pieces.append((sign, rhs[start:i].strip()))
            sign, start = ch, i + 1
    if rhs[start:].strip():
        pieces.append((sign, rhs[start:].strip()))
    return pieces


def update_formula(old: str, new: str) -> str:
    """R's ``update.formula`` for lme4 formulas: ``"."`` stands for the old side.

    ``". ~ . - x"`` drops the fixed term ``x`` (formulaic's subtraction, so ``- a:b`` from
    ``a*b`` works as in R), ``". ~ . + z"`` adds one, ``". ~ . - (1 | g)"`` drops that
    random-effects term and ``". ~ . + (0 + x | g)"`` adds one; ``"log(.) ~ ."`` transforms
    the response.
    """
    po = parse_formula(old)
    sides = _split_top(new, "~")
    if len(sides) != 2:
        raise FormulaError(f"the update {new!r} must have the form 'response ~ terms' ('.' for the old side)")
    dot = re.compile(r"(?<![\w.])\.(?![\w.])")
    lhs = sides[0].strip() or "."
    response = dot.sub(po.response, lhs)
    fixed: list[str] = []
    offsets: tuple[str, ...] = ()
    old_random = list(dict.fromkeys(r.source for r in po.random))
    random: list[str] = []

    def norm(term: str) -> str:
        return re.sub(r"\s+", "", term)

    for sign, piece in _signed_pieces(sides[1]):
        if piece == ".":
            if sign == "-":
                raise FormulaError(f"the update {new!r} subtracts '.', the whole old side: write the new side instead")
            fixed.append(("+ " if fixed else "") + po.fixed)
            offsets = po.offsets
            random.extend(old_random)
            continue
        if random_piece(piece) is not None:
            if sign == "+":
                random.append(piece)
            else:
                kept = [r for r in random if norm(r) != norm(piece)]
                if len(kept) == len(random):
                    raise FormulaError(f"cannot remove {piece!r}: the formula {old!r} has no such random-effects "
                                       f"term (it has {', '.join(random)})")
                random = kept
            continue
        fixed.append(f"{sign} {piece}" if fixed or sign == "-" else piece)
    fixed_part = " ".join(fixed).strip() or "1"
    if fixed_part.startswith("-"):
        fixed_part = "1 " + fixed_part
    fixed_part += "".join(f" + offset({o})" for o in offsets)
    return f"{response} ~ {fixed_part}" + "".join(f" + {r}" for r in random)
