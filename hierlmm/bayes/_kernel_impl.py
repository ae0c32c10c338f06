"""numba side of :mod:`hierlmm.bayes.kernel` (imported only when sampling: it imports numba).

Every function is ``cache=True`` and refers to module-level functions only, so numba keeps
the machine code on disk and a new session loads it instead of compiling. The first term's
k × k blocks (k ≤ 8: kernel._MAX_K) are stored level-last (``k × k × m``) and every per-level operation
loops over levels innermost (as the PyTensor graph's elementwise ops do); the r × r rest
block uses loops when small and BLAS otherwise. A matrix that is not positive definite gives
NaN, never an exception.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types

HEADER = 20
LOG2PI = float(np.log(2 * np.pi))
LOG2 = float(np.log(2.0))


@numba.njit(cache=True, inline="always")
def _chol(M, L):
    """``L = chol(M)`` (lower) in place; False when M is not positive definite."""
    n = M.shape[0]
    for j in range(n):
        d = M[j, j]
        for i in range(j):
            d -= L[j, i] * L[j, i]
        if not d > 0.0:
            return False
        L[j, j] = np.sqrt(d)
        for r in range(j + 1, n):
            v = M[r, j]
            for i in range(j):
                v -= L[r, i] * L[j, i]
            L[r, j] = v / L[j, j]
        for r in range(j):
            L[r, j] = 0.0
    return True


@numba.njit(cache=True, inline="always")
def _inv_lower(L, out):
    n = L.shape[0]
    for i in range(n):
        for j in range(n):
            out[i, j] = 0.0
    for i in range(n):
        out[i, i] = 1.0 / L[i, i]
        for j in range(i):
            v = 0.0
            for m in range(j, i):
                v -= L[i, m] * out[m, j]
            out[i, j] = v / L[i, i]


@numba.njit(cache=True)
def _mm(A, B, out):
    """``out = A @ B`` by loops (for k × k blocks: a BLAS call costs more than the work)."""
    n, m = A.shape
    q = B.shape[1]
    for i in range(n):
        for j in range(q):
            v = 0.0
            for a in range(m):
                v += A[i, a] * B[a, j]
            out[i, j] = v


@numba.njit(cache=True, inline="always")
def _acc(out, x, y):
    """``out += x * y`` elementwise (vectors over levels)."""
    for j in range(out.shape[0]):
        out[j] += x[j] * y[j]


@numba.njit(cache=True, inline="always")
def _bmm(A, ta, B, tb, out):
    """Per level j: ``out[:, :, j] = op(A[:, :, j]) @ op(B[:, :, j])`` for stacks of k × k
    blocks stored level-last (``k × k × m``), so the inner loop runs over levels (the k × k
    algebra of thousands of levels vectorises like the PyTensor graph's elementwise ops)."""
    n, q, m1 = out.shape
    kk = A.shape[0] if ta else A.shape[1]
    for i in range(n):
        for c in range(q):
            out[i, c, :] = 0.0
            for a in range(kk):  # rows over levels: the inner loop vectorises
                _acc(out[i, c], A[a, i] if ta else A[i, a], B[c, a] if tb else B[a, c])


@numba.njit(cache=True, inline="always")
def _bchol(S, L):
    """Per level, ``L = chol(S)``; False if any level's block is not positive definite."""
    k, _, m1 = S.shape
    for col in range(k):
        for j in range(m1):
            v = S[col, col, j]
            for i in range(col):
                v -= L[col, i, j] * L[col, i, j]
            L[col, col, j] = np.sqrt(v) if v > 0.0 else 0.0
        for j in range(m1):  # checked apart, so the loop above has no exit
            if L[col, col, j] == 0.0:
                return False
        for r in range(col + 1, k):
            for j in range(m1):
                v = S[r, col, j]
                for i in range(col):
                    v -= L[r, i, j] * L[col, i, j]
                L[r, col, j] = v / L[col, col, j]
            for j in range(m1):
                L[col, r, j] = 0.0
    return True


@numba.njit(cache=True, inline="always")
def _binv_lower(L, Li):
    k, _, m1 = L.shape
    for i in range(k):
        for c in range(k):
            for j in range(m1):
                Li[i, c, j] = 0.0
        for j in range(m1):
            Li[i, i, j] = 1.0 / L[i, i, j]
        for c in range(i):
            for j in range(m1):
                v = 0.0
                for a in range(c, i):
                    v -= L[i, a, j] * Li[a, c, j]
                Li[i, c, j] = v / L[i, i, j]


@numba.njit(cache=True)
def _matmul(A, B):
    """``A @ B``: loops for small operands, BLAS otherwise."""
    if A.shape[0] * A.shape[1] * B.shape[1] <= 4096:
        out = np.empty((A.shape[0], B.shape[1]))
        _mm(A, B, out)
        return out
    return np.ascontiguousarray(A) @ np.ascontiguousarray(B)


@numba.njit(cache=True)
def _chol_rev(L, Linv, Lbar):
    """``M̄`` with ``dℓ = tr(M̄ dM)`` for ``L = chol(M)``: ``L^{-T} sym(Φ(L'L̄)) L^{-1}``."""
    P = _matmul(L.T, Lbar)
    n = P.shape[0]
    for i in range(n):
        P[i, i] *= 0.5
        for j in range(i + 1, n):
            P[i, j] = 0.0
    A = 0.5 * (P + P.T)
    return _matmul(_matmul(Linv.T, A), Linv)


@numba.njit(cache=True)
def _half(x, scale, nu):
    """Log-density (up to a constant) of a half-normal (``nu = 0``) or half-t(ν) at ``x``, and
    its derivative."""
    if nu == 0.0:
        return -0.5 * (x / scale) ** 2, -x / scale**2
    u = (x / scale) ** 2 / nu
    return -(nu + 1.0) / 2.0 * np.log1p(u), -(nu + 1.0) * x / (scale**2 * nu + x * x)


@numba.njit(cache=True)
def _layout(d):
    """The header's sizes and the arrays of the buffer (views, no copies of A)."""
    k1 = int(d[1])
    m1 = int(d[2])
    r = int(d[3])
    nt = int(d[10])
    nlam = int(d[11])
    pos = HEADER
    ks = d[pos:pos + nt].astype(np.int64)
    pos += nt
    offs = d[pos:pos + nt].astype(np.int64)
    pos += nt
    lam_rows = d[pos:pos + nlam].astype(np.int64)
    pos += nlam
    lam_cols = d[pos:pos + nlam].astype(np.int64)
    pos += nlam
    lam_src = d[pos:pos + nlam].astype(np.int64)
    pos += nlam
    A11 = d[pos:pos + m1 * k1 * k1].reshape((k1, k1, m1))  # level-last
    pos += m1 * k1 * k1
    A21 = d[pos:pos + r * m1 * k1].reshape((r, k1, m1))  # level-last
    pos += r * m1 * k1
    A22 = d[pos:pos + r * r].reshape((r, r))
    pos += r * r
    x_scale = d[pos:pos + int(d[5])]
    return ks, offs, lam_rows, lam_cols, lam_src, A11, A21, A22, x_scale


@numba.njit(cache=True)
def _diagonal(lam_rows, lam_cols) -> bool:
    """Whether the rest terms' Λ_r is diagonal (every rest term scalar: crossed intercepts)."""
    for e in range(lam_rows.size):
        if lam_rows[e] != lam_cols[e]:
            return False
    return True


@numba.njit(cache=True)
def _groups(d):
    """The first term's levels in groups of equal ``A11`` (a scalar first term; ``d[18]``
    groups, 0 where the buffer has none): per level its group, per group its number of levels
    and ``P_g = Σ_{j ∈ g} a_j a_j'`` (``a_j`` level j's column of ``A21``). ``G_j`` depends on
    level j through ``A11_j`` alone, so ``C = Σ_j G_j² a_j a_j' = Σ_g G_g² P_g``: ``r²`` work
    per group instead of per level (crossed factors: a few dozen row counts among hundreds of
    levels)."""
    k1 = int(d[1])
    m1 = int(d[2])
    r = int(d[3])
    nt = int(d[10])
    nlam = int(d[11])
    ng = int(d[18])
    pos = HEADER + 2 * nt + 3 * nlam + m1 * k1 * k1 + r * m1 * k1 + r * r + int(d[5])
    group = d[pos:pos + (m1 if ng > 0 else 0)].astype(np.int64)
    pos += group.size
    size = d[pos:pos + ng]
    pos += ng
    P = d[pos:pos + ng * r * r].reshape((ng, r, r))
    return ng, group, size, P


@numba.njit(cache=True)
def _theta(x, ks, offs, neta):
    """``θ = vech(L)/σ`` (``L_ii = e^{η_ii}``) and ``∂θ_e/∂η_e``."""
    sigma = np.exp(0.5 * x[neta])
    theta = np.empty(neta)
    dtheta = np.empty(neta)
    for t in range(ks.size):
        k = ks[t]
        e = offs[t]
        for c in range(k):
            for rr in range(c, k):
                if rr == c:
                    theta[e] = np.exp(x[e]) / sigma
                    dtheta[e] = theta[e]
                else:
                    theta[e] = x[e] / sigma
                    dtheta[e] = 1.0 / sigma
                e += 1
    return theta, dtheta


@numba.njit(cache=True)
def _forward(theta, d, ks, offs, lam_rows, lam_cols, lam_src, A11, A21, A22):
    """The blocked factor at θ: ``T`` (and ``Tb``, T on every level), per level
    ``L_j, L_j^{-1}, G_j``, ``B``, ``A22 − C``,
    ``Λ_r``, ``L22`` and ``Σ log`` of the factor's diagonal (without ``L22``'s); ``ok`` False
    when a block is not positive definite."""
    k1 = int(d[1])
    m1 = int(d[2])
    r = int(d[3])
    qr = int(d[4])
    nlam = int(d[11])
    T = np.zeros((k1, k1))
    e = offs[0]
    for c in range(k1):
        for rr in range(c, k1):
            T[rr, c] = theta[e]
            e += 1
    Ls = np.empty((k1, k1, m1))  # level-last stacks, every entry written below
    Linvs = np.empty((k1, k1, m1))
    G = np.empty((k1, k1, m1))
    B = np.empty((k1, r, m1))
    K = np.zeros((r, r))
    Lam = np.eye(r)
    L22 = np.zeros((r, r))
    Tb = np.empty((k1, k1, m1))  # T on every level
    for a in range(k1):
        for c in range(k1):
            for j in range(m1):
                Tb[a, c, j] = T[a, c]
    W = np.empty((k1, k1, m1))
    S = np.empty((k1, k1, m1))
    _bmm(Tb, True, A11, False, W)
    _bmm(W, False, Tb, False, S)
    for a in range(k1):
        for j in range(m1):
            S[a, a, j] += 1.0
    logdet1 = 0.0
    if not _bchol(S, Ls):
        return False, T, Tb, Ls, Linvs, G, B, K, Lam, L22, logdet1
    _binv_lower(Ls, Linvs)
    # Σ log L_aa,j as the log of running products (one log per ~10² levels, not one per level:
    # the logs were a third of the forward pass at 2000 levels), renormalised before they leave
    # [1e-150, 1e150]
    acc = 1.0
    for a in range(k1):
        for j in range(m1):
            acc *= Ls[a, a, j]
            if acc > 1e150 or acc < 1e-150:
                logdet1 += 2.0 * np.log(acc)
                acc = 1.0
    logdet1 += 2.0 * np.log(acc)
    _bmm(Tb, False, Linvs, True, G)
    for row in range(r):
        for c in range(k1):
            B[c, row, :] = 0.0
            for a in range(k1):
                _acc(B[c, row], A21[row, a], G[a, c])
    ng, group, _, P = _groups(d)
    if ng > 0:  # Σ_g G_g² P_g (_groups)
        w = np.zeros(ng)
        for j in range(m1):
            w[group[j]] = G[0, 0, j] * G[0, 0, j]
        C = np.dot(w, P.reshape((ng, r * r))).reshape((r, r))  # BLAS's matrix-vector product
    else:
        C = np.zeros((r, r))
        for c in range(k1):
            C += _matmul(B[c], B[c].T)
    K = A22 - C
    if qr > 0:
        for i in range(qr):
            Lam[i, i] = 0.0
        for e in range(nlam):
            Lam[lam_rows[e], lam_cols[e]] = theta[lam_src[e]]
        if _diagonal(lam_rows, lam_cols):  # scalar rest terms: Λ'KΛ = K ⊙ λλ', no products
            M = np.empty((r, r))
            for a in range(r):
                for b in range(r):
                    M[a, b] = Lam[a, a] * K[a, b] * Lam[b, b]
        else:
            M = _matmul(_matmul(Lam.T, K), Lam)
        for i in range(qr):
            M[i, i] += 1.0
    else:
        M = K.copy()
    ok = _chol(M, L22)
    return ok, T, Tb, Ls, Linvs, G, B, K, Lam, L22, logdet1


@numba.njit(cache=True)
def logp_grad(x, d, grad):
    """Collapsed log-density (REML likelihood + prior + log-Jacobian) at ``x``; its gradient
    into ``grad``. NaN where a factor fails."""
    n_dim = int(d[0])
    k1 = int(d[1])
    m1 = int(d[2])
    r = int(d[3])
    qr = int(d[4])
    p = int(d[5])
    nobs = d[6]
    prior = int(d[9])
    nt = int(d[10])
    nlam = int(d[11])
    neta = int(d[13])
    ks, offs, lam_rows, lam_cols, lam_src, A11, A21, A22, _ = _layout(d)
    for i in range(n_dim):
        grad[i] = 0.0
    s = x[neta]
    sigma2 = np.exp(s)
    theta, dtheta = _theta(x, ks, offs, neta)
    ok, _, Tb, Ls, Linvs, G, B, K, Lam, L22, logdet1 = _forward(theta, d, ks, offs, lam_rows, lam_cols,
                                                                lam_src, A11, A21, A22)
    if not ok:
        return np.nan
    logdet = d[7] + logdet1
    for i in range(qr + p):
        logdet += 2.0 * np.log(L22[i, i])
    r2 = L22[r - 1, r - 1] ** 2
    dof = nobs - p
    loglik = -0.5 * (logdet - d[8] + dof * (LOG2PI + s) + r2 / sigma2)

    # ---------------------------------------------------------------- reverse
    thetabar = np.zeros(neta)
    Lbar22 = np.zeros((r, r))
    for i in range(qr + p):
        Lbar22[i, i] = -1.0 / L22[i, i]
    Lbar22[r - 1, r - 1] = -L22[r - 1, r - 1] / sigma2
    L22inv = np.zeros((r, r))
    _inv_lower(L22, L22inv)
    Mbar = _chol_rev(L22, L22inv, Lbar22)
    if qr > 0 and _diagonal(lam_rows, lam_cols):  # Λ̄_ii = 2 Σ_a K_ia λ_a M̄_ai, C̄ = −M̄ ⊙ λλ'
        for e in range(nlam):
            i = lam_rows[e]
            v = 0.0
            for a in range(r):
                v += K[i, a] * Lam[a, a] * Mbar[a, i]
            thetabar[lam_src[e]] += 2.0 * v
        Cbar = np.empty((r, r))
        for a in range(r):
            for b in range(r):
                Cbar[a, b] = -Lam[a, a] * Mbar[a, b] * Lam[b, b]
    elif qr > 0:
        Lambar = 2.0 * _matmul(_matmul(K, Lam), Mbar)
        for e in range(nlam):
            thetabar[lam_src[e]] += Lambar[lam_rows[e], lam_cols[e]]
        Cbar = -_matmul(_matmul(Lam, Mbar), Lam.T)
    else:
        Cbar = -Mbar
    Gbar = np.empty((k1, k1, m1))
    ng, group, size, P = _groups(d)
    if ng > 0:
        # Ḡ_j = 2 G_j a_j'C̄a_j; what follows is linear in Ḡ_j with coefficients of A11_j alone,
        # so a group's sum 2 G_g <C̄, P_g>, spread evenly over its levels, gives the same result
        sg = np.dot(P.reshape((ng, r * r)), np.ascontiguousarray(Cbar).reshape(r * r))
        for j in range(m1):
            Gbar[0, 0, j] = 2.0 * G[0, 0, j] * sg[group[j]] / size[group[j]]
    else:
        for c in range(k1):
            Bbar = 2.0 * _matmul(Cbar, B[c])  # r × m1
            for a in range(k1):
                Gbar[a, c, :] = 0.0
                for row in range(r):
                    _acc(Gbar[a, c], A21[row, a], Bbar[row])
    # per level: T̄ += Ḡ L⁻¹ + 2 A T S̄,  L̄ = −L^{-T}Ḡ'G (lower) − diag(1/L),  S̄ = chol_rev(L, L̄)
    W = np.empty((k1, k1, m1))
    W2 = np.empty((k1, k1, m1))
    Lbar = np.empty((k1, k1, m1))
    _bmm(Gbar, False, Linvs, False, W)
    Tbar = np.zeros((k1, k1))
    for a in range(k1):
        for b in range(k1):
            v = 0.0
            for j in range(m1):
                v += W[a, b, j]
            Tbar[a, b] = v
    _bmm(Linvs, True, Gbar, True, W)
    _bmm(W, False, G, False, Lbar)
    for a in range(k1):
        for b in range(k1):
            for j in range(m1):
                Lbar[a, b, j] = -Lbar[a, b, j] if b <= a else 0.0
        for j in range(m1):
            Lbar[a, a, j] -= 1.0 / Ls[a, a, j]
    # chol_rev per level: P = Φ(L'L̄), S̄ = L^{-T} sym(P) L^{-1}
    _bmm(Ls, True, Lbar, False, W)
    for a in range(k1):
        for b in range(k1):
            for j in range(m1):
                pa = W[a, b, j] if b < a else (0.5 * W[a, a, j] if a == b else 0.0)
                pb = W[b, a, j] if a < b else (0.5 * W[a, a, j] if a == b else 0.0)
                W2[a, b, j] = 0.5 * (pa + pb)
    _bmm(Linvs, True, W2, False, W)
    Sbar = np.empty((k1, k1, m1))
    _bmm(W, False, Linvs, False, Sbar)
    _bmm(A11, False, Tb, False, W)
    _bmm(W, False, Sbar, False, W2)
    for a in range(k1):
        for b in range(k1):
            v = 0.0
            for j in range(m1):
                v += W2[a, b, j]
            Tbar[a, b] += 2.0 * v
    e = offs[0]
    for c in range(k1):
        for rr in range(c, k1):
            thetabar[e] += Tbar[rr, c]
            e += 1
    sbar = -0.5 * dof + 0.5 * r2 / sigma2
    for e in range(neta):
        grad[e] = thetabar[e] * dtheta[e]
        sbar -= 0.5 * thetabar[e] * theta[e]

    # ---------------------------------------------------------------- prior and Jacobian
    lp = s  # |∂σ²/∂s| = σ²
    sbar += 1.0
    for t in range(nt):
        k = ks[t]
        lp += k * LOG2
        e = offs[t]
        for c in range(k):
            for rr in range(c, k):
                if rr == c:
                    lp += (k - rr + 1) * x[e]
                    grad[e] += k - rr + 1
                e += 1
    if prior >= 1:  # flat on σ and the SDs: −log σ − Σ_t k_t Σ_i log s_ti (and, 2: proper parts)
        sigma_scale, sd_scale, nu, eta = d[14], d[15], d[16], d[17]
        lp -= 0.5 * s
        sbar -= 0.5
        if prior == 2:  # half-normal / half-t on σ: its derivative in σ times ∂σ/∂s = σ/2
            sig = np.exp(0.5 * s)
            v, dv = _half(sig, sigma_scale, nu)
            lp += v
            sbar += dv * 0.5 * sig
        for t in range(nt):
            k = ks[t]
            Lt = np.zeros((k, k))
            idx = np.zeros((k, k), dtype=np.int64)
            e = offs[t]
            for c in range(k):
                for rr in range(c, k):
                    Lt[rr, c] = np.exp(x[e]) if rr == c else x[e]
                    idx[rr, c] = e
                    e += 1
            for i in range(k):
                sd2 = 0.0
                for jj in range(i + 1):
                    sd2 += Lt[i, jj] ** 2
                sd = np.sqrt(sd2)
                lp -= 0.5 * k * np.log(sd2)
                dsd = -k / sd  # ∂/∂sd of the log-density's terms in sd
                if prior == 2:
                    v, dv = _half(sd, sd_scale, nu)
                    lp += v
                    dsd += dv
                    if k > 1:  # LKJ(η): (η − 1)(2 Σ log L_ii − 2 Σ log sd_i)
                        lp += (eta - 1.0) * (2.0 * x[idx[i, i]] - np.log(sd2))
                        grad[idx[i, i]] += 2.0 * (eta - 1.0)
                        dsd -= 2.0 * (eta - 1.0) / sd
                for jj in range(i + 1):
                    g = dsd * Lt[i, jj] / sd
                    grad[idx[i, jj]] += g * (Lt[i, jj] if i == jj else 1.0)
    grad[neta] = sbar
    return loglik + lp


@numba.njit(cache=True, nogil=True)  # chunks of draws run in threads (kernel.conditional_draws)
def draws(xs, d, z, beta, u, bout):
    """Per row i of ``xs``: ``(u, β) = L₋^{-T}(c + σ z_i)`` (``z_i``: the first term's ``q1``
    entries, then the rest's ``q_r + p``), into ``beta[i]`` (on ``X``'s scale), ``u[i]``
    (every term's spherical effects, in term order) and ``bout[i] = Λ_θ u[i]``. False if a
    factor fails."""
    k1 = int(d[1])
    m1 = int(d[2])
    r = int(d[3])
    qr = int(d[4])
    p = int(d[5])
    neta = int(d[13])
    ks, offs, lam_rows, lam_cols, lam_src, A11, A21, A22, x_scale = _layout(d)
    q1 = m1 * k1
    k2 = qr + p
    for i in range(xs.shape[0]):
        x = xs[i]
        sigma = np.exp(0.5 * x[neta])
        theta, _ = _theta(x, ks, offs, neta)
        ok, T, _, Ls, _, _, B, _, Lam, L22, _ = _forward(theta, d, ks, offs, lam_rows, lam_cols, lam_src,
                                                         A11, A21, A22)
        if not ok:
            return False
        # L21 = Λ_r'B (r × q1, per level and column c: L21[:, j k1 + c] = Λ_r' B[c][:, j])
        L21 = np.empty((r, q1))
        for c in range(k1):
            LB = _matmul(Lam.T, B[c])
            for j in range(m1):
                for row in range(r):
                    L21[row, j * k1 + c] = LB[row, j]
        # rest block: L22₋' w2 = c2 + σ z2 (back substitution, upper triangular L22₋')
        w2 = np.empty(k2)
        for a in range(k2 - 1, -1, -1):
            v = L22[r - 1, a] + sigma * z[i, q1 + a]
            for b in range(a + 1, k2):
                v -= L22[b, a] * w2[b]
            w2[a] = v / L22[a, a]
        # first term, per level: L_j' w1_j = c1_j + σ z1_j − (L21₋' w2)_j
        for j in range(m1):
            rhs = np.empty(k1)
            for c in range(k1):
                col = j * k1 + c
                v = L21[r - 1, col] + sigma * z[i, col]
                for b in range(k2):
                    v -= L21[b, col] * w2[b]
                rhs[c] = v
            for a in range(k1 - 1, -1, -1):
                v = rhs[a]
                for b in range(a + 1, k1):
                    v -= Ls[b, a, j] * u[i, j * k1 + b]
                u[i, j * k1 + a] = v / Ls[a, a, j]
        for a in range(qr):
            u[i, q1 + a] = w2[a]
        for a in range(p):
            beta[i, a] = w2[qr + a] / x_scale[a]
        # b = Λ_θ u: T u_j per level of the first term, the rest block of Λ_r on the others
        for j in range(m1):
            for a in range(k1):
                v = 0.0
                for c in range(a + 1):
                    v += T[a, c] * u[i, j * k1 + c]
                bout[i, j * k1 + a] = v
        for a in range(qr):
            v = 0.0
            for c in range(qr):
                v += Lam[a, c] * u[i, q1 + c]
            bout[i, q1 + a] = v
    return True


_LOGP_SIG = types.int64(types.uint64, types.CPointer(types.double), types.CPointer(types.double),
                        types.CPointer(types.double), types.voidptr)
_EXPAND_SIG = types.int64(types.uint64, types.uint64, types.CPointer(types.double), types.CPointer(types.double),
                          types.voidptr)


@numba.cfunc(_LOGP_SIG, cache=True)
def logp_c(dim, x_, out_, logp_, user_):
    """nutpie's log-density callback: 0 on success, 3/4 for a non-finite gradient/value."""
    head = numba.carray(user_, (HEADER,), np.float64)
    if dim != int(head[0]):
        return -1
    d = numba.carray(user_, (int(head[12]),), np.float64)
    x = numba.carray(x_, (dim,))
    out = numba.carray(out_, (dim,))
    lp = numba.carray(logp_, (1,))
    val = logp_grad(x, d, out)
    lp[0] = val
    if not np.isfinite(val):
        return 4
    for i in range(dim):
        if not np.isfinite(out[i]):
            return 3
    return 0


@numba.cfunc(_EXPAND_SIG, cache=True)
def expand_c(dim, expanded, x_, out_, user_):
    """nutpie's expand callback: the draw is the unconstrained vector itself."""
    if dim != expanded:
        return -1
    x = numba.carray(x_, (dim,))
    out = numba.carray(out_, (dim,))
    for i in range(dim):
        out[i] = x[i]
    return 0
