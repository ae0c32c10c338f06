"""A background CPU load for benchmarks: users run hierlmm beside other numerical work.

``with background_load(workers=1):`` starts ``workers`` processes that multiply small and
medium matrices in a loop (a numerical neighbour such as a sampler: BLAS calls, one core
each) and stops them on exit; each also stops itself after ``limit`` seconds.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys

_BURN = """
import time, numpy as np
end = time.time() + {limit}
a, b = np.random.rand(200, 200), np.random.rand(30, 30)
while time.time() < end:
    a @ a
    for _ in range(50):
        b @ b
"""


@contextlib.contextmanager
def background_load(workers: int = 1, limit: float = 900.0):
    procs = [subprocess.Popen([sys.executable, "-c", _BURN.format(limit=limit)]) for _ in range(workers)]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()
