"""The collapsed log-density and its gradient, differentiated by hand, compiled by numba once
per machine (``cache=True``) and handed to nutpie as a C callback: no graph to compile per
model, so a first ``sample()`` in a new session starts in well under a second.

The log-density is :func:`hierlmm.bayes.collapsed.reml_loglik_blocked_pt` plus the prior and
log-Jacobian of :mod:`hierlmm.bayes.priors` (``flat``, ``flat_sd``, weakly informative), at the unconstrained
point ``x = (η, s)``; the tests check value and gradient against the PyTensor graph. With
``θ = vech(L)/σ`` (``L_ii = e^{η_ii}``), the first term's ``T`` and, per level j,

.. math::

    S_j = T'A_{11,j}T + I = L_jL_j', \\quad G_j = TL_j^{-T}, \\quad
    C = Σ_j A_{21,j}G_jG_j'A_{21,j}', \\quad M = Λ_r'(A_{22} − C)Λ_r + J = L_{22}L_{22}',

``−2ℓ = 2Σ_j\\log|L_j| + 2Σ_{i<q_r+p}\\log L_{22,ii} + \\log|S_X|² − Σ\\log w + (n−p)(\\log 2π + s)
+ L_{22,rr}²e^{−s}``. The reverse pass uses, for ``L = chol(M)``, ``\\bar M = L^{-T}
\\operatorname{sym}(Φ(L'\\bar L))L^{-1}`` (``Φ``: lower triangle, diagonal halved; Murray
2016), so that ``dℓ = tr(\\bar M dM)``; then ``\\bar Λ_r = 2(A_{22} − C)Λ_r\\bar M``,
``\\bar C = −Λ_r\\bar MΛ_r'``, ``\\bar G_j = 2A_{21,j}'\\bar CA_{21,j}G_j``,
``\\bar T = Σ_j \\bar G_jL_j^{-1} + 2A_{11,j}T\\bar S_j``, ``\\bar L_j = −L_j^{-T}\\bar G_j'G_j``
(lower part) ``− diag(1/L_j)``, and ``θ = L/σ`` chains to ``(η, s)``.

The data travel in one float64 buffer (:func:`pack`) whose address nutpie passes back to
the callback; the header says where each array starts.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pack", "compiled_model", "conditional_draws", "logp_grad", "supported", "beyond_its_size",
           "compile_in_background", "compiling"]

HEADER = 20
LOG2PI = float(np.log(2 * np.pi))
_PRIORS = {"flat": 0, "flat_sd": 1}  # and 2: WeaklyInformative (resolved: scales set)
# the rest block's size up to which its hand-written Cholesky (loops) costs little more than
# LAPACK's in the PyTensor graph
_MAX_R = 300
# the most numbers the groups' r × r matrices P_g may take in the buffer (pack)
_MAX_GROUPED = 4_000_000
# the first term's effects per level up to which its k x k blocks are looped over (O(k³) per
# level; the loops are written for any k: a k = 5 term on 360 rows samples in ~9 s, where the
# PyTensor graph of the dense A took ~2 s per NUTS iteration)
_MAX_K = 8


def _prior_code(prior):
    from hierlmm.bayes.priors import WeaklyInformative

    if isinstance(prior, WeaklyInformative):
        return 2 if prior.sd_scale is not None and prior.sigma_scale is not None else None
    return _PRIORS.get(prior) if isinstance(prior, str) else None


def supported(design, cp, prior=None) -> bool:
    """Whether the compiled kernel covers this model: the first term with at most ``_MAX_K``
    effects per level, a dense block of at most ``_MAX_R`` rows (``A21`` is used dense: at most
    ``r × q1`` numbers); and, if ``prior`` is given (the log-density; the exact draws need
    none), ``flat``, ``flat_sd`` or a resolved :class:`~hierlmm.bayes.WeaklyInformative`."""
    return ((prior is None or _prior_code(prior) is not None) and not beyond_its_size(design, cp)
            and all(t.unstructured for t in design.terms))  # θ is vech(T) of each term


def beyond_its_size(design, cp) -> bool:
    """The model is outside the kernel by its size alone (a rest block of more than
    ``_MAX_R`` rows, an ``A21`` too large to hold dense, a first term of more than ``_MAX_K``
    effects): the independence sampler on the core's factor samples it
    (:mod:`hierlmm.bayes.independence`, :mod:`hierlmm.bayes.numpy_density`)."""
    return design.terms[0].k > _MAX_K or cp.r > _MAX_R or cp.r * cp.A11.shape[0] * cp.A11.shape[1] > 4_000_000


def pack(design, cp, prior) -> np.ndarray:
    """The buffer :func:`logp_grad` reads: header, term sizes and θ offsets, the rest terms'
    ``Λ`` pattern (rows, columns, θ index), then ``A11``, ``A21`` (``r × m × k``), ``A22``, X's
    scale, and for a scalar first term whose levels fall in few groups of equal ``A11`` (at
    most a quarter as many as levels, ``_MAX_GROUPED`` numbers) each level's group, the groups'
    sizes and their ``P_g = Σ_{j ∈ g} a_j a_j'`` (:func:`hierlmm.bayes._kernel_impl._groups`)."""
    from hierlmm.cholesky import equal_a11_groups
    from hierlmm.reterms import lambda_entries

    terms = design.terms
    slices = design.theta_slices()
    rows, cols, src, _ = lambda_entries(terms[1:], slices[1].start) if len(terms) > 1 else ([], [], [], 0)
    m, k = cp.A11.shape[:2]
    r = cp.r
    a21 = cp.A21.toarray() if cp.a21_sparse else np.asarray(cp.A21, float)
    parts = [np.array([t.k for t in terms], float), np.array([s.start for s in slices], float),
             np.asarray(rows, float), np.asarray(cols, float), np.asarray(src, float),
             np.transpose(np.asarray(cp.A11, float), (1, 2, 0)).ravel(),
             a21.reshape(r, m, k).transpose(0, 2, 1).ravel(),
             np.asarray(cp.A22, float).ravel(), np.ones(cp.p)]  # β̃: mapped by cp.beta
    ng = 0
    if k == 1:  # the levels in groups of equal A11 (_kernel_impl._groups), where that saves work
        _, group, size = equal_a11_groups(cp.A11)
        if size.size * r * r <= min(m * r * r / 4, _MAX_GROUPED):
            P = np.zeros((size.size, r, r))
            order = np.argsort(group, kind="stable")
            bounds = np.concatenate([[0], np.cumsum(size)])
            for g in range(size.size):
                cols = a21[:, order[bounds[g]:bounds[g + 1]]]
                P[g] = cols @ cols.T
            ng = size.size
            parts += [group.astype(float), size.astype(float), P.ravel()]
    n_dim = design.n_theta + 1
    header = np.zeros(HEADER)
    header[:14] = [n_dim, k, m, r, cp.q_rest, cp.p, design.n, cp.logdet_scale, cp.log_weights,
                   _prior_code(prior), len(terms), len(rows), 0.0, design.n_theta]
    if header[9] == 2:  # σ's scale, the SDs' scale, ν (0: half-normal), LKJ's η
        header[14:18] = [prior.sigma_scale, prior.sd_scale, prior.nu or 0.0, prior.eta]
    header[18] = ng
    buf = np.concatenate([header, *parts])
    buf[12] = buf.size
    return np.ascontiguousarray(buf)


_KERNEL = {}


def _cache_is_cold() -> bool:
    """Whether numba has no up-to-date cache of the kernel: an index file of its C callbacks
    (compiled when :mod:`hierlmm.bayes._kernel_impl` is imported) is missing from the places
    numba keeps them (``__pycache__`` beside the source, ``NUMBA_CACHE_DIR``), or was written
    by another numba or for another source. Fresh is what numba itself checks: the index's
    numba version and its stamp of the source, the SHA-256 of the file's bytes (numba ≥ 0.61;
    its modification time and size before), so a source whose time changed but not its bytes
    (a reinstall, a checkout) is not taken for a cold cache."""
    import glob
    import hashlib
    import importlib.metadata
    import importlib.util
    import os
    import pickle

    source = importlib.util.find_spec("hierlmm.bayes._kernel_impl").origin
    st = os.stat(source)
    with open(source, "rb") as f:
        fresh = (hashlib.sha256(f.read()).digest(), (st.st_mtime, st.st_size))
    try:
        version = importlib.metadata.version("numba")
    except importlib.metadata.PackageNotFoundError:
        return True
    if os.environ.get("NUMBA_CACHE_DIR"):  # numba then uses only that
        places = [os.environ["NUMBA_CACHE_DIR"]]
    else:  # beside the source, or the user's cache where the source's folder is read-only
        places = [os.path.join(os.path.dirname(source), "__pycache__"), os.path.expanduser("~/.cache/numba")]

    def current(index: str) -> bool:
        try:
            with open(index, "rb") as f:
                if pickle.load(f) != version:
                    return False
                stamp = pickle.loads(f.read())[0]
        except Exception:  # noqa: BLE001 - unreadable: numba would not use it either
            return False
        return any(stamp == s for s in fresh)

    for name in ("logp_c", "expand_c"):
        found = [f for d in places for f in glob.glob(os.path.join(d, "**", f"_kernel_impl.{name}-*.nbi"), recursive=True)]
        if not any(current(f) for f in found):
            return True
    return False


# the background compilation this process started (compile_in_background), and when
_BACKGROUND: dict = {}


def _lock_path() -> str:
    """Where a background compilation leaves its process id (one file per hierlmm source)."""
    import importlib.util
    import os
    import tempfile

    source = importlib.util.find_spec("hierlmm.bayes._kernel_impl").origin
    tag = abs(hash((source, os.path.getmtime(source), os.environ.get("NUMBA_CACHE_DIR", ""))))
    return os.path.join(tempfile.gettempdir(), f"hierlmm-kernel-{tag:x}.pid")


def _lock_pid() -> int | None:
    """The process id a background compilation left in the lock file, if any."""
    try:
        with open(_lock_path()) as fh:
            return int(fh.read().strip() or 0)
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def compile_in_background(command=None) -> bool:
    """Start compiling the sampler's kernel into numba's cache in a separate, low-priority
    process, if the ``bayes`` extra is installed, the cache is cold (the first session after
    installing or updating hierlmm) and no other process is already at it; returns whether it
    started one. :meth:`hierlmm.LMM.fit` calls it once per session, so that the 20-25 s of the
    very first compilation pass while the user reads the fit, and the first ``sample()`` only
    waits for what is left. ``HIERLMM_PRECOMPILE=0`` turns it off. ``command``: the process
    to run instead (tests)."""
    import importlib.util
    import os
    import subprocess
    import sys
    import time

    if _BACKGROUND or _KERNEL or os.environ.get("HIERLMM_PRECOMPILE", "1") == "0":
        return False
    _BACKGROUND["checked"] = True
    if importlib.util.find_spec("numba") is None or importlib.util.find_spec("nutpie") is None:
        return False
    if not _cache_is_cold():
        return False
    other = _lock_pid()
    if other and _alive(other):
        return False
    command = command or [sys.executable, "-c", "import os; os.nice(10); import hierlmm.bayes._kernel_impl"]
    try:
        if os.name == "posix":  # detached (the shell exits at once): no child of ours left running or unreaped
            shell = subprocess.run(["/bin/sh", "-c", 'nohup "$@" >/dev/null 2>&1 </dev/null & echo $!', "sh", *command],
                                   capture_output=True, text=True, timeout=30, check=True)
            pid = int(shell.stdout.strip())
        else:
            pid = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL).pid
        with open(_lock_path(), "w") as fh:
            fh.write(str(pid))
    except (OSError, ValueError, subprocess.SubprocessError):
        return False
    _BACKGROUND.update(pid=pid, started=time.time())
    return True


def compiling() -> bool:
    """Whether the kernel is not loaded in this process and a background compilation
    (:func:`compile_in_background`, this process's or another's) is filling its cold cache
    right now: then ``sample()`` does not wait for it (:mod:`hierlmm.bayes.independence`)."""
    if _KERNEL:
        return False
    pid = _BACKGROUND.get("pid") or _lock_pid()
    return bool(pid) and _alive(pid) and _cache_is_cold()


def _wait_for_background(timeout: float = 600.0) -> None:
    """If a background compilation (this process's or another's) is running while the cache
    is cold, say so and wait for it (the cache then loads in a second); a compilation that
    ended without filling the cache leaves the compiling to the caller."""
    import sys
    import time

    pid = _BACKGROUND.get("pid") or _lock_pid()
    if not pid:
        return
    running = lambda: _alive(pid)  # noqa: E731 - a detached process, reaped by the system
    if not running():
        return
    since = f", {time.time() - _BACKGROUND['started']:.0f} s ago" if "started" in _BACKGROUND else ""
    print(f"hierlmm: the sampler's kernel is being compiled into numba's cache in the background (started at "
          f"the first fit(){since}; 20-25 s in all, once per machine and hierlmm version): waiting for it",
          file=sys.stderr, flush=True)
    start = time.time()
    while running() and _cache_is_cold() and time.time() - start < timeout:
        time.sleep(0.2)


def _build():
    """The numba functions (compiled on first use, then loaded from numba's disk cache). A
    compilation says so on stderr (a terminal and Jupyter both show it) before it starts; one
    running in the background (:func:`compile_in_background`) is waited for instead."""
    if _KERNEL:
        return _KERNEL
    import sys

    if _cache_is_cold():
        _wait_for_background()
    if _cache_is_cold():
        print("hierlmm: compiling the sampler's kernel with numba, once per machine and hierlmm version: about "
              "20-25 s (longer on a busy machine); later sessions load it from numba's cache in under a second",
              file=sys.stderr, flush=True)
    import hierlmm.bayes._kernel_impl as impl

    _KERNEL.update(logp_grad=impl.logp_grad, logp_c=impl.logp_c, expand_c=impl.expand_c, draws=impl.draws)
    return _KERNEL


def logp_grad(x: np.ndarray, buf: np.ndarray) -> tuple[float, np.ndarray]:
    """``(log p(x | y), ∇)`` (numpy in, numpy out): the compiled kernel, for tests and checks."""
    k = _build()
    grad = np.zeros(int(buf[0]))
    val = k["logp_grad"](np.asarray(x, float), buf, grad)
    return float(val), grad


def conditional_draws(design, cp, x_draws: np.ndarray, rng, chunk: int = 256):
    """For each unconstrained draw (rows of ``x_draws``), one exact draw of ``(u, β) | σ², D, y``,
    ``L₋^{-T}(c + σz)`` through the blocked factor, and ``b = Λ_θ u``: what
    :meth:`hierlmm.deviance.Deviance.backsolve` returns with ``noise=σz``, all in compiled
    code: ``β`` (draws × p), then ``u`` and ``b`` per term (draws × m × k). ``rng`` gives ``z``,
    in chunks of ``chunk`` draws, drawn in order; the chunks run in threads, one per core (the
    compiled function releases the GIL), at most one chunk per thread in flight."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from hierlmm.threads import one_blas_thread, workers

    k = _build()
    buf = pack(design, cp, "flat")  # the prior does not enter the draws
    nd = x_draws.shape[0]
    size = design.q + design.p
    beta = np.empty((nd, design.p))
    u = np.empty((nd, design.q))
    b = np.empty((nd, design.q))
    xs = np.ascontiguousarray(x_draws, dtype=float)

    def run(start, stop, z):
        return k["draws"](xs[start:stop], buf, z, beta[start:stop], u[start:stop], b[start:stop])

    n_workers = workers()
    ok, pending = True, deque()
    with one_blas_thread(), ThreadPoolExecutor(n_workers) as pool:
        for start in range(0, nd, chunk):
            stop = min(nd, start + chunk)
            pending.append(pool.submit(run, start, stop, rng.standard_normal((stop - start, size))))
            if len(pending) >= n_workers:
                ok &= bool(pending.popleft().result())
        while pending:
            ok &= bool(pending.popleft().result())
    if not ok:
        raise FloatingPointError("the penalised system is not positive definite at a posterior draw")
    beta = cp.beta(beta)  # the kernel's β̃ on the user's scale
    us, bs, at = [], [], 0
    for t in design.terms:
        us.append(u[:, at:at + t.q].reshape(nd, t.m, t.k))
        bs.append(b[:, at:at + t.q].reshape(nd, t.m, t.k))
        at += t.q
    return beta, us, bs


def compiled_model(design, cp, prior, x0):
    """A nutpie model whose log-density is the compiled kernel on this model's data (nutpie's
    own container for numba callbacks, filled directly: no PyMC model, nothing to compile)."""
    import dataclasses

    import pandas as pd
    from nutpie.compile_pymc import CompiledPyMCModel

    k = _build()
    buf = pack(design, cp, prior)
    n = int(buf[0])
    names = [f"x_{i}" for i in range(n)]
    fields = {f.name for f in dataclasses.fields(CompiledPyMCModel)}
    kwargs = dict(dims={"x": ("unconstrained_parameter",)}, compiled_logp_func=k["logp_c"],
                  compiled_expand_func=k["expand_c"], initial_point_func=lambda seed: np.array(x0, float),
                  shared_data={}, shared_var_keys={}, user_data=buf, n_expanded=n,
                  shape_info=(["x"], [slice(0, n)], [(n,)]), logp_func=None, expand_func=None, _n_dim=n,
                  _shapes={"x": (n,)}, _coords={"unconstrained_parameter": pd.Index(names)})
    return CompiledPyMCModel(**{key: v for key, v in kwargs.items() if key in fields})
