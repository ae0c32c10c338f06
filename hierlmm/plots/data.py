"""The data with the fit: spaghetti plot, effect plot."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hierlmm.errors import HierlmmError
from hierlmm.plots._common import figure, pick_group

__all__ = ["spaghetti", "effect"]


def spaghetti(fit, x: str, group: str | None = None, max_groups: int = 60):
    """Data per group (points) with each group's conditional fitted line and the marginal
    (population) line; one panel, groups in muted colours (at most ``max_groups`` drawn)."""
    group = pick_group(fit, group)
    d = fit.design
    if x not in d.data.columns:
        raise HierlmmError(f"{x!r} is not a column of the model's data")
    term = next(t for t in d.terms if t.group == group)
    xv = d.data[x].to_numpy(dtype=float)
    cond = fit.fitted("conditional").to_numpy()
    marg = fit.fitted("marginal").to_numpy()
    fig, axes = figure(width=7, height=5)
    ax = axes[0, 0]
    cmap = __import__("matplotlib").colormaps["viridis"]
    shown = range(min(term.m, max_groups))
    for j in shown:
        sel = np.flatnonzero(term.codes == j)
        o = sel[np.argsort(xv[sel])]
        color = cmap(j / max(term.m - 1, 1))
        ax.scatter(xv[o], d.y[o], s=8, color=color, alpha=0.5)
        ax.plot(xv[o], cond[o], color=color, lw=0.8, alpha=0.8)
    o = np.argsort(xv)
    ax.plot(xv[o], marg[o], color="black", lw=2.5, label="marginal (population) mean")
    ax.set_xlabel(x)
    ax.set_ylabel(d.response)
    ax.set_title(f"{d.response} by {group}: data and conditional fits", fontsize=10)
    ax.legend(fontsize=8)
    return fig


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
        new = {}
        for c in data.columns:
            col = data[c]
            if c == x:
                new[c] = grid
            elif c == by:
                new[c] = pd.Categorical([lev] * n, categories=col.cat.categories)
            elif isinstance(col.dtype, pd.CategoricalDtype):
                new[c] = pd.Categorical([col.cat.categories[0]] * n, categories=col.cat.categories)
            else:
                new[c] = np.full(n, col.mean())
        new = pd.DataFrame(new)
        X = d.fixed_matrix(new)
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
