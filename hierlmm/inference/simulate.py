"""Draws of the response from a fitted model: the parametric bootstrap's engine."""

from __future__ import annotations

import numpy as np

__all__ = ["simulate"]


def simulate(fit, n: int = 1, random_seed=None) -> np.ndarray:
    """``y* = Xβ̂ + Σ_t Z_t b*_t + ε*``, ``b*_t ~ N(0, D̂_t)`` per level, ``ε* ~ N(0, σ̂² I)``.

    Returns
    -------
    ndarray, shape (n, nobs)
    """
    rng = np.random.default_rng(random_seed)
    d, sol = fit.design, fit.solution
    mu = d.X @ sol.beta
    out = np.empty((n, d.n))
    sigma = fit.sigma
    for i in range(n):
        y = mu + sigma * rng.standard_normal(d.n)
        for t, s in zip(d.terms, d.theta_slices()):
            T = t.template(sol.theta[s])
            b = sigma * rng.standard_normal((t.m, t.k)) @ T.T
            y += np.einsum("ik,ik->i", t.Z, b[t.codes])
        out[i] = y
    return out
