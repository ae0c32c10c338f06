"""Profile intervals: hierlmm's ``fit.confint(method="profile")`` against lme4's
``confint(profile(m))``, timed side by side in one run (issue 11).

    python bench/profile_bench.py [--reps 5] [--load]

Both profile a REML fit on the ML deviance (both refit by ML first; lme4 inside
``profile``). The fit itself is not timed. Prints medians and the ratio hierlmm / lme4 per
model; record ratios, not times (the machine is shared). ``--load`` repeats the run with a
background numerical process (``bench/load.py``) on one core, as users run it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import hierlmm as hl  # noqa: E402

MODELS = [
    ("sleepstudy (Days | Subject)", "sleepstudy", "Reaction ~ Days + (Days | Subject)"),
    ("Dyestuff (1 | Batch)", "Dyestuff", "Yield ~ 1 + (1 | Batch)"),
    ("Penicillin (1|plate)+(1|sample)", "Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
    ("MathAchieve (SES | School)", "MathAchieve", "MathAch ~ SES + (SES | School)"),
]


def time_hierlmm(data, formula, reps):
    fit = hl.LMM(formula, hl.datasets.load(data)).fit()
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hl.HierlmmWarning)
        for _ in range(reps + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            fit.confint(method="profile", progressbar=False)
            times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def time_lme4(data, formula, reps):
    if not shutil.which("Rscript"):
        return None
    csv = str(hl.datasets.path(data))
    levels = str(Path(csv).with_suffix("").as_posix() + ".levels.json")
    out = subprocess.run(["Rscript", str(HERE / "time_lme4_profile.R"), csv, formula, str(reps), levels],
                         capture_output=True, text=True)
    if out.returncode != 0:
        print("lme4 failed:", out.stderr.strip().splitlines()[-1:], file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])["median"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--load", action="store_true", help="also time under a background CPU load")
    args = ap.parse_args()
    print("quiet machine")
    run(args.reps)
    if args.load:
        from load import background_load

        print("under load (one background numerical process)")
        with background_load(workers=1):
            run(args.reps)


def run(reps):
    for label, data, formula in MODELS:
        t_h = time_hierlmm(data, formula, reps)
        t_r = time_lme4(data, formula, reps)
        ratio = t_h / t_r if t_r else float("nan")
        print(f"{label:34s} hierlmm {t_h:7.3f}s  lme4 {t_r if t_r else float('nan'):7.3f}s  ratio {ratio:.2f}",
              flush=True)


if __name__ == "__main__":
    main()
