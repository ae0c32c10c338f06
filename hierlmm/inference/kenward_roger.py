"""Kenward–Roger: the adjusted covariance of β̂ and the denominator degrees of freedom.

As pbkrtest's ``vcovAdj`` and ``Lb_ddf``. The marginal covariance is written linearly in the
variance components ``γ`` (every entry of each D, then σ²): ``Σ = Σ_i γ_i G_i``, with
``G = Z_a Z_b' + Z_b Z_a'`` for the covariance of columns a, b of a term (``Z_a Z_a'`` for a
variance) and ``I`` for σ². With ``Φ = (X'Σ⁻¹X)⁻¹``,
``P_i = −X'Σ⁻¹G_iΣ⁻¹X``, ``Q_ij = X'Σ⁻¹G_iΣ⁻¹G_jΣ⁻¹X`` and the expected information
``I_ij = tr(Σ⁻¹G_iΣ⁻¹G_j) − 2 tr(ΦQ_ij) + tr(ΦP_iΦP_j)`` (halved), ``W = 2 I⁻¹`` and

.. math:: Φ_A = Φ + 2Φ \\Big[\\sum_{ij} W_{ij}(Q_{ij} − P_iΦP_j)\\Big]Φ .

All sums over observations are taken block by block over independent groups of rows (the
connected components of the grouping factors), with small dense matrices: no ``n x n``
matrix is formed unless the design is one block (fully crossed), which is refused above
``MAX_BLOCK`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from hierlmm.blocks import independent_blocks, split_blocks
from hierlmm.errors import HierlmmError

__all__ = ["KRAdjustment", "kr_adjust", "lb_ddf"]

MAX_BLOCK = 4000


@dataclass
class KRAdjustment:
    """pbkrtest's ``vcovAdj``: the adjusted covariance with its ``P`` and ``W``."""

    vcov_adj: np.ndarray
    vcov: np.ndarray
    P: list
    W: np.ndarray


def _components(fit):
    """The variance parameters γ_a of a model whose ``V`` is linear in them, ``V = Σ γ_a G_a``:
    their values and, per parameter, ``G_a`` on a block of rows (a callable of the rows).

    Each term's :meth:`~hierlmm.covariance.Covariance.linear_basis` (``D_t = Σ γ G``, so
    ``G_a = Z_t (I ⊗ G) Z_t'`` within levels), then the residuals' (:func:`_residual_components`).
    """
    design = fit.design.whitened()
    gammas, comps = [], []
    for t, D in zip(design.terms, fit.covariance_matrices().values()):
        basis = t.cov.linear_basis()
        if basis is None:
            raise HierlmmError(f"Kenward-Roger's method needs covariances linear in their parameters; the "
                               f"{t.cov.title} structure of {t.describe()} is not (as pbkrtest, which takes "
                               "lme4's unstructured terms): use ddf='satterthwaite'")
        gammas.extend(t.cov.gamma(D.to_numpy()))
        for B in basis:
            def G(rows, t=t, B=B):  # ∂V/∂γ = Z_t (I ⊗ B) Z_t' within the block
                z, codes = t.Z[rows], t.codes[rows]
                return (z @ B @ z.T) * (codes[:, None] == codes[None, :])
            comps.append(G)
    g, c = _residual_components(fit)
    return np.array(gammas + g), comps + c


def _residual_components(fit):
    """The residual covariance ``σ² Δ R Δ`` as ``Σ γ_a G_a`` where it is linear (SAS's
    parametrisation of a ``REPEATED`` covariance): independent (``σ²``), a ``VarIdent``
    (``σ²δ_l²`` per level), ``CompoundSymmetry`` (``σ²``, ``σ²ρ``), ``Unstructured``
    (``σ²`` and ``σ²R_ab``) and ``Unstructured`` with ``VarIdent`` of its time column (the
    unstructured covariance ``S_ab = σ²δ_aδ_bR_ab``, TYPE=UN). Others are refused."""
    from hierlmm.residual import CompoundSymmetry, Unstructured

    s2 = fit.sigma**2
    dev = fit.deviance_function
    residual, variance = fit.residual, fit.variance
    n = fit.design.n
    eye = lambda rows: np.eye(len(rows))  # noqa: E731
    if residual is None and variance is None:
        return [s2], [eye]
    theta = fit.solution.theta
    vcodes = variance.codes(fit.design.data, np.arange(n)) if variance is not None else None
    delta = dev.variance_value(theta) if variance is not None else None
    if residual is None:  # VarIdent alone: a variance per level
        return ([s2 * d * d for d in delta],
                [lambda rows, lev=lev: np.diag((vcodes[rows] == lev).astype(float)) for lev in range(len(delta))])
    group = dev.rgroup.codes

    def same(rows):
        return group[rows][:, None] == group[rows][None, :]

    if isinstance(residual, CompoundSymmetry) and variance is None:
        rho = dev.residual_value(theta)
        return [s2, s2 * rho], [eye, lambda rows: same(rows) & ~np.eye(len(rows), dtype=bool)]
    if isinstance(residual, Unstructured) and (variance is None or variance.column == residual.time):
        pos = np.empty(n, dtype=np.int64)
        for stack in dev.stacks:
            pos[stack["rows"].ravel()] = stack["pos"].ravel()
        R = dev.residual_value(theta)
        k = R.shape[0]
        d = np.ones(k) if delta is None else delta
        S = s2 * R * np.outer(d, d)

        def pair(a, b):
            def G(rows):
                pa, pb = pos[rows] == a, pos[rows] == b
                M = (pa[:, None] & pb[None, :]) | (pb[:, None] & pa[None, :])
                return (M & same(rows)).astype(float)
            return G

        cols, rows_ = np.triu_indices(k, 1)
        if variance is None:  # a common variance: σ² on the diagonal
            return [s2] + [S[a, b] for a, b in zip(rows_, cols)], [eye] + [pair(a, b) for a, b in zip(rows_, cols)]
        c2, r2 = np.triu_indices(k)
        return [S[a, b] for a, b in zip(r2, c2)], [pair(a, b) for a, b in zip(r2, c2)]
    what = ", ".join(f"{name}={value!r}" for name, value in (("residual", residual), ("variance", variance))
                     if value is not None)
    raise HierlmmError(f"Kenward-Roger's method needs a residual covariance linear in its parameters (SAS's "
                       f"parametrisation); the model's {what} is not: use ddf='satterthwaite'")


def kr_adjust(fit) -> KRAdjustment:
    """The Kenward–Roger adjusted ``Var(β̂)`` of a fit (computed once: the fit's cached
    ``_kr_adjustment``)."""
    fit.model.require("Kenward-Roger", needs="b", instead="use ddf='satterthwaite'")
    fit.model.require("Kenward-Roger", needs="rows", instead="use ddf='satterthwaite'")
    if fit.method != "REML":
        raise HierlmmError("Kenward-Roger's method is only available for REML fits (as lmerTest); "
                           "refit with method='REML' or use ddf='satterthwaite'")
    return fit._kr_adjustment


def compute_kr_adjust(fit) -> KRAdjustment:
    """pbkrtest's ``vcovAdj`` (Kenward & Roger 1997, §2), on the whitened model (prior weights:
    ``W^½X``, ``W^½Z``; ``Var(β̂)`` and its derivatives are the same)."""
    design = fit.design.whitened()
    X = design.X
    p = X.shape[1]
    gammas, comps = _components(fit)
    ng = len(gammas)
    rgroup = getattr(fit.deviance_function, "rgroup", None)
    blocks = split_blocks(independent_blocks(design, [rgroup] if rgroup is not None else []))
    largest = max(len(b) for b in blocks)
    if largest > MAX_BLOCK:
        raise HierlmmError(
            f"Kenward-Roger needs dense matrices of each block of correlated rows; the largest "
            f"block here has {largest} rows (> {MAX_BLOCK}): use ddf='satterthwaite'"
        )
    XtSiX = np.zeros((p, p))
    PP = np.zeros((ng, p, p))
    QQ = np.zeros((ng, ng, p, p))
    K = np.zeros((ng, ng))
    for rows in blocks:
        Gs = [G(rows) for G in comps]
        Sigma = sum(g * G for g, G in zip(gammas, Gs))
        Si = np.linalg.inv(Sigma)
        Xb = X[rows]
        TT = Si @ Xb
        XtSiX += Xb.T @ TT
        HH = [G @ Si for G in Gs]
        OO = [H @ Xb for H in HH]
        for r in range(ng):
            PP[r] -= OO[r].T @ TT
            OrSi = OO[r].T @ Si
            for s in range(r, ng):
                QQ[r, s] += OrSi @ OO[s]
                K[r, s] += np.sum(HH[r].T * HH[s])
    Phi = np.linalg.inv(XtSiX)
    IE2 = np.zeros((ng, ng))
    for i in range(ng):
        PhiPi = Phi @ PP[i]
        for j in range(i, ng):
            IE2[i, j] = IE2[j, i] = K[i, j] - 2 * np.sum(Phi * QQ[i, j]) + np.sum(PhiPi * (PP[j] @ Phi))
    ev = np.linalg.eigvalsh(IE2)
    W = 2 * (np.linalg.inv(IE2) if np.min(np.abs(ev)) > 1e-10 else np.linalg.pinv(IE2))
    U = np.zeros((p, p))
    for i in range(ng - 1):
        for j in range(i + 1, ng):
            U += W[i, j] * (QQ[i, j] - PP[i] @ Phi @ PP[j])
    U = U + U.T
    for i in range(ng):
        U += W[i, i] * (QQ[i, i] - PP[i] @ Phi @ PP[i])
    return KRAdjustment(vcov_adj=Phi + 2 * Phi @ U @ Phi, vcov=Phi, P=list(PP), W=W)


def _ddf_and_scaling(L: np.ndarray, kr: KRAdjustment) -> tuple[float, float]:
    """pbkrtest's ``.KR_adjust``: the denominator df ``m`` and the scaling ``λ`` of the Wald F.

    Kenward & Roger (1997, §3): with ``A1, A2`` from the adjustment and ``q = rank(L)``,
    ``m = 4 + (q + 2)/(qρ − 1)`` and ``λ = m (1 − A2/q)/(m − 2)``; ``λF`` is referred to
    ``F(q, m)``. (``λ = 1`` when ``m`` is within 0.01 of 2, as pbkrtest.)
    """
    L = np.atleast_2d(np.asarray(L, dtype=float))
    V0 = kr.vcov
    Theta = L.T @ np.linalg.solve(L @ V0 @ L.T, L)
    ThetaV0 = Theta @ V0
    A1 = A2 = 0.0
    n = len(kr.P)
    us = [ThetaV0 @ P @ V0 for P in kr.P]
    for i in range(n):
        for j in range(i, n):
            e = 1.0 if i == j else 2.0
            A1 += e * kr.W[i, j] * np.trace(us[i]) * np.trace(us[j])
            A2 += e * kr.W[i, j] * np.sum(us[i] * us[j].T)
    q = np.linalg.matrix_rank(L)
    B = (A1 + 6 * A2) / (2 * q)
    g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
    den = 3 * q + 2 * (1 - g)
    c1, c2, c3 = g / den, (q - g) / den, (q + 2 - g) / den
    V0_ = 1 + c1 * B
    V1 = 1 - c2 * B
    V2 = 1 - c3 * B
    V0_ = 0.0 if abs(V0_) < 1e-10 else V0_
    ratio = 1.0 if abs(1 - A2 / q) < 1e-14 and abs(V1) < 1e-14 else (1 - A2 / q) / V1
    rho = ratio**2 * V0_ / V2 / q
    m = float(4 + (q + 2) / (q * rho - 1))
    scaling = 1.0 if abs(m - 2) < 1e-2 else m * (1 - A2 / q) / (m - 2)
    return m, float(scaling)


def lb_ddf(L: np.ndarray, kr: KRAdjustment) -> float:
    """pbkrtest's ``Lb_ddf``: Kenward–Roger denominator df for the hypothesis ``Lβ = 0``."""
    return _ddf_and_scaling(L, kr)[0]


def kr_test(fit, L: np.ndarray) -> dict:
    """F test of ``Lβ = 0`` as lmerTest reports pbkrtest's ``KRmodcomp``.

    ``F = λ W/q`` with ``W`` the Wald statistic in the adjusted covariance, λ Kenward and
    Roger's scaling and their denominator df; the sums of squares are lmerTest's, from the
    unscaled ``W/q``.
    """
    kr = kr_adjust(fit)
    L = np.atleast_2d(np.asarray(L, dtype=float))
    beta = np.asarray(fit.fixef, dtype=float)
    x = L @ beta
    q = L.shape[0]
    F_unscaled = float(x @ np.linalg.solve(L @ kr.vcov_adj @ L.T, x) / q)
    ddf, scaling = _ddf_and_scaling(L, kr)
    F = scaling * F_unscaled
    mean_sq = F_unscaled * fit.sigma**2
    return {"sum_sq": mean_sq * q, "mean_sq": mean_sq, "num_df": q, "den_df": ddf, "F": F,
            "p": float(stats.f.sf(F, q, ddf))}
