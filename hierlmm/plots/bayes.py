"""Pictures of the Bayesian side: posterior densities, plug-in vs full, the limit to REML."""

from __future__ import annotations

import numpy as np

from hierlmm.plots._common import figure, label_size, pick_group

__all__ = ["posterior_densities", "posterior_grid", "plugin_vs_full", "limit_path"]


def posterior_densities(fit, post, mode=None):
    """Histogram of the posterior of each variance parameter (and σ²), with the REML/ML
    estimate, the median and the posterior mode marked. The mode is that of the joint density
    of (σ², D) in the prior's coordinates (REML under both flat priors), a point of the joint
    space: a 1-D marginal's own peak need not sit there, and the legend says so. Heavy right
    tails are cut at the 99th percentile for display."""
    from hierlmm.bayes.mode import posterior_mode

    if mode is None:
        mode = posterior_mode(post.model, prior=post.prior)
    from hierlmm.bayes.mode import COORDINATES

    coords = COORDINATES[mode.coordinates]
    vc = fit.varcorr
    mvc = mode.varcorr()
    panels = []
    for (_, r), (_, m) in zip(vc.iterrows(), mvc.iterrows()):
        if r.var2 is not None and not (isinstance(r.var2, float) and np.isnan(r.var2)):
            continue
        if r.grp == "Residual":
            draws, label = post.draws("sigma2"), "σ² (residual)"
        else:
            t = next(t for t in fit.design.terms if t.label == r.grp)
            draws, label = post.draws(f"var_{r.grp}")[:, t.names.index(r.var1)], f"var {r.grp}: {r.var1}"
        panels.append((label, draws, r.vcov, m.vcov))
    fig, axes = figure(1, len(panels), width=3.6 * len(panels), height=4.2)
    for ax, (label, draws, est, mo) in zip(axes[0], panels):
        hi = np.quantile(draws, 0.99)
        ax.hist(draws[draws <= hi], bins=60, density=True, color="C0", alpha=0.6)
        ax.axvline(est, color="C3", lw=2, label=f"{fit.method} {est:.3g}")
        ax.axvline(mo, color="black", lw=1.2, ls="--", label=f"joint mode {mo:.3g} (in {coords}; not\n"
                                                            "this marginal's peak)")
        ax.axvline(np.median(draws), color="C2", lw=1.2, ls=":", label=f"median {np.median(draws):.3g}")
        ax.set_title(label, fontsize=10)
        ax.set_yticks([])
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), frameon=False)  # off the bars
    fig.suptitle(f"posterior under prior={post.prior!r}", fontsize=10)
    return fig


def posterior_grid(grid, post=None):
    """The exact marginal posterior density of each variance (``model.posterior_grid()``, by
    quadrature) with its 95% interval shaded, its median and the REML estimate marked; with
    ``post`` (a posterior under the same prior), the MCMC draws as a histogram beside the
    curve. Under ``prior="flat"`` the REML estimate is the joint mode of (τ², σ²), not each
    marginal's peak: the picture of REML as the mode of a posterior. A variance whose 95%
    interval spans more than a factor 30 is drawn on a log10 axis (density per unit of
    log10 of the variance, the histogram alike); otherwise the right tail is cut at the
    99.5th percentile."""
    rows = list(grid.index)
    fig, axes = figure(1, len(rows), width=3.8 * len(rows), height=4.2)
    for ax, name in zip(axes[0], rows):
        dens = grid.attrs["density"][name]
        x, f = dens.x.to_numpy(), dens.density.to_numpy()
        log = grid.loc[name, "q975"] > 30 * grid.loc[name, "q025"]
        hi = x[-1] if log else float(np.interp(0.995, _cdf(dens), x))
        to = (lambda v: np.log10(v)) if log else (lambda v: v)
        keep = x <= hi
        xs, fs = to(x[keep]), (f * x * np.log(10))[keep] if log else f[keep]
        if post is not None:
            draws = post.draws("sigma2") if name == "Residual" else _term_draws(post)
            shown = draws[(draws > 0) & (draws <= hi)]
            ax.hist(to(shown), bins=60, density=True, color="C0", alpha=0.45, label=f"MCMC ({len(draws)} draws)")
        ax.plot(xs, fs, color="black", lw=1.6, label="exact (quadrature)")
        inside = (x[keep] >= grid.loc[name, "q025"]) & (x[keep] <= grid.loc[name, "q975"])
        ax.fill_between(xs[inside], fs[inside], color="0.7", alpha=0.5, label="95% interval")
        est, med = grid.loc[name, "reml"], grid.loc[name, "median"]
        if est > 0:
            ax.axvline(to(est), color="C3", lw=2, label=f"REML {est:.3g}")
        ax.axvline(to(med), color="C2", lw=1.2, ls=":", label=f"median {med:.3g}")
        what = "Residual variance" if name == "Residual" else f"variance: {name}"
        ax.set_title(what + (" (axis: log10 of it)" if log else ""), fontsize=10)
        if not log:  # from 0 where the curve starts near it, else from a little below its start
            ax.set_xlim(0 if x[0] < 0.25 * hi else x[0] - 0.1 * (hi - x[0]), hi)
        ax.set_yticks([])
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False, ncol=2)
    fig.suptitle(f"marginal posteriors under prior={grid.attrs.get('prior', 'flat')!r}", fontsize=10)
    return fig


def _cdf(dens) -> np.ndarray:
    """The CDF along a density's grid (trapezoids; the grid covers 0.05%–99.95%)."""
    steps = np.diff(dens.x) * (dens.density.to_numpy()[1:] + dens.density.to_numpy()[:-1]) / 2
    return 0.0005 + 0.999 * np.concatenate([[0.0], np.cumsum(steps)]) / steps.sum()


def _term_draws(post) -> np.ndarray:
    """Draws of the variance of the model's one scalar term."""
    t = post.model.design.terms[0]
    return post.draws(f"var_{t.label}")[:, 0]


def plugin_vs_full(fit, post, group: str | None = None, term: str | None = None, level: float = 0.95,
                   max_levels: int = 40):
    """Intervals for each level's effect: plug-in posterior (θ, σ fixed at the estimates,
    β integrated) beside the full posterior (everything integrated). With more than
    ``max_levels`` levels, that many spread evenly over the sorted levels are drawn and the
    title says so; the legend sits below the axes."""
    from hierlmm.bayes.compare import compare_ranef

    group = pick_group(fit, group)
    table = compare_ranef(fit, post, level=level)
    table = table[table.group == group]
    term = term or table.term.iloc[0]
    table = table[table.term == term].sort_values("post_mean").reset_index(drop=True)
    from scipy.stats import norm

    z = norm.ppf(0.5 + level / 2)
    total = len(table)
    if total > max_levels:
        table = table.iloc[np.unique(np.linspace(0, total - 1, max_levels).round().astype(int))].reset_index(drop=True)
    m = len(table)
    fig, axes = figure(width=6, height=max(3.0, 0.2 * m + 1.5))
    ax = axes[0, 0]
    y = np.arange(m)
    ax.errorbar(table.plugin_mean, y - 0.15, xerr=z * table.plugin_sd, fmt="o", ms=3, lw=1,
                label="plug-in (θ̂, σ̂ fixed)")
    ax.errorbar(table.post_mean, y + 0.15,
                xerr=[table.post_mean - table.post_low, table.post_high - table.post_mean],
                fmt="s", ms=3, lw=1, label="full posterior")
    ax.set_yticks(y, table.level, fontsize=label_size(m))
    ax.axvline(0, color="grey", lw=1)
    ax.set_xlabel(f"{group}: {term} ({int(level * 100)}% intervals)")
    if m < total:
        ax.set_title(f"{m} of {total} levels shown, evenly over the sorted posterior means", fontsize=9)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=8)
    return fig


def limit_path(model, s_values=(1, 3, 10, 30, 100, 300, 1000, 3000), prior: str = "flat"):
    """How the mode of (σ², D) with β ~ N(0, s²I) integrated out approaches REML as s → ∞.

    One panel per variance: the relative distance ``|v_s − v_REML| / v_REML`` against s, both
    on log scales, so that the limit is visible whatever the variance's size (on the variance's
    own scale the last points differ in the 6th digit). The dashed line is the numerical floor:
    the same distance for the flat prior's mode, which equals REML exactly, found by the same
    optimiser. s is in the units of β: where a coefficient is far from 0 in those units (an
    intercept of 250), small s shrinks it to 0 and the variances absorb the difference."""
    fit = model.fit()
    reml = fit.varcorr
    paths = np.array([model.posterior_mode(prior=prior, beta_prior_sd=s).varcorr().vcov.to_numpy()
                      for s in s_values])
    floor = model.posterior_mode(prior=prior).varcorr().vcov.to_numpy()
    keep = [i for i, (_, r) in enumerate(reml.iterrows())
            if r.var2 is None or (isinstance(r.var2, float) and np.isnan(r.var2))]
    fig, axes = figure(1, len(keep), width=3.4 * len(keep), height=3.2)
    tiny = np.finfo(float).eps
    for ax, i in zip(axes[0], keep):
        r = reml.iloc[i]
        rel = np.maximum(np.abs(paths[:, i] / r.vcov - 1), tiny)
        ax.plot(s_values, rel, "o-", ms=3, label="mode with β ~ N(0, s²I)")
        ax.axhline(max(abs(floor[i] / r.vcov - 1), tiny), color="C3", ls="--", lw=1,
                   label="numerical floor (flat-prior mode)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("prior SD s of β")
        ax.set_ylabel("|mode − REML| / REML")
        ax.set_title(f"{r.grp}" + ("" if r.grp == "Residual" else f": {r.var1}"), fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle("the posterior mode of the variances tends to REML as the prior on β flattens", fontsize=10)
    return fig
