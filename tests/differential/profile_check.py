"""The profile's defining property, checked by brute force: at a limit ψ of a 95% profile
interval, the ML deviance minimised over every other parameter is ``χ²₁(0.95) = 3.8415``
above its minimum (or stays below it up to a bound, where the limit is the bound).

Used to decide who is right where hierlmm's profile limit and lme4's disagree: the minimum
at ψ is found from several starts with restarted BOBYQA, independently of the profile code.
"""

from __future__ import annotations

import warnings

import numpy as np

from hierlmm.inference import confint as C
from hierlmm.optimize import bobyqa_restarted, optimize_theta

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
        sub = C._subdesign(design, np.delete(design.X, j, axis=1))
        sub.y = design.y - psi * design.X[:, j]
        dev = Deviance(sub, reml=False)
        best = min(optimize_theta(dev, theta0=ml.solution.theta * (1 if s == 0 else np.exp(rng.normal(0, 0.5, dev.lower.size))),
                                  check=False).fun for s in range(starts))
        return best - ml.deviance
    ml_dev = fit.model.deviance_function(reml=False)
    est = C.sdcor_from_theta(design, ml.solution.theta, ml.sigma)
    j = C.sdcor_names(fit).index(name)
    lo, hi = C._bounds(design)
    free = np.arange(len(est)) != j

    def f(x):
        v = est.copy()
        v[free] = x
        v[j] = psi
        out = C.theta_from_sdcor(design, v)
        return np.inf if out is None else ml_dev.unprofiled(*out)

    best = np.inf
    for s in range(starts):
        x0 = est[free] * (1 if s == 0 else np.exp(rng.normal(0, 0.5, free.sum())))
        x0 = np.clip(x0, lo[free] + 1e-9, np.where(np.isfinite(hi[free]), hi[free] - 1e-9, np.inf))
        best = min(best, bobyqa_restarted(f, x0, lo[free], hi[free], maxeval=20000, xtol=1e-10, ftol=1e-12)[1])
    return best - ml.deviance


def limit_error(fit, name: str, psi: float) -> float:
    """How far ψ is from being a profile limit, in deviance: |increase − 3.84|, or, at one of
    the parameter's bounds (an SD's 0, a correlation's ±1: :func:`confint._bounds`), how far
    the increase there exceeds 3.84 (0 when it stays below)."""
    if not np.isfinite(psi):
        return np.inf
    inc = profile_increase(fit, name, psi)
    names = C.sdcor_names(fit)
    if name in names:
        lo, hi = C._bounds(fit.design)
        j = names.index(name)
        if any(np.isfinite(b) and np.isclose(psi, b) for b in (lo[j], hi[j])):
            return max(inc - CUT, 0.0)
    return abs(inc - CUT)
