"""A model stated level by level (Raudenbush & Bryk's notation) and the lme4 formula it is.

Two levels, ``group`` the level-2 units ``j``::

    level 1:  y_ij = π_0j + π_1j x_ij + ε_ij                      level1 = "y ~ 1 + x"
    level 2:  π_0j = γ_00 + γ_01 w_j + u_0j                        level2 = {"(Intercept)": "~ 1 + w",
              π_1j = γ_10 + γ_11 w_j + u_1j                                  "x": "~ 1 + w"}

A level-1 coefficient listed in ``level2`` varies by group (it gets a random effect ``u``) and
has its own level-2 predictors; an unlisted one is fixed (``π = γ``). Substituting gives the
combined model ``y ~ x * w + (x | g)``: each level-2 predictor ``w`` of coefficient ``c`` is the
fixed term ``c:w`` (``w`` itself for the intercept), and the listed coefficients form one
correlated random term.

Three levels (``group=[outer, inner]``, e.g. ``["school", "class"]``): ``level2`` lists the
coefficients that vary by class (within school) with class-level predictors, ``level3`` those
that vary by school with school-level predictors; the random terms are ``(… | class:school)``
and ``(… | school)`` (lme4's names for ``school/class``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from hierlmm.errors import FormulaError

__all__ = ["LevelSpec", "combined_formula"]


@dataclass(frozen=True)
class LevelSpec:
    """The level-wise statement of a model (see module doc)."""

    response: str
    level1: tuple[str, ...]  # level-1 terms, "(Intercept)" for the intercept
    equations: tuple[tuple[str, dict[str, tuple[str, ...]]], ...]  # (grouping, {coefficient: predictors})
    formula: str  # the combined lme4 formula

    def lines(self) -> list[str]:
        """The equations as text: π for level-1 coefficients, β for level-2 intercepts that vary
        at level 3, γ for fixed coefficients, u (r at level 2 of three) for random effects."""
        three = len(self.equations) == 2
        sub = {1: "ijk" if three else "ij", 2: "jk" if three else "j", 3: "k"}
        eq2 = self.equations[0][1]
        eq3 = self.equations[1][1] if three else {}

        def pi(i, c):
            return f"π{i}_{sub[2]}" if c in eq2 else (f"π{i}_k" if c in eq3 else f"π{i}")

        def rhs(head, preds, first, level):
            out = [head]
            out += [f"{first}{n}·{p}_{sub[level]}" for n, p in enumerate(preds) if p != "1"]
            return " + ".join(out)

        level1 = [pi(i, c) if c == "(Intercept)" else f"{pi(i, c)}·{c}_{sub[1]}" for i, c in enumerate(self.level1)]
        out = [f"level 1: {self.response}_{sub[1]} = {' + '.join(level1)} + ε_{sub[1]}"]
        for i, c in enumerate(self.level1):
            if c in eq2:
                head = f"β{i}0_k" if c in eq3 else f"γ{i}0"
                noise = "r" if three else "u"
                out.append(f"level 2 ({self.equations[0][0]}): {pi(i, c)} = "
                           f"{rhs(head, eq2[c], f'γ{i}', 2)} + {noise}{i}_{sub[2]}")
        for i, c in enumerate(self.level1):
            if c in eq3:
                lhs = f"β{i}0_k" if c in eq2 else f"π{i}_k"
                out.append(f"level 3 ({self.equations[1][0]}): {lhs} = {rhs(f'γ{i}00', eq3[c], f'γ{i}0', 3)} + u{i}_k")
        out.append(f"combined (lme4): {self.formula}")
        return out


def _terms(rhs: str, where: str) -> list[str]:
    """The '+' terms of a right-hand side, '1' for the intercept (explicit or implied), no '0'."""
    from hierlmm.formula import _signed_pieces

    pieces = _signed_pieces(rhs)
    terms, intercept = [], True
    for sign, p in pieces:
        if p in ("0", "-1") or (sign == "-" and p == "1"):
            intercept = False
        elif sign == "-":
            raise FormulaError(f"{where}: '- {p}' is not supported; list the terms to keep")
        elif p != "1":
            terms.append(p)
    return (["1"] if intercept else []) + terms


def _rhs(formula: str, where: str) -> str:
    text = formula.strip()
    if "~" not in text:
        raise FormulaError(f"{where} {formula!r} must be a formula such as '~ 1 + w'")
    _, rhs = text.split("~", 1)
    if "|" in rhs:
        raise FormulaError(f"{where} {formula!r}: random effects come from the level structure, not '|'")
    return rhs


def combined_formula(level1: str, level2: dict, group, level3: dict | None = None) -> LevelSpec:
    """The lme4 formula of a level-wise model (see module doc)."""
    if "~" not in level1:
        raise FormulaError(f"level1 {level1!r} must be a formula such as 'y ~ 1 + x'")
    response, rhs1 = (s.strip() for s in level1.split("~", 1))
    l1 = ["(Intercept)" if t == "1" else t for t in _terms(rhs1, "level1")]
    groups = [group] if isinstance(group, str) else list(group)
    if len(groups) not in (1, 2):
        raise FormulaError(f"group must name one grouping column or [outer, inner], got {group!r}")
    if len(groups) == 1 and level3:
        raise FormulaError("level3 needs group=[outer, inner] (e.g. ['school', 'class'])")
    if len(groups) == 2:
        outer, inner = groups
        plan = [(f"{inner}:{outer}", level2 or {}), (outer, level3 or {})]
    else:
        plan = [(groups[0], level2 or {})]
    mains, interactions, randoms, equations = [], [], [], []
    for t in l1:
        mains.append("1" if t == "(Intercept)" else t)
    for grouping, eqs in plan:
        unknown = [c for c in eqs if c not in l1]
        if unknown:
            raise FormulaError(f"level-2/3 equations for {', '.join(map(repr, unknown))}, which are not level-1 "
                               f"coefficients (level 1 has {', '.join(l1)})")
        parsed = {c: tuple(_terms(_rhs(f, f"the equation of {c!r}"), f"the equation of {c!r}")) for c, f in eqs.items()}
        equations.append((grouping, parsed))
        for c, preds in parsed.items():
            for p in preds:
                if p == "1":
                    continue
                (mains if c == "(Intercept)" else interactions).append(p if c == "(Intercept)" else f"{c}:{p}")
        if parsed:
            listed = [c for c in l1 if c in parsed]
            expr = " + ".join(("1" if c == "(Intercept)" else c) for c in listed)
            if "(Intercept)" not in parsed:
                expr = "0 + " + expr
            randoms.append(f"({expr} | {grouping})")
    if not randoms:
        raise FormulaError("no coefficient varies by group: list at least one level-1 coefficient in level2")
    fixed = list(dict.fromkeys(mains + interactions))
    if "1" not in fixed:
        fixed.insert(0, "0")
    formula = f"{response} ~ {' + '.join(fixed)} + {' + '.join(randoms)}"
    return LevelSpec(response, tuple(l1), tuple(equations), formula)


def check_constant_within(spec: LevelSpec, data: pd.DataFrame) -> None:
    """A higher-level predictor that is a column must be constant within each of its groups."""
    from hierlmm.errors import DataError

    for grouping, eqs in spec.equations:
        cols = grouping.split(":")
        for preds in eqs.values():
            for p in preds:
                if p == "1" or p not in data.columns:
                    continue
                per = data.groupby(cols, observed=True)[p].nunique(dropna=True)
                if (per > 1).any():
                    where = per.index[(per > 1).to_numpy()][0]
                    raise DataError(f"predictor {p!r} of a level-{'2' if grouping == spec.equations[0][0] else '3'} "
                                    f"equation varies within {grouping} {where!r}; a predictor at that level must be "
                                    "constant within each group (put it in level1 instead)")
