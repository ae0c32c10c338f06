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

__all__ = ["emmeans", "emtrends", "reference_grid"]


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
        if adjust == "mvt":
            raise HierlmmError("emmeans adjusts consecutive contrasts by 'mvt' (the multivariate t of mvtnorm), "
                               "which hierlmm does not implement: pass adjust= ('sidak', 'holm', 'bonferroni', "
                               "'fdr', 'scheffe' or 'none')")
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
    return pd.DataFrame(order, columns=keys), L


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


ADJUST = ("tukey", "dunnettx", "scheffe", "sidak", "bonferroni", "holm", "fdr", "none")
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
        extra = " (emmeans' 'mvt' needs the multivariate t of mvtnorm: not implemented)" if adjust == "mvt" else ""
        raise HierlmmError(f"adjust must be one of {', '.join(map(repr, ADJUST))}, got {adjust!r}{extra}")
    groups = labels.groupby(by, sort=False).indices if by else {(): np.arange(len(labels))}
    numeric = {s: all(_is_number(v) for v in labels[s].unique()) for s in specs}
    rows, family, tests = [], 0, 0
    for key, idx in groups.items():
        idx = list(idx)
        names = [_side(" ".join(_label(s, labels.loc[i, s], numeric[s]) for s in specs)) for i in idx]
        C, contrast_names = contrast_matrix(method, names)
        group = []
        for c, name in zip(C, contrast_names):
            l = c @ L[idx]
            est, se = float(l @ beta), float(np.sqrt(l @ V @ l))
            row = {"contrast": name}
            row.update(dict(zip(by, key if isinstance(key, tuple) else (key,))))
            row.update({"estimate": est, "SE": se, "df": float(df_of(l)), "t.ratio": est / se})
            group.append(row)
        t = np.array([r["t.ratio"] for r in group])
        df = np.array([r["df"] for r in group])
        rank = int(np.linalg.matrix_rank(C))
        for r, p in zip(group, adjusted_p(t, df, adjust, len(idx), rank=rank)):
            r["p.value"] = p
        rows.extend(group)
        family, tests = len(idx), len(group)
    return pd.DataFrame(rows), family, tests


def adjusted_p(t: np.ndarray, df: np.ndarray, adjust: str, k: int, rank: int | None = None) -> np.ndarray:
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
