"""Runs R on a batch of generated cases: CSV files and one JSON in, one JSON out.

The batch is split over ``workers`` R processes (one per core), each paying R's start-up once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).with_name("fit_r.R")

INSTALL_HINT = (
    "R with lme4, lmerTest, pbkrtest, nlme, emmeans, performance and jsonlite is needed for the differential tests: "
    "run `bash .ci/install-r.sh` (Debian's r-base-core and r-cran-* packages, a few minutes)"
)


def r_available() -> str | None:
    """None when R and its packages are usable, else why not."""
    if shutil.which("Rscript") is None:
        return "Rscript is not on PATH"
    probe = subprocess.run(
        ["Rscript", "-e", "for (p in c('lme4','lmerTest','pbkrtest','nlme','emmeans','performance','glmmTMB','jsonlite')) "
         "if (!requireNamespace(p, quietly=TRUE)) stop('missing R package ', p)"],
        capture_output=True, text=True)
    if probe.returncode != 0:
        return probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "R probe failed"
    return None


def _spec(case, folder: Path) -> dict:
    csv = folder / f"{case.id}.csv"
    case.data.to_csv(csv, index=False)
    factors = {}
    for col in case.data.columns:
        dtype = case.data[col].dtype
        if isinstance(dtype, pd.CategoricalDtype):
            factors[col] = {"levels": [str(c) for c in dtype.categories], "ordered": bool(dtype.ordered)}
    newdata = None
    if case.newdata is not None:
        newdata = str(folder / f"{case.id}_new.csv")
        case.newdata.to_csv(newdata, index=False)
        factors["g_new"] = {"levels": [str(c) for c in case.newdata["g"].cat.categories], "ordered": False}
    return {"id": case.id, "formula": case.formula, "csv": str(csv), "factors": factors,
            "reml": case.reml, "kr": case.kr, "profile": case.profile, "lrt_drop": case.lrt_drop,
            "ar1": case.ar1, "rescale": case.rescale, "centre": case.centre, "weights": case.weights, "newdata": newdata,
            "ar1_random": case.ar1_random, "structure": case.structure, "struct_expr": case.struct_expr}


def _run(specs: list[dict], folder: Path, tag: str) -> list[dict]:
    cin, cout = folder / f"cases_{tag}.json", folder / f"results_{tag}.json"
    cin.write_text(json.dumps(specs))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(["Rscript", str(SCRIPT), str(cin), str(cout)], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"R failed on the differential batch:\n{proc.stderr[-4000:]}")
    return json.loads(cout.read_text())


def _cache_key(specs: list[dict]) -> str:
    """Hash of everything R reads: the script, the specifications and the data files."""
    h = hashlib.sha256(SCRIPT.read_bytes())
    for s in specs:  # the files' contents, not their (temporary) paths
        h.update(json.dumps({k: v for k, v in s.items() if k not in ("csv", "newdata")}, sort_keys=True).encode())
        h.update(Path(s["csv"]).read_bytes())
        if s.get("newdata"):
            h.update(Path(s["newdata"]).read_bytes())
    return h.hexdigest()[:20]


def fit_in_r(cases, folder: Path, workers: int = 2) -> dict[str, dict]:
    """R's results for every case, by case id.

    With ``HIERLMM_DIFF_CACHE`` set to a folder, results are kept there by a hash of the
    script and the inputs (for quick local iterations; CI does not set it).
    """
    folder.mkdir(parents=True, exist_ok=True)
    specs = [_spec(c, folder) for c in cases]
    cache_dir = os.environ.get("HIERLMM_DIFF_CACHE")
    cached = Path(cache_dir) / f"r_{_cache_key(specs)}.json" if cache_dir else None
    if cached is not None and cached.exists():
        return json.loads(cached.read_text())
    # costlier cases (profile, KR) spread evenly over the workers
    chunks = [specs[i::workers] for i in range(workers)]
    with ThreadPoolExecutor(workers) as ex:
        parts = list(ex.map(lambda a: _run(a[1], folder, str(a[0])), enumerate(chunks)))
    out = {r["id"]: r for part in parts for r in part}
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(out))
    return out
