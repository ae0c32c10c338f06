"""One BLAS thread in hierlmm's loops.

An evaluation of the deviance makes many small and medium BLAS/LAPACK calls (batched ``k x k``
blocks, dense Cholesky factors of order 10 to ~1,000). A multi-threaded BLAS wakes its threads
for each call, which costs more than the call, and when another process holds a core its
threads spin and stall. Measured on this project's 2-core machine, with one background process
doing BLAS work:

* nested ``(1 | a/s)``, 131 x 2410 levels, n = 31,022: fit 0.145 s with two threads, 0.084 s
  with one;
* nested ``(1 | a/b)``, 300 x 3000 levels, n = 30,000: 75 times lme4's time with two threads;
* InstEval ``(1 | s) + (1 | d) + (1 | dept)``: 334 s with two threads, 6.8 s with one.

On a quiet machine one thread was never slower in a fit (InstEval 4.51 s vs 4.66 s with two;
a lone dense Cholesky and product of order 1,200 gain 27% from a second thread, but a fit is
not one large call). So the loops that evaluate a deviance many times (the fit, profiles, the
bootstrap) run with one BLAS thread, through threadpoolctl (the library scikit-learn uses for
the same purpose), set once around a loop, not per call; the user's setting is restored after.
"""

from __future__ import annotations

import contextlib
import functools

__all__ = ["one_blas_thread", "map_one_blas_thread", "workers"]


def workers(tasks: int | None = None) -> int:
    """Threads for hierlmm's parallel loops: one per core, at most 4 (and at most ``tasks``)."""
    import os

    n = min(os.cpu_count() or 1, 4)
    return max(1, n if tasks is None else min(n, tasks))


def one_blas_thread():
    """A context manager: BLAS limited to one thread inside, as before outside."""
    controller = _controller()
    return contextlib.nullcontext() if controller is None else controller.limit(limits=1, user_api="blas")


def map_one_blas_thread(fn, items, slow: float = 2e-3, threads: bool | None = None) -> list:
    """``[fn(item) for item in items]`` with one BLAS thread: the first call timed, then the rest
    in a thread per core (up to 4) if it took ``slow`` seconds or more, else in order; with
    ``threads`` given, all in threads (``True``) or in order (``False``), nothing timed. LAPACK
    releases the GIL, so large factorisations gain from threads; small ones are bound by
    Python and the GIL and run faster in order. Measured on this project's 2-core machine
    (values of the collapsed density, :mod:`hierlmm.bayes.independence`): InstEval (a dense
    block of 1,145 rows) 15-18 ms per value in two threads (20.5 ms before worker threads
    factored with numpy's LAPACK: :func:`hierlmm.cholesky.dense_cholesky`), 16 ms in order
    with BLAS's own two threads, 23 ms with one; beside a process that keeps one core busy
    23-29 ms in two threads and 140 ms in order with BLAS's threads (the stall above);
    sleepstudy 0.24 ms in order, 0.38 ms in two threads."""
    import time

    items = list(items)
    if not items:
        return []
    n_workers = workers(len(items))
    with one_blas_thread():
        first = []
        if threads is None:
            start = time.perf_counter()
            first = [fn(items[0])]
            items = items[1:]
            threads = time.perf_counter() - start >= slow
        if not threads or n_workers < 2:
            return first + [fn(item) for item in items]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(n_workers) as pool:
            return first + list(pool.map(fn, items))


@functools.cache
def _controller():
    """One threadpoolctl controller per process: finding the loaded BLAS libraries costs ~1 ms,
    limiting them afterwards ~0.01 ms (a small fit takes ~10 ms)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - a core dependency; keep working without it
        return None
    return ThreadpoolController()
