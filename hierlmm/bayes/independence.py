"""The collapsed posterior of models beyond the compiled kernel's size, by independence
Metropolis–Hastings.

For these models (a rest block of more than ``kernel._MAX_R`` rows: crossed factors with
many levels such as InstEval, a cross-product reduced by Dask) one evaluation of the collapsed
density (:class:`~hierlmm.bayes.numpy_density.NumpyDensity`) is one factorisation of the
blocked system, tens of milliseconds or more, and NUTS needs several gradients per draw. Their
few covariance parameters are informed by thousands of levels, so the posterior of the
unconstrained ``x = (η, s)`` is close to Gaussian, and an independence sampler needs one
density value per draw:

* the proposal is a multivariate ``t_ν(m, c²Σ)``, ``ν = 5``, ``c = 1.25``, with ``m`` the mode
  of ``log p(x | y)`` (BFGS on the exact gradient) and ``Σ`` the inverse of the negative
  Hessian there (central differences of the gradient);
* a chain moves to a proposal ``x*`` with probability ``min(1, w(x*)/w(x))``,
  ``w = p(x | y)/q(x)``: a Metropolis–Hastings kernel that leaves ``p(x | y)`` invariant; with
  ``q``'s polynomial tails heavier than the posterior's exponential ones in ``x``, ``w`` is
  bounded and the chain is uniformly ergodic (Tierney 1994, Mengersen & Tweedie 1996);
* each chain, started at the mode, goes through its proposals, one factorisation each, and
  at each move draws ``(β, b)`` exactly from that factor (:meth:`IndependenceSampler.sample`),
  so nothing is factorised again afterwards; its first ``tune`` draws are discarded. Where a
  value is a large factorisation the chains run in threads (LAPACK releases the GIL).

R-hat and ESS are computed from the chains as for NUTS (:meth:`Posterior.check`); a posterior
far from Gaussian shows as a low acceptance rate and a short ESS, which ``sample()`` answers
with more draws and then a warning. Where no mode is found or the Hessian is not negative
definite, :func:`independence_sampler` returns ``None`` and NUTS runs on the same density.
"""

from __future__ import annotations

import numpy as np

from hierlmm.bayes.numpy_density import NumpyDensity

__all__ = ["IndependenceSampler", "independence_sampler", "unit_scale"]

NU = 5.0
SCALE = 1.25


class IndependenceSampler:
    """A fixed multivariate-t proposal at the posterior mode of ``x`` and the density to weigh it."""

    interim = False  # True: standing in for the compiled kernel while it compiles (sample() does not keep it)

    def __init__(self, density: NumpyDensity, mode: np.ndarray, chol: np.ndarray):
        self.density, self.mode, self.chol = density, mode, chol  # Σ = chol chol'

    def _propose(self, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
        """``n`` draws of ``t_ν(m, c²Σ)`` and their log densities (up to a constant)."""
        d = self.mode.size
        z = rng.standard_normal((n, d))
        w = rng.chisquare(NU, size=n) / NU
        x = self.mode + SCALE * (z @ self.chol.T) / np.sqrt(w)[:, None]
        return x, self._log_q(x)

    def _log_q(self, x: np.ndarray) -> np.ndarray:
        """``log q`` at the rows of ``x``, up to a constant."""
        delta = np.linalg.solve(self.chol, (x - self.mode).T).T / SCALE
        return -0.5 * (NU + self.mode.size) * np.log1p(np.einsum("ij,ij->i", delta, delta) / NU)

    def sample(self, draws: int, tune: int, chains: int, seed: int, progressbar: bool = False) -> dict:
        """``{"posterior": {"x": (chains, draws, d)}, "sample_stats": {...}, "conditional": {"beta",
        "b"}}`` (xarray for the first two, as the NUTS path returns); the stats are
        ``acceptance_rate`` (whether the draw was a move), ``lp`` and ``diverging`` (never).

        Each chain, started at the mode, goes through its proposals in order: the value (one
        factorisation), the accept/reject step, and at each move an exact draw of ``(β, b)``
        given ``x`` from the same factor (:meth:`NumpyDensity.draw`). This is the independence
        sampler of ``(x, β, b)`` with proposal ``q(x) p(β, b | x, y)``: its weights are
        ``p(x | y)/q(x)`` again, so it accepts the same moves, and a chain that stays keeps its
        draw of ``(β, b)`` as it keeps ``x``. One factorisation per proposal, none after. Where
        one value is a large factorisation the chains run in threads of one BLAS thread each
        (LAPACK releases the GIL), else one after another."""
        import threading
        import time

        import xarray as xr

        from hierlmm.progress import progress
        from hierlmm.threads import map_one_blas_thread

        rng = np.random.default_rng(seed)
        n = tune + draws
        xs, lq = self._propose(chains * n, rng)
        logu = np.log(rng.uniform(size=chains * n))
        noise = rng.spawn(chains)  # the draws of (β, b): one stream per chain, whatever runs when
        design = self.density.dev.design
        size, d = design.q + design.p, self.mode.size
        x_out, lp_out = np.empty((chains, draws, d)), np.empty((chains, draws))
        moved = np.zeros((chains, draws), dtype=bool)
        beta_out = np.empty((chains, draws, design.p))
        b_out = [np.empty((chains, draws, t.m, t.k)) for t in design.terms]
        start = time.perf_counter()
        lp_mode, parts_mode = self.density.value_and_factor(self.mode)  # a state of finite density
        slow = time.perf_counter() - start >= 2e-3
        lw_mode = lp_mode - self._log_q(self.mode[None])[0]
        lock = threading.Lock()

        def chain(c):
            density = self.density.for_a_chain()  # a compiled PyTensor function keeps its own storage
            x, lp, lw = self.mode, lp_mode, lw_mode
            beta, bs = density.draw(parts_mode, noise[c].standard_normal(size))
            for t in range(n):
                i = c * n + t
                lp_i, parts = density.value_and_factor(xs[i])
                with lock:
                    bar.update(1)
                lw_i = lp_i - lq[i] if parts is not None else -np.inf
                step = bool(logu[i] < lw_i - lw)  # never to a proposal of density 0 (lw = -inf)
                if step:
                    x, lp, lw = xs[i], lp_i, lw_i
                    beta, bs = density.draw(parts, noise[c].standard_normal(size))
                if t >= tune:
                    j = t - tune
                    x_out[c, j], lp_out[c, j], moved[c, j], beta_out[c, j] = x, lp, step, beta
                    for out, b in zip(b_out, bs):
                        out[c, j] = b

        with progress(chains * n, "independence sampler", show=None if progressbar else False) as bar:
            map_one_blas_thread(chain, range(chains), threads=slow)
        dims = ("chain", "draw")
        return {"posterior": xr.Dataset({"x": (dims + ("unconstrained_parameter",), x_out)}),
                "sample_stats": xr.Dataset({"acceptance_rate": (dims, moved.astype(float)), "lp": (dims, lp_out),
                                            "diverging": (dims, np.zeros((chains, draws), dtype=bool))}),
                "conditional": {"beta": beta_out, "b": b_out}}


def unit_scale(density: NumpyDensity, x0: np.ndarray) -> np.ndarray:
    """Per entry of ``x``, a unit for the search of the mode and the Hessian's steps, so that
    neither depends on the data's units: 1 for the logs (of σ², of a factor's diagonal, of a
    structure's SDs) and for a structure's correlation parameters; for an entry of a factor off
    its diagonal, ``η_e = σ θ_e = σ φ_e / s_r`` with ``φ_e = s_r θ_e`` the REML optimiser's
    unit-free coordinate (:func:`hierlmm.optimize.theta_scale`: ``s_r`` the RMS of the row's
    column of ``Z``), so its unit is ``σ₀ / s_r`` at ``x0``'s σ₀ (a random slope of ``Days`` in
    units of 1e-8 days has off-diagonal entries 1e8 times smaller, and gradients 1e8 times larger)."""
    from hierlmm.optimize import theta_scale

    layout = density.layout
    unit = np.ones(layout.size)
    linear = layout.scaled & ~layout.exponential
    s_r = theta_scale(density.dev)[: layout.n_eta]
    sigma0 = float(np.exp(0.5 * x0[layout.n_eta]))
    ok = linear & (s_r > 0) & np.isfinite(s_r)
    if np.isfinite(sigma0) and sigma0 > 0:
        unit[: layout.n_eta][ok] = sigma0 / s_r[ok]
    return unit


def independence_sampler(model, prior, x0) -> IndependenceSampler | None:
    """The sampler at the mode of ``log p(x | y)`` found from ``x0``, or ``None`` where the
    mode or a negative definite Hessian there is not found (the posterior is then far from
    Gaussian: NUTS).

    The search and the Hessian work on ``u = (x − x0) / unit`` (:func:`unit_scale`), and the
    mode is judged by the Newton decrement ``λ² = g'(−H)⁻¹g`` (twice the log density that a
    Newton step would still gain), which is the same in any linear coordinates: a mode is
    found or not whatever the data's units. Both run with one BLAS thread
    (:mod:`hierlmm.threads`: InstEval's search and Hessian took 1.6 s quiet, and 31 s beside a
    process that keeps one core busy while BLAS's two threads stalled)."""
    from hierlmm.threads import one_blas_thread

    with one_blas_thread():
        return _at_the_mode(model, prior, x0)


def _at_the_mode(model, prior, x0) -> IndependenceSampler | None:
    """:func:`independence_sampler`'s work."""
    import scipy.optimize

    density = NumpyDensity(model, prior)
    x0 = np.asarray(x0, dtype=float)
    unit = unit_scale(density, x0)

    def at(u):
        value, grad = density(x0 + unit * u)
        return value, grad * unit

    def neg(u):
        value, grad = at(u)
        if not np.isfinite(value):
            return np.inf, np.zeros_like(u)
        return -value, -grad

    res = scipy.optimize.minimize(neg, np.zeros_like(x0), jac=True, method="BFGS",
                                  options={"gtol": 1e-6, "maxiter": 500})
    u = res.x
    value, grad = at(u)
    if not np.isfinite(value):
        return None
    d = u.size
    H = np.empty((d, d))
    for i in range(d):
        h = 1e-4 * max(1.0, abs(u[i]))
        e = np.zeros(d)
        e[i] = h
        H[:, i] = (at(u + e)[1] - at(u - e)[1]) / (2 * h)
    H = 0.5 * (H + H.T)
    try:
        chol_neg_h = np.linalg.cholesky(-H)
        root = np.linalg.inv(chol_neg_h).T  # (−H)⁻¹ = root root'
    except np.linalg.LinAlgError:
        return None
    step = root.T @ grad
    if not np.all(np.isfinite(root)) or float(step @ step) > 1e-2:  # no mode: the posterior runs off
        return None
    return IndependenceSampler(density, x0 + unit * u, unit[:, None] * root)
