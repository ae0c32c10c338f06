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

With prior weights or an offset, ``A`` is that of the whitened model
(:meth:`~hierlmm.design.Design.whitened`), ``[W^½Z W^½X W^½(y − o)]``, and ``Σ log w_i`` is
kept beside it for the likelihood's Jacobian.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from hierlmm.design import Design
from hierlmm.reterms import ReTerm

__all__ = ["CrossProduct", "crossproduct", "level_blocks", "term_matrix", "x_scale"]

# A21 is kept dense while it has at most this many entries and is not sparse
_DENSE_A21_MAX = 4_000_000


def term_matrix(term: ReTerm) -> sp.csr_matrix:
    """The sparse ``n x (m k)`` model matrix ``Z_t`` of one term."""
    n, k = term.Z.shape
    # CSR directly (row i holds columns codes_i k .. codes_i k + k - 1, in order): no COO
    # triplets to sort, which at 10⁷ rows were the largest temporaries of the fit
    index = np.int32 if term.q * k < 2**31 else np.int64
    cols = (term.codes[:, None] * k + np.arange(k)[None, :]).ravel() if k > 1 else term.codes
    cols = cols.astype(index, copy=False)
    indptr = np.arange(0, n * k + 1, k, dtype=np.int64 if n * k >= 2**31 else index)
    return sp.csr_matrix((np.ascontiguousarray(term.Z, dtype=float).ravel(), cols, indptr), shape=(n, term.q))


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
    log_weights : float
        ``Σ log w_i`` of the prior weights (0 without): ``−2ℓ`` is the whitened model's minus it.
    """

    A11: np.ndarray
    A21: np.ndarray | sp.csr_matrix
    A22: np.ndarray
    q_rest: int
    p: int
    n: int
    x_scale: np.ndarray
    log_weights: float = 0.0

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

    def dense(self) -> np.ndarray:
        """The whole ``A = [Z X y]'[Z X y]`` as one dense matrix, ``X`` on the user's scale
        (for small designs: the Bayesian side's dense forms)."""
        import scipy.linalg

        m1, k1 = self.A11.shape[:2]
        q1 = m1 * k1
        A = np.empty((q1 + self.r, q1 + self.r))
        A[:q1, :q1] = scipy.linalg.block_diag(*self.A11) if m1 else np.zeros((0, 0))
        A21 = self.A21.toarray() if self.a21_sparse else self.A21
        A[q1:, :q1] = A21
        A[:q1, q1:] = A21.T
        A[q1:, q1:] = self.A22
        ix = q1 + self.q_rest + np.arange(self.p)
        A[ix, :] *= self.x_scale[:, None]
        A[:, ix] *= self.x_scale[None, :]
        return A

    def _with_last(self, a21_last, a22_last) -> CrossProduct:
        """A copy whose response row (the last of block 2) is replaced."""
        A22 = self.A22.copy()
        A22[-1, :] = a22_last
        A22[:, -1] = a22_last
        if self.a21_sparse:
            A21 = sp.vstack([self.A21[:-1], sp.csr_matrix(a21_last[None, :])], format="csr")
        else:
            A21 = self.A21.copy()
            A21[-1] = a21_last
        return dataclasses.replace(self, A21=A21, A22=A22)

    def with_response(self, design: Design, y: np.ndarray) -> CrossProduct:
        """``A`` for the same ``Z`` and ``X`` and the response ``y`` (on the data's scale): only
        the response's row (``Z'y``, ``X'y``, ``y'y``) is computed, ``O(n k)``; the rest is shared."""
        y = design.whiten_response(y)
        design = design.whitened()
        first, rest = design.terms[0], design.terms[1:]
        z1y = np.stack([np.bincount(first.codes, weights=first.Z[:, a] * y, minlength=first.m)
                        for a in range(first.k)], axis=1).ravel()
        parts = [np.asarray(term_matrix(t).T @ y).ravel() for t in rest]
        parts += [(design.X / self.x_scale).T @ y, [y @ y]]
        return self._with_last(z1y, np.concatenate(parts))

    def with_offset(self, j: int, value: float) -> CrossProduct:
        """``A`` with ``β_j`` fixed at ``value`` (``x_j`` dropped, ``y − value · x_j`` the
        response), from ``A`` alone: no pass over the data. In ``A``'s scaled columns
        ``x_j = s_j x̃_j``, so the response column becomes ``y − c x̃_j`` with ``c = value s_j``."""
        i = self.q_rest + j  # x̃_j's row in block 2
        c = value * self.x_scale[j]
        a21 = self.A21[-1] - c * self.A21[i]
        a21 = np.asarray(a21.toarray()).ravel() if sp.issparse(a21) else a21
        a22 = self.A22[-1] - c * self.A22[i]
        a22[-1] = self.A22[-1, -1] - 2 * c * self.A22[i, -1] + c * c * self.A22[i, i]
        out = self._with_last(a21, a22)
        keep = np.arange(self.r) != i
        A21 = out.A21[np.flatnonzero(keep)] if out.a21_sparse else out.A21[keep]
        return dataclasses.replace(out, A21=A21, A22=out.A22[np.ix_(keep, keep)], p=self.p - 1,
                                   x_scale=np.delete(self.x_scale, j))


def level_blocks(term: ReTerm) -> np.ndarray:
    """``Z_j'Z_j`` per level ``j`` of a term, shape ``(m, k, k)`` (``A11`` of a first term)."""
    m, k = term.m, term.k
    A11 = np.empty((m, k, k))
    for a in range(k):
        for b in range(a, k):
            v = np.bincount(term.codes, weights=term.Z[:, a] * term.Z[:, b], minlength=m)
            A11[:, a, b] = v
            A11[:, b, a] = v
    return A11


def sparse_a21(nnz: int, r: int, q1: int) -> bool:
    """Store ``A21`` (``r x q1``, ``nnz`` non-zeros) sparse: unless small and not sparse."""
    return not (r * q1 <= _DENSE_A21_MAX and nnz > 0.25 * r * q1)


def x_scale(X: np.ndarray) -> np.ndarray:
    """Root mean square of each column of ``X`` (1 for a column of zeros)."""
    rms = np.sqrt(np.mean(X * X, axis=0)) if X.shape[0] else np.ones(X.shape[1])
    return np.where(rms > 0, rms, 1.0)


def crossproduct(design: Design, sparse: bool | None = None, scale: np.ndarray | None = None) -> CrossProduct:
    """One pass over the data: the blocks of ``A`` for this design.

    ``sparse`` forces the storage of ``A21`` (default: dense when small and not sparse).
    ``scale``: the ``s_j`` to divide ``X``'s columns by (default their root mean square; ones
    for the partial sums of :mod:`hierlmm.partitioned`, scaled once after the reduction). A
    design whose rows are not in memory has its ``A`` already (reduced over its partitions).
    """
    if not design.rows:
        return design.source.crossproduct(sparse)
    log_weights = design.log_weights
    design = design.whitened()
    first, rest = design.terms[0], design.terms[1:]
    X, y = design.X, design.y
    scale = x_scale(X) if scale is None else scale
    # [X̃ y] = [X S⁻¹ y] is never formed (at 10⁷ rows a copy of X): products with X are
    # divided by S afterwards
    unscale = np.append(1.0 / scale, 1.0)
    columns = [X[:, c] for c in range(X.shape[1])] + [y]
    A11 = level_blocks(first)
    # [X y]'Z1 by one bincount per (column of [X y], column of Z1): no sparse copy of Z1
    bottom = np.empty((len(columns), first.m, first.k))
    for a in range(first.k):
        za = first.Z[:, a]
        for c, col in enumerate(columns):
            bottom[c, :, a] = np.bincount(first.codes, weights=za * col, minlength=first.m) * unscale[c]
    bottom = bottom.reshape(len(columns), first.q)
    Xy = X.T @ y
    XYtXY = np.block([[X.T @ X, Xy[:, None]], [Xy[None, :], np.array([[y @ y]])]]) * np.outer(unscale, unscale)
    if not rest:
        return CrossProduct(A11, np.ascontiguousarray(bottom), XYtXY, 0, design.p, design.n, scale, log_weights)
    Zr = term_matrix(rest[0]) if len(rest) == 1 else sp.hstack([term_matrix(t) for t in rest], format="csr")
    q_rest = Zr.shape[1]
    top = (Zr.T @ term_matrix(first)).tocsr()  # q_rest x q1
    r = q_rest + design.p + 1
    A22 = np.empty((r, r))
    A22[:q_rest, :q_rest] = (Zr.T @ Zr).toarray()
    ZrXY = np.column_stack([np.asarray(Zr.T @ col).ravel() for col in columns]) * unscale
    A22[:q_rest, q_rest:] = ZrXY
    A22[q_rest:, :q_rest] = ZrXY.T
    A22[q_rest:, q_rest:] = XYtXY
    if sparse is None:
        sparse = sparse_a21(top.nnz + bottom.size, r, first.q)
    if not sparse:
        A21 = np.vstack([top.toarray(), bottom])
    else:
        A21 = sp.vstack([top, sp.csr_matrix(bottom)], format="csr")
    return CrossProduct(A11, A21, A22, q_rest, design.p, design.n, scale, log_weights)
