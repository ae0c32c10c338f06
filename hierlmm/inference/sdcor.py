"""The variance parameters as lme4's ``confint`` and ``profile`` name them: each random
term's standard deviations and correlations (in θ's order), then σ; and back to ``(θ, σ)``.

Shared by the intervals (:mod:`hierlmm.inference.confint`), the profile
(:mod:`hierlmm.inference.profile`) and the bootstrap.
"""

from __future__ import annotations

import numpy as np

from hierlmm.covariance import psd_cholesky

__all__ = ["bounds", "psd_cholesky", "sdcor_from_theta", "sdcor_names", "theta_from_sdcor"]


def sdcor_names(fit) -> list[str]:
    """Row names of the variance parameters (lme4's ``confint``), σ last."""
    return [n for t in fit.design.terms for n in t.sdcor_names()] + ["sigma"]


def sdcor_from_theta(design, theta, sigma) -> np.ndarray:
    """``(θ, σ)`` -> standard deviations and correlations of each term (θ's order), σ.

    A correlation with a zero SD is NaN (:func:`hierlmm.reterms.sd_corr`)."""
    return np.concatenate([t.sdcor(sigma**2 * t.relcov(theta[s])) for t, s in zip(design.terms, design.theta_slices())]
                          + [[sigma]])


def theta_from_sdcor(design, sdcor) -> tuple[np.ndarray, float] | None:
    """Inverse of :func:`sdcor_from_theta` (each structure's ``par_from_natural``); ``None`` if a
    correlation matrix is not positive semi-definite."""
    sigma = sdcor[-1]
    theta, i = [], 0
    for t in design.terms:
        n = len(t.sdcor_names())
        par = t.cov.par_from_natural(np.asarray(sdcor[i:i + n], dtype=float), sigma)
        if par is None:
            return None
        theta.append(par)
        i += n
    return np.concatenate(theta), sigma


def bounds(design) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of :func:`sdcor_from_theta`'s entries (σ last, kept positive)."""
    lo, hi = zip(*(t.sdcor_bounds() for t in design.terms))
    return np.concatenate(lo + ([1e-12],)), np.concatenate(hi + ([np.inf],))

