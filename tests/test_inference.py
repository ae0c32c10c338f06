"""lmerTest / pbkrtest / lme4 inference reproduced against tests/reference (from R).

Tolerances are the inference issue's: Satterthwaite df 2e-3 relative, p-values 1% relative
(for p < 1e-10, where a relative error of 1e-5 in lme4's own θ moves p by more than 1%,
log10(p) within 1%), KR SE and df 2e-3, profile intervals 1% of the interval width.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import hierlmm as hl
from conftest import REF_DIR, at_theta, load_ref

SATT = [m for m in ("sleepstudy_slope_reml", "sleepstudy_int_reml", "sleepstudy_uncorr_reml", "orthodont_ort4_reml",
                    "orthodont_ort6_reml", "orthodont_ort7_reml", "oats_splitplot_reml", "mathach_ses_reml")]


def close_p(ours, theirs):
    if theirs < 1e-10:
        return abs(np.log10(ours) / np.log10(theirs) - 1) < 0.01
    return abs(ours / theirs - 1) < 0.01


@pytest.mark.parametrize("name", SATT)
def test_satterthwaite_coefficients(fit_ref, name):
    fit, ref = fit_ref(name)
    ct = fit.coef_table()
    s = ref["satterthwaite"]
    assert list(ct.columns) == ["estimate", "se", "df", "t", "p"]
    for k in s["df"]:
        assert ct.loc[k, "df"] == pytest.approx(s["df"][k], rel=2e-3), k
        assert ct.loc[k, "t"] == pytest.approx(s["t"][k], rel=2e-3), k
        assert close_p(ct.loc[k, "p"], s["p"][k]), (k, ct.loc[k, "p"], s["p"][k])


@pytest.mark.parametrize("name", SATT)
def test_kenward_roger_coefficients(fit_ref, name):
    fit, ref = fit_ref(name)
    ct = fit.coef_table(ddf="kenward-roger")
    kr = ref["kenward_roger"]
    for k in kr["df"]:
        assert ct.loc[k, "se"] == pytest.approx(kr["se"][k], rel=2e-3), k
        assert ct.loc[k, "df"] == pytest.approx(kr["df"][k], rel=2e-3), k
        assert close_p(ct.loc[k, "p"], kr["p"][k]), k


@pytest.mark.parametrize("ddf, key", [("satterthwaite", "anova_Satterthwaite"), ("kenward-roger", "anova_KenwardRoger")])
@pytest.mark.parametrize("name", SATT)
def test_type3_anova(fit_ref, name, ddf, key):
    fit, ref = fit_ref(name)
    table = fit.anova(type=3, ddf=ddf)
    a = ref[key]
    assert list(table.columns) == ["sum_sq", "mean_sq", "num_df", "den_df", "F", "p"]
    assert list(table.index) == a["terms"]
    np.testing.assert_array_equal(table.num_df, a["NumDF"])
    np.testing.assert_allclose(table.F, a["F"], rtol=2e-3)
    np.testing.assert_allclose(table.den_df, a["DenDF"], rtol=2e-3)
    np.testing.assert_allclose(table.sum_sq, a["SumSq"], rtol=2e-3)
    np.testing.assert_allclose(table.mean_sq, a["MeanSq"], rtol=2e-3)
    for ours, theirs in zip(table.p, a["p"]):
        assert close_p(ours, theirs)


def test_orthodont_ddf_as_the_seed_shows(fit_ref):
    fit, _ = fit_ref("orthodont_ort4_reml")
    np.testing.assert_allclose(fit.anova().den_df, [79.0, 103.99, 79.0], atol=6e-3)


def test_type1_last_term_equals_type3(fit_ref):
    """A property: the sequential test of the last term adjusts it for all others."""
    fit, _ = fit_ref("orthodont_ort4_reml")
    t1, t3 = fit.anova(type=1), fit.anova(type=3)
    assert t1.loc["age:Sex", "F"] == pytest.approx(t3.loc["age:Sex", "F"], rel=1e-10)
    assert t1.loc["age:Sex", "den_df"] == pytest.approx(t3.loc["age:Sex", "den_df"], rel=1e-8)
    # and the first term's Type I test differs (it is not adjusted for Sex and age:Sex)
    assert t1.loc["age", "F"] != pytest.approx(t3.loc["age", "F"], rel=1e-3)


@pytest.mark.parametrize("name", ["orthodont_random_structure_lrt", "sleepstudy_fixed_lrt"])
def test_likelihood_ratio_tables(name):
    ref = load_ref(name)
    df = hl.datasets.load(ref["data"])
    fits = [hl.LMM(f, df).fit() for f in ref["formulas"]]
    with pytest.warns(hl.HierlmmWarning, match="refitting"):
        table = hl.anova(*fits[::-1])  # any order in, ordered by npar out
    assert list(table.columns) == ["npar", "aic", "bic", "loglik", "deviance", "chisq", "df", "p"]
    np.testing.assert_array_equal(table.npar, ref["npar"])
    np.testing.assert_allclose(table.aic, ref["AIC"], rtol=1e-6)
    np.testing.assert_allclose(table.bic, ref["BIC"], rtol=1e-6)
    np.testing.assert_allclose(table.loglik, ref["logLik"], rtol=1e-6)
    np.testing.assert_allclose(table.deviance, ref["deviance"], rtol=1e-6)
    np.testing.assert_allclose(table.chisq.iloc[1:], ref["Chisq"][1:], rtol=1e-3)
    np.testing.assert_array_equal(table.df.iloc[1:], ref["Df"][1:])
    np.testing.assert_allclose(table.p.iloc[1:], ref["p"][1:], rtol=1e-2)


def test_anova_refuses_different_data():
    df = hl.datasets.load("sleepstudy")
    a = hl.LMM("Reaction ~ Days + (1 | Subject)", df).fit()
    b = hl.LMM("Reaction ~ Days + (1 | Subject)", df.iloc[:170]).fit()
    with pytest.raises(hl.HierlmmError, match="same data.*180, 170"):
        hl.anova(a, b)


def test_anova_reml_without_refit():
    df = hl.datasets.load("sleepstudy")
    a = hl.LMM("Reaction ~ Days + (1 | Subject)", df).fit()
    b = hl.LMM("Reaction ~ Days + (Days | Subject)", df).fit()
    table = hl.anova(a, b, refit=False)  # same fixed effects: REML likelihoods allowed
    assert table.loglik.iloc[1] == pytest.approx(b.loglik)
    c = hl.LMM("Reaction ~ 1 + (Days | Subject)", df).fit()
    with pytest.raises(hl.HierlmmError, match="not comparable"):
        hl.anova(c, b, refit=False)


@pytest.mark.parametrize("name", ["sleepstudy_slope_reml", "orthodont_ort4_reml"])
def test_ranova(fit_ref, name):
    fit, ref = fit_ref(name)
    table = fit.ranova()
    r = ref["ranova"]
    assert list(table.index) == r["terms"]
    np.testing.assert_allclose(table.loglik, r["logLik"], rtol=1e-7)
    np.testing.assert_allclose(table.lrt.iloc[1:], r["LRT"][1:], rtol=1e-5)
    np.testing.assert_array_equal(table.df.iloc[1:], r["Df"][1:])
    for ours, theirs in zip(table.p.iloc[1:], r["p"][1:]):
        assert close_p(ours, theirs)
    # the mixture halves the p-value of a 1-df test and is below the naive p otherwise
    assert (table.p_mixture.iloc[1:] < table.p.iloc[1:]).all()


def test_chibar_mixture_by_simulation():
    """Under H0 (no random intercept) the χ̄² test holds its level; naive χ²(1) is conservative."""
    rng = np.random.default_rng(20261125)
    ng, per, nsim = 40, 5, 600
    g = np.repeat(np.arange(ng), per)
    x = rng.normal(size=ng * per)
    mix, naive = [], []
    from hierlmm.inference.lrt import lm_loglik

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hl.HierlmmWarning)
        for _ in range(nsim):
            df = pd.DataFrame({"y": 1 + x + rng.normal(size=ng * per), "x": x, "g": g.astype(str)})
            fit = hl.LMM("y ~ x + (1 | g)", df).fit(method="ML")
            stat = max(2 * (fit.loglik - lm_loglik(fit.design.y, fit.design.X, reml=False)), 0)
            mix.append(hl.inference.chibar_pvalue(stat, 1) < 0.05)
            naive.append(__import__("scipy").stats.chi2.sf(stat, 1) < 0.05)
    se = np.sqrt(0.05 * 0.95 / nsim)
    assert abs(np.mean(mix) - 0.05) < 4 * se
    assert np.mean(naive) < 0.05 - 2 * se


@pytest.mark.parametrize("name", [m for m in ("sleepstudy_slope_reml", "sleepstudy_int_reml", "orthodont_ort4_reml",
                                              "penicillin_crossed_reml", "pastes_nested_reml", "dyestuff_reml", "rail_reml")])
def test_profile_confint(fit_ref, name):
    fit, ref = fit_ref(name)
    ci = fit.confint(method="profile")
    cp = ref["confint_profile"]
    assert list(ci.index) == cp["names"]
    width = np.asarray(cp["upper"]) - np.asarray(cp["lower"])
    np.testing.assert_array_less(np.abs(ci.lower.to_numpy() - cp["lower"]), 0.01 * width)
    np.testing.assert_array_less(np.abs(ci.upper.to_numpy() - cp["upper"]), 0.01 * width)


@pytest.mark.parametrize("name", ["sleepstudy_slope_reml", "orthodont_ort4_reml", "dyestuff_reml"])
def test_wald_confint(fit_ref, name):
    fit, ref = fit_ref(name)
    ci = fit.confint(method="wald")
    cw = ref["confint_wald"]
    assert list(ci.index) == cw["names"]
    for n, lo, hi in zip(cw["names"], cw["lower"], cw["upper"]):
        if lo is None:
            assert np.isnan(ci.loc[n, "lower"]) and np.isnan(ci.loc[n, "upper"])
        else:
            assert ci.loc[n, "lower"] == pytest.approx(lo, abs=1e-3 * (hi - lo))
            assert ci.loc[n, "upper"] == pytest.approx(hi, abs=1e-3 * (hi - lo))


def test_bootstrap_confint_reproducible(fit_ref):
    fit, _ = fit_ref("dyestuff_reml")
    a = fit.confint(method="bootstrap", n_boot=40, random_seed=3, progressbar=False)
    b = fit.confint(method="bootstrap", n_boot=40, random_seed=3, progressbar=False, n_jobs=2)
    pd.testing.assert_frame_equal(a, b)
    assert (a.lower <= a.upper).all()
    assert a.loc["(Intercept)", "lower"] < fit.fixef.iloc[0] < a.loc["(Intercept)", "upper"]


def test_simulate_moments(fit_ref):
    """Draws have mean Xβ̂ and covariance V = ZDZ' + σ²I (checked within Monte Carlo error)."""
    fit, _ = fit_ref("dyestuff_reml")
    sims = fit.simulate(4000, random_seed=1)  # lme4's layout: one column per draw
    assert sims.shape == (fit.nobs, 4000) and list(sims.columns[:2]) == ["sim_1", "sim_2"]
    assert sims.index.equals(fit.design.data.index)
    ys = sims.to_numpy().T
    mu = fit.fitted("marginal").to_numpy()
    tau2 = fit.varcorr.vcov.iloc[0]
    var = tau2 + fit.sigma**2
    se_mean = np.sqrt(var / len(ys))
    np.testing.assert_array_less(np.abs(ys.mean(axis=0) - mu), 4.5 * se_mean)
    same = np.corrcoef(ys[:, 0], ys[:, 1])[0, 1]  # two rows of batch A
    other = np.corrcoef(ys[:, 0], ys[:, 5])[0, 1]  # batch A and batch B
    assert same == pytest.approx(tau2 / var, abs=4.5 / np.sqrt(len(ys)))
    assert other == pytest.approx(0, abs=4.5 / np.sqrt(len(ys)))


def test_summary_shows_satterthwaite(fit_ref):
    fit, _ = fit_ref("sleepstudy_slope_reml")
    text = str(fit.summary())
    assert "Pr(>|t|)" in text and "3.26e-06" in text and " df " in text


def test_asymptotic_table(fit_ref):
    fit, _ = fit_ref("sleepstudy_slope_reml")
    ct = fit.coef_table("asymptotic")
    assert list(ct.columns) == ["estimate", "se", "df", "z", "p"]
    with pytest.raises(hl.HierlmmError, match="ddf"):
        fit.coef_table("containment")


def test_orthodont_aic_bic_table_one_call_away():
    """The seed's ML comparison of four random-effects structures: one hl.anova call."""
    names = ["orthodont_a_ml", "orthodont_bx_ml", "orthodont_abx_uncorr_ml", "orthodont_abx_ml"]
    refs = [load_ref(n) for n in names]
    df = hl.datasets.load("Orthodont")
    fits = [hl.LMM(r["formula"], df).fit(method="ML") for r in refs]
    table = hl.anova(*fits, names=names)
    for n, r in zip(names, refs):
        assert table.loc[n, "aic"] == pytest.approx(r["AIC"], abs=1e-4)
        assert table.loc[n, "bic"] == pytest.approx(r["BIC"], abs=1e-4)
        assert table.loc[n, "loglik"] == pytest.approx(r["logLik"], abs=1e-4)


@pytest.mark.parametrize("formula", ["Reaction ~ Days + (Days | Subject)",
                                     "Reaction ~ Days + (0 + f | Subject)"])
def test_profile_coordinates_are_a_box_of_valid_models(formula):
    """The profile's coordinates for the other parameters (profile.Coordinates): every point
    of the box maps to SDs and correlations with ψ at its value and a positive-semidefinite
    correlation matrix, whatever ψ is (an SD, a correlation, σ), and the estimate's point
    maps back to the estimate."""
    from hierlmm.inference import sdcor as C
    from hierlmm.inference.profile import Coordinates

    d = hl.datasets.load("sleepstudy")
    d = d.assign(f=pd.Categorical((d.Days.to_numpy() // 3).astype(str)))  # 4 levels: a 4x4 term
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hl.HierlmmWarning)
        fit = hl.LMM(formula, d).fit(method="ML")
    est = C.sdcor_from_theta(fit.design, fit.solution.theta, fit.sigma)
    lo, hi = C.bounds(fit.design)
    rng = np.random.default_rng(3)
    for j in range(len(est)):
        co = Coordinates(fit.design, est, j, fit.sigma)
        np.testing.assert_allclose(co.sdcor(co.start(), est[j]), est, atol=1e-8)
        a, b, _ = co.bounds()
        psis = [est[j], lo[j], rng.uniform(-1, 1) if lo[j] == -1 else 2 * est[j] + 1]
        for psi in psis:
            for x in [co.random(rng) for _ in range(20)] + [a, np.where(np.isfinite(b), b, 3.0)]:
                v = co.sdcor(x, psi)
                assert v[j] == psi
                assert C.theta_from_sdcor(fit.design, v) is not None  # PSD correlation matrices
                # the direct θ (T = S C / σ) is a factor of the same covariances
                th, sigma = co.theta(fit.design, x, psi)
                th2, sigma2 = C.theta_from_sdcor(fit.design, v)
                assert sigma == sigma2
                for t, s in zip(fit.design.terms, fit.design.theta_slices()):
                    np.testing.assert_allclose(t.relcov(th[s]), t.relcov(th2[s]), atol=1e-10)
                assert np.all(v[lo == 0] >= 0) and np.all(np.abs(v[lo == -1]) <= 1 + 1e-12)


# ------------------------------------------------------------------- emmeans (R's emmeans)
def _emm_frame_close(got, ref, columns):
    for c_got, c_ref in columns.items():
        if isinstance(ref[c_ref][0], str):
            assert list(map(str, got[c_got])) == ref[c_ref], c_got
        else:
            np.testing.assert_allclose(got[c_got].to_numpy(dtype=float), ref[c_ref], rtol=1e-6, atol=1e-9,
                                       err_msg=c_got)


EMM = {"emmean": "emmean", "SE": "SE", "df": "df", "lower.CL": "lower.CL", "upper.CL": "upper.CL"}
PAIRS = {"contrast": "contrast", "estimate": "estimate", "SE": "SE", "df": "df", "t.ratio": "t.ratio",
         "p.value": "p.value"}


def test_emmeans_as_r():
    """hierlmm's emmeans against R's emmeans 1.8.4 (tests/reference/r/emmeans_refs.R): a
    covariate set by ``at=`` as ``by``, Satterthwaite df, averaging over an interacting factor,
    two factors, Tukey and Bonferroni pairs. At lme4's θ (its optimum of Orthodont is 1e-4 from
    hierlmm's in a flat valley, and SEs follow θ), so the comparison is of the same function."""
    ref = load_ref("emmeans")
    ortho = hl.datasets.load("Orthodont")
    ortho["Sex"] = ortho["Sex"].cat.reorder_categories(["Male", "Female"])
    r = ref["orthodont"]
    f1 = at_theta(hl.LMM("distance ~ age * Sex + (age | Subject)", ortho).fit(), r["theta"])
    by_age = f1.emmeans("Sex", by="age", at={"age": [8, 14]})
    _emm_frame_close(by_age, r["by_age"], {"Sex": "Sex", "age": "age", **EMM})
    _emm_frame_close(f1.emmeans("Sex", ddf="satterthwaite"), r["sex_satterthwaite"], {"Sex": "Sex", **EMM})
    _emm_frame_close(f1.emmeans("Sex", by="age", at={"age": [8, 14]}, pairwise=True), r["pairs_by_age"],
                     {"age": "age", **PAIRS})
    trend = {"Sex": "Sex", "age.trend": "age.trend", "SE": "SE", "df": "df", "lower.CL": "lower.CL",
             "upper.CL": "upper.CL"}
    _emm_frame_close(f1.emtrends("Sex", "age"), r["trends_age"], trend)
    _emm_frame_close(f1.emtrends("Sex", "age", ddf="satterthwaite"), r["trends_age_satterthwaite"], trend)
    # a quadratic in age: emmeans' forward difference quotient at the mean age, reproduced
    f3 = at_theta(hl.LMM("distance ~ Sex * (age + I(age^2)) + (1 | Subject)", ortho).fit(), r["theta_quadratic"])
    _emm_frame_close(f3.emtrends("Sex", "age"), r["trends_quadratic"], trend)
    oats = hl.datasets.load("Oats")
    oats["N"] = pd.Categorical(oats["nitro"].map(lambda v: f"{v:g}"))
    r = ref["oats"]
    f2 = at_theta(hl.LMM("yield ~ Variety * N + (1 | Block / Variety)", oats).fit(), r["theta"])
    _emm_frame_close(f2.emmeans("Variety"), r["variety"], {"Variety": "Variety", **EMM})
    _emm_frame_close(f2.emmeans(["Variety", "N"]), r["variety_n"], {"Variety": "Variety", "N": "N", **EMM})
    _emm_frame_close(f2.emmeans("N", pairwise=True), r["pairs_n"], PAIRS)
    _emm_frame_close(f2.emmeans("N", pairwise=True, adjust="bonferroni"), r["pairs_n_bonferroni"], PAIRS)
    for adjust in ("holm", "sidak", "fdr", "scheffe"):
        _emm_frame_close(f2.emmeans("N", pairwise=True, adjust=adjust), r[f"pairs_n_{adjust}"], PAIRS)
    _emm_frame_close(f2.emmeans("N", by="Variety", pairwise=True, adjust="holm"), r["pairs_n_by_variety_holm"],
                     {"Variety": "Variety", **PAIRS})
    # emmeans' other contrast families, with their default adjustments (dunnettx, none, fdr)
    _emm_frame_close(f2.emmeans("N", contrast="trt.vs.ctrl"), r["trt_vs_ctrl"], PAIRS)
    _emm_frame_close(f2.emmeans("N", contrast="poly"), r["poly"], PAIRS)
    _emm_frame_close(f2.emmeans("N", contrast="eff"), r["eff"], PAIRS)
    _emm_frame_close(f2.emmeans("N", contrast="consec", adjust="holm"), r["consec_holm"], PAIRS)
    _emm_frame_close(f2.emmeans("N", by="Variety", contrast="trt.vs.ctrl"), r["trt_vs_ctrl_by_variety"],
                     {"Variety": "Variety", **PAIRS})
    # Scheffé's rank of k effects is k − 1 (they sum to 0); emmeans counts k (its rank is that of
    # zapsmall()'d linear functions, whose 1/12 and 1/6 rounded to 7 digits no longer sum to 0:
    # "scheffe method with rank 3" for 3 varieties): all else as emmeans, p with rank 2
    eff = f2.emmeans("Variety", contrast="eff", adjust="scheffe")
    _emm_frame_close(eff, r["eff_scheffe"], {k: v for k, v in PAIRS.items() if k != "p.value"})
    t, df = eff["t.ratio"].to_numpy(), eff["df"].to_numpy()
    np.testing.assert_allclose(eff["p.value"], stats.f.sf(t**2 / 2, 2, df), rtol=1e-12)
    np.testing.assert_allclose(r["eff_scheffe"]["p.value"], stats.f.sf(t**2 / 3, 3, df), rtol=1e-6)


JM = load_ref("joint_mvt")  # tests/reference/r/joint_mvt.R


@pytest.fixture(scope="module")
def oats_n():
    oats = hl.datasets.load("Oats")
    oats["N"] = pd.Categorical(oats.nitro.map(lambda v: f"{v:g}"))
    return oats


@pytest.mark.parametrize("key", ["consec_n", "pairs_n", "consec_variety_by_n"])
def test_mvt_adjustment_is_the_multivariate_t(oats_n, key):
    """adjust="mvt" (emmeans' default for consec): 1 − P(max|T_j| < |t_i|) under the
    multivariate t of the contrasts' correlation, against mvtnorm::pmvt run to 1e-7 ("p_exact";
    emmeans' own call stops at mvtnorm's default error 1e-3). Pairwise differences of 4 means
    have a singular correlation (rank 3)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = hl.LMM("yield ~ Variety * N + (1 | Block / Variety)", oats_n).fit()
    r = JM[key]
    specs = ["Variety", "N"] if key == "consec_variety_by_n" else "N"  # that one: 11 contrasts of 12 cells
    tab = fit.emmeans(specs, contrast="pairwise" if key == "pairs_n" else "consec", adjust="mvt")
    assert list(tab.contrast) == r["contrast"]
    np.testing.assert_allclose(tab["t.ratio"], r["t.ratio"], rtol=1e-5)
    # hierlmm's integration error is below 2e-5 here (its standard error: 1e-5 in 11 dimensions,
    # less in 3 or 6); mvtnorm's own is reported beside its value
    err = 4 * (2e-5 + np.asarray(r["p_exact_error"]))
    assert np.all(np.abs(tab["p.value"].to_numpy() - r["p_exact"]) <= err), (tab["p.value"].tolist(), r["p_exact"])
    assert "mvt method for" in "\n".join(tab.notes)


def test_multivariate_t_box_probability_is_tukeys_for_pairs():
    """For pairwise differences of k independent equal-variance means, P(max|T_j| ≤ a) is the
    studentized range's P(Q ≤ a√2) (exact: scipy's studentized_range); singular correlation
    (rank k − 1) handled as Genz–Bretz do. Within 4 of the estimate's own standard errors."""
    import itertools

    from hierlmm.inference.emmeans import box_probability

    for k in (3, 4, 6):
        E = np.eye(k)
        P = np.array([E[a] - E[b] for a, b in itertools.combinations(range(k), 2)])
        R = P @ P.T / 2
        for a, nu in ((5.5, 45), (3.0, 45), (2.5, 0)):
            est, se = box_probability(np.full(len(P), a), R, nu)
            exact = stats.studentized_range.cdf(a * np.sqrt(2), k, nu if nu else np.inf)
            assert abs(est - exact) <= 4 * se + 1e-9, (k, a, nu, est, exact, se)
            assert se < 2e-5


@pytest.mark.parametrize("key, ddf, by, formula", [
    ("joint_orthodont", "kenward-roger", None, "distance ~ age * Sex + (1 | Subject)"),
    ("joint_orthodont_satterthwaite", "satterthwaite", None, "distance ~ age * Sex + (1 | Subject)"),
    ("joint_oats", "kenward-roger", None, "yield ~ Variety * N + (1 | Block / Variety)"),
    ("joint_oats_by", "kenward-roger", "Variety", "yield ~ Variety * N + (1 | Block / Variety)"),
    ("joint_oats_additive", "kenward-roger", None, "yield ~ Variety + nitro + (1 | Block / Variety)"),
])
def test_joint_tests_as_emmeans(oats_n, key, ddf, by, formula):
    """emmeans' joint_tests: one F test per model term of the reference grid (covariates at
    mean ± 1), df2 Kenward–Roger's or Satterthwaite's; emmeans prints F rounded to 3 decimals."""
    data = hl.datasets.load("Orthodont") if "distance" in formula else oats_n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = hl.LMM(formula, data).fit()
    tab = fit.joint_tests(by=by, ddf=ddf)
    r = JM[key]
    assert list(tab["model term"]) == r["model term"]
    if by:
        assert list(tab[by]) == r[by]
    np.testing.assert_array_equal(tab.df1, r["df1"])
    np.testing.assert_allclose(tab.df2, r["df2"], rtol=1e-4)
    np.testing.assert_allclose(tab["F.ratio"], r["F.ratio"], atol=5e-4 + 1e-12)
    np.testing.assert_allclose(tab["p.value"], r["p.value"], rtol=1e-4)


def test_emmeans_refuses_what_it_cannot_do():
    d = hl.datasets.load("sleepstudy")
    fit = hl.LMM("Reaction ~ Days + (1 | Subject)", d).fit()
    with pytest.raises(hl.HierlmmError, match="'Sex' is not a variable"):
        fit.emmeans("Sex")
    with pytest.raises(hl.HierlmmError, match="at= names"):
        fit.emmeans("Days", at={"nope": 1})
    off = hl.LMM("Reaction ~ Days + offset(Days) + (1 | Subject)", d).fit()
    with pytest.raises(hl.HierlmmError, match="offset"):
        off.emmeans("Days")
    with pytest.raises(hl.HierlmmError, match="emtrends.*offset"):  # emtrends refuses what emmeans refuses
        off.emtrends((), "Days")
    ml = hl.LMM("Reaction ~ Days + (1 | Subject)", d).fit(method="ML")
    with pytest.raises(hl.HierlmmError, match="REML"):
        ml.emmeans("Days")


def test_bootstrap_replicates_are_refits():
    """``bootstrap()`` (lme4's bootMer): replicate i is the refit of the i-th simulated response
    (``simulate`` with the same seed), for a user statistic and for the default one, whose
    fast path (no result objects) gives the same numbers; ``t0`` is the fit's own value."""
    fit = hl.LMM("Reaction ~ Days + (Days | Subject)", hl.datasets.load("sleepstudy")).fit()
    stat = lambda f: {"beta_days": f.fixef["Days"], "sigma": f.sigma, "se_days": f.se["Days"]}  # noqa: E731
    boot = fit.bootstrap(4, statistic=stat, random_seed=3, progressbar=False)
    assert list(boot.columns) == ["beta_days", "sigma", "se_days"] and len(boot) == 4
    assert boot.attrs["t0"]["beta_days"] == fit.fixef["Days"]
    ys = fit.simulate(4, random_seed=3)
    for i in range(4):
        again = fit.refit(ys[f"sim_{i + 1}"].to_numpy())
        np.testing.assert_allclose(boot.iloc[i], list(stat(again).values()), rtol=1e-5)
    default = fit.bootstrap(4, random_seed=3, progressbar=False)
    assert list(default.columns) == list(fit.confint(method="wald").index)
    np.testing.assert_allclose(default["sigma"], boot["sigma"], rtol=1e-6)
    np.testing.assert_allclose(default["Days"], boot["beta_days"], rtol=1e-6)
    with pytest.raises(hl.HierlmmError, match="returned 1 values where the fit gave 2"):
        fit.bootstrap(2, statistic=lambda f: f.fixef.to_numpy() if f is fit else 1.0, random_seed=1,
                      progressbar=False)


def _csv_reference_fit(name):
    """R's results ``name``.json and hierlmm's REML fit of its formula to ``name``.csv (``o``
    an ordered factor, as the R script reads it)."""
    ref = load_ref(name)
    d = pd.read_csv(REF_DIR / f"{name}.csv")
    d["o"] = pd.Categorical(d["o"], ordered=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ref, hl.LMM(ref["formula"], d).fit(method="REML")


def test_type3_factor_beside_its_interaction_with_a_covariate_aliased():
    """Type III on a design with an aliased column (x:o^4): lmerTest does not count a factor as
    contained in its interaction with a covariate (``o`` in ``x:o``), so o's hypothesis is not
    made orthogonal to x:o's columns; with a full-rank X that changes nothing, with an aliased
    one it changes the F (tests/reference/r/type3_aliased.R; hierlmm gave 12.19 where lmerTest
    gives 10.94 for o)."""
    ref, fit = _csv_reference_fit("type3_aliased")
    assert fit.design.dropped_columns == [ref["dropped"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ddf, key in (("satterthwaite", "satterthwaite"), ("kenward-roger", "kenward_roger")):
            tab = fit.anova(type=3, ddf=ddf)
            r = ref[key]
            for term, F, den, q in zip(r["terms"], r["F"], r["DenDF"], r["NumDF"]):
                assert tab.loc[term, "num_df"] == q, (ddf, term)
                assert tab.loc[term, "F"] == pytest.approx(F, rel=2e-3, abs=1e-6), (ddf, term)
                assert tab.loc[term, "den_df"] == pytest.approx(den, rel=2e-3), (ddf, term)


def test_drop1_when_the_full_fit_is_a_local_optimum():
    """22 rows, 11 fixed effects, (1 | g/h), ML: the fit (lme4's too) stops at a local optimum
    whose deviance is higher than the model's without log(w) (lme4's drop1 prints LRT -29.9).
    The full model nests each reduced one, so drop1 refits it from the better θ, says so, and
    every LRT is then a nested comparison: each reduced deviance at least the full one, which is
    what the full model's own fit from the θ it names reaches (seed 90210's m0153)."""
    d = pd.read_csv(REF_DIR / "drop1_local_optimum.csv", keep_default_na=False, na_values=[""])
    formula = "y ~ o + log(w) + z + x + f + x:f + (1 | g/h)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hl.SingularFitWarning)
        warnings.simplefilter("ignore", hl.ScaleWarning)
        model = hl.LMM(formula, d, weights="pw")
        fit = model.fit(method="ML")
        with pytest.warns(hl.ConvergenceWarning, match="local optimum") as rec:
            tab = fit.drop1()
    k_full = fit.design.p + fit.design.n_theta + 1
    full = tab.aic.iloc[0] - 2 * k_full
    assert full < fit.deviance - 1.0
    reduced = tab.aic.iloc[1:] - 2 * (k_full - tab.npar.iloc[1:])
    assert (reduced >= full - 1e-6).all()
    np.testing.assert_allclose(tab.lrt.iloc[1:], reduced - full, atol=1e-9)
    theta0 = [float(v) for v in str(rec[0].message).split("theta0=[")[1].split("]")[0].split(",")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = model.fit(method="ML", theta0=theta0)
    assert again.deviance == pytest.approx(full, abs=1e-4)


def test_kenward_roger_denominator_df_not_positive_warns():
    """pbkrtest's numbers where Kenward-Roger's denominator df come out negative (28 rows,
    (1 + x | g) + (1 | h)): hierlmm reproduces them (tests/reference/r/kr_negative_df.R), gives
    no p-value there, as pbkrtest, and says by name that the approximation broke down."""
    ref, fit = _csv_reference_fit("kr_negative_df")
    with pytest.warns(hl.HierlmmWarning, match=r"breaks down for x:o \(-0\.60"):
        tab = fit.anova(type=2, ddf="kenward-roger")
    for term, F, den, p in zip(ref["terms"], ref["F"], ref["DenDF"], ref["p"]):
        assert tab.loc[term, "F"] == pytest.approx(F, rel=2e-3), term
        assert tab.loc[term, "den_df"] == pytest.approx(den, rel=2e-3), term
        if p is None:
            assert np.isnan(tab.loc[term, "p"]), term
        else:
            assert tab.loc[term, "p"] == pytest.approx(p, rel=1e-2), term


def test_profile_limit_beyond_a_point_where_the_profile_cannot_be_evaluated():
    """38 rows, ``(x | g)``, ML, singular (seed 4242's m0193): going down from σ̂ = 14.56, σ's
    profile dips (its increase 0.78 at 12, 0.008 at 8) and cannot be evaluated at the first
    far steps; the search used to give NaN there (lme4 gives 11.28, where the increase is 0.53).
    With shorter steps it finds the limit: at it, the ML deviance minimised over every other
    parameter by brute force (tests/differential/profile_check.py) is χ²₁(0.95) above the
    minimum."""
    from profile_check import CUT, profile_increase

    d = pd.read_csv(REF_DIR / "profile_sigma_nonmonotone.csv")
    d["o"] = pd.Categorical(d["o"], ordered=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = hl.LMM("y ~ z + x + o + x:o + (x | g)", d).fit(method="ML")
        ci = fit.confint(method="profile", parm=["sigma"], progressbar=False)
    lower = ci.loc["sigma", "lower"]
    assert np.isfinite(lower) and lower < fit.sigma
    assert profile_increase(fit, "sigma", lower, starts=4) == pytest.approx(CUT, abs=0.02)


def test_emmeans_notes_as_emmeans_prints_them():
    """The notes below emmeans' tables (Oats, R's emmeans 1.8.4.1 prints the same lines): the
    factors averaged over, the warning where they interact with the specs, the df method, the
    level, and the adjustment with its family."""
    oats = hl.datasets.load("Oats")
    oats["N"] = pd.Categorical(oats["nitro"].map(lambda v: f"{v:g}"))
    fit = hl.LMM("yield ~ Variety * N + (1 | Block / Variety)", oats).fit()
    assert fit.emmeans("Variety").notes == [
        "NOTE: Results may be misleading due to involvement in interactions",
        "Results are averaged over the levels of: N", "Degrees-of-freedom method: kenward-roger",
        "Confidence level used: 0.95"]
    assert fit.emmeans("N", pairwise=True, adjust="holm").notes[-1] == "P value adjustment: holm method for 6 tests"
    assert fit.emmeans("N", pairwise=True).notes[-1] == "P value adjustment: tukey method for comparing a family of 4 estimates"
    additive = hl.LMM("yield ~ Variety + N + (1 | Block / Variety)", oats).fit()
    assert additive.emmeans("Variety").notes[0] == "Results are averaged over the levels of: N"
    assert "Results are averaged over the levels of: N" in str(fit.emmeans("Variety"))
