"""ESS per second of the variance parameters: collapsed vs hierarchical vs a plain centred model.

    python bench/bayes_ess.py [--out docs/bayes-benchmark.md]

Each sampler runs 2 chains x (1000 tune + 1000 draws) under the flat prior; compile time is
reported separately from sampling time, and ESS/s uses sampling time only. The plain model is
the textbook centred PyMC model (``b ~ N(0, D)`` directly, flat priors through the same
log-Jacobian), the baseline the collapsed sampler is meant to beat by 10x or more.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hierlmm as hl  # noqa: E402


def centred_model(design, prior="flat"):
    import pymc as pm
    import pytensor.tensor as pt

    from hierlmm.bayes.collapsed import log_prior_pt, term_cholesky_pt
    from hierlmm.bayes.priors import Layout

    layout = Layout(design)
    with pm.Model() as model:
        x = pm.Flat("x", shape=layout.size, initval=np.zeros(layout.size))
        beta = pm.Flat("beta", shape=design.p)
        pm.Potential("log_prior", log_prior_pt(layout, prior, x))
        mu = pt.as_tensor_variable(design.X) @ beta
        for j, (t, sl, (pos, _)) in enumerate(zip(design.terms, layout.slices, layout.diag)):
            L = term_cholesky_pt(t, x[sl], pos)
            b = pm.MvNormal(f"b_{j}", mu=np.zeros(t.k), chol=L, shape=(t.m, t.k))
            mu = mu + pt.sum(pt.as_tensor_variable(t.Z) * b[t.codes], axis=1)
        pm.Normal("y", mu=mu, sigma=pt.exp(0.5 * x[layout.n_eta]), observed=design.y)
    return model


def run(name, model, sampler):
    import arviz as az
    import nutpie

    from hierlmm.bayes.collapsed import build_collapsed_model
    from hierlmm.bayes.hierarchical import build_hierarchical_model
    from hierlmm.bayes.priors import Layout
    from hierlmm.bayes.sample import start_point

    fit = model.fit()
    layout = Layout(model.design)
    x0, Ls = start_point(fit, layout)
    if sampler == "collapsed":
        pm_model = build_collapsed_model(model.design, "flat", x0)[0]
    elif sampler == "hierarchical":
        u0 = [b @ np.linalg.inv(L).T for b, L in zip(fit.solution.b, Ls)]
        pm_model = build_hierarchical_model(model.design, "flat", x0, fit.solution.beta, u0)[0]
    else:
        pm_model = centred_model(model.design)
    t0 = time.perf_counter()
    compiled = nutpie.compile_pymc_model(pm_model)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    trace = nutpie.sample(compiled, draws=1000, tune=1000, chains=2, seed=1, progress_bar=False)
    sample_s = time.perf_counter() - t0
    x = trace["posterior"]["x"]
    ess = float(np.min(az.ess(x).to_numpy()))
    div = int(trace["sample_stats"]["diverging"].to_numpy().sum())
    return {"data": name, "sampler": sampler, "compile_s": compile_s, "sample_s": sample_s,
            "min_ess_variance_params": ess, "ess_per_s": ess / sample_s, "divergences": div}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    n, m = 10_000, 200
    g = rng.integers(0, m, n)
    x = rng.normal(size=n)
    sim = pd.DataFrame({"y": 1 + 0.5 * x + rng.normal(size=m)[g] * 0.7 + rng.normal(size=m)[g] * 0.3 * x
                        + rng.normal(size=n), "x": x, "g": pd.Categorical(g)})
    cases = [("sleepstudy (Days | Subject)", hl.LMM("Reaction ~ Days + (Days | Subject)", hl.datasets.load("sleepstudy"))),
             ("simulated n=10^4, 200 groups, (x | g)", hl.LMM("y ~ x + (x | g)", sim))]
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, model in cases:
            for sampler in ("collapsed", "hierarchical", "centred"):
                r = run(name, model, sampler)
                rows.append(r)
                print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
    table = pd.DataFrame(rows)
    if args.out:
        lines = ["# Bayesian samplers: ESS per second", "",
                 "Produced by `python bench/bayes_ess.py --out docs/bayes-benchmark.md` (2 chains x 1000 tune +",
                 "1000 draws, flat prior). ESS is the smallest bulk ESS over the covariance parameters; ESS/s",
                 "uses sampling time only, compile time is separate. Ratios are relative to the plain centred",
                 "model on the same data.", "",
                 "| data | sampler | ESS/s relative to centred | compile time relative to centred | divergences |",
                 "| --- | --- | ---: | ---: | ---: |"]
        for name, grp in table.groupby("data", sort=False):
            base = grp[grp.sampler == "centred"].iloc[0]
            for _, r in grp.iterrows():
                lines.append(f"| {name.replace('|', chr(92) + '|')} | {r.sampler} | {r.ess_per_s / base.ess_per_s:.1f} | "
                             f"{r.compile_s / base.compile_s:.2f} | {r.divergences} |")
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
