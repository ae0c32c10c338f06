"""``us(x | g)``, lme4's ``(x | g)``: a free positive semi-definite ``D``.

``par = θ`` holds the lower triangle of ``T`` column by column (lme4's order), bounded below
by 0 on the diagonal so that singular fits (``T`` singular) are reachable.
"""

from __future__ import annotations

import numpy as np

from hierlmm.covariance.base import Covariance, psd_cholesky, sd_corr


class Unstructured(Covariance):
    kind = "us"
    title = "unstructured"

    @property
    def n_par(self) -> int:
        return self.k * (self.k + 1) // 2

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """``(row, column)`` of ``T`` for each θ entry, column by column."""
        rows, cols = self.pattern
        return list(zip(rows.tolist(), cols.tolist()))

    def lower(self) -> np.ndarray:
        rows, cols = self.pattern
        return np.where(rows == cols, 0.0, -np.inf)

    def sign_free(self) -> np.ndarray:
        """The diagonal of ``T``: negating column ``j`` of ``T`` leaves ``TT'`` unchanged."""
        rows, cols = self.pattern
        return rows == cols

    def canonical(self, par) -> np.ndarray:
        """Each column of ``T`` whose diagonal entry is negative negated (``TT'`` unchanged)."""
        T = self.factor(par)
        return self.par_from_factor(T * np.where(np.diag(T) < 0, -1.0, 1.0)[None, :])

    def start(self) -> np.ndarray:
        rows, cols = self.pattern
        return (rows == cols).astype(float)

    def factor(self, par) -> np.ndarray:
        T = np.zeros((self.k, self.k))
        T[self.pattern] = par
        return T

    def par_from_factor(self, T) -> np.ndarray:
        return np.asarray(T, dtype=float)[self.pattern].copy()

    def par_from_relcov(self, S) -> np.ndarray:
        return self.par_from_factor(psd_cholesky(S))

    def factor_jacobian(self, par, h: float = 1e-6) -> np.ndarray:
        return np.eye(self.n_par)

    def par_scale(self, rms) -> np.ndarray:
        s = np.where((rms > 0) & np.isfinite(rms), rms, 1.0)
        return np.array([s[r] for r, _ in self.pairs])

    def par_labels(self) -> list[str]:
        n = self.names
        return [n[r] if r == c else f"{n[r]}.{n[c]}" for r, c in self.pairs]

    def boundary_escapes(self, par, tol: float = 1e-4, lift: float = 0.3) -> list[np.ndarray]:
        """Starts off the boundary for a singular ``T`` of a vector-valued term (else ``[]``).

        With a diagonal entry ``T_jj`` at 0, the deviance is stationary in ``T_jj`` and the
        entries below it in column ``j`` only rotate on a sphere: a local minimum in θ that
        need not be the lowest, while with ``T_jj > 0`` the sign of those entries relative to
        the others matters. Two starts: every zero diagonal entry set to ``lift``, and the
        same with the entries below it negated (a differential model, m0027: ML deviance
        1180.86474 at the boundary, 1180.86142 from the second start, as lme4)."""
        if self.k < 2:
            return []
        T = self.factor(par)
        zero = np.flatnonzero(np.diag(T) < tol)
        if zero.size == 0:
            return []
        lifted = T.copy()
        lifted[zero, zero] = lift
        flipped = lifted.copy()
        for j in zero:
            flipped[j + 1:, j] *= -1
        return [self.par_from_factor(lifted), self.par_from_factor(flipped)]

    def natural(self, D) -> np.ndarray:
        sd, corr = sd_corr(D)
        return np.array([sd[r] if r == c else corr[r, c] for r, c in self.pairs])

    def natural_labels(self) -> list[str]:
        n = self.names
        return [f"sd_{n[r]}" if r == c else f"cor_{n[r]}.{n[c]}" for r, c in self.pairs]

    def natural_bounds(self):
        rows, cols = self.pattern
        diag = rows == cols
        return np.where(diag, 0.0, -1.0), np.where(diag, np.inf, 1.0)

    def par_from_natural(self, values, sigma):
        R, sd = np.eye(self.k), np.zeros(self.k)
        values = np.nan_to_num(np.asarray(values, dtype=float))  # NaN: the correlation of a zero SD, immaterial
        for v, (r, c) in zip(values, self.pairs):
            if r == c:
                sd[r] = v
            else:
                R[r, c] = R[c, r] = v
        if self.k > 1 and np.linalg.eigvalsh(R).min() < -1e-10:
            return None
        return self.par_from_factor(psd_cholesky(R * np.outer(sd, sd)) / sigma)

    def linear_basis(self):
        out = []
        for r, c in self.pairs:
            G = np.zeros((self.k, self.k))
            G[r, c] = G[c, r] = 1.0
            out.append(G)
        return out

    def gamma(self, D):
        D = np.asarray(D, dtype=float)
        return np.array([D[r, c] for r, c in self.pairs])
