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
* the proposals do not depend on the chain, so all of them are drawn and their densities
  evaluated first (in threads where a value is a large factorisation: LAPACK releases the
  GIL), then each chain, started at the mode, accepts or rejects in one pass; its first
  ``tune`` draws are discarded.

R-hat and ESS are computed from the chains as for NUTS (:meth:`Posterior.check`); a posterior
far from Gaussian shows as a low acceptance rate and a short ESS, which ``sample()`` answers
with more draws and then a warning. Where no mode is found or the Hessian is not negative
definite, :func:`independence_sampler` returns ``None`` and NUTS runs on the same density.
"""

from __future__ import annotations

import numpy as np

from hierlmm.bayes.numpy_density import NumpyDensity

__all__ = ["IndependenceSampler", "independence_sampler"]

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

    def _values(self, xs: np.ndarray, progressbar: bool) -> np.ndarray:
        """``log p(x | y)`` at every row of ``xs``, in threads where one value is a large
        factorisation (:func:`hierlmm.threads.map_one_blas_thread`)."""
        import threading

        from hierlmm.progress import progress
        from hierlmm.threads import map_one_blas_thread

        local = threading.local()  # a compiled PyTensor function per thread (it keeps its own storage)
        with progress(len(xs), "independence sampler", show=None if progressbar else False) as bar:
            def value(x):
                if not hasattr(local, "density"):
                    local.density = self.density.for_a_chain()
                bar.update(1)
                return local.density.value(x)

            return np.array(map_one_blas_thread(value, xs), dtype=float)

    def sample(self, draws: int, tune: int, chains: int, seed: int, progressbar: bool = False) -> dict:
        """``{"posterior": {"x": (chains, draws, d)}, "sample_stats": {...}}`` (xarray), as the
        NUTS path returns; the stats are ``acceptance_rate`` (whether the draw was a move),
        ``lp`` and ``diverging`` (never)."""
        import xarray as xr

        rng = np.random.default_rng(seed)
        n = tune + draws
        xs, lq = self._propose(chains * n, rng)
        lp = self._values(xs, progressbar)
        lw = np.where(np.isfinite(lp), lp - lq, -np.inf)
        # every chain starts at the mode (as NUTS starts at the REML point), a state of finite density
        xs, lp = np.vstack([xs, self.mode]), np.append(lp, self.density.value(self.mode))
        lw = np.append(lw, lp[-1] - self._log_q(self.mode[None])[0])
        logu = np.log(rng.uniform(size=chains * n))
        d = self.mode.size
        x_out = np.empty((chains, draws, d))
        lp_out = np.empty((chains, draws))
        moved = np.zeros((chains, draws), dtype=bool)
        for c in range(chains):
            cur = len(xs) - 1
            for t in range(n):
                i = c * n + t
                step = bool(logu[i] < lw[i] - lw[cur])  # never to a proposal of density 0 (lw = -inf)
                if step:
                    cur = i
                if t >= tune:
                    x_out[c, t - tune] = xs[cur]
                    lp_out[c, t - tune] = lp[cur]
                    moved[c, t - tune] = step
        dims = ("chain", "draw")
        return {"posterior": xr.Dataset({"x": (dims + ("unconstrained_parameter",), x_out)}),
                "sample_stats": xr.Dataset({"acceptance_rate": (dims, moved.astype(float)), "lp": (dims, lp_out),
                                            "diverging": (dims, np.zeros((chains, draws), dtype=bool))})}


def independence_sampler(model, prior, x0) -> IndependenceSampler | None:
    """The sampler at the mode of ``log p(x | y)`` found from ``x0``, or ``None`` where the
    mode or a negative definite Hessian there is not found (the posterior is then far from
    Gaussian: NUTS)."""
    import scipy.optimize

    density = NumpyDensity(model, prior)

    def neg(x):
        value, grad = density(x)
        if not np.isfinite(value):
            return np.inf, np.zeros_like(x)
        return -value, -grad

    x0 = np.asarray(x0, dtype=float)
    res = scipy.optimize.minimize(neg, x0, jac=True, method="BFGS", options={"gtol": 1e-6, "maxiter": 500})
    m = res.x
    value, grad = density(m)
    if not np.isfinite(value) or np.max(np.abs(grad)) > 1e-2:  # no mode: the posterior runs off
        return None
    d = m.size
    H = np.empty((d, d))
    for i in range(d):
        h = 1e-4 * max(1.0, abs(m[i]))
        e = np.zeros(d)
        e[i] = h
        gp, gm = density(m + e)[1], density(m - e)[1]
        H[:, i] = (gp - gm) / (2 * h)
    H = 0.5 * (H + H.T)
    try:
        chol = np.linalg.cholesky(np.linalg.inv(-H))
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(chol)):
        return None
    return IndependenceSampler(density, m, chol)
