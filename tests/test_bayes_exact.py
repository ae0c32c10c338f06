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


@pytest.mark.parametrize("data, formula", [("Dyestuff", "Yield ~ 1 + (1 | Batch)"),
                                           ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
                                           ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)")])
def test_flat_sd_mode_in_sds_is_reml(data, formula):
    """Flat on σ, the SDs and (uniformly) the correlations: the density in those coordinates
    is ∝ the REML likelihood, so its mode is REML, as the flat prior's in variances."""
    model = hl.LMM(formula, hl.datasets.load(data))
    fit = model.fit()
    mode = model.posterior_mode(prior="flat_sd")
    assert mode.coordinates == "sds" and not mode.unbounded
    np.testing.assert_allclose(mode.varcorr().vcov, fit.varcorr.vcov, rtol=1e-4)


def test_a_mode_depends_on_the_coordinates():
    """Dyestuff: the flat_sd density in variances, ∝ L_REML σ⁻¹ τ⁻¹, grows without bound as
    τ² → 0 (no mode: said so, not a local maximum); the flat prior's density in SDs carries
    the Jacobian 4στ and has its mode above REML."""
    from hierlmm.bayes.priors import Layout

    model = hl.LMM("Yield ~ 1 + (1 | Batch)", hl.datasets.load("Dyestuff"))
    fit = model.fit()
    none = model.posterior_mode(prior="flat_sd", coordinates="variances")
    assert none.unbounded and np.isnan(none.sigma2)
    dev, layout = model.deviance_function(), Layout(model.design)
    s2 = fit.sigma ** 2

    def log_density(tau2):  # flat_sd, in variances
        return (-0.5 * dev.unprofiled(np.array([np.sqrt(tau2 / s2)]), np.sqrt(s2))
                + layout.log_prior("flat_sd", [np.array([[np.sqrt(tau2)]])], s2))

    values = [log_density(t) for t in (fit.varcorr.vcov[0], 1e-10, 1e-100, 1e-300)]
    assert values == sorted(values) and values[-1] - values[-2] > 100  # ~ −½ log τ² → ∞
    up = model.posterior_mode(prior="flat", coordinates="sds")
    assert up.varcorr().vcov[0] > 1.2 * fit.varcorr.vcov[0]
    # the density in SDs is the density in variances times |∂(σ², τ²)/∂(σ, τ)| = 4στ
    from hierlmm.bayes.mode import log_jacobian_sds

    L = [np.array([[np.sqrt(up.D["Batch"].iloc[0, 0])]])]
    assert log_jacobian_sds(L, up.sigma2) == pytest.approx(np.log(4 * np.sqrt(up.sigma2) * L[0][0, 0]))


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


def _subset(data, column, k):
    df = hl.datasets.load(data)
    return df[df[column].isin(df[column].cat.categories[:k])]


# Known answers. A balanced design's REML likelihood factorises into ANOVA kernels
# λ^(-df/2) exp(-SS/2λ), λ = σ² + c τ² (one-way: df = levels - 1; crossed: the factor's
# levels - 1; nested: batches - 1 and batches x (casks - 1)), and the flat prior on τ² is flat
# on λ: the tail ∫^∞ λ^(-df/2) dλ converges iff df > 2; flat on τ is ∝ λ^(-1/2): iff df > 1.
PROPRIETY_CASES = [
    # data, formula, (column, levels kept), prior, proper
    ("Dyestuff", "Yield ~ 1 + (1 | Batch)", ("Batch", 3), "flat", False),
    ("Dyestuff", "Yield ~ 1 + (1 | Batch)", ("Batch", 3), "flat_sd", True),
    ("Dyestuff", "Yield ~ 1 + (1 | Batch)", ("Batch", 4), "flat", True),
    ("Pastes", "strength ~ 1 + (1 | batch/cask)", None, "flat", True),
    ("Pastes", "strength ~ 1 + (1 | batch/cask)", None, "flat_sd", True),
    ("Pastes", "strength ~ 1 + (1 | batch/cask)", ("batch", 3), "flat", False),
    ("Pastes", "strength ~ 1 + (1 | batch/cask)", ("batch", 3), "flat_sd", True),
    ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", None, "flat", True),
    # Hobert & Casella's count (q_i > q - t - 2a_i = 4) refused this proper posterior
    ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", ("sample", 4), "flat", True),
    ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", ("sample", 3), "flat", False),
    ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", ("sample", 3), "flat_sd", True),
]


@pytest.mark.parametrize("data, formula, keep, prior, proper", PROPRIETY_CASES)
def test_propriety_check_on_designs_with_known_answers(data, formula, keep, prior, proper):
    from hierlmm.bayes import ImproperPosteriorError, check_propriety

    df = _subset(data, *keep) if keep else hl.datasets.load(data)
    model = hl.LMM(formula, df)
    if proper:
        check_propriety(model.design, prior)
    else:
        with pytest.raises(ImproperPosteriorError, match=r"\(3 levels\) spans only r = 2 .* needs r > 2"):
            check_propriety(model.design, prior)
        with pytest.raises(ImproperPosteriorError):
            model.sample(prior=prior)  # refused before any sampler is imported


def _no_warning_check(model, prior):
    import warnings

    from hierlmm.bayes import check_propriety

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_propriety(model.design, prior)


@pytest.mark.parametrize("prior", ["flat", "flat_sd"])
def test_propriety_of_one_vector_term_is_proven(prior):
    """The README's model and Orthodont's (a level-2 covariate: r = 2) meet the module's
    sufficient conditions: no warning at all."""
    _no_warning_check(hl.LMM("Reaction ~ Days + (Days | Subject)", hl.datasets.load("sleepstudy")), prior)
    _no_warning_check(hl.LMM("distance ~ age * Sex + (age | Subject)", hl.datasets.load("Orthodont")), prior)
    # the conditions are ranks: a covariate in seconds since 2001 changes nothing
    ss = hl.datasets.load("sleepstudy")
    ss["t"] = ss.Days * 86400.0 + 1e9
    with pytest.warns(hl.ScaleWarning):  # the model says so; the propriety check must not
        model = hl.LMM("Reaction ~ t + (t | Subject)", ss)
    _no_warning_check(model, prior)


def test_propriety_of_vector_terms_says_which_condition_fails():
    from hierlmm.bayes import ProprietyNotVerifiedWarning, check_propriety

    five = hl.LMM("Reaction ~ Days + (Days | Subject)", _subset("sleepstudy", "Subject", 5))
    with pytest.warns(ProprietyNotVerifiedWarning, match=r"m - r = 5 levels - 1 level-2 columns = 4 must exceed 2k = 4"):
        check_propriety(five.design, "flat")  # a warning, no error: nothing here decides
    _no_warning_check(five, "flat_sd")  # needs m - r > k = 2
    ss = hl.datasets.load("sleepstudy")
    first = ss.Subject.cat.categories[0]
    one_day = hl.LMM("Reaction ~ Days + (Days | Subject)", ss[(ss.Days < 1) | (ss.Subject != first)])
    with pytest.warns(ProprietyNotVerifiedWarning, match=rf"1 of the 18 levels of Subject \(e.g. '{first}'\) has a Z of rank below k = 2"):
        check_propriety(one_day.design, "flat")
    ss["day"] = ss.Days.astype(str)
    two = hl.LMM("Reaction ~ Days + (Days | Subject) + (1 | day)", ss)
    with pytest.warns(ProprietyNotVerifiedWarning, match=r"covers a single vector-valued term, this model has 2 terms"):
        check_propriety(two.design, "flat_sd")


@pytest.mark.parametrize("data, formula, keep, prior, proper", [c for c in PROPRIETY_CASES if "+" not in c[1][c[1].index("(") - 3:] and "/" not in c[1]])
def test_vector_term_conditions_imply_the_exact_scalar_criterion(data, formula, keep, prior, proper):
    """With k = 1 the vector-term theorem is a sufficient condition for the exact criterion:
    where it holds the posterior must be proper (and on a one-way design it is also exact)."""
    from hierlmm.bayes.propriety import vector_term_conditions

    model = hl.LMM(formula, _subset(data, *keep) if keep else hl.datasets.load(data))
    assert (not vector_term_conditions(model.design, prior)) == proper


def _eigen_box_masses(model, bounds=(10.0, 20.0, 30.0)):
    """Flat-prior mass (unnormalised) of the boxes ``log d_1 ≤ b`` of a 2 × 2 ``D`` in its
    eigen-coordinates ``D = d_1uu' + d_2vv'`` (``u`` at angle φ, ``d_1 ≥ d_2``), where the
    flat measure ``dD`` is ``(d_1 − d_2) dd_1 dd_2 dφ``; σ² on a grid around its estimate."""
    import itertools

    dev = model.deviance_function(reml=True)
    s2 = model.fit().sigma ** 2
    g0 = np.linspace(np.log(s2) - 2, np.log(s2) + 2, 5)
    g2 = np.arange(-10, 13, 2.0)
    gphi = np.linspace(0, np.pi, 12, endpoint=False)
    g1 = np.arange(-10, bounds[-1] + 1e-9, 1.0)
    logf = np.full((g0.size, g2.size, gphi.size, g1.size), -np.inf)
    for a, b, c, d in itertools.product(*[range(g.size) for g in (g0, g2, gphi, g1)]):
        if g1[d] <= g2[b]:
            continue
        d1, d2, phi, sigma = np.exp(g1[d]), np.exp(g2[b]), gphi[c], np.exp(g0[a] / 2)
        D00 = d1 * np.cos(phi) ** 2 + d2 * np.sin(phi) ** 2
        D10 = (d1 - d2) * np.cos(phi) * np.sin(phi)
        l00 = np.sqrt(D00)  # Cholesky factor written out: |D| = d1 d2 keeps it accurate at e^40
        theta = np.array([l00, D10 / l00, np.sqrt(d1 * d2 / D00)]) / sigma
        logf[a, b, c, d] = (-0.5 * dev.unprofiled(theta, sigma) + np.log(d1 - d2) + g1[d] + g2[b] + g0[a])
    f = np.exp(logf - logf.max())
    return [f[..., g1 <= bound].sum() for bound in bounds]


@pytest.mark.parametrize("levels, proven", [(5, False), (6, True)])
def test_vector_term_condition_against_growing_boxes(levels, proven):
    """``(Days | Subject)`` on 5 and 6 subjects under the flat prior: at m − r = 5 > 2k the
    check proves propriety and the mass over boxes growing along D's largest eigenvalue
    converges (increments shrink like e^{-(ν/2 − k)Δ} = e^{-5}); at m − r = 4 = 2k it does not
    claim it, and the increments stay equal (a λ^{-1} tail: improper)."""
    from hierlmm.bayes.propriety import vector_term_conditions

    model = hl.LMM("Reaction ~ Days + (Days | Subject)", _subset("sleepstudy", "Subject", levels))
    m10, m20, m30 = _eigen_box_masses(model)
    ratio = (m30 - m20) / (m20 - m10)
    assert (not vector_term_conditions(model.design, "flat")) == proven
    if proven:
        assert ratio == pytest.approx(np.exp(-5), rel=0.2)
    else:
        assert ratio == pytest.approx(1.0, abs=0.05)


def _box_masses(model, prior, spans, loglik, bounds=(10.0, 20.0, 30.0)):
    """Posterior mass (unnormalised) of the boxes ``log τ_t² ≤ b`` for each ``b`` in ``bounds``
    along the last term's variance, from the REML likelihood ``loglik(σ², variances)`` times the
    prior on a grid in log-variances (``spans``: each other term's log-variance grid; σ² around
    its estimate). The likelihood is exact (:func:`_anova_loglik`): with every variance near
    1e13 σ², hierlmm's blocked factor has lost most digits to the cancellation in
    ``A22 − A21 W A21'``."""
    import itertools

    a = -1.0 if prior == "flat" else -0.5  # p(λ) ∝ λ^-(a+1); dλ = λ ds
    s2 = model.fit().sigma ** 2
    grids = [np.linspace(np.log(s2) - 3, np.log(s2) + 3, 9), *spans, np.arange(-10, bounds[-1] + 1e-9, 0.5)]
    logf = np.empty([g.size for g in grids])
    for idx in itertools.product(*[range(g.size) for g in grids]):
        s = [g[i] for g, i in zip(grids, idx)]
        logf[idx] = loglik(np.exp(s[0]), np.exp(np.array(s[1:]))) - a * sum(s)
    f = np.exp(logf - logf.max())
    return [f[..., grids[-1] <= b].sum() for b in bounds]


def _anova_loglik(data, df):
    """The REML log-likelihood of a balanced one-way (Dyestuff) or crossed (Penicillin) design
    as its product of ANOVA kernels (up to a constant; checked against hierlmm's by
    test_anova_factorisation_is_the_reml_likelihood), accurate at any variance; the variances in
    the model's term order."""
    from exact_anova import crossed_parts, log_kernel

    if data == "Penicillin":  # terms: plate, then sample
        cp = crossed_parts(df, "diameter", "plate", "sample")
        return lambda s2, v: (log_kernel(s2 + cp["b"] * v[0], *cp["P"]) + log_kernel(s2 + cp["a"] * v[1], *cp["S"])
                              + log_kernel(s2, *cp["E"]))
    groups = df.groupby("Batch", observed=True)["Yield"]
    n, a = int(groups.size().iloc[0]), groups.ngroups
    means = groups.mean()
    ssb = n * float(((means - df["Yield"].mean()) ** 2).sum())
    ssw = float(((df["Yield"] - groups.transform("mean")) ** 2).sum())
    return lambda s2, v: log_kernel(s2 + n * v[0], ssb, a - 1) + log_kernel(s2, ssw, a * (n - 1))


@pytest.mark.parametrize("data, formula, keep, prior, proper", [
    c for c in PROPRIETY_CASES if c[0] in ("Dyestuff", "Penicillin") and c[2] is not None])
def test_propriety_check_agrees_with_growing_boxes(data, formula, keep, prior, proper):
    """Numerically: the mass over boxes growing along the last term's variance (e^10, e^20,
    e^30) converges when the check accepts (the last increment a vanishing fraction of the
    one before: the tail decays like λ^-(r/2 + a)) and keeps growing when it refuses (equal
    increments: a λ^-1 tail). The likelihood is the designs' exact ANOVA factorisation: at
    e^30 hierlmm's blocked factor carries too few digits for this sum (a grid centred 1e-9
    differently moved the ratio from 1.00 to 1.10)."""
    from hierlmm.bayes import ImproperPosteriorError, check_propriety

    df = _subset(data, *keep)
    model = hl.LMM(formula, df)
    # the last term in lme4's order is the one with fewest levels: the one at issue
    assert model.design.terms[-1].group == keep[0]
    spans = [np.arange(-10, 12, 1.0)] * (len(model.design.terms) - 1)
    m10, m20, m30 = _box_masses(model, prior, spans, _anova_loglik(data, df))
    ratio = (m30 - m20) / (m20 - m10)
    try:
        check_propriety(model.design, prior)
        accepted = True
    except ImproperPosteriorError:
        accepted = False
    assert accepted == proper
    if proper:
        assert ratio < 0.02
    else:
        assert ratio == pytest.approx(1.0, abs=0.05)


def test_anova_factorisation_is_the_reml_likelihood():
    """The exact references of balanced designs (tests/exact_anova.py) rest on the REML
    likelihood being the product of ANOVA kernels: checked against hierlmm's at random
    parameters (the difference is one constant), for the crossed and the nested design."""
    from exact_anova import crossed_parts, log_kernel, nested_parts

    rng = np.random.default_rng(0)
    pen = hl.datasets.load("Penicillin")
    cp = crossed_parts(pen, "diameter", "plate", "sample")
    pas = hl.datasets.load("Pastes")
    npt = nested_parts(pas, "strength", "batch", "cask")
    for formula, df, kernels in [
        ("diameter ~ 1 + (1 | plate) + (1 | sample)", pen,
         lambda s2, v: (log_kernel(s2 + cp["b"] * v["plate"], *cp["P"]) + log_kernel(s2 + cp["a"] * v["sample"], *cp["S"])
                        + log_kernel(s2, *cp["E"]))),
        ("strength ~ 1 + (1 | batch/cask)", pas,
         lambda s2, v: (log_kernel(s2 + npt["r"] * v["cask:batch"] + npt["c"] * npt["r"] * v["batch"], *npt["A"])
                        + log_kernel(s2 + npt["r"] * v["cask:batch"], *npt["B"]) + log_kernel(s2, *npt["E"]))),
    ]:
        model = hl.LMM(formula, df)
        dev = model.deviance_function()
        diffs = []
        for _ in range(4):
            s2 = rng.uniform(0.1, 5)
            v = {t.group: rng.uniform(0.01, 10) for t in model.design.terms}
            theta = np.array([np.sqrt(v[t.group] / s2) for t in model.design.terms])
            diffs.append(-0.5 * dev.unprofiled(theta, np.sqrt(s2)) - kernels(s2, v))
        assert np.ptp(diffs) < 1e-8


def _one_way_marginals(d, response, group, prior):
    """Median and 95% limits of τ² and σ² for a balanced one-way design under ``prior``, from
    its ANOVA factorisation (independent of hierlmm's engine): the REML likelihood is
    ``λ^(-df_A/2) e^(-SS_A/2λ) (σ²)^(-df_E/2) e^(-SS_E/2σ²)`` with ``λ = σ² + r τ²``, times
    ``(τ² σ²)^c`` (flat on the variances: ``c = 0``; on the SDs: ``c = −1/2``). Each CDF is a
    nested adaptive quadrature (τ = √τ² as the variable of τ²'s integrals, which removes
    the prior's singularity at 0), each quantile a root of it."""
    from scipy import integrate, optimize

    Y = d.pivot_table(index=group, columns=d.groupby(group, observed=True).cumcount(), values=response,
                      observed=True).to_numpy(dtype=float)
    scale = Y.std() ** 2  # work in units where the variances are O(1)
    a, r = Y.shape
    bm, g = Y.mean(axis=1), Y.mean()
    ssa, sse = r * ((bm - g) ** 2).sum() / scale, ((Y - bm[:, None]) ** 2).sum() / scale
    dfa, dfe = a - 1, a * (r - 1)
    c = 0.0 if prior == "flat" else -0.5
    s_hat = sse / dfe

    def joint(t, s):  # relative to its value at (s_hat, s_hat), in (τ, σ²) with dτ² = 2τ dτ
        lam, lam0 = s + r * t, s_hat + r * s_hat
        return np.exp(-dfa / 2 * np.log(lam / lam0) - ssa / 2 * (1 / lam - 1 / lam0) - dfe / 2 * np.log(s / s_hat)
                      - sse / 2 * (1 / s - 1 / s_hat) + c * np.log(s / s_hat)) * 2 * t ** (0.5 + c)

    opts = dict(epsabs=0, epsrel=1e-8, limit=200)

    def over_s(t):
        return sum(integrate.quad(lambda s: joint(t, s), lo, hi, **opts)[0]
                   for lo, hi in ((0, s_hat), (s_hat, 10 * s_hat), (10 * s_hat, np.inf)))

    def over_tau(s, upper=np.inf):
        cuts = [0, np.sqrt(s_hat), 10 * np.sqrt(s_hat), np.inf]
        return sum(integrate.quad(lambda u: joint(u * u, s), lo, min(hi, upper), **opts)[0]
                   for lo, hi in zip(cuts, cuts[1:]) if lo < upper)

    tau_cdf = lambda T: sum(integrate.quad(lambda u: over_s(u * u), lo, hi, **opts)[0]  # noqa: E731
                            for lo, hi in ((0, min(T, np.sqrt(s_hat))), (min(T, np.sqrt(s_hat)), T)) if hi > lo)
    sigma_cdf = lambda S: integrate.quad(over_tau, 0, S, points=[s_hat] if S > s_hat else None, **opts)[0]  # noqa: E731
    out = {}
    for key, cdf, total, root in (("tau2", tau_cdf, tau_cdf(np.inf), lambda v: v * v),
                                  ("sigma2", sigma_cdf, integrate.quad(over_tau, 0, np.inf, **opts)[0], lambda v: v)):
        out[key] = {}
        for q, p in (("q025", 0.025), ("median", 0.5), ("q975", 0.975)):
            v = optimize.brentq(lambda x: cdf(x) / total - p, 1e-6, 100.0, xtol=1e-12, rtol=1e-9)
            out[key][q] = float(root(v)) * scale
    return out


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("prior", ["flat", "flat_sd"])
def test_posterior_grid_is_the_exact_marginal_posterior(prior):
    """model.posterior_grid(): the marginal posterior quantiles of τ² and σ² by quadrature
    equal those of Dyestuff's ANOVA factorisation (a separate computation by nested adaptive
    quadrature, to 1e-5 relative)."""
    d = hl.datasets.load("Dyestuff")
    grid = hl.LMM("Yield ~ 1 + (1 | Batch)", d).posterior_grid(prior)
    exact = _one_way_marginals(d, "Yield", "Batch", prior)
    assert list(grid.index) == ["Batch (Intercept)", "Residual"]
    for row, key in zip(grid.index, ("tau2", "sigma2")):
        for q in ("q025", "median", "q975"):
            assert grid.loc[row, q] == pytest.approx(exact[key][q], rel=1e-5), (row, q)
    fit = hl.LMM("Yield ~ 1 + (1 | Batch)", d).fit()
    np.testing.assert_allclose(grid.reml, fit.varcorr.vcov, rtol=1e-9)
    for row in grid.index:  # the plotted densities integrate to the mass between their ends
        dens = grid.attrs["density"][row]
        assert np.trapezoid(dens.density, dens.x) == pytest.approx(0.999, abs=2e-3)


def test_posterior_grid_units_and_refusals():
    """The same posterior in other units (y × 1000: variances × 1e6); models whose variances'
    posterior is not one integral, and priors it does not know, are refused by name."""
    d = hl.datasets.load("Dyestuff")
    a = hl.LMM("Yield ~ 1 + (1 | Batch)", d).posterior_grid()
    b = hl.LMM("Yield ~ 1 + (1 | Batch)", d.assign(Yield=d.Yield * 1000 + 5e6)).posterior_grid()
    np.testing.assert_allclose(b[["median", "q025", "q975"]].to_numpy(), a[["median", "q025", "q975"]].to_numpy() * 1e6,
                               rtol=1e-6)
    s = hl.datasets.load("sleepstudy")
    with pytest.raises(hl.HierlmmError, match="one scalar random term"):
        hl.LMM("Reaction ~ Days + (Days | Subject)", s).posterior_grid()
    with pytest.raises(hl.HierlmmError, match="prior='flat' or 'flat_sd'"):
        hl.LMM("Reaction ~ Days + (1 | Subject)", s).posterior_grid(prior=hl.bayes.WeaklyInformative())
    small = d[d.Batch.isin(d.Batch.cat.categories[:2])]
    with pytest.raises(hl.HierlmmError, match="improper|proper"):
        hl.LMM("Yield ~ 1 + (1 | Batch)", small).posterior_grid()
