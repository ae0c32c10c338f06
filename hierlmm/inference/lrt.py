"""Likelihood-ratio tests: ``hl.anova(fit1, fit2, ...)`` and ``fit.ranova()``.

A variance component tested at zero lies on the boundary of the parameter space, so the
LRT statistic is not χ²(df) under the null. When the removed random effects are a
subvector whose covariance block is independent of the rest (dropping a whole scalar term,
or the last effect of a correlated term), the null distribution is the mixture
``½χ²(df−1) + ½χ²(df)`` (Self & Liang 1987; Stram & Lee 1994), with ``χ²(0)`` the point
mass at 0. ``p_mixture`` reports it; the naive ``p`` (χ²(df)) is conservative. The mixture
is not valid for other reductions (e.g. removing an effect from the middle of a correlated
term with three or more effects, or several terms at once).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from hierlmm.criterion import criterion
from hierlmm.errors import ConvergenceWarning, HierlmmError, HierlmmWarning, warn

__all__ = ["anova", "ranova", "chibar_pvalue", "lm_loglik"]


class RefitWarning(HierlmmWarning):
    """REML fits were refitted by ML before a likelihood-ratio comparison (lme4's refit)."""


def chibar_pvalue(stat: float, df: int) -> float:
    """``½ P(χ²(df−1) ≥ x) + ½ P(χ²(df) ≥ x)``, with χ²(0) a point mass at 0."""
    from scipy import stats

    lower = (1.0 if stat <= 0 else 0.0) if df - 1 == 0 else stats.chi2.sf(stat, df - 1)
    return float(0.5 * lower + 0.5 * stats.chi2.sf(stat, df))


def lm_loglik(y: np.ndarray, X: np.ndarray, reml: bool, log_weights: float = 0.0) -> float:
    """Log-likelihood of the linear model without random effects (REML as lme4 defines it);
    with prior weights ``y, X`` are the whitened ones and ``log_weights = Σ log w_i``."""
    n, p = X.shape
    Q, R = np.linalg.qr(X)
    resid = y - Q @ (Q.T @ y)
    r2 = float(resid @ resid)
    return -0.5 * criterion(0.0, 2 * np.sum(np.log(np.abs(np.diag(R)))), r2, n, p, reml, log_weights=log_weights)


def _larger_worse(chisq: float, loglik: float, larger: str, smaller: str) -> None:
    """Warn where a model with more parameters fits worse than one with fewer: if they are
    nested, the larger one's fit is a local optimum (the smaller is one of its points)."""
    if chisq < -1e-6 * max(1.0, abs(loglik)):
        warn(
            f"{larger} has a lower likelihood than {smaller} (2 Δ log L = {chisq:.6g}); if the models are "
            f"nested, the larger one's fit is a local optimum: refit it from the smaller one's θ (fit(theta0=...))",
            ConvergenceWarning)


def _refit_ml(fit):
    """The ML fit of a REML fit's model: from lme4's start (the REML θ, as lme4's ``refitML``)
    and from the default start, keeping the higher likelihood (the ML deviance can have more
    than one local minimum, as on a singular correlated term)."""
    if fit.method != "REML":
        return fit
    runs = []
    for start in (fit.solution.theta, None):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runs.append((fit.model.fit(method="ML", theta0=start), caught))
    best, caught = min(runs, key=lambda run: run[0].deviance)
    for w in caught:  # the kept fit's own warnings (singular, convergence), not the other's
        warn(str(w.message), w.category)
    return best


def anova(*fits, refit: bool = True, names=None) -> pd.DataFrame:
    """Likelihood-ratio comparison of nested models (lme4's ``anova(m1, m2, ...)``).

    Parameters
    ----------
    *fits : LMMResult
        Fitted to the same data. Ordered by number of parameters in the table.
    refit : bool
        REML fits are refitted by ML first (with a warning), as lme4's ``refit = TRUE``:
        REML likelihoods of models with different fixed effects are not comparable. With
        ``refit=False`` REML likelihoods are used, which is allowed only when every model
        has the same fixed-effects design.
    names : list of str, optional
        Row labels; by default each model's formula, with its residual structure or
        formulation where not the default (numbered where two still coincide).

    Returns
    -------
    DataFrame
        Columns ``npar, aic, bic, loglik, deviance, chisq, df, p``.
    """
    from scipy import stats

    if len(fits) < 2:
        raise HierlmmError("anova needs at least two fitted models to compare")
    nobs = {f.nobs for f in fits}
    if len(nobs) > 1:
        raise HierlmmError(
            "models were not all fitted to the same data: numbers of observations "
            f"{', '.join(str(f.nobs) for f in fits)}; compare models fitted to the same rows"
        )
    if any(not _same(fits[0], f, "y") for f in fits[1:]):
        raise HierlmmError("models were fitted to different responses; compare models of the same data")
    if names is None:
        names = [_label(f) for f in fits]
        if len(set(names)) < len(names):
            names = [f"{n} ({i + 1})" for i, n in enumerate(names)]
    names = list(names)
    if refit and any(f.method == "REML" for f in fits):
        warn("refitting model(s) with ML (instead of REML)", RefitWarning)
        fits = [_refit_ml(f) for f in fits]
    elif not refit:
        methods = {f.method for f in fits}
        if methods == {"REML"}:
            if any(not _same(fits[0], f, "X") for f in fits[1:]):
                raise HierlmmError(
                    "REML likelihoods of models with different fixed effects are not comparable; "
                    "use refit=True (ML) to compare them"
                )
        elif len(methods) > 1:
            raise HierlmmError("cannot compare REML and ML likelihoods; use refit=True")
    order = sorted(range(len(fits)), key=lambda i: fits[i].df_model)
    rows = []
    prev = None
    for i in order:
        f = fits[i]
        row = {"npar": f.df_model, "aic": f.aic, "bic": f.bic, "loglik": f.loglik,
               "deviance": -2 * f.loglik, "chisq": np.nan, "df": np.nan, "p": np.nan}
        if prev is not None:
            chisq = 2 * (f.loglik - prev.loglik)
            df = f.df_model - prev.df_model
            if df > 0:
                _larger_worse(chisq, f.loglik, names[i], names[order[len(rows) - 1]])
            row.update(chisq=chisq, df=df, p=stats.chi2.sf(chisq, df) if df > 0 else np.nan)
        rows.append(row)
        prev = f
    from hierlmm.table import as_table

    out = as_table(pd.DataFrame(rows, index=[names[i] for i in order]),
                   "Likelihood-ratio tests of nested models" + (" (refitted by ML)" if refit else ""), pvalues=["p"],
                   headers=LRT_HEADERS)
    out.attrs["formulas"] = {names[i]: fits[i].design.parsed.formula for i in order}
    return out


# R's printed headers (lme4's anova, lmerTest's ranova, drop1) of the tables' Python-spelt columns
LRT_HEADERS = {"aic": "AIC", "bic": "BIC", "loglik": "logLik", "chisq": "Chisq", "lrt": "LRT", "df": "Df",
               "p": "Pr(>Chisq)"}


def _same(a, b, what: str) -> bool:
    """Two fits have the same response (``what="y"``) or fixed-effects matrix (``"X"``): the
    arrays compared when both are in memory; for a model on a Dask DataFrame its cross-product
    (``y``'s SD and ``y'y``; ``X``'s names and ``X'X``), which the rows would have to match."""
    da, db = a.design, b.design
    if da.rows and db.rows:
        if what == "y":
            return np.array_equal(da.y, db.y)
        return da.X.shape == db.X.shape and np.allclose(da.X, db.X)
    if what == "y":
        ya, yb = a.deviance_function.cp.fixed_gram()[-1, -1], b.deviance_function.cp.fixed_gram()[-1, -1]
        return np.isclose(da.response_sd, db.response_sd, rtol=1e-12) and np.isclose(ya, yb, rtol=1e-12)
    if da.fixef_names != db.fixef_names:
        return False
    ca, cb = a.deviance_function.cp, b.deviance_function.cp
    return np.allclose(ca.fixed_gram()[:-1, :-1], cb.fixed_gram()[:-1, :-1], rtol=1e-10)


def _label(fit) -> str:
    """A model's row in the comparison: its formula, its residual structure and formulation
    where they are not the default."""
    label = fit.design.parsed.formula
    if fit.residual is not None:
        label += f" [{fit.residual.name} residuals]"
    if fit.model.formulation == "marginal":
        label += " [marginal]"
    return label


def _reductions(parsed):
    """lmerTest's ``ranova`` reductions: (label, list of remaining random-term strings)."""
    from formulaic import Formula

    specs = list(parsed.random)
    text = [s.text for s in specs]
    out = []
    for i, s in enumerate(specs):
        terms = [str(t) for t in Formula(s.expr)]
        has_int = "1" in terms
        others = [t for t in terms if t != "1"]
        # an unstructured or diagonal term loses one effect at a time; another structure (cs,
        # ar1, ...) is about its columns together: removed whole
        if s.structure in ("us", "diag") and (has_int and others or len(others) > 1):
            wrap = "" if s.structure == "us" else s.structure
            for t in others:
                keep = [u for u in others if u != t]
                expr = " + ".join((["1"] if has_int else ["0"]) + keep)
                out.append((f"{t} in {text[i]}", text[:i] + [f"{wrap}({expr} | {s.group})"] + text[i + 1:]))
        else:
            out.append((text[i], text[:i] + text[i + 1:]))
    return out


def ranova(fit) -> pd.DataFrame:
    """Reduce each random-effects term in turn and test by LRT (lmerTest's ``ranova``).

    A term with several effects, ``(1 + x | g)``, loses one effect at a time
    (``x in (1 + x | g)`` fits ``(1 | g)``); a term with one effect, or with a covariance structure
    (``cs(0 + f | g)``), is removed. The
    likelihood is the fit's (REML or ML): the fixed effects do not change.

    Returns
    -------
    DataFrame
        Rows ``<none>`` then one per reduction; columns ``npar, loglik, aic, lrt, df, p,
        p_mixture`` (the χ̄² p-value, see the module docstring for when it is valid).
    """
    from scipy import stats

    from hierlmm.errors import SingularFitWarning

    fit.model.require("ranova()", instead="compare fits with hl.anova")
    parsed = fit.design.parsed
    reml = fit.method == "REML"
    rows = {"<none>": {"npar": fit.df_model, "loglik": fit.loglik, "aic": fit.aic,
                       "lrt": np.nan, "df": np.nan, "p": np.nan, "p_mixture": np.nan}}
    for label, remaining in _reductions(parsed):
        if remaining:
            offsets = "".join(f" + offset({o})" for o in parsed.offsets)
            formula = f"{parsed.response} ~ {parsed.fixed}{offsets} + " + " + ".join(remaining)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SingularFitWarning)
                sub = fit.model.updated(formula).fit(method=fit.method)
            ll, npar = sub.loglik, sub.df_model
        else:
            w = fit.design.whitened()
            ll = lm_loglik(w.y, w.X, reml, fit.design.log_weights)
            npar = fit.design.p + 1
        _larger_worse(2 * (fit.loglik - ll), fit.loglik, "<none>", f"the model without {label}")
        lrt = max(2 * (fit.loglik - ll), 0.0)
        df = fit.df_model - npar
        rows[label] = {"npar": npar, "loglik": ll, "aic": -2 * ll + 2 * npar, "lrt": lrt, "df": df,
                       "p": stats.chi2.sf(lrt, df), "p_mixture": chibar_pvalue(lrt, df)}
    from hierlmm.table import as_table

    return as_table(pd.DataFrame.from_dict(rows, orient="index"),
                    "ANOVA-like table for random effects: single term deletions", pvalues=["p", "p_mixture"],
                    headers={**LRT_HEADERS, "p_mixture": "Pr(>Chisq) mixture"})
