"""What each covariance structure implies: the correlation matrix of one group's ``y_i``,
fits side by side (random intercept, compound symmetry, random slope, unstructured, ...)."""

from __future__ import annotations

import numpy as np

from hierlmm.plots._common import figure, label_size

__all__ = ["implied_correlation"]

# above this many rows of a group the cells are not annotated with their values
_ANNOTATE_MAX = 8


def implied_correlation(fits, level, group: str | None = None, labels: str | None = None):
    """Heat maps of ``corr(y_i)`` implied by each fit for the rows of ``level`` of ``group``
    (:meth:`hierlmm.LMMResult.marginal_corr`), one panel per fit, on one colour scale from −1
    to 1; values written in the cells of groups of at most 8 rows.

    Parameters
    ----------
    fits : dict of str to LMMResult, or one LMMResult
        The panels' titles and fits (of the same data).
    level, group
        The group's level and its grouping factor (default: each fit's first).
    labels : str, optional
        A column of the data whose values label the rows (e.g. the visit); the rows' index
        otherwise.
    """
    if not isinstance(fits, dict):
        fits = {"": fits}
    mats = {name: f.marginal_corr(level, group=group) for name, f in fits.items()}
    n = len(mats)
    size = max(len(m) for m in mats.values())
    side = min(4.2, 1.2 + 0.45 * size)
    fig, axes = figure(1, n, width=min(16.0, side * n + 1.2), height=side + 0.5)
    image = None
    for ax, (name, R), fit in zip(axes[0], mats.items(), fits.values()):
        values = R.to_numpy()
        image = ax.imshow(values, vmin=-1, vmax=1, cmap="RdBu_r")
        if labels is not None and labels not in fit.model.data.columns:
            from hierlmm.errors import HierlmmError

            raise HierlmmError(f"labels={labels!r} is not a column of the data")
        names = ([str(v) for v in fit.model.data.loc[R.index, labels]] if labels is not None
                 else [str(v) for v in R.index])
        step = max(1, int(np.ceil(len(names) / 30)))  # at most 30 tick labels
        ticks = np.arange(0, len(names), step)
        ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90, fontsize=label_size(len(names)))
        ax.set_yticks(ticks, [names[i] for i in ticks], fontsize=label_size(len(names)))
        if len(names) <= _ANNOTATE_MAX:
            for i in range(len(names)):
                for j in range(len(names)):
                    ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if abs(values[i, j]) > 0.6 else "black")
        ax.set_title(name, fontsize=10)
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="correlation")
    title = f"implied corr(y_i) of {level!r}" + (f" ({group})" if group else "")
    fig.suptitle(title, fontsize=11)
    return fig
