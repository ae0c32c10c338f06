"""Time to a posterior, and ESS per second of the variance parameters: hierlmm's samplers
against a plain non-centred PyMC model (nutpie), bambi (nutpie) and brms (Stan, through
``bench/brms_time.R``), in the same run.

    python bench/bayes_time.py [--out docs/bayes-benchmark.md] [--cases sleep_corr,...] [--load CASES]
                               [--samplers collapsed,brms] [--limit SECONDS]

Every (case, sampler) runs in a fresh Python process that first imports hierlmm, PyMC,
nutpie, ArviZ (and bambi) -- "a session that has imported the Bayesian modules once" -- and
then times

* the **first call**: from ``sample()`` (or ``compile + sample``, or bambi's ``fit``) to a
  posterior, split into compilation and the rest (sampling, and for hierlmm the exact draws
  of β and b and the ArviZ assembly);
* a **second call** on a model of the same structure (a new model object on a response
  simulated from the fit: hierlmm reuses the compiled graph, PyMC and bambi build and
  compile again, as their users do).

All run 4 chains x (1000 tune + 1000 draws) under flat priors (bambi: its default weakly
informative priors; it has no flat prior on a standard deviation). ESS is the smallest bulk
ESS over the variance parameters (rank-normalised, so the same for a variance and its SD);
ESS/s divides it by the first call's sampling time. Ratios are to hierlmm's collapsed
sampler on the same case. bambi cannot fit correlated group effects, so it runs on the
uncorrelated model only. brms runs flat priors on the fixed effects, the SDs and σ and LKJ(1)
on correlations (its nearest to hierlmm's ``flat_sd``); its **compile** is Stan's C++ build,
its second call ``update(newdata=..., recompile=FALSE)``. ``--load`` repeats the given cases
beside a background process that keeps one core busy with BLAS work (``bench/load.py``).
``--samplers`` runs only those samplers of each case; ``--limit`` stops a (case, sampler) run
(with its Rscript) after that many seconds and leaves it out. brms samples InstEval once
(``FIRST_ONLY``: its first call takes about 45 minutes here), so that row has no second call.

Results accumulate in ``bayes_time_last.csv`` by (case, sampler, load), each row with the
run (date and time) that measured it; ``--out`` writes the page from all of them, so a run of a few cases
updates their rows and keeps the others (the ratio columns compare rows of one run only).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

CASES = {
    # name: (data, formula, correlated)
    "sleep_corr": ("sleepstudy", "Reaction ~ Days + (Days | Subject)", True),
    "sleep_uncorr": ("sleepstudy", "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", False),
    "sim_corr": ("sim", "y ~ x + (x | g)", True),
    "sim_uncorr": ("sim", "y ~ x + (1 | g) + (0 + x | g)", False),
    # the sampler issue's two models: five effects per group, and two crossed factors
    "quartic": ("quartic", "y ~ x + (1 + x + I(x**2) + I(x**3) + I(x**4) | g)", True),
    "crossed": ("crossed", "y ~ x + (1 | a) + (1 | b)", False),
    # beyond the compiled kernel (a dense rest block of 1,128 + 14 levels): the independence sampler
    "insteval": ("InstEval", "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept)", False),
}
LABELS = {"sleepstudy": "sleepstudy (180 rows, 18 subjects)", "sim": "simulated, 10^5 rows, 2000 groups",
          "quartic": "simulated, 360 rows, 40 groups, k = 5", "crossed": "simulated, 10^4 rows, 300 x 50 crossed",
          "InstEval": "InstEval (73,421 rows, 2972 x 1128 x 14 crossed)"}
SAMPLERS = {
    "sleep_corr": ["collapsed", "hierarchical", "pymc", "brms"],
    "sleep_uncorr": ["collapsed", "pymc", "bambi"],
    "sim_corr": ["collapsed", "pymc"],
    # (1 | g) + (0 + x | g): a rest block of 2000 levels, beyond the compiled kernel; each
    # level meets one level of the first term, so the core factors it as a diagonal block
    # (BlockedCholesky._diagonal_rest) and the independence sampler values it in milliseconds
    "sim_uncorr": ["collapsed", "pymc", "bambi"],
    "quartic": ["collapsed", "pymc", "brms"],
    "crossed": ["collapsed", "pymc", "brms"],
    "insteval": ["collapsed", "pymc", "brms"],
}
# brms's first call on InstEval takes about 45 minutes here (4 chains on 2 cores): a second
# would double that, so it samples once
FIRST_ONLY = {("insteval", "brms")}


def data(name):
    import hierlmm as hl

    if name in ("sleepstudy", "InstEval"):
        return hl.datasets.load(name)
    rng = np.random.default_rng(1)
    if name == "quartic":
        m, per = 40, 9
        g = np.repeat(np.arange(m), per)
        x = rng.uniform(-1, 1, m * per)
        coef = rng.normal(size=(m, 5)) * [1.0, 0.6, 0.4, 0.3, 0.2]
        y = 1 + 0.5 * x + np.sum(coef[g] * x[:, None] ** np.arange(5), axis=1) + rng.normal(0, 0.5, m * per)
        return pd.DataFrame({"y": y, "x": x, "g": pd.Categorical(g)})
    if name == "crossed":
        n, A, B = 10_000, 300, 50
        a, b = rng.integers(0, A, n), rng.integers(0, B, n)
        x = rng.normal(size=n)
        y = 1 + 0.5 * x + 0.8 * rng.normal(size=A)[a] + 0.5 * rng.normal(size=B)[b] + rng.normal(size=n)
        return pd.DataFrame({"y": y, "x": x, "a": pd.Categorical(a), "b": pd.Categorical(b)})
    n, m = 100_000, 2000
    g = rng.integers(0, m, n)
    x = rng.normal(size=n)
    return pd.DataFrame({"y": 1 + 0.5 * x + 0.7 * rng.normal(size=m)[g] + 0.3 * rng.normal(size=m)[g] * x
                         + rng.normal(size=n), "x": x, "g": pd.Categorical(g)})


def plain_pymc_model(design, prior="flat"):
    """The textbook non-centred model, ``b_i = L u_i``, ``u_i ~ N(0, I)``, with the same flat
    prior on (σ², D) as hierlmm (its log-Jacobian), started where PyMC starts (zeros)."""
    import pymc as pm
    import pytensor.tensor as pt

    from hierlmm.bayes.collapsed import log_prior_pt, term_cholesky_pt
    from hierlmm.bayes.priors import Layout

    layout = Layout(design)
    with pm.Model() as model:
        x = pm.Flat("x", shape=layout.size)
        beta = pm.Flat("beta", shape=design.p)
        pm.Potential("log_prior", log_prior_pt(layout, prior, x))
        mu = pt.as_tensor_variable(design.X) @ beta
        for j, (t, sl, (pos, _)) in enumerate(zip(design.terms, layout.slices, layout.diag)):
            L = term_cholesky_pt(t, x[sl], pos)
            u = pm.Normal(f"u_{j}", 0.0, 1.0, shape=(t.m, t.k))
            mu = mu + pt.sum(pt.as_tensor_variable(t.Z) * (u @ L.T)[t.codes], axis=1)
        pm.Normal("y", mu=mu, sigma=pt.exp(0.5 * x[layout.n_eta]), observed=design.y)
    return model, layout


def _ess_x(trace, layout):
    """Smallest bulk ESS over the covariance parameters of an ``x`` trace (nutpie)."""
    import arviz as az

    return float(np.min(az.ess(trace["posterior"]["x"]).to_numpy()))


def one(case, sampler):
    """Runs in the child process: prints one JSON line."""
    t0 = time.perf_counter()
    import arviz  # noqa: F401
    import nutpie
    import pymc  # noqa: F401

    import hierlmm as hl
    import hierlmm.bayes.posterior  # noqa: F401
    import hierlmm.bayes.sample as hs

    if sampler == "bambi":
        import bambi as bmb
    import_s = time.perf_counter() - t0
    dname, formula, _ = CASES[case]
    df = data(dname)
    model = hl.LMM(formula, df)
    fit = model.fit()
    y2 = fit.simulate(1, random_seed=2)["sim_1"].to_numpy()  # the second call's response
    df2 = df.assign(**{model.design.response: y2})
    out = {"case": case, "sampler": sampler, "import_s": import_s}

    if sampler in ("collapsed", "hierarchical"):
        compile_times = []
        if sampler == "collapsed":
            original = hs._compiled_collapsed

            def timed(*a, **k):
                t = time.perf_counter()
                r = original(*a, **k)
                compile_times.append(time.perf_counter() - t)
                return r

            hs._compiled_collapsed = timed
        for label, frame in (("first", df), ("second", df2)):
            m = hl.LMM(formula, frame)
            t = time.perf_counter()
            post = m.sample(sampler=sampler, random_seed=1, progressbar=False)
            total = time.perf_counter() - t
            out[f"{label}_s"] = total
            if label == "first":
                diag = post.diagnostics()
                out["ess"] = float(diag.ess_bulk.min())
                out["draws"] = int(post.extended_to or 1000)
                out["divergences"] = post.divergences()
                out["compile_s"] = compile_times[0] if compile_times else float("nan")
        if sampler == "hierarchical":
            out["compile_s"] = float("nan")  # inside sample(); the second call reuses it
        out["sample_s"] = out["first_s"] - (0.0 if np.isnan(out["compile_s"]) else out["compile_s"])
    elif sampler == "pymc":
        for label, frame in (("first", df), ("second", df2)):
            design = hl.LMM(formula, frame).design
            t = time.perf_counter()
            pm_model, layout = plain_pymc_model(design)
            compiled = nutpie.compile_pymc_model(pm_model)
            tc = time.perf_counter()
            trace = nutpie.sample(compiled, draws=1000, tune=1000, chains=4, seed=1, progress_bar=False)
            te = time.perf_counter()
            out[f"{label}_s"] = te - t
            if label == "first":
                out["compile_s"], out["sample_s"] = tc - t, te - tc
                out["ess"] = _ess_x(trace, layout)
                out["divergences"] = int(trace["sample_stats"]["diverging"].to_numpy().sum())
    elif sampler == "brms":
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            paths = [os.path.join(tmp, f"{label}.csv") for label in ("first", "second")]
            df.to_csv(paths[0], index=False)
            if (case, sampler) in FIRST_ONLY:
                paths[1] = "-"
            else:
                df2.to_csv(paths[1], index=False)
            res = subprocess.run(["Rscript", str(HERE / "brms_time.R"), *paths, formula.replace("**", "^"),
                                  str(os.cpu_count())], capture_output=True, text=True)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError(res.stderr[-3000:])
        out.update(json.loads(lines[-1]))
    else:  # bambi, nutpie backend
        import arviz as az

        for label, frame in (("first", df), ("second", df2)):
            t = time.perf_counter()
            bm = bmb.Model(formula, frame)
            idata = bm.fit(inference_method="nutpie", draws=1000, tune=1000, chains=4, random_seed=1,
                           progressbar=False)
            out[f"{label}_s"] = time.perf_counter() - t
            if label == "first":
                sds = [v for v in idata.posterior.data_vars if v.endswith("_sigma") or v == "sigma"]
                out["ess"] = float(min(np.min(az.ess(idata.posterior[v]).to_numpy()) for v in sds))
                out["divergences"] = int(idata.sample_stats["diverging"].to_numpy().sum())
                out["compile_s"] = float("nan")
                out["sample_s"] = out["first_s"]
    print(json.dumps(out), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--one", nargs=2, metavar=("CASE", "SAMPLER"))
    ap.add_argument("--load", default="", help="cases to repeat under a background load")
    ap.add_argument("--samplers", default="", help="run only these samplers (default: each case's all)")
    ap.add_argument("--limit", type=float, default=2 * 3600.0,
                    help="seconds after which a (case, sampler) run is stopped and left out")
    args = ap.parse_args()
    if args.one:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            one(*args.one)
        return
    from load import background_load

    rows = []
    run_id = time.strftime("%Y-%m-%d %H:%M")
    runs = [(case, False) for case in args.cases.split(",") if case] + \
        [(case, True) for case in args.load.split(",") if case]
    unknown = sorted({case for case, _ in runs} - set(CASES))
    if unknown:  # before any run, not after the first cases' minutes
        ap.error(f"unknown case(s) {', '.join(unknown)}; the cases are {', '.join(CASES)}")
    only = [s for s in args.samplers.split(",") if s]
    known = {s for samplers in SAMPLERS.values() for s in samplers}
    if set(only) - known:
        ap.error(f"unknown sampler(s) {', '.join(sorted(set(only) - known))}; the samplers are {', '.join(sorted(known))}")
    for case, loaded in runs:
        for sampler in SAMPLERS[case]:
            if only and sampler not in only:
                continue
            cmd = [sys.executable, __file__, "--one", case, sampler]
            with background_load(workers=int(loaded), limit=args.limit + 60):
                stdout, stderr = _run(cmd, args.limit)
            lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
            if not lines:
                print(f"{case} {sampler} failed:\n{stderr[-3000:]}", flush=True)
                continue
            row = {k: np.nan if v is None else v for k, v in json.loads(lines[-1]).items()}  # brms's null second call
            rows.append({**row, "load": loaded, "run": run_id})
            print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in rows[-1].items()}, flush=True)
    table = pd.DataFrame(rows)
    last = HERE / "bayes_time_last.csv"
    if last.exists():  # earlier runs' rows of the cases not run now stay (no cases: the page is rewritten)
        old = pd.read_csv(last)
        if len(table):
            new = set(zip(table.case, table.sampler, table.load))
            old = old[[k not in new for k in zip(old.case, old.sampler, old.load)]]
            table = pd.concat([old, table], ignore_index=True)
        else:
            table = old
    table.to_csv(last, index=False)
    if args.out:
        write_page(table, Path(args.out))


def _run(cmd, limit):
    """Output of ``cmd``; after ``limit`` seconds it and its children (Rscript) are stopped:
    ``cmd`` leads a process group of its own, in this session (as the load's process)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            process_group=0)
    try:
        return proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return "", f"stopped after {limit:.0f} s"


def write_page(table, path):
    """The table, then whatever prose followed the table on the page already there."""
    prose = []
    if path.exists():
        old = path.read_text().splitlines()
        started = [i for i, ln in enumerate(old) if ln.startswith("|")]
        if started:
            end = started[0]
            while end < len(old) and old[end].startswith("|"):
                end += 1
            prose = old[end:]
    cases = list(CASES)  # quiet rows first, then the cases in CASES's order, a case's samplers in SAMPLERS's
    table = (table.assign(ess_per_s=table.ess / table.sample_s, case_rank=table.case.map(cases.index),
                          sampler_rank=[SAMPLERS[c].index(s) for c, s in zip(table.case, table.sampler)])
             .sort_values(["load", "case_rank", "sampler_rank"], kind="stable"))
    lines = [
        "# Bayesian samplers: time to a posterior, and ESS per second", "",
        "Produced by `python bench/bayes_time.py --out docs/bayes-benchmark.md` on this machine "
        "(2 cores, shared). Each row is a fresh Python process that has imported the Bayesian modules; "
        "4 chains x (1000 tune + 1000 draws). **first**: from `sample()` (PyMC: build + compile + "
        "sample; bambi: `fit`; brms: Stan's compile + sampling) to a posterior; **compile** is part of it; **second**: a model of the same "
        "structure on another response. ESS: smallest bulk ESS over the variance parameters; ESS/s per "
        "second of the first call's sampling. Columns marked *x* are ratios to hierlmm's collapsed sampler "
        "on the same model (below 1: faster / fewer; for ESS/s above 1: better). The seconds are this "
        "machine's, for scale only.", "",
        "| data | model | sampler | first (s) | of which compile (s) | second (s) | ESS | ESS/s | "
        "first x | second x | ESS/s x | divergences | run |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    names = {"collapsed": "hierlmm collapsed", "hierarchical": "hierlmm hierarchical",
             "pymc": "PyMC non-centred (nutpie)", "bambi": "bambi (nutpie)", "brms": "brms (Stan)"}
    # a formula's bars stay bare in its code span: the docs' Markdown (Python-Markdown's tables)
    # does not split a cell inside backticks, and would show a backslash before an escaped bar
    for (loaded, case), grp in table.groupby(["load", "case"], sort=False):
        dname, formula, _ = CASES[case]
        for _, r in grp.iterrows():
            base = grp[(grp.sampler == "collapsed") & (grp.run == r.run)]  # ratios within one run

            def ratio(col, r=r, base=base):
                value = np.nan if base.empty else r[col] / base[col].iloc[0]
                return "" if np.isnan(value) else f"{value:{'.2f' if value >= 0.01 else '.1g'}}"
            comp = "" if np.isnan(r.compile_s) else f"{r.compile_s:.1f}"
            lines.append(
                f"| {LABELS[dname]}{' **(under load)**' if loaded else ''} | `{formula}` | {names[r.sampler]} | "
                f"{r.first_s:.1f} | {comp} | {'' if np.isnan(r.second_s) else f'{r.second_s:.1f}'} | {r.ess:.0f} | {r.ess_per_s:{'.0f' if r.ess_per_s >= 10 else '.2g'}} | "
                f"{ratio('first_s')} | {ratio('second_s')} | {ratio('ess_per_s')} | {int(r.divergences)} | {r.run} |")
    path.write_text("\n".join(lines + prose) + "\n")


if __name__ == "__main__":
    main()
