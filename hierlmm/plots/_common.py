"""Small helpers shared by the plot modules."""

from __future__ import annotations

import functools

import numpy as np


def figure(nrows=1, ncols=1, width=6.0, height=4.0, **kw):
    """A new figure (not registered with pyplot, so nothing global changes) that Jupyter shows
    inline as PNG without ``%matplotlib inline``: it has a ``_repr_png_`` (a bare matplotlib
    ``Figure`` shows as ``<Figure size … with 2 Axes>`` unless pyplot's inline backend was
    set up)."""
    fig = _figure_class()(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


@functools.cache
def _figure_class():
    from matplotlib.figure import Figure

    class InlineFigure(Figure):
        def _repr_png_(self):
            import io

            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=100)
            return buffer.getvalue()

    return InlineFigure


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
