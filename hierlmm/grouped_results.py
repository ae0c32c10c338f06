"""Results of fits with correlated residuals or in the marginal formulation.

:class:`GroupedResult` keeps :class:`~hierlmm.results.LMMResult`'s interface (and so its
printing and inference) and replaces what depends on the engine: the covariance matrices
(``D_t = σ²S_t``, possibly indefinite in the marginal formulation), the correlation
parameter, the posterior of b (computed per block from ``V``), and the parameter count.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hierlmm.errors import HierlmmError
from hierlmm.optimize import SINGULAR_TOL
from hierlmm.posterior_b import RanefPosterior
from hierlmm.results import LMMResult

__all__ = ["GroupedResult"]


class GroupedResult(LMMResult):
    """A fit by :class:`hierlmm.grouped.GroupedDeviance`."""

    @property
    def residual_params(self) -> dict:
        """The estimated residual correlation parameter, e.g. ``{"phi": 0.54}``."""
        dev = self.deviance_function
        if dev.residual is None:
            return {}
        return {dev.residual.param: dev.residual_value(self.solution.theta)}

    @property
    def df_model(self) -> int:
        return self.design.p + self.design.n_theta + self.deviance_function.n_resid + 1

    @property
    def singular(self) -> bool:
        if self.deviance_function.marginal:
            return False
        n = self.deviance_function.n_theta
        lower = self.deviance_function.lower[:n]
        bounded = np.isfinite(lower)
        return bool(np.any(self.solution.theta[:n][bounded] - lower[bounded] < SINGULAR_TOL))

    def covariance_matrices(self) -> dict[str, pd.DataFrame]:
        Ss = self.deviance_function.relcovs(self.solution.theta)
        return {t.label: pd.DataFrame(self.solution.sigma2 * S, index=t.names, columns=t.names)
                for t, S in zip(self.design.terms, Ss)}

    @property
    def varpar_names(self) -> list[str]:
        extra = [f"{self.residual.param} (unconstrained)"] if self.residual is not None else []
        return [*self.theta.index, *extra, "sigma"]

    def _no_b(self, what):
        self.model.require(what, needs="b", instead="use kind='marginal' or a hierarchical fit")

    def ranef(self) -> dict[str, pd.DataFrame]:
        self._no_b("ranef()")
        return super().ranef()

    def fitted(self, kind: str = "conditional") -> pd.Series:
        if kind == "conditional":
            self._no_b("the conditional fitted value")
        return super().fitted(kind)

    def ranef_posterior(self, beta: str = "fixed") -> dict[str, RanefPosterior]:
        """Per block: ``Cov(b | y) = D − DZ'V⁻¹ZD`` (+ ``DZ'V⁻¹X(X'V⁻¹X)⁻¹X'V⁻¹ZD`` when β is
        integrated out), with ``V`` including the residual correlation."""
        self._no_b("the posterior of b")
        if beta not in ("fixed", "integrated"):
            raise HierlmmError(f"beta must be 'fixed' or 'integrated', got {beta!r}")
        import scipy.linalg

        from hierlmm.crossprod import term_matrix

        dev, d = self.deviance_function, self.design
        params, s2 = self.solution.theta, self.solution.sigma2
        Ss = dev.relcovs(params)
        XtVXi = np.linalg.inv(self.solution.xtvx)
        groups: dict[str, list[int]] = {}
        for i, t in enumerate(d.terms):
            groups.setdefault(t.group, []).append(i)
        Zs = [term_matrix(t).tocsr() for t in d.terms]
        out = {}
        for g, idx in groups.items():
            ts = [d.terms[i] for i in idx]
            K = sum(t.k for t in ts)
            Sbig = scipy.linalg.block_diag(*[Ss[i] for i in idx])
            cov = np.zeros((ts[0].m, K, K))
            for rows, V0 in dev.block_matrices(params):
                Vi = np.linalg.inv(V0)
                Xb = d.X[rows]
                for j in np.unique(ts[0].codes[rows]):
                    A = np.vstack([Ss[i] @ Zs[i][rows][:, j * d.terms[i].k:(j + 1) * d.terms[i].k].toarray().T
                                   for i in idx])  # (K, s): D Z_j' / σ²
                    C = Sbig - A @ Vi @ A.T
                    if beta == "integrated":
                        B = A @ Vi @ Xb
                        C = C + B @ XtVXi @ B.T
                    cov[j] = s2 * C
            mean = pd.concat([pd.DataFrame(self.solution.b[i], index=pd.Index(d.terms[i].levels, name=g),
                                           columns=d.terms[i].names) for i in idx], axis=1)
            out[g] = RanefPosterior(g, mean, cov, beta)
        return out

    def simulate(self, n: int = 1, random_seed=None) -> np.ndarray:
        """``n`` draws of the response, ``y* ~ N(Xβ̂, σ̂² V0)`` block by block, with ``V0`` the
        fitted ``ZSZ' + R(ψ̂)`` (correlated residuals; in the marginal formulation the estimated
        ``V`` itself), shape ``(n, nobs)``."""
        rng = np.random.default_rng(random_seed)
        d, sol = self.design, self.solution
        out = np.tile(d.X @ sol.beta, (n, 1))
        for rows, V0 in self.deviance_function.block_matrices(sol.theta):
            L = np.linalg.cholesky(V0)
            out[:, rows] += self.sigma * rng.standard_normal((n, len(rows))) @ L.T
        return out
