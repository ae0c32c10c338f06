"""The data with the fit: spaghetti plot, effect plot."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hierlmm.errors import HierlmmError
from hierlmm.plots._common import figure, pick_group

__all__ = ["spaghetti", "effect"]


def spaghetti(fit, x: str, group: str | None = None, max_groups: int = 60, max_lines: int = 8):
    """Data per group (points) with each group's conditional fitted line and the population
    line(s) ``Xβ̂`` over ``x``: one per combination of the levels of the factors in the fixed
    part (at most ``max_lines``; else at their reference levels), other numeric covariates at
    their mean (said in the legend). Groups in muted colours; with more than ``max_groups``,
    that many spread over the levels are drawn, and the title says so."""
    fit.model.require("spaghetti()", needs="rows")
    import itertools

    group = pick_group(fit, group)
    d = fit.design
    if x not in d.data.columns:
        raise HierlmmError(f"{x!r} is not a column of the model's data")
    term = next(t for t in d.terms if t.group == group)
    xv = d.data[x].to_numpy(dtype=float)
    cond = fit.fitted("conditional").to_numpy()
    fig, axes = figure(width=7, height=5)
    ax = axes[0, 0]
    cmap = __import__("matplotlib").colormaps["viridis"]
    shown = np.unique(np.linspace(0, term.m - 1, min(term.m, max_groups)).round().astype(int))
    for j in shown:
        sel = np.flatnonzero(term.codes == j)
        o = sel[np.argsort(xv[sel])]
        color = cmap(j / max(term.m - 1, 1))
        ax.scatter(xv[o], d.y[o], s=8, color=color, alpha=0.5)
        ax.plot(xv[o], cond[o], color=color, lw=0.8, alpha=0.8)
    factors = [c for c in fixed_columns(d) if c != x and isinstance(d.data[c].dtype, pd.CategoricalDtype)]
    combos = list(itertools.product(*[d.data[c].cat.categories for c in factors]))
    held = {}
    if len(combos) > max_lines:
        combos = [tuple(d.data[c].cat.categories[0] for c in factors)]
        held.update({c: combos[0][i] for i, c in enumerate(factors)})
    numeric = [c for c in fixed_columns(d) if c != x and c not in factors]
    held.update({c: f"{d.data[c].mean():.3g}" for c in numeric})
    grid = np.linspace(np.nanmin(xv), np.nanmax(xv), 50)
    for i, combo in enumerate(combos):
        mu = population_line(fit, x, grid, dict(zip(factors, combo)))
        label = ", ".join(f"{c} = {v}" for c, v in zip(factors, combo)) if len(combos) > 1 else "population mean"
        ax.plot(grid, mu, color="black", lw=2.5, ls=["-", "--", ":", "-."][i % 4], label=label)
    ax.set_xlabel(x)
    ax.set_ylabel(d.response)
    sampled = f" ({len(shown)} of {term.m} groups shown)" if len(shown) < term.m else ""
    ax.set_title(f"{d.response} by {group}: data and conditional fits{sampled}", fontsize=10)
    if held:
        ax.plot([], [], " ", label="held at " + ", ".join(f"{c} = {v}" for c, v in held.items()))
    ax.legend(fontsize=8)
    return fig


def fixed_columns(design) -> list[str]:
    """The data columns the fixed part uses, in the data's order (not the response)."""
    from hierlmm.design import _required

    used = _required(design.parsed.fixed_formula, "fixed part", design.data.columns) - {design.parsed.response}
    return [c for c in design.data.columns if c in used]


def population_line(fit, x: str, grid: np.ndarray, at: dict) -> np.ndarray:
    """``Xβ̂`` along ``grid`` of ``x``: the factors in ``at`` at those levels, other factors at
    their reference level, other numeric columns at their mean."""
    return _grid_matrix(fit.design, x, grid, at) @ fit.fixef.to_numpy()


def _grid_matrix(d, x, grid, at):
    n = len(grid)
    new = {}
    for c in d.data.columns:
        col = d.data[c]
        if c == x:
            new[c] = grid
        elif isinstance(col.dtype, pd.CategoricalDtype):
            new[c] = pd.Categorical([at.get(c, col.cat.categories[0])] * n, categories=col.cat.categories)
        else:
            new[c] = np.full(n, col.mean())
    return d.fixed_matrix(pd.DataFrame(new))


def effect(fit, x: str, by: str | None = None, level: float = 0.95, n: int = 50):
    """The marginal mean ``Xβ̂`` over covariate ``x`` (per level of factor ``by``) with
    pointwise ``level`` bands from ``Var(β̂)``; other numeric covariates at their mean,
    other factors at their reference level."""
    from scipy.stats import norm

    d = fit.design
    data = d.data
    if x not in data.columns:
        raise HierlmmError(f"{x!r} is not a column of the model's data")
    grid = np.linspace(data[x].min(), data[x].max(), n)
    levels = list(data[by].cat.categories) if by is not None else [None]
    fig, axes = figure(width=6, height=4.5)
    ax = axes[0, 0]
    z = norm.ppf(0.5 + level / 2)
    V = fit.vcov.to_numpy()
    for i, lev in enumerate(levels):
        X = _grid_matrix(d, x, grid, {by: lev} if by is not None else {})
        mu = X @ fit.fixef.to_numpy()
        se = np.sqrt(np.einsum("ij,jk,ik->i", X, V, X))
        label = f"{by} = {lev}" if by else "marginal mean"
        ax.plot(grid, mu, color=f"C{i}", label=label)
        ax.fill_between(grid, mu - z * se, mu + z * se, color=f"C{i}", alpha=0.2)
    ax.set_xlabel(x)
    ax.set_ylabel(f"E[{d.response}]")
    ax.set_title(f"effect of {x} ({int(level * 100)}% pointwise bands)", fontsize=10)
    ax.legend(fontsize=8)
    return fig
