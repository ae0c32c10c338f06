"""The Bayesian side's exact computations, numpy only (no PyMC, nutpie or ArviZ needed).

REML = the mode of the marginal posterior of the variance parameters under flat priors (β
integrated out), ML = the joint mode, the s -> ∞ limit of a proper N(0, s²) prior on β, the
log-Jacobian of the unconstrained parametrisation by finite differences, the flat-SD prior's
density, and the propriety check (the refusal by ``sample`` needs no sampler either).
"""

from __future__ import annotations

import numpy as np
import pytest

import hierlmm as hl


@pytest.mark.parametrize("data, formula", [("Dyestuff", "Yield ~ 1 + (1 | Batch)"),
                                           ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
                                           ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)")])
def test_reml_is_the_flat_posterior_mode(data, formula):
    model = hl.LMM(formula, hl.datasets.load(data))
    fit = model.fit()
    mode = model.posterior_mode(prior="flat")
    np.testing.assert_allclose(mode.varcorr().vcov, fit.varcorr.vcov, rtol=1e-4)
    np.testing.assert_allclose(mode.beta, fit.fixef, rtol=1e-6)


def test_flat_sd_mode_is_not_reml():
    model = hl.LMM("Yield ~ 1 + (1 | Batch)", hl.datasets.load("Dyestuff"))
    mode = model.posterior_mode(prior="flat_sd")
    reml = model.fit().varcorr.vcov.to_numpy()
    assert mode.varcorr().vcov.iloc[0] < reml[0] * 0.99  # the σ⁻¹-type prior pulls the mode down


@pytest.mark.parametrize("data, formula", [("Dyestuff", "Yield ~ 1 + (1 | Batch)"),
                                           ("sleepstudy", "Reaction ~ Days + (Days | Subject)")])
def test_ml_is_the_joint_mode(data, formula):
    model = hl.LMM(formula, hl.datasets.load(data))
    ml = model.fit(method="ML")
    mode = model.posterior_mode(joint=True)
    np.testing.assert_allclose(mode.varcorr().vcov, ml.varcorr.vcov, rtol=1e-3)
    np.testing.assert_allclose(mode.beta, ml.fixef, rtol=1e-5)


@pytest.mark.parametrize("data, formula", [("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
                                           ("Rail", "travel ~ 1 + (1 | Rail)")])
def test_limit_of_proper_beta_prior_is_reml(data, formula):
    model = hl.LMM(formula, hl.datasets.load(data))
    reml = model.fit().varcorr.vcov.to_numpy()
    dist = []
    for s in (1.0, 10.0, 100.0, 1000.0):
        v = model.posterior_mode(beta_prior_sd=s).varcorr().vcov.to_numpy()
        dist.append(np.max(np.abs(v / reml - 1)))
    assert all(a > b for a, b in zip(dist, dist[1:])), dist
    assert dist[-1] < 1e-3


def test_log_jacobian_by_finite_differences():
    """The map (η, s) -> (vech D_1, vech D_2, σ²) has the log-Jacobian the priors add."""
    from hierlmm.bayes.priors import Layout

    df = hl.datasets.load("sleepstudy")
    df["g2"] = (df.Days % 3).astype(str)
    design = hl.LMM("Reaction ~ Days + (Days + I(Days**2) | Subject) + (1 | g2)", df).design
    layout = Layout(design)
    rng = np.random.default_rng(0)

    def vech_all(x):
        Ls, s2 = layout.unpack(x)
        return np.concatenate([(L @ L.T)[np.tril_indices(len(L))] for L in Ls] + [[s2]])

    for _ in range(3):
        x = rng.normal(0, 0.5, layout.size)
        h = 1e-6
        J = np.column_stack([(vech_all(x + h * e) - vech_all(x - h * e)) / (2 * h) for e in np.eye(layout.size)])
        assert np.linalg.slogdet(J)[1] == pytest.approx(layout.log_jacobian(x), abs=1e-6)


def test_flat_sd_prior_density():
    """flat_sd: p(D) = p(s, R) / |∂ vech D / ∂(s, r)| with p(s, R) ∝ 1 (k = 2)."""
    from hierlmm.bayes.priors import Layout

    design = hl.LMM("Reaction ~ Days + (Days | Subject)", hl.datasets.load("sleepstudy")).design
    layout = Layout(design)

    def D_of(v):  # v = (s1, r, s2)
        s1, r, s2 = v
        return np.array([s1 * s1, r * s1 * s2, s2 * s2])

    pts = [np.array([2.0, 0.3, 0.5]), np.array([0.7, -0.6, 3.0])]
    logj = []
    for v in pts:
        h = 1e-6
        J = np.column_stack([(D_of(v + h * e) - D_of(v - h * e)) / (2 * h) for e in np.eye(3)])
        logj.append(np.linalg.slogdet(J)[1])
    lp = []
    for s1, r, s2 in pts:
        D = np.array([[s1 * s1, r * s1 * s2], [r * s1 * s2, s2 * s2]])
        lp.append(layout.log_prior("flat_sd", [np.linalg.cholesky(D)], 1.0))
    assert lp[0] - lp[1] == pytest.approx(-(logj[0] - logj[1]), abs=1e-6)


def test_propriety_check():
    df = hl.datasets.load("Dyestuff")
    three = df[df.Batch.isin(["A", "B", "C"])]
    model = hl.LMM("Yield ~ 1 + (1 | Batch)", three)
    from hierlmm.bayes import ImproperPosteriorError, check_propriety

    with pytest.raises(ImproperPosteriorError, match=r"3 levels.*at least 4.*flat_sd"):
        check_propriety(model.design, "flat")
    check_propriety(model.design, "flat_sd")  # accepted
    with pytest.raises(ImproperPosteriorError):
        model.sample(prior="flat")  # refused before any sampler is imported
    four = df[df.Batch.isin(["A", "B", "C", "D"])]
    check_propriety(hl.LMM("Yield ~ 1 + (1 | Batch)", four).design, "flat")
