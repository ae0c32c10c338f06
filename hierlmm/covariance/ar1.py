"""``ar1(0 + f | g)`` (glmmTMB's ``ar1``): one SD, correlation ``ρ^|i−j|`` between columns ``i``
and ``j`` (the levels of ``f`` in their order).

``par = (s, x)``, ``ρ = x/√(1+x²)``; ``T = s L`` with the closed-form Cholesky factor of the
AR(1) correlation, ``L[i, 0] = ρ^i`` and ``L[i, j] = ρ^{i−j} √(1−ρ²)`` for ``1 ≤ j ≤ i``.
"""

from __future__ import annotations

import numpy as np

from hierlmm.covariance.base import Covariance, from_unit, sd_corr, to_unit


class AR1(Covariance):
    kind = "ar1"
    title = "first-order autoregressive"
    n_sd = 1

    @property
    def n_par(self) -> int:
        return 2

    def factor(self, par) -> np.ndarray:
        s, rho = float(par[0]), float(to_unit(par[1]))
        i = np.arange(self.k)
        lag = i[:, None] - i[None, :]
        L = np.where(lag >= 0, rho ** np.maximum(lag, 0), 0.0)
        L[:, 1:] *= np.sqrt(max(1.0 - rho * rho, 0.0))
        return s * L

    def factor_pt(self, par):
        import pytensor.tensor as pt

        x = par[1]
        rho = x / pt.sqrt(1 + x * x)
        i = np.arange(self.k)
        lag = i[:, None] - i[None, :]
        powers = pt.switch(lag >= 0, rho ** np.maximum(lag, 0), 0.0)
        scale = pt.concatenate([pt.ones(1), pt.sqrt(1 - rho * rho) * pt.ones(self.k - 1)])
        return par[0] * powers * scale[None, :]

    def log_jacobian_natural(self, x, ops=np):
        return -1.5 * ops.log1p(x[0] * x[0])  # ρ = x/√(1+x²): dρ/dx = (1 + x²)^(−3/2)

    def _natural(self, D):
        sd, corr = sd_corr(D)
        lag1 = np.diag(corr, -1)
        rho = float(np.nanmean(lag1)) if np.isfinite(lag1).any() else 0.0
        return np.array([np.sqrt(np.mean(np.nan_to_num(sd) ** 2)), min(max(rho, -1.0), 1.0)])

    def par_from_relcov(self, S) -> np.ndarray:
        s, rho = self._natural(S)
        return np.array([s, float(from_unit(rho))])

    def par_labels(self) -> list[str]:
        return ["sd", "rho (unconstrained)"]

    def natural(self, D) -> np.ndarray:
        return self._natural(D)

    def natural_labels(self) -> list[str]:
        return ["sd", "rho"]

    def natural_bounds(self):
        return np.array([0.0, -1.0]), np.array([np.inf, 1.0])

    def par_from_natural(self, values, sigma):
        s, rho = float(values[0]), float(np.nan_to_num(values[1]))  # NaN: undefined where the SD is 0
        if abs(rho) > 1 + 1e-12:
            return None
        return np.array([s / sigma, float(from_unit(rho))])
