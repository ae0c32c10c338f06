"""Covariance structures of random-effects terms (hierlmm.covariance): glmmTMB's ``us``, ``diag``,
``cs``, ``ar1``, ``toep`` and nlme's ``pdIdent``/``pdCompSymm`` forms ``homdiag``/``homcs``.

Every number compared with comes from R (tests/reference/r/covariance_structures.R: glmmTMB
1.1.5, nlme 3.1-162 and lme4 on nlme's Machines and lme4's sleepstudy), from a dense brute-force
computation of the criterion, or from a property that must hold (nesting of the structures,
units, order and labels of the data).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.linalg

import hierlmm as hl
from hierlmm.covariance import STRUCTURES, make_covariance
from hierlmm.errors import FormulaError, HierlmmError

REF = Path(__file__).parent / "reference"
REFS = {k: v for k, v in json.loads((REF / "covariance_structures.json").read_text()).items() if k != "versions"}


def machines() -> pd.DataFrame:
    d = pd.read_csv(REF / "machines.csv")
    d["Machine"] = pd.Categorical(d["Machine"], ["A", "B", "C"])
    d["Worker"] = pd.Categorical(d["Worker"].astype(str), [str(i) for i in range(1, 7)])
    return d


def fit(formula, data, method="REML", **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hl.SingularFitWarning)
        return hl.LMM(formula, data, **kw).fit(method=method)


@pytest.mark.parametrize("key", sorted(REFS))
def test_matches_r(key):
    """glmmTMB's, nlme's and lme4's REML and ML fits (their REML constants are lme4's: the same
    unstructured fit has the same logLik in all three, to 1e-7)."""
    ref = REFS[key]
    data = machines() if key.startswith("machines") else hl.datasets.load("sleepstudy")
    variance = {"variance": hl.VarIdent(ref["variance"])} if ref.get("variance") else {}
    f = fit(ref["formula"], data, "REML" if ref["REML"] else "ML", **variance)
    assert f.converged
    # R's optimisers stop within ~1e-7 of the optimum (glmmTMB's ML: 3e-9 below ours at most)
    assert f.loglik == pytest.approx(ref["logLik"], abs=1e-6)
    assert f.loglik >= ref["logLik"] - 1e-8
    assert f.df_model == ref["df"]
    se = np.sqrt(np.diag(f.vcov))
    # β to a small fraction of its SE (glmmTMB's ML optimises β too: 3e-5 of a score of 60)
    assert np.all(np.abs(np.asarray(f.fixef) - ref["fixef"]) < 1e-4 * np.asarray(ref["se"]))
    np.testing.assert_allclose(se, ref["se"], rtol=2e-4)
    if ref.get("variance"):  # a residual SD per level (glmmTMB's dispformula)
        ratio = {k.split("=", 1)[1]: v for k, v in f.residual_params.items()}
        for level, sd in ref["residual_sd"].items():
            assert f.sigma * ratio.get(level, 1.0) == pytest.approx(sd, rel=2e-5), level
    else:
        assert f.sigma == pytest.approx(ref["sigma"], rel=2e-5)
    # every term's D, block-diagonal (lme4's (Days || Subject) has two terms)
    D = scipy.linalg.block_diag(*(m.to_numpy() for m in f.covariance_matrices().values()))
    blocks = ref["D"] if isinstance(ref["D"], list) else list(ref["D"].values())
    Dr = scipy.linalg.block_diag(*(np.atleast_2d(np.array(b, dtype=float)) for b in blocks))
    np.testing.assert_allclose(D, Dr, atol=5e-4 * np.abs(Dr).max())


def test_criterion_is_the_dense_one():
    """The blocked engine's REML criterion and ML deviance at random parameters of every
    structure equal the dense ``V = Z (I ⊗ TT') Z' + I`` computation, with σ² profiled."""
    d = machines()
    rng = np.random.default_rng(7)
    for kind in STRUCTURES:
        model = hl.LMM(f"score ~ Machine + {kind}(0 + Machine | Worker) + (1 | Worker:Machine)", d)
        t = model.design.terms[0] if model.design.terms[0].structure == kind else model.design.terms[1]
        assert t.structure == kind
        for reml in (True, False):
            dev = model.deviance_function(reml=reml)
            for _ in range(3):
                par = np.concatenate([u.theta_start() + rng.normal(0, 0.6, u.n_theta) for u in model.design.terms])
                par = np.maximum(par, dev.lower)
                assert dev(par) == pytest.approx(_dense_criterion(model.design, par, reml), rel=1e-10)


def _dense_criterion(design, par, reml):
    X, y, n, p = design.X, design.y, design.n, design.p
    V = np.eye(n)
    for t, s in zip(design.terms, design.theta_slices()):
        Z = np.zeros((n, t.q))
        for j in range(t.k):
            Z[np.arange(n), t.codes * t.k + j] = t.Z[:, j]
        V += Z @ np.kron(np.eye(t.m), t.relcov(par[s])) @ Z.T
    Vi = np.linalg.inv(V)
    XtViX = X.T @ Vi @ X
    beta = np.linalg.solve(XtViX, X.T @ Vi @ y)
    r = y - X @ beta
    r2 = r @ Vi @ r
    dof = n - p if reml else n
    out = np.linalg.slogdet(V)[1] + dof * (1 + np.log(2 * np.pi * r2 / dof))
    return out + (np.linalg.slogdet(XtViX)[1] if reml else 0.0)


def test_nested_structures_order_the_likelihood():
    """Each structure contains the ones below it (homdiag ⊂ diag ⊂ cs ⊂ toep ⊂ us, homdiag ⊂ homcs
    ⊂ cs, ar1 ⊂ toep): the larger model's ML optimum is at least the smaller's."""
    d = machines()
    ll = {k: fit(f"score ~ Machine + {k}(0 + Machine | Worker)", d, "ML").loglik for k in STRUCTURES}
    for small, big in [("homdiag", "diag"), ("diag", "cs"), ("cs", "toep"), ("toep", "us"), ("homdiag", "homcs"),
                       ("homcs", "cs"), ("ar1", "toep")]:
        assert ll[big] >= ll[small] - 1e-7, (small, big)


def test_diag_is_lme4s_double_bar_and_us_is_lme4s_bar():
    """``diag(Days | Subject)`` is lme4's ``(Days || Subject)`` fit as one term; ``us(...)`` is
    ``(...)``: the same θ, logLik, Satterthwaite and Kenward–Roger df."""
    s = hl.datasets.load("sleepstudy")
    a, b = fit("Reaction ~ Days + diag(Days | Subject)", s), fit("Reaction ~ Days + (Days || Subject)", s)
    assert a.loglik == pytest.approx(b.loglik, abs=1e-8)
    np.testing.assert_allclose(a.solution.theta, b.solution.theta, rtol=1e-5)
    for ddf in ("satterthwaite", "kenward-roger"):
        np.testing.assert_allclose(a.coef_table(ddf)["df"], b.coef_table(ddf)["df"], rtol=1e-4)
    c, e = fit("Reaction ~ Days + us(Days | Subject)", s), fit("Reaction ~ Days + (Days | Subject)", s)
    np.testing.assert_array_equal(c.solution.theta, e.solution.theta)
    assert list(c.theta.index) == list(e.theta.index)
    # lme4's rows for a diagonal term: variances only
    assert a.varcorr["var2"].isna().all()
    assert a.varcorr["vcov"].tolist() == pytest.approx(b.varcorr["vcov"].tolist(), rel=1e-5)
    assert "Subject diag (diagonal)" in str(a.summary())


@pytest.mark.parametrize("kind", ["diag", "cs", "ar1", "toep", "homcs"])
def test_units_order_and_labels_do_not_change_the_fit(kind):
    """The response in other units and shifted, the rows permuted, the workers relabelled: the same
    fit (D in the response's units squared)."""
    d = machines()
    formula = f"score ~ Machine + {kind}(0 + Machine | Worker)"
    base = fit(formula, d)
    other = d.sample(frac=1.0, random_state=3).reset_index(drop=True)
    other["score"] = 1e4 * other["score"] + 5e6
    other["Worker"] = pd.Categorical("w" + other["Worker"].astype(str).str.zfill(3))
    moved = fit(formula, other)
    assert moved.converged and base.converged
    # the REML logLik shifts by −(n − p) log(1e4) under the change of units
    assert moved.loglik + (base.nobs - len(base.fixef)) * np.log(1e4) == pytest.approx(base.loglik, abs=1e-6)
    D0, D1 = (list(f.covariance_matrices().values())[0].to_numpy() for f in (base, moved))
    np.testing.assert_allclose(D1 / 1e8, D0, rtol=1e-4, atol=1e-6 * np.abs(D0).max())
    assert moved.sigma / 1e4 == pytest.approx(base.sigma, rel=1e-5)


def test_slope_units_in_a_diagonal_term():
    """A random slope in other units: the same fit (ML: REML's log|X'V⁻¹X| depends on X's units),
    its variance in the new units."""
    s = hl.datasets.load("sleepstudy")
    a = fit("Reaction ~ Days + diag(Days | Subject)", s, "ML")
    s2 = s.assign(Days=s["Days"] * 1e-6)
    b = fit("Reaction ~ Days + diag(Days | Subject)", s2, "ML")
    assert b.loglik == pytest.approx(a.loglik, abs=1e-7)
    Da, Db = (list(f.covariance_matrices().values())[0].to_numpy() for f in (a, b))
    assert Db[1, 1] * 1e-12 == pytest.approx(Da[1, 1], rel=1e-4)


def test_ranova_removes_a_structured_term_whole():
    d = machines()
    f = fit("score ~ Machine + cs(0 + Machine | Worker)", d)
    table = f.ranova()
    assert list(table.index) == ["<none>", "cs(0 + Machine | Worker)"]
    f0 = fit("score ~ Machine + (1 | Worker)", d)
    assert f0.ranova().loc["(1 | Worker)", "loglik"] == pytest.approx(table.loc["cs(0 + Machine | Worker)", "loglik"])


def test_structure_parameters_round_trip():
    """Each structure's parameters -> T -> D -> parameters, and the natural parameters (SDs,
    correlations) -> parameters, give the same D."""
    rng = np.random.default_rng(11)
    for kind in STRUCTURES:
        cov = make_covariance(kind, ("a", "b", "c", "d"))
        for _ in range(5):
            par = np.maximum(cov.start() + rng.normal(0, 0.7, cov.n_par), cov.lower())
            T = cov.factor(par)
            assert np.allclose(T, np.tril(T))
            D = T @ T.T
            back = cov.factor(cov.par_from_relcov(D))
            np.testing.assert_allclose(back @ back.T, D, atol=1e-10)
            nat = cov.par_from_natural(cov.natural(4.0 * D), 2.0)  # NaN where an SD is 0: immaterial
            np.testing.assert_allclose(cov.factor(nat) @ cov.factor(nat).T, D, atol=1e-10)


def test_toeplitz_is_a_toeplitz_correlation_and_ar1_a_power():
    cov = make_covariance("toep", ("a", "b", "c", "d"))
    par = np.array([1.0, 2.0, 0.5, 1.5, 0.7, -0.4, 0.3])
    D = cov.factor(par) @ cov.factor(par).T
    sd = np.sqrt(np.diag(D))
    R = D / np.outer(sd, sd)
    for lag in range(1, 4):
        assert np.ptp(np.diag(R, -lag)) < 1e-12
    np.testing.assert_allclose(sd, par[:4])
    assert np.linalg.eigvalsh(R).min() > 0
    ar = make_covariance("ar1", ("a", "b", "c", "d"))
    T = ar.factor([2.0, 0.8])
    rho = 0.8 / np.sqrt(1 + 0.64)
    i = np.arange(4)
    np.testing.assert_allclose(T @ T.T, 4.0 * rho ** np.abs(i[:, None] - i[None, :]), atol=1e-12)


@pytest.mark.parametrize("formula, match", [
    ("score ~ Machine + cs(1 | Worker)", r"cs\(1 \| Worker\).*at least 2 columns"),
    ("score ~ Machine + ar1(1 | Worker)", r"ar1\(1 \| Worker\).*at least 2 columns"),
    ("score ~ Machine + diag(Machine || Worker)", "'\\|\\|' already makes"),
    ("score ~ diag(Machine) + (1 | Worker)", r"diag\(\) is a covariance structure"),
])
def test_misuse_is_a_clear_error(formula, match):
    with pytest.raises(FormulaError, match=match):
        hl.LMM(formula, machines())


def test_profile_intervals_of_a_structure_are_those_of_the_same_model_in_lme4s_terms():
    """Two parametrisations of one model, two code paths of the profile (a structure's natural
    parameters as coordinates; lme4's terms in spherical coordinates, checked against lme4 in the
    differential suite): ``diag(Days | Subject)`` is ``(Days || Subject)``, and ``cs`` of a
    2-level factor is the unstructured ``(0 + f | g)``. The same limits."""
    s = hl.datasets.load("sleepstudy")
    a = fit("Reaction ~ Days + diag(Days | Subject)", s).confint(method="profile")
    b = fit("Reaction ~ Days + (Days || Subject)", s).confint(method="profile")
    np.testing.assert_allclose(a.to_numpy(dtype=float), b.to_numpy(dtype=float), rtol=2e-5)
    d = machines()
    d = d[d.Machine != "C"].copy()
    d["Machine"] = d["Machine"].cat.remove_unused_categories()
    c = fit("score ~ Machine + cs(0 + Machine | Worker)", d).confint(method="profile")
    u = fit("score ~ Machine + (0 + Machine | Worker)", d).confint(method="profile")
    assert list(c.index)[2] == "cor|Worker" and list(u.index)[1].startswith("cor_")
    u = u.iloc[[0, 2, 1, 3, 4, 5]]  # lme4's order sd, cor, sd; the structure's sd, sd, cor
    np.testing.assert_allclose(c.to_numpy(dtype=float), u.to_numpy(dtype=float), rtol=2e-5)


def test_profile_limits_are_where_the_deviance_rises_by_the_quantile():
    """Each limit of an ar1 term's profile: the ML deviance, minimised over the other
    parameters with ψ fixed there (from several starts), is the minimum plus χ²₁(0.95)."""
    from scipy import stats, optimize

    d = machines()
    f = fit("score ~ Machine + ar1(0 + Machine | Worker)", d, "ML")
    ci = f.confint(method="profile")
    dev = f.deviance_function
    target = f.deviance + stats.chi2.ppf(0.95, 1)
    t = f.design.terms[0]
    for name, col in (("sd|Worker", 0), ("rho|Worker", 1)):
        for limit in ci.loc[name].to_numpy(dtype=float):
            def g(v):  # the other natural parameter and σ free
                other, sigma = v
                if sigma <= 0:
                    return np.inf
                nat = np.array([limit, other] if col == 0 else [other, limit])
                if col == 0 and not -1 <= other <= 1 or col == 1 and other < 0:
                    return np.inf
                return dev.unprofiled(t.cov.par_from_natural(nat, sigma), sigma)
            starts = [(0.5, f.sigma), (-0.5, f.sigma), (0.9, 1.5 * f.sigma)] if col == 0 else [
                (2.0, f.sigma), (6.0, f.sigma), (12.0, 0.8 * f.sigma)]
            best = min(optimize.minimize(g, s0, method="Nelder-Mead",
                                         options={"xatol": 1e-9, "fatol": 1e-10, "maxiter": 4000}).fun
                       for s0 in starts)
            assert best == pytest.approx(target, abs=2e-4), (name, limit)


def test_what_is_not_implemented_for_structures_refuses_naming_the_term():
    d = machines()
    f = fit("score ~ Machine + ar1(0 + Machine | Worker)", d)
    with pytest.raises(HierlmmError, match=r"not \(as pbkrtest"):
        f.coef_table("kenward-roger")
    with pytest.raises(HierlmmError, match="unstructured"):
        f.model.posterior_mode()
    with pytest.raises(HierlmmError, match="unstructured"):
        hl.LMM("score ~ Machine + diag(0 + Machine | Worker)", d, formulation="marginal")


def test_satterthwaite_df_of_a_structured_term_do_not_depend_on_units():
    d = machines()
    a = fit("score ~ Machine + cs(0 + Machine | Worker)", d).coef_table("satterthwaite")["df"]
    b = fit("score ~ Machine + cs(0 + Machine | Worker)", d.assign(score=d.score * 1e-5)).coef_table("satterthwaite")["df"]
    np.testing.assert_allclose(a, b, rtol=1e-4)
    assert np.all(np.isfinite(a)) and np.all(a > 0)


def test_vcov_jacobian_of_every_structure_is_the_derivative():
    """``∂(X'V⁻¹X)⁻¹/∂par`` of a structured term (the chain rule through ``∂T/∂par``) equals
    central differences of the (dense-checked) ``unscaled_vcov``."""
    d = machines()
    rng = np.random.default_rng(5)
    for kind in STRUCTURES:
        model = hl.LMM(f"score ~ Machine + (1 | Worker:Machine) + {kind}(0 + Machine | Worker)", d)
        dev = model.deviance_function()
        par = np.concatenate([t.theta_start() + rng.normal(0, 0.4, t.n_theta) for t in model.design.terms])
        par = np.maximum(par, dev.lower + 0.05)
        got = dev.unscaled_vcov_jacobian(par)
        h = 1e-5
        for i in range(par.size):
            up, dn = par.copy(), par.copy()
            up[i] += h
            dn[i] -= h
            fd = (dev.unscaled_vcov(up) - dev.unscaled_vcov(dn)) / (2 * h)
            np.testing.assert_allclose(got[i], fd, rtol=1e-5, atol=1e-7 * np.abs(fd).max() + 1e-12)


@pytest.mark.parametrize("formula, data", [("Reaction ~ Days + (Days || Subject)", "sleepstudy"),
                                           ("strength ~ 1 + (1 | batch/cask)", "Pastes")])
def test_a_diagonal_rest_block_is_factorised_as_the_dense_one(formula, data):
    """lme4's ``(x || g)`` and a nesting's outer factor leave the rest block of the blocked
    Cholesky diagonal (cholesky.BlockedCholesky._diagonal_rest): its O(q) factor gives the
    dense factor's criterion, β and L22 at any θ."""
    from hierlmm.deviance import Deviance

    model = hl.LMM(formula, hl.datasets.load(data))
    fast, dense = Deviance(model.design), Deviance(model.design)
    dense.chol._diag_rest = False
    assert fast.chol._diagonal_rest()
    rng = np.random.default_rng(2)
    for _ in range(5):
        theta = rng.uniform(0.0, 2.0, fast.lower.size)
        assert fast(theta) == pytest.approx(dense(theta), rel=1e-12)
        np.testing.assert_allclose(fast.chol.factor(theta).L22, dense.chol.factor(theta).L22, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(fast.solve(theta).beta, dense.solve(theta).beta, rtol=1e-10)


@pytest.mark.parametrize("formula, data, diagonal", [
    ("Reaction ~ Days + (Days || Subject)", "sleepstudy", True),
    ("strength ~ 1 + (1 | batch/cask)", "Pastes", True),
    ("diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin", False),
    ("Reaction ~ Days + (Days | Subject) + (1 | day)", "sleepstudy", False),
    ("strength ~ 1 + (1 | batch) + (1 | batch:cask) + (1 | cask)", "Pastes", False),
])
def test_which_rest_blocks_are_diagonal(formula, data, diagonal):
    """``_diagonal_rest`` against its definition on the dense A21: one scalar rest term, and
    each level of the first term (its k columns) meets at most one rest column."""
    from hierlmm.deviance import Deviance

    df = hl.datasets.load(data)
    if "day" in formula:
        df = df.assign(day=df["Days"].astype(str))
    dev = Deviance(hl.LMM(formula, df).design)
    chol, cp = dev.chol, dev.cp
    q, k = cp.q_rest, chol.first.k
    A21 = cp.A21.toarray() if hasattr(cp.A21, "toarray") else np.asarray(cp.A21)
    meets = [np.flatnonzero(np.any(A21[:q, j * k:(j + 1) * k] != 0, axis=1)) for j in range(chol.first.m)]
    brute = len(chol.rest) == 1 and chol.scalar_rest and all(len(r) <= 1 for r in meets)
    assert chol._diagonal_rest() == brute == diagonal


def test_ranova_reduces_a_diagonal_term_as_lme4s_double_bar():
    """``Days in diag(Days | Subject)`` fits ``diag(1 | Subject)``: the row lmerTest gives
    ``(0 + Days | Subject)`` of ``(Days || Subject)``."""
    s = hl.datasets.load("sleepstudy")
    a = fit("Reaction ~ Days + diag(Days | Subject)", s).ranova()
    b = fit("Reaction ~ Days + (Days || Subject)", s).ranova()
    assert list(a.index) == ["<none>", "Days in diag(Days | Subject)"]
    for col in ("loglik", "lrt", "p", "p_mixture"):
        assert a.loc["Days in diag(Days | Subject)", col] == pytest.approx(b.loc["(0 + Days | Subject)", col],
                                                                           rel=1e-6)
