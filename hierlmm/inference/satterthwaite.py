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

from dataclasses import dataclass

import numpy as np
from scipy import stats

from hierlmm.errors import HierlmmError, HierlmmWarning, warn
from hierlmm.inference.numderiv import hessian, jacobian

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
    """Hessian of the deviance (numDeriv's method, as lmerTest) and Jacobian of ``Var(β̂)`` in
    the variance parameters at their estimate.

    lmerTest differentiates in ``ϑ = (θ, σ)``; the Satterthwaite df, ``2(l'Cl)²/g'Ag``, is a
    first-order delta method and so the same in any smooth coordinates. They are taken here
    unit-free and well conditioned (:func:`centred_coordinates`): ``φ`` of each term's relative
    factor of ``Z`` with centred, unit-SD columns, and ``σ/σ̂``. In θ, a random slope whose
    covariate is far from 0 (or in other units) makes the intercept at 0 and the slope
    correlate near ±1 and the Hessian's small eigenvalues meaningless (a differential model,
    x 14.5 SDs from 0: df 75 in θ, lmerTest 76, and 16.1 for both with x standardised); the
    eigenvalue threshold of :func:`_positive_inverse` then also means the same in any units.
    ``∂Var(β̂)/∂θ`` is exact where the deviance function gives it (the blocked engine:
    ``Var(β̂) = σ²U(θ)``, ``∂/∂σ = 2σU``), mapped by the chain rule; numDeriv's otherwise."""
    from hierlmm.threads import one_blas_thread

    vp = np.asarray(fit.varpar, dtype=float)
    dev = fit.deviance_function
    to_theta, phi0 = centred_coordinates(fit)
    sigma_hat = vp[-1] if vp[-1] > 0 else 1.0

    def varpar(v):
        return np.append(to_theta(v[:-1]), v[-1] * sigma_hat)

    v0 = np.append(phi0, vp[-1] / sigma_hat)
    with one_blas_thread():  # ~30 deviance evaluations, as in a fit
        H = hessian(lambda v: fit.deviance_at(varpar(v)), v0)
        if hasattr(dev, "unscaled_vcov_jacobian"):
            theta, sigma = vp[:-1], vp[-1]
            J = jacobian(to_theta, phi0)  # ∂θ_i/∂φ_j as J[j, i]
            jac_theta = sigma**2 * dev.unscaled_vcov_jacobian(theta, fit.solution.factor)
            jac = np.concatenate([np.einsum("ji,ipq->jpq", J, jac_theta),
                                  (sigma_hat * 2 * sigma * fit._rx_inv)[None]])
        else:
            jac = jacobian(lambda v: fit.vcov_at(varpar(v)), v0)
    if not np.all(np.isfinite(H)):
        raise HierlmmError("Satterthwaite's df need the deviance's Hessian in the variance parameters, and it is not "
                           "finite at this fit (a parameter next to the edge of the valid covariances); use "
                           "ddf='kenward-roger' or ddf='asymptotic'")
    A = 2 * _positive_inverse(H)
    return VarparCovariance(A=A, jac=jac, vcov=np.asarray(fit.vcov, dtype=float),
                            beta=np.asarray(fit.fixef, dtype=float), sigma=float(fit.sigma))


# a term's columns are centred for the derivatives when a mean is this many SDs from 0 (Z'Z's
# condition ~2·10² = 200): below, lme4's coordinates are well conditioned and give lmerTest's
# digits (Orthodont's age, 5 SDs from 0: R's df to 1e-6; centred, 4e-5 from them); beyond,
# they are not (a differential model with x 14.5 SDs from 0: df 75 in θ, 16.1 centred and in R
# with x standardised)
CENTRE_BEYOND = 10.0


def _lower_factor(T: np.ndarray) -> np.ndarray:
    """The lower-triangular ``L`` (non-negative diagonal) with ``LL' = TT'``, by a QR of ``T'``:
    θ as lme4 parametrises ``TT'``, for any factor ``T`` (also a singular one)."""
    R = np.linalg.qr(T.T, mode="r")
    L = R.T
    return L * np.where(np.diag(L) < 0, -1.0, 1.0)[None, :]


def centred_coordinates(fit):
    """``(to_theta, φ̂)``: coordinates of the variance parameters in which a term's relative
    factor is that of ``Z`` with centred, unit-SD columns, and the map to lme4's θ.

    With an intercept column and a column whose mean is more than :data:`CENTRE_BEYOND` SDs
    from 0, ``Z_c = Z N`` (``N = I − e₀m'``, ``m`` the columns' means) has
    centred columns, ``b = N b_c`` and ``T = N T_c``; with ``S`` the centred columns' SDs,
    ``T_c = S⁻¹ T_φ``. ``to_theta`` takes ``T = N S⁻¹ T_φ`` to a lower-triangular factor of the
    same ``TT'`` (a QR). Other terms are only scaled by their columns' root mean squares (without
    an intercept, a shift of a covariate would change the model); residual correlation parameters
    pass unchanged. From each term's pooled ``Z'Z``, so also for rows not in memory."""
    dev = fit.deviance_function
    theta = np.asarray(fit.solution.theta, dtype=float)
    if getattr(dev, "marginal", False):  # its parameters are entries of S itself, not of a factor
        return (lambda phi: np.asarray(phi, dtype=float)), theta.copy()
    terms, slices = fit.design.terms, fit.design.theta_slices()
    grams = dev.term_grams()
    maps = []  # per term M: θ's factor = M @ φ's factor (a structured term: φ = M θ, M a vector)
    for t, G in zip(terms, grams):
        if not t.unstructured:  # a structure's own parameters, made unit-free (its relative SDs scaled)
            maps.append(t.cov.par_scale(np.sqrt(np.diag(G) / max(fit.nobs, 1))))
            continue
        k = t.k
        n0 = G[0, 0] if G[0, 0] > 0 else 1.0
        mean = G[0] / n0
        var = np.diag(G) / n0 - mean**2
        var[0] = 1.0
        # root mean squares over the rows of the centred columns (with prior weights, Z's columns
        # are √w z: Σ w (z − m)² / n), so that weights × k leave φ unchanged
        spread = np.sqrt(np.where(var > 0, var, 1.0))  # per unit weight: the trigger is weight-free
        sd = spread * np.sqrt(n0 / max(fit.nobs, 1))
        if not (k >= 2 and t.names[0] == "(Intercept)" and np.any(np.abs(mean[1:]) > CENTRE_BEYOND * spread[1:])):
            # θ's own coordinates, unit-free (lmerTest's numbers where they are well conditioned)
            mean = np.zeros(k)
            sd = np.sqrt(np.diag(G) / max(fit.nobs, 1))
            sd = np.where(sd > 0, sd, 1.0)
        N = np.eye(k)
        N[0, 1:] = -mean[1:]
        maps.append(N @ np.diag(1.0 / sd))  # T = N S⁻¹ T_φ

    def to_theta(phi):
        phi = np.asarray(phi, dtype=float)
        out = phi.copy()
        for t, s, M in zip(terms, slices, maps):
            out[s] = (phi[s] / M if M.ndim == 1 else
                      t.theta_from_template(_lower_factor(M @ t.template(phi[s]))))
        return out

    phi0 = theta.copy()
    for t, s, M in zip(terms, slices, maps):
        phi0[s] = (theta[s] * M if M.ndim == 1 else
                   t.theta_from_template(_lower_factor(np.linalg.solve(M, t.template(theta[s])))))
    return to_theta, phi0


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
            warn(
                f"the Hessian of the deviance in (theta, sigma) has {mask.sum()} {what} eigenvalue(s) "
                f"({values}): the fit is on the boundary or not at a minimum; Satterthwaite's df use "
                "the Hessian's positive part (as lmerTest)",
                HessianWarning,
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
