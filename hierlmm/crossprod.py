"""The blocked cross-product ``A = [Z X y]'[Z X y]``, computed in one pass over the data.

Following MixedModels.jl, the columns of ``[Z X y]`` are split in two blocks:

* block 1: the first random-effects term (the one with most levels), ``q1 = m1 k1`` columns.
  ``Z1'Z1`` is block diagonal: stored as ``A11`` of shape ``(m1, k1, k1)``.
* block 2 ("the rest"): the columns of the other terms, then ``X``, then ``y``:
  ``r = q_rest + p + 1`` columns. ``A22`` is stored dense (``r x r``); crossed or nested
  terms fill it in anyway during the Cholesky factorisation.

``A21 = [Z_rest X y]' Z1`` (``r x q1``) is stored dense when small, sparse (CSR) otherwise.
Every later evaluation of the deviance works on these blocks only, so its cost does not
depend on ``n``.

The columns of ``X`` enter ``A`` divided by their root mean square ``s_j`` (``X_s = X S⁻¹``),
so a covariate on a scale of 1e8 next to one of 1e-8 does not ruin the Cholesky factor. The
profiled deviance is the same function of θ up to ``log|R_X|² = log|R_{X_s}|² + 2 Σ log s_j``
(added back by :class:`~hierlmm.cholesky.BlockedFactor`), and ``β = S⁻¹ β_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from hierlmm.design import Design
from hierlmm.reterms import ReTerm

__all__ = ["CrossProduct", "crossproduct", "term_matrix", "x_scale"]

# A21 is kept dense while it has at most this many entries and is not sparse
_DENSE_A21_MAX = 4_000_000


def term_matrix(term: ReTerm) -> sp.csr_matrix:
    """The sparse ``n x (m k)`` model matrix ``Z_t`` of one term."""
    n, k = term.Z.shape
    cols = (term.codes[:, None] * k + np.arange(k)[None, :]).ravel()
    rows = np.repeat(np.arange(n), k)
    return sp.csr_matrix((term.Z.ravel(), (rows, cols)), shape=(n, term.q))


@dataclass(eq=False)
class CrossProduct:
    """The blocks of ``A = [Z X y]'[Z X y]``.

    Attributes
    ----------
    A11 : ndarray, shape (m1, k1, k1)
        Diagonal blocks of ``Z1'Z1``.
    A21 : ndarray or scipy.sparse.csr_matrix, shape (r, q1)
    A22 : ndarray, shape (r, r)
    q_rest, p : int
        Layout of block 2: ``q_rest`` random-effect columns, ``p`` fixed, then ``y``.
    n : int
    x_scale : ndarray, shape (p,)
        ``s_j``, the root mean square of column j of ``X``: ``A`` holds ``X S⁻¹``.
    """

    A11: np.ndarray
    A21: np.ndarray | sp.csr_matrix
    A22: np.ndarray
    q_rest: int
    p: int
    n: int
    x_scale: np.ndarray

    @property
    def logdet_scale(self) -> float:
        """``2 Σ log s_j``: ``log|R_X|²`` on the user's scale minus that of the scaled ``X``."""
        return 2.0 * float(np.log(self.x_scale).sum())

    @property
    def r(self) -> int:
        return self.A22.shape[0]

    @property
    def a21_sparse(self) -> bool:
        return sp.issparse(self.A21)


def _a11(term: ReTerm) -> np.ndarray:
    m, k = term.m, term.k
    A11 = np.empty((m, k, k))
    for a in range(k):
        for b in range(a, k):
            v = np.bincount(term.codes, weights=term.Z[:, a] * term.Z[:, b], minlength=m)
            A11[:, a, b] = v
            A11[:, b, a] = v
    return A11


def x_scale(X: np.ndarray) -> np.ndarray:
    """Root mean square of each column of ``X`` (1 for a column of zeros)."""
    rms = np.sqrt(np.mean(X * X, axis=0)) if X.shape[0] else np.ones(X.shape[1])
    return np.where(rms > 0, rms, 1.0)


def crossproduct(design: Design, sparse: bool | None = None) -> CrossProduct:
    """One pass over the data: the blocks of ``A`` for this design.

    ``sparse`` forces the storage of ``A21`` (default: dense when small and not sparse).
    """
    first, rest = design.terms[0], design.terms[1:]
    scale = x_scale(design.X)
    XY = np.column_stack([design.X / scale, design.y])
    A11 = _a11(first)
    # [X y]'Z1 by one bincount per (column of [X y], column of Z1): no sparse copy of Z1
    bottom = np.empty((XY.shape[1], first.m, first.k))
    for a in range(first.k):
        za = first.Z[:, a]
        for c in range(XY.shape[1]):
            bottom[c, :, a] = np.bincount(first.codes, weights=za * XY[:, c], minlength=first.m)
    bottom = bottom.reshape(XY.shape[1], first.q)
    XYtXY = XY.T @ XY
    if not rest:
        return CrossProduct(A11, np.ascontiguousarray(bottom), XYtXY, 0, design.p, design.n, scale)
    Zr = sp.hstack([term_matrix(t) for t in rest], format="csr")
    q_rest = Zr.shape[1]
    top = (Zr.T @ term_matrix(first)).tocsr()  # q_rest x q1
    r = q_rest + design.p + 1
    A22 = np.empty((r, r))
    A22[:q_rest, :q_rest] = (Zr.T @ Zr).toarray()
    ZrXY = np.asarray(Zr.T @ XY)
    A22[:q_rest, q_rest:] = ZrXY
    A22[q_rest:, :q_rest] = ZrXY.T
    A22[q_rest:, q_rest:] = XYtXY
    nnz = top.nnz + bottom.size
    if sparse is None:
        sparse = not (r * first.q <= _DENSE_A21_MAX and nnz > 0.25 * r * first.q)
    if not sparse:
        A21 = np.vstack([top.toarray(), bottom])
    else:
        A21 = sp.vstack([top, sp.csr_matrix(bottom)], format="csr")
    return CrossProduct(A11, A21, A22, q_rest, design.p, design.n, scale)
