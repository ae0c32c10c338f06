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

The fixed part enters ``A`` in internal coordinates that make ``A`` independent of the units and
the origin of the data (:func:`fixed_map`): ``X`` as ``X̃ = X R⁻¹`` (``R`` upper triangular:
the columns' root mean squares when ``X`` is well conditioned, else the R factor of a QR
decomposition, so a covariate of mean 1e10 beside the intercept loses nothing), and ``y`` as
``y_c = y − X β₀`` with ``β₀`` its least-squares fit on ``X`` (refined once). Since β is
profiled out, the REML and ML criteria are the same functions of θ for ``y`` and ``y_c`` (up
to ``log|R_X|² = log|R_X̃|² + 2 Σ log|R_jj|``, added back by
:class:`~hierlmm.cholesky.BlockedFactor`); ``β = R⁻¹ β̃ + β₀`` and ``Var(β) = R⁻¹ Var(β̃) R⁻ᵀ``.
Without this, a response of mean 1e10 leaves ``r²`` to the cancellation of ``y'y`` against
``c'c`` (both ~1e20·n): every digit lost.

With prior weights or an offset, ``A`` is that of the whitened model
(:meth:`~hierlmm.design.Design.whitened`), ``[W^½Z W^½X W^½(y − o)]``, and ``Σ log w_i`` is
kept beside it for the likelihood's Jacobian.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.linalg.blas
import scipy.sparse as sp

from hierlmm.design import Design
from hierlmm.errors import DataError
from hierlmm.reterms import ReTerm, term_matrix

__all__ = ["CrossProduct", "crossproduct", "fixed_map", "level_blocks", "term_matrix", "x_scale"]

# A21 is kept dense while it has at most this many entries and is not sparse
_DENSE_A21_MAX = 4_000_000
# X S⁻¹ (S: the columns' root mean squares) is used as X̃ while the condition number of its Gram
# matrix is below this (X̃'X̃ then carries at least ~10 digits); above, X̃ = X R⁻¹ from a QR
_GRAM_COND_MAX = 1e6


@dataclass(eq=False)
class CrossProduct:
    """The blocks of ``A = [Z X̃ y_c]'[Z X̃ y_c]`` (module doc: ``X̃ = X R⁻¹``, ``y_c = y − Xβ₀``).

    Attributes
    ----------
    A11 : ndarray, shape (m1, k1, k1)
        Diagonal blocks of ``Z1'Z1``.
    A21 : ndarray or scipy.sparse.csr_matrix, shape (r, q1)
    A22 : ndarray, shape (r, r)
    q_rest, p : int
        Layout of block 2: ``q_rest`` random-effect columns, ``p`` fixed, then ``y``.
    n : int
    x_map : ndarray, shape (p, p)
        ``R``, upper triangular: ``A`` holds ``X̃ = X R⁻¹`` (diagonal: the columns' root mean
        squares).
    y_shift : ndarray, shape (p,)
        ``β₀``: ``A`` holds ``y − Xβ₀`` (zeros for the raw partial sums of
        :mod:`hierlmm.partitioned`).
    log_weights : float
        ``Σ log w_i`` of the prior weights (0 without): ``−2ℓ`` is the whitened model's minus it.
    """

    A11: np.ndarray
    A21: np.ndarray | sp.csr_matrix
    A22: np.ndarray
    q_rest: int
    p: int
    n: int
    x_map: np.ndarray
    y_shift: np.ndarray
    log_weights: float = 0.0

    @property
    def logdet_scale(self) -> float:
        """``2 Σ log|R_jj|``: ``log|R_X|²`` on the user's scale minus that of ``X̃``."""
        return 2.0 * float(np.log(np.abs(np.diag(self.x_map))).sum())

    @property
    def r(self) -> int:
        return self.A22.shape[0]

    @property
    def a21_sparse(self) -> bool:
        return sp.issparse(self.A21)

    def beta(self, beta_internal: np.ndarray) -> np.ndarray:
        """``β = R⁻¹ β̃ + β₀``: fixed effects on the user's scale from internal ones (the last
        axis of ``beta_internal``, so one or many draws)."""
        bt = np.asarray(beta_internal, dtype=float)
        if self.p == 0:
            return bt
        flat = bt.reshape(-1, self.p).T
        out = scipy.linalg.solve_triangular(self.x_map, flat, lower=False, check_finite=False).T + self.y_shift
        return out.reshape(bt.shape)

    def cov(self, U: np.ndarray) -> np.ndarray:
        """``R⁻¹ U R⁻ᵀ``: a covariance of internal fixed effects on the user's scale (the last
        two axes of ``U``)."""
        Rinv = scipy.linalg.solve_triangular(self.x_map, np.eye(self.p), lower=False, check_finite=False)
        return Rinv @ U @ Rinv.T

    def fixed_gram(self) -> np.ndarray:
        """``[X y]'[X y]`` of the (whitened) fixed part and response on the user's scale, from
        ``A`` (``(p+1) x (p+1)``)."""
        T, q = self._fixed_transform(), self.q_rest
        return T.T @ self.A22[q:, q:] @ T

    def _fixed_transform(self) -> np.ndarray:
        """``T`` with ``[X y] = [X̃ y_c] T`` (``(p+1) x (p+1)``)."""
        T = np.eye(self.p + 1)
        T[: self.p, : self.p] = self.x_map
        T[: self.p, -1] = self.x_map @ self.y_shift
        return T

    def dense(self) -> np.ndarray:
        """The whole ``A = [Z X y]'[Z X y]`` as one dense matrix on the user's scale (for small
        designs: the Bayesian side's dense forms)."""
        m1, k1 = self.A11.shape[:2]
        q1 = m1 * k1
        A = np.empty((q1 + self.r, q1 + self.r))
        A[:q1, :q1] = scipy.linalg.block_diag(*self.A11) if m1 else np.zeros((0, 0))
        A21 = self.A21.toarray() if self.a21_sparse else self.A21
        A[q1:, :q1] = A21
        A[:q1, q1:] = A21.T
        A[q1:, q1:] = self.A22
        T = np.eye(A.shape[0])
        ix = q1 + self.q_rest
        T[ix:, ix:] = self._fixed_transform()
        return T.T @ A @ T

    def _transformed(self, T: np.ndarray, **changes) -> CrossProduct:
        """A copy whose fixed and response columns ``[X̃ y_c]`` (block 2's last ``p + 1``) are
        replaced by ``[X̃ y_c] T`` (``T``: ``(p+1) x (p'+1)``), with ``changes`` to the fields."""
        q = self.q_rest
        fixed_rows = self.A21[q:]
        fixed_rows = np.asarray(fixed_rows.toarray()) if sp.issparse(fixed_rows) else fixed_rows
        new_rows = T.T @ fixed_rows
        if self.a21_sparse:
            A21 = sp.vstack([self.A21[:q], sp.csr_matrix(new_rows)], format="csr")
        else:
            A21 = np.vstack([self.A21[:q], new_rows])
        r = q + T.shape[1]
        A22 = np.empty((r, r))
        A22[:q, :q] = self.A22[:q, :q]
        A22[:q, q:] = self.A22[:q, q:] @ T
        A22[q:, :q] = A22[:q, q:].T
        A22[q:, q:] = T.T @ self.A22[q:, q:] @ T
        return dataclasses.replace(self, A21=A21, A22=A22, **changes)

    def mapped(self, x_map: np.ndarray) -> CrossProduct:
        """This ``A`` in further internal coordinates: ``X̃ R₁⁻¹`` (``x_map`` = ``R₁``, so ``R``
        becomes ``R₁R``), the response less its fit by the normal equations (``β₀`` grows by
        that fit). For the reduced partial sums of :mod:`hierlmm.partitioned`: the same ``A`` as
        the rows give, up to what the sums have kept (their pre-map, ``Encoder.premap``, keeps
        a response or covariate far from 0 from losing its digits in them)."""
        p = self.p
        T = np.eye(p + 1)
        T[:p, :p] = scipy.linalg.solve_triangular(x_map, np.eye(p), lower=False, check_finite=False)
        out = self._transformed(T, x_map=x_map @ self.x_map)
        if p == 0:
            return out
        x = slice(out.q_rest, out.q_rest + p)
        b0 = scipy.linalg.cho_solve(scipy.linalg.cho_factor(out.A22[x, x], lower=True), out.A22[x, -1])
        T = np.eye(p + 1)
        T[:p, -1] = -b0
        return out._transformed(T, y_shift=self.y_shift + out._beta_shift(b0))

    def with_response(self, design: Design, y: np.ndarray) -> CrossProduct:
        """``A`` for the same ``Z`` and ``X`` and the response ``y`` (on the data's scale): only
        the response's row (``Z'y_c``, ``X̃'y_c``, ``y_c'y_c``) is computed, ``O(n k)``; the rest
        is shared."""
        y = design.whiten_response(y)
        design = design.whitened()
        first, rest = design.terms[0], design.terms[1:]
        Xt, unscale = internal_columns(design.X, self.x_map)
        x = slice(self.q_rest, self.q_rest + self.p)
        y, b0 = center_response(Xt, unscale, self.A22[x, x], y)
        z1y = np.stack([np.bincount(first.codes, weights=first.Z[:, a] * y, minlength=first.m)
                        for a in range(first.k)], axis=1).ravel()
        parts = [np.asarray(term_matrix(t).T @ y).ravel() for t in rest]
        parts += [(Xt.T @ y) * unscale, [y @ y]]
        a22_last = np.concatenate(parts)
        A22 = self.A22.copy()
        A22[-1, :] = a22_last
        A22[:, -1] = a22_last
        if self.a21_sparse:
            A21 = sp.vstack([self.A21[:-1], sp.csr_matrix(z1y[None, :])], format="csr")
        else:
            A21 = self.A21.copy()
            A21[-1] = z1y
        return dataclasses.replace(self, A21=A21, A22=A22, y_shift=self._beta_shift(b0))

    def _beta_shift(self, b0: np.ndarray) -> np.ndarray:
        """``β₀ = R⁻¹ b̃₀`` for an internal shift ``b̃₀`` of the response."""
        return scipy.linalg.solve_triangular(self.x_map, b0, lower=False, check_finite=False) if self.p else b0

    def with_offset(self, j: int, value: float) -> CrossProduct:
        """``A`` with ``β_j`` fixed at ``value`` (``x_j`` dropped, ``y − value · x_j`` the
        response), from ``A`` alone: no pass over the data.

        In internal coordinates ``X = X̃R`` and ``y = y_c + X̃ R β₀``, so the other columns are
        ``X̃ M`` (``M = R[:, −j]``; with ``M = Q₁R₁`` their new internal form is ``X̃ Q₁``, map
        ``R₁``) and the response is ``y_c + X̃ w``, ``w = R(β₀ − value e_j)``: ``Q₁Q₁'w`` is
        in the new columns' span (the new ``β₀ = R₁⁻¹Q₁'w``), the rest stays in ``y_c``."""
        R, p = self.x_map, self.p
        keep = np.arange(p) != j
        Q1, R1 = np.linalg.qr(R[:, keep])
        signs = np.where(np.diag(R1) < 0, -1.0, 1.0)  # a positive diagonal, as R's
        Q1, R1 = Q1 * signs, R1 * signs[:, None]
        e = np.zeros(p)
        e[j] = value
        w = R @ (self.y_shift - e)
        c = Q1.T @ w
        T = np.zeros((p + 1, p))
        T[:p, : p - 1] = Q1
        T[:p, -1] = w - Q1 @ c
        T[-1, -1] = 1.0
        shift = scipy.linalg.solve_triangular(R1, c, lower=False, check_finite=False) if p > 1 else np.zeros(0)
        return self._transformed(T, p=p - 1, x_map=R1, y_shift=shift)


def fixed_map(gram: np.ndarray, n: int, r_factor) -> np.ndarray:
    """``R`` (upper triangular, positive diagonal) of the internal fixed-effects columns
    ``X̃ = X R⁻¹``, from ``X'X`` (``gram``) and ``n``: ``diag(s_j)``, the columns' root mean
    squares, while ``X S⁻¹`` is well conditioned (``cond(S⁻¹X'XS⁻¹) < 1e6``); else ``R/√n``
    of ``X = QR`` (``r_factor()``, called only then), so that ``X̃ = √n Q`` (a covariate of
    mean 1e10 beside the intercept: the Gram matrix of ``X S⁻¹`` has condition ~1e20 and
    would lose every digit of the covariate's effect)."""
    p = gram.shape[0]
    if p == 0:
        return np.zeros((0, 0))
    s = _rms(np.diag(gram), n)
    with np.errstate(all="ignore"):
        cond = np.linalg.cond(gram / np.outer(s, s))
    if np.isfinite(cond) and cond < _GRAM_COND_MAX:
        return np.diag(s)
    R = np.asarray(r_factor())[:p]
    R = R * np.where(np.diag(R) < 0, -1.0, 1.0)[:, None]
    return np.triu(R) / np.sqrt(max(n, 1))


def internal_columns(X: np.ndarray, x_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(M, u)`` with ``X̃ = M diag(u)``: ``X`` itself and ``1/s_j`` for a diagonal map (no copy
    of a tall ``X``), else ``X R⁻¹`` formed and ones."""
    p = X.shape[1]
    if np.count_nonzero(x_map - np.diag(np.diag(x_map))) == 0:
        return X, 1.0 / np.diag(x_map) if p else np.ones(0)
    # BLAS's right-side triangular solve Y R = X on X's own (column-major) layout: solving
    # R'Y' = X' instead transposes X twice in memory (0.4 s of a 10⁶ x 7 X, against 0.014 s)
    Xt = scipy.linalg.blas.dtrsm(1.0, x_map, np.asfortranarray(X, dtype=float), side=1, lower=0)
    return Xt, np.ones(p)


def center_response(M: np.ndarray, u: np.ndarray, gram: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(y − X̃b̃₀, b̃₀)``, ``b̃₀`` the least-squares coefficients of ``y`` on ``X̃ = M diag(u)``
    (``gram = X̃'X̃``), by two rounds of the normal equations (the second on the first's
    residual: iterative refinement, exact to the precision ``y`` carries for any mean)."""
    p = M.shape[1]
    if p == 0:
        return np.asarray(y, dtype=float), np.zeros(0)
    c = scipy.linalg.cho_factor(gram, lower=True, check_finite=False)
    b0 = np.zeros(p)
    y = np.asarray(y, dtype=float)
    for _ in range(2):
        step = scipy.linalg.cho_solve(c, (M.T @ y) * u, check_finite=False)
        y = y - M @ (step * u)
        b0 += step
    return y, b0


def check_residual(residual_ss: float, total_ss: float) -> None:
    """The fixed effects do not fit the response exactly: where the sum of squares of
    ``y − Xβ₀`` is at the rounding of ``y`` (below ``(30ε)²`` of ``y``'s: an exact fit leaves
    residuals of a few ε|y|), the residual variance would be 0 at every θ and the likelihood
    unbounded. A response shifted by 1e12 of its SDs still has residuals ~1e-13 of itself."""
    if total_ss > 0 and not residual_ss > (30 * np.finfo(float).eps) ** 2 * total_ss:
        raise DataError("the fixed effects fit the response exactly (the least-squares residuals are 0): the residual "
                        "variance would be 0 and the likelihood unbounded; remove fixed effects or check the response")


def level_blocks(term: ReTerm) -> np.ndarray:
    """``Z_j'Z_j`` per level ``j`` of a term, shape ``(m, k, k)`` (``A11`` of a first term)."""
    m, k = term.m, term.k
    A11 = np.empty((m, k, k))
    for a in range(k):
        for b in range(a, k):
            v = np.bincount(term.codes, weights=_times(term.Z[:, a], term.Z[:, b]), minlength=m).astype(float)
            A11[:, a, b] = v
            A11[:, b, a] = v
    return A11


def _ones(z: np.ndarray) -> bool:
    """``z`` is the read-only column of ones of an intercept-only term (a broadcast scalar 1)."""
    return z.ndim == 1 and len(z) > 0 and z.strides[0] == 0 and z[0] == 1.0


def _times(z: np.ndarray, col: np.ndarray) -> np.ndarray | None:
    """``z * col`` as bincount weights, without the product where ``z`` is the ones of an
    intercept (``None``: no weights, counts)."""
    if _ones(z):
        return None if _ones(col) else col
    return z * col


def rest_gram(rest: list[ReTerm], mats: list[sp.csr_matrix]) -> np.ndarray:
    """``Z_r'Z_r`` (dense) of the rest terms (``mats``: their :func:`term_matrix`): each term's
    own block diagonal (its :func:`level_blocks`, by bincounts), the products of two terms'
    sparse ``Z`` between them."""
    offsets = np.cumsum([0] + [t.q for t in rest])
    out = np.zeros((offsets[-1], offsets[-1]))
    for i, s_ in enumerate(rest):
        idx = offsets[i] + np.arange(s_.q).reshape(s_.m, s_.k)
        out[idx[:, :, None], idx[:, None, :]] = level_blocks(s_)
        for j in range(i + 1, len(rest)):
            C = (mats[i].T @ mats[j]).toarray()
            out[offsets[i]:offsets[i + 1], offsets[j]:offsets[j + 1]] = C
            out[offsets[j]:offsets[j + 1], offsets[i]:offsets[i + 1]] = C.T
    return out


def sparse_a21(nnz: int, r: int, q1: int) -> bool:
    """Store ``A21`` (``r x q1``, ``nnz`` non-zeros) sparse: unless small and not sparse."""
    return not (r * q1 <= _DENSE_A21_MAX and nnz > 0.25 * r * q1)


def x_scale(X: np.ndarray) -> np.ndarray:
    """Root mean square of each column of ``X`` (1 for a column of zeros)."""
    return _rms(np.einsum("ij,ij->j", X, X), X.shape[0])


def _rms(sumsq: np.ndarray, n: int) -> np.ndarray:
    """Root mean squares from sums of squares over ``n`` rows (1 where 0: a column of zeros)."""
    rms = np.sqrt(sumsq / max(n, 1))
    return np.where(rms > 0, rms, 1.0)


def crossproduct(design: Design, sparse: bool | None = None, raw: bool = False, premap=None) -> CrossProduct:
    """One pass over the data: the blocks of ``A`` for this design.

    ``sparse`` forces the storage of ``A21`` (default: dense when small and not sparse).
    ``raw``: ``X`` and ``y`` as they are (``R = I``, ``β₀ = 0``), or in the given coordinates
    ``premap = (R, β₀)``, for the partial sums of :mod:`hierlmm.partitioned` (all partitions
    in one map), mapped once more after the reduction. A design whose rows are not in memory
    has its ``A`` already (reduced over its partitions).
    """
    if not design.rows:
        return design.source.crossproduct(sparse)
    log_weights = design.log_weights
    design = design.whitened()
    first, rest = design.terms[0], design.terms[1:]
    p, X = design.p, design.X
    if raw:
        x_map, y_shift = (np.eye(p), np.zeros(p)) if premap is None else premap
        M, unscale = internal_columns(X, x_map)
        G = M.T @ M * np.outer(unscale, unscale)
        y, b0 = design.y - X @ y_shift, x_map @ y_shift
    else:
        XtX = X.T @ X
        x_map = fixed_map(XtX, design.n, lambda: scipy.linalg.qr(X, mode="r", check_finite=False)[0])
        # [X̃ y_c]: X̃ = M diag(unscale), formed only where R is not diagonal (at 10⁷ rows a copy of X)
        M, unscale = internal_columns(X, x_map)
        G = XtX * np.outer(unscale, unscale) if M is X else M.T @ M
        y, b0 = center_response(M, unscale, G, design.y)
        check_residual(float(y @ y), float(design.y @ design.y))
    unscale = np.append(unscale, 1.0)
    columns = [M[:, c] for c in range(p)] + [y]
    A11 = level_blocks(first)
    # [X̃ y]'Z1 by one bincount per (column of [X̃ y], column of Z1): no sparse copy of Z1
    bottom = np.empty((len(columns), first.m, first.k))
    for a in range(first.k):
        za = first.Z[:, a]
        for c, col in enumerate(columns):
            bottom[c, :, a] = np.bincount(first.codes, weights=_times(za, col), minlength=first.m) * unscale[c]
    bottom = bottom.reshape(len(columns), first.q)
    My = (M.T @ y) * unscale[:-1]
    XYtXY = np.block([[G, My[:, None]], [My[None, :], np.array([[y @ y]])]])
    y_shift = scipy.linalg.solve_triangular(x_map, b0, lower=False, check_finite=False) if p else b0
    if not rest:
        return CrossProduct(A11, np.ascontiguousarray(bottom), XYtXY, 0, p, design.n, x_map, y_shift, log_weights)
    mats = [term_matrix(t) for t in rest]
    Zr = mats[0] if len(rest) == 1 else sp.hstack(mats, format="csr")
    q_rest = Zr.shape[1]
    top = (Zr.T @ term_matrix(first)).tocsr()  # q_rest x q1
    r = q_rest + p + 1
    A22 = np.empty((r, r))
    A22[:q_rest, :q_rest] = rest_gram(rest, mats)
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
    return CrossProduct(A11, A21, A22, q_rest, p, design.n, x_map, y_shift, log_weights)
