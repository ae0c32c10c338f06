"""``diag(x | g)`` (nlme's ``pdDiag``, SPSS's "variance components") and ``homdiag(x | g)``
(nlme's ``pdIdent``): independent effects, one variance per column or one for all.

``par`` are the relative SDs ``T = diag(par)`` (``homdiag``: ``T = par · I``), bounded below by 0.
"""

from __future__ import annotations

import numpy as np

from hierlmm.covariance.base import Covariance


class Diagonal(Covariance):
    kind = "diag"
    title = "diagonal"
    diagonal = True

    @property
    def n_par(self) -> int:
        return self.k

    def factor(self, par) -> np.ndarray:
        return np.diag(np.asarray(par, dtype=float))

    def par_from_relcov(self, S) -> np.ndarray:
        return np.sqrt(np.maximum(np.diag(np.asarray(S, dtype=float)), 0.0))

    def factor_jacobian(self, par, h: float = 1e-6) -> np.ndarray:
        return np.eye(self.k)

    def sign_free(self) -> np.ndarray:
        """Every SD (``T = diag(par)``)."""
        return np.ones(self.k, dtype=bool)

    def par_labels(self) -> list[str]:
        return list(self.names)

    def factor_pt(self, par):
        import pytensor.tensor as pt

        return pt.diag(par)

    def natural(self, D) -> np.ndarray:
        return np.sqrt(np.maximum(np.diag(np.asarray(D, dtype=float)), 0.0))

    def natural_labels(self) -> list[str]:
        return [f"sd_{n}" for n in self.names]

    def natural_bounds(self):
        return np.zeros(self.k), np.full(self.k, np.inf)

    def par_from_natural(self, values, sigma):
        return np.asarray(values, dtype=float) / sigma

    def linear_basis(self):
        out = []
        for r in range(self.k):
            G = np.zeros((self.k, self.k))
            G[r, r] = 1.0
            out.append(G)
        return out

    def gamma(self, D):
        return np.diag(np.asarray(D, dtype=float)).copy()


class HomDiagonal(Covariance):
    kind = "homdiag"
    title = "homogeneous diagonal"
    diagonal = True
    n_sd = 1

    @property
    def n_par(self) -> int:
        return 1

    def factor(self, par) -> np.ndarray:
        return float(np.asarray(par)[0]) * np.eye(self.k)

    def par_from_relcov(self, S) -> np.ndarray:
        return np.array([np.sqrt(max(float(np.mean(np.diag(np.asarray(S, dtype=float)))), 0.0))])

    def factor_jacobian(self, par, h: float = 1e-6) -> np.ndarray:
        return np.ones((self.k, 1))

    def par_labels(self) -> list[str]:
        return ["sd"]

    def factor_pt(self, par):
        import pytensor.tensor as pt

        return par[0] * pt.eye(self.k)

    def natural(self, D) -> np.ndarray:
        return self.par_from_relcov(D)

    def natural_labels(self) -> list[str]:
        return ["sd"]

    def natural_bounds(self):
        return np.zeros(1), np.full(1, np.inf)

    def par_from_natural(self, values, sigma):
        return np.asarray(values, dtype=float) / sigma

    def linear_basis(self):
        return [np.eye(self.k)]

    def gamma(self, D):
        return np.array([float(np.mean(np.diag(np.asarray(D, dtype=float))))])
