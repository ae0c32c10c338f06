"""The profile's defining property, checked by brute force: at a limit ψ of a 95% profile
interval, the ML deviance minimised over every other parameter is ``χ²₁(0.95) = 3.8415``
above its minimum (or stays below it up to a bound, where the limit is the bound).

Used to decide who is right where hierlmm's profile limit and lme4's disagree: the minimum
at ψ is found from many starts with restarted BOBYQA, in lme4's SD/correlation coordinates
and in the profile's own box coordinates (whose map is checked in tests/test_inference.py),
independently of the profile's path, warm starts and root finding.
"""

from __future__ import annotations

import warnings

import numpy as np

from hierlmm.inference import sdcor as C
from hierlmm.inference.profile import Coordinates
from hierlmm.optimize import restart_step, bobyqa_restarted, optimize_theta

CUT = 3.841458820694124  # chi2(1) 0.95


def profile_increase(fit, name: str, psi: float, starts: int = 4, seed: int = 0) -> float:
    """min over the other parameters of the ML deviance with ``name`` fixed at ``psi``, minus
    the ML minimum."""
    design = fit.design
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ml = fit if fit.method == "ML" else fit.model.fit(method="ML")
    rng = np.random.default_rng(seed)
    if name in design.fixef_names:
        from hierlmm.deviance import Deviance

        j = design.fixef_names.index(name)

        def minimum(value, t0s):
            dev = Deviance(design.with_offset(j, value), reml=False)  # A from scratch (not the fit's)
            runs = [optimize_theta(dev, theta0=t0, check=False, initial_step=0.1) for t0 in t0s]
            best = min(runs, key=lambda r: r.fun)
            return best.fun, best.theta

        theta, diag = ml.solution.theta, np.isfinite(Deviance(design, reml=False).lower)
        # (1) a continuation from the estimate to ψ, each step started where the last ended: a
        # minimum whose θ is far from every fixed start (seed 4242's m0193: SDs of 6.8 σ at
        # z = −1641, where starts at the ML θ or in (0.05, 2) all land 4.4 higher)
        best, t = np.inf, theta
        for value in np.linspace(ml.fixef[name], psi, 9)[1:]:
            best, t = minimum(value, [t])
        # (2) fixed starts: the ML θ, its mirror (off-diagonals negated: seed 4242's m0263 has
        # two minima 0.08 apart, one on each side), lme4's default, then random θ with
        # diagonal entries log-uniform in (0.05, 20) σ
        t0s = [theta, np.where(diag, theta, -theta), Deviance(design, reml=False).theta0] + [
            np.where(diag, np.exp(rng.uniform(np.log(0.05), np.log(20.0), diag.size)),
                     rng.normal(0, 1.0, diag.size)) for _ in range(starts)]
        return min(best, minimum(psi, t0s)[0]) - ml.deviance
    ml_dev = fit.model.deviance_function(reml=False)
    est = np.nan_to_num(C.sdcor_from_theta(design, ml.solution.theta, ml.sigma), nan=0.0)  # as the profile
    j = C.sdcor_names(fit).index(name)
    lo, hi = C.bounds(design)
    free = np.arange(len(est)) != j

    def dev(v):
        out = C.theta_from_sdcor(design, v)
        return np.inf if out is None else ml_dev.unprofiled(*out)

    # (1) lme4's coordinates: the other SDs, correlations and σ (σ̂ units), infinite outside
    # the PSD cone; starts: the estimate, then random points of the box's plausible part (SDs
    # between 0.05 σ̂ and 2 σ̂ or 2 est, correlations in (-0.8, 0.8)), so that an SD estimated
    # at 0 is also started away from 0
    cor = lo == -1
    u = np.where(cor, 1.0, ml.sigma)[free]

    def g(x):
        v = est.copy()
        v[free] = x * u
        v[j] = psi
        return dev(v)

    a, b = lo[free] / u, hi[free] / u
    best = np.inf
    for s in range(starts):
        if s == 0:
            x0 = est[free] / u
        else:
            x0 = np.where(cor[free], rng.uniform(-0.8, 0.8, free.sum()),
                          rng.uniform(0.05, 2.0, free.sum()) * np.maximum(1.0, est[free] / u))
        best = min(best, _run(g, np.clip(x0, a, b), a, b))
    # (2) the profile's box coordinates (every point a valid covariance): a continuation from
    # the estimate to ψ, each step started where the last ended, then random starts
    coords = Coordinates(design, est, j, ml.sigma)
    a, b, _ = coords.bounds()
    x = np.clip(coords.start(), a, b)
    for value in np.linspace(est[j], psi, 9)[1:]:
        x, fun = _run(lambda x, value=value: dev(coords.sdcor(x, value)), x, a, b, point=True)
    best = min(best, fun)
    for s in range(starts):
        x0 = coords.start() if s == 0 else coords.random(rng)
        best = min(best, _run(lambda x: dev(coords.sdcor(x, psi)), np.clip(x0, a, b), a, b))
    return best - ml.deviance


def _run(f, x0, a, b, point=False):
    x, fun = bobyqa_restarted(f, x0, a, b, maxeval=20000, xtol=1e-8, ftol=1e-10,
                              initial_step=restart_step(x0, a, b))[:2]
    return (x, fun) if point else fun


def limit_error(fit, name: str, psi: float) -> float:
    """How far ψ is from being a profile limit, in deviance: |increase − 3.84|, or, at one of
    the parameter's bounds (an SD's 0, a correlation's ±1: :func:`sdcor.bounds`), how far
    the increase there exceeds 3.84 (0 when it stays below)."""
    if not np.isfinite(psi):
        return np.inf
    names = C.sdcor_names(fit)
    # as many starts as parameters (at least 4): a 4x4 term's 10 SDs and correlations need
    # them (seed 11's m0127: 4 starts found 3.88 where 10 find 3.8416)
    inc = profile_increase(fit, name, psi, starts=max(4, len(names)))
    if name in names:
        lo, hi = C.bounds(fit.design)
        j = names.index(name)
        if any(np.isfinite(b) and np.isclose(psi, b) for b in (lo[j], hi[j])):
            return max(inc - CUT, 0.0)
    return abs(inc - CUT)
