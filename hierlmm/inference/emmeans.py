"""Estimated marginal means and their pairwise contrasts, as R's emmeans computes them.

The *reference grid* crosses every level of every factor of the fixed part with every numeric
covariate at its mean over the rows used (``at=`` sets other values); a covariate enters at
its own mean even where the formula transforms it (``I(x^2)`` at ``mean(x)²``, emmeans'
default). Each grid row ``g`` has a linear function ``x_g'β`` of the coefficients (the fit's
model matrix evaluated on the grid). The EMM of a cell of the ``specs`` factors (within each
level of ``by``) is the equally weighted mean of the grid rows in that cell:

.. math::  \\hat\\mu_c = l_c'\\hat\\beta, \\qquad l_c = \\frac{1}{|c|}\\sum_{g \\in c} x_g,
           \\qquad \\operatorname{SE} = \\sqrt{l_c' V l_c},

with ``V`` and the df Kenward–Roger's (the adjusted covariance and pbkrtest's df, emmeans'
default for ``lmer`` fits) or Satterthwaite's (``Var(β̂)`` and lmerTest's df). Pairwise
contrasts ``l_i − l_j`` (emmeans' ``pairs()``, ``i < j`` in level order) carry Tukey's
adjustment of the p-values by default (the studentized range over the cells of each ``by``
group).
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
from scipy import stats

from hierlmm.errors import HierlmmError
from hierlmm.inference.contrasts import fixed_terms
from hierlmm.inference.ftests import _ddf
from hierlmm.table import as_table

__all__ = ["emmeans", "emtrends", "joint_tests", "reference_grid"]


def _variables(design) -> dict[str, object]:
    """The fixed part's variables: factor -> its levels, numeric covariate -> its mean."""
    from hierlmm.design import _required

    data = design.data
    out = {}
    for v in sorted(_required(design.parsed.fixed_formula, "fixed part", data.columns) - {design.response},
                    key=list(data.columns).index):
        col = data[v]
        if isinstance(col.dtype, pd.CategoricalDtype):
            out[v] = list(col.cat.categories)
        elif pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
            out[v] = sorted(col.unique())
        else:
            out[v] = float(col.mean())
    return out


def reference_grid(fit, at: dict | None = None) -> pd.DataFrame:
    """emmeans' reference grid: every combination of the factors' levels, the covariates at
    their means (or at the values ``at`` gives, a number or a list per variable)."""
    variables = _variables(fit.design)
    at = dict(at or {})
    unknown = [k for k in at if k not in variables]
    if unknown:
        raise HierlmmError(f"at= names variable(s) {', '.join(map(repr, unknown))} not in the fixed part "
                           f"(it has {', '.join(variables)})")
    axes = {}
    for v, val in variables.items():
        given = at.get(v)
        if given is not None:
            axes[v] = list(np.atleast_1d(given))
        else:
            axes[v] = val if isinstance(val, list) else [val]
    grid = pd.DataFrame(list(itertools.product(*axes.values())), columns=list(axes))
    for v, val in variables.items():
        if isinstance(val, list) and isinstance(fit.design.data[v].dtype, pd.CategoricalDtype):
            grid[v] = pd.Categorical(grid[v], categories=fit.design.data[v].cat.categories,
                                     ordered=fit.design.data[v].cat.ordered)
    return grid


def _covariance_and_df(fit, ddf: str):
    """``(V, df(l))``: the covariance the SEs use and the df of a contrast ``l``."""
    ddf = _ddf(ddf)
    if ddf == "kenward-roger":
        from hierlmm.inference.kenward_roger import kr_adjust, lb_ddf

        kr = kr_adjust(fit)
        return kr.vcov_adj, lambda L: lb_ddf(np.atleast_2d(L), kr)
    if ddf == "satterthwaite":
        from hierlmm.inference.satterthwaite import contest1d, varpar_covariance

        vc = varpar_covariance(fit)
        return vc.vcov, lambda L: contest1d(vc, L)["df"]
    return fit.vcov.to_numpy(), lambda L: np.inf


def emmeans(fit, specs, by=None, at: dict | None = None, ddf: str = "kenward-roger", level: float = 0.95,
            pairwise: bool = False, adjust: str | None = None, contrast: str | None = None) -> pd.DataFrame:
    """Estimated marginal means of ``specs`` (a factor or a list), within each level of
    ``by``; with ``pairwise=True`` (or ``contrast="pairwise"``) their pairwise differences,
    with ``contrast=`` one of emmeans' other families (:func:`contrast_matrix`) instead.

    Returns
    -------
    DataFrame
        EMMs: the ``specs`` and ``by`` columns, ``emmean, SE, df, lower.CL, upper.CL``
        (emmeans' names). Contrasts: ``contrast`` (``"a - b"``, ``"linear"``, ``"a effect"``),
        the ``by`` columns, ``estimate, SE, df, t.ratio, p.value`` with ``adjust`` (default
        emmeans' for the family: ``"tukey"`` for pairs, ``"dunnettx"`` for ``trt.vs.ctrl``,
        ``"fdr"`` for ``eff``, ``"none"`` for ``poly``; :func:`adjusted_p`), within each
        ``by`` group.
    """
    design, specs, by, grid = _grid(fit, specs, by, at, "emmeans()")
    keys = specs + by
    labels, L = _cell_means(grid, design.fixed_matrix(grid), keys)
    V, df_of = _covariance_and_df(fit, ddf)
    beta = fit.fixef.to_numpy()
    notes = _notes(design, keys, ddf)
    _, _, factors, _ = fixed_terms(design)
    averaged = _averaged(design, keys)
    if averaged and any(len(f) > 1 and f & set(keys) and f & set(averaged) for f in factors.values()):
        notes.insert(0, "NOTE: Results may be misleading due to involvement in interactions")
    method = "pairwise" if pairwise and contrast is None else contrast
    if method is None:
        return as_table(_intervals(labels, L, beta, V, df_of, level, "emmean"),
                        f"Estimated marginal means ({_ddf(ddf)} df, {100 * level:g}% intervals)",
                        notes=notes + [f"Confidence level used: {level:g}"])
    if method not in DEFAULT_ADJUST:
        raise HierlmmError(f"contrast must be one of {', '.join(map(repr, DEFAULT_ADJUST))}, got {method!r}")
    if adjust is None:
        adjust = DEFAULT_ADJUST[method]
    if adjust == "tukey" and method != "pairwise":
        notes.append('Note: adjust = "tukey" was changed to "sidak" because "tukey" is only appropriate for one '
                     "set of pairwise comparisons")
        adjust = "sidak"
    table, family, tests = _contrasts(labels, L, beta, V, df_of, specs, by, method, adjust)
    if adjust != "none":
        notes.append(f"P value adjustment: {adjust} method for "
                     + (f"comparing a family of {family} estimates" if adjust in ("tukey", "scheffe")
                        else f"{tests} tests"))
    title = {"pairwise": "Pairwise differences", "trt.vs.ctrl": "Differences from the reference level",
             "consec": "Consecutive differences", "eff": "Differences from the grand mean",
             "poly": "Polynomial contrasts"}[method]
    return as_table(table, f"{title} of estimated marginal means (p adjusted: {adjust})", pvalues=["p.value"],
                    notes=notes)


def _cell_means(grid: pd.DataFrame, Xg: np.ndarray, keys: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """The cells of ``keys`` (emmeans' row order: expand.grid's, the first variable fastest,
    so ``by`` slowest) and, per cell, the mean of its grid rows of ``Xg``."""
    cells = grid[keys].astype(object).apply(tuple, axis=1) if keys else pd.Series([()] * len(grid))
    order = [c[::-1] for c in itertools.product(*[_levels(grid[k]) for k in reversed(keys)])]
    L = np.array([Xg[(cells == c).to_numpy()].mean(axis=0) for c in order])
    labels = pd.DataFrame(order, columns=keys)
    for k in keys:  # a logical's levels as R prints them
        if pd.api.types.is_bool_dtype(grid[k]):
            labels[k] = labels[k].map({False: "FALSE", True: "TRUE"})
    return labels, L


def emtrends(fit, specs, var: str, by=None, at: dict | None = None, ddf: str = "kenward-roger",
             level: float = 0.95) -> pd.DataFrame:
    """emmeans' ``emtrends(fit, specs, var)``: the slope of the EMMs in the covariate ``var``
    per cell of ``specs`` (within ``by``), by emmeans' forward difference over the reference
    grid, ``(l(x + δ) − l(x))'β̂ / δ`` with ``δ = 0.001 · range(var)`` (exact for a model
    linear in ``var``; ``I(x^2)`` gets emmeans' own difference quotient).

    Returns
    -------
    DataFrame
        The ``specs`` and ``by`` columns, ``VAR.trend, SE, df, lower.CL, upper.CL``.
    """
    design, specs, by, grid = _grid(fit, specs, by, at, "emtrends()")
    variables = _variables(design)
    if not isinstance(variables.get(var), float):
        raise HierlmmError(f"var={var!r} must be a numeric covariate of the fixed part "
                           f"(its covariates: {', '.join(v for v, x in variables.items() if isinstance(x, float))})")
    x = design.data[var].to_numpy(dtype=float)
    delta = 0.001 * (x.max() - x.min())
    moved = grid.assign(**{var: grid[var] + delta})
    keys = specs + by
    labels, L = _cell_means(grid, (design.fixed_matrix(moved) - design.fixed_matrix(grid)) / delta, keys)
    V, df_of = _covariance_and_df(fit, ddf)
    out = _intervals(labels, L, fit.fixef.to_numpy(), V, df_of, level, f"{var}.trend")
    return as_table(out, f"Trends of {var} ({_ddf(ddf)} df, {100 * level:g}% intervals)",
                    notes=_notes(design, keys, ddf) + [f"Confidence level used: {level:g}"])


def joint_tests(fit, by=None, ddf: str = "kenward-roger") -> pd.DataFrame:
    """emmeans' ``joint_tests(fit, by)``: an F test for every model term of the reference grid's
    factors, the joint test that all its interaction contrasts of EMMs are 0.

    Every numeric covariate enters the grid at its mean ± 1 (emmeans' ``cov.reduce =
    make.meanint(1)``), as a factor of two levels; for each set of factors that appears
    together in a model term (:func:`_tested_sets`; main effects, then two-way, …, in the order
    of their first appearance in the formula) the EMMs over that set (within each ``by`` group)
    get the product of consecutive-difference contrasts of its factors, ``C = C_k ⊗ … ⊗ C_1``,
    whose rows in the coefficients are ``M = C L``. As
    emmeans' ``test(joint = TRUE)``: entries of ``M`` that are rounding noise are zeroed, the
    hypothesis is ``K β = 0`` with ``K`` the orthonormal basis of ``M``'s row space from the QR
    factor of ``M'`` (its independent rows in order; ``df1`` its rank; sets whose contrasts are
    all 0, terms absent from the model, are left out as emmeans leaves out ``df1 = 0``),
    ``F = (Kβ̂)'(K V K')⁻¹(Kβ̂)/df1`` with ``V`` Kenward–Roger's adjusted covariance or
    ``Var(β̂)`` (Satterthwaite), and ``df2`` the smallest single-row df among ``K``'s rows
    (pbkrtest's ``Lb_ddf`` or lmerTest's Satterthwaite df of each row). That minimum is
    emmeans' convention, not the multi-df Kenward–Roger df of ``anova()``; since ``K`` is
    orthonormal in the coefficients' own coordinates, ``df2`` of a term whose contrasts mix a
    covariate's columns with others can change with the covariate's units (``F`` and ``df1``
    cannot), exactly as emmeans' does. A last row ``(confounded)`` holds what the consecutive
    contrasts of all the grid's cells test beyond the terms' rows (``df1`` the difference of
    ranks, ``F`` the difference of ``df1 · F``, ``df2`` the whole test's), where that is not 0.

    Returns
    -------
    DataFrame
        ``model term``, the ``by`` columns, ``df1, df2, F.ratio, p.value`` (emmeans' names).
    """
    design, _, by, _ = _grid(fit, [], by, None, "joint_tests()")
    variables = _variables(design)
    at = {v: [m - 1.0, m + 1.0] for v, m in variables.items() if not isinstance(m, list)}
    grid = reference_grid(fit, at)
    Xg = design.fixed_matrix(grid)
    order, first = _first_expressions(design, list(variables))
    facs = [v for v in order if v not in by]
    tested = _tested_sets(design, facs, first)
    V, df_of = _covariance_and_df(fit, ddf)
    beta = fit.fixef.to_numpy()
    size = np.abs(Xg).max(axis=0)  # each coefficient's scale in the grid: what rounding noise is relative to
    rows = []
    groups = grid.groupby(by, sort=False, observed=True).indices if by else {(): np.arange(len(grid))}
    for key, idx in groups.items():
        sub, Xs = grid.iloc[idx].reset_index(drop=True), Xg[idx]
        labels = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        bases = []
        for these in tested:
            _, L = _cell_means(sub, Xs, list(these))
            C = np.ones((1, 1))
            for v in these:  # the first factor varies fastest among the cells
                C = np.kron(_consec(len(_levels(sub[v]))), C)
            K = _row_basis(C @ L, size)
            if K.shape[0]:
                bases.append(K)
                rows.append({"model term": ":".join(these), **labels, **_joint_f(K, beta, V, df_of)})
        # emmeans' "(confounded)": what the consecutive contrasts of all cells test beyond the terms
        _, L = _cell_means(sub, Xs, facs)
        whole = _joint_f(_row_basis(_consec(len(L)) @ L, size), beta, V, df_of)
        terms = _joint_f(_row_basis(np.vstack(bases), size), beta, V, df_of) if bases else {"df1": 0, "F.ratio": 0.0}
        extra = whole["df1"] - terms["df1"]
        if extra > 0:
            F = (whole["df1"] * whole["F.ratio"] - terms["df1"] * terms["F.ratio"]) / extra
            rows.append({"model term": "(confounded)", **labels, "df1": extra, "df2": whole["df2"], "F.ratio": F,
                         "p.value": _f_pvalue(F, extra, whole["df2"])})
    columns = ["model term"] + by + ["df1", "df2", "F.ratio", "p.value"]
    out = pd.DataFrame(rows, columns=columns)
    if by:  # emmeans: each term's rows over the by groups together, the terms in their order
        rank = {t: i for i, t in enumerate(dict.fromkeys(out["model term"]))}
        out = out.iloc[np.argsort([rank[t] for t in out["model term"]], kind="stable")].reset_index(drop=True)
    return as_table(out, f"Joint tests of model terms ({_ddf(ddf)} df)", pvalues=["p.value"],
                    notes=[f"Degrees-of-freedom method: {_ddf(ddf)}"])


def _first_expressions(design, variables: list[str]) -> tuple[list[str], dict[str, str | None]]:
    """``variables`` in the order of their first appearance in the fixed part, and for each the
    first factor expression of a term that uses it (``I(x ** 2)`` for ``x`` in ``I(x^2) + x``;
    None if none does), as R's ``terms()`` orders a formula's variables."""
    from hierlmm.rnames import variable_order

    order = variable_order(design.fixed_formula)
    exprs = sorted({str(f) for t in design.fixed_spec.term_indices for f in t.factors if str(t) != "1"},
                   key=lambda f: order.get(f.strip("`"), len(order)))
    first = {}
    for v in variables:
        word = re.compile(rf"(?<![\w.]){re.escape(v)}(?![\w.])")
        first[v] = next((f for f in exprs if word.search(f)), None)
    position = {f: i for i, f in enumerate(exprs)}
    return sorted(variables, key=lambda v: position.get(first[v], len(exprs))), first


def _tested_sets(design, facs: list[str], first: dict[str, str | None]) -> list[tuple[str, ...]]:
    """The sets of grid variables emmeans' joint_tests tests, by size, then in the order of
    ``facs``: those that appear together in a term of the fixed part, as emmeans reads R's
    table of terms by factors (rows: each factor expression, named by the variable it uses).
    A variable is found in a term through the first expression that uses it (``first``:
    ``I(x^2)`` before ``x`` in ``I(x^2) + x + x:f``: then ``x:f`` does not contain "x", and its
    contrasts go to the "(confounded)" row, as in emmeans); a variable in no term goes with
    every term."""
    spec_terms = [[str(f) for f in t.factors] for t in design.fixed_spec.term_indices if str(t) != "1"]
    term_vars = [{v for v in facs if first[v] in fs} for fs in spec_terms]
    alone = [v for v in facs if not any(v in t for t in term_vars)]
    term_vars = [t | set(alone) for t in term_vars] or [set(facs)]
    return [these for k in range(1, len(facs) + 1) for these in itertools.combinations(facs, k)
            if any(set(these) <= t for t in term_vars)]


def _joint_f(K: np.ndarray, beta, V, df_of) -> dict:
    """emmeans' joint F test of ``K β = 0`` (``K``: orthonormal rows): ``F = (Kβ̂)'(K V K')⁻¹(Kβ̂)/r``,
    ``df2`` the smallest single-row df among ``K``'s rows."""
    r = K.shape[0]
    if r == 0:
        return {"df1": 0, "df2": np.nan, "F.ratio": np.nan, "p.value": np.nan}
    x = K @ beta
    F = float(x @ np.linalg.solve(K @ V @ K.T, x) / r)
    df2 = min(float(df_of(k)) for k in K)
    return {"df1": r, "df2": df2, "F.ratio": F, "p.value": _f_pvalue(F, r, df2)}


def _f_pvalue(F: float, df1: int, df2: float) -> float:
    """``P(F_{df1, df2} > F)``; with ``df2`` infinite, the χ² limit ``P(χ²_{df1} > df1 F)``."""
    return float(stats.f.sf(F, df1, df2) if np.isfinite(df2) else stats.chi2.sf(F * df1, df1))


def _consec(k: int) -> np.ndarray:
    """Consecutive differences of ``k`` levels (rows: level ``i`` minus level ``i − 1``)."""
    return np.eye(k)[1:] - np.eye(k)[:-1]


def _row_basis(M: np.ndarray, column_size: np.ndarray, zap: float = 1e-9, tol: float = 1e-7) -> np.ndarray:
    """emmeans' basis of a joint hypothesis ``M β = 0``: entries of ``M`` below ``zap`` times
    their column's size in the grid (``column_size``: unit-free rounding noise) set to 0;
    the rows kept in order where each adds a direction (its part orthogonal to the rows before
    has norm above ``tol`` times its own, R's ``qr()`` tolerance); then the orthonormal rows of
    the Q factor of those rows' transpose (R's ``t(qr.Q(qr(t(M))))``, up to signs)."""
    M = np.where(np.abs(M) > zap * np.maximum(column_size, 1e-300)[None, :], M, 0.0)
    kept, basis = [], []
    for i, row in enumerate(M):
        norm = np.linalg.norm(row)
        if norm == 0:
            continue
        rest = row - sum((row @ q) * q for q in basis) if basis else row
        if np.linalg.norm(rest) > tol * norm:
            kept.append(i)
            basis.append(rest / np.linalg.norm(rest))
    if not kept:
        return M[:0]
    Q, _ = np.linalg.qr(M[kept].T)
    return Q.T


def _grid(fit, specs, by, at, what: str):
    """``(design, specs, by, grid)``: the arguments as lists and the reference grid, after the
    refusals emmeans() and emtrends() share (an offset, a rank-deficient fixed part, a
    variable not in the fixed part)."""
    design = fit.design
    if design.offset is not None:
        raise HierlmmError(f"{what} for a model with an offset is not implemented (emmeans would put the "
                           "offset's variables at their means)")
    if design.dropped_columns:
        raise HierlmmError(f"{what} on a rank-deficient fixed part (dropped {', '.join(design.dropped_columns)}) "
                           "needs an estimability check that is not implemented; remove the aliased terms")
    specs = [specs] if isinstance(specs, str) else list(specs)
    by = [] if by is None else ([by] if isinstance(by, str) else list(by))
    grid = reference_grid(fit, at)
    for v in specs + by:
        if v not in grid.columns:
            raise HierlmmError(f"{v!r} is not a variable of the fixed part (it has {', '.join(grid.columns)})")
    return design, specs, by, grid


def _intervals(labels, L, beta, V, df_of, level: float, name: str) -> pd.DataFrame:
    """``labels`` with the estimates ``L β̂`` (column ``name``), ``SE, df`` and the t intervals."""
    est = L @ beta
    se = np.sqrt(np.einsum("ij,jk,ik->i", L, V, L))
    df = np.array([df_of(row) for row in L])
    q = stats.t.ppf(0.5 + level / 2, df)
    return labels.assign(**{name: est, "SE": se, "df": df, "lower.CL": est - q * se, "upper.CL": est + q * se})


def _averaged(design, keys) -> list[str]:
    """The factors of the fixed part not among ``keys``: the EMMs average over their levels."""
    return [v for v, val in _variables(design).items() if isinstance(val, list) and v not in keys]


def _notes(design, keys, ddf) -> list[str]:
    """emmeans' notes under a table: the factors averaged over, the df method."""
    averaged = _averaged(design, keys)
    return ([f"Results are averaged over the levels of: {', '.join(averaged)}"] if averaged else []) + [
        f"Degrees-of-freedom method: {_ddf(ddf)}"]


def _levels(col: pd.Series) -> list:
    return list(col.cat.categories) if isinstance(col.dtype, pd.CategoricalDtype) else list(dict.fromkeys(col))


def _is_number(value) -> bool:
    try:
        float(str(value))
        return True
    except ValueError:
        return False


def _label(name: str, value, numeric: bool) -> str:
    """A level in a contrast's name; numbers get the factor's name in front (``N0 - N0.2``),
    as emmeans writes them."""
    return f"{name}{value}" if numeric else str(value)


# emmeans' option "parens": a level that holds an operator is put in parentheses in a
# contrast's name ("None - (a+b)"), so that the name reads as one difference
_PARENS = re.compile(r"-|\+|/|\*")


def _side(label: str) -> str:
    return f"({label})" if _PARENS.search(label) else label


ADJUST = ("tukey", "dunnettx", "mvt", "scheffe", "sidak", "bonferroni", "holm", "fdr", "none")
# emmeans' contrast families and the adjustment each gets by default
DEFAULT_ADJUST = {"pairwise": "tukey", "trt.vs.ctrl": "dunnettx", "consec": "mvt", "eff": "fdr", "poly": "none"}
_DEGREE = ["linear", "quadratic", "cubic", "quartic"] + [f"degree {d}" for d in range(5, 21)]


def contrast_matrix(method: str, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """emmeans' contrast family over ``k`` cells named ``names`` (rows: contrasts):

    * ``pairwise``: ``a − b`` for each pair in level order;
    * ``trt.vs.ctrl``: each level minus the first (``b − a``);
    * ``consec``: each level minus the one before;
    * ``eff``: each level minus the mean of all (``a effect``);
    * ``poly``: orthogonal polynomials over equally spaced levels up to degree ``min(6, k−1)``
      (``linear``, ``quadratic``, …), scaled to integers as emmeans' ``poly.emmc`` does (R's
      ``poly(1:k)``, each column divided by its smallest entry above 0.01, then by its largest
      distance to an integer while that exceeds 0.05, then rounded)."""
    k = len(names)
    eye = np.eye(k)
    if method == "pairwise":
        pairs = list(itertools.combinations(range(k), 2))
        return np.array([eye[a] - eye[b] for a, b in pairs]).reshape(-1, k), [f"{names[a]} - {names[b]}"
                                                                               for a, b in pairs]
    if method == "trt.vs.ctrl":
        return np.array([eye[i] - eye[0] for i in range(1, k)]).reshape(-1, k), [f"{names[i]} - {names[0]}"
                                                                                  for i in range(1, k)]
    if method == "consec":
        return np.array([eye[i] - eye[i - 1] for i in range(1, k)]).reshape(-1, k), [f"{names[i]} - {names[i - 1]}"
                                                                                      for i in range(1, k)]
    if method == "eff":
        return eye - 1.0 / k, [f"{n} effect" for n in names]
    degree = min(6, k - 1)
    x = np.arange(1, k + 1, dtype=float)
    q, _ = np.linalg.qr(np.vander(x - x.mean(), degree + 1, increasing=True))
    rows = []
    for j in range(1, degree + 1):
        con = q[:, j] * np.sign(q[-1, j])  # R's poly: a positive leading coefficient (positive at the last level)
        con = con / np.min(con[con > 0.01])
        z = np.max(np.abs(con - np.round(con)))
        while z > 0.05:
            con = con / z
            z = np.max(np.abs(con - np.round(con)))
        rows.append(np.round(con))
    return np.array(rows), _DEGREE[:degree]


def _contrasts(labels, L, beta, V, df_of, specs, by, method, adjust) -> tuple[pd.DataFrame, int, int]:
    """A contrast family (:func:`contrast_matrix`) of the EMMs within each ``by`` group, the
    p-values adjusted within each group (emmeans' family) by :func:`adjusted_p`; also the
    family's size (cells) and number of tests, for the note."""
    if adjust not in ADJUST:
        raise HierlmmError(f"adjust must be one of {', '.join(map(repr, ADJUST))}, got {adjust!r}")
    groups = labels.groupby(by, sort=False).indices if by else {(): np.arange(len(labels))}
    numeric = {s: all(_is_number(v) for v in labels[s].unique()) for s in specs}
    rows, family, tests = [], 0, 0
    for key, idx in groups.items():
        idx = list(idx)
        names = [_side(" ".join(_label(s, labels.loc[i, s], numeric[s]) for s in specs)) for i in idx]
        C, contrast_names = contrast_matrix(method, names)
        Lc = C @ L[idx]
        cov = Lc @ V @ Lc.T  # the family's covariance: its SEs, and its correlation for "mvt"
        ses = np.sqrt(np.diag(cov))
        group = []
        for l, se, name in zip(Lc, ses, contrast_names):
            est, se = float(l @ beta), float(se)
            row = {"contrast": name}
            row.update(dict(zip(by, key if isinstance(key, tuple) else (key,))))
            row.update({"estimate": est, "SE": se, "df": float(df_of(l)), "t.ratio": est / se})
            group.append(row)
        t = np.array([r["t.ratio"] for r in group])
        df = np.array([r["df"] for r in group])
        rank = int(np.linalg.matrix_rank(C))
        corr = cov / np.outer(ses, ses)
        for r, p in zip(group, adjusted_p(t, df, adjust, len(idx), rank=rank, corr=corr)):
            r["p.value"] = p
        rows.extend(group)
        family, tests = len(idx), len(group)
    return pd.DataFrame(rows), family, tests


def adjusted_p(t: np.ndarray, df: np.ndarray, adjust: str, k: int, rank: int | None = None,
               corr: np.ndarray | None = None) -> np.ndarray:
    """Two-sided p-values of a family of ``m`` t ratios over ``k`` means (pairwise: ``m =
    k(k−1)/2``), adjusted as emmeans adjusts a family:

    * ``tukey``: the studentized range of ``k`` means, ``P(Q_{k,df} > √2 |t|)`` (with two
      means, the t test itself);
    * ``dunnettx``: emmeans' approximation of Dunnett's many-to-one distribution, ``1 −
      [w P(Q_{k',df} ≤ √2|t|) + (1 − w) P(F_{1,df} ≤ t²)^m]`` with ``w = (m − 1)/m`` and
      ``k' = (1 + √(1 + 8m))/2`` (the number of means whose pairs number ``m``);
    * ``scheffe``: ``P(F_{r,df} > t²/r)`` with ``r`` the rank of the family (``k − 1`` for
      pairs and for ``eff``, whose ``k`` effects sum to 0; emmeans counts ``k`` there, the rank
      of its linear functions rounded by ``zapsmall`` no longer seeing that sum);
    * ``mvt``: ``1 − P(max_j |T_j| < |t_i|)`` with ``T`` multivariate t with the estimates'
      correlation ``corr`` and ``ν_i = ⌊df_i + 0.25⌋`` degrees of freedom (normal beyond 9999),
      emmeans' exact single-step adjustment (:func:`mvt_p`);
    * ``sidak``: ``1 − (1 − p)^m``; ``bonferroni``: ``min(1, m p)``;
    * ``holm`` and ``fdr`` (Benjamini–Hochberg): R's ``p.adjust`` on the family's p-values;
    * ``none``: ``p``."""
    p = 2 * stats.t.sf(np.abs(t), df)
    m = len(p)
    if adjust == "tukey" and k > 2:
        return stats.studentized_range.sf(np.abs(t) * np.sqrt(2), k, df)
    if adjust == "scheffe":
        r = k - 1 if rank is None else rank
        return stats.f.sf(t**2 / r, r, df)
    if adjust == "dunnettx":
        if m == 1:
            return p
        w, kk = (m - 1) / m, (1 + np.sqrt(1 + 8 * m)) / 2
        below = w * stats.studentized_range.cdf(np.sqrt(2) * np.abs(t), kk, df) + (1 - w) * stats.f.cdf(t**2, 1, df)**m
        return 1.0 - below
    if adjust == "mvt" and m > 1:
        return mvt_p(t, df, corr)
    if adjust == "sidak":
        return -np.expm1(m * np.log1p(-p))  # 1 − (1 − p)^m, accurate for small p
    if adjust == "bonferroni":
        return np.minimum(1.0, m * p)
    if adjust in ("holm", "fdr"):
        from scipy.stats import false_discovery_control

        if adjust == "fdr":
            return false_discovery_control(p, method="bh")
        order = np.argsort(p)
        stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])  # R's p.adjust("holm")
        out = np.empty(m)
        out[order] = np.minimum(1.0, stepped)
        return out
    return p


def mvt_p(t: np.ndarray, df: np.ndarray, corr: np.ndarray, seed: int = 20261203) -> np.ndarray:
    """emmeans' ``"mvt"`` adjustment of two-sided t ratios ``t`` whose estimates have the
    correlation ``corr``: ``1 − P(|T_j| ≤ |t_i| for all j)``, ``T ~ t_ν(0, corr)``, with emmeans'
    ``.fix.df`` (``ν = ⌊max(1, df_i) + 0.25⌋``; a normal beyond 9999 df), each probability by
    :func:`box_probability`."""
    R = np.asarray(corr, dtype=float)
    out = np.empty(len(t))
    for i, (ti, di) in enumerate(zip(t, df)):
        nu = 0 if not np.isfinite(di) or di > 9999 else int(np.floor(max(1.0, di) + 0.25))
        inside, _ = box_probability(np.full(len(t), abs(float(ti))), R, nu, seed=seed)
        out[i] = min(max(1.0 - inside, 0.0), 1.0)
    return out


def box_probability(a: np.ndarray, R: np.ndarray, nu: int, n: int = 2**15, reps: int = 8,
                    seed: int = 0) -> tuple[float, float]:
    """``P(|T_j| ≤ a_j for all j)`` for ``T ~ t_ν(0, R)`` (``ν = 0``: the normal ``N(0, R)``).

    Genz's separation of variables (as mvtnorm's ``GenzBretz``): with ``R = C C'``, ``C``
    lower triangular, ``T = C Y / S`` (``Y`` standard normal, ``S = √(χ²_ν/ν)``), the
    probability is ``E[Π_k (Φ(u_k) − Φ(l_k))]`` where the limits of ``Y_k`` depend on
    ``Y_1..Y_{k−1}`` and ``S``, averaged over scrambled Sobol' points (``reps`` independent
    scramblings of ``n`` points, a fixed ``seed``: the same table every call). Returns the
    probability and its standard error (from the spread of the ``reps`` estimates): about
    1e-7 for a nonsingular ``R``, up to 1e-5 for a singular one, where emmeans' own call of
    mvtnorm stops at an absolute error of 1e-3. A singular ``R`` (pairwise
    differences of ``k > 2`` means have rank ``k − 1``) as Genz and Bretz handle it: a row of
    ``C`` with a zero pivot constrains the last variable it involves, ``|Σ_{j≤k} c_ij Y_j| ≤
    a_i S``, so ``Y_k``'s interval is the intersection of every row that ends at ``k``."""
    from scipy.special import ndtr, ndtri
    from scipy.stats import chi2, qmc

    C = _semidefinite_cholesky(R)
    cols = np.flatnonzero(np.diag(C) > 0)  # the independent variables, in order
    ends: dict[int, list[int]] = {k: [] for k in range(len(cols))}
    for i in range(len(a)):
        nz = np.flatnonzero(np.abs(C[i, cols]) > 1e-12 * np.abs(C[i]).max(initial=0.0))
        if nz.size:  # a row of zeros is a contrast without variance: always inside
            ends[int(nz[-1])].append(i)
    Cr = C[:, cols]
    estimates = []
    for rep in range(reps):
        W = qmc.Sobol(d=len(cols) + (nu > 0), scramble=True, seed=np.random.default_rng([seed, rep])).random(n)
        S = np.sqrt(chi2.ppf(W[:, -1], nu) / nu) if nu > 0 else np.ones(n)
        Y = np.zeros((n, len(cols)))
        f = np.ones(n)
        for k in range(len(cols)):
            lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
            for i in ends[k]:
                shift = Y[:, :k] @ Cr[i, :k]
                c = Cr[i, k]
                l, u = (-a[i] * S - shift) / c, (a[i] * S - shift) / c
                lo, hi = np.maximum(lo, np.minimum(l, u)), np.minimum(hi, np.maximum(l, u))
            d, e = ndtr(lo), ndtr(hi)
            f *= np.maximum(e - d, 0.0)
            Y[:, k] = ndtri(np.clip(d + W[:, k] * np.maximum(e - d, 0.0), 1e-300, 1 - 1e-16))
        estimates.append(f.mean())
    return float(np.mean(estimates)), float(np.std(estimates, ddof=1) / np.sqrt(reps))


def _semidefinite_cholesky(R: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """Lower-triangular ``C`` with ``C C' = R`` for a positive semidefinite ``R``: a pivot below
    ``tol`` (a row that is a combination of earlier rows) is 0 and its column is 0."""
    m = R.shape[0]
    C = np.zeros((m, m))
    for i in range(m):
        for j in range(i):
            if C[j, j] > 0:
                C[i, j] = (R[i, j] - C[i, :j] @ C[j, :j]) / C[j, j]
        rest = R[i, i] - C[i, :i] @ C[i, :i]
        C[i, i] = np.sqrt(rest) if rest > tol * R[i, i] else 0.0
    return C
