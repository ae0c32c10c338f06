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


# compiled collapsed samplers by (prior, structure): a model of the same structure (term sizes,
# p) and prior reuses the compiled graph with its own data (nutpie's with_data): no compile
_BY_STRUCTURE: dict = {}


def _run_chains(compiled, draws, tune, chains, random_seed, progressbar, nuts_kwargs, init_mean=None):
    """The chains' trace: nutpie's NUTS, or the independence sampler's (models beyond the kernel)."""
    from hierlmm.bayes.independence import IndependenceSampler

    if isinstance(compiled, IndependenceSampler):  # no NUTS: nothing to tune, one density value per draw
        return compiled.sample(draws, tune, chains, random_seed, progressbar)
    import nutpie

    trace = nutpie.sample(compiled, draws=draws, tune=tune, chains=chains, seed=random_seed,
                          progress_bar=progressbar, save_warmup=False, init_mean=init_mean, **nuts_kwargs)
    # Ctrl-C: nutpie stops the chains and returns what it has (fewer draws, or NaN where a chain
    # had none); the user asked to stop, so stop, not go on to compute with half a trace
    x = trace["posterior"]["x"].to_numpy()
    if x.shape[:2] != (chains, draws) or not np.all(np.isfinite(x)):
        raise KeyboardInterrupt("sampling was interrupted")
    return trace


def _compiled_collapsed(model, design, prior, x0, interim_ok: bool = True):
    """The compiled collapsed sampler of ``model``: the precompiled kernel on this model's A
    where it applies (:mod:`hierlmm.bayes.kernel`); where the model is too large for it, the
    independence sampler at the posterior mode (:mod:`hierlmm.bayes.independence`: one
    factorisation per draw), or NUTS on the core's factor and gradient
    (:mod:`hierlmm.bayes.numpy_density`) where no mode is found; else the PyTensor
    graph, from the structure cache when a model of the same structure and prior was compiled
    in this session (its data swapped in), else compiled and remembered. ``interim_ok``:
    whether the independence sampler may stand in while the kernel compiles (not where the
    user gave NUTS settings)."""
    import nutpie

    import hierlmm.bayes.kernel as kernel
    from hierlmm.bayes.collapsed import blocked_data, build_collapsed_model, structure_key

    cp = model.deviance_function().cp
    if kernel.supported(design, cp, prior):  # nothing to compile: the cached hand-written kernel
        # the first sample() on a machine: no waiting while it compiles, for the models with few
        # covariance parameters (an independence sampler's acceptance falls with the dimension:
        # 0.65 at 3-4 parameters on sleepstudy, too few draws kept at 16, k = 5)
        if interim_ok and kernel.compiling() and len(x0) <= 10:
            from hierlmm.bayes.independence import independence_sampler

            interim = independence_sampler(model, prior, x0)
            if interim is not None:
                import sys

                print("hierlmm: the sampler's kernel is still being compiled in the background (once per machine "
                      "and hierlmm version); meanwhile sample() draws the same posterior with an independence "
                      "sampler on the REML engine's factor", file=sys.stderr, flush=True)
                interim.interim = True
                return interim
        return kernel.compiled_model(design, cp, prior, x0)
    if kernel.beyond_its_size(design, cp):  # the core's own factor (and its reverse pass)
        from hierlmm.bayes.independence import independence_sampler
        from hierlmm.bayes.numpy_density import numpy_model

        return independence_sampler(model, prior, x0) or numpy_model(model, prior, x0)
    blocked = design.terms[0].k <= 4 and not cp.a21_sparse
    try:
        key = (prior, structure_key(design, cp)) if blocked else None
        hash(key)
    except TypeError:  # a prior that cannot be a key
        key = None
    if key is not None and key in _BY_STRUCTURE:
        return _BY_STRUCTURE[key].with_data(**blocked_data(cp, design.n))
    pm_model, _ = build_collapsed_model(design, prior, x0, cp=cp)
    compiled = nutpie.compile_pymc_model(pm_model)
    if key is not None:
        if len(_BY_STRUCTURE) >= 32:
            _BY_STRUCTURE.pop(next(iter(_BY_STRUCTURE)))
        _BY_STRUCTURE[key] = compiled
    return compiled


def _check_structured(terms, prior, sampler) -> None:
    """Terms with a covariance structure (:mod:`hierlmm.covariance`) are sampled by the collapsed
    sampler under flat priors on their natural parameters (variances or SDs, correlations); what else is
    asked is refused by name; propriety is not proven for them (warned)."""
    from hierlmm.bayes.propriety import ProprietyNotVerifiedWarning
    from hierlmm.errors import warn

    names = ", ".join(f"{t.describe()} ({t.cov.title})" for t in terms)
    if prior not in ("flat", "flat_sd") or sampler != "collapsed":
        raise HierlmmError(f"sample() of a model with {names} is available with prior='flat' (flat on the "
                           "structure's variances and correlations) or 'flat_sd' (on its SDs) and "
                           "sampler='collapsed' only")
    missing = [t for t in terms if not t.cov.sampled]
    if missing:
        raise HierlmmError("sample() is not available for " + ", ".join(f"{t.describe()} ({t.cov.title})"
                                                                     for t in missing) + "; fit it with .fit()")
    warn(f"propriety of the flat-prior posterior is not proven for {names} (flat on their variances or SDs and "
         "correlations): "
         "check that the chains settle (R-hat, ESS) and that the SDs' posteriors do not run off to large values",
         ProprietyNotVerifiedWarning)


def _stats(trace):
    st = trace["sample_stats"]
    out = {}
    for name in ("diverging", "step_size", "depth", "energy", "n_steps", "mean_tree_accept", "acceptance_rate", "lp"):
        if name in st:
            out[name] = st[name].to_numpy()
    return out


def sample(model, prior="flat", sampler="collapsed", draws: int = 1000, tune: int = 1000, chains: int = 4,
           random_seed=None, progressbar: bool = True, check: bool = True, max_draws: int | None = None,
           **nuts_kwargs):
    """Sample the posterior of (β, b, σ², D); see :meth:`hierlmm.LMM.sample`.

    When the bulk or tail ESS of a variance parameter falls short of 400, or an R-hat exceeds
    1.01, and there were no divergences (which more draws do not cure), the chains are run
    again, with the compiled model, with as many draws as the shortfall asks for (times 1.2;
    at least twice as many for R-hat), up to ``max_draws`` per chain (default ``4 * draws``);
    only then do the checks warn.

    The first session on a machine compiles the kernel in the background
    (:func:`hierlmm.bayes.kernel.compile_in_background`). Until it is done, the collapsed
    sampler of a model the kernel covers, with at most 10 covariance parameters, does not
    wait: it runs the independence sampler on the core's factor
    (:mod:`hierlmm.bayes.independence`, nothing to compile), the same posterior; where its
    chains fall short of the checks above, it waits for the kernel and runs NUTS instead.
    NUTS's own settings (``target_accept``, …) given by the user make it wait for the kernel;
    for a model beyond the kernel, sampled by the independence sampler, they are ignored
    with a warning.
    """
    import nutpie

    from hierlmm.bayes.posterior import ESS_MIN, RHAT_MAX, Posterior, assemble
    from hierlmm.bayes.priors import Layout, resolve_prior
    from hierlmm.bayes.propriety import check_propriety

    asked = sorted(nuts_kwargs)  # the user's NUTS settings
    nuts_kwargs.setdefault("target_accept", 0.9)
    design = model.design
    prior = resolve_prior(prior, design.response_sd)
    structured = [t for t in design.terms if not t.unstructured]
    if structured:
        _check_structured(structured, prior, sampler)
    else:
        check_propriety(design, prior, model.deviance_function().cp)  # the A the fit and the sampler use
    if sampler not in ("collapsed", "hierarchical"):
        raise HierlmmError(f"sampler must be 'collapsed' or 'hierarchical', got {sampler!r}")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = model.fit()
    layout = Layout(design)
    x0, _ = start_point(fit, layout)
    rng = np.random.default_rng(random_seed)
    seed = int(rng.integers(2**31 - 1))
    # one compiled sampler per model, sampler and prior (a PyTensor compile is 5-60 s, the
    # kernel's set-up a fraction of a second): a second sample() of the same model, e.g. with
    # other draws or seed, reuses it
    cache = model._compiled
    key = (sampler, prior)
    if key not in cache:
        if sampler == "collapsed":
            cache[key] = _compiled_collapsed(model, design, prior, x0, interim_ok=not asked)
        else:
            from hierlmm.bayes.hierarchical import build_hierarchical_model, centred_terms

            pm_model, _ = build_hierarchical_model(design, prior, x0, fit.solution.beta, fit.solution.b,
                                                   centred_terms(fit))
            cache[key] = nutpie.compile_pymc_model(pm_model)
    compiled = cache[key]
    interim = getattr(compiled, "interim", False)
    from hierlmm.bayes.independence import IndependenceSampler

    if asked and isinstance(compiled, IndependenceSampler):
        from hierlmm.errors import HierlmmWarning

        warnings.warn(f"{', '.join(asked)} ignored: NUTS's settings, and this model is sampled by an independence "
                      "sampler (beyond the compiled kernel's size, one factorisation per draw), which has none",
                      HierlmmWarning, stacklevel=3)
    if interim:  # stands in while the kernel compiles: not kept
        del cache[key]
    # the start: this model's REML point (a compiled graph shared across models of one
    # structure carries the first model's initial value)
    init_mean = x0 if sampler == "collapsed" else None

    def run(n_draws, seed):
        trace = _run_chains(compiled, n_draws, tune, chains, seed, progressbar, nuts_kwargs, init_mean)
        return Posterior(assemble(model, layout, *_draws(trace, sampler, model, layout, rng),
                                  sample_stats=_stats(trace)), model, prior, sampler, layout)

    post = run(draws, seed)
    if interim and check and not _mixed(post):  # far from Gaussian: NUTS on the kernel, compiled
        import hierlmm.bayes.kernel as kernel

        compiled = cache[key] = kernel.compiled_model(design, model.deviance_function().cp, prior, x0)
        post = run(draws, seed)
    max_draws = 4 * draws if max_draws is None else int(max_draws)
    # until enough; or the budget is spent; or divergences, which more draws do not cure
    while check and not (_mixed(post) or draws >= max_draws or post.divergences()):
        diag = post.diagnostics()
        short = float(np.nanmin(diag[["ess_bulk", "ess_tail"]].to_numpy()))
        mixing = bool((diag.r_hat > RHAT_MAX).any())
        grow = max(1.2 * ESS_MIN / max(short, 1.0), 2.0 if mixing else 1.0)
        draws = min(max_draws, int(np.ceil(draws * grow)))
        post = run(draws, int(rng.integers(2**31 - 1)))
        post.extended_to = draws
    if check:
        post.check()
    return post


def _mixed(post) -> bool:
    """Every variance parameter's bulk and tail ESS at least 400 and R-hat at most 1.01."""
    from hierlmm.bayes.posterior import ESS_MIN, RHAT_MAX

    diag = post.diagnostics()
    return bool(np.nanmin(diag[["ess_bulk", "ess_tail"]].to_numpy()) >= ESS_MIN and not (diag.r_hat > RHAT_MAX).any())


def _draws(trace, sampler, model, layout, rng):
    """``(x, β, b)`` from a nutpie trace: the collapsed sampler's β and b drawn exactly given
    each draw of the covariance parameters, the hierarchical one's read off the trace."""
    from hierlmm.bayes.collapsed import exact_conditional_draws

    design = model.design
    if sampler == "collapsed":
        x = trace["posterior"]["x"].to_numpy()
        nc, nd = x.shape[:2]
        if "conditional" in trace:  # drawn beside x (the independence sampler)
            drawn = trace["conditional"]
            beta = drawn["beta"].reshape(nc * nd, -1)
            bs = [b.reshape(nc * nd, *b.shape[2:]) for b in drawn["b"]]
        else:
            beta, bs = exact_conditional_draws(model.deviance_function(), layout, x.reshape(nc * nd, -1), rng)
    else:
        post = trace["posterior"]
        x = post["x"].to_numpy()
        nc, nd = x.shape[:2]
        beta = post["beta"].to_numpy().reshape(nc * nd, -1)
        bs = []
        flat = x.reshape(nc * nd, -1)
        for j, t in enumerate(design.terms):
            if f"b_{j}" in post:  # centred
                bs.append(post[f"b_{j}"].to_numpy().reshape(nc * nd, t.m, t.k))
                continue
            u = post[f"u_{j}"].to_numpy().reshape(nc * nd, t.m, t.k)
            b = np.empty_like(u)
            for i in range(nc * nd):
                L = layout.unpack(flat[i])[0][j]
                b[i] = u[i] @ L.T
            bs.append(b)
    return x, beta, bs
