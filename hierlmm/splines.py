"""R's natural cubic splines, ``ns(x, df)`` (package splines), as a formulaic transform.

formulaic has ``bs`` (R's B-splines) but not ``ns``. Its ``cr`` spans the same functions for
the same knots, with other coefficients; a user reading R's coefficients needs R's basis.
R's construction, kept here step by step:

* knots: ``df − 1 − intercept`` interior knots at equally spaced quantiles of ``x`` (R's
  default quantile, numpy's linear one), boundary knots at ``range(x)``;
* the cubic B-spline basis ``B`` on the knots ``(b₀ ×4, interior, b₁ ×4)`` (the first column
  dropped without an intercept);
* the natural constraint: with ``C`` the basis' second derivatives at the two boundary knots
  and ``Cᵀ = QR`` (Householder, as R's ``qr``), the basis is ``B Q`` without its first two
  columns (R: ``t(qr.qty(qr(t(const)), t(basis)))[, -(1:2)]``): the functions whose second
  derivative vanishes at both boundaries;
* outside the boundary knots, each function continues linearly (its value and slope there).

The knots are state: new data (``predict``) use the fit's.
"""

from __future__ import annotations

import numpy as np
from formulaic.materializers.types import FactorValues
from formulaic.utils.stateful_transforms import stateful_transform

__all__ = ["ns"]


def _bsplines(knots: np.ndarray, x: np.ndarray, deriv: int = 0) -> np.ndarray:
    """The cubic B-spline basis (or its ``deriv``-th derivative) at ``x``: (len(x), nb)."""
    from scipy.interpolate import BSpline

    nb = len(knots) - 4
    spline = BSpline(knots, np.eye(nb), 3, extrapolate=True)
    return (spline.derivative(deriv) if deriv else spline)(x)


@stateful_transform
def ns(x, df: int | None = None, knots=None, intercept: bool = False, _state: dict = {}):  # noqa: B006 (formulaic's state)
    """R's ``splines::ns(x, df, knots, intercept)`` (module doc)."""
    x = np.asarray(x, dtype=float)
    if "boundary" not in _state:
        ok = x[np.isfinite(x)]
        if ok.size == 0:
            raise ValueError("ns() of a column without finite values")
        boundary = np.array([ok.min(), ok.max()])
        if knots is None:
            if df is None:
                raise ValueError("ns() needs df or knots: ns(x, 3)")
            n_inner = max(int(df) - 1 - int(bool(intercept)), 0)
            knots = np.quantile(ok, np.linspace(0, 1, n_inner + 2)[1:-1]) if n_inner else np.zeros(0)
        _state["boundary"] = boundary.tolist()
        _state["knots"] = np.atleast_1d(np.asarray(knots, dtype=float)).tolist()
    boundary, inner = np.asarray(_state["boundary"]), np.asarray(_state["knots"])
    all_knots = np.sort(np.concatenate([np.repeat(boundary, 4), inner]))
    basis = np.full((x.size, len(all_knots) - 4), np.nan)
    inside = (x >= boundary[0]) & (x <= boundary[1])
    basis[inside] = _bsplines(all_knots, x[inside])
    for side, b in ((x < boundary[0], boundary[0]), (x > boundary[1], boundary[1])):
        if side.any():  # linear beyond the boundary: value and slope at the boundary knot
            at = _bsplines(all_knots, np.array([b]))[0]
            slope = _bsplines(all_knots, np.array([b]), deriv=1)[0]
            basis[side] = at + np.outer(x[side] - b, slope)
    const = _bsplines(all_knots, boundary, deriv=2)
    if not intercept:
        basis, const = basis[:, 1:], const[:, 1:]
    q, _ = np.linalg.qr(const.T, mode="complete")
    out = (basis @ q)[:, 2:]
    return FactorValues(out, column_names=tuple(str(i) for i in range(1, out.shape[1] + 1)))
