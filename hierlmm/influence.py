"""Leverage and influence of each observation, as lme4's ``hatvalues`` and ``cooks.distance``.

Given θ̂, the conditional fitted values are linear in ``y``: ``ŷ = H y`` with, for
``X̃ = W^{1/2} [ZΛ  X]`` and ``M = X̃'X̃ + diag(I_q, 0)`` (the penalised normal equations),

.. math::  H = X̃ M^{-1} X̃', \\qquad h_i = \\lVert L^{-1} x̃_i \\rVert^2, \\quad M = LL',

lme4's ``hatvalues`` (its ``colSums(CL²) + colSums(CR²)`` from the sparse factor is the same
quantity). Cook's distance as lme4's ``cooks.distance.merMod``:
``D_i = (r_i / (1 − h_i))² h_i / (σ̂² rank(X))`` with ``r_i = √w_i (y_i − ŷ_i)``.

Computed densely in blocks of rows (``M`` has order ``q + p``): refused above
:data:`MAX_ORDER`.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from hierlmm.errors import HierlmmError
from hierlmm.reterms import term_matrix

__all__ = ["hat_values", "cooks_distance", "MAX_ORDER"]

MAX_ORDER = 20_000


def _z_lambda(design, theta: np.ndarray) -> sp.csr_matrix:
    """``ZΛ_θ`` (sparse, n × q)."""
    blocks, i = [], 0
    for t in design.terms:
        T = t.template(theta[i:i + t.n_theta])
        i += t.n_theta
        blocks.append(term_matrix(t) @ sp.kron(sp.identity(t.m, format="csr"), sp.csr_matrix(T), format="csr"))
    return sp.hstack(blocks, format="csr")


def hat_values(fit, block: int = 4096) -> np.ndarray:
    """Diagonal of the hat matrix of the conditional fitted values (module doc)."""
    design = fit.design
    ZL = _z_lambda(design, fit.solution.theta)
    q, p = ZL.shape[1], design.X.shape[1]
    if q + p > MAX_ORDER:
        raise HierlmmError(f"hat values need a dense factor of order q + p = {q + p} (> {MAX_ORDER}); not computed")
    sw = np.ones(design.n) if design.weights is None else np.sqrt(design.weights)
    Xt = sp.hstack([ZL, sp.csr_matrix(design.X)], format="csr").multiply(sw[:, None]).tocsr()
    M = (Xt.T @ Xt).toarray()
    M[np.arange(q), np.arange(q)] += 1.0
    L = scipy.linalg.cholesky(M, lower=True)
    h = np.empty(design.n)
    for a in range(0, design.n, block):
        W = scipy.linalg.solve_triangular(L, Xt[a:a + block].toarray().T, lower=True)
        h[a:a + block] = np.einsum("ij,ij->j", W, W)
    return h


def cooks_distance(fit, hat: np.ndarray | None = None) -> np.ndarray:
    """lme4's Cook's distance (module doc); NaN where ``h_i = 1``."""
    design = fit.design
    h = hat_values(fit) if hat is None else hat
    r = fit.residuals().to_numpy()
    if design.weights is not None:
        r = r * np.sqrt(design.weights)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (r / (1.0 - h)) ** 2 * h / (fit.sigma**2 * np.linalg.matrix_rank(design.X))
    d[~np.isfinite(d)] = np.nan
    return d
