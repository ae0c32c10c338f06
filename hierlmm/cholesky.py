"""The blocked Cholesky factor ``L_θ`` of ``Λ*' A Λ* + I_q`` (``Λ* = diag(Λ_θ, I_{p+1})``).

With ``A`` split as in :mod:`hierlmm.crossprod`,

.. math::

    L = \\begin{bmatrix} L_{11} & 0 \\\\ L_{21} & L_{22} \\end{bmatrix},\\quad
    L_{11} L_{11}' = Λ_1' A_{11} Λ_1 + I,\\quad
    L_{21} = Λ_r' A_{21} Λ_1 L_{11}^{-T},\\quad
    L_{22} L_{22}' = Λ_r' A_{22} Λ_r + I_{q_r} - L_{21} L_{21}'

where ``Λ_r = diag(Λ_2, …, Λ_T, I_{p+1})``. ``L11`` is block diagonal (one ``k1 x k1``
block per level; a vector for a scalar term), ``L22`` is dense. Its trailing rows give
everything the deviance needs: the ``X`` block of ``L22`` is lme4's ``R_X'``, and the last
row is ``[c_u' c_β' r]`` with ``r²`` the penalised residual sum of squares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from hierlmm.crossprod import CrossProduct
from hierlmm.reterms import ReTerm

__all__ = ["BlockedFactor", "BlockedCholesky"]


@dataclass(eq=False)
class BlockedFactor:
    """``L_θ`` for one θ.

    Attributes
    ----------
    L11 : ndarray, shape (m1,) for a scalar first term, else (m1, k1, k1)
    G : ndarray, same shape as L11
        ``Λ_1 L_11^{-T}`` per level (``T1 L_j^{-T}``).
    L21 : ndarray or sparse matrix, shape (r, q1)
    L22 : ndarray, shape (r, r), lower triangular
    """

    L11: np.ndarray
    G: np.ndarray
    L21: np.ndarray | sp.spmatrix
    L22: np.ndarray
    q_rest: int
    p: int

    @property
    def r2(self) -> float:
        """Penalised residual sum of squares ``r²(θ)``."""
        return float(self.L22[-1, -1] ** 2)

    def logdet_L(self) -> float:
        """``log |L_θ|²`` over the random-effects rows."""
        if self.L11.ndim == 1:
            d1 = np.log(self.L11).sum()
        else:
            d1 = np.log(np.diagonal(self.L11, axis1=1, axis2=2)).sum()
        d2 = np.log(np.diag(self.L22)[: self.q_rest]).sum()
        return 2.0 * float(d1 + d2)

    def logdet_RX(self) -> float:
        """``log |R_X|²``."""
        q = self.q_rest
        return 2.0 * float(np.log(np.diag(self.L22)[q : q + self.p]).sum())


class BlockedCholesky:
    """Factorises ``Λ*' A Λ* + I`` for any θ, reusing the structure of ``A``.

    Parameters
    ----------
    cp : CrossProduct
    terms : list of ReTerm
        In the order of ``cp``'s columns.
    """

    def __init__(self, cp: CrossProduct, terms: list[ReTerm]):
        self.cp = cp
        self.terms = terms
        self.first = terms[0]
        self.rest = terms[1:]
        starts = np.cumsum([0] + [t.n_theta for t in terms])
        self.slices = [slice(a, b) for a, b in zip(starts[:-1], starts[1:])]
        self.scalar_rest = all(t.k == 1 for t in self.rest)
        if cp.a21_sparse:
            # row index of every stored entry of A21 (B keeps A21's pattern for a scalar term)
            self._a21_rowidx = np.repeat(np.arange(cp.r), np.diff(cp.A21.indptr))
        self._eye_rest = np.arange(cp.q_rest)

    # --- Λ of the rest block -------------------------------------------------------------
    def rest_lambda(self, theta: np.ndarray):
        """``Λ_r``: a vector (all rest terms scalar) or a sparse block-diagonal matrix."""
        cp = self.cp
        if self.scalar_rest:
            lam = np.ones(cp.r)
            start = 0
            for t, s in zip(self.rest, self.slices[1:]):
                lam[start : start + t.m] = theta[s][0]
                start += t.m
            return lam
        blocks = [sp.kron(sp.identity(t.m), t.template(theta[s])) for t, s in zip(self.rest, self.slices[1:])]
        blocks.append(sp.identity(cp.p + 1))
        return sp.block_diag(blocks, format="csr")

    # --- the factorisation ---------------------------------------------------------------
    def factor(self, theta: np.ndarray) -> BlockedFactor | None:
        """``L_θ``, or ``None`` if ``Λ*' A Λ* + I`` is numerically not positive definite."""
        cp = self.cp
        theta = np.asarray(theta, dtype=float)
        T1 = self.first.template(theta[self.slices[0]])
        k1 = self.first.k
        if k1 == 1:
            t = T1[0, 0]
            L11 = np.sqrt(t * t * cp.A11[:, 0, 0] + 1.0)
            G = t / L11
        else:
            S = np.einsum("ba,jbc,cd->jad", T1, cp.A11, T1)
            S[:, np.arange(k1), np.arange(k1)] += 1.0
            try:
                L11 = np.linalg.cholesky(S)
            except np.linalg.LinAlgError:
                return None
            Linv = np.linalg.inv(L11)
            G = np.einsum("ab,jcb->jac", T1, Linv)  # T1 L_j^{-T}

        lam = self.rest_lambda(theta) if self.rest else None
        # L21 = Λ_r' A21 Λ_1 L11^{-T}
        if cp.a21_sparse:
            B = cp.A21.copy()
            if k1 == 1:
                B.data *= G[B.indices]
            else:
                m = self.first.m
                Gb = sp.bsr_matrix((G, np.arange(m), np.arange(m + 1)), shape=(m * k1, m * k1))
                B = (B @ Gb).tocsr()
            if lam is not None:
                if self.scalar_rest:
                    rows = self._a21_rowidx if k1 == 1 else np.repeat(np.arange(cp.r), np.diff(B.indptr))
                    B.data *= lam[rows]
                else:
                    B = (lam.T @ B).tocsr()
            BBt = (B @ B.T).toarray()
        else:
            if k1 == 1:
                B = cp.A21 * G[None, :]
            else:
                r, m = cp.r, self.first.m
                B = np.einsum("rmk,mkl->rml", cp.A21.reshape(r, m, k1), G).reshape(r, m * k1)
            if lam is not None:
                B = B * lam[:, None] if self.scalar_rest else np.asarray(lam.T @ B)
            BBt = B @ B.T

        if lam is None:
            M = cp.A22.copy()
        elif self.scalar_rest:
            M = cp.A22 * np.outer(lam, lam)
        else:
            M = np.asarray(lam.T @ np.asarray(lam.T @ cp.A22).T)
        M[self._eye_rest, self._eye_rest] += 1.0
        M -= BBt
        try:
            L22 = scipy.linalg.cholesky(M, lower=True, overwrite_a=True, check_finite=False)
        except (np.linalg.LinAlgError, ValueError):
            return None
        return BlockedFactor(L11=L11, G=G, L21=B, L22=L22, q_rest=cp.q_rest, p=cp.p)
