"""Issue 12's scale benchmark: a crossed model on up to 10⁸ rows of Parquet, through Dask.

    python bench/dask_scale.py --rows 1e8 --reference-rows 1e7 --dir /tmp/hierlmm-dask \
        --out bench/dask_scale_last.md

1. Simulated Parquet (never committed): ``y ~ x1 + x2 + f + (1 | g) + (1 | h)``, g with 10⁵
   and h with 10³ levels, f a 5-level factor, 10⁶ rows per file (written once, reused).
2. On a ``LocalCluster`` of this machine (2 worker processes, 1 thread each), every stage on
   freshly restarted workers so each peak RSS is that stage's: the time to just read the
   formula's columns once; hierlmm's reduction (``hl.LMM.from_parquet``: the levels pass and
   the cross-product pass); the REML fit on the reduced A (no data touched) and its cost per
   deviance evaluation; the collapsed sampler on the A of ``(1 | g)`` alone (the hand-written
   kernel's range) and, with ``--crossed-draws``, on the crossed A (the independence sampler;
   ``--crossed-load``: beside a process that keeps one core busy, ``bench/load.py``).
3. For reference, in the same run and on the first ``--reference-rows`` rows: in-memory hierlmm
   (a subprocess, its peak RSS) and lme4 (``Rscript``, data.table's fread of a CSV), each
   under a time limit.

Ratios and memory go to ``--out`` (markdown) and are copied by hand into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

FORMULA = "y ~ x1 + x2 + f + (1 | g) + (1 | h)"
COLUMNS = ["y", "x1", "x2", "f", "g", "h"]
PER_FILE = 1_000_000


def generate(path: Path, rows: int, G: int = 100_000, H: int = 1_000, seed: int = 2026) -> None:
    """Write ``rows`` simulated rows as Parquet files of 10⁶ rows (skipped when present)."""
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bg, bh = rng.normal(size=G) * 0.8, rng.normal(size=H) * 0.4
    files = -(-rows // PER_FILE)
    for i in range(files):
        out = path / f"part-{i:05d}.parquet"
        if out.exists():
            continue
        r = np.random.default_rng([seed, i])
        n = min(PER_FILE, rows - i * PER_FILE)
        g, h = r.integers(0, G, n, dtype=np.int32), r.integers(0, H, n, dtype=np.int32)
        x1, x2 = r.normal(size=n), r.uniform(0, 10, n)
        f = r.integers(0, 5, n)
        y = 1 + 0.5 * x1 - 0.2 * x2 + 0.3 * f + bg[g] + bh[h] + r.normal(size=n)
        frame = pd.DataFrame({"y": y, "x1": x1, "x2": x2,
                              "f": pd.Categorical.from_codes(f, ["a", "b", "c", "d", "e"]), "g": g, "h": h})
        frame.to_parquet(out, index=False)


def _touch(part: pd.DataFrame) -> pd.Series:
    """Read every column (what a pass must at least do)."""
    return pd.Series([len(part), float(part["y"].sum()), float(part["x1"].sum()), float(part["x2"].sum()),
                      int(part["f"].cat.codes.sum()), int(part["g"].sum()), int(part["h"].sum())])


def _maxrss_mb() -> float:
    """This process's peak RSS: VmHWM (reset by exec, unlike ru_maxrss, which a child
    started by fork + exec inherits from its parent)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peaks(client) -> list[float]:
    return sorted(client.run(_maxrss_mb).values())


def dask_stages(path: Path, files: int, sample_draws: int, with_fit: bool = True, crossed_draws: int = 0,
                crossed_tune: int = 50, crossed_load: bool = False) -> dict:
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    import hierlmm as hl

    glob = [str(path / f"part-{i:05d}.parquet") for i in range(files)]
    out = {"rows": files * PER_FILE}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="10GB",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.restart()
        t = time.perf_counter()
        dd.read_parquet(glob, columns=COLUMNS).map_partitions(_touch, meta=(None, "f8")).compute()
        out["read_s"] = time.perf_counter() - t
        out["read_peak_mb"] = peaks(client)

        client.restart()
        t = time.perf_counter()
        model = hl.LMM.from_parquet(FORMULA, glob, progress=False)
        out["reduce_s"] = time.perf_counter() - t
        out["reduce_peak_mb"] = peaks(client)
        out["client_peak_mb"] = _maxrss_mb()
        cp = model.design.source.cp
        out["a21_nnz"] = int(cp.A21.nnz if cp.a21_sparse else np.count_nonzero(cp.A21))

        # the levels declared (known categories): no levels pass, one read of the data
        client.restart()
        t = time.perf_counter()
        ddf = dd.read_parquet(glob, columns=COLUMNS)
        for col, count in (("g", 100_000), ("h", 1_000)):
            ddf[col] = ddf[col].astype(pd.CategoricalDtype(np.arange(count, dtype=np.int32)))
        ddf["f"] = ddf["f"].astype(pd.CategoricalDtype(list("abcde")))
        declared = hl.LMM(FORMULA, ddf, progress=False)
        out["reduce_declared_s"] = time.perf_counter() - t
        out["reduce_declared_peak_mb"] = peaks(client)
        same = declared.design.source.cp
        out["declared_same_A"] = bool(np.allclose(same.A22, cp.A22, rtol=1e-12, atol=0))

        if not with_fit:
            return out
        t = time.perf_counter()
        fit = model.fit()
        out["fit_s"] = time.perf_counter() - t
        out["evaluations"] = fit.opt.evaluations
        dev = model.deviance_function()
        t = time.perf_counter()
        for _ in range(3):
            dev(fit.solution.theta)
        out["eval_s"] = (time.perf_counter() - t) / 3
        out["theta"] = fit.solution.theta.tolist()
        out["fixef"] = fit.fixef.round(6).tolist()

        if crossed_draws:  # the crossed model's posterior: the independence sampler, one value per draw
            from contextlib import nullcontext

            from load import background_load

            with background_load(workers=1, limit=7200) if crossed_load else nullcontext():
                t = time.perf_counter()
                post = model.sample(draws=crossed_draws, tune=crossed_tune, chains=4, random_seed=1,
                                    progressbar=False, max_draws=crossed_draws)
                out["crossed_sample_s"] = time.perf_counter() - t
            out["crossed_load"] = crossed_load
            out["crossed_draws"], out["crossed_tune"] = crossed_draws, crossed_tune
            diag = post.diagnostics()  # the variance parameters'
            out["crossed_min_ess"] = float(diag["ess_bulk"].min())
            out["crossed_max_rhat"] = float(diag["r_hat"].max())
            summ = post.summary()
            rows = [i for i in summ.index if i.startswith(("sd_", "sigma"))]
            stats = post.idata.sample_stats
            out["crossed_acceptance"] = float(stats["acceptance_rate"].mean())
            out["crossed_sampler"] = "independence" if "n_steps" not in stats else "nuts"
            out["crossed_summary"] = summ.loc[rows, ["mean", "sd", "ess_bulk", "r_hat"]].to_dict()

        if sample_draws:
            client.restart()
            t = time.perf_counter()
            one = hl.LMM.from_parquet("y ~ x1 + x2 + f + (1 | g)", glob, progress=False)
            out["reduce_g_s"] = time.perf_counter() - t
            t = time.perf_counter()
            post = one.sample(draws=sample_draws, tune=1000, chains=4, random_seed=1, progressbar=False)
            out["sample_s"] = time.perf_counter() - t
            summ = post.summary()
            out["sample_min_ess"] = float(summ["ess_bulk"].min())
            out["sample_max_rhat"] = float(summ["r_hat"].max())
    return out


_IN_MEMORY = """
import sys, time, glob
import pandas as pd, hierlmm as hl
files = sorted(glob.glob(sys.argv[1] + "/part-*.parquet"))[: int(sys.argv[2])]
t = time.perf_counter()
df = pd.concat([pd.read_parquet(f, columns={columns}) for f in files], ignore_index=True)
read = time.perf_counter() - t
t = time.perf_counter()
fit = hl.LMM({formula!r}, df).fit()
fit_s = time.perf_counter() - t
hwm = [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(read, fit_s, hwm)
"""

_LME4 = """
suppressMessages({{library(lme4); library(data.table)}})
d <- fread("{csv}")
d[, f := factor(f)]; d[, g := factor(g)]; d[, h := factor(h)]
t <- system.time(fit <- lmer({formula}, data = d, REML = TRUE))[["elapsed"]]
hwm <- grep("^VmHWM", readLines("/proc/self/status"), value = TRUE)
cat(as.numeric(strsplit(trimws(sub("VmHWM:", "", hwm)), " +")[[1]][1]) / 1024, t, "\\n")
"""


def reference(path: Path, files: int, limit_s: float) -> dict:
    """In-memory hierlmm and lme4 on the first ``files`` files, each under ``limit_s``."""
    out = {"rows": files * PER_FILE}
    code = _IN_MEMORY.format(columns=COLUMNS, formula=FORMULA)
    try:
        res = subprocess.run([sys.executable, "-c", code, str(path), str(files)], capture_output=True, text=True,
                             timeout=limit_s, check=True)
        read, fit_s, peak = map(float, res.stdout.split())
        out.update(hl_read_s=read, hl_fit_s=fit_s, hl_peak_mb=peak)
    except subprocess.TimeoutExpired:
        out["hl_fit_s"] = f"> {limit_s:.0f} s"
    except subprocess.CalledProcessError as exc:
        out["hl_fit_s"] = "failed: " + exc.stderr.strip().splitlines()[-1]
    csv = path / f"first-{files}.csv"
    if not csv.exists():
        pd.concat([pd.read_parquet(path / f"part-{i:05d}.parquet") for i in range(files)]).to_csv(csv, index=False)
    script = _LME4.format(csv=csv, formula=FORMULA)
    try:
        res = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True, timeout=limit_s, check=True)
        peak, fit_s = map(float, res.stdout.split()[-2:])
        out.update(lme4_fit_s=fit_s, lme4_peak_mb=peak)
    except subprocess.TimeoutExpired:
        out["lme4_fit_s"] = f"> {limit_s:.0f} s"
    except subprocess.CalledProcessError as exc:
        out["lme4_fit_s"] = "failed: " + (exc.stderr.strip().splitlines() or ["?"])[-1]
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=float, default=1e8)
    ap.add_argument("--also", type=float, nargs="*", default=[1e7], help="further row counts for the Dask stages")
    ap.add_argument("--reference-rows", type=float, default=1e7)
    ap.add_argument("--reference-limit", type=float, default=1800)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--crossed-draws", type=int, default=0,
                    help="draws per chain of the crossed model's posterior at --rows (0: not sampled)")
    ap.add_argument("--crossed-tune", type=int, default=50)
    ap.add_argument("--crossed-load", action="store_true",
                    help="sample the crossed model beside a process that keeps one core busy (bench/load.py)")
    ap.add_argument("--skip-dask", action="store_true", help="only the in-memory reference")
    ap.add_argument("--no-fit", action="store_true", help="the Dask stages up to the reduction only")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/hierlmm-dask"))
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("dask_scale_last.md"))
    args = ap.parse_args(argv)
    rows = int(args.rows)
    t = time.perf_counter()
    generate(args.dir, rows)
    print(f"data: {rows} rows in {args.dir} ({time.perf_counter() - t:.0f} s)", flush=True)
    results = []
    for n in [] if args.skip_dask else sorted({int(a) for a in args.also} | {rows}):
        res = dask_stages(args.dir, -(-n // PER_FILE), args.draws if n == rows else 0, with_fit=not args.no_fit,
                          crossed_draws=args.crossed_draws if n == rows else 0, crossed_tune=args.crossed_tune,
                          crossed_load=args.crossed_load)
        print(json.dumps(res), flush=True)
        results.append(res)
    ref = reference(args.dir, -(-int(args.reference_rows) // PER_FILE), args.reference_limit) \
        if args.reference_rows else None
    if ref:
        print(json.dumps(ref), flush=True)
    if results and not args.no_fit:
        args.out.write_text(report(results, ref))
    if results and not args.no_fit:
        print(args.out.read_text())


def _fmt(v, digits=2):
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def report(results, ref) -> str:
    lines = [f"`{FORMULA}`, g 10⁵ and h 10³ levels; LocalCluster, 2 worker processes × 1 thread; "
             f"{os.cpu_count()} cores.", "",
             "| rows | reduction / one read | fit after the reduction (s) | evaluations | s per evaluation "
             "| peak RSS per worker, reduction (MB) | peak RSS per worker, read (MB) | A21 non-zeros |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r['rows']:.0e} | {r['reduce_s'] / r['read_s']:.2f} "
                     f"({r['reduce_declared_s'] / r['read_s']:.2f} with declared levels) | {r['fit_s']:.1f} "
                     f"| {r['evaluations']} "
                     f"| {r['eval_s']:.3f} | {max(r['reduce_peak_mb']):.0f} | {max(r['read_peak_mb']):.0f} "
                     f"| {r['a21_nnz']:.2e} |")
    last = results[-1]
    if "sample_s" in last:
        lines += ["", f"Collapsed sampler on the A of `y ~ x1 + x2 + f + (1 | g)` from the same {last['rows']:.0e} "
                  f"rows: 4 chains × (1000 + {1000}) in {last['sample_s']:.1f} s "
                  f"({last['sample_s'] / last['reduce_g_s']:.2f} × its reduction), min bulk ESS "
                  f"{last['sample_min_ess']:.0f}, max R-hat {last['sample_max_rhat']:.3f}."]
    if "crossed_sample_s" in last:
        lines += ["", f"Posterior of the crossed model on the same {last['rows']:.0e} rows ({last['crossed_sampler']} "
                  f"sampler{', under load' if last.get('crossed_load') else ''}): 4 chains × ({last['crossed_tune']} + {last['crossed_draws']}) in "
                  f"{last['crossed_sample_s']:.0f} s, min bulk ESS of the variances {last['crossed_min_ess']:.0f}, "
                  f"max R-hat {last['crossed_max_rhat']:.3f}, acceptance {last['crossed_acceptance']:.2f}."]
    if ref:
        lines += ["", f"In memory on the first {ref['rows']:.0e} rows: hierlmm fit {_fmt(ref.get('hl_fit_s'))} s "
                  f"(+ {_fmt(ref.get('hl_read_s', float('nan')))} s to read), peak RSS "
                  f"{_fmt(ref.get('hl_peak_mb', float('nan')), 0)} MB; lme4 fit {_fmt(ref.get('lme4_fit_s'))} s, "
                  f"peak RSS {_fmt(ref.get('lme4_peak_mb', float('nan')), 0)} MB."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
