"""Random effects: caterpillar plot with posterior intervals; the shrinkage plot."""

from __future__ import annotations

import numpy as np

from hierlmm.plots._common import figure, label_size, pick_group

__all__ = ["caterpillar", "shrinkage"]


def caterpillar(fit, group: str | None = None, beta: str = "fixed", level: float = 0.95):
    """BLUPs of one grouping factor, sorted, with intervals from ``fit.ranef_posterior(beta)``.

    One panel per term, all in one order (by the first term, as lme4's ``dotplot(ranef(.))``),
    so that a level sits on the same row in every panel; the figure grows with the number of
    levels and shrinks its labels so that 50+ groups stay readable.
    """
    group = pick_group(fit, group)
    post = fit.ranef_posterior(beta=beta)[group]
    lo, hi = post.interval(level)
    mean = post.mean
    k = mean.shape[1]
    m = mean.shape[0]
    many = m > 100  # too many to label: draw them as a band, sorted
    fig, axes = figure(1, k, width=3.6 * k, height=max(3.0, min(0.16 * m + 1, 10 if many else 20)), sharey=False)
    order = np.argsort(mean.iloc[:, 0].to_numpy(), kind="stable")
    for ax, col in zip(axes[0], mean.columns):
        y = np.arange(m)
        ax.errorbar(mean[col].to_numpy()[order], y, elinewidth=0.6 if many else 1,
                    xerr=[mean[col].to_numpy()[order] - lo[col].to_numpy()[order],
                          hi[col].to_numpy()[order] - mean[col].to_numpy()[order]],
                    fmt="o", ms=2 if many else 3, capsize=0)
        ax.axvline(0, color="grey", lw=1)
        if many:
            ax.set_yticks([])
            ax.set_ylabel(f"{m} levels, sorted by {mean.columns[0]}")
        else:
            ax.set_yticks(y, [str(mean.index[i]) for i in order], fontsize=label_size(m))
        ax.set_title(f"{group}: {col}", fontsize=10)
        ax.set_xlabel(f"b ({int(level * 100)}% interval, β {beta})")
    return fig


def _shown(m: int, max_groups: int) -> tuple[np.ndarray, str]:
    """Which of ``m`` groups to draw (all, or ``max_groups`` chosen at random with a fixed
    seed, in their order) and the note for the title."""
    if m <= max_groups:
        return np.arange(m), ""
    keep = np.sort(np.random.default_rng(0).choice(m, size=max_groups, replace=False))
    return keep, f"; {max_groups} of {m} groups shown"


def shrinkage(fit, group: str | None = None, max_groups: int | None = None):
    """Per-group least-squares estimates vs the model's group-level predictions.

    Random intercept: each group's mean of ``y − Xβ̂`` (no pooling) against ``b̂_i``, with
    the shrinkage factor ``n_iσ_u²/(σ² + n_iσ_u²)`` (its range over the groups) in the title.
    Intercept and slope: each group's own least-squares line of ``y`` less the fixed effects
    that are not in the random term (other covariates, a factor's shifts, at ``β̂``), so that
    both sides estimate the same thing, against ``coef()``'s ``β̂ + b̂_i`` of those two
    columns; arrows point from the first to the second, toward the population value.

    ``max_groups`` (default 60 for the intercept plot, 200 for the slope plot): more groups
    are sampled (fixed seed) and the title says how many are shown.
    """
    fit.model.require("shrinkage()", needs="rows")
    group = pick_group(fit, group)
    terms = [t for t in fit.design.terms if t.group == group]
    names = [n for t in terms for n in t.names]
    d = fit.design
    re = fit.ranef()[group]
    if names == ["(Intercept)"]:
        t = terms[0]
        r = d.y - d.X @ fit.fixef.to_numpy()
        n_i = np.bincount(t.codes, minlength=t.m)
        ols = np.bincount(t.codes, weights=r, minlength=t.m) / n_i
        tau2 = fit.covariance_matrices()[t.label].to_numpy()[0, 0]
        factor = n_i * tau2 / (fit.sigma**2 + n_i * tau2)
        keep, note = _shown(t.m, max_groups or 60)
        fig, axes = figure(width=max(6, min(0.25 * len(keep), 16)), height=4.5)
        ax = axes[0, 0]
        x = np.arange(len(keep))
        blup = re.iloc[keep, 0].to_numpy()
        ax.scatter(x, ols[keep], label="group mean of y − Xβ̂ (no pooling)", color="C0")
        ax.scatter(x, blup, label="BLUP b̂ (partial pooling)", color="C1")
        for i, j in enumerate(keep):
            ax.annotate("", xy=(x[i], blup[i]), xytext=(x[i], ols[j]),
                        arrowprops={"arrowstyle": "->", "color": "grey", "lw": 0.8})
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x, [t.levels[j] for j in keep], rotation=90, fontsize=label_size(len(keep)))
        ax.set_xlabel(group)
        ax.set_ylabel("group effect")
        span = (f"{factor.min():.2f} in every group" if np.ptp(factor) < 0.005
                else f"{factor.min():.2f} to {factor.max():.2f}")
        ax.set_title(f"shrinkage factor n·τ²/(σ² + n·τ²): {span}{note}", fontsize=10)
        ax.legend(fontsize=8)
        return fig
    # intercept and one slope: per-group least squares lines
    t = terms[0]
    if len(names) != 2 or names[0] != "(Intercept)":
        from hierlmm.errors import HierlmmError

        raise HierlmmError("shrinkage plots need (1 | g) or (1 + x | g) for the grouping factor")
    slope_col = names[1]
    x = t.Z[:, 1] if t.k == 2 else terms[1].Z[:, 0]
    beta = fit.fixef
    other = ~beta.index.isin(names)  # R names a level alike in either coding
    r = d.y - d.X[:, other] @ beta.to_numpy()[other]  # y less the fixed effects outside the term
    own = np.full((t.m, 2), np.nan)
    for j in range(t.m):
        sel = t.codes == j
        if sel.sum() >= 2 and np.ptp(x[sel]) > 0:
            own[j] = np.polyfit(x[sel], r[sel], 1)[::-1]
    pop = np.array([beta.get("(Intercept)", 0.0), beta.get(slope_col, 0.0)])
    pred = fit.coef()[group][["(Intercept)", slope_col]].to_numpy()
    keep, note = _shown(t.m, max_groups or 200)
    own, pred = own[keep], pred[keep]
    fig, axes = figure(width=6, height=5)
    ax = axes[0, 0]
    lab = "within-group least squares" + (" (other fixed effects at β̂ removed)" if other.any() else "")
    ax.scatter(own[:, 0], own[:, 1], label=lab, color="C0")
    ax.scatter(pred[:, 0], pred[:, 1], label="β̂ + b̂ (mixed model, coef())", color="C1")
    for j in range(len(keep)):
        if np.all(np.isfinite(own[j])):
            ax.annotate("", xy=pred[j], xytext=own[j], arrowprops={"arrowstyle": "->", "color": "grey", "lw": 0.8})
    ax.scatter([pop[0]], [pop[1]], marker="+", s=150, color="black", label="population β̂")
    ax.set_xlabel("(Intercept)")
    ax.set_ylabel(slope_col)
    ax.legend(fontsize=8)
    ax.set_title(f"shrinkage toward the population line ({group}{note})", fontsize=10)
    return fig
