"""The diagnostic set of every mixed-model course: QQ plots, residuals vs fitted, by group."""

from __future__ import annotations

import numpy as np

from hierlmm.plots._common import figure, label_size, normal_quantiles, pick_group

__all__ = ["qq_ranef", "qq_residuals", "residuals_vs_fitted", "residuals_by_group", "diagnostics"]


def _qq(ax, values, title):
    v = np.sort(np.asarray(values, dtype=float))
    q = normal_quantiles(len(v))
    ax.scatter(q, v, s=12, alpha=0.8)
    if len(v) > 1 and np.std(v) > 0:
        slope, intercept = np.polyfit(q, v, 1) if len(v) > 2 else (np.std(v), np.mean(v))
        ax.plot(q, intercept + slope * q, color="C1", lw=1)
    ax.set_xlabel("standard normal quantiles")
    ax.set_ylabel("sample quantiles")
    ax.set_title(title, fontsize=10)


def _rows(fit, what: str) -> None:
    """A plot of the rows refuses a model on a Dask DataFrame (it would gather every row)."""
    fit.model.require(what, needs="rows", instead="plot a sample: r = fit.residuals().sample(frac=0.001).compute()")


def qq_ranef(fit):
    """Normal QQ plot of the BLUPs, one panel per grouping factor and term."""
    panels = [(g, c, df[c]) for g, df in fit.ranef().items() for c in df.columns]
    fig, axes = figure(1, len(panels), width=3.2 * len(panels), height=3.2)
    for ax, (g, c, v) in zip(axes[0], panels):
        _qq(ax, v, f"{g}: {c}")
    return fig


def qq_residuals(fit, kind: str = "conditional"):
    """Normal QQ plot of the scaled residuals."""
    _rows(fit, "qq_residuals()")
    fig, axes = figure(width=4, height=4)
    _qq(axes[0, 0], fit.residuals(kind=kind, scaled=True), "scaled residuals")
    return fig


def residuals_vs_fitted(fit, kind: str = "conditional"):
    """Scaled residuals against fitted values, with a zero line."""
    _rows(fit, "residuals_vs_fitted()")
    fig, axes = figure(width=5, height=4)
    ax = axes[0, 0]
    ax.scatter(fit.fitted(kind), fit.residuals(kind=kind, scaled=True), s=10, alpha=0.7)
    ax.axhline(0, color="grey", lw=1)
    ax.set_xlabel("fitted values")
    ax.set_ylabel("scaled residuals")
    return fig


MANY_GROUPS = 40  # above this, per-group box plots become a smear: medians and quartiles instead


def residuals_by_group(fit, group: str | None = None):
    """Scaled residuals per level of a grouping factor, levels ordered by median: box plots
    up to 40 levels; beyond, each level's median and quartiles as a point and a bar (no
    labels), in a figure of bounded size."""
    _rows(fit, "residuals_by_group()")
    group = pick_group(fit, group)
    term = next(t for t in fit.design.terms if t.group == group)
    fig, axes = figure(width=max(5, min(0.18 * term.m, 8 if term.m > MANY_GROUPS else 16)), height=4)
    _by_group(axes[0, 0], fit, term)
    return fig


def _by_group(ax, fit, term):
    """The scaled residuals of each level of ``term``'s grouping factor, sorted by median."""
    r = fit.residuals(scaled=True).to_numpy()
    order_rows = np.argsort(term.codes, kind="stable")
    data = np.split(r[order_rows], np.cumsum(np.bincount(term.codes, minlength=term.m))[:-1])
    q = np.array([np.quantile(d, [0.25, 0.5, 0.75]) for d in data])
    order = np.argsort(q[:, 1], kind="stable")
    m = term.m
    if m <= MANY_GROUPS:
        ax.boxplot([data[j] for j in order], widths=0.6)
        ax.set_xticks(np.arange(1, m + 1), [term.levels[j] for j in order], rotation=90, fontsize=label_size(m))
        ax.set_xlabel(term.group)
    else:
        x = np.arange(m)
        ax.vlines(x, q[order, 0], q[order, 2], color="C0", lw=0.6, alpha=0.6, label="quartiles")
        ax.plot(x, q[order, 1], "o", ms=1.5, color="C0", label="median")
        ax.set_xticks([])
        ax.set_xlabel(f"{term.group}: {m} levels, sorted by median")
        ax.legend(fontsize=7, loc="upper left")
    ax.axhline(0, color="grey", lw=1)
    ax.set_ylabel("scaled residuals")


def diagnostics(fit):
    """The four diagnostics in one figure: QQ of BLUPs (first term), QQ of residuals,
    residuals vs fitted, residuals by group."""
    _rows(fit, "diagnostics()")
    fig, axes = figure(2, 2, width=10, height=8)
    g, df = next(iter(fit.ranef().items()))
    _qq(axes[0, 0], df.iloc[:, 0], f"BLUPs: {g} {df.columns[0]}")
    _qq(axes[0, 1], fit.residuals(scaled=True), "scaled residuals")
    ax = axes[1, 0]
    ax.scatter(fit.fitted(), fit.residuals(scaled=True), s=10, alpha=0.7)
    ax.axhline(0, color="grey", lw=1)
    ax.set_xlabel("fitted values")
    ax.set_ylabel("scaled residuals")
    _by_group(axes[1, 1], fit, fit.design.terms[0])
    return fig
