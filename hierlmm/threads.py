"""BLAS threads by problem size.

An evaluation of the deviance of a design with small dense blocks (nested and most crossed
models: a few hundred columns in block 2, batched ``k x k`` blocks in block 1) makes many
small BLAS/LAPACK calls. A multi-threaded BLAS wakes its threads for each, which costs more
than the call, and stalls when another process holds a core (a nested model with 131 x 2410
levels: 0.19 ms per evaluation with one thread, 0.70 ms with two under a background load;
a Cholesky and a product of order 100-1,200 run twice as long with two threads as with one
when another process is busy). On a quiet machine threads start to pay from order ~300
(0.86 of the one-thread time at 400, 0.73 at 1,200): InstEval's ~1,100 columns keep them. So the
loops that evaluate a deviance many times (the fit, profiles, the bootstrap) run with one
BLAS thread when the largest dense block is below :data:`SMALL_BLOCK`, through threadpoolctl
(the library scikit-learn uses for the same purpose) — set once around a loop, not per call.
"""

from __future__ import annotations

import contextlib
import functools

__all__ = ["SMALL_BLOCK", "blas_threads_for"]

# order of the largest dense matrix below which one BLAS thread is faster (see the module doc)
SMALL_BLOCK = 300


def largest_block(obj) -> int:
    """The order of the largest dense matrix an evaluation factorises: of a deviance (either
    engine), or of the blocked engine's deviance of a design (``A22``: the columns of the
    terms after the first, of X and y), known before ``A`` is built."""
    cp = getattr(obj, "cp", None)
    if cp is not None:
        return cp.r
    if hasattr(obj, "stacks"):
        return max((s["rows"].shape[1] for s in obj.stacks), default=0)
    return sum(t.q for t in obj.terms[1:]) + obj.p + 1


def blas_threads_for(obj):
    """A context manager: one BLAS thread while ``obj`` (a deviance, or a design whose
    deviance is about to be built and evaluated) is at work, if its blocks are small
    (:data:`SMALL_BLOCK`); otherwise nothing changes."""
    if largest_block(obj) >= SMALL_BLOCK:
        return contextlib.nullcontext()
    controller = _controller()
    return contextlib.nullcontext() if controller is None else controller.limit(limits=1, user_api="blas")


@functools.cache
def _controller():
    """One threadpoolctl controller per process: finding the loaded BLAS libraries costs ~1 ms,
    limiting them afterwards ~0.01 ms (a small fit takes ~10 ms)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - a core dependency; keep working without it
        return None
    return ThreadpoolController()
