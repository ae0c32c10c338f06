"""The variance parameters as lme4's ``confint`` and ``profile`` name them: each random
term's standard deviations and correlations (in θ's order), then σ; and back to ``(θ, σ)``.

Shared by the intervals (:mod:`hierlmm.inference.confint`), the profile
(:mod:`hierlmm.inference.profile`) and the bootstrap.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bounds", "psd_cholesky", "sdcor_from_theta", "sdcor_names", "theta_from_sdcor"]


def sdcor_names(fit) -> list[str]:
    """Row names of the variance parameters (lme4's ``confint``), σ last."""
    return [n for t in fit.design.terms for n in t.sdcor_names()] + ["sigma"]


def sdcor_from_theta(design, theta, sigma) -> np.ndarray:
    """``(θ, σ)`` -> standard deviations and correlations of each term (θ's order), σ.

    A correlation with a zero SD is NaN (:func:`hierlmm.reterms.sd_corr`)."""
    return np.concatenate([t.sdcor(sigma**2 * t.relcov(theta[s])) for t, s in zip(design.terms, design.theta_slices())]
                          + [[sigma]])


def psd_cholesky(D: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a positive semi-definite matrix (zero pivots allowed)."""
    k = D.shape[0]
    L = np.zeros_like(D)
    for j in range(k):
        v = D[j, j] - L[j, :j] @ L[j, :j]
        L[j, j] = np.sqrt(v) if v > 1e-14 * max(D[j, j], 1e-300) else 0.0
        for i in range(j + 1, k):
            L[i, j] = (D[i, j] - L[i, :j] @ L[j, :j]) / L[j, j] if L[j, j] > 0 else 0.0
    return L


def theta_from_sdcor(design, sdcor) -> tuple[np.ndarray, float] | None:
    """Inverse of :func:`sdcor_from_theta`; ``None`` if a correlation matrix is not PSD."""
    sigma = sdcor[-1]
    theta, i = [], 0
    for t in design.terms:
        R = np.eye(t.k)
        sd = np.zeros(t.k)
        for r, c in t.pairs:
            if r == c:
                sd[r] = sdcor[i]
            else:
                R[r, c] = R[c, r] = sdcor[i]
            i += 1
        if t.k > 1 and np.linalg.eigvalsh(R).min() < -1e-10:
            return None
        theta.append(t.theta_from_template(psd_cholesky(R * np.outer(sd, sd)) / sigma))
    return np.concatenate(theta), sigma


def bounds(design) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of :func:`sdcor_from_theta`'s entries (σ last, kept positive)."""
    lo, hi = zip(*(t.sdcor_bounds() for t in design.terms))
    return np.concatenate(lo + ([1e-12],)), np.concatenate(hi + ([np.inf],))

