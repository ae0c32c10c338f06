"""Confidence intervals: Wald, profile likelihood (as lme4), parametric bootstrap.

Rows follow lme4's ``confint``: for each random-effects term, its standard deviations and
correlations in the order of θ (``sd_(Intercept)|Subject``, ``cor_Days.(Intercept)|Subject``,
``sd_Days|Subject``), then ``sigma``, then the fixed effects.

**Profile**: :mod:`hierlmm.inference.profile` (lme4's ``profile.merMod``).
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from scipy import stats

from hierlmm.errors import HierlmmError

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
        from hierlmm.inference.profile import profile_intervals

        out = profile_intervals(fit, level, parm=parm, progressbar=kwargs.get("progressbar"))
        order = [n for n in sdcor_names(fit) + list(fit.fixef.index) if n in out.index]
        return out.loc[order]
    if method in ("bootstrap", "boot"):
        return _bootstrap(fit, level, **kwargs)
    raise HierlmmError(f"method must be 'profile', 'wald' or 'bootstrap', got {method!r}")
