"""Satterthwaite's degrees of freedom for contrasts of β, as lmerTest computes them.

With ``ϑ = (θ, σ)`` the variance parameters, ``C(ϑ) = Var(β̂)`` and ``A = 2 H⁻¹`` the
asymptotic covariance of ``ϑ̂`` (``H`` the Hessian of the deviance −2ℓ in ϑ, REML or ML as
fitted), a contrast ``l'β`` has

.. math::  ν = \\frac{2 (l' C l)^2}{g' A g}, \\qquad g_i = l' \\frac{∂C}{∂ϑ_i} l .

For a q-row contrast matrix ``L`` (an F test), ``L C L' = P diag(d) P'`` is split into q
independent 1-df contrasts ``P_m' L`` with ``ν_m`` each; ``F = Σ t_m² / q`` and the
denominator df is ``2E/(E − q)`` with ``E = Σ ν_m/(ν_m − 2)`` (Fai & Cornelius 1996;
lmerTest's ``contestMD``), or ``ν`` when q = 1.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

from hierlmm.errors import HierlmmWarning
from hierlmm.inference.numderiv import hessian, jacobian
from hierlmm.optimize import theta_scale

__all__ = ["VarparCovariance", "varpar_covariance", "contest1d", "contestmd", "fstat_ddf"]


@dataclass
class VarparCovariance:
    """What every Satterthwaite computation needs, computed once per fit.

    Attributes
    ----------
    A : ndarray
        ``2 H⁻¹``, asymptotic covariance of the variance parameters ``(θ, σ)``.
    jac : ndarray, shape (len(ϑ), p, p)
        ``∂ Var(β̂) / ∂ϑ_i``.
    vcov : ndarray, shape (p, p)
    """

    A: np.ndarray
    jac: np.ndarray
    vcov: np.ndarray
    beta: np.ndarray
    sigma: float


def varpar_covariance(fit) -> VarparCovariance:
    """Hessian of the deviance and Jacobian of ``Var(β̂)`` at ϑ̂ (computed once per fit: the
    fit's cached ``_varpar_covariance``)."""
    return fit._varpar_covariance


def compute_varpar_covariance(fit) -> VarparCovariance:
    """Hessian of the deviance (numDeriv's method, as lmerTest) and Jacobian of ``Var(β̂)``
    at ϑ̂: exact where the deviance function gives ``∂U/∂θ`` (the blocked engine:
    ``Var(β̂) = σ² U(θ)``, so ``∂/∂σ = 2σU``), numDeriv's otherwise."""
    from hierlmm.threads import one_blas_thread

    vp = np.asarray(fit.varpar, dtype=float)
    dev = fit.deviance_function
    # the Hessian in unit-free coordinates ϑ' = ϑ / u (θ as the optimiser's φ, σ / σ̂), so that
    # the eigenvalue threshold of _positive_inverse means the same in any units of y or of a
    # slope's covariate (in (θ, σ), H_σσ scales as 1/σ²: with y in units 1e12 apart the σ
    # direction was dropped as "near zero"); numDeriv's relative steps are the same either way
    u = np.append(1.0 / theta_scale(dev), vp[-1] if vp[-1] > 0 else 1.0)
    with one_blas_thread():  # ~30 deviance evaluations, as in a fit
        H = hessian(lambda v: fit.deviance_at(v * u), vp / u) / np.outer(u, u)
        if hasattr(dev, "unscaled_vcov_jacobian"):
            theta, sigma = vp[:-1], vp[-1]
            jac = np.concatenate([sigma**2 * dev.unscaled_vcov_jacobian(theta, fit.solution.factor),
                                  (2 * sigma * fit._rx_inv)[None]])
        else:
            jac = jacobian(fit.vcov_at, vp)
    A = 2 * _positive_inverse(H * np.outer(u, u)) * np.outer(u, u)
    out = VarparCovariance(A=A, jac=jac, vcov=np.asarray(fit.vcov, dtype=float),
                           beta=np.asarray(fit.fixef, dtype=float), sigma=float(fit.sigma))
    return out


class HessianWarning(HierlmmWarning):
    """The Hessian of the deviance in (θ, σ) is not positive definite at the estimate."""


def _positive_inverse(H: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """lmerTest's inverse of the Hessian: over its eigenvalues above ``tol`` only.

    At a boundary (a variance 0 in a correlated term) the deviance has a negative curvature
    in the direction that leaves the parameter space, and ``2 H⁻¹`` is no covariance; like
    lmerTest, the directions with eigenvalues ``≤ tol`` are dropped, with a warning.
    """
    ev, vec = np.linalg.eigh(H)
    neg, zero = ev < -tol, np.abs(ev) <= tol
    for mask, what in ((neg, "negative"), (zero, "near-zero")):
        if mask.any():
            values = " ".join(f"{v:.1e}" for v in ev[mask])
            warnings.warn(
                f"the Hessian of the deviance in (theta, sigma) has {mask.sum()} {what} eigenvalue(s) "
                f"({values}): the fit is on the boundary or not at a minimum; Satterthwaite's df use "
                "the Hessian's positive part (as lmerTest)",
                HessianWarning,
                stacklevel=4,
            )
    pos = ev > tol
    return (vec[:, pos] / ev[pos]) @ vec[:, pos].T


def _qform(x, M):
    return float(x @ M @ x)


def contest1d(vc: VarparCovariance, L: np.ndarray) -> dict:
    """t test of ``l'β = 0`` with Satterthwaite df: estimate, se, df, t, p."""
    L = np.asarray(L, dtype=float).ravel()
    est = float(L @ vc.beta)
    var = _qform(L, vc.vcov)
    g = np.array([_qform(L, J) for J in vc.jac])
    df = 2 * var**2 / _qform(g, vc.A)
    t = est / np.sqrt(var)
    return {"estimate": est, "se": np.sqrt(var), "df": df, "t": t, "p": 2 * stats.t.sf(abs(t), df)}


def fstat_ddf(nu: np.ndarray, tol: float = 1e-8) -> float:
    """lmerTest's ``get_Fstat_ddf``: denominator df of an F from q Satterthwaite t's."""
    nu = np.asarray(nu, dtype=float)
    if nu.size == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(nu.mean())
    if np.any(nu <= 2):
        return 2.0
    E = np.sum(nu / (nu - 2))
    return float(2 * E / (E - nu.size))


def contestmd(vc: VarparCovariance, L: np.ndarray) -> dict:
    """F test of ``Lβ = 0`` with Satterthwaite's denominator df (lmerTest's ``contestMD``)."""
    L = np.atleast_2d(np.asarray(L, dtype=float))
    VL = L @ vc.vcov @ L.T
    d, P = np.linalg.eigh(VL)
    order = np.argsort(d)[::-1]
    d, P = d[order], P[:, order]
    tol = max(np.finfo(float).eps ** 0.5 * d[0], 0)
    q = int(np.sum(d > tol))
    PtL = (P.T @ L)[:q]
    t2 = (PtL @ vc.beta) ** 2 / d[:q]
    F = float(np.sum(t2) / q)
    nu = np.array([2 * d[m] ** 2 / _qform(np.array([_qform(PtL[m], J) for J in vc.jac]), vc.A) for m in range(q)])
    ddf = fstat_ddf(nu)
    mean_sq = F * vc.sigma**2
    return {"sum_sq": mean_sq * q, "mean_sq": mean_sq, "num_df": q, "den_df": ddf, "F": F,
            "p": float(stats.f.sf(F, q, ddf))}
