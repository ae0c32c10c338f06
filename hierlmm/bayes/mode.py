"""Posterior modes, found by maximising the log posterior density numerically.

* ``posterior_mode(model, prior="flat")``: the mode of ``p(σ², D | y)`` with β integrated out
  under its flat prior. That density is ∝ REML likelihood × prior, so under ``"flat"`` it is
  the REML estimate, reached here without the REML code path: the log density in
  ``(σ², D)`` is maximised directly, from a start unrelated to the REML fit.
* ``beta_prior_sd=s``: β ~ N(0, s²I) integrated out instead of a flat β:
  ``y ~ N(0, σ²V₀ + s²XX')``. As ``s → ∞``, ``log p + p log s`` tends to the REML
  log-likelihood plus a constant, so the mode tends to REML (Harville 1974's Bayesian
  derivation of REML).
* ``joint=True``: the joint mode of ``(β, σ², D)`` under flat priors, i.e. the maximum of the
  likelihood ``p(y | β, σ², D)``: the ML estimate.

A mode is the maximum of a density, and a density depends on the coordinates it is written
in: ``p_c(c) = p(σ², D) |∂(σ², vech D)/∂c|``. The mode is reported in the coordinates that
carry the prior (``coordinates=None``):

* ``"variances"`` (``prior="flat"``, flat on ``(σ², vech D)``): the density is the REML
  likelihood, whose maximum is REML;
* ``"sds"`` (``"flat_sd"`` and :class:`~hierlmm.bayes.WeaklyInformative`: priors on σ, the SDs
  ``s_i`` and the correlations ``r_ij``): the Jacobian of ``D = S R S`` is ``2^k Π s_i^k``, of
  σ² ``2σ``; under ``"flat_sd"`` the density in these coordinates is again ∝ the REML
  likelihood, so its mode is REML too.

The same ``flat_sd`` posterior written in variances is ``∝ L_REML σ⁻¹ Π s_i^{-k}``, which
grows without bound as any SD goes to 0 (Dyestuff: −54 at τ² = 1e−100 against −167 at an
interior local maximum): it has no mode, and :func:`posterior_mode` says so
(``PosteriorMode.unbounded``) instead of returning a local maximum. The optimiser's own
parametrisation (log-Cholesky) does not matter: the density maximised is a function of the
point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hierlmm.bayes.priors import Layout, resolve_prior
from hierlmm.criterion import criterion

__all__ = ["PosteriorMode", "posterior_mode"]


COORDINATES = {"variances": "variances", "sds": "SDs"}


@dataclass
class PosteriorMode:
    """A mode: covariance matrices per term, σ², β (β̂ at the modal θ, or the joint mode).

    ``coordinates``: those of the density maximised (``"variances"`` or ``"sds"``).
    ``unbounded``: the density has no maximum in those coordinates (it grows without bound
    as a standard deviation goes to 0); ``D``, ``sigma2`` and ``beta`` are then NaN.
    """

    D: dict
    sigma2: float
    beta: pd.Series
    log_density: float
    coordinates: str = "variances"
    unbounded: bool = False

    def varcorr(self) -> pd.DataFrame:
        """In ``fit.varcorr``'s layout (variances and covariances; correlations in sdcor)."""
        from hierlmm.reterms import varcorr_rows

        rows = [row for label, D in self.D.items() for row in varcorr_rows(label, list(D.index), D.to_numpy())]
        rows.append(("Residual", None, None, self.sigma2, np.sqrt(self.sigma2)))
        return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])


def _neutral_start(design, layout, cp):
    """OLS residual variance split evenly between σ² and each term: no REML involved. From
    the cross-product ``A`` (whatever the number of rows): the residual sum of squares
    ``y'y − y'X(X'X)⁻¹X'y`` and each term's ``mean_i |z_i|² = tr(Z_t'Z_t)/n``."""
    v = max(_ols(cp)[1], 0.0) / max(design.n - design.p, 1)
    share = v / (len(design.terms) + 1)
    traces = [float(np.einsum("mkk->", cp.A11))]
    start = 0
    for t in design.terms[1:]:
        traces.append(float(np.trace(cp.A22[start:start + t.q, start:start + t.q])))
        start += t.q
    Ls = [np.eye(t.k) * np.sqrt(share / max(tr / design.n, 1e-12)) for t, tr in zip(design.terms, traces)]
    return layout.pack(Ls, share)


def _ols(cp) -> tuple[np.ndarray, float]:
    """Least squares of the (whitened) ``y`` on ``X`` from ``A``: ``β̂`` on the user's scale
    and the residual sum of squares."""
    x = slice(cp.q_rest, cp.q_rest + cp.p)
    XX, Xy = cp.A22[x, x], cp.A22[x, -1]
    beta_s = np.linalg.lstsq(XX, Xy, rcond=None)[0]
    return cp.beta(beta_s), float(cp.A22[-1, -1] - Xy @ beta_s)


def _maximise(f, x0):
    """Minimise the negative log density; two restarts from the best point polish it."""
    from hierlmm.optimize import bobyqa

    x, fun = np.asarray(x0, dtype=float), np.inf
    for _ in range(3):
        x, fun, _, _ = bobyqa(f, x, maxeval=20000, xtol_rel=1e-12, ftol_abs=1e-13, initial_step=0.5)
    return x, -fun


def log_jacobian_sds(Ls, sigma2: float) -> float:
    """``log|∂(σ², vech D)/∂(σ, s, r)|`` at ``(σ², D_t = L_t L_t')``: ``log 2σ`` plus, per
    term of size k, ``k log 2 + k Σ_i log s_i`` (``D = S R S``), so that a density in
    variances times it is the density in SDs and correlations."""
    total = np.log(2.0) + 0.5 * np.log(sigma2)
    for L in Ls:
        k = L.shape[0]
        total += k * np.log(2.0) + k * float(np.sum(0.5 * np.log(np.sum(L * L, axis=1))))
    return total


def posterior_mode(model, prior="flat", beta_prior_sd: float | None = None, joint: bool = False,
                   start=None, coordinates: str | None = None) -> PosteriorMode:
    """The mode of the marginal posterior of (σ², D), or the joint mode (see module doc),
    in ``coordinates`` (``"variances"`` or ``"sds"``; default: those of the prior)."""
    design = model.design
    prior = resolve_prior(prior, design.response_sd)
    if coordinates is None:
        coordinates = "variances" if prior == "flat" else "sds"
    if coordinates not in COORDINATES:
        from hierlmm.errors import HierlmmError

        raise HierlmmError(f"coordinates must be 'variances' or 'sds', got {coordinates!r}")
    if coordinates == "variances" and prior != "flat":
        # p(σ², D) ∝ L · σ⁻¹ Π s^-k (times a bounded proper density): the likelihood stays
        # positive as an SD goes to 0, the prior factor grows without bound
        D = {t.label: pd.DataFrame(np.nan, index=t.names, columns=t.names) for t in design.terms}
        return PosteriorMode(D=D, sigma2=np.nan, beta=pd.Series(np.nan, index=design.fixef_names),
                             log_density=np.inf, coordinates=coordinates, unbounded=True)
    layout = Layout(design)
    reml_dev = model.deviance_function(reml=True)
    ml_dev = model.deviance_function(reml=False)
    x0 = _neutral_start(design, layout, reml_dev.cp) if start is None else np.asarray(start, dtype=float)

    if coordinates == "sds":
        def theta_sigma(x):
            Ls, s2, theta, sigma = layout.theta_sigma(x)
            return Ls, s2, theta, sigma, log_jacobian_sds(Ls, s2)
    else:
        def theta_sigma(x):
            return (*layout.theta_sigma(x), 0.0)

    if joint:
        p = design.p

        def neg(z):
            x, beta = z[:-p], z[-p:]
            Ls, s2, theta, sigma, logj = theta_sigma(x)
            return 0.5 * ml_dev.at_beta(theta, beta, sigma) - layout.log_prior(prior, Ls, s2) - logj

        b0 = _ols(ml_dev.cp)[0]
        z, logd = _maximise(neg, np.concatenate([x0, b0]))
        x, beta = z[:-p], z[-p:]
    else:
        if beta_prior_sd is None:
            def neg(x):
                Ls, s2, theta, sigma, logj = theta_sigma(x)
                return 0.5 * reml_dev.unprofiled(theta, sigma) - layout.log_prior(prior, Ls, s2) - logj
        else:
            from hierlmm.bayes.collapsed import DenseSystem

            system = DenseSystem(design)
            s = float(beta_prior_sd)
            q, p, n = system.q, system.p, system.n

            def neg(x):
                Ls, s2, theta, sigma, logj = theta_sigma(x)
                Lam = system.lam(theta)
                Lam[q : q + p, q : q + p] = np.eye(p) * (s / sigma)
                M = Lam.T @ system.A @ Lam
                M[np.arange(q + p), np.arange(q + p)] += 1.0
                try:
                    C = np.linalg.cholesky(M)
                except np.linalg.LinAlgError:
                    return np.inf
                dev = criterion(2 * np.sum(np.log(np.diag(C)[: q + p])), 0.0, C[-1, -1] ** 2, n, p,
                                reml=False, sigma2=s2, log_weights=system.log_weights)
                return 0.5 * dev - layout.log_prior(prior, Ls, s2) - logj

        x, logd = _maximise(neg, x0)
        theta = theta_sigma(x)[2]
        beta = reml_dev.solve(theta).beta
    Ls, s2 = layout.unpack(x)
    D = {t.label: pd.DataFrame(L @ L.T, index=t.names, columns=t.names) for t, L in zip(design.terms, Ls)}
    return PosteriorMode(D=D, sigma2=s2, beta=pd.Series(beta, index=design.fixef_names), log_density=logd,
                         coordinates=coordinates)
