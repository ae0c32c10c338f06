"""Every lme4 reference in tests/reference (copied from ../shared/reference) is reproduced.

Tolerances are those of the core issue: fixed effects 1e-4 relative plus 2e-3 of their SE,
SEs and variance components 2e-3 relative, log-likelihood not worse than lme4's by more than
1e-4. lme4 stops its optimiser at ``xtol_abs = ftol_abs = 1e-8`` on θ, so its own estimates
carry errors of order 1e-5 relative; the tolerances are well above that and well below any
difference a wrong computation would make.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import lme4_models, load_ref

MODELS = lme4_models()
# hierlmm fits these fast enough for every test run; InstEval (73k rows) is the slow one
SLOW = {"insteval_crossed_reml"}


def params(field: str | None = None):
    names = [m for m in MODELS if field is None or load_ref(m).get(field)]
    return [pytest.param(m, marks=pytest.mark.slow) if m in SLOW else m for m in names]


PARAMS = params()


def better_than_lme4(fit, ref) -> bool:
    """hierlmm found a strictly higher likelihood than lme4 (beyond rounding of 1e-6).

    Then lme4 stopped short of the optimum (it happens in flat valleys, e.g. Orthodont's
    correlated ``(age | Subject)``), its parameters are not the target, and the tests compare
    the likelihood instead; :func:`test_improvement_is_real` checks the improvement.
    """
    return fit.loglik > ref["logLik"] + 1e-6


@pytest.mark.parametrize("name", PARAMS)
def test_loglik_not_worse(fit_ref, name):
    fit, ref = fit_ref(name)
    assert fit.loglik >= ref["logLik"] - 1e-4
    crit = ref["REMLcrit"] if ref["REML"] else ref["deviance_ML"]
    assert fit.deviance <= crit + 2e-4
    assert fit.nobs == ref["nobs"]
    assert fit.ngroups == ref["ngrps"]
    assert fit.df_model == ref["df"]
    assert fit.aic == pytest.approx(ref["AIC"], abs=2e-4)
    assert fit.bic == pytest.approx(ref["BIC"], abs=2e-4)
    assert fit.singular == ref["singular"]


@pytest.mark.parametrize("name", PARAMS)
def test_improvement_is_real(fit_ref, name):
    """Where hierlmm beats lme4, lme4's own θ evaluates worse in hierlmm's deviance, and the
    deviance at lme4's θ matches lme4's criterion (so the two objectives are the same)."""
    fit, ref = fit_ref(name)
    dev = fit.deviance_function
    at_lme4 = dev(np.asarray(ref["theta"]))
    crit = ref["REMLcrit"] if ref["REML"] else ref["deviance_ML"]
    assert at_lme4 == pytest.approx(crit, abs=1e-6)
    if better_than_lme4(fit, ref):
        assert fit.deviance < at_lme4 - 2e-6


@pytest.mark.parametrize("name", PARAMS)
def test_fixed_effects(fit_ref, name):
    fit, ref = fit_ref(name)
    if better_than_lme4(fit, ref):
        pytest.skip("hierlmm's likelihood is strictly higher than lme4's: parameters differ legitimately")
    est, se = dict(fit.fixef.items()), dict(fit.se.items())
    assert sorted(est) == sorted(ref["fixef_names"])
    for k in ref["fixef_names"]:
        assert abs(est[k] - ref["fixef"][k]) <= 1e-4 * abs(ref["fixef"][k]) + 2e-3 * ref["se"][k], k
        assert se[k] == pytest.approx(ref["se"][k], rel=2e-3), k
    V = fit.vcov.loc[ref["fixef_names"], ref["fixef_names"]].to_numpy()
    Vref = np.asarray(ref["vcov"])
    scale = np.sqrt(np.outer(np.diag(Vref), np.diag(Vref)))
    np.testing.assert_array_less(np.abs(V - Vref), 2e-3 * scale + 1e-12)


@pytest.mark.parametrize("name", PARAMS)
def test_variance_components(fit_ref, name):
    fit, ref = fit_ref(name)
    if better_than_lme4(fit, ref):
        pytest.skip("hierlmm's likelihood is strictly higher than lme4's")
    assert fit.sigma**2 == pytest.approx(ref["sigma"] ** 2, rel=2e-3)
    covs = fit.covariance_matrices()
    assert list(covs) == [v["group"] for v in ref["varcorr"]]
    for v in ref["varcorr"]:
        D = covs[v["group"]]
        assert list(D.index) == v["terms"]
        Dref = np.asarray(v["cov"])
        scale = np.sqrt(np.outer(np.diag(Dref), np.diag(Dref)))
        if np.all(scale == 0):  # a zero variance (singular fit): compare on the residual scale
            scale = np.full_like(scale, ref["sigma"] ** 2)
        np.testing.assert_array_less(np.abs(D.to_numpy() - Dref), 2e-3 * scale + 1e-10)


@pytest.mark.parametrize("name", PARAMS)
def test_varcorr_layout(fit_ref, name):
    fit, ref = fit_ref(name)
    vc = fit.varcorr
    assert list(vc.columns) == ["grp", "var1", "var2", "vcov", "sdcor"]
    assert vc.iloc[-1].grp == "Residual"
    assert vc.iloc[-1].sdcor == pytest.approx(fit.sigma)
    n_expected = sum(len(v["terms"]) * (len(v["terms"]) + 1) // 2 for v in ref["varcorr"]) + 1
    assert len(vc) == n_expected
    cov = vc[vc.var2.notna()]
    for _, row in cov.iterrows():
        ref_term = next(v for v in ref["varcorr"] if v["group"] == row.grp)
        i, j = ref_term["terms"].index(row.var1), ref_term["terms"].index(row.var2)
        assert row.sdcor == pytest.approx(ref_term["corr"][i][j], abs=2e-3)


@pytest.mark.parametrize("name", params("ranef"))
def test_ranef_and_condsd(fit_ref, name):
    fit, ref = fit_ref(name)
    re = fit.ranef()
    post = fit.ranef_posterior(beta="fixed")
    for group, r in ref["ranef"].items():
        vals = np.asarray(r["values"], dtype=float)
        sds = np.asarray(r["condsd"], dtype=float)
        ours = re[group].loc[r["levels"], r["terms"]].to_numpy()
        scale = np.maximum(np.abs(vals).max(axis=0), ref["sigma"] * 1e-3)
        np.testing.assert_allclose(ours, vals, rtol=2e-3, atol=(2e-3 * scale).max())
        our_sd = post[group].sd.loc[r["levels"], r["terms"]].to_numpy()
        np.testing.assert_allclose(our_sd, sds, rtol=2e-3, atol=1e-8 * ref["sigma"])
        pd.testing.assert_frame_equal(post[group].mean, re[group])


@pytest.mark.parametrize("name", params("fitted"))
def test_fitted_and_residuals(fit_ref, name):
    fit, ref = fit_ref(name)
    y_scale = ref["sigma"]
    np.testing.assert_allclose(fit.fitted().to_numpy(), ref["fitted"], rtol=0, atol=2e-3 * y_scale)
    np.testing.assert_allclose(fit.residuals().to_numpy(), ref["residuals"], rtol=0, atol=2e-3 * y_scale)


def test_dyestuff2_is_singular(fit_ref):
    fit, ref = fit_ref("dyestuff2_singular_reml")
    assert fit.singular
    assert fit.varcorr.set_index("grp").loc["Batch", "vcov"] == 0.0


def test_singular_fit_warns():
    import hierlmm as hl

    with pytest.warns(hl.SingularFitWarning, match="singular"):
        hl.LMM("Yield ~ 1 + (1 | Batch)", hl.datasets.load("Dyestuff2")).fit()
