"""``toep(0 + f | g)`` (glmmTMB's heterogeneous Toeplitz): an SD per column and a correlation
``r_l`` per lag ``l = |i − j|``.

``D = S R S``, ``R[i, j] = r_{|i−j|}``. A Toeplitz ``R`` is positive definite exactly when its
partial autocorrelations ``φ_l`` lie in ``(−1, 1)``, so ``par`` = (relative SDs, ``x_l``) with
``φ_l = x_l/√(1+x_l²)``, and Durbin–Levinson's recursion gives ``r`` from ``φ`` and back.
"""

from __future__ import annotations

import numpy as np

from hierlmm.covariance.base import Covariance, from_unit, psd_cholesky, sd_corr, to_unit


def autocorrelations(pacf) -> np.ndarray:
    """``r_1..r_p`` from the partial autocorrelations ``φ_1..φ_p`` (Durbin–Levinson)."""
    r, a = [1.0], np.zeros(0)
    for m, phi in enumerate(pacf, start=1):
        r_m = phi * (1 - a @ np.array(r[1:m])) + a @ np.array(r[m - 1:0:-1])
        r.append(float(r_m))
        a = np.append(a - phi * a[::-1], phi)
    return np.array(r[1:])


def partial_autocorrelations(r) -> np.ndarray | None:
    """Inverse of :func:`autocorrelations`; ``None`` where ``r`` is not positive definite. A
    lag's ``r`` that is NaN (undefined: no pair of columns with non-zero SDs at that lag) takes
    partial autocorrelation 0."""
    rr, a, out = np.concatenate([[1.0], np.asarray(r, dtype=float)]), np.zeros(0), []
    for m in range(1, len(rr)):
        den = 1 - a @ rr[1:m]
        if np.isnan(rr[m]):
            rr[m] = a @ rr[m - 1:0:-1]  # the lag's value with φ_m = 0
        if den <= 1e-12:
            return None
        phi = (rr[m] - a @ rr[m - 1:0:-1]) / den
        if abs(phi) > 1 + 1e-10:
            return None
        phi = float(np.clip(phi, -1.0, 1.0))
        out.append(phi)
        a = np.append(a - phi * a[::-1], phi)
    return np.array(out)


class Toeplitz(Covariance):
    kind = "toep"
    title = "heterogeneous Toeplitz"

    @property
    def n_par(self) -> int:
        return 2 * self.k - 1

    def correlation(self, par) -> np.ndarray:
        r = np.concatenate([[1.0], autocorrelations(to_unit(np.asarray(par[self.k:], dtype=float)))])
        i = np.arange(self.k)
        return r[np.abs(i[:, None] - i[None, :])]

    def factor(self, par) -> np.ndarray:
        return np.asarray(par[: self.k], dtype=float)[:, None] * psd_cholesky(self.correlation(par))

    def _natural(self, D):
        sd, corr = sd_corr(D)
        lags = []
        for lag in range(1, self.k):
            d = np.diag(corr, -lag)
            lags.append(float(np.nanmean(d)) if np.isfinite(d).any() else np.nan)
        return np.nan_to_num(sd), np.array(lags)

    def par_from_relcov(self, S) -> np.ndarray:
        sd, r = self._natural(S)
        pacf = partial_autocorrelations(r)
        if pacf is None:  # averaged lags of a matrix without the structure: shrink toward 0 until valid
            for shrink in 0.5 ** np.arange(1, 30):
                pacf = partial_autocorrelations(r * shrink)
                if pacf is not None:
                    break
        return np.concatenate([sd, from_unit(pacf)])

    def par_labels(self) -> list[str]:
        return [f"sd_{n}" for n in self.names] + [f"pacf_lag{l} (unconstrained)" for l in range(1, self.k)]

    def natural(self, D) -> np.ndarray:
        sd, r = self._natural(D)
        return np.concatenate([sd, r])

    def natural_labels(self) -> list[str]:
        return [f"sd_{n}" for n in self.names] + [f"cor_lag{l}" for l in range(1, self.k)]

    def natural_bounds(self):
        return (np.concatenate([np.zeros(self.k), np.full(self.k - 1, -1.0)]),
                np.concatenate([np.full(self.k, np.inf), np.ones(self.k - 1)]))

    def par_from_natural(self, values, sigma):
        values = np.asarray(values, dtype=float)
        pacf = partial_autocorrelations(values[self.k:])
        if pacf is None:
            return None
        return np.concatenate([values[: self.k] / sigma, from_unit(pacf)])
