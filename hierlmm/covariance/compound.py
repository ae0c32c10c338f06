"""``cs(0 + f | g)`` (glmmTMB's heterogeneous compound symmetry: an SD per column, one common
correlation) and ``homcs(0 + f | g)`` (nlme's ``pdCompSymm``: one SD, one correlation).

``D = S R S`` with ``R = (1 − ρ) I + ρ J``, positive semi-definite for ``ρ ∈ [−1/(k−1), 1]``.
``par`` = (relative SDs, ``x``), ``ρ = a + (1 − a)(1 + x/√(1+x²))/2``, ``a = −1/(k−1)``;
``T = S chol(R)``.
"""

from __future__ import annotations

import numpy as np

from hierlmm.covariance.base import Covariance, from_unit, psd_cholesky, sd_corr, to_unit


class CompoundSymmetry(Covariance):
    kind = "cs"
    title = "heterogeneous compound symmetry"

    @property
    def n_par(self) -> int:
        return self.sd_count + 1

    @property
    def _floor(self) -> float:
        return -1.0 / (self.k - 1)

    def rho(self, x) -> float:
        a = self._floor
        return float(a + (1 - a) * (1 + to_unit(x)) / 2)

    def _x(self, rho) -> float:
        a = self._floor
        return float(from_unit(2 * (rho - a) / (1 - a) - 1))

    def _sds(self, par) -> np.ndarray:
        par = np.asarray(par, dtype=float)
        return par[: self.sd_count] * np.ones(self.k)

    def factor(self, par) -> np.ndarray:
        rho = self.rho(par[-1])
        R = np.full((self.k, self.k), rho)
        np.fill_diagonal(R, 1.0)
        return self._sds(par)[:, None] * psd_cholesky(R)

    def factor_pt(self, par):
        import pytensor.tensor as pt

        a = self._floor
        x = par[-1]
        rho = a + (1 - a) * (1 + x / pt.sqrt(1 + x * x)) / 2
        R = (1 - rho) * pt.eye(self.k) + rho * pt.ones((self.k, self.k))
        sds = par[: self.sd_count] * pt.ones(self.k)
        return sds[:, None] * pt.linalg.cholesky(R)

    def log_jacobian_natural(self, x, ops=np):
        # ρ = a + (1 − a)(1 + x/√(1+x²))/2: dρ/dx = (1 − a)/2 · (1 + x²)^(−3/2)
        return float(np.log((1 - self._floor) / 2)) - 1.5 * ops.log1p(x[0] * x[0])

    def _common(self, D):
        """The structure's SDs (one, their root mean square, for a homogeneous one) and the mean
        correlation of ``D`` (in ρ's range)."""
        sd, corr = sd_corr(D)
        off = corr[~np.eye(self.k, dtype=bool)]
        rho = float(np.nanmean(off)) if np.isfinite(off).any() else 0.0
        sd = np.nan_to_num(sd)
        sds = sd if self.sd_count == self.k else np.array([np.sqrt(np.mean(sd * sd))])
        return sds, min(max(rho, self._floor), 1.0)

    def par_from_relcov(self, S) -> np.ndarray:
        sds, rho = self._common(S)
        return np.append(sds, self._x(rho))

    def par_labels(self) -> list[str]:
        return [f"sd_{n}" for n in self.names] + ["rho (unconstrained)"]

    def natural(self, D) -> np.ndarray:
        sds, rho = self._common(D)
        return np.append(sds, rho)

    def natural_labels(self) -> list[str]:
        return [f"sd_{n}" for n in self.names] + ["cor"]

    def natural_bounds(self):
        n = self.sd_count
        return np.append(np.zeros(n), self._floor), np.append(np.full(n, np.inf), 1.0)

    def par_from_natural(self, values, sigma):
        values = np.asarray(values, dtype=float)
        rho = 0.0 if np.isnan(values[-1]) else values[-1]  # NaN: undefined where the SDs are 0
        if not self._floor - 1e-12 <= rho <= 1 + 1e-12:
            return None
        return np.append(values[:-1] / sigma, self._x(min(max(rho, self._floor), 1.0)))


class HomCompoundSymmetry(CompoundSymmetry):
    kind = "homcs"
    title = "compound symmetry"
    n_sd = 1

    def par_labels(self) -> list[str]:
        return ["sd", "rho (unconstrained)"]

    def natural_labels(self) -> list[str]:
        return ["sd", "cor"]

    def linear_basis(self):
        return [np.eye(self.k), np.ones((self.k, self.k)) - np.eye(self.k)]

    def gamma(self, D):
        D = np.asarray(D, dtype=float)
        return np.array([np.mean(np.diag(D)), np.mean(D[~np.eye(self.k, dtype=bool)])])
