"""Draws of the response from a fitted model: the parametric bootstrap's engine."""

from __future__ import annotations

import numpy as np

__all__ = ["simulate"]


def simulate(fit, n: int = 1, random_seed=None) -> np.ndarray:
    """``n`` draws of the response from the fitted model, shape ``(n, nobs)``: the engine's
    own (independent residuals: ``Xβ̂ + Zb* + ε*``; correlated residuals or the marginal
    formulation: ``N(Xβ̂, σ̂² V0)`` block by block)."""
    return fit.deviance_function.simulate(fit, n, np.random.default_rng(random_seed))
