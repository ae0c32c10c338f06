"""The closed-form Gaussian posterior of the random effects given the estimates.

With ``b = Λ_θ u`` and the blocked factor ``L`` of ``Λ*'AΛ* + I``:

* ``beta="fixed"`` (lme4's ``condVar``): ``b_i | y, β̂, θ̂, σ̂ ~ N(b̂_i, σ̂² Λ_i [(Λ'Z'ZΛ + I)⁻¹]_ii Λ_i')``,
  equivalently ``N(D Z_i'V_i⁻¹(y_i − X_iβ̂), D − D Z_i'V_i⁻¹Z_iD)`` for a single grouping factor.
  The inverse is of the leading random-effects block of ``L`` only.
* ``beta="integrated"``: β integrated out under its flat prior; the mean is the same and the
  covariance is Henderson's prediction-error variance ``D − D Z'PZ D``
  (``P = V⁻¹ − V⁻¹X(X'V⁻¹X)⁻¹X'V⁻¹``), the random-effects block of the inverse of the
  system that includes ``X``. This is the posterior of ``b_i`` given θ̂ and σ̂.
  (``D Z'PZ D`` alone is the *sampling* variance of the BLUP, not a posterior variance.)

Only the diagonal blocks of ``(L L')⁻¹`` that belong to one level of one grouping factor are
formed: with ``L = [[L11, 0], [L21, L22]]``, the columns of ``L⁻¹`` are
``[L11⁻¹; −L22⁻¹L21L11⁻¹]`` for block 1 and ``[0; L22⁻¹]`` for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp

__all__ = ["RanefPosterior", "ranef_posterior_blocks"]


@dataclass
class RanefPosterior:
    """Gaussian posterior of the random effects of one grouping factor.

    Attributes
    ----------
    group : str
    mean : DataFrame
        Levels x terms: posterior means (the BLUPs / conditional modes).
    cov : ndarray, shape (m, K, K)
        Posterior covariance matrix of each level's random effects.
    beta : str
        ``"fixed"`` or ``"integrated"``.
    """

    group: str
    mean: pd.DataFrame
    cov: np.ndarray
    beta: str

    @property
    def sd(self) -> pd.DataFrame:
        """Posterior standard deviations (lme4's conditional SDs for ``beta="fixed"``)."""
        sd = np.sqrt(np.diagonal(self.cov, axis1=1, axis2=2))
        return pd.DataFrame(sd, index=self.mean.index, columns=self.mean.columns)

    def interval(self, level: float = 0.95) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Equal-tailed posterior intervals ``(lower, upper)``."""
        from scipy.stats import norm

        z = norm.ppf(0.5 + level / 2)
        return self.mean - z * self.sd, self.mean + z * self.sd

    def to_frame(self) -> pd.DataFrame:
        """Long table: level, term, mean, sd."""
        m = self.mean.stack().rename("mean")
        s = self.sd.stack().rename("sd")
        out = pd.concat([m, s], axis=1)
        out.index.names = ["level", "term"]
        return out.reset_index()


def _inverse_columns(factor, s: int):
    """``L22s⁻¹`` and ``W = L22s⁻¹ L21s L11⁻¹`` for the leading ``s`` rows of block 2."""
    L22s = factor.L22[:s, :s]
    L22inv = scipy.linalg.solve_triangular(L22s, np.eye(s), lower=True, check_finite=False) if s else np.zeros((0, 0))
    L11 = factor.L11
    L21s = factor.L21[:s]
    if L11.ndim == 1:
        L11inv = 1.0 / L11
        H = L21s.multiply(L11inv[None, :]).toarray() if sp.issparse(L21s) else L21s * L11inv[None, :]
    else:
        L11inv = np.linalg.inv(L11)
        m, k, _ = L11.shape
        if sp.issparse(L21s):
            Bb = sp.bsr_matrix((L11inv, np.arange(m), np.arange(m + 1)), shape=(m * k, m * k))
            H = (L21s @ Bb).toarray()
        else:
            H = np.einsum("smk,mkl->sml", L21s.reshape(s, m, k), L11inv).reshape(s, m * k)
    W = scipy.linalg.solve_triangular(L22s, H, lower=True, check_finite=False) if s else np.zeros((0, H.shape[1]))
    return L11inv, L22inv, W


def ranef_posterior_blocks(fit_parts, beta: str = "fixed") -> dict[str, RanefPosterior]:
    """Posterior of ``b`` per grouping factor.

    Parameters
    ----------
    fit_parts : object with ``design``, ``solution`` (a :class:`~hierlmm.deviance.Solution`)
        and ``sigma``.
    beta : {"fixed", "integrated"}
    """
    design, sol = fit_parts.design, fit_parts.solution
    f = sol.factor
    s = f.q_rest + (f.p if beta == "integrated" else 0)
    L11inv, L22inv, W = _inverse_columns(f, s)
    terms = design.terms
    sigma2 = fit_parts.sigma ** 2

    # per term: the "columns of L^{-1}" restricted to block 2, shape (s, m, k); and the block-1 part
    offsets = {}
    start = 0
    for t in terms[1:]:
        offsets[id(t)] = start
        start += t.q

    def bottom(t):
        if t is terms[0]:
            return -W.reshape(s, t.m, t.k)
        o = offsets[id(t)]
        return L22inv[:, o : o + t.q].reshape(s, t.m, t.k)

    out: dict[str, RanefPosterior] = {}
    groups: dict[str, list] = {}
    for i, t in enumerate(terms):
        groups.setdefault(t.group, []).append(i)
    for g, idx in groups.items():
        ts = [terms[i] for i in idx]
        levels = ts[0].levels
        m = len(levels)
        K = sum(t.k for t in ts)
        cov_u = np.zeros((m, K, K))
        offs = np.cumsum([0] + [t.k for t in ts])
        for a, ta in enumerate(ts):
            Ba = bottom(ta)
            for c, tc in enumerate(ts[: a + 1]):
                Bc = bottom(tc)
                blk = np.einsum("smk,sml->mkl", Ba, Bc)
                if ta is terms[0] and tc is terms[0]:
                    Li = L11inv
                    blk = blk + (Li**2)[:, None, None] if Li.ndim == 1 else blk + np.einsum("mjk,mjl->mkl", Li, Li)
                cov_u[:, offs[a] : offs[a + 1], offs[c] : offs[c + 1]] = blk
                cov_u[:, offs[c] : offs[c + 1], offs[a] : offs[a + 1]] = np.transpose(blk, (0, 2, 1))
        Lam = scipy.linalg.block_diag(*[t.template(sol.theta[design.theta_slices()[i]]) for i, t in zip(idx, ts)])
        cov_b = sigma2 * np.einsum("ab,mbc,dc->mad", Lam, cov_u, Lam)
        mean = np.hstack([sol.b[i] for i in idx])
        cols = [n for t in ts for n in t.names]
        out[g] = RanefPosterior(
            group=g,
            mean=pd.DataFrame(mean, index=pd.Index(levels, name=g), columns=cols),
            cov=cov_b,
            beta=beta,
        )
    return out
