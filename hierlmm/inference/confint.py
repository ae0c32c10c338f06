"""Confidence intervals: Wald, profile likelihood (as lme4), parametric bootstrap.

Rows follow lme4's ``confint``: for each random-effects term, its standard deviations and
correlations in the order of θ (``sd_(Intercept)|Subject``, ``cor_Days.(Intercept)|Subject``,
``sd_Days|Subject``), then ``sigma``, then the fixed effects.

**Profile.** As lme4's ``profile.merMod``, a REML fit is profiled on the ML deviance (lme4
refits by ML first). For a parameter ψ the signed root deviance is
``ζ(ψ) = sign(ψ − ψ̂) √(d̃(ψ) − d̂)``, with ``d̃(ψ)`` the ML deviance minimised over every
other parameter (standard deviations, correlations and σ for a variance parameter; θ with
β and σ profiled for a fixed effect) and ``d̂`` the minimum; the interval is where
``ζ = ±z_{(1+level)/2}``, found by root finding (lme4 interpolates a spline through ζ on a
grid; both find the same crossing). A standard deviation whose profile stays below the
cut-off down to 0 gets lower limit 0; a correlation likewise ±1.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from hierlmm.errors import HierlmmError, HierlmmWarning

__all__ = ["confint", "sdcor_names", "sdcor_from_theta", "theta_from_sdcor"]


def sdcor_names(fit) -> list[str]:
    names = []
    for t in fit.design.terms:
        for c in range(t.k):
            for r in range(c, t.k):
                names.append(f"sd_{t.names[r]}|{t.group}" if r == c else f"cor_{t.names[r]}.{t.names[c]}|{t.group}")
    return names + ["sigma"]


def sdcor_from_theta(design, theta, sigma) -> np.ndarray:
    """``(θ, σ)`` -> standard deviations and correlations of each term (θ's order), σ."""
    out = []
    for t, s in zip(design.terms, design.theta_slices()):
        D = sigma**2 * t.relcov(theta[s])
        sd = np.sqrt(np.clip(np.diag(D), 0, None))
        for c in range(t.k):
            for r in range(c, t.k):
                out.append(sd[r] if r == c else (D[r, c] / (sd[r] * sd[c]) if sd[r] * sd[c] > 0 else 0.0))
    return np.array(out + [sigma])


def _psd_cholesky(D: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a positive semi-definite matrix (zero pivots allowed)."""
    k = D.shape[0]
    L = np.zeros_like(D)
    for j in range(k):
        v = D[j, j] - L[j, :j] @ L[j, :j]
        L[j, j] = np.sqrt(v) if v > 1e-14 * max(D[j, j], 1e-300) else 0.0
        for i in range(j + 1, k):
            L[i, j] = (D[i, j] - L[i, :j] @ L[j, :j]) / L[j, j] if L[j, j] > 0 else 0.0
    return L


def theta_from_sdcor(design, sdcor) -> tuple[np.ndarray, float] | None:
    """Inverse of :func:`sdcor_from_theta`; ``None`` if a correlation matrix is not PSD."""
    sigma = sdcor[-1]
    theta, i = [], 0
    for t in design.terms:
        k = t.k
        S = np.zeros((k, k))
        for c in range(k):
            for r in range(c, k):
                S[r, c] = sdcor[i]
                i += 1
        sd = np.diag(S).copy()
        R = np.eye(k) + np.tril(S, -1) + np.tril(S, -1).T
        if k > 1 and np.linalg.eigvalsh(R).min() < -1e-10:
            return None
        D = R * np.outer(sd, sd)
        theta.append(t.theta_from_template(_psd_cholesky(D) / sigma))
    return np.concatenate(theta), sigma


def _bounds(design) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = [], []
    for t in design.terms:
        for c in range(t.k):
            for r in range(c, t.k):
                lo.append(0.0 if r == c else -1.0)
                hi.append(np.inf if r == c else 1.0)
    return np.array(lo + [1e-12]), np.array(hi + [np.inf])


def _wald(fit, level):
    z = stats.norm.ppf(0.5 + level / 2)
    names = sdcor_names(fit)
    lower = [np.nan] * len(names) + list(fit.fixef - z * fit.se)
    upper = [np.nan] * len(names) + list(fit.fixef + z * fit.se)
    return pd.DataFrame({"lower": lower, "upper": upper}, index=names + list(fit.fixef.index))


def _minimize(f, x0, lo, hi):
    from hierlmm.optimize import bobyqa_restarted

    x0 = np.clip(np.asarray(x0, dtype=float), lo, hi)
    if x0.size == 0:
        return f(x0), x0
    x, fun, _, _ = bobyqa_restarted(f, x0, lo, hi, maxeval=5000, xtol=1e-9, ftol=1e-10)
    return fun, x


def _crossing(zeta, start, step, limit, target):
    """Solve ``zeta(ψ) = target`` moving from ``start`` by growing steps toward ``limit``.

    Returns ``limit`` when ζ stays short of the target up to the parameter's bound, and NaN
    when no crossing is found (the profile is not monotone or cannot be evaluated).
    """
    a, za = start, 0.0
    b = start + step
    for _ in range(60):
        if (step > 0 and b >= limit) or (step < 0 and b <= limit):
            b = limit
        zb = zeta(b)
        if not np.isfinite(zb):
            return np.nan
        if (zb - target) * (za - target) <= 0:
            return _bracketed_root(zeta, a, za, b, zb, target)
        if b == limit:
            return limit
        a, za = b, zb
        step *= 2
        b = a + step
    return np.nan


def _bracketed_root(zeta, a, za, b, zb, target):
    """The root of ``ζ − target`` in ``[a, b]`` by the Illinois method, from the values at the
    ends already computed: ζ comes from an optimisation warm-started at the previous point, so
    evaluating it again at an end need not reproduce the same last digits (brentq's failure)."""
    fa, fb = za - target, zb - target
    tol = 1e-9 * max(1.0, abs(a), abs(b))
    c = b
    for _ in range(100):
        if fb == fa:
            break
        c = b - fb * (b - a) / (fb - fa)
        fc = zeta(c) - target
        if not np.isfinite(fc):
            return np.nan
        if abs(fc) < 1e-7 or abs(b - a) < tol:
            return c
        if fc * fb < 0:
            a, fa = b, fb
        else:
            fa /= 2
        b, fb = c, fc
    return c


def _profile(fit, level, parm=None, progressbar=None):
    design = fit.design
    ml_dev = fit.model.deviance_function(reml=False)
    ml = fit if fit.method == "ML" else fit.model.fit(method="ML")
    base = ml.deviance
    z = stats.norm.ppf(0.5 + level / 2)
    est = sdcor_from_theta(design, ml.solution.theta, ml.sigma)
    lo, hi = _bounds(design)
    names = sdcor_names(fit)

    def dev_sdcor(v):
        out = theta_from_sdcor(design, v)
        if out is None:
            return np.inf
        return ml_dev.unprofiled(*out)

    rows = {}
    show = sys.stderr.isatty() if progressbar is None else bool(progressbar)
    todo = [n for n in names + list(design.fixef_names) if parm is None or n in parm]
    for j, name in enumerate(names):
        if parm is not None and name not in parm:
            continue
        _progress(show, len(rows) + 1, len(todo), "profile")
        free = np.arange(len(est)) != j
        last = [est[free]]

        def zeta(psi, j=j, free=free, last=last):
            def f(x):
                v = est.copy()
                v[free] = x
                v[j] = psi
                return dev_sdcor(v)

            val, x = _minimize(f, last[0], lo[free], hi[free])
            if not np.isfinite(val):
                # no valid covariance near here with the others held: not computable (NaN)
                return np.nan
            last[0] = x
            return np.sign(psi - est[j]) * np.sqrt(max(val - base, 0.0))

        scale = max(abs(est[j]), 1e-3 * ml.sigma) if j < len(est) - 1 and lo[j] >= 0 else 0.1
        if lo[j] == -1:
            scale = 0.05
        last[0] = est[free]
        lower = _limit(name, "lower", lambda: _crossing(zeta, est[j], -scale * 0.25, lo[j], -z))
        last[0] = est[free]
        top = hi[j] if np.isfinite(hi[j]) else 1e6 * (abs(est[j]) + 1)
        upper = _limit(name, "upper", lambda: _crossing(zeta, est[j], scale * 0.25, top, z))
        rows[name] = (lower, upper)

    # fixed effects: β_j fixed by an offset, θ optimised, β_-j and σ profiled (ML)
    from hierlmm.deviance import Deviance
    from hierlmm.optimize import optimize_theta

    X, y = design.X, design.y
    for j, name in enumerate(design.fixef_names):
        if parm is not None and name not in parm:
            continue
        _progress(show, len(rows) + 1, len(todo), "profile")
        keep = np.arange(X.shape[1]) != j
        sub = _subdesign(design, X[:, keep])
        bhat, se = ml.fixef.iloc[j], ml.se.iloc[j]

        def zeta_b(b, j=j, sub=sub, bhat=bhat):
            sub.y = y - b * X[:, j]
            dev = Deviance(sub, reml=False)
            res = optimize_theta(dev, theta0=ml.solution.theta, check=False)
            return np.sign(b - bhat) * np.sqrt(max(res.fun - base, 0.0))

        lower = _limit(name, "lower", lambda: _crossing(zeta_b, bhat, -se, -np.inf, -z))
        upper = _limit(name, "upper", lambda: _crossing(zeta_b, bhat, se, np.inf, z))
        rows[name] = (lower, upper)
    if show:
        sys.stderr.write("\n")
    return pd.DataFrame.from_dict(rows, orient="index", columns=["lower", "upper"])


class ProfileWarning(HierlmmWarning):
    """A profile limit could not be found; it is NaN (lme4 gives NA likewise)."""


def _limit(name: str, side: str, find) -> float:
    """One profile limit, or NaN with a warning naming it: never the whole table lost."""
    try:
        value = find()
    except (np.linalg.LinAlgError, ValueError, FloatingPointError) as exc:
        value, why = np.nan, f"{type(exc).__name__}: {exc}"
    else:
        why = "the profile does not cross the cut-off (not monotone, or not computable there)"
    if not np.isfinite(value):
        warnings.warn(f"the {side} profile limit of {name} could not be found ({why}); it is NaN",
                      ProfileWarning, stacklevel=4)
    return float(value)


def _subdesign(design, X):
    import copy

    sub = copy.copy(design)
    sub.X = np.asfortranarray(X)
    sub.y = design.y.copy()
    return sub


def _bootstrap(fit, level, n_boot=200, random_seed=None, progressbar=None, n_jobs=1):
    """Parametric bootstrap: simulate from the fit, refit each draw (threads when n_jobs != 1)."""
    import warnings

    import hierlmm as hl
    from hierlmm.optimize import optimize_theta

    ys = fit.simulate(n_boot, random_seed=random_seed)
    names = sdcor_names(fit) + list(fit.fixef.index)
    show = sys.stderr.isatty() if progressbar is None else bool(progressbar)
    dev = fit.deviance_function

    def refit(y):
        local = _subdesign(fit.design, fit.design.X)  # one per draw: safe across threads
        local.y = y
        d = type(dev)(local, reml=dev.reml)
        res = optimize_theta(d, theta0=fit.solution.theta, check=False)
        sol = d.solve(res.theta)
        return np.concatenate([sdcor_from_theta(local, sol.theta, np.sqrt(sol.sigma2)), sol.beta])

    draws = np.empty((n_boot, len(names)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hl.HierlmmWarning)
        if n_jobs and n_jobs != 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=None if n_jobs < 0 else n_jobs) as ex:
                results = ex.map(refit, ys)
                for i, row in enumerate(results):
                    draws[i] = row
                    _progress(show, i + 1, n_boot)
        else:
            for i, y in enumerate(ys):
                draws[i] = refit(y)
                _progress(show, i + 1, n_boot)
    if show:
        sys.stderr.write("\n")
    a = (1 - level) / 2
    out = pd.DataFrame({"lower": np.quantile(draws, a, axis=0), "upper": np.quantile(draws, 1 - a, axis=0)},
                       index=names)
    out.attrs["draws"] = pd.DataFrame(draws, columns=names)
    return out


def _progress(show, i, n, what="bootstrap"):
    """A one-line progress bar on standard error (when ``show``)."""
    if show and (i == n or i % max(1, n // 50) == 0):
        done = int(40 * i / n)
        sys.stderr.write(f"\r{what} [{'#' * done}{'.' * (40 - done)}] {i}/{n}")
        sys.stderr.flush()


def confint(fit, method: str = "profile", level: float = 0.95, parm=None, **kwargs) -> pd.DataFrame:
    """Confidence intervals (lme4's ``confint.merMod``).

    Parameters
    ----------
    method : {"profile", "wald", "bootstrap"}
    level : float
    parm : list of str, optional
        Rows to compute (profile only); all by default.
    **kwargs
        ``progressbar`` (default: when standard error is a terminal) for ``"profile"`` and
        ``"bootstrap"``; for ``"bootstrap"`` also ``n_boot`` (200), ``random_seed``,
        ``n_jobs`` (threads).

    Returns
    -------
    DataFrame
        Index as lme4's row names; columns ``lower``, ``upper``. Wald intervals of the
        variance parameters are NaN, as lme4's.
    """
    if not 0 < level < 1:
        raise HierlmmError(f"level must be between 0 and 1, got {level}")
    method = str(method).lower()
    if method == "wald":
        return _wald(fit, level)
    if getattr(fit.model, "grouped", False):
        raise HierlmmError("profile and bootstrap intervals are not available for fits with correlated "
                           "residuals or in the marginal formulation; use method='wald'")
    if method == "profile":
        out = _profile(fit, level, parm=parm, progressbar=kwargs.get("progressbar"))
        order = [n for n in sdcor_names(fit) + list(fit.fixef.index) if n in out.index]
        return out.loc[order]
    if method in ("bootstrap", "boot"):
        return _bootstrap(fit, level, **kwargs)
    raise HierlmmError(f"method must be 'profile', 'wald' or 'bootstrap', got {method!r}")
