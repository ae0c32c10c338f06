"""Properties the engine must have, checked on small random designs with hypothesis.

* The profiled deviance equals a brute-force dense computation from
  ``V = σ²(ZΛΛ'Z' + I)`` with scipy's multivariate normal density.
* Row order, relabelling of grouping levels, ``y -> y + Xc`` and ``y -> ky`` leave the fit
  invariant (β̂ shifts by ``c`` / scales by ``k``, variances scale by ``k²``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import scipy.stats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hierlmm as hl
from hierlmm.crossprod import term_matrix

FORMULAS = [
    "y ~ x + (1 | g)",
    "y ~ x + (x | g)",
    "y ~ x + (1 | g) + (1 | h)",
    "y ~ 1 + (1 | g) + (0 + x | g)",
    "y ~ x + f + (1 | g/h)",
    "y ~ x + (x | g) + (1 | h)",
    # vector-valued terms after the first (g:h has the most levels): the sparse Λ of the rest
    "y ~ x + (1 | g:h) + (1 | g) + (x | h)",
    "y ~ x + (1 | g:h) + (x | g) + (0 + f | h)",
]


@st.composite
def designs(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    ng = draw(st.integers(4, 7))
    nh = draw(st.integers(3, 5))
    n = draw(st.integers(2 * ng * nh, 3 * ng * nh))  # so g:h has fewer levels than rows
    g = rng.permutation(np.arange(n) % ng)
    h = rng.integers(0, nh, n)
    h[:nh] = np.arange(nh)
    df = pd.DataFrame({
        "g": pd.Categorical([f"g{i}" for i in g]),
        "h": pd.Categorical([f"h{i}" for i in h]),
        "x": rng.normal(size=n),
        "f": pd.Categorical(rng.choice(["a", "b", "c"], n)),
    })
    b0 = rng.normal(size=ng) * draw(st.floats(0.0, 2.0))
    b1 = rng.normal(size=nh) * draw(st.floats(0.0, 2.0))
    df["y"] = 1 + 0.5 * df.x + b0[g] + b1[h] + rng.normal(size=n)
    formula = draw(st.sampled_from(FORMULAS))
    return formula, df, rng


def brute_force_deviance(design, theta, reml):
    """−2 log-likelihood from the dense marginal density, σ² at its profiled value."""
    n, p = design.X.shape
    Zs, Ls = [], []
    for t, s in zip(design.terms, design.theta_slices()):
        Zs.append(term_matrix(t).toarray())
        Ls.append(np.kron(np.eye(t.m), t.template(theta[s])))
    Z = np.hstack(Zs)
    Lam = scipy.linalg.block_diag(*Ls)
    V0 = Z @ Lam @ Lam.T @ Z.T + np.eye(n)
    Vi = np.linalg.inv(V0)
    X, y = design.X, design.y
    XtViX = X.T @ Vi @ X
    beta = np.linalg.solve(XtViX, X.T @ Vi @ y)
    res = y - X @ beta
    r2 = res @ Vi @ res
    s2 = r2 / (n - p if reml else n)
    ll = scipy.stats.multivariate_normal(X @ beta, s2 * V0).logpdf(y)
    if not reml:
        return -2 * ll
    # ∫ N(y; Xβ, σ²V0) dβ = N(y; Xβ̂, σ²V0) (2π)^{p/2} |X'V0⁻¹X / σ²|^{-1/2}
    return -2 * ll - p * np.log(2 * np.pi) + np.linalg.slogdet(XtViX / s2)[1]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(designs(), st.booleans())
def test_deviance_equals_dense_computation(case, reml):
    formula, df, rng = case
    model = hl.LMM(formula, df)
    dev = model.deviance_function(reml=reml)
    theta = np.where(dev.lower == 0, rng.uniform(0.05, 2.5, dev.lower.size), rng.normal(0, 0.5, dev.lower.size))
    assert dev(theta) == pytest.approx(brute_force_deviance(model.design, theta, reml), rel=1e-9, abs=1e-8)


def _fit(formula, df, method="REML"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hl.SingularFitWarning)
        warnings.simplefilter("ignore", hl.ConvergenceWarning)
        return hl.LMM(formula, df).fit(method=method)


def _same_objective(a, b, beta_map=lambda beta: beta, dev_shift=0.0):
    """The two fits' deviance functions agree exactly at b's optimum (so does β̂(θ)), and
    the optimisers found the same minimum. Parameters are compared at the same θ, which is
    exact; comparing the two optima's parameters would only measure the optimiser's stopping
    tolerance in flat directions of the likelihood."""
    theta = b.solution.theta
    # r² comes out of the Cholesky factor as y'y − |c|²: a shift of y that makes y'y large
    # next to r² loses ~log10(y'y / r²) digits, hence 1e-8 rather than machine precision
    assert a.deviance_function(theta) == pytest.approx(b.deviance + dev_shift, rel=1e-8)
    sa = a.deviance_function.solve(theta)
    np.testing.assert_allclose(sa.beta, beta_map(b.solution.beta), rtol=1e-7, atol=1e-7 * np.abs(sa.beta).max())
    # two BOBYQA runs reach the same minimum only to the optimiser's accuracy (lme4's own
    # optimum misses by up to ~1e-5 on the references, see test_reference_lme4)
    assert a.deviance == pytest.approx(b.deviance + dev_shift, abs=1e-4)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(designs(), st.sampled_from(["REML", "ML"]))
def test_row_order_and_relabelling_invariance(case, method):
    formula, df, rng = case
    base = _fit(formula, df, method)
    perm = df.iloc[rng.permutation(len(df))]
    _same_objective(_fit(formula, perm, method), base)
    relab = df.copy()
    cats = list(df.g.cat.categories)
    new = {c: f"level_{i}" for i, c in enumerate(rng.permutation(cats))}
    relab["g"] = pd.Categorical(df.g.map(new).astype(str), categories=list(rng.permutation(list(new.values()))))
    other = _fit(formula, relab, method)
    _same_objective(other, base)
    # the BLUPs follow their levels
    b_base = base.ranef()["g"].rename(index=new)
    b_other = other.deviance_function.solve(base.solution.theta)
    got = pd.DataFrame(b_other.b[[t.group for t in other.design.terms].index("g")],
                       index=other.design.terms[[t.group for t in other.design.terms].index("g")].levels)
    np.testing.assert_allclose(got.loc[b_base.index].to_numpy()[:, 0], b_base.iloc[:, 0], rtol=1e-7, atol=1e-9)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(designs(), st.floats(-5, 5), st.floats(0.2, 20))
def test_shift_and_scale_of_response(case, c, k):
    formula, df, rng = case
    base = _fit(formula, df)
    X = base.design.X
    shift = rng.normal(size=X.shape[1]) * c
    moved = df.copy()
    moved["y"] = df.y + X @ shift
    _same_objective(_fit(formula, moved), base, beta_map=lambda b: b + shift)

    scaled = df.copy()
    scaled["y"] = df.y * k
    s = _fit(formula, scaled)
    n, p = X.shape
    _same_objective(s, base, beta_map=lambda b: b * k, dev_shift=(n - p) * np.log(k * k))
    # σ² scales by k² at the same θ, so every variance and covariance does
    assert s.deviance_function.solve(base.solution.theta).sigma2 == pytest.approx(base.solution.sigma2 * k * k, rel=1e-9)


@pytest.mark.parametrize(
    "data, formula",
    [
        ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
        ("Pastes", "strength ~ 1 + (1 | batch/cask)"),
        ("Oats", "yield ~ nitro + Variety + (1 | Block/Variety)"),
        ("Oats", "yield ~ nitro + (nitro | Variety:Block) + (1 | Block)"),
        ("Oats", "yield ~ nitro + (1 | Variety:Block) + (nitro | Block)"),
        ("Oats", "yield ~ nitro + (nitro | Variety:Block) + (nitro | Block) + (1 | Variety)"),
    ],
)
def test_sparse_and_dense_storage_agree(data, formula, monkeypatch):
    """The code paths of the blocked Cholesky (A21 sparse, with each of its downdates: by
    groups of equal A11 blocks, the per-level map, a sparse product, a dense copy where the map
    would be too large; A21 dense, and dense with the downdate by groups) give the same
    deviance and solution."""
    from hierlmm import cholesky
    from hierlmm.crossprod import crossproduct
    from hierlmm.deviance import Deviance

    design = hl.LMM(formula, hl.datasets.load(data)).design
    rng = np.random.default_rng(1)
    for reml, downdate in ((True, "grouped"), (False, "grouped"), (True, "map"), (False, "product"),
                           (True, "dense"), (False, "dense"), (True, "dense grouped"), (False, "dense grouped")):
        dense = Deviance(design, reml, cp=crossproduct(design, sparse=False))
        with monkeypatch.context() as mp:
            if downdate == "dense":  # the map "too large": the sparse A21 copied dense at construction
                mp.setattr(cholesky, "_MAP_MAX_ENTRIES", 0)
            if downdate == "dense grouped":  # A21 stored dense, its downdate by groups of levels
                mp.setattr(cholesky, "_DENSE_GROUPED_MIN", 0)
            sparse = Deviance(design, reml, cp=crossproduct(design, sparse=downdate != "dense grouped"))
        if downdate == "dense grouped":
            assert not sparse.cp.a21_sparse and not sparse.chol._sparse
            sparse.chol._downdate = "grouped"
        elif downdate == "dense":
            assert sparse.cp.a21_sparse and sparse.chol._downdate == "dense" and not sparse.chol._sparse
        else:
            assert sparse.cp.a21_sparse
            sparse.chol._downdate = downdate
        for _ in range(3):
            theta = np.where(dense.lower == 0, rng.uniform(0.1, 2, dense.lower.size), rng.normal(0, 0.3, dense.lower.size))
            assert sparse(theta) == pytest.approx(dense(theta), rel=1e-11)
            assert sparse(theta) == pytest.approx(brute_force_deviance(design, theta, reml), rel=1e-9)
            a, b = sparse.solve(theta), dense.solve(theta)
            np.testing.assert_allclose(a.beta, b.beta, rtol=1e-9)
            for ua, ub in zip(a.b, b.b):
                np.testing.assert_allclose(ua, ub, rtol=1e-8, atol=1e-10)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(designs(), st.booleans(), st.floats(-3, 3))
def test_new_response_and_offset_reuse_the_cross_product(case, reml, value):
    """``Deviance.with_response(y)`` (only A's response row recomputed) and
    ``Deviance.with_offset(j, b)`` (β_j fixed, from A alone) equal deviances built from
    scratch on the changed design, at any θ."""
    from hierlmm.deviance import Deviance

    formula, df, rng = case
    model = hl.LMM(formula, df)
    dev = model.deviance_function(reml=reml)
    d = model.design
    theta = np.where(dev.lower == 0, rng.uniform(0.05, 2.5, dev.lower.size), rng.normal(0, 0.5, dev.lower.size))
    y2 = rng.normal(size=d.n) * 3 + 1
    assert dev.with_response(y2)(theta) == pytest.approx(Deviance(d.with_response(y2), reml=reml)(theta), rel=1e-10)
    for j in range(d.p):
        assert dev.with_offset(j, value)(theta) == pytest.approx(
            Deviance(d.with_offset(j, value), reml=reml)(theta), rel=1e-10)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(designs())
def test_joint_deviance_equals_dense_density(case):
    """``Deviance.at_beta(θ, β, σ)`` (nothing profiled; the joint posterior mode's objective)
    is −2 log N(y; Xβ, σ²V0) computed densely, at any β."""
    formula, df, rng = case
    model = hl.LMM(formula, df)
    dev = model.deviance_function(reml=False)
    d = model.design
    theta = np.where(dev.lower == 0, rng.uniform(0.05, 2.5, dev.lower.size), rng.normal(0, 0.5, dev.lower.size))
    beta, sigma = rng.normal(0, 1, d.p), float(rng.uniform(0.5, 2))
    Zs, Ls = [], []
    for t, s in zip(d.terms, d.theta_slices()):
        Zs.append(term_matrix(t).toarray())
        Ls.append(np.kron(np.eye(t.m), t.template(theta[s])))
    Z, Lam = np.hstack(Zs), scipy.linalg.block_diag(*Ls)
    V = sigma**2 * (Z @ Lam @ Lam.T @ Z.T + np.eye(d.n))
    expected = -2 * scipy.stats.multivariate_normal(d.X @ beta, V).logpdf(d.y)
    assert dev.at_beta(theta, beta, sigma) == pytest.approx(expected, rel=1e-9)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(designs(), st.booleans())
def test_vcov_jacobian_equals_dense_derivative(case, sparse):
    """``Deviance.unscaled_vcov_jacobian`` (Satterthwaite's ``∂Var(β̂)/∂θ`` from the blocked
    factor and A) equals the dense ``U X'V⁻¹Z (∂ΛΛ'/∂θ_i) Z'V⁻¹X U``, at any θ, with A21
    sparse (the downdate map) or dense."""
    from hierlmm.crossprod import crossproduct
    from hierlmm.deviance import Deviance

    formula, df, rng = case
    d = hl.LMM(formula, df).design
    dev = Deviance(d, cp=crossproduct(d, sparse=sparse))
    theta = np.where(dev.lower == 0, rng.uniform(0.05, 2.5, dev.lower.size), rng.normal(0, 0.5, dev.lower.size))
    Zs, Ls, dLs = [], [], []
    for t, s in zip(d.terms, d.theta_slices()):
        Zs.append(term_matrix(t).toarray())
        Ls.append(np.kron(np.eye(t.m), t.template(theta[s])))
        for a, b in t.tril_pairs:  # θ's entries of an unstructured T
            E = np.zeros((t.k, t.k))
            E[a, b] = 1.0
            dLs.append((len(Ls) - 1, np.kron(np.eye(t.m), E)))
    Z, Lam = np.hstack(Zs), scipy.linalg.block_diag(*Ls)
    Vi = np.linalg.inv(Z @ Lam @ Lam.T @ Z.T + np.eye(d.n))
    U = np.linalg.inv(d.X.T @ Vi @ d.X)
    W = Z.T @ Vi @ d.X
    expected = []
    for which, E in dLs:
        dLam = scipy.linalg.block_diag(*[E if i == which else np.zeros_like(L) for i, L in enumerate(Ls)])
        dD = dLam @ Lam.T + Lam @ dLam.T
        expected.append(U @ W.T @ dD @ W @ U)
    got = dev.unscaled_vcov_jacobian(theta)
    np.testing.assert_allclose(got, np.stack(expected), rtol=1e-7, atol=1e-9 * np.abs(expected).max())
    np.testing.assert_allclose(dev.unscaled_vcov(theta), U, rtol=1e-8)
