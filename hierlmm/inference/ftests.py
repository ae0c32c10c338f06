"""t tests of each coefficient and F tests of each term, with lmerTest's choices of df."""

from __future__ import annotations


import numpy as np
import pandas as pd
from scipy import stats

from hierlmm.errors import HierlmmError, HierlmmWarning, warn

__all__ = ["coef_table", "anova_table", "f_tests", "drop1_f"]

_DDF = {"satterthwaite": "satterthwaite", "kenward-roger": "kenward-roger", "kr": "kenward-roger",
        "kenward_roger": "kenward-roger", "asymptotic": "asymptotic", "wald": "asymptotic"}


def _ddf(ddf: str) -> str:
    try:
        return _DDF[str(ddf).lower()]
    except KeyError:
        raise HierlmmError(f"ddf must be 'satterthwaite', 'kenward-roger' or 'asymptotic', got {ddf!r}") from None


def coef_table(fit, ddf: str = "satterthwaite") -> pd.DataFrame:
    """Estimate, standard error, df, t and p for every fixed effect.

    Parameters
    ----------
    ddf : {"satterthwaite", "kenward-roger", "asymptotic"}
        Satterthwaite df as lmerTest; Kenward–Roger (adjusted SE and df, as pbkrtest);
        or asymptotic (columns ``z`` and a normal p-value, df = inf).
    """
    from hierlmm.table import as_table

    ddf = _ddf(ddf)
    title = {"satterthwaite": "t tests with Satterthwaite's df", "kenward-roger": "t tests with Kenward-Roger's "
             "df and adjusted SEs", "asymptotic": "z tests (asymptotic)"}[ddf]
    names = list(fit.fixef.index)
    beta = fit.fixef.to_numpy()
    p = len(names)
    rows = []
    if ddf == "asymptotic":
        se = fit.se.to_numpy()
        z = beta / se
        return as_table(pd.DataFrame({"estimate": beta, "se": se, "df": np.inf, "z": z,
                                      "p": 2 * stats.norm.sf(np.abs(z))}, index=names), title, pvalues=["p"],
                        headers={**T_HEADERS, "p": "Pr(>|z|)"})
    if ddf == "satterthwaite":
        from hierlmm.inference.satterthwaite import contest1d, varpar_covariance

        vc = varpar_covariance(fit)
        for j in range(p):
            rows.append(contest1d(vc, np.eye(p)[j]))
    else:
        from hierlmm.inference.kenward_roger import kr_adjust, lb_ddf

        kr = kr_adjust(fit)
        for j in range(p):
            L = np.eye(p)[j]
            se = np.sqrt(kr.vcov_adj[j, j])
            df = lb_ddf(L, kr)
            t = beta[j] / se
            rows.append({"estimate": beta[j], "se": se, "df": df, "t": t, "p": 2 * stats.t.sf(abs(t), df)})
    return as_table(pd.DataFrame(rows, index=names)[["estimate", "se", "df", "t", "p"]], title, pvalues=["p"],
                    headers=T_HEADERS)


def anova_table(fit, type: int = 3, ddf: str = "satterthwaite") -> pd.DataFrame:  # noqa: A002
    """F test of every fixed-effects term (lmerTest's ``anova``).

    Parameters
    ----------
    type : {3, 2, 1}
        Type III (each term adjusted for all others, lmerTest's contrasts), Type II (each
        term adjusted for the terms that do not contain it) or Type I (sequential).
    ddf : {"satterthwaite", "kenward-roger"}
    """
    from hierlmm.inference.contrasts import contrasts_type1, contrasts_type2, contrasts_type3

    kinds = {"3": ("III", contrasts_type3), "III": ("III", contrasts_type3), "2": ("II", contrasts_type2),
             "II": ("II", contrasts_type2), "1": ("I", contrasts_type1), "I": ("I", contrasts_type1)}
    if str(type) not in kinds:
        raise HierlmmError(f"type must be 1, 2 or 3, got {type!r}")
    from hierlmm.table import as_table

    roman, make = kinds[str(type)]
    return as_table(f_tests(fit, make(fit.design), ddf),
                    f"Type {roman} Analysis of Variance Table with {_method(ddf)} method", pvalues=["p"],
                    headers=F_HEADERS)


# R's printed headers (lmerTest's summary and anova) of the tables' Python-spelt columns
T_HEADERS = {"estimate": "Estimate", "se": "Std. Error", "t": "t value", "z": "z value", "p": "Pr(>|t|)"}
F_HEADERS = {"sum_sq": "Sum Sq", "mean_sq": "Mean Sq", "num_df": "NumDF", "den_df": "DenDF", "F": "F value",
             "p": "Pr(>F)"}


def _method(ddf: str) -> str:
    return "Kenward-Roger's" if _ddf(ddf) == "kenward-roger" else "Satterthwaite's"


def f_tests(fit, Ls: dict[str, np.ndarray], ddf: str = "satterthwaite") -> pd.DataFrame:
    """One F test per named contrast matrix ``L`` (hypothesis ``Lβ = 0``): columns ``sum_sq,
    mean_sq, num_df, den_df, F, p`` (lmerTest's ``contestMD``); empty matrices are left out."""
    ddf = _ddf(ddf)
    if ddf == "satterthwaite":
        from hierlmm.inference.satterthwaite import contestmd, varpar_covariance

        vc = varpar_covariance(fit)
        test = lambda L: contestmd(vc, L)  # noqa: E731
    elif ddf == "kenward-roger":
        from hierlmm.inference.kenward_roger import kr_test

        test = lambda L: kr_test(fit, L)  # noqa: E731
    else:
        raise HierlmmError("anova needs ddf='satterthwaite' or 'kenward-roger'")
    rows = {term: test(L) for term, L in Ls.items() if L.size}
    broken = [f"{t} ({r['den_df']:.4g})" for t, r in rows.items() if not r["den_df"] > 0]
    if broken:
        # pbkrtest reports such numbers (a negative scaled F, no p-value); they are no F test
        warn(
            f"{_method(ddf)} approximation breaks down for {', '.join(broken)}: a denominator df that is not "
            "positive (the model has too few residual degrees of freedom for it), so the F has no "
            "distribution to refer to and p is NaN" + ("; use ddf='satterthwaite'" if ddf == "kenward-roger" else ""),
            HierlmmWarning)
    cols = ["sum_sq", "mean_sq", "num_df", "den_df", "F", "p"]
    out = pd.DataFrame.from_dict(rows, orient="index")
    if out.empty:
        return pd.DataFrame(columns=cols)
    return out[cols]


def drop1_f(fit, ddf: str = "satterthwaite") -> pd.DataFrame:
    """lmerTest's ``drop1``: the F test of every term contained in no other, ``Lβ = 0`` with
    ``L`` the identity rows of its columns, in the full model (no refits)."""
    from hierlmm.inference.contrasts import contrasts_marginal

    if fit.design.dropped_columns:
        raise HierlmmError(
            "drop1(test='F') on a rank-deficient fixed part (dropped column(s) "
            f"{', '.join(fit.design.dropped_columns)}) is not implemented: the hypotheses then come from "
            "comparing design matrices; use drop1(test='Chisq') or remove the aliased terms")
    from hierlmm.table import as_table

    return as_table(f_tests(fit, contrasts_marginal(fit.design), ddf),
                    f"Single term deletions using {_method(ddf)} method", pvalues=["p"], headers=F_HEADERS)
