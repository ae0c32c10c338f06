"""The collapsed sampler: NUTS over (σ², D) only, β and b integrated out exactly.

With a flat prior on β, integrating β and b out of ``p(y | β, b, σ², D)`` leaves the REML
likelihood. In the notation of the core (``A = [Z X y]'[Z X y]``, ``Λ* = diag(Λ_θ, I)``,
``θ = L/σ``, ``C C' = Λ*'AΛ* + diag(I_q, 0)``):

.. math::

    -2\\log p(y | σ^2, D) = \\log|C_{ZZ}|^2 + \\log|C_{XX}|^2 + (n-p)\\log(2πσ^2) + C_{yy}^2/σ^2 .

This module writes that expression in PyTensor (so NUTS gets an exact gradient through the
Cholesky factor) and hands it to nutpie, which compiles it (seconds per model structure);
for the models most samples are drawn from (first term with at most 8 effects per level, the
rest of A up to 300 rows) the same density is in :mod:`hierlmm.bayes.kernel`, differentiated
by hand and compiled once per machine; the graph here is its reference (the tests compare
them) and the path for the other structures. Then, for every draw, it draws
``(u, β) | σ², D, y`` exactly: jointly Gaussian with mean ``x̂`` (the penalised least-squares
solution) and covariance ``σ² (C₋C₋')⁻¹``, so ``(u, β) = x̂ + σ C₋^{-T} z``; ``b = Λ_θ u``.
There is no funnel: the sampler never sees b.

The dense ``A`` has ``q + p + 1`` rows, fine for the hundreds of random effects of typical
longitudinal data; very large crossed designs should use the REML fit.
"""

from __future__ import annotations

import numpy as np

from hierlmm.bayes.priors import Layout
from hierlmm.criterion import criterion
from hierlmm.reterms import lambda_entries

__all__ = ["DenseSystem", "build_collapsed_model", "exact_conditional_draws"]


class DenseSystem:
    """Dense ``A = [Z X y]'[Z X y]`` (the core's cross-product, :meth:`CrossProduct.dense`)
    and the index map of ``Λ*`` (:func:`hierlmm.reterms.lambda_entries`) for a design."""

    def __init__(self, design, cp=None):
        from hierlmm.crossprod import crossproduct

        self.design = design
        cp = cp if cp is not None else crossproduct(design, sparse=False)
        self.A, self.log_weights = cp.dense(), cp.log_weights
        self.q, self.p, self.n = design.q, design.p, design.n
        self.lam_rows, self.lam_cols, self.lam_src, _ = lambda_entries(design.terms)

    def lam(self, theta: np.ndarray) -> np.ndarray:
        r = self.A.shape[0]
        L = np.zeros((r, r))
        L[self.lam_rows, self.lam_cols] = theta[self.lam_src]
        L[np.arange(self.q, r), np.arange(self.q, r)] = 1.0
        return L


def exact_conditional_draws(deviance, layout: Layout, x_draws: np.ndarray, rng) -> tuple:
    """For each unconstrained draw, one exact draw of β and of each term's b.

    ``(u, β) | σ², D, y ~ N(x̂, σ²(L₋L₋')⁻¹)``: drawn as ``L₋^{-T}(c + σz)`` with the core's
    blocked factor (:meth:`hierlmm.deviance.Deviance.backsolve`), or, where the compiled
    kernel applies and is compiled, the same computation in compiled code
    (:func:`hierlmm.bayes.kernel.conditional_draws`; 4000 draws of sleepstudy in 0.02 s
    instead of 0.8 s)."""
    import hierlmm.bayes.kernel as kernel

    design = deviance.design
    nd = x_draws.shape[0]
    if kernel.supported(design, deviance.cp) and not kernel.compiling():
        betas, _, bs = kernel.conditional_draws(design, deviance.cp, x_draws, rng)
        return betas, bs
    size = design.q + design.p
    betas = np.empty((nd, design.p))
    bs = [np.empty((nd, t.m, t.k)) for t in design.terms]

    def draw(rows, z):  # the draws at one point x: one factorisation
        _, _, theta, sigma = layout.theta_sigma(x_draws[rows[0]])
        f = deviance.chol.factor(theta)
        for i, zi in zip(rows, z):
            beta, _, b = deviance.backsolve(theta, f, noise=sigma * zi)
            betas[i] = beta
            for out, bt in zip(bs, b):
                out[i] = bt

    # a chain that stays put repeats its draw of x: one factorisation per distinct point, in
    # threads where it is a large one
    from hierlmm.threads import map_one_blas_thread

    chunk = max(1, min(nd, 2**25 // max(size, 1)))  # z for a chunk of draws: at most 256 MB
    for start in range(0, nd, chunk):
        stop = min(nd, start + chunk)
        z = rng.standard_normal((stop - start, size))
        which = np.unique(x_draws[start:stop], axis=0, return_inverse=True)[1].ravel()
        order = np.argsort(which, kind="stable")
        groups = np.split(order, np.cumsum(np.bincount(which))[:-1])
        map_one_blas_thread(lambda g, start=start, z=z: draw(start + g, z[g]), groups)
    return betas, bs


def _theta_pt(layout: Layout, x):
    """Λ's values, each term's ``T = L_t/σ`` at its pattern (:func:`hierlmm.reterms.lambda_values`;
    for an unstructured term its Cholesky entries, exp() on the diagonal, i.e. θ), and s = log σ²."""
    import pytensor.tensor as pt

    s = x[layout.n_eta]
    parts = []
    for t, sl, (pos, _) in zip(layout.terms, layout.slices, layout.diag):
        L = term_cholesky_pt(t, x[sl], pos)
        parts.append(L[t.cov.pattern])
    return pt.concatenate(parts) / pt.exp(0.5 * s), s


def term_cholesky_pt(term, eta, pos):
    """``L_t`` (k x k, lower) from the term's unconstrained entries ``η_t`` (PyTensor): the
    Cholesky entries (log-diagonal) of an unstructured term, a structure's factor of its SDs
    (logged in ``η_t``) and unbounded correlations otherwise."""
    import pytensor.tensor as pt

    if not term.unstructured:
        n_sd = term.cov.sd_count
        return term.cov.factor_pt(pt.concatenate([pt.exp(eta[:n_sd]), eta[n_sd:]]))
    tc, tr = np.triu_indices(term.k)
    L = pt.zeros((term.k, term.k))
    return pt.set_subtensor(L[tr, tc], pt.set_subtensor(eta[pos], pt.exp(eta[pos])))


def _unrolled_cholesky(S, k):
    """Cholesky factors of m matrices at once: ``S[i][j]`` are length-m vectors.

    Written with elementwise operations only (no batched linear-algebra op), which keeps
    the compiled gradient small; used for the k x k blocks of the first term (k ≤ 4)."""
    import pytensor.tensor as pt

    L = [[None] * k for _ in range(k)]
    for j in range(k):
        d = S[j][j] - sum((L[j][i] ** 2 for i in range(j)), start=0.0)
        L[j][j] = pt.sqrt(d)
        for r in range(j + 1, k):
            L[r][j] = (S[r][j] - sum((L[r][i] * L[j][i] for i in range(j)), start=0.0)) / L[j][j]
    Linv = [[None] * k for _ in range(k)]
    for i in range(k):
        Linv[i][i] = 1.0 / L[i][i]
        for j in range(i):
            Linv[i][j] = -sum((L[i][l] * Linv[l][j] for l in range(j, i)), start=0.0) / L[i][i]
    return L, Linv


def blocked_data(cp, n: int) -> dict[str, np.ndarray]:
    """The numbers of the data that the blocked log-likelihood uses: A's blocks, ``n``, and
    the two constants of the criterion. Everything else in its graph is the model's structure
    (term sizes), so one compiled graph serves every data set of that structure
    (:func:`structure_key`, nutpie's ``with_data``)."""
    r, (m, k) = cp.r, cp.A11.shape[:2]
    return {"A11": np.asarray(cp.A11, dtype=float), "A21": np.asarray(cp.A21, dtype=float).reshape(r, m, k),
            "A22": np.asarray(cp.A22, dtype=float), "n_obs": np.asarray(float(n)),
            "logdet_scale": np.asarray(cp.logdet_scale), "log_weights": np.asarray(cp.log_weights)}


def structure_key(design, cp) -> tuple:
    """What the compiled blocked log-likelihood depends on besides :func:`blocked_data`."""
    return tuple((t.m, t.k, t.structure) for t in design.terms), cp.q_rest, cp.p, cp.r


def reml_loglik_blocked_pt(design, layout: Layout, x, cp, data=None):
    """The REML log-likelihood on the blocked cross-product (first term's k ≤ 4); ``data``:
    tensors standing for :func:`blocked_data`'s arrays (default: those arrays, constants)."""
    import pytensor.tensor as pt

    data = blocked_data(cp, design.n) if data is None else data

    theta, s = _theta_pt(layout, x)  # Λ's values
    first = design.terms[0]
    k, r = first.k, cp.r
    pr, pc = first.cov.pattern
    T = pt.zeros((k, k))
    T = pt.set_subtensor(T[pr, pc], theta[: pr.size])
    A11 = data["A11"]  # (m, k, k)
    S = [[sum((T[b, a] * A11[:, b, d] * T[d, c] for b in range(k) for d in range(k)), start=0.0)
          + (1.0 if a == c else 0.0) for c in range(k)] for a in range(k)]
    L, Linv = _unrolled_cholesky(S, k)
    # G_j = T L_j^{-T}: G[a][c] = Σ_b T[a, b] Linv[c][b]
    G = [[sum((T[a, b] * Linv[c][b] for b in range(c + 1)), start=0.0) for c in range(k)] for a in range(k)]
    # B[:, :, c] = Σ_a A21[:, :, a] G[a][c]  (r x m per c); C = Σ_c B_c B_c'
    A21 = data["A21"]  # dense: (r, m, k)
    C = 0.0
    for c in range(k):
        Bc = sum((A21[:, :, a] * G[a][c][None, :] for a in range(k)), start=0.0)
        C = C + pt.dot(Bc, Bc.T)
    A22 = pt.as_tensor_variable(data["A22"])
    q_rest, p, n = cp.q_rest, cp.p, data["n_obs"]
    if q_rest:
        lam = _rest_lambda_pt(design, layout, theta, r)
        M = lam.T @ (A22 - C) @ lam
        M = pt.inc_subtensor(M[np.arange(q_rest), np.arange(q_rest)], 1.0)
    else:
        M = A22 - C
    L22 = pt.linalg.cholesky(M)
    d22 = pt.log(pt.diagonal(L22))
    logdet = (2 * sum((pt.sum(pt.log(L[i][i])) for i in range(k)), start=0.0) + 2 * pt.sum(d22[: q_rest + p])
              + data["logdet_scale"])
    r2 = L22[-1, -1] ** 2
    # logdet holds log|R_X|² too: the REML criterion with logdet_x folded into logdet_v
    return -0.5 * criterion(logdet, 0.0, r2, n, p, reml=True, sigma2=pt.exp(s), log=pt.log,
                            log_weights=data["log_weights"])


def _rest_lambda_pt(design, layout, theta, r):
    import pytensor.tensor as pt

    rows, cols, src, off = lambda_entries(design.terms[1:], design.terms[0].cov.pattern[0].size)
    lam = pt.zeros((r, r))
    lam = pt.set_subtensor(lam[rows, cols], theta[src])
    idx = np.arange(off, r)
    return pt.set_subtensor(lam[idx, idx], 1.0)


def reml_loglik_pt(system: DenseSystem, layout: Layout, x):
    """The REML log-likelihood of (σ², D) at the unconstrained point ``x`` (PyTensor), on the
    dense ``A`` (any design)."""
    import pytensor.tensor as pt

    theta, s = _theta_pt(layout, x)
    sigma2 = pt.exp(s)
    r = system.A.shape[0]
    q, p, n = system.q, system.p, system.n
    Lam = pt.zeros((r, r))
    Lam = pt.set_subtensor(Lam[system.lam_rows, system.lam_cols], theta[system.lam_src])
    idx = np.arange(q, r)
    Lam = pt.set_subtensor(Lam[idx, idx], 1.0)
    M = Lam.T @ pt.as_tensor_variable(system.A) @ Lam
    dq = np.arange(q)
    M = pt.inc_subtensor(M[dq, dq], 1.0)
    C = pt.linalg.cholesky(M)
    d = pt.diagonal(C)
    logdet = 2 * pt.sum(pt.log(d[: q + p]))
    r2 = C[-1, -1] ** 2
    return -0.5 * criterion(logdet, 0.0, r2, n, p, reml=True, sigma2=sigma2, log=pt.log,
                            log_weights=system.log_weights)


def log_prior_pt(layout: Layout, prior, x):
    """log p(σ², D) + log-Jacobian at the unconstrained point ``x`` (PyTensor): the numpy
    functions of :mod:`hierlmm.bayes.priors` with ``ops=pytensor.tensor``."""
    import pytensor.tensor as pt

    Ls = [term_cholesky_pt(t, x[sl], pos) for t, sl, (pos, _) in zip(layout.terms, layout.slices, layout.diag)]
    return layout.log_jacobian(x, ops=pt) + layout.log_prior_x(prior, x, Ls, ops=pt)


def build_collapsed_model(design, prior, start: np.ndarray, cp=None):
    """A PyMC model whose only free variable is the unconstrained vector ``x``.

    The likelihood is written on the blocked cross-product (the first term's ``k x k``
    blocks handled elementwise, the rest dense) when the first term has at most 4 effects,
    with the data as ``pm.Data`` (:func:`blocked_data`), so that its compiled form serves
    any data of the same structure; else on the dense ``A``."""
    import pymc as pm

    from hierlmm.crossprod import crossproduct

    layout = Layout(design)
    with pm.Model() as model:
        x = pm.Flat("x", shape=layout.size, initval=start)
        if design.terms[0].k <= 4:
            cp = cp if cp is not None and not cp.a21_sparse else crossproduct(design, sparse=False)
            data = {name: pm.Data(name, value) for name, value in blocked_data(cp, design.n).items()}
            loglik = reml_loglik_blocked_pt(design, layout, x, cp, data)
        else:
            loglik = reml_loglik_pt(DenseSystem(design), layout, x)
        pm.Potential("reml_loglik", loglik)
        pm.Potential("log_prior", log_prior_pt(layout, prior, x))
    return model, layout
