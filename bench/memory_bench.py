"""Peak memory of a fit against the number of rows (issue 16).

    python bench/memory_bench.py [--sizes 1e5 1e6 2e6]

Crossed ``y ~ x + (1 | g) + (1 | h)`` with 50,000 x 500 levels, each size fitted in a fresh
process; prints the data frame's size, the process's resident set before the fit (Python,
numpy, pandas, scipy, formulaic and the data), its peak (VmHWM) during ``LMM(...).fit()``,
the fit's time (from the formula and data frame to the result) and ``summary()``'s time (with
its Satterthwaite df) relative to it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CODE = """
import sys, time, numpy as np, pandas as pd
sys.path.insert(0, {root!r})
import hierlmm as hl
def hwm():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) / 1024
n = {n}
rng = np.random.default_rng(0)
g, h, x = rng.integers(0, 50000, n), rng.integers(0, 500, n), rng.normal(size=n)
df = pd.DataFrame({{"y": 1 + 0.5 * x + rng.normal(size=50000)[g] + rng.normal(size=500)[h] + rng.normal(size=n),
                   "x": x, "g": pd.Categorical.from_codes(g, [f"g{{i}}" for i in range(50000)]),
                   "h": pd.Categorical.from_codes(h, [f"h{{i}}" for i in range(500)])}})
del g, h, x
data, before = df.memory_usage(deep=True).sum() / 2**20, hwm()
t = time.perf_counter()
fit = hl.LMM("y ~ x + (1 | g) + (1 | h)", df).fit()
secs, peak = time.perf_counter() - t, hwm()
import hierlmm.inference.ftests  # its imports (scipy.stats) are a once-per-session cost
t = time.perf_counter()
fit.summary()
print(data, before, peak, secs, time.perf_counter() - t)
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["1e5", "1e6", "2e6"])
    args = ap.parse_args()
    print("| rows | data frame (MB) | before the fit (MB) | peak during the fit (MB) | fit (s) "
          "| summary() / fit |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for size in args.sizes:
        n = int(float(size))
        out = subprocess.run([sys.executable, "-c", CODE.format(root=str(ROOT), n=n)],
                             capture_output=True, text=True, check=True)
        data, before, peak, secs, summary = map(float, out.stdout.split())
        print(f"| {n:.0e} | {data:.0f} | {before:.0f} | {peak:.0f} | {secs:.1f} | {summary / secs:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
