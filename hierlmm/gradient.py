"""The gradient of the profiled REML/ML criterion in θ, by a reverse pass through the blocked
Cholesky factor (:mod:`hierlmm.cholesky`).

With ``S_j = T'A_{11,j}T + I = L_jL_j'`` per level of the first term, ``W_j = T S_j^{-1} T'``,
the unscaled Schur complement ``B = A_{22} − A_{21} W A_{21}'`` and
``M = Λ_r' B Λ_r + I_q = L_{22}L_{22}'``, the criterion is

.. math::

    d(θ) = Σ_j \\log|S_j| + \\sum_i c_i \\log L_{22,ii}^2 + \\text{const},

``c_i = 1`` on the random-effects rows, on ``X``'s rows for REML (0 for ML), and ``c = n − p``
(REML) or ``n`` (ML) on ``y``'s row, where ``L_{22,rr}² = r²``: σ² is profiled out, so by the
envelope theorem this is also the gradient of the unprofiled criterion at ``σ̂²``. For
``L = chol(M)``, ``dΣ c_i \\log L_{ii}² = tr(\\bar M dM)`` with ``\\bar M = L^{-T} \\operatorname{diag}(c)
L^{-1}`` (Murray 2016, whose ``Φ(L'\\bar L)`` is diagonal here), i.e. ``M⁻¹`` plus a correction
of rank ``p + 1``. Then, with ``N = Λ_r \\bar M Λ_r'``, ``H_j = (A_{21}' N A_{21})_{jj}`` and
``K_j = T S_j^{-1}``,

.. math::

    \\bar Λ_r = 2 B Λ_r \\bar M, \\qquad
    \\bar T = 2 Σ_j \\left[A_{11,j}K_j + A_{11,j}K_j T'H_jK_j − H_jK_j\\right],

read on the pattern of ``Λ`` and carried to θ by each structure's
:meth:`~hierlmm.covariance.Covariance.factor_jacobian` (the identity for an unstructured
term). ``H`` comes from the adjoint of whatever computed the downdate ``A_{21} W A_{21}'``
(the precomputed sparse map's transpose, or a product with ``A_{21}``). The cost is that of
``M⁻¹`` from its factor (LAPACK's ``potri``, about two factorisations) and of products the
forward pass already makes.

Where the rest block's random-effects part of ``M`` is diagonal
(:meth:`~hierlmm.cholesky.BlockedCholesky._diagonal_rest`: nestings, lme4's ``(x || g)``), ``M̄``
is that diagonal plus a term of rank ``p + 1`` (:func:`_diagonal_rest`), never formed dense.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from hierlmm.cholesky import BlockedCholesky, BlockedFactor
from hierlmm.reterms import lambda_entries

__all__ = ["criterion_gradient"]

# the rest block's order up to which M̄ is formed from L⁻¹ by numpy (small matrices, where a
# LAPACK call through scipy costs ~80 µs of overhead) rather than by LAPACK's potri
_SMALL = 64


def _diagonal_rest(chol: BlockedCholesky, f: BlockedFactor, c: np.ndarray, lam: np.ndarray):
    """``(diag(M̄)[:q], h)`` where ``M``'s random-effects block is diagonal
    (:meth:`~hierlmm.cholesky.BlockedCholesky._diagonal_rest`), in O(nnz(A21)·(p+1)) as the
    factor was. With ``L22 = [[R, 0], [E, T]]`` (``R`` diagonal), ``L^{-1}``'s last ``p + 1``
    rows are ``Ẑ = [−T^{-1}ER^{-1}, T^{-1}]``, so ``M̄ = R^{-2} ⊕ 0 + Ẑ'C_tẐ`` and
    ``N = Λ_rM̄Λ_r' = diag(λ²/R²) ⊕ 0 + Ŵ'C_tŴ`` with ``Ŵ = ẐΛ_r'``: ``H_j`` is a weighted
    sum of products of ``A21``'s columns plus a product of rank ``p + 1``."""
    cp, k = chol.cp, chol.first.k
    q = cp.q_rest
    L = f.L22
    root = np.diagonal(L)[:q]
    Tinv = scipy.linalg.solve_triangular(L[q:, q:], np.eye(cp.r - q), lower=True, check_finite=False)
    Zh = np.hstack([-(Tinv @ L[q:, :q]) / root[None, :], Tinv])
    ct = c[q:]
    diag = 1.0 / root**2 + np.einsum("ta,t,ta->a", Zh[:, :q], ct, Zh[:, :q])
    weights = lam[:q] ** 2 / root**2
    What = Zh * lam[None, :]
    A21 = cp.A21 if sp.issparse(cp.A21) else sp.csr_matrix(np.asarray(cp.A21))
    top = sp.diags(np.sqrt(weights)) @ A21[:q]

    def h(N):  # N is implied by (weights, Ŵ, C_t); the argument is unused
        P = np.asarray((A21.T @ What.T).T)  # Ŵ A21, (p + 1) x q1
        m = chol.first.m
        out = np.empty((m, k, k))
        for a in range(k):
            for b in range(k):
                low = np.asarray(top[:, a::k].multiply(top[:, b::k]).sum(axis=0)).ravel()
                out[:, a, b] = low + np.einsum("tj,t,tj->j", P[:, a::k], ct, P[:, b::k])
        return out

    return diag, h


def _mbar(f: BlockedFactor, c: np.ndarray, full: bool = True) -> np.ndarray:
    """``L^{-T} diag(c) L^{-1}`` for ``L = L22``: ``M⁻¹`` (LAPACK ``potri``) plus ``(c_i − 1)
    w_i w_i'`` for the few ``i`` with ``c_i ≠ 1`` (``w_i = L^{-T} e_i``); its lower triangle
    only unless ``full``."""
    L = f.L22
    if L.shape[0] <= _SMALL:  # LAPACK's call costs more than the work: L^{-T} diag(c) L^{-1} directly
        Li = np.linalg.inv(L)
        return Li.T @ (c[:, None] * Li)
    inv, info = scipy.linalg.lapack.dpotri(L, lower=1)
    if info != 0:
        return None
    if full:
        inv = np.tril(inv) + np.tril(inv, -1).T
    idx = np.flatnonzero(c != 1.0)
    if idx.size:
        E = np.zeros((L.shape[0], idx.size))
        E[idx, np.arange(idx.size)] = 1.0
        w = scipy.linalg.solve_triangular(L, E, lower=True, trans="T", check_finite=False)
        inv += (w * (c[idx] - 1.0)) @ w.T  # (symmetric: right in either triangle)
    return inv


def _schur(chol: BlockedCholesky, G: np.ndarray, need_b: bool = True):
    """``(B, h, rep)``: ``B = A22 − A21 W A21'`` (``W_j = G_jG_j'``; None unless ``need_b``)
    and ``h(N)``, the per-level ``H_j = (A21' N A21)_jj`` of a symmetric ``N`` (shape
    ``(m, k, k)``; per group of levels with equal ``A11`` blocks where ``rep``, each group's
    first level, is not None). Through the precomputed sparse map's transpose where the
    forward pass used one (reading ``N``'s lower triangle only), else products with ``A21``."""
    cp, k = chol.cp, chol.first.k
    if chol._S is not None or chol._B is not None:
        grouped = chol._B is not None
        B = cp.A22 - chol.downdate_dense(chol.downdate_values(G)) if need_b else None
        mult = np.where(chol._trow == chol._tcol, 1.0, 2.0)

        def h(N):
            v = N.reshape(-1)[chol._targets] * mult
            out = (chol._B.T @ v if grouped else chol._S.T @ v).reshape(-1, k, k)
            return 0.5 * (out + np.transpose(out, (0, 2, 1)))

        return B, h, (chol._rep if grouped else None)
    A21 = cp.A21
    B = None
    if need_b:  # A21 W A21' = (A21 G)(A21 G)', A21 G being L21 without Λ_r
        AG = chol.l21(G, None)
        C = AG @ AG.T
        B = cp.A22 - (C.toarray() if sp.issparse(C) else np.asarray(C))

    def h(N):
        P = np.asarray(N @ A21) if not sp.issparse(A21) else np.asarray((A21.T @ N).T)
        if k == 1:
            if sp.issparse(A21):
                return np.asarray(A21.multiply(P).sum(axis=0)).reshape(-1, 1, 1)
            return np.einsum("ij,ij->j", A21, P).reshape(-1, 1, 1)
        m = chol.first.m
        out = np.empty((m, k, k))
        for a in range(k):
            for b in range(k):
                if sp.issparse(A21):
                    out[:, a, b] = np.asarray(A21[:, a::k].multiply(P[:, b::k]).sum(axis=0)).ravel()
                else:
                    out[:, a, b] = np.einsum("ij,ij->j", A21[:, a::k], P[:, b::k])
        return 0.5 * (out + np.transpose(out, (0, 2, 1)))

    return B, h, None


def criterion_gradient(chol: BlockedCholesky, theta, n: int, p: int, reml: bool,
                       f: BlockedFactor | None = None, sigma2: float | None = None) -> np.ndarray | None:
    """``∂d/∂θ`` of the profiled criterion (module doc) at θ, from its factor ``f`` (computed
    when not given); with ``sigma2``, of the criterion at that σ² (not profiled: ``r²/σ²`` in
    place of ``m log r²``, so ``c = r²/σ²`` on ``y``'s row), the collapsed sampler's
    log-density. ``None`` where the factor does not exist."""
    theta = np.asarray(theta, dtype=float)
    f = chol.factor(theta) if f is None else f
    if f is None:
        return None
    cp, first, slices = chol.cp, chol.first, chol.slices
    q, r, k = cp.q_rest, cp.r, first.k
    c = np.ones(r)
    if not reml:
        c[q : q + p] = 0.0
    c[-1] = (n - p if reml else n) if sigma2 is None else f.r2 / sigma2
    lam = chol.rest_lambda(theta) if chol.rest else None
    scalar = lam is not None and chol.scalar_rest
    if lam is not None and chol._diagonal_rest():
        diag, h = _diagonal_rest(chol, f, c, lam)
        Mbar, N, B, rep = None, None, None, None
    else:
        # the sparse map's adjoint reads N's lower triangle only
        mapped = chol._S is not None or chol._B is not None
        Mbar = _mbar(f, c, full=not (mapped and (scalar or lam is None)))
        if Mbar is None:
            return None
        diag = np.diagonal(Mbar)
        B, h, rep = _schur(chol, f.G, need_b=lam is not None and not scalar)
    # the rest terms: Λ̄_r = 2 B Λ_r M̄ on Λ_r's pattern; N = Λ_r M̄ Λ_r'
    grads = [None] * len(chol.terms)
    if lam is None:
        N = Mbar
    elif scalar:
        N = None if Mbar is None else Mbar * lam[:, None] * lam[None, :]
        # Λ_r'BΛ_r = M − I_q and diag(M M̄)_a = c_a = 1 for a < q, so
        # λ_a (BΛ_rM̄)_aa = 1 − M̄_aa: no B needed; 0 where λ_a = 0 (the criterion is even in λ)
        lq = lam[:q]
        with np.errstate(divide="ignore", invalid="ignore"):
            bar = np.where(lq != 0, 2.0 * (1.0 - diag[:q]) / lq, 0.0)
        at = 0
        for i, (t, s) in enumerate(zip(chol.rest, slices[1:]), start=1):
            grads[i] = bar[at : at + t.m].sum() * t.cov.factor_jacobian(theta[s])[0]
            at += t.m
    else:
        LM = np.asarray(lam @ Mbar)
        N = np.asarray(lam @ LM.T)
        N = 0.5 * (N + N.T)
        rows, cols, src, _ = lambda_entries(chol.rest)
        bar = 2.0 * np.einsum("ec,ce->e", B[rows], LM[:, cols])
        per_entry = np.bincount(src, weights=bar, minlength=int(src.max()) + 1 if src.size else 0)
        at = 0
        for i, (t, s) in enumerate(zip(chol.rest, slices[1:]), start=1):
            e = t.cov.pattern[0].size
            grads[i] = per_entry[at : at + e] @ t.cov.factor_jacobian(theta[s])
            at += e
    # the first term: T̄ = 2 Σ_j [A11_j K_j + A11_j K_j T'H_j K_j − H_j K_j]
    H = h(N)
    T = first.template(theta[slices[0]])
    A11 = cp.A11
    L11_inv = f.L11_inv if f.L11_inv is not None else (1.0 / f.L11 if k == 1 else np.linalg.inv(f.L11))
    if k == 1:  # the k x k algebra per level is elementwise
        K = f.G * L11_inv
        Kr, Ar, Hs = (K, A11[:, 0, 0], H[:, 0, 0]) if rep is None else (K[rep], A11[rep, 0, 0], H[:, 0, 0])
        t = T[0, 0]
        Tbar = np.array([[2.0 * (A11[:, 0, 0] @ K + (Ar * Kr * t * Hs) @ Kr - Hs @ Kr)]])
    else:  # batched matrix products over levels (einsum's generic loops cost 10x more here)
        K = f.G @ L11_inv
        Kr, Ar = (K, A11) if rep is None else (K[rep], A11[rep])
        HK = H @ Kr
        Tbar = 2.0 * ((A11 @ K).sum(axis=0) + (Ar @ Kr @ (T.T @ HK)).sum(axis=0) - HK.sum(axis=0))
    rows1, cols1 = first.cov.pattern
    grads[0] = Tbar[rows1, cols1] @ first.cov.factor_jacobian(theta[slices[0]])
    return np.concatenate(grads)
