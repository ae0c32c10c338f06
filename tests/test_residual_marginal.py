"""Residual correlation (nlme's lme with correlation=) and the marginal formulation (nlme's gls).

References from nlme 3.1-162 in tests/reference. Tolerances of the issue: logLik within 1e-3,
fixed effects within 1e-3 of their SE, σ, random-effect SD and Phi within 1e-3 relative.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import hierlmm as hl
from conftest import load_ref

OVARY = "follicles ~ np.sin(2*np.pi*Time) + np.cos(2*np.pi*Time) + (1 | Mare)"
NLME_NAMES = {"np.sin(2 * np.pi * Time)": "sin(2 * pi * Time)", "np.cos(2 * np.pi * Time)": "cos(2 * pi * Time)"}


def _check_nlme(fit, ref):
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-3)
    assert fit.aic == pytest.approx(ref["AIC"], abs=2e-3)
    est = fit.fixef.rename(index=lambda n: NLME_NAMES.get(n, n))
    se = fit.se.rename(index=lambda n: NLME_NAMES.get(n, n))
    for k, v in ref["fixef"].items():
        assert abs(est[k] - v) < 1e-3 * ref["se"][k], k
        assert se[k] == pytest.approx(ref["se"][k], rel=2e-3), k
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-3)
    (name, sd), = ref["random_sd"].items()
    assert fit.varcorr.sdcor.iloc[0] == pytest.approx(sd, rel=1e-3)


def test_ovary_iid_matches_nlme():
    fit = hl.LMM(OVARY, hl.datasets.load("Ovary")).fit()
    _check_nlme(fit, load_ref("ovary_iid_reml"))


def test_ovary_ar1_matches_nlme():
    ref = load_ref("ovary_ar1_reml")
    fit = hl.LMM(OVARY, hl.datasets.load("Ovary"), residual=hl.AR1()).fit()
    _check_nlme(fit, ref)
    assert fit.residual_params["phi"] == pytest.approx(ref["corStruct"]["Phi"], rel=1e-3)
    assert fit.df_model == 6
    assert "AR(1) within Mare, phi = 0.607" in str(fit.summary())


def test_orthodont_exponential_matches_nlme():
    """nlme's range (0.112) is not identified: with ages 2 years apart exp(-2/range) < 1e-7,
    so any small range gives the same likelihood. The likelihood and everything else agree,
    and both ranges give a negligible correlation."""
    ref = load_ref("orthodont_exp_reml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hl.ConvergenceWarning)  # the flat direction of range
        fit = hl.LMM("distance ~ age * Sex + (1 | Subject)", hl.datasets.load("Orthodont"),
                     residual=hl.Exponential(time="age")).fit()
    _check_nlme(fit, ref)
    assert np.exp(-2 / fit.residual_params["range"]) < 1e-4
    assert np.exp(-2 / ref["corStruct"]["range"]) < 1e-4


@pytest.mark.parametrize("name, data", [("dyestuff2_marginal_cs_reml", "Dyestuff2"), ("dyestuff_marginal_cs_reml", "Dyestuff")])
def test_marginal_formulation_matches_gls(name, data):
    ref = load_ref(name)
    fit = hl.LMM("Yield ~ 1 + (1 | Batch)", hl.datasets.load(data), formulation="marginal").fit()
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-4)
    vc = fit.varcorr
    assert vc.vcov.iloc[0] == pytest.approx(ref["between_variance"], rel=1e-4, abs=1e-4)
    assert vc.vcov.iloc[1] == pytest.approx(ref["within_variance"], rel=1e-4)
    assert fit.se.iloc[0] == pytest.approx(ref["se"]["(Intercept)"], rel=1e-4)
    hier = hl.LMM("Yield ~ 1 + (1 | Batch)", hl.datasets.load(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hl.SingularFitWarning)
        h = hier.fit()
    if ref["between_variance"] < 0:
        assert np.isnan(vc.sdcor.iloc[0])  # a negative variance has no SD
        assert fit.loglik > h.loglik + 0.1  # the marginal model fits better than any hierarchical one
        assert "marginal formulation" in str(fit.summary())
        with pytest.raises(hl.HierlmmError, match="marginal formulation"):
            fit.ranef()
    else:
        assert fit.loglik == pytest.approx(h.loglik, abs=1e-6)  # the same fit on Dyestuff


def test_ar1_with_phi_fixed_at_zero_is_the_iid_fit():
    """The two engines agree: the per-group engine at φ = 0 equals the core's fit."""
    from hierlmm.grouped import GroupedDeviance

    for data, formula in [("Ovary", OVARY), ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
                          ("Orthodont", "distance ~ age * Sex + (age | Subject)")]:
        model = hl.LMM(formula, hl.datasets.load(data))
        for method in ("REML", "ML"):
            fit = model.fit(method=method)
            grouped = GroupedDeviance(model.design, reml=method == "REML", residual=hl.AR1())
            at_zero = np.append(fit.solution.theta, 0.0)  # φ = tanh(0) = 0
            assert grouped(at_zero) == pytest.approx(fit.deviance, rel=1e-9)
            sol = grouped.solve(at_zero)
            np.testing.assert_allclose(sol.beta, fit.fixef, rtol=1e-8)
            for a, b in zip(sol.b, fit.solution.b):
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8 * fit.sigma)


def test_downstream_works_for_ar1_fits():
    fit = hl.LMM(OVARY, hl.datasets.load("Ovary"), residual=hl.AR1()).fit()
    ct = fit.coef_table()
    assert (ct.df > 0).all() and list(ct.columns) == ["estimate", "se", "df", "t", "p"]
    assert list(fit.anova().index) == ["np.sin(2 * np.pi * Time)", "np.cos(2 * np.pi * Time)"]
    post = fit.ranef_posterior("integrated")["Mare"]
    assert (post.sd.to_numpy() > fit.ranef_posterior("fixed")["Mare"].sd.to_numpy()).all()
    np.testing.assert_allclose(fit.fitted() + fit.residuals(), fit.design.y)
    np.testing.assert_allclose(fit.predict(hl.datasets.load("Ovary")), fit.fitted(), rtol=1e-10)
    iid = hl.LMM(OVARY, hl.datasets.load("Ovary")).fit()
    table = hl.anova(iid, fit, refit=False)
    assert table.chisq.iloc[1] == pytest.approx(2 * (fit.loglik - iid.loglik))
    with pytest.raises(hl.HierlmmError, match="Kenward-Roger"):
        fit.coef_table("kenward-roger")


def test_ar1_posterior_of_b_matches_dense_formula():
    fit = hl.LMM(OVARY, hl.datasets.load("Ovary"), residual=hl.AR1()).fit()
    level = "3"
    V = fit.marginal_cov(level).to_numpy()
    rows = np.flatnonzero(fit.design.terms[0].codes == fit.design.terms[0].levels.index(level))
    tau2 = fit.varcorr.vcov.iloc[0]
    z = np.ones(len(rows))
    r = fit.design.y[rows] - fit.design.X[rows] @ fit.fixef.to_numpy()
    post = fit.ranef_posterior("fixed")["Mare"]
    assert post.mean.loc[level].iloc[0] == pytest.approx(tau2 * z @ np.linalg.solve(V, r), rel=1e-8)
    assert post.cov[fit.design.terms[0].levels.index(level)][0, 0] == pytest.approx(
        tau2 - tau2**2 * z @ np.linalg.solve(V, z), rel=1e-8)


def test_marginal_cov_of_iid_fit():
    fit = hl.LMM("Reaction ~ Days + (Days | Subject)", hl.datasets.load("sleepstudy")).fit()
    V = fit.marginal_cov("308")
    D = fit.covariance_matrices()["Subject"].to_numpy()
    days = np.arange(10.0)
    Z = np.column_stack([np.ones(10), days])
    np.testing.assert_allclose(V.to_numpy(), Z @ D @ Z.T + fit.sigma**2 * np.eye(10), rtol=1e-12)
    C = fit.marginal_corr("308")
    np.testing.assert_allclose(np.diag(C), 1.0)
    assert list(V.index) == list(fit.design.data.index[:10])
    with pytest.raises(hl.DataError, match="'999' is not a level of 'Subject'"):
        fit.marginal_cov("999")


def test_bad_time_columns():
    df = hl.datasets.load("Orthodont")
    df2 = df.copy()
    df2.loc[1, "age"] = 8  # repeated time in subject M01
    with pytest.raises(hl.DataError, match=r"repeated times \(8\)"):
        hl.LMM("distance ~ age + (1 | Subject)", df2, residual=hl.Exponential(time="age")).fit()
    with pytest.raises(hl.DataError, match="'when'"):
        hl.LMM("distance ~ age + (1 | Subject)", df, residual=hl.Exponential(time="when")).fit()
    shuffled = df.sample(frac=1, random_state=1)
    with pytest.warns(hl.HierlmmWarning, match="not contiguous"):
        hl.LMM("distance ~ age + (1 | Subject)", shuffled, residual=hl.AR1()).fit()
    irregular = df.copy()
    irregular["t"] = irregular.age.astype(float) + np.where(irregular.age == 14, 3.0, 0.0)
    with pytest.warns(hl.HierlmmWarning, match="irregularly spaced"):
        hl.LMM("distance ~ age + (1 | Subject)", irregular, residual=hl.AR1(order="t")).fit()
    with pytest.raises(hl.HierlmmError, match="correlation structure"):
        hl.LMM("distance ~ age + (1 | Subject)", df, residual="ar1")


def test_describe():
    model = hl.LMM("Reaction ~ Days + (Days | Subject)", hl.datasets.load("sleepstudy"))
    text = model.describe()
    assert "Reaction_ij | b ~ N(β₀ + β₁ Days_ij + b_i0 + b_i1 Days_ij, σ²)" in text
    assert "2 x 2 unstructured" in text and "18 levels of Subject" in text
    assert "V_i = Z_i D Z_i' + σ² I" in text
    assert model._repr_latex_().startswith("$$") and "```" in model._repr_markdown_()
    ar = hl.LMM(OVARY, hl.datasets.load("Ovary"), residual=hl.AR1())
    assert "σ² R_i" in ar.describe()
    marg = hl.LMM("Yield ~ 1 + (1 | Batch)", hl.datasets.load("Dyestuff2"), formulation="marginal")
    assert "indefinite" in marg.describe()


@pytest.mark.parametrize("structure", [hl.GaussianCorr(time="age"), hl.CompoundSymmetry(), hl.Exponential(time="age")])
def test_other_structures_nest_the_iid_model(structure):
    """Each structure contains the iid residual (range → 0, ρ = 0), so its maximised REML
    likelihood cannot be below the iid fit's; at the iid point it equals it exactly."""
    from hierlmm.grouped import GroupedDeviance

    df = hl.datasets.load("Orthodont")
    formula = "distance ~ age * Sex + (0 + age | Subject)"
    iid = hl.LMM(formula, df).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hl.ConvergenceWarning)
        fit = hl.LMM(formula, df, residual=structure).fit()
    assert fit.loglik >= iid.loglik - 1e-6
    dev = GroupedDeviance(hl.LMM(formula, df, residual=structure).design, residual=structure)
    at_iid = np.append(iid.solution.theta, -20.0 if structure.param == "range" else 0.0)
    assert dev(at_iid) == pytest.approx(iid.deviance, rel=1e-9)


def _public_calls(fit):
    """Every public member of a fit, called with typical arguments where it needs some."""
    level = fit.design.terms[0].levels[0]
    with_args = {
        "marginal_cov": [(level,)], "marginal_corr": [(level,)],
        "deviance_at": [(fit.varpar,)], "vcov_at": [(fit.varpar,)],
        "coef_table": [(), ("kenward-roger",)],
        "anova": [(), (3, "kenward-roger")],
        "confint": [("wald",), ("profile",), ("bootstrap",)],
        "fitted": [("conditional",), ("marginal",)],
        "residuals": [("conditional",), ("marginal",)],
        "predict": [(None, "conditional"), (None, "marginal")],
        "simulate": [(3,)],
        "refit": [(fit.design.y * 2,)],
        "update": [(". ~ . - Days",), (None, None, "ML")],
        "emmeans": [("Days",), ("Days", None, None, "satterthwaite")],
        "emtrends": [((), "Days"), ((), "Days", None, None, "satterthwaite")],
        "bootstrap": [(3,)],
        "drop1": [(), ("F",)],
    }
    for name in sorted(dir(fit)):
        if name.startswith("_") or name in ("model", "deviance_function"):
            continue
        member = getattr(type(fit), name, None)
        if isinstance(member, property):
            yield name, lambda name=name: getattr(fit, name)
            continue
        value = getattr(fit, name)
        if not callable(value):
            continue
        for args in with_args.get(name, [()]):
            yield f"{name}{args}", lambda value=value, args=args: value(*args)


@pytest.mark.parametrize("kind", ["ar1", "marginal"])
def test_every_public_member_works_or_names_the_feature(kind):
    """Issue 11: on an AR(1) fit and a marginal fit, every public member either works or raises
    a HierlmmError naming the model feature it cannot handle (never a silent answer for the
    iid hierarchical model, never a stray exception)."""
    d = hl.datasets.load("sleepstudy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hl.HierlmmWarning)
        if kind == "ar1":
            fit = hl.LMM("Reaction ~ Days + (1 | Subject)", d, residual=hl.AR1()).fit()
            feature = "residual=AR1"
        else:
            fit = hl.LMM("Reaction ~ Days + (1 | Subject)", d, formulation="marginal").fit()
            feature = "formulation='marginal'"
    refused = []
    for name, call in _public_calls(fit):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", hl.HierlmmWarning)
            try:
                call()
            except hl.HierlmmError as exc:
                assert feature in str(exc), (name, str(exc))
                refused.append(name.split("(")[0])
    for model_method in ("sample", "posterior_mode", "posterior_grid"):
        with pytest.raises(hl.HierlmmError, match=feature.replace("(", r"\(")):
            getattr(fit.model, model_method)()
    # what each kind cannot do, and nothing else
    expected = {"ar1": {"confint", "coef_table", "anova", "ranova", "r2", "refit", "drop1", "bootstrap", "emmeans",
                        "emtrends", "joint_tests", "hatvalues", "augment"},
                "marginal": {"confint", "coef_table", "anova", "ranova", "fitted", "residuals", "predict",
                             "ranef", "ranef_posterior", "icc", "coef", "r2", "refit", "drop1", "bootstrap",
                             "emmeans", "emtrends", "joint_tests", "hatvalues", "augment"}}[kind]
    assert set(refused) <= expected, set(refused) - expected
