"""The collapsed log-density and its gradient on the REML engine's own blocked factor, for the
models the compiled kernel (:mod:`hierlmm.bayes.kernel`) does not cover because of their size:
a rest block of more than ``kernel._MAX_R`` rows (crossed factors with many levels, InstEval)
or an ``A21`` too large to hold dense. For these the PyTensor graph of the dense ``A``
(:mod:`hierlmm.bayes.collapsed`) is far too slow (one NUTS step per evaluation of a graph as
large as ``A``); here one value is one factorisation of the core (:meth:`NumpyDensity.value`,
what the independence sampler of :mod:`hierlmm.bayes.independence` needs) and a gradient adds
one reverse pass
(:func:`hierlmm.gradient.criterion_gradient`), whatever its storage path (sparse downdate maps,
the diagonal rest block of nestings, a cross-product reduced by Dask).

With ``x = (η, s)`` the sampler's unconstrained point (:class:`~hierlmm.bayes.priors.Layout`),
``θ(x)`` the core's relative factor and ``σ² = e^s``,

.. math::

    \\log p(x | y) = −½ d(θ, σ²) + \\log|J(x)| + \\log p(σ², D),

``d`` the REML criterion at ``(θ, σ²)`` (σ not profiled). ``θ_e`` depends on ``x_e`` alone
(``θ_e = e^{η_e}/σ`` on a factor's diagonal or for an SD, ``η_e/σ`` off it, a correlation
parameter itself) and on ``s`` through ``σ`` (``∂θ_e/∂s = −θ_e/2`` for the entries divided by
σ), and ``∂d/∂s = (n − p) − r²/σ²`` at fixed θ. The prior and the log-Jacobian, small
functions of ``x``, are the PyTensor expressions the graph and the kernel's tests use
(:func:`hierlmm.bayes.collapsed.log_prior_pt`), compiled without rewrites in a fraction of a
second.
"""

from __future__ import annotations

import numpy as np

from hierlmm.bayes.priors import Layout
from hierlmm.gradient import criterion_gradient

__all__ = ["NumpyDensity", "numpy_model"]


class NumpyDensity:
    """``log p(x | y)`` and its gradient (numpy) for a model of the blocked engine."""

    def __init__(self, model, prior):
        import pytensor
        import pytensor.tensor as pt

        from hierlmm.bayes.collapsed import log_prior_pt

        self.dev = model.deviance_function(reml=True)
        self.layout = Layout(model.design)
        x = pt.vector("x")
        extra = log_prior_pt(self.layout, prior, x)
        mode = pytensor.compile.mode.Mode(linker="py", optimizer=None)
        self._extra = pytensor.function([x], [extra, pytensor.grad(extra, x)], mode=mode)

    def for_a_chain(self) -> NumpyDensity:
        """A copy for one chain: nutpie runs chains in threads, and a compiled PyTensor function
        keeps its inputs and outputs in storage of its own."""
        import copy

        other = copy.copy(self)
        other._extra = self._extra.copy()
        return other

    def _factor(self, x: np.ndarray):
        """``(σ², θ, σ, L_θ)`` at ``x``; ``L_θ`` is ``None`` where θ is not finite, σ² not
        positive or ``Λ'AΛ + I`` not positive definite."""
        _, s2, theta, sigma = self.layout.theta_sigma(x)
        return s2, theta, sigma, self.dev.chol.factor(theta) if np.all(np.isfinite(theta)) and s2 > 0 else None

    def value(self, x) -> float:
        """``log p(x | y)`` alone: one factorisation, no reverse pass; ``-inf`` where the factor
        does not exist or a number overflows."""
        return self.value_and_factor(x)[0]

    def value_and_factor(self, x) -> tuple[float, tuple | None]:
        """``(log p(x | y), (θ, σ, L_θ))``, the factor kept for :meth:`draw` at the same point;
        ``(-inf, None)`` where there is none."""
        x = np.asarray(x, dtype=float)
        try:
            with np.errstate(all="ignore"):
                s2, theta, sigma, f = self._factor(x)
                if f is None:
                    return -np.inf, None
                value = -0.5 * self.dev.from_parts(f, sigma2=s2) + float(self._extra(x)[0])
        except (ArithmeticError, ValueError, np.linalg.LinAlgError):
            return -np.inf, None
        return (value, (theta, sigma, f)) if np.isfinite(value) else (-np.inf, None)

    def draw(self, parts, z) -> tuple[np.ndarray, list[np.ndarray]]:
        """An exact draw of ``(β, [b_t])`` given ``x`` from its factor ``parts``
        (:meth:`value_and_factor`) and ``z ~ N(0, I_{q+p})``
        (:meth:`hierlmm.deviance.Deviance.backsolve`: ``L₋^{-T}(c + σz)``)."""
        theta, sigma, f = parts
        beta, _, bs = self.dev.backsolve(theta, f, noise=sigma * z)
        return beta, bs

    def __call__(self, x) -> tuple[float, np.ndarray]:
        """``(log p(x | y), ∇_x)``; ``(-inf, zeros)`` where the factor does not exist or a
        number overflows (an exception would abort the sampler's thread)."""
        x = np.asarray(x, dtype=float)
        dev, layout = self.dev, self.layout
        try:
            with np.errstate(all="ignore"):
                s2, theta, sigma, f = self._factor(x)
                g = None if f is None else criterion_gradient(dev.chol, theta, dev.n, dev.p, True, f=f, sigma2=s2)
                extra, extra_grad = self._extra(x)
        except (ArithmeticError, ValueError, np.linalg.LinAlgError):
            g = None
        if g is None or not np.isfinite(extra):
            return -np.inf, np.zeros_like(x)
        d = dev.from_parts(f, sigma2=s2)  # the REML criterion (dev is the REML deviance)
        n_eta = layout.n_eta
        # ∂θ_e/∂x_e: θ_e itself where it is exp(η_e)/σ, 1/σ where η_e/σ, 1 for a correlation parameter
        dtheta = np.where(layout.exponential, theta, np.where(layout.scaled, 1.0 / sigma, 1.0))
        grad = np.empty_like(x)
        grad[:n_eta] = -0.5 * g * dtheta
        dd_ds = (dev.n - dev.p) - f.r2 / s2 + g @ np.where(layout.scaled, -0.5 * theta, 0.0)
        grad[n_eta] = -0.5 * dd_ds
        return float(-0.5 * d + extra), grad + np.asarray(extra_grad, dtype=float)


def numpy_model(model, prior, x0):
    """A nutpie model (``from_pyfunc``) on :class:`NumpyDensity`: the draws are the
    unconstrained ``x`` (β and b are drawn exactly afterwards, as for the kernel)."""
    import pandas as pd
    from nutpie.compiled_pyfunc import from_pyfunc

    density = NumpyDensity(model, prior)
    n = density.layout.size

    def make_logp():
        return density.for_a_chain()

    def make_expand(seed1, seed2, chain):
        return lambda x: {"x": np.array(x, dtype=float)}

    return from_pyfunc(n, make_logp, make_expand, [np.dtype("float64")], [(n,)], ["x"],
                       dims={"x": ("unconstrained_parameter",)},
                       coords={"unconstrained_parameter": pd.Index([f"x_{i}" for i in range(n)])},
                       make_initial_point_fn=lambda seed: np.array(x0, dtype=float))
