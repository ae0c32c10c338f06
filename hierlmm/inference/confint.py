"""Confidence intervals: Wald, profile likelihood (as lme4), parametric bootstrap.

Rows follow lme4's ``confint``: for each random-effects term, its standard deviations and
correlations in the order of θ (``sd_(Intercept)|Subject``, ``cor_Days.(Intercept)|Subject``,
``sd_Days|Subject``), then ``sigma``, then the fixed effects.

**Profile**: :mod:`hierlmm.inference.profile` (lme4's ``profile.merMod``).
"""

from __future__ import annotations

import contextlib
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from scipy import stats

from hierlmm.errors import HierlmmError, HierlmmWarning
from hierlmm.inference.sdcor import sdcor_from_theta, sdcor_names

__all__ = ["bootstrap", "confint"]


def _wald(fit, level):
    z = stats.norm.ppf(0.5 + level / 2)
    names = sdcor_names(fit)
    lower = [np.nan] * len(names) + list(fit.fixef - z * fit.se)
    upper = [np.nan] * len(names) + list(fit.fixef + z * fit.se)
    return pd.DataFrame({"lower": lower, "upper": upper}, index=names + list(fit.fixef.index))


def bootstrap(fit, n_boot: int = 200, statistic=None, random_seed=None, progressbar=None,
              n_jobs: int = 1) -> pd.DataFrame:
    """Parametric bootstrap replicates, as lme4's ``bootMer(fit, FUN, nsim)``: ``n_boot``
    responses simulated from the fit (:func:`~hierlmm.inference.simulate.simulate`), each
    refitted (same method, from the fit's θ; of A only the response's row recomputed), and the
    statistic of each refit.

    Parameters
    ----------
    statistic : callable, optional
        ``statistic(fit) ->`` a number, a dict or Series of named numbers, or an array; called
        on each refit (an :class:`~hierlmm.results.LMMResult`) and on the fit itself. Default:
        the parameters of :meth:`confint` (SDs, correlations, σ, then β; a fast path that
        builds no result objects).
    n_jobs : int
        Threads (``-1``: as many as cores).

    Returns
    -------
    DataFrame
        One row per replicate, one column per statistic; ``.attrs["t0"]`` holds the statistic
        of the fit itself (bootMer's ``t0``).
    """
    from hierlmm.optimize import optimize_theta

    from hierlmm.inference.simulate import simulate
    from hierlmm.progress import progress

    fit.model.require("bootstrap()", instead="use confint(method='wald')")
    fit.model.require("bootstrap()", needs="rows", instead="use confint(method='profile') or 'wald'")
    ys = simulate(fit, n_boot, random_seed=random_seed)
    dev = fit.deviance_function
    if statistic is None:
        names = sdcor_names(fit) + list(fit.fixef.index)
        t0 = np.concatenate([sdcor_from_theta(fit.design, fit.solution.theta, fit.sigma), fit.fixef.to_numpy()])

        def values(d, res):
            sol = d.solve(res.theta)
            return np.concatenate([sdcor_from_theta(d.design, sol.theta, np.sqrt(sol.sigma2)), sol.beta])
    else:
        first = statistic(fit)
        names = _statistic_names(first)
        t0 = _statistic_values(first, names)

        def values(d, res):
            return _statistic_values(statistic(type(fit)(fit.model, d, res)), names)  # a result at d's optimum

    def refit(y):
        d = dev.with_response(y)  # one per draw (safe across threads); A's response row only
        return values(d, optimize_theta(d, theta0=fit.solution.theta, check=False))

    draws = np.empty((n_boot, len(names)))
    bar = progress(n_boot, "bootstrap", progressbar)
    parallel = bool(n_jobs) and n_jobs != 1
    with warnings.catch_warnings(), (ThreadPoolExecutor(max_workers=None if n_jobs < 0 else n_jobs) if parallel
                                     else contextlib.nullcontext()) as ex:
        warnings.simplefilter("ignore", HierlmmWarning)
        for i, row in enumerate((ex.map if parallel else map)(refit, ys)):
            draws[i] = row
            bar.update(1)
    bar.close()
    out = pd.DataFrame(draws, columns=names)
    out.attrs["t0"] = pd.Series(t0, index=names)
    return out


def _statistic_names(value) -> list[str]:
    if isinstance(value, pd.Series):
        return [str(i) for i in value.index]
    if isinstance(value, dict):
        return [str(k) for k in value]
    arr = np.atleast_1d(np.asarray(value, dtype=float))
    return ["t"] if arr.size == 1 and np.ndim(value) == 0 else [f"t{i + 1}" for i in range(arr.size)]


def _statistic_values(value, names) -> np.ndarray:
    if isinstance(value, (pd.Series, dict)):
        value = pd.Series(value)
        if [str(i) for i in value.index] != names:
            raise HierlmmError(f"the bootstrap statistic returned {list(value.index)} where the fit gave {names}")
        return value.to_numpy(dtype=float)
    arr = np.atleast_1d(np.asarray(value, dtype=float)).ravel()
    if arr.size != len(names):
        raise HierlmmError(f"the bootstrap statistic returned {arr.size} values where the fit gave {len(names)}")
    return arr


def _bootstrap(fit, level, n_boot=200, random_seed=None, progressbar=None, n_jobs=1):
    """Percentile intervals from the parametric bootstrap's replicates."""
    boot = bootstrap(fit, n_boot, random_seed=random_seed, progressbar=progressbar, n_jobs=n_jobs)
    names, draws = list(boot.columns), boot.to_numpy()
    a = (1 - level) / 2
    with warnings.catch_warnings():  # a correlation never defined (an SD always 0): NaN limits
        warnings.simplefilter("ignore", RuntimeWarning)
        # a draw's correlation is NaN where its SD is 0; quantiles of the defined ones
        lower, upper = np.nanquantile(draws, a, axis=0), np.nanquantile(draws, 1 - a, axis=0)
    out = pd.DataFrame({"lower": lower, "upper": upper}, index=names)
    out.attrs["draws"] = boot
    return out


def confint(fit, method: str = "profile", level: float = 0.95, parm=None, **kwargs) -> pd.DataFrame:
    """Confidence intervals (lme4's ``confint.merMod``).

    Parameters
    ----------
    method : {"profile", "wald", "bootstrap"}
    level : float
    parm : list of str, optional
        Rows to compute (profile only); all by default.
    **kwargs
        ``progressbar`` (default: on a terminal or in Jupyter, :mod:`hierlmm.progress`) for ``"profile"`` and
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
    from hierlmm.table import as_table

    title = f"{100 * level:g}% confidence intervals ({method})"
    tail = 50 * (1 - level)
    headers = {"lower": f"{tail:.3g} %", "upper": f"{100 - tail:.3g} %"}  # R's "2.5 %", "97.5 %"
    if method == "wald":
        return as_table(_wald(fit, level), title, headers=headers)
    fit.model.require(f"confint(method={method!r})", instead="use method='wald'")
    from hierlmm.threads import one_blas_thread

    if method == "profile":
        from hierlmm.inference.profile import profile_intervals

        with one_blas_thread():
            out = profile_intervals(fit, level, parm=parm, progressbar=kwargs.get("progressbar"))
        order = [n for n in sdcor_names(fit) + list(fit.fixef.index) if n in out.index]
        return as_table(out.loc[order], title, headers=headers)
    if method in ("bootstrap", "boot"):
        with one_blas_thread():
            out = _bootstrap(fit, level, **kwargs)
            return as_table(out, title, headers=headers).__finalize__(out)
    raise HierlmmError(f"method must be 'profile', 'wald' or 'bootstrap', got {method!r}")
