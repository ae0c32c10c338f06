"""Side by side: the REML/ML fit and the posterior, number by number."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["compare", "compare_ranef"]


def _stats(draws: np.ndarray) -> dict:
    """draws: (chain, draw)."""
    import arviz as az
    import xarray as xr

    da = xr.DataArray(draws, dims=("chain", "draw"))
    flat = draws.ravel()
    hdi = az.hdi(da, prob=0.95).to_numpy()
    return {"post_mean": flat.mean(), "post_median": np.median(flat), "post_q025": np.quantile(flat, 0.025),
            "post_q975": np.quantile(flat, 0.975), "hdi_low": hdi[0], "hdi_high": hdi[1],
            "ess_bulk": float(az.ess(da)), "ess_tail": float(az.ess(da, method="tail")),
            "r_hat": float(az.rhat(da)) if draws.shape[0] > 1 else np.nan}


NO_MODE = "none (unbounded at the boundary)"


def check_same_model(fit, post) -> None:
    """``fit`` and ``post`` are of one model on one data set (the same response, fixed-effect
    columns and random terms with the same levels), else a :class:`HierlmmError` saying how
    they differ: a table setting two different models side by side would read as agreement."""
    from hierlmm.errors import HierlmmError

    a, b = fit.design, post.model.design
    if a is b:
        return
    checks = [("formula", a.parsed.formula, b.parsed.formula), ("fixed effects", a.fixef_names, b.fixef_names),
              ("random terms", [(t.label, t.names) for t in a.terms], [(t.label, t.names) for t in b.terms]),
              ("number of observations", a.n, b.n),
              ("levels of the grouping factors", [t.levels for t in a.terms], [t.levels for t in b.terms])]
    for what, x, y in checks:
        if x != y:
            verb = "differs" if what in ("formula", "number of observations") else "differ"
            raise HierlmmError(f"the fit and the posterior are of different models: their {what} {verb} "
                               f"({x!r} and {y!r}); compare a fit with the posterior of the same model")
    if a.rows and b.rows and not (np.array_equal(a.y, b.y) and np.array_equal(a.X, b.X)):
        raise HierlmmError("the fit and the posterior are of the same formula on different data (the response or "
                           "the fixed-effects columns differ); compare a fit with the posterior of the same model")


def compare(fit, post, mode=None, coordinates: str | None = None) -> pd.DataFrame:
    """One row per row of ``fit.varcorr`` (variances and covariances, residual last) and per
    fixed effect (``grp = "fixed"``): the fit's estimate beside the posterior.

    Columns ``estimate`` (REML or ML), ``post_mode`` (the mode of the marginal posterior of
    the variance parameters under ``post``'s prior, found numerically; for β, β̂ at that
    mode), ``mode_in`` (the coordinates of the density whose mode it is: ``variances`` or
    ``SDs``, by default those that carry the prior, see :mod:`hierlmm.bayes.mode`),
    ``post_mean``, ``post_median``, ``post_q025``, ``post_q975``, ``hdi_low``, ``hdi_high``
    (95%), ``ess_bulk``, ``ess_tail``, ``r_hat``. With a REML fit, under ``prior="flat"`` (in variances) and
    ``"flat_sd"`` (in SDs) alike, the mode equals the estimate: REML is the posterior mode.
    Where the density has no mode in the coordinates asked for (``"flat_sd"`` in variances),
    ``post_mode`` says ``"none (unbounded at the boundary)"``.

    Displayed (printed or in a notebook) are the columns that tell the story, estimate,
    mode, median, 95% interval, bulk ESS and R-hat (:class:`hierlmm.table.Table`); the others
    are in the frame.
    """
    from hierlmm.bayes.mode import COORDINATES, posterior_mode

    check_same_model(fit, post)
    if mode is None:
        mode = posterior_mode(post.model, prior=post.prior, coordinates=coordinates)
    mvc = mode.varcorr()
    where = COORDINATES[mode.coordinates]
    P = post.posterior
    rows = []
    for (_, r), (_, m) in zip(fit.varcorr.iterrows(), mvc.iterrows()):
        if r.grp == "Residual":
            draws = P["sigma2"].to_numpy()
        else:
            t = next(t for t in fit.design.terms if t.label == r.grp)
            i = t.names.index(r.var1)
            j = i if r.var2 is None or (isinstance(r.var2, float) and np.isnan(r.var2)) else t.names.index(r.var2)
            draws = post.covariance(r.grp)[:, :, i, j]
        rows.append({"grp": r.grp, "var1": r.var1, "var2": r.var2, "estimate": r.vcov,
                     "post_mode": NO_MODE if mode.unbounded else m.vcov, "mode_in": where, **_stats(draws)})
    beta = P["beta"].to_numpy()
    for k, name in enumerate(fit.fixef.index):
        rows.append({"grp": "fixed", "var1": name, "var2": None, "estimate": fit.fixef.iloc[k],
                     "post_mode": NO_MODE if mode.unbounded else mode.beta.iloc[k], "mode_in": where,
                     **_stats(beta[:, :, k])})
    from hierlmm.table import as_table

    prior = post.prior if isinstance(post.prior, str) else type(post.prior).__name__
    out = as_table(pd.DataFrame(rows), f"{fit.method} estimates beside the posterior under prior={prior!r} "
                   f"(posterior mode in {where})",
                   shown=["grp", "var1", "var2", "estimate", "post_mode", "post_median", "post_q025", "post_q975",
                          "ess_bulk", "r_hat"])
    out.attrs["prior"] = post.prior
    out.attrs["mode_coordinates"] = where
    out.attrs["method"] = fit.method
    return out


def compare_ranef(fit, post, level: float = 0.95) -> pd.DataFrame:
    """Plug-in posterior of each ``b_i`` (``fit.ranef_posterior(beta="integrated")``: θ and σ
    held at their estimates) beside the full posterior (θ and σ integrated out too).

    Columns ``group, level, term, plugin_mean, plugin_sd, post_mean, post_sd, post_low,
    post_high, sd_ratio`` (``post_sd / plugin_sd``: how much the plug-in understates the
    uncertainty of each effect).
    """
    check_same_model(fit, post)
    plug = fit.ranef_posterior(beta="integrated")
    a = (1 - level) / 2
    rows = []
    for t in fit.design.terms:
        rp = plug[t.group]
        draws = post.draws(f"b_{t.label}")  # (N, m, k)
        for j, lev in enumerate(t.levels):
            for c, name in enumerate(t.names):
                d = draws[:, j, c]
                psd = rp.sd.loc[lev, name]
                rows.append({"group": t.group, "level": lev, "term": name, "plugin_mean": rp.mean.loc[lev, name],
                             "plugin_sd": psd, "post_mean": d.mean(), "post_sd": d.std(ddof=1),
                             "post_low": np.quantile(d, a), "post_high": np.quantile(d, 1 - a),
                             "sd_ratio": d.std(ddof=1) / psd if psd > 0 else np.nan})
    return pd.DataFrame(rows)
