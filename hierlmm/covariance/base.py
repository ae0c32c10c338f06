"""The one interface of a random term's covariance structure.

A term with ``k`` columns has ``b_j = σ T u_j``, ``u_j ~ N(0, I_k)``, so its covariance is
``D = σ² T T'``; ``T`` (``k x k``, lower triangular) is the *relative covariance factor*. A
structure is a map from its parameters ``par`` (what the optimiser, the Hessian and the
samplers move) to ``T``, with

* ``lower``: the bounds of ``par`` (0 for a relative SD, ``-inf`` for a correlation
  parameter, which is unbounded: ``ρ = x / √(1 + x²)`` or a shifted form of it, as glmmTMB);
* ``start``: ``T = I`` where the structure allows it (lme4's start);
* ``factor(par)``: ``T``, its non-zero entries at ``pattern``;
* ``par_from_relcov(D/σ²)``: the inverse, exact where ``D`` has the structure (a projection
  otherwise);
* the *natural* parameters (SDs, correlations; lme4's ``confint`` rows) and back;
* ``linear_basis``: symmetric ``G_a`` with ``D = Σ γ_a G_a`` where ``D`` is linear in its
  parameters (Kenward–Roger's ``∂V/∂γ_a``), ``None`` otherwise.

Adding a structure is one subclass in one file and one line of :data:`STRUCTURES`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from hierlmm.errors import FormulaError

__all__ = ["Covariance", "psd_cholesky", "sd_corr", "to_unit", "from_unit"]


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


def psd_cholesky(D: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a positive semi-definite matrix (zero pivots allowed)."""
    D = np.asarray(D, dtype=float)
    k = D.shape[0]
    L = np.zeros_like(D)
    for j in range(k):
        v = D[j, j] - L[j, :j] @ L[j, :j]
        L[j, j] = np.sqrt(v) if v > 1e-14 * max(D[j, j], 1e-300) else 0.0
        for i in range(j + 1, k):
            L[i, j] = (D[i, j] - L[i, :j] @ L[j, :j]) / L[j, j] if L[j, j] > 0 else 0.0
    return L


def to_unit(x):
    """``x ∈ ℝ ↦ x / √(1 + x²) ∈ (−1, 1)``: glmmTMB's map of an unbounded parameter to a
    correlation."""
    x = np.asarray(x, dtype=float)
    return x / np.sqrt(1.0 + x * x)


def from_unit(u):
    """Inverse of :func:`to_unit` (``±1`` taken as ``±1e8``: the edge, numerically)."""
    u = np.clip(np.asarray(u, dtype=float), -1.0 + 1e-16, 1.0 - 1e-16)
    return np.clip(u / np.sqrt(1.0 - u * u), -1e8, 1e8)


@dataclass(frozen=True, eq=False)
class Covariance:
    """A covariance structure over a term's ``k`` columns (named ``names``); the subclasses
    define ``n_par``, ``factor``, ``par_from_relcov``, the labels and the natural parameters."""

    names: tuple[str, ...]

    kind: ClassVar[str] = ""        # the formula's wrapper: "us", "diag", ...
    title: ClassVar[str] = ""       # as a lecture names it: "unstructured", ...
    diagonal: ClassVar[bool] = False  # D is diagonal: Λ holds T's diagonal only, no correlations shown
    n_sd: ClassVar[int | None] = None  # how many leading parameters are relative SDs (None: k)

    @property
    def k(self) -> int:
        return len(self.names)

    # --- parameters ---------------------------------------------------------------------
    @property
    def n_par(self) -> int:
        raise NotImplementedError

    @property
    def sd_count(self) -> int:
        """How many leading parameters are (relative) SDs: ``k``, or 1 for a homogeneous structure."""
        return self.k if self.n_sd is None else self.n_sd

    @property
    def sampled(self) -> bool:
        """The Bayesian samplers can draw it (it has :meth:`factor_pt`)."""
        return type(self).factor_pt is not Covariance.factor_pt

    def lower(self) -> np.ndarray:
        """0 for the relative SDs (the leading parameters), ``-inf`` for the rest."""
        return np.where(np.arange(self.n_par) < self.sd_count, 0.0, -np.inf)

    def sign_free(self) -> np.ndarray:
        """Which parameters are bounded below by 0 only by a sign convention: negating one
        (with, for a factor's diagonal, the entries below it) gives the same ``D``, so the
        criterion is even in it and its gradient vanishes at 0 whether 0 is a minimum or a
        maximum along it; an optimiser with derivatives that stops there must look further
        (:func:`hierlmm.optimize.quasi_newton`). By default the one SD of a homogeneous
        structure (``T = s·R``); none of a heterogeneous one (negating one SD flips the signs
        of its correlations)."""
        return (np.arange(self.n_par) < 1) & (self.sd_count == 1)

    def canonical(self, par) -> np.ndarray:
        """The parameters of the same ``D`` within the bounds: the :meth:`sign_free` entries
        made non-negative."""
        par = np.asarray(par, dtype=float)
        return np.where(self.sign_free(), np.abs(par), par)

    def start(self) -> np.ndarray:
        """Relative SDs 1, correlations 0 (``T = I``)."""
        return self.par_from_relcov(np.eye(self.k))

    def factor(self, par) -> np.ndarray:
        """``T``, lower triangular, with ``T T' = D / σ²``."""
        raise NotImplementedError

    def par_from_relcov(self, S) -> np.ndarray:
        """The parameters whose ``T T'`` is ``S`` (a projection where ``S`` lacks the structure)."""
        raise NotImplementedError

    def par_from_factor(self, T) -> np.ndarray:
        """The parameters of a factor ``T`` (:meth:`par_from_relcov` of ``T T'``)."""
        T = np.asarray(T, dtype=float)
        return self.par_from_relcov(T @ T.T)

    def par_scale(self, rms: np.ndarray) -> np.ndarray:
        """Per parameter, the scale that makes it unit-free (the optimiser's ``φ = scale · par``):
        a relative SD of column ``r`` scales with that column's root mean square ``s_r``, a
        homogeneous SD with their root mean square, a correlation parameter not at all."""
        s = np.where((rms > 0) & np.isfinite(rms), rms, 1.0)
        n_sd = self.sd_count
        sds = s if n_sd == self.k else np.full(n_sd, np.sqrt(np.mean(s * s)))
        return np.concatenate([sds, np.ones(self.n_par - n_sd)])

    def par_labels(self) -> list[str]:
        """Names of the parameters (θ's names without the term's label)."""
        raise NotImplementedError

    @functools.cached_property
    def pattern(self) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, cols)`` of ``T``'s entries that can be non-zero, column by column (computed
        once: every evaluation of the deviance reads it)."""
        if self.diagonal:
            d = np.arange(self.k)
            return d, d
        cols, rows = np.triu_indices(self.k)
        return rows, cols

    def factor_jacobian(self, par, h: float = 1e-6) -> np.ndarray:
        """``∂T[pattern]/∂par``, shape ``(len(pattern), n_par)`` (central differences by default;
        the unstructured factor overrides it with the identity)."""
        par = np.asarray(par, dtype=float)
        pat = self.pattern
        J = np.empty((pat[0].size, self.n_par))
        lower = self.lower()
        for i in range(self.n_par):
            step = h * max(1.0, abs(par[i]))
            up, dn = par.copy(), par.copy()
            up[i] += step
            dn[i] = max(dn[i] - step, lower[i])
            J[:, i] = (self.factor(up)[pat] - self.factor(dn)[pat]) / (up[i] - dn[i])
        return J

    # --- the Bayesian side (flat priors on the natural parameters) ----------------------
    def factor_pt(self, par):
        """:meth:`factor` in PyTensor (``None``: not available to the samplers)."""
        return None

    def log_jacobian_natural(self, x, ops=np):
        """``log|∂(natural correlations)/∂x|`` of the unbounded correlation parameters ``x``
        (``par`` after the SDs): what a flat prior on the natural parameters adds."""
        return 0.0

    def boundary_escapes(self, par, tol: float = 1e-4, lift: float = 0.3) -> list[np.ndarray]:
        """Starts off a singular boundary that may be a local minimum (none by default)."""
        return []

    # --- natural parameters: SDs and correlations ---------------------------------------
    def natural(self, D) -> np.ndarray:
        """The SDs and correlations of ``D`` that the structure has, in :meth:`natural_labels`'
        order."""
        raise NotImplementedError

    def natural_labels(self) -> list[str]:
        """lme4's ``confint`` names without ``|group``: ``sd_(Intercept)``, ``cor_Days.(Intercept)``."""
        raise NotImplementedError

    def natural_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """``[0, ∞)`` for an SD; the correlations' own ranges."""
        raise NotImplementedError

    def par_from_natural(self, values, sigma: float) -> np.ndarray | None:
        """The parameters with these natural values (``None`` where they are no covariance)."""
        raise NotImplementedError

    # --- Kenward–Roger ------------------------------------------------------------------
    def linear_basis(self) -> list[np.ndarray] | None:
        """``G_a`` with ``D = Σ γ_a G_a`` for every ``D`` of the structure, or ``None``."""
        return None

    def gamma(self, D) -> np.ndarray:
        """The ``γ`` of ``D`` in :meth:`linear_basis`."""
        raise NotImplementedError

    # --- printing -----------------------------------------------------------------------
    def wrap(self, text: str) -> str:
        """The term as written: ``diag(1 + x | g)``; lme4's ``(1 + x | g)`` for ``us``."""
        return f"{self.kind}{text}" if self.kind != "us" else text

    def _check(self, minimum: int, source: str) -> None:
        if self.k < minimum:
            raise FormulaError(f"random-effects term {source}: a {self.kind}() ({self.title}) structure needs at "
                               f"least {minimum} columns, this one has {self.k} ({', '.join(self.names)}); "
                               "write 0 + f with a factor f, or several covariates")
