"""Small helpers shared by the plot modules."""

from __future__ import annotations

import numpy as np


def figure(nrows=1, ncols=1, width=6.0, height=4.0, **kw):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def normal_quantiles(n: int) -> np.ndarray:
    from scipy.stats import norm

    return norm.ppf((np.arange(1, n + 1) - 0.5) / n)


def pick_group(fit, group):
    groups = list(dict.fromkeys(t.group for t in fit.design.terms))
    if group is None:
        return groups[0]
    if group not in groups:
        from hierlmm.errors import HierlmmError

        raise HierlmmError(f"{group!r} is not a grouping factor of the model ({', '.join(groups)})")
    return group


def label_size(n: int) -> float:
    """Tick-label font size that keeps up to a few hundred labels readable."""
    return 9 if n <= 30 else 7 if n <= 60 else 5 if n <= 120 else 3
