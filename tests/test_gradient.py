"""The criterion's gradient (hierlmm.gradient) and the quasi-Newton fit built on it.

Every gradient is compared with central differences of the criterion itself (an exact
computation up to the differences' error: h = 1e-5 in the optimiser's unit-free φ, error
O(h²) + O(ε|d|/h), below 1e-5 of the gradient's scale here); every path of the blocked
factor's storage is forced in turn; and the fits it drives must reach the optimum BOBYQA
reaches, or a lower one, on the differential suite's random models.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from generator import generate

import hierlmm as hl
import hierlmm.cholesky as cholesky_module
from hierlmm.crossprod import crossproduct
from hierlmm.deviance import Deviance
from hierlmm.optimize import theta_scale


def central(dev, theta, h=1e-5):
    """Central differences of ``dev`` at θ, with steps h in φ (``theta_scale``)."""
    s = theta_scale(dev)
    out = np.empty(theta.size)
    for i in range(theta.size):
        e = np.zeros(theta.size)
        e[i] = h / s[i]
        out[i] = (dev(theta + e) - dev(theta - e)) / (2 * e[i])
    return out


def assert_gradient(dev, theta):
    value, g = dev.value_and_gradient(theta)
    assert value == pytest.approx(dev(theta), rel=1e-14, abs=1e-12)
    fd = central(dev, theta)
    s = theta_scale(dev)  # compared in φ, where the entries share a scale
    np.testing.assert_allclose(g / s, fd / s, rtol=1e-5, atol=1e-5 * (1 + np.max(np.abs(fd / s))))


def points(dev, rng, count=2):
    """θ near lme4's start and near a boundary, inside the bounds (in φ)."""
    s = theta_scale(dev)
    lower = dev.lower * s
    out = []
    for spread in (0.4, 1.0)[:count]:
        phi = dev.theta0 * s + spread * rng.standard_normal(s.size)
        phi = np.where(np.isfinite(lower), np.maximum(phi, lower + 0.05), phi)
        out.append(phi / s)
    return out


CASES = [c for c in generate(20261125, 60) if not c.ar1]


@pytest.mark.parametrize("case", CASES[::2], ids=lambda c: c.id)
def test_gradient_matches_central_differences_on_random_models(case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = hl.LMM(case.formula, case.data, **({"weights": case.weights} if case.weights else {}))
        except hl.HierlmmError:
            pytest.skip("not a model hierlmm fits (its own test says why)")
    rng = np.random.default_rng(7)
    for reml in (True, False):
        dev = model.deviance_function(reml)
        assert dev.has_gradient
        for theta in points(dev, rng):
            assert_gradient(dev, theta)


def _crossed(n=3000, seed=1):
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 300, n), rng.integers(0, 40, n)
    d = pd.DataFrame({"x": rng.normal(size=n), "z": rng.normal(size=n), "a": [f"a{i}" for i in a],
                      "b": [f"b{i}" for i in b], "c": [f"c{i}" for i in rng.integers(0, 4, n)],
                      "w": rng.uniform(0.5, 2, n), "o": rng.normal(size=n)})
    d["y"] = d.x + rng.normal(size=300)[a] + rng.normal(size=40)[b] + rng.normal(size=n)
    return d


def _nested(n=2000, seed=5):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 400, n)
    d = pd.DataFrame({"x": rng.normal(size=n), "a": [f"a{i}" for i in a], "b": [f"b{i // 10}" for i in a]})
    d["y"] = d.x + rng.normal(size=400)[a] + rng.normal(size=40)[a // 10] + rng.normal(size=n)
    return d


FORMULAS = [
    "y ~ x + (1 | a) + (1 | b)",
    "y ~ x + (x | a) + (1 | b) + (z | c)",
    "y ~ x + (x + z | a) + (x | b)",
    "y ~ x + cs(0 + c | a) + (1 | b)",
    "y ~ x + (1 | b) + ar1(0 + c | a)",
    "y ~ x + (1 | a) + toep(0 + c | b)",
    "y ~ x + (1 | a) + diag(x + z | b)",
    "y ~ x + homcs(0 + c | a) + homdiag(x + z | b)",
    "y ~ x + offset(o) + (x | a) + (1 | b)",
]


@pytest.mark.parametrize("path", ["dense", "map", "grouped", "product", "dense copy", "dense grouped"])
@pytest.mark.parametrize("formula", FORMULAS)
def test_every_storage_path_of_the_factor(formula, path, monkeypatch):
    """The reverse pass follows each way the forward pass computes the downdate
    ``A21 W A21'`` (cholesky: a dense A21; the sparse map; the map by groups of levels with
    equal A11 blocks; a sparse product; a dense copy of a sparse A21; a dense A21 through the
    map by groups), with structured terms, weights and an offset."""
    d = _crossed()
    model = hl.LMM(formula, d, weights="w" if "offset" in formula else None)
    if path != "dense":
        if path == "map":
            monkeypatch.setattr(cholesky_module, "_MAP_MAX_ENTRIES", 10**12)
        if path in ("product", "dense copy"):
            monkeypatch.setattr(cholesky_module, "_MAP_MAX_ENTRIES", 0)
            monkeypatch.setattr(cholesky_module, "_DENSE_PRODUCT_MAX", 0 if path == "product" else 10**12)
        if path == "dense grouped":  # the groups are found for any dense A21
            monkeypatch.setattr(cholesky_module, "_DENSE_GROUPED_MIN", 0)
    rng = np.random.default_rng(3)
    for reml in (True, False):
        cp = crossproduct(model.design, sparse=path not in ("dense", "dense grouped"))
        dev = Deviance(model.design, reml=reml, cp=cp)
        if path == "dense grouped":
            assert not dev.chol._sparse
            dev.chol._downdate = "grouped"
        if path == "map" and dev.chol._downdate == "grouped":
            # the grouped map wins when it is smaller: make the per-level map the cheaper one
            monkeypatch.setattr(cholesky_module.BlockedCholesky, "_downdate_groups",
                                cholesky_module.BlockedCholesky._downdate_map)
        expected = {"dense": None, "map": ("map", "grouped"), "grouped": ("grouped", "map"),
                    "product": ("product",), "dense copy": ("dense",), "dense grouped": ("grouped",)}[path]
        if expected:
            assert dev.chol._downdate in expected
        for theta in points(dev, rng):
            assert_gradient(dev, theta)


@pytest.mark.parametrize("formula", ["y ~ x + (x | a) + (1 | b)", "y ~ x + (x || a)", "y ~ x + diag(x | a) + (1 | b)",
                                     "y ~ x + (1 | b/a)"])
def test_gradient_where_the_rest_block_is_diagonal(formula):
    """Nestings and lme4's (x || g): the rest block's random-effects part of M is diagonal
    (cholesky._diagonal_rest) and its reverse pass is diagonal plus rank p + 1."""
    model = hl.LMM(formula, _nested())
    rng = np.random.default_rng(4)
    for reml in (True, False):
        dev = model.deviance_function(reml)
        dev(dev.theta0)
        assert dev.chol._diagonal_rest()
        for theta in points(dev, rng):
            assert_gradient(dev, theta)


def test_gradient_at_the_boundary_is_zero_in_sign_free_entries():
    """The criterion is even in a sign-free entry (a scalar term's θ, the diagonal of T), so
    its derivative there is exactly 0 at 0 — what the optimiser's probes rely on."""
    model = hl.LMM("y ~ x + (x | a) + (1 | b)", _crossed())
    dev = model.deviance_function()
    theta = np.array([0.8, 0.1, 0.0, 0.0])
    assert list(dev.sign_free) == [True, False, True, True]
    _, g = dev.value_and_gradient(theta)
    assert g[2] == 0.0 and g[3] == 0.0
    assert_gradient(dev, np.array([0.8, 0.1, 0.3, 0.5]))


@pytest.mark.parametrize("kind", ["us", "diag", "homdiag", "ar1", "homcs"])
def test_sign_free_entries_leave_the_covariance_unchanged(kind):
    """What sign_free claims: negating such an entry (for a factor's diagonal, with the entries
    below it) gives the same D, hence the same criterion."""
    model = hl.LMM(f"y ~ x + {'' if kind == 'us' else kind}(0 + c | a)", _crossed())
    term = model.design.terms[0]
    rng = np.random.default_rng(0)
    par = np.abs(rng.normal(size=term.n_theta)) + 0.2
    free = term.cov.sign_free()
    assert free.any()
    for i in np.flatnonzero(free):
        other = par.copy()
        if kind == "us":
            T = term.cov.factor(par)
            j = int(term.cov.pattern[1][i])
            T[:, j] *= -1
            other = term.cov.par_from_factor(T)
        else:
            other[i] = -other[i]
        np.testing.assert_allclose(term.relcov(other), term.relcov(par), rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_fits_reach_bobyqas_optimum_or_a_lower_one(monkeypatch):
    """The quasi-Newton fit against the BOBYQA fit it replaced, on the differential suite's
    random models (REML and ML as drawn): never a higher criterion (beyond its rounding), in
    far fewer factorisations."""
    worse, evals = [], [0, 0]
    for case in CASES:
        kwargs = {"weights": case.weights} if case.weights else {}
        method = "REML" if case.reml else "ML"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                quasi = hl.LMM(case.formula, case.data, **kwargs).fit(method)
            except hl.HierlmmError:
                continue
            with monkeypatch.context() as m:
                m.setattr(Deviance, "has_gradient", False)
                bobyqa = hl.LMM(case.formula, case.data, **kwargs).fit(method)
        evals[0] += quasi.opt.evaluations
        evals[1] += bobyqa.opt.evaluations
        if quasi.opt.fun > bobyqa.opt.fun + 1e-9 * max(1.0, abs(bobyqa.opt.fun)):
            worse.append((case.id, quasi.opt.fun - bobyqa.opt.fun))
    assert not worse
    assert evals[0] < 0.5 * evals[1]


def test_a_singular_vector_fit_is_searched_again_inside_lme4s_box(monkeypatch):
    """m0115 of the differential suite's default draw without z (its drop1 row), ML: the first
    path (a factor's diagonal unbounded) stops at a singular local minimum, 38.3621; the second
    start, from lme4's start inside lme4's box, reaches BOBYQA's optimum from lme4's start
    (37.4478 in 1659 evaluations; lme4's own stop: 38.03, AIC 78.0655)."""
    case = next(c for c in generate(20261125, 150) if c.id == "m0115")
    formula = case.formula.replace(" + z", "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = hl.LMM(formula, case.data).fit("ML")
        monkeypatch.setattr(Deviance, "has_gradient", False)
        bobyqa = hl.LMM(formula, case.data).fit("ML")
    assert fit.opt.fun <= bobyqa.opt.fun + 1e-8 * abs(bobyqa.opt.fun)
    assert fit.opt.fun < 38.03
