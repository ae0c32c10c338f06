"""Residual structures with several parameters (hierlmm.residual): ``Unstructured`` (nlme's
``corSymm``), ``VarIdent`` (``varIdent``), their composition (the MMRM's unstructured
covariance), with and without random effects (nlme's ``gls`` and ``lme``).

Numbers compared with come from R (tests/reference/r/residual_structures.R: nlme 3.1-162,
emmeans 1.8.4-1) or from dense brute-force computations; the Satterthwaite df of a gls fit are
checked against a dense computation, not against emmeans' ``appx-satterthwaite`` (an
approximation that emmeans says it falls back to for gls: 51.17 where the exact value, by
brute force below and by hierlmm, is 51.53).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hierlmm as hl
from hierlmm.residual import correlation_from_unbounded, unbounded_from_correlation

REF = Path(__file__).parent / "reference"
REFS = {k: v for k, v in json.loads((REF / "residual_structures.json").read_text()).items() if k != "versions"}


def mmrm_data() -> pd.DataFrame:
    d = pd.read_csv(REF / "mmrm_sim.csv")
    d["visit"] = pd.Categorical(d["visit"], ["V1", "V2", "V3", "V4"])
    d["arm"] = pd.Categorical(d["arm"], ["pbo", "trt"])
    return d


def orthodont() -> pd.DataFrame:
    d = hl.datasets.load("Orthodont")
    d["occ"] = pd.Categorical(d["age"].astype(int).astype(str), ["8", "10", "12", "14"])
    return d


def model_of(ref, data=None) -> hl.LMM:
    data = (mmrm_data() if ref["data"] == "mmrm" else orthodont()) if data is None else data
    residual = (hl.AR1() if ref.get("residual") == "AR1" else
                hl.Unstructured(time=ref["time"], group=ref["group"]) if ref.get("residual") else None)
    variance = hl.VarIdent(ref["variance"]) if ref.get("variance") else None
    return hl.LMM(ref["formula"], data, residual=residual, variance=variance)


MMRM = "y ~ arm * visit"


def mmrm(data=None, method="REML"):
    return hl.LMM(MMRM, mmrm_data() if data is None else data, residual=hl.Unstructured(time="visit", group="id"),
                  variance=hl.VarIdent("visit")).fit(method=method)


@pytest.mark.parametrize("key", sorted(REFS))
def test_matches_nlme(key):
    ref = REFS[key]
    fit = model_of(ref).fit(method="REML" if ref["REML"] else "ML")
    assert fit.converged
    assert fit.loglik == pytest.approx(ref["logLik"], abs=2e-6)
    assert fit.loglik >= ref["logLik"] - 1e-7  # nlme stops within its tolerance; never above our optimum
    assert fit.df_model == ref["df"]
    np.testing.assert_allclose(fit.fixef.to_numpy(), ref["fixef"], rtol=1e-4, atol=1e-4 * min(ref["se"]))
    # nlme's gls reports Var(β̂) of an ML fit with σ²N/(N − p) (lme's and lme4's with the ML σ²)
    np.testing.assert_allclose(fit.se.to_numpy() * np.sqrt(ref["vcov_factor"]), ref["se"], rtol=2e-4)
    params = fit.residual_params
    if ref.get("residual") == "AR1":
        assert params["phi"] == pytest.approx(float(np.atleast_1d(ref["cor"])[0]), abs=2e-4)
    elif "cor" in ref:
        cors = [v for k, v in params.items() if k.startswith("cor(")]
        np.testing.assert_allclose(cors, ref["cor"], atol=2e-4)  # nlme's order: (2,1), (3,1), ..., column by column
    if "residual_sd" in ref:  # σ δ_level: free of which level is the reference (nlme's is the first in its order)
        ratio = {k.split("=", 1)[1]: v for k, v in params.items() if k.startswith("sd ratio")}
        for level, sd in ref["residual_sd"].items():
            assert fit.sigma * ratio.get(level, 1.0) == pytest.approx(sd, rel=1e-4), level
    else:
        assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-4)
    if not ref.get("group"):  # VarIdent alone: no grouping, V diagonal (its entries are the σ δ² above)
        return
    level = "id001" if ref["data"] == "mmrm" else "M01"
    V = fit.marginal_cov(level, group=ref["group"]).to_numpy()
    np.testing.assert_allclose(V, np.array(ref["V"]), rtol=5e-4, atol=1e-5 * np.abs(ref["V"]).max())


def test_emmeans_by_visit_and_arm_match_emmeans():
    ref = REFS["mmrm_us_reml"]["emmeans"]
    fit = mmrm()
    e = fit.emmeans("arm", by="visit", ddf="satterthwaite")
    np.testing.assert_allclose(e["emmean"].to_numpy(dtype=float), ref["emmean"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(e["SE"].to_numpy(dtype=float), ref["SE"], rtol=2e-4)
    pairs = fit.emmeans("arm", by="visit", ddf="satterthwaite").pairs() if hasattr(e, "pairs") else None
    if pairs is not None:
        np.testing.assert_allclose(pairs["estimate"].to_numpy(dtype=float), ref["contrast_estimate"], rtol=1e-5)
        np.testing.assert_allclose(pairs["SE"].to_numpy(dtype=float), ref["contrast_SE"], rtol=2e-4)


def _dense(fit):
    """The MMRM's REML log-likelihood (without its constant) and Var(β̂) at (u, log δ, log σ²),
    from dense n x n matrices."""
    X, y = fit.design.X, fit.design.y
    ids = fit.design.data["id"].to_numpy()
    vc = fit.design.data["visit"].cat.codes.to_numpy()
    same = ids[:, None] == ids[None, :]

    def V(par):
        R = correlation_from_unbounded(par[:6], 4)
        d = np.concatenate([[1.0], np.exp(par[6:9])])
        return (np.exp(par[9]) * R * np.outer(d, d))[np.ix_(vc, vc)] * same

    def reml(par):
        Vm = V(par)
        Vi = np.linalg.inv(Vm)
        XVX = X.T @ Vi @ X
        r = y - X @ np.linalg.solve(XVX, X.T @ Vi @ y)
        return -0.5 * (np.linalg.slogdet(Vm)[1] + np.linalg.slogdet(XVX)[1] + r @ Vi @ r)

    def vcov(par):
        return np.linalg.inv(X.T @ np.linalg.solve(V(par), X))

    return reml, vcov


def test_satterthwaite_df_of_the_mmrm_are_the_dense_computation():
    """``2 v² / (g' A g)`` with ``A`` the inverse observed information of the REML likelihood and
    ``g`` the gradient of ``v = l'Var(β̂)l``, both by central differences of dense matrices."""
    fit = mmrm()
    reml, vcov = _dense(fit)
    par0 = np.append(fit.solution.theta, np.log(fit.sigma**2))
    n, p = fit.design.X.shape
    assert reml(par0) - 0.5 * (n - p) * np.log(2 * np.pi) == pytest.approx(fit.loglik, abs=1e-8)
    h, k = 1e-4, par0.size
    E = np.eye(k) * h
    H = np.array([[(reml(par0 + E[i] + E[j]) - reml(par0 + E[i] - E[j]) - reml(par0 - E[i] + E[j])
                    + reml(par0 - E[i] - E[j])) / (4 * h * h) for j in range(k)] for i in range(k)])
    A = np.linalg.inv(-H)
    df = fit.coef_table("satterthwaite")["df"].to_numpy()
    for j in range(p):
        v = vcov(par0)[j, j]
        g = np.array([(vcov(par0 + E[i])[j, j] - vcov(par0 - E[i])[j, j]) / (2 * h) for i in range(k)])
        assert df[j] == pytest.approx(2 * v * v / (g @ A @ g), rel=1e-4)


def test_kenward_roger_components_are_the_fitted_covariance():
    """KR's linear parametrisation of the unstructured covariance, ``Σ γ_a G_a``, is the fitted
    ``V_i`` of every subject; and on a model with two formulations, a random intercept and a
    compound-symmetric gls, KR's df and SEs are the same (KR in γ is invariant to a linear
    reparametrisation; the lmer one is pbkrtest's: tests/test_reference_lme4.py)."""
    from hierlmm.inference.kenward_roger import _components

    fit = mmrm()
    gammas, comps = _components(fit)
    assert len(gammas) == 10  # the 4 x 4 unstructured covariance's entries
    ids = fit.design.data["id"].to_numpy()
    for level in ["id000", "id001", "id017"]:
        rows = np.flatnonzero(ids == level)
        V = sum(g * G(rows) for g, G in zip(gammas, comps))
        np.testing.assert_allclose(V, fit.marginal_cov(level, group="id").to_numpy(), rtol=1e-10, atol=1e-12)
    d = mmrm_data()
    a = hl.LMM("y ~ arm * visit + (1 | id)", d).fit().coef_table("kenward-roger")
    b = hl.LMM("y ~ arm * visit", d, residual=hl.CompoundSymmetry(group="id")).fit().coef_table("kenward-roger")
    np.testing.assert_allclose(b["se"], a["se"], rtol=1e-6)
    np.testing.assert_allclose(b["df"], a["df"], rtol=1e-6)
    kr = fit.coef_table("kenward-roger")
    assert np.all(kr["se"] >= fit.coef_table("satterthwaite")["se"] - 1e-12)  # KR's adjustment inflates
    with pytest.raises(hl.HierlmmError, match="linear in its parameters"):
        hl.LMM(MMRM, d, residual=hl.AR1(group="id")).fit().coef_table("kenward-roger")


def test_correlation_parametrisation_round_trips():
    rng = np.random.default_rng(3)
    for k in (2, 3, 5):
        u = rng.normal(0, 1, k * (k - 1) // 2)
        R = correlation_from_unbounded(u, k)
        assert np.allclose(np.diag(R), 1) and np.linalg.eigvalsh(R).min() > 0
        np.testing.assert_allclose(unbounded_from_correlation(R), u, atol=1e-12)


def test_units_order_and_labels_do_not_change_the_mmrm():
    base = mmrm()
    d = mmrm_data().sample(frac=1.0, random_state=4).reset_index(drop=True)
    d["y"] = 1e3 * d["y"] - 2e5
    d["id"] = "subject " + d["id"].str[::-1]
    moved = mmrm(d)
    n, p = base.nobs, len(base.fixef)
    assert moved.loglik + (n - p) * np.log(1e3) == pytest.approx(base.loglik, abs=1e-6)
    assert moved.sigma / 1e3 == pytest.approx(base.sigma, rel=1e-5)
    for k, v in base.residual_params.items():
        assert moved.residual_params[k] == pytest.approx(v, abs=1e-5), k
    np.testing.assert_allclose(moved.coef_table()["df"], base.coef_table()["df"], rtol=1e-4)
    np.testing.assert_allclose(moved.coef_table()["t"].to_numpy()[1:], base.coef_table()["t"].to_numpy()[1:],
                               rtol=1e-5)


@pytest.mark.parametrize("make, match", [
    (lambda d: hl.LMM(MMRM, d, residual=hl.Unstructured(group="id")), "needs the time column"),
    (lambda d: hl.LMM(MMRM, d, residual=hl.Unstructured(time="visit")).fit(), "needs the group"),
    (lambda d: hl.LMM(MMRM, d, residual=hl.Unstructured(time="when", group="id")), "'when'"),
    (lambda d: hl.LMM(MMRM, d, variance="visit"), "VarIdent"),
    (lambda d: hl.LMM(MMRM, d.assign(visit=d["visit"].where(d.index != 1, "V1")),
                      residual=hl.Unstructured(time="visit", group="id")).fit(), r"group 'id000' has time\(s\) V1"),
    (lambda d: hl.LMM("y ~ arm * visit", d), "no random-effects term"),
])
def test_bad_input_is_a_clear_error(make, match):
    with pytest.raises(hl.HierlmmError, match=match):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            make(mmrm_data())


def test_what_needs_random_effects_or_iid_residuals_refuses():
    fit = mmrm()
    # refused with the reason: the collapsed likelihood is a function of A only for iid residuals
    with pytest.raises(hl.HierlmmError, match=r"correlated residuals.*function of A = \[Z X y\]'\[Z X y\]"):
        fit.model.sample(draws=10, tune=10, chains=1)
    assert fit.ranef_posterior() == {} or len(fit.ranef_posterior()) == 0
    text = str(fit.summary())
    assert "Residual correlation: unstructured within id" in text and "varIdent(~ 1 | visit)" in text


def test_complete_data_unstructured_df_are_n_minus_groups():
    """With every subject seen at every time, an unstructured covariance and a mean saturated in
    time x group, each coefficient's t is exactly t-distributed with n − g df (the per-time
    group comparison is a two-sample t test): Kenward–Roger and Satterthwaite both give 25 on
    Orthodont (27 children, 2 sexes)."""
    d = orthodont()
    fit = hl.LMM("distance ~ occ * Sex", d, residual=hl.Unstructured(time="occ", group="Subject"),
                 variance=hl.VarIdent("occ")).fit()
    for ddf in ("kenward-roger", "satterthwaite"):
        np.testing.assert_allclose(fit.coef_table(ddf)["df"], 25.0, rtol=1e-4)
    # and V is the sample covariance of the within-sex residuals, pooled (divisor n − g)
    r = d["distance"].to_numpy() - fit.fitted(kind="marginal").to_numpy()
    wide = pd.DataFrame({"s": d["Subject"].astype(str), "t": d["occ"].astype(str), "r": r}).pivot(
        index="s", columns="t", values="r")[["8", "10", "12", "14"]].to_numpy()
    S = wide.T @ wide / (27 - 2)
    np.testing.assert_allclose(fit.marginal_cov("M01", group="Subject").to_numpy(), S, rtol=2e-4)


def test_describe_states_the_marginal_model_and_the_structure():
    m = hl.LMM(MMRM, mmrm_data(), residual=hl.Unstructured(time="visit", group="id"), variance=hl.VarIdent("visit"))
    text = m.describe()
    assert "no random effects" in text and "V_i = σ² Δ_i R_i (unstructured) Δ_i within id" in text
    assert "per level of visit" in text
    assert r"V_i = \sigma^2 \Delta_i R_i \Delta_i" in m._repr_latex_()
    diag = hl.LMM("distance ~ age + diag(age | Subject)", orthodont())
    assert "D: 2 x 2 diagonal ((Intercept), age); 27 levels of Subject" in diag.describe()
