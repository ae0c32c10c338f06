"""Numerical derivatives with Richardson extrapolation (the method of R's numDeriv).

lmerTest takes the Hessian of the deviance and the Jacobian of ``vcov(β̂)`` in the variance
parameters with ``numDeriv``; the same method is used here so that the Satterthwaite degrees
of freedom agree to the digits lmerTest prints. Step ``h = d|x| + eps·[|x| < zero_tol]``,
halved ``r - 1`` times, then Richardson-extrapolated (error ``O(h^{2r})``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["jacobian", "hessian"]

# numDeriv's defaults: grad/jacobian d = 1e-4; hessian (genD) d = 0.1
_EPS, _ZERO_TOL, _R, _V = 1e-4, np.sqrt(np.finfo(float).eps / 7e-7), 4, 2.0


def _steps(x: np.ndarray, d: float) -> np.ndarray:
    return d * np.abs(x) + _EPS * (np.abs(x) < _ZERO_TOL)


def _richardson(a: list) -> np.ndarray:
    a = [np.asarray(v, dtype=float) for v in a]
    for m in range(1, len(a)):
        four = 4.0**m
        a = [(four * a[i + 1] - a[i]) / (four - 1) for i in range(len(a) - 1)]
    return a[0]


def jacobian(f, x) -> np.ndarray:
    """``∂f/∂x_i`` for every ``i``; ``f`` returns an array. Shape ``(len(x), *f(x).shape)``."""
    x = np.asarray(x, dtype=float)
    h0 = _steps(x, 1e-4)
    out = []
    for i in range(x.size):
        est, h = [], h0[i]
        for _ in range(_R):
            e = np.zeros_like(x)
            e[i] = h
            est.append((np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2 * h))
            h /= _V
        out.append(_richardson(est))
    return np.stack(out)


def hessian(f, x) -> np.ndarray:
    """Hessian of the scalar function ``f`` at ``x`` (numDeriv's ``genD`` scheme)."""
    x = np.asarray(x, dtype=float)
    n = x.size
    f0 = float(f(x))
    h0 = _steps(x, 0.1)
    H = np.zeros((n, n))
    for i in range(n):
        est, h = [], h0[i]
        for _ in range(_R):
            e = np.zeros(n)
            e[i] = h
            est.append((f(x + e) - 2 * f0 + f(x - e)) / h**2)
            h /= _V
        H[i, i] = _richardson(est)
    for i in range(n):
        for j in range(i):
            est, hi, hj = [], h0[i], h0[j]
            for _ in range(_R):
                e = np.zeros(n)
                e[i], e[j] = hi, hj
                est.append((f(x + e) - 2 * f0 + f(x - e) - H[i, i] * hi**2 - H[j, j] * hj**2) / (2 * hi * hj))
                hi /= _V
                hj /= _V
            H[i, j] = H[j, i] = _richardson(est)
    return H
