"""One type per random-effects term: grouping codes, Z columns and its covariance factor.

For term ``t`` with ``k`` columns and ``m`` levels, the random effects of level ``j`` are
``b_j = σ T u_j``, ``u_j ~ N(0, I_k)``, where ``T`` (``k x k``, lower triangular) is the
term's *relative covariance factor*: ``D = σ² T T'``. ``Λ_θ`` is block diagonal with ``T``
repeated over the ``m`` levels. ``θ`` holds the lower triangle of ``T`` column by column
(lme4's order), with lower bound 0 on the diagonal so singular fits (``T`` singular, ``D``
on the boundary of the positive-semidefinite cone) are reachable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

__all__ = ["ReTerm", "sd_corr", "varcorr_rows", "lambda_entries"]


def lambda_entries(terms, slices) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Where θ's entries sit in ``Λ = blockdiag_t(I_{m_t} ⊗ T_t)``: ``(rows, cols, src, q)``,
    ``Λ[rows, cols] = θ[src]``, ``q`` its order. The one construction of Λ's pattern (the
    core's sparse Λ of the rest block, the dense and PyTensor forms of the Bayesian side)."""
    rows, cols, src, off = [], [], [], 0
    for t, s in zip(terms, slices):
        tr, tc = t._tril
        base = off + t.k * np.arange(t.m)[:, None]
        rows.append((base + tr).ravel())
        cols.append((base + tc).ravel())
        src.append(np.tile(np.arange(s.start, s.start + t.n_theta), t.m))
        off += t.q
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)  # noqa: E731
    return cat(rows), cat(cols), cat(src), off


def sd_corr(D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standard deviations and correlation matrix of a covariance matrix: the one rule.

    A negative variance (possible in the marginal formulation) has no SD (NaN); a correlation
    involving a zero or missing SD is NaN, as R's ``cov2cor`` gives (0/0)."""
    D = np.asarray(D, dtype=float)
    diag = np.diag(D)
    sd = np.where(diag >= 0, np.sqrt(np.abs(diag)), np.nan)
    den = np.outer(sd, sd)
    ok = den > 0
    corr = np.full(D.shape, np.nan)
    corr[ok] = D[ok] / den[ok]
    return sd, corr


def varcorr_rows(label: str, names: list[str], D: np.ndarray) -> list[tuple]:
    """Rows of lme4's ``as.data.frame(VarCorr(fit))`` for one term: ``(grp, var1, var2, vcov,
    sdcor)``, the variances (``sdcor`` their SD) then the covariances (``sdcor`` the
    correlation), in lme4's order."""
    D = np.asarray(D, dtype=float)
    sd, corr = sd_corr(D)
    k = len(names)
    rows = [(label, names[i], None, D[i, i], sd[i]) for i in range(k)]
    rows += [(label, names[c], names[r], D[r, c], corr[r, c]) for c in range(k) for r in range(c + 1, k)]
    return rows


@dataclass(eq=False)
class ReTerm:
    """A random-effects term ``(expr | group)`` evaluated on the data.

    Attributes
    ----------
    group : str
        lme4's name of the grouping factor (``Subject``, ``cask:batch``).
    label : str
        Unique label among the model's terms (``Subject``, ``Subject.1``), as lme4's VarCorr.
    factors : tuple of str
        The grouping columns.
    expr : str
        The left of the bar.
    codes : ndarray of int, shape (n,)
        Level index of every observation.
    levels : list of str
        Level labels, in R's order.
    Z : ndarray, shape (n, k)
        Values of the term's columns per observation (row ``i`` of ``Z_t`` lives in
        columns ``codes[i]*k : codes[i]*k + k`` of the sparse model matrix).
    names : list of str
        Names of the ``k`` columns (``(Intercept)``, ``Days``).
    """

    group: str
    factors: tuple[str, ...]
    expr: str
    codes: np.ndarray
    levels: list[str]
    Z: np.ndarray
    names: list[str]
    source: str = ""
    label: str = ""
    model_spec: object = field(default=None, repr=False)  # formulaic spec of ``expr``, for predict
    _tril: tuple[np.ndarray, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self):
        k = self.k
        # lower triangle, column by column (lme4's theta order)
        cols, rows = np.triu_indices(k)
        self._tril = (rows, cols)
        if not self.label:
            self.label = self.group

    @property
    def k(self) -> int:
        """Number of columns (random effects per level)."""
        return self.Z.shape[1]

    @property
    def m(self) -> int:
        """Number of levels."""
        return len(self.levels)

    @property
    def q(self) -> int:
        """Number of random effects, ``m * k``."""
        return self.m * self.k

    @property
    def n_theta(self) -> int:
        """Number of covariance parameters, ``k (k + 1) / 2``."""
        return self.k * (self.k + 1) // 2

    @property
    def theta_diagonal(self) -> np.ndarray:
        """Boolean mask of the entries of θ on the diagonal of ``T`` (bounded below by 0)."""
        rows, cols = self._tril
        return rows == cols

    def theta_lower(self) -> np.ndarray:
        """Lower bounds of θ: 0 on the diagonal of ``T``, -inf elsewhere."""
        return np.where(self.theta_diagonal, 0.0, -np.inf)

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """``(row, column)`` of ``T`` (and of ``D``'s lower triangle) for each θ entry, in θ's
        order (column by column): the one place that order is defined."""
        rows, cols = self._tril
        return list(zip(rows.tolist(), cols.tolist()))

    def theta_scale(self, column_rms: np.ndarray, covariance: bool = False) -> np.ndarray:
        """Per θ entry, the scale that makes it unit-free (the optimiser's ``φ = scale · θ``):
        ``s_r`` for an entry ``T[r, c]`` of the relative factor (row r of ``T`` carries column r of
        ``Z`` in its units), ``s_r s_c`` for an entry of a covariance ``S = TT'``
        (``covariance``, the marginal formulation); ``column_rms`` are the root mean squares
        ``s`` of ``Z``'s columns (0 read as 1)."""
        s = np.where((column_rms > 0) & np.isfinite(column_rms), column_rms, 1.0)
        return np.array([s[r] * s[c] if covariance else s[r] for r, c in self.pairs])

    def theta_names(self) -> list[str]:
        """lme4's names of this term's θ entries: ``Subject.(Intercept)``,
        ``Subject.Days.(Intercept)``, ``Subject.Days``."""
        return [f"{self.label}.{self.names[r]}" if r == c else f"{self.label}.{self.names[r]}.{self.names[c]}"
                for r, c in self.pairs]

    def sdcor_names(self) -> list[str]:
        """lme4's ``confint`` row names of this term's SDs and correlations (θ's order):
        ``sd_(Intercept)|Subject``, ``cor_Days.(Intercept)|Subject``, ``sd_Days|Subject``."""
        return [f"sd_{self.names[r]}|{self.group}" if r == c else f"cor_{self.names[r]}.{self.names[c]}|{self.group}"
                for r, c in self.pairs]

    def sdcor(self, D: np.ndarray) -> np.ndarray:
        """The SDs and correlations of ``D`` in θ's order (:func:`sd_corr`'s rule)."""
        sd, corr = sd_corr(D)
        return np.array([sd[r] if r == c else corr[r, c] for r, c in self.pairs])

    def sdcor_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of :meth:`sdcor`'s entries: ``[0, ∞)`` for an SD, ``[−1, 1]`` for a correlation."""
        diag = self.theta_diagonal
        return np.where(diag, 0.0, -1.0), np.where(diag, np.inf, 1.0)

    def theta_start(self) -> np.ndarray:
        """lme4's starting value: ``T = I``."""
        return self.theta_diagonal.astype(float)

    def boundary_escapes(self, theta: np.ndarray, tol: float = 1e-4, lift: float = 0.3) -> list[np.ndarray]:
        """Starts off the boundary for a singular ``T`` of a vector-valued term (else ``[]``).

        With a diagonal entry ``T_jj`` at 0, the deviance is stationary in ``T_jj`` and the
        entries below it in column ``j`` only rotate on a sphere: a local minimum in θ that
        need not be the lowest, while with ``T_jj > 0`` the sign of those entries relative to
        the others matters. Two starts: every zero diagonal entry set to ``lift``, and the
        same with the entries below it negated (a differential model, m0027: ML deviance
        1180.86474 at the boundary, 1180.86142 from the second start, as lme4)."""
        if self.k < 2:
            return []
        T = self.template(theta)
        zero = np.flatnonzero(np.diag(T) < tol)
        if zero.size == 0:
            return []
        lifted = T.copy()
        lifted[zero, zero] = lift
        flipped = lifted.copy()
        for j in zero:
            flipped[j + 1:, j] *= -1
        return [self.theta_from_template(lifted), self.theta_from_template(flipped)]

    def template(self, theta: np.ndarray) -> np.ndarray:
        """The ``k x k`` lower-triangular relative covariance factor ``T`` from θ."""
        T = np.zeros((self.k, self.k))
        T[self._tril] = theta
        return T

    def theta_from_template(self, T: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`template`."""
        return np.asarray(T)[self._tril].copy()

    def relcov(self, theta: np.ndarray) -> np.ndarray:
        """``T T'``: the covariance of ``b_j`` in units of σ²."""
        T = self.template(theta)
        return T @ T.T

    def describe(self) -> str:
        """The term as lme4 would print it, e.g. ``(1 + Days | Subject)``."""
        return f"({self.expr} | {self.group})"


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
