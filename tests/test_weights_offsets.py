"""Prior weights and offsets: against lme4/lmerTest (tests/reference/r/weights_refs.R) and
against the whitened model written out as an ordinary formula (the likelihood's definition)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import hierlmm as hl
from conftest import at_theta, load_ref


@pytest.fixture(scope="module")
def ref():
    return load_ref("weights_offsets")


@pytest.fixture(scope="module")
def data(ref):
    d = hl.datasets.load("sleepstudy")
    d["w"] = ref["data"]["w"]
    d["o"] = ref["data"]["o"]
    return d


def _check_fit(fit, r):
    """The criterion to 1e-9; the rest at hierlmm's optimum, or, where lme4 stopped short in
    the flat valley (weighted sleepstudy: θ 1.7e-4 apart, hierlmm's criterion lower by 3.5e-10
    relative, σ 2e-5 apart), at lme4's θ: the same functions of θ at the same point."""
    assert fit.deviance == pytest.approx(r["crit"], rel=1e-9)
    np.testing.assert_allclose(fit.theta, r["theta"], rtol=2e-4, atol=2e-5)
    try:
        _check_at(fit, r)
    except AssertionError:
        assert fit.deviance <= r["crit"]
        _check_at(at_theta(fit, r["theta"]), r)


def _check_at(fit, r, rel=1e-5):
    assert fit.loglik == pytest.approx(r["logLik"], rel=1e-9)
    assert fit.sigma == pytest.approx(r["sigma"], rel=rel)
    np.testing.assert_allclose(fit.fixef, r["fixef"], rtol=rel)
    tab = fit.coef_table()
    s = r["satterthwaite"]
    np.testing.assert_allclose(tab["se"], s["se"], rtol=rel)
    np.testing.assert_allclose(tab["df"], s["df"], rtol=1e-3)
    np.testing.assert_allclose(fit.fitted(), r["fitted"], rtol=rel)
    np.testing.assert_allclose(fit.residuals(scaled=True), r["pearson_scaled"], rtol=rel, atol=1e-6)
    post = fit.ranef_posterior()["Subject"]
    np.testing.assert_allclose(post.mean.to_numpy().T.ravel(), r["condval"], rtol=rel, atol=1e-6)
    np.testing.assert_allclose(post.sd.to_numpy().T.ravel(), r["condsd"], rtol=rel)


def test_weights_as_lme4(data, ref):
    fit = hl.LMM("Reaction ~ Days + (Days | Subject)", data, weights="w").fit()
    _check_fit(fit, ref["weighted_reml"])
    # the same weights given as an array
    again = hl.LMM("Reaction ~ Days + (Days | Subject)", data, weights=data["w"].to_numpy()).fit()
    assert again.deviance == fit.deviance


def test_weights_and_offset_ml_as_lme4(data, ref):
    r = ref["weighted_offset_ml"]
    fit = hl.LMM("Reaction ~ Days + offset(o) + (Days | Subject)", data, weights="w").fit(method="ML")
    _check_fit(fit, r)
    small = fit.update(". ~ . - Days")
    assert "offset(o)" in small.model.formula
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tab = hl.anova(small, fit)
    assert tab["chisq"].iloc[1] == pytest.approx(r["anova_lrt_days"]["Chisq"], rel=1e-5)
    # offset= as an argument is the formula's offset()
    arg = hl.LMM("Reaction ~ Days + (Days | Subject)", data, weights="w", offset="o").fit(method="ML")
    assert arg.deviance == pytest.approx(fit.deviance, rel=1e-12)


def test_offset_predictions_as_lme4(data, ref):
    r = ref["offset_reml"]
    fit = hl.LMM("Reaction ~ Days + offset(2 * o) + (1 | Subject)", data).fit()
    _check_fit(fit, r)
    new = pd.DataFrame(r["newdata"])
    np.testing.assert_allclose(fit.predict(new), r["predict"], rtol=1e-6)
    np.testing.assert_allclose(fit.predict(new, kind="marginal"), r["predict_population"], rtol=1e-6)


def test_weighted_model_is_the_whitened_model(data, ref):
    """``W^½y = W^½Xβ + W^½Zb + ε``: the weighted fit is the ordinary fit of the whitened
    columns, written as a formula (``(0 + sw + swd | Subject)``), with ``−2ℓ`` larger by
    ``Σ log w``; Kenward–Roger (which pbkrtest computes without the weights) from R's KR of
    the whitened model."""
    d = data.copy()
    d["sw"] = np.sqrt(d["w"])
    d["yw"], d["swd"] = d["Reaction"] * d["sw"], d["Days"] * d["sw"]
    fit = hl.LMM("Reaction ~ Days + (Days | Subject)", data, weights="w").fit()
    white = hl.LMM("yw ~ 0 + sw + swd + (0 + sw + swd | Subject)", d).fit()
    assert fit.deviance == pytest.approx(white.deviance - np.log(data["w"]).sum(), rel=1e-9)
    assert ref["weighted_reml"]["crit_whitened"] - np.log(data["w"]).sum() == pytest.approx(
        ref["weighted_reml"]["crit"], rel=1e-9)
    np.testing.assert_allclose(fit.theta, white.theta, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fit.fixef, white.fixef, rtol=1e-6)
    kr, kr_white = fit.coef_table(ddf="kenward-roger"), white.coef_table(ddf="kenward-roger")
    np.testing.assert_allclose(kr[["se", "df"]], kr_white[["se", "df"]], rtol=1e-4)
    # R's KR of the whitened model, at R's θ of that model (hierlmm's optimum is 1e-4 away)
    r = ref["weighted_reml"]["kr_whitened"]
    kr = at_theta(fit, ref["weighted_reml"]["theta_whitened"]).coef_table(ddf="kenward-roger")
    np.testing.assert_allclose(kr["se"], r["se"], rtol=1e-6)
    np.testing.assert_allclose(kr["df"], r["df"], rtol=1e-5)
    np.testing.assert_allclose(fit.ranef()["Subject"], white.ranef()["Subject"], rtol=1e-4, atol=1e-4)


def test_offset_is_a_shifted_response(data):
    """An offset is the response minus it: the same θ, β, σ and likelihood; fitted values and
    simulated responses carry it."""
    d = data.assign(y2=data["Reaction"] - 3 * data["Days"] ** 1.5)
    a = hl.LMM("Reaction ~ Days + offset(3 * Days^1.5) + (Days | Subject)", d).fit()
    assert a.model.design.parsed.offsets == ("3 * Days^1.5",)
    b = hl.LMM("y2 ~ Days + (Days | Subject)", d).fit()
    assert a.deviance == pytest.approx(b.deviance, rel=1e-12)
    np.testing.assert_allclose(a.fixef, b.fixef, rtol=1e-9)
    np.testing.assert_allclose(a.fitted() - b.fitted(), 3 * d["Days"] ** 1.5, atol=1e-8)
    np.testing.assert_allclose(a.residuals(), b.residuals(), atol=1e-8)
    sims = a.simulate(200, random_seed=1).to_numpy()
    z = (sims.mean(axis=1) - a.fitted(kind="marginal").to_numpy())
    assert np.abs(z).mean() < 0.25 * np.abs(3 * d["Days"] ** 1.5).mean()  # centred on the offset, not on Xβ


def test_simulated_noise_has_variance_sigma2_over_w(data):
    """``simulate()`` draws ε ~ N(0, σ²/w): the within-subject residual variance of many
    simulations, grouped by weight, scales as 1/w."""
    d = data.assign(w2=np.where(np.arange(len(data)) % 2 == 0, 1.0, 16.0))
    fit = hl.LMM("Reaction ~ Days + (1 | Subject)", d, weights="w2").fit()
    sims = fit.simulate(400, random_seed=3).to_numpy()
    # differences of two rows of the same subject and weight remove b: Var = 2σ²/w
    light, heavy = d.index[(d.w2 == 1) & (d.Subject == "308")], d.index[(d.w2 == 16) & (d.Subject == "308")]
    v1 = np.var(sims[light[0]] - sims[light[1]]) / 2
    v16 = np.var(sims[heavy[0]] - sims[heavy[1]]) / 2
    # each from 400 draws: relative SE sqrt(2/400) = 7%; the ratio 16 within ±35%
    assert v1 == pytest.approx(fit.sigma**2, rel=0.25)
    assert v1 / v16 == pytest.approx(16, rel=0.35)


def test_bayes_honours_weights(data):
    """The flat-prior marginal posterior mode of (σ², D) is REML, weighted too, and the
    collapsed sampler's log-likelihood is −½ the weighted REML deviance (with Σ log w)."""
    pytest.importorskip("pymc")
    import pytensor
    import pytensor.tensor as pt

    from hierlmm.bayes.collapsed import DenseSystem, reml_loglik_blocked_pt, reml_loglik_pt
    from hierlmm.bayes.priors import Layout
    from hierlmm.crossprod import crossproduct

    model = hl.LMM("Reaction ~ Days + offset(o) + (Days | Subject)", data, weights="w")
    fit = model.fit()
    mode = model.posterior_mode(prior="flat")
    assert mode.sigma2 == pytest.approx(fit.sigma**2, rel=1e-4)
    layout = Layout(model.design)
    x = pt.vector("x")
    blocked = pytensor.function([x], reml_loglik_blocked_pt(model.design, layout, x,
                                                            crossproduct(model.design, sparse=False)))
    dense = pytensor.function([x], reml_loglik_pt(DenseSystem(model.design), layout, x))
    v = np.array([3.0, 0.1, 1.5, 6.5])
    Ls, s2 = layout.unpack(v)
    theta = np.concatenate([t.theta_from_template(L) for t, L in zip(model.design.terms, Ls)]) / np.sqrt(s2)
    expected = -0.5 * model.deviance_function(reml=True).unprofiled(theta, np.sqrt(s2))
    assert blocked(v) == pytest.approx(expected, rel=1e-9)
    assert dense(v) == pytest.approx(expected, rel=1e-9)


def test_weights_bad_input(data):
    f = "Reaction ~ Days + (1 | Subject)"
    with pytest.raises(hl.DataError, match="'nope' is not a column"):
        hl.LMM(f, data, weights="nope")
    with pytest.raises(hl.DataError, match="must be positive.*1 value"):
        hl.LMM(f, data.assign(w=np.r_[0.0, data["w"].to_numpy()[1:]]), weights="w")
    with pytest.raises(hl.DataError, match="one value per row"):
        hl.LMM(f, data, weights=np.ones(3))
    with pytest.raises(hl.DataError, match="not numeric"):
        hl.LMM(f, data.assign(w=data["Subject"]), weights="w")
    with pytest.raises(hl.FormulaError, match="not available with a residual correlation"):
        hl.LMM(f, data.assign(t=np.tile(np.arange(10), 18)), weights="w", residual=hl.AR1())
    with pytest.raises(hl.FormulaError, match=r"offset\(\) .* needs an expression"):
        hl.LMM("Reaction ~ Days + offset() + (1 | Subject)", data)
    with pytest.raises(hl.FormulaError, match="'nothere'"):
        hl.LMM("Reaction ~ Days + offset(nothere) + (1 | Subject)", data)
    # a missing weight drops its row, as a missing covariate does
    fit = hl.LMM(f, data.assign(w=np.r_[np.nan, data["w"].to_numpy()[1:]]), weights="w").fit()
    assert fit.nobs == 179 and fit.n_missing == 1
    # offset= given as an array cannot be evaluated on new data
    arr = hl.LMM(f, data, offset=data["o"].to_numpy()).fit()
    with pytest.raises(hl.DataError, match="offset= was given as an array"):
        arr.predict(data.head(3))
    with pytest.raises(hl.HierlmmError, match="prior weights"):
        hl.LMM(f, data, weights="w").fit().r2()
