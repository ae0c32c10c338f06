"""hierlmm against lme4/lmerTest/pbkrtest/nlme on random models nobody chose in advance.

The cases come from :mod:`generator` (seeded); R fits them all in one batch (see
``tests/conftest.py``). Tolerances are the reference tests' (``tests/test_reference_lme4.py``):
lme4 stops BOBYQA at ``xtol_abs = ftol_abs = 1e-8``, so its estimates carry errors of order
1e-5 relative; the tolerances are well above that and well below what a wrong formula gives.

Where hierlmm's criterion is lower than lme4's (by more than 1e-9 relative, far beyond the
15 digits R prints), lme4 stopped short; then the parameters legitimately differ, and the
test checks instead that hierlmm's objective at lme4's θ reproduces lme4's criterion (the
same function) and that hierlmm's optimum is lower. A singular fit where lme4's is not is
accepted only with the same proof at lme4's θ put on the bound; profile limits that differ
are decided by brute force (:mod:`profile_check`). Those cases are counted in the run's
summary line.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import at_theta, untouched

import hierlmm as hl
from scipy import stats

# hierlmm's criterion lower than lme4's by more than this (relative): lme4 stopped short.
# R prints the criterion to 15 significant digits, so 1e-9 is far beyond rounding.
BETTER = 1e-9


def _better(fit, crit: float) -> bool:
    return fit.deviance < crit - BETTER * max(1.0, abs(crit))


def _lme4_short_of_boundary(fit, ref) -> bool:
    """lme4 stopped short of a bound: hierlmm's fit is singular (on the boundary) and its
    criterion is no worse than lme4's, or lme4's θ with its entries below 1e-3 put on the
    bound is no worse than lme4's own point. Either way the boundary point is at least as good
    as lme4's interior one (seed 11's m0087: θ₃ 6.8e-10 against lme4's 0.0051, criterion
    1.3e-7 lower)."""
    tol = 1e-9 * max(1.0, abs(ref["crit"]))
    if fit.singular and fit.deviance <= ref["crit"]:
        return True
    lower = fit.deviance_function.lower
    th = np.asarray(ref["theta"], dtype=float)
    near = np.isfinite(lower) & (th - lower < 1e-3) & (th - lower > 0)
    if not near.any():
        return False
    th0 = np.where(near, lower, th)
    return fit.deviance_function(th0) <= ref["crit"] + tol


def canon(name: str) -> str:
    """A coefficient name as compared with R's: hierlmm's names are R's (``SexFemale``,
    ``I(x^2)``, an interaction's factors in R's order), spaces aside."""
    return name.replace(" ", "")


def by_name(names, values) -> dict:
    return {canon(n): v for n, v in zip(names, values)}


def close(a, b, rel=0.0, abs_=0.0) -> bool:
    return abs(a - b) <= rel * abs(b) + abs_


def p_close(p, p_ref, stat_tol: float) -> bool:
    """p-values agree: within 1% relative (log10 scale below 1e-10), or as far as the test
    statistic's own tolerance moves them."""
    if p_ref < 1e-10:
        return abs(np.log10(max(p, 1e-300)) - np.log10(max(p_ref, 1e-300))) < 0.05 + stat_tol
    return abs(p - p_ref) <= 0.01 * p_ref + 1e-12 + stat_tol


# ------------------------------------------------------------------------------------ core
def test_fit(diff_case):
    case, ref, fit, err = diff_case
    if not ref["ok"] and case.structure:  # glmmTMB's or nlme's own failure: no reference, not a refusal
        assert err is None and np.isfinite(fit.loglik), err
        case.notes.append("r-failed")
        return
    if not ref["ok"]:
        assert err is not None, f"lme4 refused the model ({ref['error']}) but hierlmm fitted it"
        return
    if err is not None and "fit every observation exactly" in str(err):
        # refused as unbounded (design.check_identifiable): R's own [X Z] must have rank n
        assert ref["rank_XZ"] >= ref["nobs"], (ref["rank_XZ"], ref["nobs"])
        return
    assert err is None, f"hierlmm raised {err!r} where lme4 fitted the model"
    if case.ar1:
        _check_ar1(fit, ref)
        return
    if case.structure:
        _check_structured(case, ref, fit)
        return
    _check_fit(case, ref, fit)


def _check_mmrm(case, ref, fit, ll, tol):
    """nlme's gls with corSymm and varIdent against hierlmm's Unstructured + VarIdent: the same
    objective at nlme's estimate, its optimum reached or bettered, then β, SEs (the ML σ's, as
    lme4's), the residual SD of every visit and the correlation matrix (free of nlme's choice of
    reference level)."""
    from hierlmm.residual import unbounded_from_correlation

    levels = list(fit.design.data["f"].cat.categories)
    sd = np.array([ref["residual_sd"][lev] for lev in levels])
    R = np.asarray(ref["R"], dtype=float)
    par = np.concatenate([unbounded_from_correlation(R), np.log(sd[1:] / sd[0])])
    at_r = -0.5 * fit.deviance_function(par)
    assert at_r >= ll - tol, ("objectives differ", at_r, ll)
    assert fit.loglik >= ll - tol, ("nlme's optimum not reached", fit.loglik, ll)
    if fit.loglik > ll + 1e-4 * max(1.0, abs(ll)):
        case.notes.append("better")
        return
    beta, se = by_name(fit.fixef.index, fit.fixef), by_name(fit.se.index, fit.se)
    rbeta = by_name(ref["fixef_names"], [ref["fixef"][k] for k in ref["fixef_names"]])
    rse = by_name(ref["fixef_names"], [ref["se"][k] for k in ref["fixef_names"]])
    for k in rbeta:
        assert close(beta[k], rbeta[k], 1e-4, 2e-3 * rse[k]), (k, beta[k], rbeta[k])
        assert close(se[k], rse[k], 2e-3), (k, se[k], rse[k])
    ratios = {k.split("=", 1)[1]: v for k, v in fit.residual_params.items() if k.startswith("sd ratio")}
    ours = np.array([fit.sigma * ratios.get(str(lev), 1.0) for lev in levels])
    np.testing.assert_allclose(ours, sd, rtol=2e-3)
    R_ours = fit.deviance_function.residual_value(fit.solution.theta)
    np.testing.assert_allclose(R_ours, R, atol=2e-3)


def _check_structured(case, ref, fit):
    """A covariance structure against glmmTMB's (or nlme's) fit of it: the same objective at R's
    estimate (D/σ² mapped to the structure's parameters, σ and β profiled: at most R's −2 logLik,
    and equal to it where R's σ and β are optimal), R's optimum reached or bettered, then β, SEs,
    σ and every term's D. Their REML logLik has lme4's constant (the same unstructured fit has
    the same logLik in lme4, glmmTMB and nlme: tests/test_covariance_structures.py)."""
    assert fit.nobs == len(case.data)
    assert np.isfinite(fit.loglik)
    if ref["logLik"] is None:  # glmmTMB reports NA where its optimisation failed (seen on a singular us fit)
        case.notes.append("r-failed")
        return
    ll, tol = ref["logLik"], 1e-6 * max(1.0, abs(ref["logLik"]))
    if case.structure == "mmrm":
        return _check_mmrm(case, ref, fit, ll, tol)
    sigma2 = ref["sigma"] ** 2
    # glmmTMB's VarCorr by group name (its terms in formula order, hierlmm's by number of levels)
    by_group = ref["D"] if isinstance(ref["D"], dict) else {t.group: D for t, D in zip(fit.design.terms, ref["D"])}
    mats = [np.atleast_2d(np.asarray(by_group[t.group], dtype=float)) for t in fit.design.terms]
    par = np.concatenate([t.cov.par_from_relcov(D / sigma2) for t, D in zip(fit.design.terms, mats)])
    at_r = -0.5 * fit.deviance_function(par)
    assert at_r >= ll - tol, ("objectives differ", at_r, ll)
    assert fit.loglik >= ll - tol, ("R's optimum not reached", fit.loglik, ll)
    if fit.loglik > ll + 1e-4 * max(1.0, abs(ll)) or not ref["converged"]:
        case.notes.append("better" if fit.loglik > ll + tol else "r-unconverged")
        return
    assert fit.loglik == pytest.approx(ll, abs=1e-4 * max(1.0, abs(ll)))
    beta, se = by_name(fit.fixef.index, fit.fixef), by_name(fit.se.index, fit.se)
    rbeta = by_name(ref["fixef_names"], [ref["fixef"][k] for k in ref["fixef_names"]])
    # SEs: sqrt(diag((X'V⁻¹X)⁻¹)) at R's estimates (fit_r.R's gls_se for glmmTMB, nlme's own)
    rse = by_name(ref["fixef_names"], [ref["se"][k] for k in ref["fixef_names"]])
    assert sorted(beta) == sorted(rbeta)
    for k in rbeta:
        assert close(beta[k], rbeta[k], 1e-4, 2e-3 * rse[k]), (k, beta[k], rbeta[k])
        assert close(se[k], rse[k], 2e-3), (k, se[k], rse[k])
    assert close(fit.sigma, ref["sigma"], 2e-3)
    for D, Dr in zip(fit.covariance_matrices().values(), mats):
        assert np.allclose(D.to_numpy(), Dr, rtol=2e-3, atol=1e-4 * fit.sigma**2), (D.to_numpy(), Dr)


def _check_fit(case, ref, fit):
    """The fit against lme4's: the same objective at lme4's θ, lme4's optimum reached or
    bettered, and then the same estimates."""
    assert fit.nobs == ref["nobs"]
    dev = fit.deviance_function
    at_r = dev(np.asarray(ref["theta"], dtype=float))
    # the same objective: hierlmm's criterion at lme4's theta is lme4's criterion
    assert at_r == pytest.approx(ref["crit"], abs=1e-6 * max(1.0, abs(ref["crit"]))), "objectives differ"
    # hierlmm reaches lme4's optimum or better
    assert fit.deviance <= ref["crit"] + 1e-6 * max(1.0, abs(ref["crit"]))
    if _better(fit, ref["crit"]):
        case.notes.append("better")
        return
    if fit.singular != ref["singular"]:
        assert fit.singular and _lme4_short_of_boundary(fit, ref), "singular flags differ"
        case.notes.append("better")
        return
    _own_or_at_lme4_theta(case, ref, fit, lambda f: _estimates(f, ref))


def _estimates(fit, ref):
    """β, SEs, σ and each term's covariance matrix against lme4's."""
    beta, se = by_name(fit.fixef.index, fit.fixef), by_name(fit.se.index, fit.se)
    rbeta = by_name(ref["fixef_names"], [ref["fixef"][k] for k in ref["fixef_names"]])
    rse = by_name(ref["fixef_names"], [ref["se"][k] for k in ref["fixef_names"]])
    assert sorted(beta) == sorted(rbeta), (sorted(beta), sorted(rbeta))
    for k in rbeta:
        assert close(beta[k], rbeta[k], 1e-4, 2e-3 * rse[k]), (k, beta[k], rbeta[k])
        assert close(se[k], rse[k], 2e-3), (k, se[k], rse[k])
    assert close(fit.sigma, ref["sigma"], 2e-3)
    s2 = fit.sigma**2
    mats = list(fit.covariance_matrices().values())
    assert len(mats) == len(ref["varcorr"])
    for D, rv in zip(mats, ref["varcorr"]):
        Dr = np.atleast_2d(np.asarray(rv["cov"], dtype=float))
        assert [canon(n) for n in D.index] == [canon(n) for n in rv["terms"]]
        assert np.allclose(D.to_numpy(), Dr, rtol=2e-3, atol=1e-4 * s2), (rv["group"], D.to_numpy(), Dr)


def test_dask(diff_case):
    """The same random model fitted from a Dask DataFrame (3 unequal shuffled partitions, the
    cross-product reduced over them, hierlmm/partitioned.py) against lme4, as test_fit: the
    objective at lme4's θ, the optimum, the estimates."""
    dd = pytest.importorskip("dask.dataframe")
    import dask

    case, ref, fit, err = diff_case
    if case.ar1 or case.structure == "mmrm":
        pytest.skip("residual correlation needs the rows in memory (refused on Dask data)")
    if not ref["ok"] or err is not None:
        pytest.skip("the model was refused (checked in test_fit)")
    data = case.data.sample(frac=1.0, random_state=0)
    cut = [0, len(data) // 5, len(data) // 2, len(data)]
    parts = [dask.delayed(data.iloc[a:b]) for a, b in zip(cut[:-1], cut[1:])]
    ddf = dd.from_delayed(parts, meta=data.iloc[:0])
    if "poly(" in case.formula:  # a transform whose state is learned from every row: refused, by name
        with pytest.raises(hl.FormulaError, match=r"poly\(x, 2\)"):
            hl.LMM(case.formula, ddf, weights=case.weights)
        return
    with warnings.catch_warnings(), dask.config.set(scheduler="sync"):
        warnings.simplefilter("ignore")
        dfit = hl.LMM(case.formula, ddf, weights=case.weights).fit(method="REML" if case.reml else "ML")
    assert not dfit.design.rows
    assert dfit.n_missing == fit.n_missing and dfit.design.fixef_names == fit.design.fixef_names
    if case.structure:
        _check_structured(case, ref, dfit)
    else:
        _check_fit(case, ref, dfit)


def _agrees(case, ref, fit, err):
    """Skip the further comparisons where the core comparison cannot apply."""
    if not ref["ok"] or err is not None:
        pytest.skip("the model was refused (checked in test_fit)")
    if _better(fit, ref["crit"]) or (fit.singular != ref["singular"] and _lme4_short_of_boundary(fit, ref)):
        pytest.skip("hierlmm's likelihood is strictly higher than lme4's: parameters differ legitimately")


def _check_ar1(fit, ref):
    """nlme's lme with corAR1 against hierlmm's residual=AR1()."""
    assert fit.loglik >= ref["logLik"] - 1e-4
    if fit.loglik > ref["logLik"] + 1e-4:
        return
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-4)
    for k, v in ref["fixef"].items():
        assert close(fit.fixef[k], v, 1e-4, 2e-3 * ref["se"][k]), k
        assert close(fit.se[k], ref["se"][k], 2e-3), k
    assert close(fit.sigma, ref["sigma"], 2e-3)
    # the random-intercept variance, with the covariance tolerance of test_fit (its SD is
    # ill-conditioned at 0: nlme's log-SD coordinates stop at 2e-4 where hierlmm reaches 1.5e-7
    # with a log-likelihood 1.8e-8 higher, a0003)
    assert close(float(fit.varcorr.vcov.iloc[0]), ref["random_sd"] ** 2, 2e-3, 1e-4 * ref["sigma"] ** 2)
    assert close(fit.residual_params["phi"], ref["Phi"], 0, 2e-3)


def test_predict_newdata(diff_case):
    """``predict()`` on new data (rows of the data, every other one with a level of g the fit has
    not seen) against lme4's ``predict(m, newdata, allow.new.levels = TRUE)``: the conditional
    prediction where the level is known, the population one where it is not."""
    case, ref, fit, err = diff_case
    if case.newdata is None or case.ar1 or case.structure:
        pytest.skip("no new data drawn for this case")
    _agrees(case, ref, fit, err)
    want = ref.get("predict_new")
    assert not isinstance(want, dict), f"lme4's predict failed: {want}"
    got = fit.predict(case.newdata, allow_new_levels=True).to_numpy()
    scale = np.sqrt(float(np.nanvar(fit.fitted()))) + fit.sigma
    np.testing.assert_allclose(got, np.asarray(want, dtype=float), rtol=2e-4, atol=2e-4 * scale)


def test_ranef(diff_case):
    case, ref, fit, err = diff_case
    if case.ar1 or case.structure:
        pytest.skip("AR(1) cases compare the fit only")
    _agrees(case, ref, fit, err)
    def check(f):
        bad = _ranef_mismatch(f, ref)
        assert bad is None, bad

    _own_or_at_lme4_theta(case, ref, fit, check)


def test_coef(diff_case):
    """lme4's coef(): β̂ + b̂ per level, random effects without a fixed counterpart first."""
    case, ref, fit, err = diff_case
    if case.ar1 or case.structure:
        pytest.skip("AR(1) cases compare the fit only")
    _agrees(case, ref, fit, err)
    assert "error" not in ref["coef"], ref["coef"]

    def check(f):
        got = f.coef()
        assert sorted(got) == sorted(ref["coef"]), (sorted(got), sorted(ref["coef"]))
        for group, r in ref["coef"].items():
            table = got[group]
            names, want, beta, se = _r_coef(r, ref)
            if len(names) == len(r["names"]):  # lme4's column order
                assert [canon(c) for c in table.columns] == names
            else:
                assert sorted(canon(c) for c in table.columns) == sorted(names)
                table = table[[dict((canon(c), c) for c in table.columns)[k] for k in names]]
            assert [str(i) for i in table.index] == list(r["levels"])
            # the tolerances of fixef (1e-4 relative + 2e-3 SE) and ranef (2e-3 relative + 2e-3 σ)
            tol = 1e-4 * np.abs(beta) + 2e-3 * se + 2e-3 * np.abs(want - beta) + 2e-3 * f.sigma
            assert np.all(np.abs(table.to_numpy() - want) <= tol), group

    _own_or_at_lme4_theta(case, ref, fit, check)


def _r_coef(r, ref):
    """lme4's coef() table of one grouping factor as ``(names, values, β, SE)`` by canonical
    name. lme4 adds fixef to ranef where the names are equal; R names a fixed interaction's
    columns in the order of the formula's variables (``ee02:x``) and a random term's as written
    (``x:ee02``), so the same coefficient then has two columns, β in one and b in the other;
    they are added here (β + b, what lme4 gives where the names agree)."""
    values = np.asarray(r["values"], dtype=float).reshape(len(r["levels"]), len(r["names"]))
    names, cols, beta, se = [], [], [], []
    for j, name in enumerate(r["names"]):
        k = canon(name)
        if k in names:
            cols[names.index(k)] = cols[names.index(k)] + values[:, j]
        else:
            names.append(k)
            cols.append(values[:, j])
            beta.append(0.0)
            se.append(0.0)
        if name in ref["fixef"]:
            beta[names.index(k)] += ref["fixef"][name]
            se[names.index(k)] += ref["se"][name]
    return names, np.column_stack(cols), np.array(beta), np.array(se)


def test_drop1(diff_case):
    """lme4's drop1(test = "Chisq"): the droppable terms, their df, and each reduced model's
    ML deviance (from AIC), LRT and p; where hierlmm's reduced deviance is lower (lme4 short of
    its optimum), the likelihood decides."""
    case, ref, fit, err = diff_case
    if case.ar1 or case.structure:
        pytest.skip("AR(1) cases compare the fit only")
    _agrees(case, ref, fit, err)
    r = ref["drop1"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tab = fit.drop1()
    if "error" in r:
        # lme4 refits each reduced model to the rows its own variables leave (a dropped
        # covariate with missing values changes them) and refuses; hierlmm's reduced models
        # come from A, on the full model's rows, which is the comparison a drop1 means
        assert "number of rows in use has changed" in r["error"], r
        assert tab.lrt.iloc[1:].ge(0).all()
        return
    assert [canon(t) for t in tab.index] == [canon(t) for t in r["terms"]]
    k = len(r["terms"])
    assert list(tab.npar.iloc[1:]) == list(r["npar"][1:k])
    full = r["AIC"][0]
    tol = 2e-4 + 1e-7 * abs(full)
    assert close(tab.aic.iloc[0], full, 0, tol) or tab.aic.iloc[0] < full
    # lme4's full ML fit short of its optimum (seed 7's m0046: its LRT for I(x^2) is -2.4, the
    # reduced model better than the full one that contains it): its LRTs are moot
    full_short = tab.aic.iloc[0] < full - tol
    for i in range(1, k):
        mine, theirs = tab.aic.iloc[i], r["AIC"][i]
        assert mine <= theirs + 2e-4 + 1e-7 * abs(theirs), (tab.index[i], mine, theirs)
        if full_short or mine < theirs - 2e-4 - 1e-7 * abs(theirs):
            case.notes.append("better")
            continue
        assert close(tab.lrt.iloc[i], r["LRT"][i], 1e-3, 4e-4), (tab.index[i], tab.lrt.iloc[i], r["LRT"][i])
        stat_tol = float(stats.chi2.pdf(r["LRT"][i], r["npar"][i]) * (1e-3 * r["LRT"][i] + 4e-4))
        assert p_close(tab["p"].iloc[i], r["p"][i], stat_tol)


def test_r2(diff_case):
    """Nakagawa's marginal and conditional R² (random slopes per Johnson 2014): against the
    definition computed in R from lme4's own matrices (σ² mean_i |Λ'z_i|²), and against
    performance::r2_nakagawa where performance computes that definition. It does not for
    uncorrelated slopes ``(x || g)``, whose slope variance it leaves out (insight 1.x: var.random
    of y ~ x + (x || g) is the intercept's variance alone), nor for factor slopes
    ``(0 + f | g)`` (0.570 where the definition gives 0.812 on a simulated model), nor for a
    random slope whose covariate is not a column of the fixed part (``poly(x, 2) + (x | g)``:
    insight's var.random 0.0150 where σ² mean_i |Λ'z_i|² from lme4's matrices is 0.0594, seed
    90210's m0233; its var.fixed agrees with var(Xβ̂))."""
    case, ref, fit, err = diff_case
    if case.ar1 or case.structure:
        pytest.skip("AR(1) cases compare the fit only")
    _agrees(case, ref, fit, err)
    if case.weights:  # one σ² in its definition: refused, not computed with the weights ignored
        with pytest.raises(hl.HierlmmError, match="prior weights"):
            fit.r2()
        return
    refs = [ref["r2_definition"]]
    if not ("||" in case.formula or "(0 + f |" in case.formula or "poly(" in case.formula):
        refs.append(ref["r2"])
    refs = [r for r in refs if "error" not in r and None not in (r["marginal"], r["conditional"])]

    def check(f):
        got = f.r2()
        for r in refs:
            for k in ("marginal", "conditional"):
                assert close(got[k], r[k], 2e-3, 2e-4), (k, got[k], r[k])

    _own_or_at_lme4_theta(case, ref, fit, check)


def _own_or_at_lme4_theta(case, ref, fit, check):
    """``check`` hierlmm's result at its optimum; where it fails, the likelihood decides.

    In a flat valley the optimum's location is poorly determined: θ moves by 1e-3..1e-2 while
    the criterion moves by 1e-8, and statistics that depend on θ (BLUPs, Satterthwaite and
    Kenward-Roger df) move with it (m0028 of the default draw: nested, BLUPs 1.1% apart;
    seed 7's m0021: df 1.051 vs 1.055). Then hierlmm's criterion must be no worse than lme4's,
    and the same statistics computed by hierlmm at lme4's own θ must pass ``check``: the
    same function of θ, evaluated at the same point.
    """
    try:
        check(fit)
    except AssertionError:
        if not fit.deviance <= ref["crit"]:
            raise
        check(at_theta(fit, ref["theta"]))
        case.notes.append("better")


def _ranef_mismatch(fit, ref):
    """The first BLUP or conditional SD that differs from lme4's, or None."""
    re_ = ref["ranef"]
    post = fit.ranef_posterior(beta="fixed")
    got = {}
    for grp, rp in post.items():
        for lev in rp.mean.index:
            for term in rp.mean.columns:
                got[(grp, canon(term), str(lev))] = (rp.mean.loc[lev, term], rp.sd.loc[lev, term])
    scale = fit.sigma
    assert len(got) == len(re_["grp"])
    for g, t, lev, val, sd in zip(re_["grpvar"], re_["term"], re_["grp"], re_["condval"], re_["condsd"]):
        mine = got[(g, canon(t), lev)]
        if not close(mine[0], val, 2e-3, 2e-3 * scale) or not close(mine[1], sd, 2e-3, 1e-4 * scale):
            return (g, t, lev, mine, (val, sd))
    return None


# ------------------------------------------------------------------------------ inference
def _inference(case, ref, key):
    """R's table ``key``, from the well-scaled refit where the case has one.

    lmerTest zaps contrast entries below an absolute 1e-6 (Type I's Doolittle factor, Type
    III's ``zapsmall``), so with a covariate in units of 1e-7 or 1e8 it tests other
    hypotheses than it states (or gives NA). The refit with that covariate divided by its SD
    states the same hypotheses on a well-scaled X; hierlmm must match it on the original data.
    """
    if "rescaled" in ref and key in ref["rescaled"]:
        return ref["rescaled"][key]
    return ref[key]


def _transformed(case) -> pd.DataFrame:
    """The case's data as R's refit has them (fit_r.R): ``rescale`` divided by its SD,
    ``centre`` standardised."""
    d = case.data.copy()
    if case.rescale:
        d[case.rescale] = d[case.rescale] / d[case.rescale].std()
    if case.centre:
        v = d[case.centre]
        d[case.centre] = (v - v.mean()) / v.std()
    return d


_CENTRED: dict[str, object] = {}


def _centred_fit(case):
    """hierlmm's fit of the case on :func:`_transformed` data (cached per case)."""
    if case.id not in _CENTRED:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _CENTRED[case.id] = hl.LMM(case.formula, _transformed(case), weights=case.weights).fit(
                method="REML" if case.reml else "ML")
    return _CENTRED[case.id]


def _compare(case, ref, fit, check):
    """Run ``check(f, table, same_units, names)`` on hierlmm's fit ``f`` against R's tables
    (``table(key)``), on ``names`` of the coefficients (None: all).

    A case with a covariate R also fitted in other coordinates (:class:`generator.Case`'s
    ``rescale`` and ``centre``) is compared with that refit: a rescaled one on the original
    data (the same hypotheses, SEs in other units); a standardised one (a random slope's
    covariate far from 0, where lmerTest's and pbkrtest's numerical derivatives in lme4's θ
    mislead) both on the same standardised data, every statistic, and on the original data
    for the coefficients the standardisation leaves alone (:func:`conftest.untouched`).
    """
    if case.centre is None or "rescaled" not in ref:
        table = lambda key: _inference(case, ref, key)  # noqa: E731
        _own_or_at_lme4_theta(case, ref, fit, lambda f: check(f, table, "rescaled" not in ref, None))
        return
    rc = ref["rescaled"]
    table = lambda key: rc[key]  # noqa: E731
    fc = _centred_fit(case)
    # the refit itself: lme4 reached hierlmm's optimum on the standardised data, or the
    # likelihood sides with hierlmm and the statistics at R's θ decide
    assert fc.deviance <= rc["crit"] + 1e-6 * max(1.0, abs(rc["crit"]))
    if _better(fc, rc["crit"]):
        case.notes.append("better")
    else:
        _own_or_at_lme4_theta(case, rc, fc, lambda f: check(f, table, True, None))
    if fit.singular or fc.singular:
        # at a boundary the deviance's gradient is not 0, so its Hessian (Satterthwaite's and
        # Kenward-Roger's df) depends on the coordinates: lmerTest's are the standardised
        # data's θ, compared above (seed 4242's m0040: o.L's df 25.2 on the original data,
        # 17.2 on the standardised, in hierlmm as in R)
        return
    names = {canon(fit.design.fixef_names[j]) for j in untouched(fit, fc)}
    _own_or_at_lme4_theta(case, ref, fit, lambda f: check(f, table, False, names))


def test_satterthwaite(diff_case):
    case, ref, fit, err = diff_case
    if case.ar1 or case.structure:
        pytest.skip("AR(1) cases compare the fit only")
    _agrees(case, ref, fit, err)
    _compare(case, ref, fit, lambda f, table, same_units, names: _coef_table(
        f.coef_table(ddf="satterthwaite"), table("satterthwaite"), same_units, names))


def _coef_table(tab, r, same_units=True, names=None):
    """hierlmm's coefficient table against R's (on ``names`` only, when given)."""
    mine = {canon(n): row for n, row in tab.iterrows()}
    for j, name in enumerate(r["names"]):
        if names is not None and canon(name) not in names:
            continue
        row = mine[canon(name)]
        if same_units:  # the refit with a rescaled covariate has that coefficient in other units
            assert close(row.se, r["se"][j], 2e-3), (name, row.se, r["se"][j])
        assert close(row.df, r["df"][j], 2e-3), (name, row.df, r["df"][j])
        assert close(row.t, r["t"][j], 2e-3, 2e-3), (name, row.t, r["t"][j])
        assert p_close(row.p, r["p"][j], _p_tol(row.t, row.df)), (name, row.p, r["p"][j])


def _p_tol(t, df) -> float:
    """How far p moves when t moves by its tolerance (2e-3 relative + 2e-3)."""
    dt = 2e-3 * abs(t) + 2e-3
    return float(2 * stats.t.pdf(abs(t), df) * dt)


def _anova_table(tab, r, label, exact=None):
    """hierlmm's F table against lmerTest's; ``exact``: F values by term that replace
    lmerTest's (:func:`_eigen_artefacts`), its mean square and p-value following them."""
    if "error" in r:
        pytest.fail(f"lmerTest's {label} failed: {r['error']}")
    assert sorted(canon(t) for t in tab.index) == sorted(canon(t) for t in r["terms"]), (list(tab.index), r["terms"])
    mine = {canon(t): row for t, row in tab.iterrows()}
    r = {k: list(v) if isinstance(v, list) else v for k, v in r.items()}
    for j, term in enumerate(r["terms"]):
        if exact and canon(term) in exact:
            F = exact[canon(term)]
            r["MeanSq"][j] *= F / r["F"][j]
            r["F"][j] = F
            r["p"][j] = float(stats.f.sf(F, r["NumDF"][j], r["DenDF"][j]))
    for j, term in enumerate(r["terms"]):
        row = mine[canon(term)]
        q = r["NumDF"][j]
        assert row.num_df == q, (label, term)
        # the F statistic on the scale of a t: sqrt(qF) within the t tolerance (signed:
        # Kenward-Roger's scaled F is negative where its scale factor is, seed 90210's m0023)
        rt = lambda F: np.sign(F) * np.sqrt(q * abs(F))  # noqa: E731
        assert close(rt(row.F), rt(r["F"][j]), 2e-3, 2e-3), (label, term, row.F, r["F"][j])
        assert close(row.den_df, r["DenDF"][j], 2e-3, 1e-6), (label, term, row.den_df, r["DenDF"][j])
        # F's tolerance (t scale), and the mean square's from it (MeanSq = F σ²): near F = 0
        # the t-scale's absolute 2e-3 dominates (seed 7's m0039: F 2.8e-5 vs 2.9e-5)
        dF = 2 * (2e-3 * np.sqrt(q * abs(r["F"][j])) + 2e-3) * np.sqrt(q * abs(r["F"][j])) / q + 1e-12
        s2 = r["MeanSq"][j] / r["F"][j] if r["F"][j] > 0 else 0.0
        assert close(row.mean_sq, r["MeanSq"][j], 5e-3, s2 * dF), (label, term, row.mean_sq, r["MeanSq"][j])
        if r["p"][j] is None:  # no F distribution (a negative df): no p-value either
            assert np.isnan(row.p), (label, term, row.p)
            continue
        ptol = float(stats.f.pdf(r["F"][j], q, r["DenDF"][j]) * dF) if r["DenDF"][j] > 0 else 0.0
        assert p_close(row.p, r["p"][j], ptol), (label, term, row.p, r["p"][j])


def test_anova_satterthwaite(diff_case):
    case, ref, fit, err = diff_case
    if case.ar1 or case.structure:
        pytest.skip("AR(1) cases compare the fit only")
    _agrees(case, ref, fit, err)

    def check(f, table, same_units, names):
        if names is not None:  # the tables' hypotheses in other coordinates: on the same data only
            return
        from hierlmm.inference.contrasts import contrasts_type1, contrasts_type2, contrasts_type3

        own = "rescaled" not in ref  # R's β and vcov are those of the tables
        for kind, make in ((3, contrasts_type3), (2, contrasts_type2), (1, contrasts_type1)):
            exact = _eigen_artefacts(f, ref, make(f.design)) if own else {}
            _anova_table(f.anova(type=kind, ddf="satterthwaite"), table(f"anova{kind}_S"),
                         f"Type {'I' * kind} Satterthwaite", exact)
        _drop1_f(f, table("drop1_S"), "satterthwaite")

    _compare(case, ref, fit, check)


def _eigen_artefacts(fit, ref, contrasts) -> dict[str, float]:
    """lmerTest's multi-df F from R's own β̂ and vcov, as the exact quadratic form
    ``(Lβ)'(LVL')⁻¹(Lβ)/q``, for the terms where lmerTest's ``contestMD`` cannot be a reference:
    it takes ``eigen()`` of ``L V L'`` formed as a product (asymmetric in the last digits), so R
    solves a general eigenproblem, and where two eigenvalues coincide (a singular fit with
    ``poly()``: ``LVL'`` = d I) the eigenvectors it returns are not orthogonal and F is off
    (seed 31337's m0213: lmerTest 3.8947; R's own quadratic form, and lmerTest's algorithm on
    the symmetrised matrix, 3.8723; m0156: 10.560 against 9.419)."""
    names = [canon(n) for n in ref["fixef_names"]]
    order = [names.index(canon(n)) for n in fit.design.fixef_names]
    beta = np.array([ref["fixef"][n] for n in ref["fixef_names"]])[order]
    V = np.asarray(ref["vcov"], dtype=float)[np.ix_(order, order)]
    out = {}
    for term, L in contrasts.items():
        if L.shape[0] < 2:
            continue
        M = L @ V @ L.T
        d = np.linalg.eigvalsh(M)
        if np.min(np.diff(d)) < 1e-6 * d.max():
            x = L @ beta
            out[canon(term)] = float(x @ np.linalg.solve(M, x) / L.shape[0])
    return out


def _drop1_f(fit, r, ddf):
    """lmerTest's drop1 (F tests of the droppable terms); refused on a rank-deficient X."""
    if fit.design.dropped_columns:
        with pytest.raises(hl.HierlmmError, match="rank-deficient"):
            fit.drop1(test="F", ddf=ddf)
        return
    _anova_table(fit.drop1(test="F", ddf=ddf), r, f"drop1 F {ddf}")


def test_kenward_roger(diff_case):
    case, ref, fit, err = diff_case
    if not case.kr:
        pytest.skip("Kenward-Roger is compared on REML fits with n <= 350")
    _agrees(case, ref, fit, err)
    kr = _inference(case, ref, "kr")
    if "error" in kr:
        pytest.fail(f"pbkrtest failed: {kr['error']}")

    def check(f, table, same_units, names):
        _coef_table(f.coef_table(ddf="kenward-roger"), table("kr"), same_units, names)
        if names is not None:  # the tables' hypotheses in other coordinates: on the same data only
            return
        _anova_table(f.anova(type=2, ddf="kenward-roger"), table("anova2_KR"), "Type II KR")
        _drop1_f(f, table("drop1_KR"), "kenward-roger")
        _anova_table(f.anova(type=3, ddf="kenward-roger"), table("anova3_KR"), "Type III Kenward-Roger")

    _compare(case, ref, fit, check)


def test_lrt(diff_case):
    case, ref, fit, err = diff_case
    if not case.lrt_drop:
        pytest.skip("no nested pair for this case")
    _agrees(case, ref, fit, err)
    r = ref["lrt"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = hl.LMM(case.small_formula, case.data, weights=case.weights).fit(method="REML" if case.reml else "ML")
        if "error" in r:
            # lme4 refuses models fitted to different rows (missing values); so must hierlmm
            with pytest.raises(hl.HierlmmError):
                hl.anova(small, fit)
            return
        tab = hl.anova(small, fit)
    big_ml = tab.iloc[1]
    # each model's ML deviance at hierlmm's optimum is at most lme4's
    for j in range(2):
        assert tab.iloc[j]["deviance"] <= r["deviance"][j] + 1e-6 * max(1, abs(r["deviance"][j]))
    assert big_ml["df"] == r["Df"]
    assert [tab.iloc[j]["npar"] for j in range(2)] == r["npar"]
    if _lme4_short(tab, r):
        case.notes.append("better")
        return
    assert close(big_ml["chisq"], r["Chisq"], 1e-3, 2e-4), (big_ml["chisq"], r["Chisq"])
    for j in range(2):
        assert close(tab.iloc[j]["aic"], r["AIC"][j], 0, 2e-4)
        assert close(tab.iloc[j]["bic"], r["BIC"][j], 0, 2e-4)
    assert p_close(big_ml["p"], r["p"], float(stats.chi2.pdf(r["Chisq"], r["Df"]) * (1e-3 * r["Chisq"] + 2e-4)))


def _lme4_short(tab, r) -> bool:
    """lme4 stopped short on one of the two ML refits (its deviance higher than hierlmm's)."""
    return any(tab.iloc[j]["deviance"] < r["deviance"][j] - BETTER * max(1.0, abs(r["deviance"][j]))
               for j in range(2))


def test_profile(diff_case):
    case, ref, fit, err = diff_case
    if not case.profile:
        pytest.skip("profile intervals are compared on a quarter of the small cases")
    _agrees(case, ref, fit, err)
    r = ref["profile"]
    if case.centre is not None and "profile" in ref.get("rescaled", {}):
        # a random slope's covariate far from 0: lme4's profile, in its θ, is compared on the
        # standardised data, where that θ is well-conditioned (the SD of the intercept and its
        # correlation with the slope are other parameters there)
        fit, r = _centred_fit(case), ref["rescaled"]["profile"]
        if _better(fit, ref["rescaled"]["crit"]):
            case.notes.append("better")
            pytest.skip("hierlmm's likelihood is strictly higher than lme4's on the standardised data")
    if "error" in r:
        pytest.skip(f"lme4's profile failed: {r['error']}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ci = fit.confint(method="profile", progressbar=False)
    from profile_check import limit_error

    mine = {canon(n): (n, row) for n, row in ci.iterrows()}
    decided = False
    for name, lo, hi in zip(r["names"], r["lower"], r["upper"]):
        my_name, row = mine[canon(name)]
        for side, mine_v, r_v in (("lower", row.lower, lo), ("upper", row.upper, hi)):
            width = (hi - lo) if (hi is not None and lo is not None and hi > lo) else 1.0
            if r_v is not None and close(mine_v, r_v, 0, 1e-2 * width + 1e-6):
                continue
            # they disagree, or lme4 found no limit: the likelihood decides (see profile_check)
            err_mine = limit_error(fit, my_name, mine_v)
            err_r = limit_error(fit, my_name, r_v) if r_v is not None else np.inf
            assert err_mine < 0.02, (name, side, mine_v, r_v, err_mine, err_r)
            assert err_mine <= err_r, (name, side, mine_v, r_v, err_mine, err_r)
            decided = True
    if decided:
        case.notes.append("better")


def _ptukey_tail(q, k, df) -> float:
    """P(range of k standard normals / s > q), s² ~ χ²_df/df, by quadrature: the range's CDF
    P(W ≤ w) = k ∫ φ(z) (Φ(z + w) − Φ(z))^(k−1) dz, integrated over the density of s."""
    from scipy import integrate

    def cdf(w):
        return k * integrate.quad(lambda z: stats.norm.pdf(z) * (stats.norm.cdf(z + w) - stats.norm.cdf(z)) ** (k - 1),
                                  -np.inf, np.inf, epsabs=1e-12)[0]

    s_pdf = lambda s: stats.chi.pdf(s * np.sqrt(df), df) * np.sqrt(df)  # noqa: E731
    return integrate.quad(lambda s: s_pdf(s) * (1.0 - cdf(q * s)), 0, np.inf, epsabs=1e-10, limit=200)[0]


def _tukey_close(p, p_ref, t, df, k) -> bool:
    """A Tukey-adjusted p against emmeans': within what t's tolerance (2e-3 relative + 2e-3)
    moves it, plus 1e-9 absolute: R's ``ptukey`` is accurate to about 5e-10 absolute (k = 5,
    df = 93.49: 1.65211e-06 vs 1.65162e-06 at q = 8, and 6.52e-10 where a direct integration of
    the range's tail, in tests' history, gives 1.6377e-10 and scipy 1.6380e-10)."""
    if p_ref is None:
        # R's ptukey returns NaN below 2 df; the studentized range is defined for any df > 0:
        # against a direct integration of its tail (seed 20261125's m0115: df 1.60)
        assert df < 2, (t, df)
        return abs(p - _ptukey_tail(np.sqrt(2) * abs(t), k, df)) <= 1e-6
    if k <= 2:
        return p_close(p, p_ref, _p_tol(t, df))
    dt = 2e-3 * abs(t) + 2e-3
    sf = lambda x: stats.studentized_range.sf(np.sqrt(2) * x, k, df)  # noqa: E731
    tol = float(abs(sf(max(abs(t) - dt, 0.0)) - sf(abs(t) + dt)))
    return abs(p - p_ref) <= 0.01 * p_ref + tol + 1e-9


def test_emmeans(diff_case):
    """emmeans of the first factor (by the ordered factor when both are there) and pairs()
    with Tukey's adjustment, Kenward–Roger df where the case compares KR, else Satterthwaite."""
    case, ref, fit, err = diff_case
    if case.ar1 or case.structure:
        pytest.skip("AR(1) cases compare the fit only")
    _agrees(case, ref, fit, err)
    r = _inference(case, ref, "emmeans")
    if "none" in r:
        pytest.skip("no factor in the fixed part")
    if fit.design.offset is not None or fit.design.dropped_columns:
        with pytest.raises(hl.HierlmmError, match="offset|rank-deficient"):
            fit.emmeans(r["specs"], by=r.get("by"), ddf=r["ddf"])
        return
    if "error" in r:
        pytest.fail(f"emmeans failed: {r['error']}")

    # the reference grid holds a covariate at its mean: the same marginal means and contrasts
    # in any affine coordinates of it, so on the original data every row is compared
    _compare(case, ref, fit, lambda f, table, same_units, names: _emmeans(f, table("emmeans")))


def test_joint_tests(diff_case):
    """emmeans' joint_tests: an F test of every model term of the reference grid (covariates at
    their mean ± 1: in a rescaled covariate's units another hypothesis where the model is not
    linear in it, so compared on R's own coordinates only); emmeans rounds F to 3 decimals."""
    case, ref, fit, err = diff_case
    if case.ar1 or case.structure:
        pytest.skip("AR(1) cases compare the fit only")
    _agrees(case, ref, fit, err)
    r = _inference(case, ref, "emmeans")
    if "none" in r or "joint" not in r or "error" in r:
        pytest.skip("no factor in the fixed part")
    if fit.design.offset is not None or fit.design.dropped_columns:
        with pytest.raises(hl.HierlmmError, match="offset|rank-deficient"):
            fit.joint_tests(ddf=r["ddf"])
        return
    if "error" in r["joint"]:
        pytest.skip(f"emmeans' joint_tests failed: {r['joint']['error']}")

    def check(f, table, same_units, names):
        if not same_units:
            return
        j, rj = f.joint_tests(ddf=r["ddf"]), table("emmeans")["joint"]
        assert list(j["model term"]) == list(rj["terms"])
        np.testing.assert_array_equal(j["df1"], rj["df1"])
        np.testing.assert_allclose(j["df2"], rj["df2"], rtol=2e-3)
        np.testing.assert_allclose(j["F.ratio"], rj["F"], rtol=2e-3, atol=5e-4)
        for p, p_ref, F, d1, d2 in zip(j["p.value"], rj["p"], j["F.ratio"], j["df1"], j["df2"]):
            tol = float(stats.f.pdf(F, d1, d2) * (2e-3 * F + 5e-4))  # F's own tolerance, moved to p
            assert p_close(p, p_ref, tol), (p, p_ref)

    _compare(case, ref, fit, check)


def _emmeans(f, r):
    e = f.emmeans(r["specs"], by=r.get("by"), ddf=r["ddf"])
    scale = float(np.max(np.abs(r["emmean"]))) + f.sigma
    np.testing.assert_allclose(e["emmean"], r["emmean"], rtol=2e-3, atol=2e-3 * scale)
    np.testing.assert_allclose(e["SE"], r["SE"], rtol=2e-3)
    np.testing.assert_allclose(e["df"], r["df"], rtol=2e-3)
    np.testing.assert_allclose(e["lower.CL"], r["lower"], rtol=2e-3, atol=2e-3 * scale)
    pr = f.emmeans(r["specs"], by=r.get("by"), ddf=r["ddf"], pairwise=True)
    assert [canon(c) for c in pr["contrast"]] == [canon(c) for c in r["contrast"]]
    np.testing.assert_allclose(pr["SE"], r["cSE"], rtol=2e-3)
    np.testing.assert_allclose(pr["df"], r["cdf"], rtol=2e-3)
    np.testing.assert_allclose(pr["t.ratio"], r["t"], rtol=2e-3, atol=2e-3)
    k = len(e) // max(1, len(e.drop_duplicates(r["by"])) if r.get("by") else 1)
    for p, p_ref, t, df in zip(pr["p.value"], r["p"], pr["t.ratio"], pr["df"]):
        assert _tukey_close(p, p_ref, t, df, k), (p, p_ref)
