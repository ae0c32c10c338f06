"""Priors on the covariance parameters, and the parametrisation the samplers move in.

Each term's covariance ``D_t = L_t L_t'`` is parametrised by its Cholesky factor ``L_t``
(absolute scale) with log-diagonal: the unconstrained vector ``η_t`` holds the lower
triangle column by column (θ's order), ``log L_ii`` on the diagonal. The residual variance is
``σ² = exp(s)``.

A prior is a density on ``(σ², D)``. To make NUTS sample it, the log-Jacobian of
``(σ², vech D) ← (s, η)`` is added:

.. math::

    \\log\\left|\\frac{∂\\,\\mathrm{vech}D}{∂η}\\right| = k\\log 2 + \\sum_{i=1}^{k} (k - i + 2)\\, η_{ii},
    \\qquad \\log\\left|\\frac{∂σ^2}{∂s}\\right| = s

(``|∂ vech(LL')/∂ vech L| = 2^k ∏ L_ii^{k−i+1}``, and ``∂L_ii/∂η_ii = L_ii``).

Priors (``p(β) ∝ 1`` always):

* ``"flat"``: ``p(σ², D) ∝ 1`` on ``σ² > 0`` and the PSD cone. With β integrated out the
  marginal posterior of ``(σ², D)`` is proportional to the REML likelihood, so its mode is
  the REML estimate.
* ``"flat_sd"``: flat on ``σ`` and on each term's standard deviations, correlations uniform
  (LKJ(1)). On ``(σ², D)`` this is ``∝ σ⁻¹ ∏_t ∏_i s_ti^{−k_t}`` (``s_ti = √D_ii``), since
  ``|∂(σ²)/∂σ| = 2σ`` and ``|∂ vech D/∂(s, R)| = 2^k ∏ s_i^k``.
* :class:`WeaklyInformative`: half-normal or half-Student-t on the SDs and on σ, LKJ(η) on the
  correlations, for sensitivity checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hierlmm.errors import HierlmmError

__all__ = ["WeaklyInformative", "resolve_prior", "Layout", "hobert_casella_exponents"]


@dataclass(frozen=True)
class WeaklyInformative:
    """Proper priors: SDs ~ half-normal (``nu=None``) or half-t(nu), scale ``sd_scale``
    (default: the response's SD); σ the same with ``sigma_scale``; correlations LKJ(``eta``)."""

    sd_scale: float | None = None
    sigma_scale: float | None = None
    nu: float | None = None
    eta: float = 2.0


def resolve_prior(prior, y):
    """``prior`` checked; a :class:`WeaklyInformative` one gets its unset scales from the
    response's SD (``y``: the response, or its SD)."""
    if isinstance(prior, WeaklyInformative):
        scale = float(np.std(y)) if np.ndim(y) else float(y)
        return WeaklyInformative(prior.sd_scale or scale, prior.sigma_scale or scale, prior.nu, prior.eta)
    if prior in ("flat", "flat_sd"):
        return prior
    raise HierlmmError(
        f"prior must be 'flat', 'flat_sd' or hierlmm.bayes.WeaklyInformative(...), got {prior!r}"
    )


def hobert_casella_exponents(prior) -> tuple[float, float]:
    """``(a_term, a_residual)`` with ``p(σ²) ∝ (σ²)^{-(a+1)}``: flat -1, flat on SDs -1/2."""
    return (-1.0, -1.0) if prior == "flat" else (-0.5, -0.5)


class Layout:
    """Where each term's parameters live in the unconstrained vector ``(η_1, …, η_T, s)``.

    An unstructured term's ``η_t`` is its Cholesky factor (module doc); a term with another
    covariance structure (:mod:`hierlmm.covariance`) has its own parameters, the logs of its SDs
    then its unbounded correlation parameters; its prior is on its natural parameters, the
    variances and correlations: ``"flat"`` flat on them (as on ``D``'s entries for an
    unstructured term), ``"flat_sd"`` flat on the SDs and correlations. The log-Jacobian to the
    variances is ``Σ (log 2 + 2 η_sd)`` plus
    :meth:`~hierlmm.covariance.Covariance.log_jacobian_natural` for the correlations."""

    def __init__(self, design):
        self.terms = design.terms
        self.slices = design.theta_slices()
        self.ks = [t.k for t in self.terms]
        self.n_eta = design.n_theta
        self.size = self.n_eta + 1
        self.diag = []  # per term: (positions in η_t of the diagonal (of log SDs), their row index i)
        for t in self.terms:
            if not t.unstructured:
                n_sd = t.cov.sd_count
                self.diag.append((np.arange(n_sd), None))
                continue
            cols, rows = np.triu_indices(t.k)
            self.diag.append((np.flatnonzero(rows == cols), rows[rows == cols]))
        # per η entry, how the core's θ follows from it (theta_sigma): exponentiated (a factor's
        # diagonal, a log SD) and divided by σ (every entry of a factor, a structure's SDs)
        self.exponential = np.zeros(self.n_eta, dtype=bool)
        self.scaled = np.zeros(self.n_eta, dtype=bool)
        for t, s, (pos, _) in zip(self.terms, self.slices, self.diag):
            self.exponential[s.start + pos] = True
            self.scaled[s] = True if t.unstructured else np.arange(t.n_theta) < t.cov.sd_count

    # ---------------------------------------------------------------- numpy side
    def _par(self, t, v):
        """A structured term's parameters on the absolute scale from its unconstrained ``v``."""
        n_sd = t.cov.sd_count
        return np.concatenate([np.exp(v[:n_sd]), v[n_sd:]])

    def unpack(self, x):
        """``x -> ([L_t], σ²)`` (numpy)."""
        Ls = []
        for t, s, (pos, _) in zip(self.terms, self.slices, self.diag):
            v = np.array(x[s], dtype=float)
            if not t.unstructured:
                Ls.append(t.cov.factor(self._par(t, v)))
                continue
            v[pos] = np.exp(v[pos])
            Ls.append(t.template(v))
        return Ls, float(np.exp(x[self.n_eta]))

    def theta_sigma(self, x):
        """``x -> (Ls, σ², θ, σ)`` with the core's θ (``vech(L_t) / σ``; a structured term's
        parameters with its SDs divided by σ)."""
        Ls, s2 = self.unpack(x)
        sigma = float(np.sqrt(s2))
        eta = np.asarray(x[: self.n_eta], dtype=float)
        theta = np.where(self.exponential, np.exp(eta), eta) / np.where(self.scaled, sigma, 1.0)
        return Ls, s2, theta, sigma

    def pack(self, Ls, sigma2) -> np.ndarray:
        out = []
        for t, L, (pos, _) in zip(self.terms, Ls, self.diag):
            if not t.unstructured:
                par = t.cov.par_from_natural(np.nan_to_num(t.cov.natural(L @ L.T)), 1.0)
                n_sd = t.cov.sd_count
                out.append(np.concatenate([np.log(np.maximum(par[:n_sd], 1e-300)), par[n_sd:]]))
                continue
            v = t.theta_from_template(L)
            v[pos] = np.log(np.maximum(v[pos], 1e-300))
            out.append(v)
        return np.concatenate(out + [[np.log(sigma2)]])

    def log_jacobian(self, x, ops=np):
        """``log|∂(σ², vech D)/∂(s, η)|`` at ``x`` (numpy, or PyTensor with ``ops=pytensor.tensor``);
        for a structured term ``log|∂(SDs, correlations)/∂η_t|``."""
        total = x[self.n_eta]
        for t, k, s, (pos, rows) in zip(self.terms, self.ks, self.slices, self.diag):
            if not t.unstructured:  # to (variances, correlations): v = exp(2η)
                v = x[s]
                n_sd = t.cov.sd_count
                total = total + n_sd * np.log(2.0) + 2 * ops.sum(v[:n_sd]) + t.cov.log_jacobian_natural(v[n_sd:],
                                                                                                       ops=ops)
                continue
            total = total + k * np.log(2.0) + ops.sum((k - rows + 1) * x[s][pos])
        return total

    def log_prior(self, prior, Ls, sigma2) -> float:
        """log p(σ², D) up to a constant (numpy; unstructured terms: the Bayesian mode)."""
        return float(log_prior(prior, Ls, self.ks, 0.5 * np.log(sigma2)))

    def log_prior_x(self, prior, x, Ls, ops=np):
        """log p(σ², D) at ``x`` with each term's own prior (PyTensor with ``ops``): the
        unstructured terms' and σ²'s by :func:`log_prior`, a structured term's flat on its
        variances (``"flat"``) or on its SDs (``"flat_sd"``: ``p(v) ∝ v^{−1/2}``)."""
        us = [(L, k) for t, L, k in zip(self.terms, Ls, self.ks) if t.unstructured]
        total = log_prior(prior, [L for L, _ in us], [k for _, k in us], 0.5 * x[self.n_eta], ops=ops)
        if prior == "flat_sd":
            for t, s in zip(self.terms, self.slices):
                if not t.unstructured:
                    total = total - ops.sum(x[s][: t.cov.sd_count])
        return total


def log_prior(prior, Ls, ks, log_sigma, ops=np):
    """``log p(σ², D)`` up to a constant from the Cholesky factors ``L_t`` (``D_t = L_tL_t'``,
    ``k_t`` rows each) and ``log σ``: one function for numpy and PyTensor (``ops``).

    ``flat``: 0. ``flat_sd``: ``−log σ − Σ_t k_t Σ_i log s_ti``. Weakly informative: half-normal
    or half-t on σ and the SDs with their Jacobians (``p(σ²) = p(σ)/2σ``, ``p(D) ∋ ∏ s^{−k}``)
    and LKJ(η): ``(η − 1) log|R_t|``, ``log|R_t| = 2 Σ log L_ii − 2 Σ log s_i``."""
    if prior == "flat":
        return 0.0
    proper = prior != "flat_sd"
    total = -log_sigma
    if proper:
        total = total + _half(ops.exp(log_sigma), prior.sigma_scale, prior.nu, ops)
    for L, k in zip(Ls, ks):
        log_sd = 0.5 * ops.log(ops.sum(L * L, axis=1))
        total = total - k * ops.sum(log_sd)
        if proper:
            total = total + ops.sum(_half(ops.exp(log_sd), prior.sd_scale, prior.nu, ops))
            if k > 1:
                total = total + (prior.eta - 1) * (2 * ops.sum(ops.log(ops.diagonal(L))) - 2 * ops.sum(log_sd))
    return total


def _half(x, scale, nu, ops=np):
    """Log-density of a half-normal (``nu=None``) or half-t(ν) with ``scale``, up to a constant."""
    if nu is None:
        return -0.5 * (x / scale) ** 2
    return -(nu + 1) / 2 * ops.log1p((x / scale) ** 2 / nu)
