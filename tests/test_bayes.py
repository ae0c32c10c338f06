"""The Bayesian side against exact answers.

* Posterior quantiles of σ² and τ² under flat priors against ``*_flat_posterior.json`` (exact,
  by quadrature on a 1500 x 1500 grid), for both samplers and both flat priors. Tolerance:
  5 Monte Carlo standard errors of the quantile (ArviZ's ``mcse(method="quantile")``); the
  MCSE of a tail quantile estimated from two chains is itself uncertain by about a quarter.
  With 6 groups the posterior of τ² has no finite variance under the flat prior on
  variances, so quantiles, not means, are compared.
* The exact, numpy-only checks (REML = flat-prior mode, ML = joint mode, the s -> ∞ limit,
  the Jacobian, propriety) are in ``test_bayes_exact.py`` and run without PyMC.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import hierlmm as hl
from conftest import REF_DIR as REF
from conftest import load_ref
from hierlmm.bayes import WeaklyInformative
from hierlmm.bayes.propriety import ProprietyNotVerifiedWarning

pytest.importorskip("pymc")
pytest.importorskip("nutpie")
az = pytest.importorskip("arviz")
xr = pytest.importorskip("xarray")

pytestmark = pytest.mark.bayes

CASES = {
    "dyestuff": ("Dyestuff", "Yield ~ 1 + (1 | Batch)"),
    "rail": ("Rail", "travel ~ 1 + (1 | Rail)"),
    "sleepstudy_int": ("sleepstudy", "Reaction ~ Days + (1 | Subject)"),
}
PRIOR_KEY = {"flat": "flat_on_variances", "flat_sd": "flat_on_sds"}


def _sample(model, **kw):
    with warnings.catch_warnings():
        # the hierarchical sampler meets the funnel of a flat prior on a variance with few
        # groups; the draws are still checked against the exact answer below
        warnings.simplefilter("ignore", hl.ConvergenceWarning)
        return model.sample(progressbar=False, **kw)


def _mcse_quantile(draws, q):
    return float(az.mcse(xr.DataArray(draws, dims=("chain", "draw")), method="quantile", prob=q))


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["collapsed", "hierarchical"])
@pytest.mark.parametrize("prior", ["flat", "flat_sd"])
@pytest.mark.parametrize("case", list(CASES))
def test_posterior_quantiles_match_exact(case, prior, sampler):
    data, formula = CASES[case]
    model = hl.LMM(formula, hl.datasets.load(data))
    extra = {"target_accept": 0.95} if sampler == "hierarchical" else {}
    post = _sample(model, prior=prior, sampler=sampler, draws=2000, tune=1000, chains=2, random_seed=11, **extra)
    _assert_matches_reference(post, case, prior)


def _assert_matches_reference(post, case, prior):
    """σ²'s and τ²'s 2.5 %, 50 % and 97.5 % quantiles within 5 Monte Carlo SEs of the exact
    flat posterior of ``case`` (tests/reference, by brute force on a grid)."""
    exact = load_ref(f"{case}_flat_posterior")[PRIOR_KEY[prior]]
    var_name = next(v for v in post.posterior.data_vars if v.startswith("var_"))
    for key, name in (("sigma2", "sigma2"), ("tau2", var_name)):
        draws = post.posterior[name].to_numpy().reshape(post.posterior.sizes["chain"], -1)
        for q, label in ((0.025, "q025"), (0.5, "median"), (0.975, "q975")):
            est = np.quantile(draws, q)
            assert abs(est - exact[key][label]) < 5 * _mcse_quantile(draws, q), (key, label, est, exact[key][label])


def replicated_crossed(seed: int = 2026, a: int = 8, b: int = 7, r: int = 3) -> pd.DataFrame:
    """A balanced crossed design with replicates and an interaction: rows x columns x r, with
    small column and interaction variances (the flat posterior's constraints between the mean
    squares' λ then bind: 7 % of independent draws violate them)."""
    rng = np.random.default_rng(seed)
    row, col = np.meshgrid(np.arange(a), np.arange(b), indexing="ij")
    row, col = np.repeat(row.ravel(), r), np.repeat(col.ravel(), r)
    cell = row * b + col
    y = (10 + rng.normal(0, 1.0, a)[row] + rng.normal(0, np.sqrt(0.2), b)[col]
         + rng.normal(0, np.sqrt(0.05), a * b)[cell] + rng.normal(0, 1.0, len(row)))
    return pd.DataFrame({"y": y, "row": pd.Categorical([f"r{i}" for i in row]),
                         "col": pd.Categorical([f"c{j}" for j in col])})


REPLICATED = {"var_row": "R", "var_col": "C", "var_row:col": "RC", "sigma2": "E"}


def test_replicated_crossed_exact_posterior_is_right():
    """The quadrature of tests/exact_anova.py for the replicated crossed design against exact
    draws from that posterior, by rejection: under flat priors each λ of the ANOVA
    factorisation is an inverse gamma (shape df/2 − 1, scale SS/2) apart from the constraint
    λ_E ≤ λ_RC ≤ min(λ_R, λ_C), so independent draws kept where it holds are exact (the
    quantiles within 5 Monte Carlo SEs); and the factorisation against hierlmm's REML
    likelihood (one constant apart at random variances)."""
    from scipy import stats

    from exact_anova import replicated_log_posterior, replicated_parts, replicated_quantiles

    df = replicated_crossed()
    parts = replicated_parts(df, "y", "row", "col")
    rng = np.random.default_rng(1)
    n = 400_000
    lam = {k: stats.invgamma(parts[k][1] / 2 - 1, scale=parts[k][0] / 2).rvs(n, random_state=rng)
           for k in ("R", "C", "RC", "E")}
    keep = (lam["E"] <= lam["RC"]) & (lam["RC"] <= lam["R"]) & (lam["RC"] <= lam["C"])
    a, b, r = parts["a"], parts["b"], parts["r"]
    lam = {k: v[keep] for k, v in lam.items()}
    draws = {"R": (lam["R"] - lam["RC"]) / (b * r), "C": (lam["C"] - lam["RC"]) / (a * r),
             "RC": (lam["RC"] - lam["E"]) / r, "E": lam["E"]}
    probs = [0.025, 0.5, 0.975]
    for which, x in draws.items():
        for q, ref in zip(probs, replicated_quantiles(parts, probs, which)):
            se = np.sqrt(q * (1 - q) / len(x)) / stats.gaussian_kde(x[:20_000])(np.quantile(x, q))[0]
            assert abs(np.quantile(x, q) - ref) < 5 * se, (which, q, np.quantile(x, q), ref)
    model = hl.LMM("y ~ 1 + (1 | row) + (1 | col) + (1 | row:col)", df)
    dev = model.deviance_function()
    diffs = []
    for _ in range(5):
        v = {t.group: rng.uniform(0.01, 10) for t in model.design.terms}
        s2 = rng.uniform(0.1, 5)
        theta = np.array([np.sqrt(v[t.group] / s2) for t in model.design.terms])
        diffs.append(-0.5 * dev.unprofiled(theta, np.sqrt(s2))
                     - replicated_log_posterior(parts, v["row"], v["col"], v["row:col"], s2))
    assert np.ptp(diffs) < 1e-8


@pytest.mark.slow
def test_replicated_crossed_design_at_defaults_matches_exact():
    """A design of our choosing beside Pastes and Penicillin (issue 27): crossed with replicates
    and their interaction, four variances, sampled with sample()'s defaults under flat priors:
    no warning, and the quantiles of every variance within 5 Monte Carlo SEs of the exact
    posterior by quadrature (checked against exact draws above)."""
    from exact_anova import replicated_parts, replicated_quantiles

    df = replicated_crossed()
    parts = replicated_parts(df, "y", "row", "col")
    model = hl.LMM("y ~ 1 + (1 | row) + (1 | col) + (1 | row:col)", df)
    with warnings.catch_warnings():
        warnings.simplefilter("error", hl.ConvergenceWarning)
        post = model.sample(random_seed=5, progressbar=False)
    _assert_exact_quantiles(post, REPLICATED, replicated_quantiles, parts)


def _assert_exact_quantiles(post, names, quantiles, exact):
    """The 2.5 %, 50 % and 97.5 % quantiles of each variance ``names`` maps to its part of the
    ANOVA factorisation within 5 Monte Carlo SEs of ``quantiles(exact, probs, part)``."""
    probs = [0.025, 0.5, 0.975]
    for name, part in names.items():
        draws = post.posterior[name].to_numpy().reshape(post.posterior.sizes["chain"], -1)
        for q, ref in zip(probs, quantiles(exact, probs, part)):
            est = np.quantile(draws, q)
            assert abs(est - ref) < 5 * _mcse_quantile(draws, q), (name, q, est, ref)


BALANCED = {
    # data, formula, exact quantiles of each variance: name in the posterior -> (helper, part)
    "Penicillin": ("diameter ~ 1 + (1 | plate) + (1 | sample)",
                   {"var_plate": "P", "var_sample": "S", "sigma2": "E"}),
    "Pastes": ("strength ~ 1 + (1 | batch/cask)", {"var_batch": "A", "var_cask:batch": "B", "sigma2": "E"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["collapsed", "hierarchical"])
@pytest.mark.parametrize("data", list(BALANCED))
def test_balanced_designs_at_defaults_match_exact(data, sampler):
    """Crossed (Penicillin) and nested (Pastes) random intercepts under flat priors, with
    sample()'s defaults (4 chains, target_accept 0.9): no warning (no divergence; ESS and R-hat
    met, drawing more if needed), and the quantiles of every variance within 5 Monte Carlo SEs
    of the exact posterior from the ANOVA factorisation (tests/exact_anova.py; Penicillin's τ²
    of samples has a 97.5% quantile of 86.7, which the non-centred hierarchical sampler cut to
    36.6; with 2 chains the centred one's ESS was too optimistic for its slow tail)."""
    from exact_anova import crossed_parts, crossed_quantiles, nested_parts, nested_quantiles

    formula, parts = BALANCED[data]
    df = hl.datasets.load(data)
    if data == "Penicillin":
        exact = crossed_parts(df, "diameter", "plate", "sample")
        quantiles = crossed_quantiles
    else:
        exact = nested_parts(df, "strength", "batch", "cask")
        quantiles = nested_quantiles
    model = hl.LMM(formula, df)
    with warnings.catch_warnings():
        warnings.simplefilter("error", hl.ConvergenceWarning)
        post = model.sample(sampler=sampler, random_seed=3, progressbar=False)
    _assert_exact_quantiles(post, parts, quantiles, exact)


@pytest.mark.slow
def test_samplers_agree_on_correlated_slopes():
    model = hl.LMM("Reaction ~ Days + (Days | Subject)", hl.datasets.load("sleepstudy"))
    a = _sample(model, sampler="collapsed", draws=2000, tune=1000, chains=2, random_seed=5)
    b = _sample(model, sampler="hierarchical", draws=2000, tune=1000, chains=2, random_seed=6, target_accept=0.9)
    for name, idx in (("sigma2", ()), ("var_Subject", (0,)), ("var_Subject", (1,)), ("cov_Subject", (0,)),
                      ("beta", (1,))):
        da = a.posterior[name].to_numpy()[(..., *idx)]
        db = b.posterior[name].to_numpy()[(..., *idx)]
        for q in (0.05, 0.5, 0.95):
            tol = 5 * np.hypot(_mcse_quantile(da, q), _mcse_quantile(db, q))
            assert abs(np.quantile(da, q) - np.quantile(db, q)) < tol, (name, idx, q)
    # b per level agrees too (posterior means, within MC error)
    ba, bb = a.draws("b_Subject"), b.draws("b_Subject")
    se = np.sqrt(ba.var(axis=0) / 500 + bb.var(axis=0) / 500)  # conservative ESS of 500 each
    assert np.all(np.abs(ba.mean(axis=0) - bb.mean(axis=0)) < 5 * se)


@pytest.fixture(scope="module")
def sleep_post():
    model = hl.LMM("Reaction ~ Days + (Days | Subject)", hl.datasets.load("sleepstudy"))
    return model, model.fit(), _sample(model, draws=1000, tune=1000, chains=2, random_seed=3)


def test_idata_structure(sleep_post):
    model, fit, post = sleep_post
    P = post.posterior
    assert list(P["beta"].coords["coef"].values) == ["(Intercept)", "Days"]
    assert P["b_Subject"].shape[2:] == (18, 2)
    assert list(P["b_Subject"].coords["Subject_level"].values) == fit.design.terms[0].levels
    assert "corr_Subject" in P and "sd_Subject" in P and "sigma" in P
    assert "diverging" in post.idata["sample_stats"]
    assert "y" in post.idata["observed_data"]
    s = post.summary()
    assert {"mean", "sd", "ess_bulk", "ess_tail", "r_hat"} <= set(s.columns)


def test_compare_tables(sleep_post):
    model, fit, post = sleep_post
    table = hl.compare(fit, post)
    assert list(table.columns[:6]) == ["grp", "var1", "var2", "estimate", "post_mode", "mode_in"]
    assert len(table) == len(fit.varcorr) + len(fit.fixef)
    np.testing.assert_allclose(table.post_mode.astype(float), table.estimate, rtol=1e-4)  # REML = mode
    assert post.prior == "flat" and set(table.mode_in) == {"variances"}
    in_sds = hl.compare(fit, post, coordinates="sds")  # the flat posterior's density in SDs: another mode
    assert set(in_sds.mode_in) == {"SDs"} and (in_sds.post_mode[:3] > 1.01 * in_sds.estimate[:3]).any()
    from hierlmm.bayes.mode import posterior_mode

    none = posterior_mode(model, prior="flat_sd", coordinates="variances")  # no mode: said so
    assert set(hl.compare(fit, post, mode=none).post_mode) == {"none (unbounded at the boundary)"}
    assert (table.post_q025 < table.post_median).all() and (table.post_median < table.post_q975).all()
    assert (table.hdi_low < table.hdi_high).all()
    # printed: the columns that show "REML = mode" and the interval, the rest named, none cut
    text = repr(table)
    header = text.splitlines()[2].split()
    assert header == ["grp", "var1", "var2", "estimate", "post_mode", "post_median", "post_q025", "post_q975",
                      "ess_bulk", "r_hat"]
    assert "..." not in text and "also in the table: mode_in, post_mean, hdi_low" in text
    assert "(posterior mode in variances)" in text.splitlines()[0]
    rt = hl.compare_ranef(fit, post)
    assert len(rt) == 36
    # the plug-in posterior ignores the uncertainty of θ and σ: full posterior SDs are larger
    assert rt.sd_ratio.median() > 1.0


def test_short_run_warns_naming_parameters():
    model = hl.LMM("Yield ~ 1 + (1 | Batch)", hl.datasets.load("Dyestuff"))
    with pytest.warns(hl.ConvergenceWarning, match=r"(bulk ESS|tail ESS|R-hat) of (sigma2|var_Batch)") as record:
        post = model.sample(draws=60, tune=100, chains=2, random_seed=1, progressbar=False, max_draws=60)
    messages = [str(w.message) for w in record]
    assert any("bulk ESS" in m and "< 400" in m for m in messages)
    # the tail ESS is checked too, and reported as computed
    diag = post.diagnostics()
    assert {"r_hat", "ess_bulk", "ess_tail"} <= set(diag.columns)
    short_tails = diag.index[diag.ess_tail < 400]
    assert all(any(f"tail ESS of {name} is" in m for m in messages) for name in short_tails)
    assert post.extended_to is None


def test_short_default_run_draws_more_before_warning():
    """ESS below 400 (or R-hat above 1.01) after the draws asked for: the chains run again with
    more draws (the compiled model reused), up to max_draws per chain; the draws kept are the
    longer run's."""
    model = hl.LMM("Yield ~ 1 + (1 | Batch)", hl.datasets.load("Dyestuff"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hl.ConvergenceWarning)
        post = model.sample(draws=100, tune=300, chains=2, random_seed=2, progressbar=False, max_draws=2000)
    assert post.extended_to is not None and 100 < post.extended_to <= 2000
    assert post.posterior.sizes["draw"] == post.extended_to
    diag = post.diagnostics()
    # either enough draws now, or the budget is spent
    assert ((diag[["ess_bulk", "ess_tail"]].to_numpy().min() >= 400 and (diag.r_hat <= 1.01).all())
            or post.extended_to == 2000)


def test_weakly_informative_prior_runs():
    from hierlmm.bayes import WeaklyInformative

    model = hl.LMM("Yield ~ 1 + (1 | Batch)", hl.datasets.load("Dyestuff"))
    post = _sample(model, prior=WeaklyInformative(nu=3), draws=500, tune=500, chains=2, random_seed=2)
    tau = post.draws("sd_Batch")
    assert np.isfinite(tau).all() and tau.mean() > 0


@pytest.mark.parametrize("data, formula", [("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
                                           ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
                                           ("Pastes", "strength ~ 1 + (1 | batch/cask)"),
                                           ("Oats", "yield ~ nitro + (nitro | Variety:Block) + (1 | Block)")])
def test_collapsed_likelihood_is_the_reml_likelihood(data, formula):
    """The PyTensor log-likelihood the collapsed sampler uses (blocked and dense forms) equals
    −½ × the core's unprofiled REML deviance at the same (σ², D)."""
    import pytensor
    import pytensor.tensor as pt

    from hierlmm.bayes.collapsed import DenseSystem, reml_loglik_blocked_pt, reml_loglik_pt
    from hierlmm.bayes.priors import Layout
    from hierlmm.crossprod import crossproduct

    model = hl.LMM(formula, hl.datasets.load(data))
    layout = Layout(model.design)
    x = pt.vector("x")
    blocked = pytensor.function([x], reml_loglik_blocked_pt(model.design, layout, x,
                                                            crossproduct(model.design, sparse=False)))
    dense = pytensor.function([x], reml_loglik_pt(DenseSystem(model.design), layout, x))
    dev = model.deviance_function(reml=True)
    rng = np.random.default_rng(4)
    for _ in range(3):
        v = rng.normal(0, 0.5, layout.size)
        v[-1] += np.log(np.var(model.design.y))
        Ls, s2 = layout.unpack(v)
        theta = np.concatenate([t.theta_from_template(L) for t, L in zip(model.design.terms, Ls)]) / np.sqrt(s2)
        expected = -0.5 * dev.unprofiled(theta, np.sqrt(s2))
        assert blocked(v) == pytest.approx(expected, rel=1e-9)
        assert dense(v) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("prior", ["flat", "flat_sd", {"nu": 3}, {"eta": 4.0}])
def test_pytensor_prior_is_the_numpy_prior(prior):
    """The collapsed and hierarchical samplers' log p(σ², D) + log-Jacobian (PyTensor) is the
    numpy prior of the posterior mode (one function, two array libraries)."""
    import pytensor
    import pytensor.tensor as pt

    from hierlmm.bayes.collapsed import log_prior_pt
    from hierlmm.bayes.priors import Layout, WeaklyInformative, resolve_prior

    prior = WeaklyInformative(**prior) if isinstance(prior, dict) else prior
    df = hl.datasets.load("sleepstudy")
    df["g2"] = (df.Days % 3).astype(str)
    design = hl.LMM("Reaction ~ Days + (Days + I(Days**2) | Subject) + (1 | g2)", df).design
    layout = Layout(design)
    prior = resolve_prior(prior, design.y)
    x = pt.vector("x")
    f = pytensor.function([x], log_prior_pt(layout, prior, x))
    rng = np.random.default_rng(5)
    for _ in range(3):
        v = rng.normal(0, 0.5, layout.size)
        Ls, s2 = layout.unpack(v)
        assert f(v) == pytest.approx(layout.log_jacobian(v) + layout.log_prior(prior, Ls, s2), rel=1e-10, abs=1e-10)


def test_second_sample_reuses_the_compiled_model():
    """Compiling is most of a first sample() (seconds against a fraction of a second of
    sampling): the same model, sampler and prior compile once; another prior compiles anew."""
    model = hl.LMM("Yield ~ 1 + (1 | Batch)", hl.datasets.load("Dyestuff"))
    a = _sample(model, draws=200, tune=200, random_seed=1, max_draws=200)
    compiled = dict(model._compiled)
    b = _sample(model, draws=300, tune=200, random_seed=2, max_draws=300)
    assert model._compiled == compiled and len(compiled) == 1
    assert a.posterior.sizes["draw"] == 200 and b.posterior.sizes["draw"] == 300
    assert not np.allclose(a.posterior["sigma2"].to_numpy()[:, :200], b.posterior["sigma2"].to_numpy()[:, :200])
    _sample(model, prior="flat_sd", draws=200, tune=200, random_seed=1, max_draws=200)
    assert len(model._compiled) == 2


def _dense_loglik(design, beta, sigma2, Ds):
    """log N(y | o + Xβ, Σ_t Z_t (I ⊗ D_t) Z_t' + σ²W⁻¹) over all rows, dense (brute force)."""
    from scipy import stats

    from hierlmm.crossprod import term_matrix

    V = sigma2 * np.diag(1.0 / (np.ones(design.n) if design.weights is None else design.weights))
    for t, D in zip(design.terms, Ds):
        Z = term_matrix(t).toarray()
        V = V + Z @ np.kron(np.eye(t.m), D) @ Z.T
    mean = design.X @ beta + (0.0 if design.offset is None else design.offset)
    return stats.multivariate_normal.logpdf(design.y, mean, V)


def _synthetic_posterior(model, fit, n_draws=3, seed=0):
    """A Posterior whose draws are the fit's estimates perturbed (no sampling): for checking
    the arithmetic of log-likelihoods and predictions against brute force."""
    from hierlmm.bayes.posterior import Posterior, assemble
    from hierlmm.bayes.priors import Layout

    rng = np.random.default_rng(seed)
    design = model.design
    layout = Layout(design)
    Ls = [np.linalg.cholesky(D.to_numpy() + 1e-9 * np.eye(len(D))) for D in fit.covariance_matrices().values()]
    x0 = layout.pack(Ls, fit.sigma**2)
    x = x0 + 0.1 * rng.standard_normal((1, n_draws, x0.size))
    beta = fit.fixef.to_numpy() + 0.1 * rng.standard_normal((1, n_draws, design.p))
    bs = [rng.standard_normal((1, n_draws, t.m, t.k)) * 3 for t in design.terms]
    return Posterior(assemble(model, layout, x, beta, bs), model, "flat", "collapsed", layout)


def test_stock_arviz_summary_labels_every_value():
    """``arviz.summary(post.idata)`` as a PyMC user types it: every row's label names the entry
    it holds (arviz-stats stacks a dataset's variables in the order in which dimensions first
    appear; a variable whose own order differs got other entries' labels: sleepstudy's
    ``b_Subject[308, Days]`` held 309's intercept). Two terms, one with three effects; the
    covariance draws rebuild from what is stored (variances, pairs below the diagonal)."""
    d = hl.datasets.load("sleepstudy").assign(D2=lambda d: (d.Days - 4.5) ** 2 / 10,
                                              half=lambda d: np.where(d.Days < 5, "a", "b"))
    model = hl.LMM("Reaction ~ Days + (Days + D2 | Subject) + (1 | half)", d)
    post = _synthetic_posterior(model, model.fit(), n_draws=5)
    P = post.posterior
    out = az.summary(post.idata, kind="stats", round_to="none")
    assert len(out) == sum(int(np.prod(P[v].shape[2:])) for v in P.data_vars)
    for label, row in out.iterrows():
        name, _, inside = label.partition("[")
        da = P[name]
        if inside:
            values = inside[:-1].split(", ")
            da = da.sel(dict(zip(da.dims[2:], values)))
        assert row["mean"] == pytest.approx(float(da.mean()), rel=1e-12, abs=1e-12), label
    # what is stored varies: no unit diagonal, no repeated entry
    assert list(P["corr_Subject"].coords["Subject_pair"].values) == ["Days.(Intercept)", "D2.(Intercept)", "D2.Days"]
    assert "corr_half" not in P and "cov_half" not in P
    D = post.covariance("Subject")
    np.testing.assert_array_equal(D, np.swapaxes(D, -1, -2))
    np.testing.assert_array_equal(D[..., 2, 1], P["cov_Subject"].sel(Subject_pair="D2.Days"))
    np.testing.assert_allclose(np.diagonal(D, axis1=-2, axis2=-1), P["sd_Subject"].to_numpy() ** 2, rtol=1e-14)


@pytest.mark.parametrize("weighted", [False, True])
def test_log_likelihood_against_brute_force(weighted):
    """The ``log_likelihood`` group: per observation given b, and per group with b integrated
    out, whose sum over the groups is the dense multivariate normal density of all rows;
    prior weights and an offset included."""
    from scipy import stats

    d = hl.datasets.load("sleepstudy").assign(w=lambda d: 1 + (d.Days % 4), o=lambda d: 0.3 * d.Days)
    kw = {"weights": "w", "offset": "o"} if weighted else {}
    model = hl.LMM("Reaction ~ Days + (Days | Subject)", d, **kw)
    post = _synthetic_posterior(model, model.fit())
    design = model.design
    beta, sigma2, bs, Ds = post._draws()
    ll = post.log_likelihood()["log_likelihood"]["y"].to_numpy()
    w = np.ones(design.n) if design.weights is None else design.weights
    t = design.terms[0]
    for i in range(3):
        mu = design.X @ beta[0, i] + np.einsum("nk,nk->n", t.Z, bs[0][0, i][t.codes])
        mu = mu + (0.0 if design.offset is None else design.offset)
        np.testing.assert_allclose(ll[0, i], stats.norm.logpdf(design.y, mu, np.sqrt(sigma2[0, i] / w)), rtol=1e-10)
    llm = post.log_likelihood("marginal")["log_likelihood"]["y_marginal"]
    assert llm.dims == ("chain", "draw", "Subject_level") and llm.shape[-1] == 18
    np.testing.assert_array_equal(post.idata["log_likelihood"]["y"].to_numpy(), ll)  # both kept, named
    for i in range(3):
        want = _dense_loglik(design, beta[0, i], sigma2[0, i], [D[0, i] for D in Ds])
        assert float(llm[0, i].sum()) == pytest.approx(want, rel=1e-10)


def test_log_likelihood_marginal_refuses_crossed_terms():
    model = hl.LMM("diameter ~ 1 + (1 | plate) + (1 | sample)", hl.datasets.load("Penicillin"))
    post = _synthetic_posterior(model, model.fit())
    with pytest.raises(hl.HierlmmError, match="crossed"):
        post.log_likelihood("marginal")


def test_loo_and_predictions(sleep_post):
    """arviz.loo runs on the group; predictions: marginal = Xβ per draw, conditional adds each
    draw's b, a new subject's spread adds z'Dz (within Monte Carlo error), and posterior
    predictive draws centre on the conditional mean."""
    import pandas as pd

    model, fit, post = sleep_post
    loo = az.loo(post.log_likelihood())
    assert np.isfinite(loo["elpd"])
    new = pd.DataFrame({"Days": [0.0, 9.0, 9.0], "Subject": ["308", "308", "new"]})
    beta = post.posterior["beta"].to_numpy()
    b308 = post.posterior["b_Subject"].sel(Subject_level="308").to_numpy()
    marg = post.predict(new, kind="marginal").to_numpy()
    np.testing.assert_allclose(marg[..., 1], beta[..., 0] + 9 * beta[..., 1], rtol=1e-12)
    cond = post.predict(new, random_seed=1).to_numpy()
    np.testing.assert_allclose(cond[..., 1], marg[..., 1] + b308[..., 0] + 9 * b308[..., 1], rtol=1e-12)
    # the new subject: b ~ N(0, D) per draw, so Var(cond - marg) = E[z'Dz] with z = (1, 9)
    D = post.covariance("Subject")
    want = np.mean(D[..., 0, 0] + 18 * D[..., 0, 1] + 81 * D[..., 1, 1])
    diff = (cond[..., 2] - marg[..., 2]).ravel()
    se = np.std(diff**2) / np.sqrt(diff.size)  # MCSE of the mean of squares (draws nearly independent)
    assert abs(np.mean(diff**2) - want) < 5 * se
    rep = post.posterior_predictive(random_seed=2)["posterior_predictive"]["y"].to_numpy()
    mu = post.predict().to_numpy()
    z = (rep - mu).ravel() / np.sqrt(np.repeat(post.posterior["sigma2"].to_numpy().ravel(), mu.shape[-1]))
    assert abs(z.mean()) < 5 / np.sqrt(z.size) and abs(z.std() - 1) < 5 / np.sqrt(2 * z.size)


def test_same_structure_reuses_the_compiled_sampler_with_its_own_data(monkeypatch):
    """A second model with the same structure (term sizes, p) and prior samples with the
    first's compiled graph and its own cross-product A (nutpie's with_data, no compile), and
    its posterior is its own: quantiles match its exact flat posterior within 5 MCSE. (The
    PyTensor path, taken where the hand-written kernel does not apply, is forced here.)"""
    from hierlmm.bayes import kernel
    from hierlmm.bayes import sample as sample_module

    monkeypatch.setattr(kernel, "supported", lambda *a: False)

    d = hl.datasets.load("sleepstudy")
    rng = np.random.default_rng(5)
    other = d.assign(Reaction=1000 + 3 * d.Reaction[rng.permutation(len(d))].to_numpy())  # another A
    _sample(hl.LMM("Reaction ~ Days + (1 | Subject)", other), draws=200, tune=200, chains=2, random_seed=1)
    compiled = len(sample_module._BY_STRUCTURE)
    model = hl.LMM("Reaction ~ Days + (1 | Subject)", d)
    post = _sample(model, draws=2000, tune=1000, chains=2, random_seed=11)
    assert len(sample_module._BY_STRUCTURE) == compiled  # reused, not compiled again
    _assert_matches_reference(post, "sleepstudy_int", "flat")


KERNEL_CASES = [  # data, formula, model options, the prior whose gradient is checked
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)", {}, "flat"),
    ("sleepstudy", "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", {}, "flat_sd"),
    ("Orthodont", "distance ~ age * Sex + (age + I(age**2) | Subject)", {}, "weak_t"),
    ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", {}, "flat"),
    ("Pastes", "strength ~ 1 + (1 | batch/cask)", {}, "flat_sd"),
    ("Oats", "yield ~ nitro + (nitro | Variety:Block) + (1 | Block)", {}, "weak_normal"),
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)", {"weights": "w", "offset": "o"}, "flat_sd"),
    # k = 5 and k = 7 (the kernel's loops are written for any k; kernel._MAX_K = 8)
    ("sleepstudy", "Reaction ~ Days + (Days + I(Days**2) + I(Days**3) + I(Days**4) | Subject)", {}, "weak_t"),
    ("sleepstudy", "Reaction ~ Days + (poly(Days, 6) | Subject)", {}, "flat"),
]


def _kernel_setup(data, formula, kw):
    from hierlmm.bayes.priors import Layout

    df = hl.datasets.load(data)
    if kw:
        rng = np.random.default_rng(3)
        df = df.assign(w=rng.uniform(0.5, 2.0, len(df)), o=rng.normal(0, 5, len(df)))
    model = hl.LMM(formula, df, **kw)
    return model, Layout(model.design), model.deviance_function().cp


def _kernel_prior(name, y):
    from hierlmm.bayes.priors import WeaklyInformative, resolve_prior

    weak = {"weak_t": WeaklyInformative(nu=3, eta=3.0), "weak_normal": WeaklyInformative(sd_scale=20.0)}
    return resolve_prior(weak.get(name, name), y)


def _kernel_points(model, layout, n=3):
    rng = np.random.default_rng(6)
    for _ in range(n):
        v = rng.normal(0, 0.5, layout.size)
        v[-1] += np.log(np.var(model.design.y))
        yield v


@pytest.mark.parametrize("data, formula, kw, prior", KERNEL_CASES)
def test_kernel_is_the_collapsed_density_and_its_gradient(data, formula, kw, prior):
    """The hand-written, numba-compiled log-density (hierlmm/bayes/kernel.py) equals the
    core's REML likelihood plus the numpy prior and log-Jacobian at random points (a k = 3
    term, crossed, nested, two terms on one factor, weights and an offset; both improper
    priors and weakly informative ones with half-t, half-normal and LKJ parts), and its
    gradient equals PyTensor's automatic gradient of the same density."""
    import pytensor
    import pytensor.tensor as pt

    from hierlmm.bayes import kernel
    from hierlmm.bayes.collapsed import log_prior_pt, reml_loglik_blocked_pt
    from hierlmm.crossprod import crossproduct

    model, layout, cp = _kernel_setup(data, formula, kw)
    dev = model.deviance_function(reml=True)
    prior = _kernel_prior(prior, model.design.y)
    for each in ("flat", "flat_sd", _kernel_prior("weak_t", model.design.y), _kernel_prior("weak_normal", model.design.y)):
        assert kernel.supported(model.design, cp, each)
        buf = kernel.pack(model.design, cp, each)
        for v in _kernel_points(model, layout):
            Ls, s2 = layout.unpack(v)
            theta = np.concatenate([t.theta_from_template(L) for t, L in zip(model.design.terms, Ls)]) / np.sqrt(s2)
            expected = (-0.5 * dev.unprofiled(theta, np.sqrt(s2)) + layout.log_jacobian(v)
                        + layout.log_prior(each, Ls, s2))
            assert kernel.logp_grad(v, buf)[0] == pytest.approx(expected, rel=1e-9)
    x = pt.vector("x")
    graph = reml_loglik_blocked_pt(model.design, layout, x, crossproduct(model.design, sparse=False)) + \
        log_prior_pt(layout, prior, x)
    # no rewrites, Python linker: compiles in a fraction of a second, evaluates 3 points
    f = pytensor.function([x], pytensor.grad(graph, x), mode=pytensor.compile.mode.Mode(linker="py", optimizer=None))
    buf = kernel.pack(model.design, cp, prior)
    for v in _kernel_points(model, layout):
        pt_grad = f(v)
        np.testing.assert_allclose(kernel.logp_grad(v, buf)[1], pt_grad, rtol=1e-7,
                                   atol=1e-7 * np.abs(pt_grad).max())


def test_kernel_gradient_by_finite_differences():
    """Independently of PyTensor: central differences of the kernel's value (step 1e-5)."""
    from hierlmm.bayes import kernel

    model, layout, cp = _kernel_setup("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", {})
    buf = kernel.pack(model.design, cp, "flat_sd")
    v = np.array([0.2, -0.4, np.log(0.3)])
    _, grad = kernel.logp_grad(v, buf)
    h = 1e-5
    numeric = [(kernel.logp_grad(v + h * e, buf)[0] - kernel.logp_grad(v - h * e, buf)[0]) / (2 * h)
               for e in np.eye(v.size)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-6)


def test_flat_prior_sampling_compiles_nothing(monkeypatch):
    """Under the flat priors the collapsed sampler runs on the precompiled kernel: with
    PyMC's compilation made to fail, sample() still returns the posterior."""
    import nutpie

    def refuse(*a, **k):
        raise AssertionError("compiled a PyMC model")

    monkeypatch.setattr(nutpie, "compile_pymc_model", refuse)
    model = hl.LMM("Reaction ~ Days + (Days | Subject)", hl.datasets.load("sleepstudy"))
    post = model.sample(draws=300, tune=300, chains=2, random_seed=3, progressbar=False, check=False)
    assert post.posterior["var_Subject"].shape[:2] == (2, 300)


@pytest.mark.parametrize("data, formula", [("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
                                           ("Pastes", "strength ~ 1 + (1 | batch/cask)"),
                                           ("Oats", "yield ~ nitro + (nitro | Variety:Block) + (1 | Block)")])
def test_kernel_conditional_draws_are_the_core_backsolve(data, formula):
    """The compiled exact draws of (u, β) given (σ², D), and b = Λ_θ u, equal the core's
    ``backsolve(noise=σz)`` with the same z, draw by draw."""
    from hierlmm.bayes import kernel
    from hierlmm.bayes.priors import Layout
    from hierlmm.bayes.sample import start_point

    model = hl.LMM(formula, hl.datasets.load(data))
    dev = model.deviance_function()
    layout = Layout(model.design)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hl.SingularFitWarning)  # Oats: a correlation at ±1
        x0, _ = start_point(model.fit(), layout)
    xs = x0 + 0.3 * np.random.default_rng(0).standard_normal((6, x0.size))
    beta, us, bs = kernel.conditional_draws(model.design, dev.cp, xs, np.random.default_rng(1), chunk=4)
    z = np.random.default_rng(1).standard_normal((6, model.design.q + model.design.p))
    for i in range(6):
        _, _, theta, sigma = layout.theta_sigma(xs[i])
        beta_core, u_core, b_core = dev.backsolve(theta, dev.chol.factor(theta), noise=sigma * z[i])
        np.testing.assert_allclose(beta[i], beta_core, rtol=1e-9, atol=1e-9)
        for u, uc in zip(us, u_core):
            np.testing.assert_allclose(u[i], uc, rtol=1e-9, atol=1e-9)
        for b, bc in zip(bs, b_core):
            np.testing.assert_allclose(b[i], bc, rtol=1e-9, atol=1e-9)


def test_kernel_on_random_models(monkeypatch):
    """On the differential suite's random models (intercepts, slopes, `||`, factor slopes,
    nested, crossed, weights, offsets, covariates on extreme scales; none chosen for the
    kernel), wherever the kernel applies: its value is the core's REML likelihood plus the
    prior and log-Jacobian, and its gradient matches central differences; where the first
    term's levels were packed in groups of equal A11 (kernel.pack), value and gradient equal
    those of the same model packed level by level."""
    from generator import generate

    from hierlmm.bayes import kernel
    from hierlmm.bayes.priors import Layout

    rng = np.random.default_rng(8)
    checked = grouped = 0
    cases = [c for c in generate(20261125, 40) if not c.ar1 and not c.structure]  # the Bayesian side: lme4's terms
    for case in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                model = hl.LMM(case.formula, case.data, weights=case.weights)
            except hl.DataError:  # a design that cannot be fitted (checked against R in tests/differential)
                continue
        cp = model.deviance_function().cp
        if not kernel.supported(model.design, cp, "flat"):
            continue
        checked += 1
        layout = Layout(model.design)
        dev = model.deviance_function(reml=True)
        prior = ["flat", "flat_sd"][checked % 2]
        buf = kernel.pack(model.design, cp, prior)
        v = rng.normal(0, 0.5, layout.size)
        v[-1] += np.log(np.var(model.design.y))
        Ls, s2 = layout.unpack(v)
        theta = np.concatenate([t.theta_from_template(L) for t, L in zip(model.design.terms, Ls)]) / np.sqrt(s2)
        expected = -0.5 * dev.unprofiled(theta, np.sqrt(s2)) + layout.log_jacobian(v) + layout.log_prior(prior, Ls, s2)
        value, grad = kernel.logp_grad(v, buf)
        assert value == pytest.approx(expected, rel=1e-8), case.id
        if buf[18] > 0:
            grouped += 1
            with monkeypatch.context() as mp:
                mp.setattr(kernel, "_MAX_GROUPED", 0)
                plain = kernel.pack(model.design, cp, prior)
            assert plain[18] == 0
            v_plain, g_plain = kernel.logp_grad(v, plain)
            assert value == pytest.approx(v_plain, rel=1e-12), case.id
            np.testing.assert_allclose(grad, g_plain, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(g_plain).max()))
        h = 1e-5 * np.maximum(1.0, np.abs(v))
        numeric = [(kernel.logp_grad(v + hi * e, buf)[0] - kernel.logp_grad(v - hi * e, buf)[0]) / (2 * hi)
                   for hi, e in zip(h, np.eye(v.size))]
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(grad).max()),
                                   err_msg=case.id)
    assert checked >= 0.75 * len(cases)  # the kernel is the path of most models, not a corner
    assert 3 <= grouped < checked, grouped  # both ways of packing the first term were checked


def test_a_cold_kernel_cache_is_detected(tmp_path, monkeypatch):
    """The first sample() on a machine says that it compiles: numba keeps the kernel where
    NUMBA_CACHE_DIR says; no index there, or one that numba would not use (another numba,
    another source), means a compilation; an index of these bytes does not, whatever the
    source file's time (numba 0.68 stamps the source by its SHA-256: a reinstall or a checkout
    that touches the file leaves the cache valid, and an mtime check took it for cold)."""
    import hashlib
    import importlib.metadata
    import importlib.util
    import os
    import pickle

    from hierlmm.bayes import kernel

    source = importlib.util.find_spec("hierlmm.bayes._kernel_impl").origin
    digest = hashlib.sha256(open(source, "rb").read()).digest()
    version = importlib.metadata.version("numba")

    def index(name, stamp, numba_version=version):
        path = tmp_path / f"_kernel_impl.{name}-525.py312.nbi"
        path.write_bytes(pickle.dumps(numba_version) + pickle.dumps((stamp, {})))
        os.utime(path, (0, 0))  # older than the source: not what decides

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    assert kernel._cache_is_cold()
    for name in ("logp_c", "expand_c"):
        index(name, digest)
    assert not kernel._cache_is_cold()
    index("logp_c", hashlib.sha256(b"another source").digest())
    assert kernel._cache_is_cold()
    index("logp_c", digest, numba_version="0.1.0")
    assert kernel._cache_is_cold()
    (tmp_path / "_kernel_impl.logp_c-525.py312.nbi").write_bytes(b"")  # unreadable
    assert kernel._cache_is_cold()
    st = os.stat(source)
    index("logp_c", (st.st_mtime, st.st_size))  # older numbas' stamp
    assert not kernel._cache_is_cold()


def test_a_cold_kernel_compiles_in_the_background_and_sample_waits(tmp_path, monkeypatch, capsys):
    """The first fit() of a session on a machine whose kernel cache is cold starts its
    compilation in a low-priority process (once; not when HIERLMM_PRECOMPILE=0); the sampler
    then waits for that process, saying so, instead of compiling again. A stand-in process
    that fills a fake cache after 1 s plays numba here."""
    import sys
    import time

    from hierlmm.bayes import kernel

    cache = tmp_path / "cache.nbi"
    monkeypatch.setattr(kernel, "_KERNEL", {})
    monkeypatch.setattr(kernel, "_BACKGROUND", {})
    monkeypatch.setattr(kernel, "_cache_is_cold", lambda: not cache.exists())
    monkeypatch.setattr(kernel, "_lock_path", lambda: str(tmp_path / "lock.pid"))
    stand_in = [sys.executable, "-c", f"import time, pathlib; time.sleep(1); pathlib.Path({str(cache)!r}).touch()"]
    monkeypatch.setenv("HIERLMM_PRECOMPILE", "0")
    assert not kernel.compile_in_background(stand_in)
    monkeypatch.delenv("HIERLMM_PRECOMPILE")
    start = time.time()
    assert kernel.compile_in_background(stand_in)
    assert not kernel.compile_in_background(stand_in)  # once per session
    assert (tmp_path / "lock.pid").read_text() == str(kernel._BACKGROUND["pid"])
    kernel._wait_for_background()
    assert cache.exists() and time.time() - start >= 0.9
    assert "compiled into numba's cache in the background" in capsys.readouterr().err
    # another session: the lock names a live process, so it neither starts one nor compiles
    monkeypatch.setattr(kernel, "_BACKGROUND", {})
    cache.unlink()
    other = __import__("subprocess").Popen(stand_in)
    (tmp_path / "lock.pid").write_text(str(other.pid))
    assert not kernel.compile_in_background(stand_in)
    kernel._wait_for_background()  # ends when the cache is filled (our own child stays a zombie until waited)
    other.wait()
    assert cache.exists()


def _kernel_unavailable(monkeypatch):
    """The state of a first session on a machine: the kernel compiling in the background, so
    not to be loaded or waited for (a call of _build() fails the test)."""
    from hierlmm.bayes import kernel

    def _build():
        raise AssertionError("sample() waited for the kernel")

    monkeypatch.setattr(kernel, "compiling", lambda: True)
    monkeypatch.setattr(kernel, "_build", _build)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_first_sample_while_the_kernel_compiles_is_exact_and_does_not_wait(monkeypatch, capsys, case):
    """While the kernel compiles in the background, sample() (defaults: 4 chains, 1000 + 1000)
    of a model the kernel covers runs the independence sampler on the core's factor, loads and
    waits for nothing, and its posterior is the exact one (quantiles of σ² and τ² within 5
    Monte Carlo SEs), with no warning, also for 6 groups (Dyestuff, Rail: heavy tails); it
    says so on stderr."""
    _kernel_unavailable(monkeypatch)
    data, formula = CASES[case]
    model = hl.LMM(formula, hl.datasets.load(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error", hl.ConvergenceWarning)
        post = model.sample(random_seed=12, progressbar=False)
    assert "acceptance_rate" in post.idata.sample_stats and "n_steps" not in post.idata.sample_stats
    assert not model._compiled  # stood in for the kernel: not kept for later calls
    assert "meanwhile sample() draws the same posterior" in capsys.readouterr().err  # says what it does
    _assert_matches_reference(post, case, "flat")


def test_first_sample_falls_back_to_the_kernel_when_its_chains_fall_short(monkeypatch):
    """Where the independence sampler's chains fail the ESS / R-hat checks, sample() takes the
    kernel (waiting for it) and runs NUTS, and keeps that sampler for the model's later calls."""
    import hierlmm.bayes.sample as hs
    from hierlmm.bayes import kernel

    monkeypatch.setattr(kernel, "compiling", lambda: True)
    calls, original = [], hs._mixed

    def mixed(post):  # the first check (the interim chains) fails, the others as computed
        calls.append("nuts" if "n_steps" in post.idata.sample_stats else "independence")
        return False if len(calls) == 1 else original(post)

    monkeypatch.setattr(hs, "_mixed", mixed)
    model = hl.LMM("Reaction ~ Days + (Days | Subject)", hl.datasets.load("sleepstudy"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hl.ConvergenceWarning)
        post = model.sample(random_seed=3, progressbar=False, draws=300, tune=300, chains=2, max_draws=300)
    assert calls[0] == "independence" and "n_steps" in post.idata.sample_stats  # then NUTS on the kernel
    assert ("collapsed", "flat") in model._compiled


@pytest.mark.slow
@pytest.mark.parametrize("prior", ["flat", "flat_sd"])
def test_structured_term_samples_the_exact_posterior(prior):
    """``homdiag(1 | Batch)`` is ``(1 | Batch)``: flat on its variance (``"flat"``) or its SD
    (``"flat_sd"``) the posterior is Dyestuff's exact one, within 5 Monte Carlo SEs."""
    model = hl.LMM("Yield ~ 1 + homdiag(1 | Batch)", hl.datasets.load("Dyestuff"))
    with pytest.warns(ProprietyNotVerifiedWarning, match=r"homdiag\(1 \| Batch\)"):
        post = _sample(model, prior=prior, draws=2000, tune=1000, chains=2, random_seed=11)
    _assert_matches_reference(post, "dyestuff", prior)


@pytest.mark.slow
def test_diag_term_samples_as_lme4s_double_bar():
    """``diag(Days | Subject)`` and ``(Days || Subject)`` are one model with one flat prior (on
    each variance): their posteriors agree within Monte Carlo error; the diagonal term stores no
    covariance (nothing that does not vary), and ArviZ's summary labels every row."""
    s = hl.datasets.load("sleepstudy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ProprietyNotVerifiedWarning)
        a = _sample(hl.LMM("Reaction ~ Days + diag(Days | Subject)", s), draws=2000, tune=1000, chains=2,
                    random_seed=5)
    b = _sample(hl.LMM("Reaction ~ Days + (Days || Subject)", s), draws=2000, tune=1000, chains=2, random_seed=6)
    assert "cov_Subject" not in a.posterior and "corr_Subject" not in a.posterior
    pairs = [(a.posterior["var_Subject"].to_numpy()[..., j], b.posterior[name].to_numpy()[..., 0])
             for j, name in enumerate(["var_Subject", "var_Subject.1"])]
    pairs.append((a.posterior["sigma2"].to_numpy(), b.posterior["sigma2"].to_numpy()))
    for da, db in pairs:
        for q in (0.05, 0.5, 0.95):
            tol = 5 * np.hypot(_mcse_quantile(da, q), _mcse_quantile(db, q))
            assert abs(np.quantile(da, q) - np.quantile(db, q)) < tol, q
    table = az.summary(a.idata, var_names=["~b_"], filter_vars="like")
    assert "var_Subject[Days]" in table.index and table["r_hat"].max() < 1.01


def test_what_the_samplers_do_not_take_of_a_structure_is_refused_by_name():
    d = pd.read_csv(REF / "machines.csv")
    d["Machine"] = pd.Categorical(d["Machine"])
    d["Worker"] = pd.Categorical(d["Worker"].astype(str))
    toep = hl.LMM("score ~ Machine + toep(0 + Machine | Worker)", d)
    with pytest.raises(hl.HierlmmError, match=r"toep\(0 \+ Machine \| Worker\) \(heterogeneous Toeplitz\)"):
        toep.sample(draws=10, tune=10, chains=1, progressbar=False)
    cs = hl.LMM("score ~ Machine + cs(0 + Machine | Worker)", d)
    with pytest.raises(hl.HierlmmError, match="prior='flat'"):
        cs.sample(prior=WeaklyInformative(), draws=10, tune=10, chains=1, progressbar=False)
    with pytest.raises(hl.HierlmmError, match="sampler='collapsed'"):
        cs.sample(sampler="hierarchical", draws=10, tune=10, chains=1, progressbar=False)
    with pytest.raises(hl.HierlmmError, match="unstructured"):
        cs.posterior_mode()


# ---------------------------------------------------------------- the numpy density (large models)
@pytest.mark.parametrize("data, formula, kw, prior", KERNEL_CASES[:7])
def test_numpy_density_is_the_kernel(data, formula, kw, prior):
    """hierlmm/bayes/numpy_density.py (the core's factor and its reverse pass, for the models
    too large for the kernel) equals the compiled kernel, value and gradient, at random points,
    for every prior and the kernel's cases (crossed, nested, two terms on a factor, weights and
    an offset)."""
    from hierlmm.bayes import kernel
    from hierlmm.bayes.numpy_density import NumpyDensity

    model, layout, cp = _kernel_setup(data, formula, kw)
    for each in ("flat", "flat_sd", _kernel_prior("weak_t", model.design.y), _kernel_prior(prior, model.design.y)):
        density = NumpyDensity(model, each)
        buf = kernel.pack(model.design, cp, each)
        for v in _kernel_points(model, layout):
            value, grad = density(v)
            k_value, k_grad = kernel.logp_grad(v, buf)
            assert value == pytest.approx(k_value, rel=1e-11, abs=1e-9)
            assert density.value(v) == value  # the value alone (the independence sampler's)
            np.testing.assert_allclose(grad, k_grad, rtol=1e-9, atol=1e-9 * np.abs(k_grad).max())


@pytest.mark.parametrize("formula", ["Reaction ~ Days + diag(Days | Subject)", "Reaction ~ Days + homdiag(Days | Subject)"])
def test_numpy_density_of_structured_terms_is_the_graph(formula):
    """Where the kernel does not go (structured terms), against the PyTensor graph and its
    automatic gradient."""
    import pytensor
    import pytensor.tensor as pt

    from hierlmm.bayes.collapsed import log_prior_pt, reml_loglik_blocked_pt
    from hierlmm.bayes.numpy_density import NumpyDensity
    from hierlmm.crossprod import crossproduct

    model, layout, _ = _kernel_setup("sleepstudy", formula, {})
    x = pt.vector("x")
    for prior in ("flat", "flat_sd"):
        graph = reml_loglik_blocked_pt(model.design, layout, x, crossproduct(model.design, sparse=False)) + \
            log_prior_pt(layout, prior, x)
        f = pytensor.function([x], [graph, pytensor.grad(graph, x)],
                              mode=pytensor.compile.mode.Mode(linker="py", optimizer=None))
        density = NumpyDensity(model, prior)
        for v in _kernel_points(model, layout):
            value, grad = density(v)
            g_value, g_grad = f(v)
            assert value == pytest.approx(float(g_value), rel=1e-10)
            np.testing.assert_allclose(grad, g_grad, rtol=1e-8, atol=1e-8 * np.abs(g_grad).max())


@pytest.mark.slow
def test_beyond_the_kernel_the_posterior_does_not_depend_on_the_units(monkeypatch):
    """sleepstudy's ``(Days | Subject)`` taken as beyond the kernel, and again with the response
    in other units with a large mean (y × 10³ + 10¹⁰), Days in units of 10⁻⁸ days as int64, the
    subjects relabelled and the rows shuffled: the independence sampler runs on both (it judged
    the mode by an absolute gradient, of order 10⁸ off the factor's diagonal in these units,
    and fell back to a slow NUTS), and each variance, covariance and σ², rescaled, has the same
    5/50/95 % quantiles within 5 Monte Carlo SEs."""
    from hierlmm.bayes import kernel

    monkeypatch.setattr(kernel, "supported", lambda *a: False)
    monkeypatch.setattr(kernel, "beyond_its_size", lambda *a: True)
    d = hl.datasets.load("sleepstudy")
    c, a = 1e3, 10**8
    other = d.assign(Reaction=d.Reaction * c + 1e10, Days=(d.Days * a).astype("int64"),
                     Subject=pd.Categorical("s" + d.Subject.astype(str).str[::-1]))
    other = other.sample(frac=1, random_state=2).reset_index(drop=True)
    posts = []
    for frame in (d, other):
        with warnings.catch_warnings():
            warnings.simplefilter("error", hl.ConvergenceWarning)
            warnings.simplefilter("ignore", hl.ScaleWarning)  # Days' SD of 2.9e8: meant
            post = hl.LMM("Reaction ~ Days + (Days | Subject)", frame).sample(random_seed=7, progressbar=False)
        assert "n_steps" not in post.idata.sample_stats  # the independence sampler ran
        posts.append(post.posterior)
    scales = [("var_Subject", 0, c**2), ("var_Subject", 1, c**2 / a**2), ("cov_Subject", 0, c**2 / a),
              ("sigma2", None, c**2)]
    for name, j, scale in scales:
        da, db = (p[name].to_numpy() if j is None else p[name].to_numpy()[..., j] for p in posts)
        db = db / scale
        for q in (0.05, 0.5, 0.95):
            tol = 5 * np.hypot(_mcse_quantile(da, q), _mcse_quantile(db, q))
            assert abs(np.quantile(da, q) - np.quantile(db, q)) < tol, (name, j, q)


@pytest.mark.slow
def test_beyond_the_kernel_beta_and_b_are_exact_given_each_draw(monkeypatch):
    """The independence sampler draws (β, b) beside each move (hierlmm/bayes/independence.py):
    on Dyestuff (balanced, one-way), given τ² and σ², exactly β ~ N(ȳ, V_β), V_β = (τ² + σ²/n)/m,
    and b_i ~ N(s(ȳ_i − ȳ), (1 − s)τ² + s²V_β), s = τ²/(τ² + σ²/n). Standardised by each draw's
    own τ² and σ², β and every b_i have mean 0 and mean square 1 within 5 Monte Carlo SEs (a draw
    of (β, b) at another draw's point, or without its noise, breaks the mean square)."""
    from hierlmm.bayes import kernel

    monkeypatch.setattr(kernel, "supported", lambda *a: False)
    monkeypatch.setattr(kernel, "beyond_its_size", lambda *a: True)
    d = hl.datasets.load("Dyestuff")
    post = hl.LMM("Yield ~ 1 + (1 | Batch)", d).sample(random_seed=8, progressbar=False)
    assert "n_steps" not in post.idata.sample_stats
    p = post.posterior
    levels = list(p["b_Batch"].coords["Batch_level"].to_numpy())
    means = d.groupby("Batch", observed=True)["Yield"].mean()
    ybar, n, m = d["Yield"].mean(), len(d) // len(means), len(means)
    tau2, sigma2 = p["var_Batch"].to_numpy()[..., 0], p["sigma2"].to_numpy()
    v_beta = (tau2 + sigma2 / n) / m
    s = tau2 / (tau2 + sigma2 / n)
    zs = [(p["beta"].to_numpy()[..., 0] - ybar) / np.sqrt(v_beta)]
    for i, level in enumerate(levels):
        b = p["b_Batch"].to_numpy()[:, :, i, 0]
        zs.append((b - s * (means[level] - ybar)) / np.sqrt((1 - s) * tau2 + s**2 * v_beta))
    for z in zs:
        for stat, target in ((z, 0.0), (z**2, 1.0)):
            mcse = float(az.mcse(xr.DataArray(stat, dims=("chain", "draw")), method="mean"))
            assert abs(stat.mean() - target) < 5 * mcse, (stat.mean(), target, mcse)


def test_nuts_settings_are_not_silently_ignored(monkeypatch):
    """A model beyond the kernel (the independence sampler) given NUTS's settings says they are
    ignored, by name; while the kernel compiles, NUTS's settings make sample() wait for it
    rather than stand the independence sampler in."""
    from hierlmm.bayes import kernel

    d = hl.datasets.load("Dyestuff")
    monkeypatch.setattr(kernel, "supported", lambda *a: False)
    monkeypatch.setattr(kernel, "beyond_its_size", lambda *a: True)
    with pytest.warns(hl.HierlmmWarning, match="target_accept ignored: NUTS's settings") as record:
        hl.LMM("Yield ~ 1 + (1 | Batch)", d).sample(draws=200, tune=50, chains=2, check=False, random_seed=1,
                                                    progressbar=False, target_accept=0.95)
    assert record[0].filename == __file__  # the user's line
    with warnings.catch_warnings():
        warnings.simplefilter("error", hl.HierlmmWarning)
        hl.LMM("Yield ~ 1 + (1 | Batch)", d).sample(draws=200, tune=50, chains=2, check=False, random_seed=1,
                                                    progressbar=False)
    monkeypatch.undo()
    monkeypatch.setattr(kernel, "compiling", lambda: True)

    def wait(*args):
        raise RuntimeError("waited for the kernel")

    monkeypatch.setattr(kernel, "compiled_model", wait)
    with pytest.raises(RuntimeError, match="waited for the kernel"):
        hl.LMM("Yield ~ 1 + (1 | Batch)", d).sample(draws=200, tune=50, chains=2, check=False, random_seed=1,
                                                    progressbar=False, target_accept=0.95)


def test_numpy_density_never_raises_into_the_sampler():
    """A point where nothing can be computed is -inf with a zero gradient (an exception would
    abort nutpie's thread, a panic)."""
    from hierlmm.bayes.numpy_density import NumpyDensity

    model, layout, _ = _kernel_setup("sleepstudy", "Reaction ~ Days + (Days | Subject)", {})
    density = NumpyDensity(model, "flat").for_a_chain()
    for v in (np.full(layout.size, 800.0), np.full(layout.size, np.nan), np.array([0.0, 0.0, 0.0, -800.0])):
        value, grad = density(v)
        assert value == -np.inf and np.all(grad == 0) and density.value(v) == -np.inf


@pytest.mark.slow
@pytest.mark.parametrize("case, engine", [("Penicillin", "independence"), ("replicated", "independence"),
                                          ("Penicillin", "nuts")])
def test_models_beyond_the_kernel_sample_the_exact_posterior(monkeypatch, engine, case):
    """Models taken as if beyond the kernel's size: the independence sampler at the posterior
    mode (hierlmm/bayes/independence.py) and, where it finds no mode, NUTS on the numpy density:
    every variance's quantiles within 5 Monte Carlo SEs of the exact flat posterior (ANOVA
    factorisations) with sample()'s defaults and no warning, on Penicillin (6 samples: a skewed
    posterior) and the replicated crossed design (its constraints between mean squares bind).
    Checked by mutation: weights that leave out the proposal's density put Penicillin's
    quantiles 62 Monte Carlo SEs off."""
    from exact_anova import crossed_parts, crossed_quantiles, replicated_parts, replicated_quantiles

    from hierlmm.bayes import independence, kernel

    monkeypatch.setattr(kernel, "supported", lambda *a: False)
    monkeypatch.setattr(kernel, "beyond_its_size", lambda *a: True)
    if engine == "nuts":
        monkeypatch.setattr(independence, "independence_sampler", lambda *a: None)
    if case == "Penicillin":
        df = hl.datasets.load("Penicillin")
        model = hl.LMM("diameter ~ 1 + (1 | plate) + (1 | sample)", df)
        names, quantiles, exact = BALANCED["Penicillin"][1], crossed_quantiles, crossed_parts(
            df, "diameter", "plate", "sample")
    else:
        df = replicated_crossed()
        model = hl.LMM("y ~ 1 + (1 | row) + (1 | col) + (1 | row:col)", df)
        names, quantiles, exact = REPLICATED, replicated_quantiles, replicated_parts(df, "y", "row", "col")
    with warnings.catch_warnings():
        warnings.simplefilter("error", hl.ConvergenceWarning)
        post = model.sample(random_seed=4, progressbar=False)
    stats = post.idata.sample_stats
    if engine == "independence":  # it ran: no NUTS statistics, a share of the proposals accepted
        assert "n_steps" not in stats and 0.3 < float(stats["acceptance_rate"].mean()) < 1
    else:
        assert "n_steps" in stats
    _assert_exact_quantiles(post, names, quantiles, exact)
