"""The exact marginal posterior of the variances of a one-term model, by quadrature (no MCMC).

For ``y ~ N(Xβ, σ²(I + θ² ZZ'))`` with one scalar random term (τ² = θ²σ²) and β integrated out
under a flat prior, the marginal posterior of (θ, σ²) is the REML likelihood times the prior:

.. math::  p(θ, σ² | y) ∝ |L_θ|^{-1} |R_X|^{-1} (σ²)^{-(n-p)/2} e^{-r²(θ)/2σ²} · π(θ, σ²),

``|L_θ|``, ``|R_X|`` and the penalised residual sum of squares ``r²(θ)`` from the blocked
Cholesky factor at θ. Flat on the variances (``prior="flat"``): ``π ∝ θσ²`` (the Jacobian of
(θ, σ²) → (τ², σ²)); flat on the SDs (``"flat_sd"``): ``π ∝ 1``. Given θ, σ² is then inverse
gamma, ``IG(a, r²/2)`` with ``a = (n − p)/2 − 1 − c`` (``c = 1`` flat, ``0`` flat_sd), and so
is τ² = θ²σ², ``IG(a, θ²r²/2)``; θ's own marginal is

.. math::  w(θ) ∝ |L_θ|^{-1} |R_X|^{-1} θ^c Γ(a) (r²/2)^{-a}.

Every marginal CDF is therefore a one-dimensional integral over log θ of closed-form inverse
gamma CDFs (the regularised upper incomplete gamma), done on a grid of log θ fine enough that
the quantiles move by less than 1e-6 relative when it is halved. This is the picture of
"REML is the mode of this curve" (:func:`hierlmm.plots.posterior_grid`): the REML estimate of
(τ², σ²) is the joint mode of the flat-prior posterior; the marginal medians and intervals are
what the MCMC draws estimate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, special

from hierlmm.errors import HierlmmError

__all__ = ["posterior_grid"]

PRIOR_POWER = {"flat": 1, "flat_sd": 0}  # c: the prior's power of θ (and of σ²)


def _log_parts(dev, phis: np.ndarray, scale: float):
    """``(log|L|² + log|R_X|², r²)`` at θ = φ/scale for each φ (NaN where L does not exist)."""
    out = np.full((len(phis), 2), np.nan)
    for i, phi in enumerate(phis):
        f = dev.chol.factor(np.array([phi / scale]))
        if f is not None and f.r2 > 0:
            out[i] = f.logdet_L() + f.logdet_RX(), f.r2
    return out


def _log_weight(parts, log_phi, a: float, c: int) -> np.ndarray:
    """log of θ's marginal density in log θ coordinates (the extra θ of d log θ included)."""
    logdet, r2 = parts[:, 0], parts[:, 1]
    return -0.5 * logdet + (c + 1) * log_phi + special.gammaln(a) - a * np.log(r2 / 2)


def posterior_grid(model, prior: str = "flat", n_grid: int = 2001) -> pd.DataFrame:
    """The exact marginal posterior of each variance of a model with one scalar random term,
    under ``prior`` (``"flat"`` on the variances or ``"flat_sd"`` on the SDs; β flat and
    integrated out), by one-dimensional quadrature: no sampling, no Monte Carlo error.

    Returns
    -------
    Table
        One row per variance in ``fit.varcorr``'s order (the term's variance, then the residual
        variance), columns ``median, q025, q975`` and ``reml`` (the REML estimate: the joint
        posterior mode under ``"flat"``). ``.attrs["density"]``: per row, a DataFrame of
        ``x`` (the variance) and ``density`` on a grid, for plotting
        (:func:`hierlmm.plots.posterior_grid`).
    """
    from hierlmm.bayes.propriety import check_propriety
    from hierlmm.table import as_table

    if prior not in PRIOR_POWER:
        raise HierlmmError(f"posterior_grid() takes prior='flat' or 'flat_sd', got {prior!r} "
                           "(other priors: sample())")
    model.require("posterior_grid()", instead="use sample()")
    model.require("posterior_grid()", needs="rows")
    design = model.design
    terms = design.terms
    if len(terms) != 1 or terms[0].k != 1 or not terms[0].unstructured:
        raise HierlmmError(f"posterior_grid() needs exactly one scalar random term ((1 | g) or (0 + x | g)), whose "
                           "variances' posterior is a one-dimensional integral; this model has "
                           f"{', '.join(t.describe() for t in terms)}: use sample()")
    dev = model.deviance_function()
    check_propriety(design, prior, dev.cp)
    c = PRIOR_POWER[prior]
    a = (design.n - design.p) / 2 - 1 - c
    if not a > 0:
        raise HierlmmError(f"n - p = {design.n - design.p} is too small for a proper posterior of σ² under {prior!r}")
    fit = model.fit(method="REML")
    scale = float(dev.theta_scale[0]) or 1.0
    phi_hat = float(np.asarray(fit.theta)[0]) * scale
    centre = np.log(phi_hat) if phi_hat > 1e-3 else 0.0
    # coarse pass: where θ's marginal lives (and that its tails vanish: a proper posterior)
    coarse = np.linspace(centre - 30, centre + 30, 241)
    lw = _log_weight(_log_parts(dev, np.exp(coarse), scale), coarse, a, c)
    top = np.nanmax(lw)
    if not np.isfinite(top):
        raise HierlmmError("posterior_grid(): the REML likelihood is not finite anywhere on the grid")
    if lw[-1] > top - 30:
        raise HierlmmError(f"posterior_grid(): the posterior of the term's variance does not vanish as it grows "
                           f"(the {terms[0].m} levels of {terms[0].group!r} do not make it proper under {prior!r}); "
                           "try prior='flat_sd' or sample() with a proper prior")
    keep = np.flatnonzero(lw > top - 60)
    lo, hi = coarse[max(keep[0] - 1, 0)], coarse[min(keep[-1] + 1, len(coarse) - 1)]
    log_phi = np.linspace(lo, hi, n_grid)
    parts = _log_parts(dev, np.exp(log_phi), scale)
    lw = _log_weight(parts, log_phi, a, c)
    ok = np.isfinite(lw)
    log_phi, parts, lw = log_phi[ok], parts[ok], lw[ok]
    w = np.exp(lw - lw.max())
    w /= np.trapezoid(w, log_phi)
    theta2 = np.exp(2 * log_phi) / scale**2
    b_sigma = parts[:, 1] / 2  # σ² | θ ~ IG(a, r²/2); τ² | θ ~ IG(a, θ² r²/2)
    rates = {"term": theta2 * b_sigma, "residual": b_sigma}

    def cdf(x, rate):
        return float(np.trapezoid(w * special.gammaincc(a, rate / x), log_phi))

    def density(x, rate):
        lg = a * np.log(rate[None, :]) - (a + 1) * np.log(x[:, None]) - rate[None, :] / x[:, None] - special.gammaln(a)
        return np.trapezoid(w[None, :] * np.exp(lg), log_phi, axis=1)

    def quantile(q, rate):
        # bracket in log x around the conditional medians' range
        med = rate / special.gammainccinv(a, 0.5)
        lo, hi = np.log(med.min()) - 40, np.log(med.max()) + 40
        return float(np.exp(optimize.brentq(lambda u: cdf(np.exp(u), rate) - q, lo, hi, xtol=1e-12)))

    vc = fit.varcorr
    names = [f"{vc['grp'].iloc[0]} {vc['var1'].iloc[0]}", "Residual"]
    reml = [float(vc["vcov"].iloc[0]), float(vc["vcov"].iloc[-1])]
    rows, dens = {}, {}
    for name, key, est in zip(names, ("term", "residual"), reml):
        rate = rates[key]
        q025, med, q975 = (quantile(q, rate) for q in (0.025, 0.5, 0.975))
        rows[name] = {"median": med, "q025": q025, "q975": q975, "reml": est}
        x = np.exp(np.linspace(np.log(quantile(0.0005, rate)), np.log(quantile(0.9995, rate)), 400))
        dens[name] = pd.DataFrame({"x": x, "density": density(x, rate)})
    out = as_table(pd.DataFrame.from_dict(rows, orient="index"),
                   f"Exact marginal posterior of the variances under prior={prior!r} (quadrature; β integrated out)",
                   headers={"q025": "2.5 %", "q975": "97.5 %", "reml": "REML"})
    out.attrs["density"] = dens
    out.attrs["prior"] = prior
    return out
