"""Random terms with a covariance structure against lme4 (and glmmTMB) in the same run.

``diag(x | g)`` is lme4's ``(x || g)`` fitted as one term (hierlmm.covariance); the issue's
target is ``diag(x | g)`` with 2000 groups at least 5x faster than lme4's ``(x || g)``, as fast
as ``(x | g)``. Also ``cs``/``ar1``/``toep`` of a 4-level factor against glmmTMB. Medians over
repeats after one warm-up; ratios, not absolute times, are what to read (a shared machine).

    python bench/structures_bench.py [--reps 5] [--out docs/structures-benchmark.md]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import run_bench  # noqa: E402  (bench/ is the script's folder)

HERE = Path(__file__).parent


def slope_data(m: int = 2000, per: int = 10, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(m), per)
    x = rng.normal(size=g.size)
    y = 1 + 0.5 * x + rng.normal(size=m)[g] + 0.5 * rng.normal(size=m)[g] * x + rng.normal(size=g.size)
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{i:04d}" for i in g]})


def visit_data(m: int = 500, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(m), 8)
    f = np.tile(np.repeat(np.arange(4), 2), m)
    R = 0.6 ** np.abs(np.subtract.outer(np.arange(4), np.arange(4)))
    b = rng.multivariate_normal(np.zeros(4), R, size=m)
    y = 1 + 0.3 * f + b[g, f] + rng.normal(size=g.size)
    return pd.DataFrame({"y": y, "f": [f"v{i}" for i in f], "g": [f"g{i:04d}" for i in g]})


def time_hierlmm(formula, df, reps):
    """run_bench's timing (median after a warm-up), warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_bench.time_hierlmm(formula, df, reps)


R_TIMER = r"""
args <- commandArgs(trailingOnly = TRUE)
suppressMessages({library(lme4); library(glmmTMB)})
d <- read.csv(args[1], stringsAsFactors = TRUE)
form <- as.formula(args[2]); reps <- as.integer(args[3])
fit <- if (args[4] == "lme4") function() lmer(form, data = d, REML = TRUE) else function() glmmTMB(form, data = d, REML = TRUE)
invisible(fit())
t <- numeric(reps)
for (i in seq_len(reps)) t[i] <- system.time(fit())[["elapsed"]]
cat(sprintf('{"median": %.6f}\n', median(t)))
"""


def time_r(df, formula, engine, reps):
    with tempfile.TemporaryDirectory() as tmp:
        csv, script = Path(tmp) / "d.csv", Path(tmp) / "t.R"
        df.to_csv(csv, index=False)
        script.write_text(R_TIMER)
        out = subprocess.run(["Rscript", str(script), str(csv), formula, str(reps), engine], capture_output=True,
                             text=True)
        if out.returncode != 0:
            return None
        return json.loads(out.stdout.strip().splitlines()[-1])["median"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out")
    args = ap.parse_args()
    rows = []
    s = slope_data()
    v = visit_data()
    cases = [
        ("2000 groups: diag(x | g) vs lme4 (x || g)", s, "y ~ x + diag(x | g)", "y ~ x + (x || g)", "lme4"),
        ("2000 groups: (x || g) vs lme4 (x || g)", s, "y ~ x + (x || g)", "y ~ x + (x || g)", "lme4"),
        ("2000 groups: (x | g) vs lme4 (x | g)", s, "y ~ x + (x | g)", "y ~ x + (x | g)", "lme4"),
        ("2000 groups: diag(x | g) vs glmmTMB diag", s, "y ~ x + diag(x | g)", "y ~ x + diag(x | g)", "glmmTMB"),
        ("500 x 4 visits: cs(0 + f | g) vs glmmTMB", v, "y ~ f + cs(0 + f | g)", "y ~ f + cs(0 + f | g)", "glmmTMB"),
        ("500 x 4 visits: ar1(0 + f | g) vs glmmTMB", v, "y ~ f + ar1(0 + f | g)", "y ~ f + ar1(0 + f | g)", "glmmTMB"),
        ("500 x 4 visits: toep(0 + f | g) vs glmmTMB", v, "y ~ f + toep(0 + f | g)", "y ~ f + toep(0 + f | g)", "glmmTMB"),
    ]
    for label, df, ours, theirs, engine in cases:
        t_h = time_hierlmm(ours, df, args.reps)
        t_r = time_r(df, theirs, engine, max(1, args.reps // 2 + 1))
        rows.append({"model": label, "hierlmm_s": t_h, "R_s": t_r, "R_over_hierlmm": None if t_r is None else t_r / t_h})
        print(f"{label:48s} hierlmm {t_h:7.3f} s   {engine} {t_r if t_r is None else round(t_r, 3)} s   "
              f"ratio {rows[-1]['R_over_hierlmm'] if t_r is None else round(t_r / t_h, 1)}")
    table = pd.DataFrame(rows)
    if args.out:
        lines = ["# Covariance structures: time against lme4 and glmmTMB", "",
                 "`python bench/structures_bench.py --out docs/structures-benchmark.md` (medians after a warm-up, "
                 "REML, the same data in one run; ratio = R's time / hierlmm's).", "",
                 "| model | hierlmm (s) | R (s) | R / hierlmm |", "| --- | --- | --- | --- |"]
        for r in rows:
            ratio = "—" if r["R_over_hierlmm"] is None else f"{r['R_over_hierlmm']:.1f}"
            rs = "—" if r["R_s"] is None else f"{r['R_s']:.3f}"
            lines.append(f"| {r['model'].replace('|', chr(92) + '|')} | {r['hierlmm_s']:.3f} | {rs} | {ratio} |")
        Path(args.out).write_text("\n".join(lines) + "\n")
    return table


if __name__ == "__main__":
    main()
