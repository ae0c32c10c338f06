"""One type per random-effects term: grouping codes, Z columns and its covariance structure.

For term ``t`` with ``k`` columns and ``m`` levels, the random effects of level ``j`` are
``b_j = σ T u_j``, ``u_j ~ N(0, I_k)``, where ``T`` (``k x k``, lower triangular) is the
term's *relative covariance factor*: ``D = σ² T T'``. ``Λ_θ`` is block diagonal with ``T``
repeated over the ``m`` levels. The term's structure (:mod:`hierlmm.covariance`: lme4's
unstructured ``(x | g)``, ``diag``, ``cs``, ``ar1``, ...) owns the map from its parameters,
the term's slice of θ, to ``T``; for an unstructured term θ holds the lower triangle of ``T``
column by column (lme4's order), with lower bound 0 on the diagonal so singular fits are
reachable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from hierlmm.covariance import Covariance, sd_corr
from hierlmm.covariance.unstructured import Unstructured

__all__ = ["ReTerm", "sd_corr", "varcorr_rows", "lambda_entries", "lambda_values"]

def lambda_entries(terms, offset: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Where ``T``'s possibly non-zero entries sit in ``Λ = blockdiag_t(I_{m_t} ⊗ T_t)``:
    ``(rows, cols, src, q)``, ``Λ[rows, cols] = v[src]`` with ``v`` the :func:`lambda_values` of
    these terms placed from ``offset`` on, ``q`` its order. The one construction of Λ's pattern
    (the core's sparse Λ of the rest block, the dense and PyTensor forms of the Bayesian side);
    for unstructured terms ``v`` is θ itself (``offset``: where their θ starts)."""
    rows, cols, src, off, at = [], [], [], 0, offset
    for t in terms:
        tr, tc = t.cov.pattern
        base = off + t.k * np.arange(t.m)[:, None]
        rows.append((base + tr).ravel())
        cols.append((base + tc).ravel())
        src.append(np.tile(np.arange(at, at + tr.size), t.m))
        off += t.q
        at += tr.size
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)  # noqa: E731
    return cat(rows), cat(cols), cat(src), off


def lambda_values(terms, slices, theta) -> np.ndarray:
    """The values :func:`lambda_entries` indexes: each term's ``T`` at its pattern, from θ."""
    parts = [t.cov.factor(theta[s])[t.cov.pattern] for t, s in zip(terms, slices)]
    return np.concatenate(parts) if parts else np.zeros(0)


def varcorr_rows(label: str, names: list[str], D: np.ndarray, diagonal: bool = False) -> list[tuple]:
    """Rows of lme4's ``as.data.frame(VarCorr(fit))`` for one term: ``(grp, var1, var2, vcov,
    sdcor)``, the variances (``sdcor`` their SD) then the covariances (``sdcor`` the
    correlation), in lme4's order; only the variances of a ``diagonal`` structure."""
    D = np.asarray(D, dtype=float)
    sd, corr = sd_corr(D)
    k = len(names)
    rows = [(label, names[i], None, D[i, i], sd[i]) for i in range(k)]
    if not diagonal:
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
    cov : Covariance
        The covariance structure (unstructured, lme4's, by default).
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
    cov: Covariance | None = None

    def __post_init__(self):
        if not self.label:
            self.label = self.group
        if self.cov is None:
            self.cov = Unstructured(tuple(self.names))

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
    def structure(self) -> str:
        """The structure's formula name: ``us``, ``diag``, ``cs``, ..."""
        return self.cov.kind

    @property
    def unstructured(self) -> bool:
        return self.cov.kind == "us"

    @property
    def n_theta(self) -> int:
        """Number of covariance parameters (``k (k + 1) / 2`` for an unstructured term)."""
        return self.cov.n_par

    def theta_lower(self) -> np.ndarray:
        """Lower bounds of the term's θ (0 for relative SDs, ``-inf`` elsewhere)."""
        return self.cov.lower()

    @property
    def tril_pairs(self) -> list[tuple[int, int]]:
        """``(row, column)`` of ``D``'s lower triangle, column by column (lme4's θ order of an
        unstructured term): the order of the derivatives in ``D``'s entries."""
        cols, rows = np.triu_indices(self.k)
        return list(zip(rows.tolist(), cols.tolist()))

    def theta_scale(self, column_rms: np.ndarray, covariance: bool = False) -> np.ndarray:
        """Per θ entry, the scale that makes it unit-free (the optimiser's ``φ = scale · θ``):
        :meth:`Covariance.par_scale`; for an entry of a covariance ``S = TT'`` (``covariance``,
        the marginal formulation, unstructured terms only) ``s_r s_c``; ``column_rms`` are the
        root mean squares ``s`` of ``Z``'s columns (0 read as 1)."""
        if covariance:
            s = np.where((column_rms > 0) & np.isfinite(column_rms), column_rms, 1.0)
            return np.array([s[r] * s[c] for r, c in self.tril_pairs])
        return self.cov.par_scale(np.asarray(column_rms, dtype=float))

    def theta_names(self) -> list[str]:
        """Names of this term's θ entries: lme4's ``Subject.(Intercept)``,
        ``Subject.Days.(Intercept)``, ``Subject.Days`` for an unstructured term."""
        return [f"{self.label}.{n}" for n in self.cov.par_labels()]

    def sdcor_names(self) -> list[str]:
        """lme4's ``confint`` row names of this term's SDs and correlations:
        ``sd_(Intercept)|Subject``, ``cor_Days.(Intercept)|Subject``, ``sd_Days|Subject``."""
        return [f"{n}|{self.group}" for n in self.cov.natural_labels()]

    def sdcor(self, D: np.ndarray) -> np.ndarray:
        """The SDs and correlations of ``D`` that the structure has (:meth:`sdcor_names`' order)."""
        return self.cov.natural(D)

    def sdcor_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of :meth:`sdcor`'s entries: ``[0, ∞)`` for an SD, a correlation's range."""
        return self.cov.natural_bounds()

    def theta_start(self) -> np.ndarray:
        """lme4's starting value: ``T = I``."""
        return self.cov.start()

    def boundary_escapes(self, theta: np.ndarray, tol: float = 1e-4, lift: float = 0.3) -> list[np.ndarray]:
        """Starts off a singular boundary (:meth:`Covariance.boundary_escapes`)."""
        return self.cov.boundary_escapes(theta, tol, lift)

    def template(self, theta: np.ndarray) -> np.ndarray:
        """The ``k x k`` lower-triangular relative covariance factor ``T`` from θ."""
        return self.cov.factor(theta)

    def theta_from_template(self, T: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`template` (for a structured term, the parameters of ``T T'``)."""
        return self.cov.par_from_factor(T)

    def relcov(self, theta: np.ndarray) -> np.ndarray:
        """``T T'``: the covariance of ``b_j`` in units of σ²."""
        T = self.template(theta)
        return T @ T.T

    def describe(self) -> str:
        """The term as written, e.g. ``(1 + Days | Subject)``, ``diag(1 + Days | Subject)``."""
        return self.cov.wrap(f"({self.expr} | {self.group})")


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
