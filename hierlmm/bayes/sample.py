"""``LMM.sample``: MCMC for a linear mixed model, with nutpie's NUTS."""

from __future__ import annotations

import numpy as np

from hierlmm.errors import HierlmmError

__all__ = ["sample", "start_point"]


def start_point(fit, layout):
    """Unconstrained start at the REML estimates (zero variances nudged off the boundary)."""
    Ls = []
    for t, D in zip(fit.design.terms, fit.covariance_matrices().values()):
        Dm = D.to_numpy() + np.eye(t.k) * max(1e-6 * fit.sigma**2, 1e-3 * np.abs(np.diag(D.to_numpy())).max())
        Ls.append(np.linalg.cholesky(Dm))
    return layout.pack(Ls, fit.sigma**2), Ls


def _nutpie_sample(model, draws, tune, chains, random_seed, progressbar, nuts_kwargs):
    import nutpie

    compiled = nutpie.compile_pymc_model(model)
    return nutpie.sample(compiled, draws=draws, tune=tune, chains=chains, seed=random_seed,
                         progress_bar=progressbar, save_warmup=False, **nuts_kwargs)


def _stats(trace):
    st = trace["sample_stats"]
    out = {}
    for name in ("diverging", "step_size", "depth", "energy", "n_steps", "mean_tree_accept"):
        if name in st:
            out[name] = st[name].to_numpy()
    return out


def sample(model, prior="flat", sampler="collapsed", draws: int = 1000, tune: int = 1000, chains: int = 2,
           random_seed=None, progressbar: bool = True, check: bool = True, **nuts_kwargs):
    """Sample the posterior of (β, b, σ², D); see :meth:`hierlmm.LMM.sample`."""
    from hierlmm.bayes.collapsed import build_collapsed_model, exact_conditional_draws
    from hierlmm.bayes.posterior import Posterior, assemble
    from hierlmm.bayes.priors import Layout, resolve_prior
    from hierlmm.bayes.propriety import check_propriety

    design = model.design
    prior = resolve_prior(prior, design.y)
    check_propriety(design, prior)
    if sampler not in ("collapsed", "hierarchical"):
        raise HierlmmError(f"sampler must be 'collapsed' or 'hierarchical', got {sampler!r}")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = model.fit()
    layout = Layout(design)
    x0, Ls = start_point(fit, layout)
    rng = np.random.default_rng(random_seed)
    seed = int(rng.integers(2**31 - 1))
    if sampler == "collapsed":
        pm_model, layout = build_collapsed_model(design, prior, x0, cp=model.deviance_function().cp)
        trace = _nutpie_sample(pm_model, draws, tune, chains, seed, progressbar, nuts_kwargs)
        x = trace["posterior"]["x"].to_numpy()
        nc, nd = x.shape[:2]
        beta, bs = exact_conditional_draws(model.deviance_function(), layout, x.reshape(nc * nd, -1), rng)
    else:
        from hierlmm.bayes.hierarchical import build_hierarchical_model

        u0 = [b @ np.linalg.inv(L).T for b, L in zip(fit.solution.b, Ls)]
        pm_model, layout = build_hierarchical_model(design, prior, x0, fit.solution.beta, u0)
        trace = _nutpie_sample(pm_model, draws, tune, chains, seed, progressbar, nuts_kwargs)
        post = trace["posterior"]
        x = post["x"].to_numpy()
        nc, nd = x.shape[:2]
        beta = post["beta"].to_numpy().reshape(nc * nd, -1)
        bs = []
        flat = x.reshape(nc * nd, -1)
        for j, t in enumerate(design.terms):
            u = post[f"u_{j}"].to_numpy().reshape(nc * nd, t.m, t.k)
            b = np.empty_like(u)
            for i in range(nc * nd):
                L = layout.unpack(flat[i])[0][j]
                b[i] = u[i] @ L.T
            bs.append(b)
    idata = assemble(model, layout, x, beta, bs, sample_stats=_stats(trace))
    post = Posterior(idata, model, prior, sampler, layout)
    if check:
        post.check()
    return post
