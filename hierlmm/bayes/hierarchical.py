"""The model exactly as stated, in PyMC: ``y | b ~ N(Xβ + Zb, σ²I)``, ``b_i ~ N(0, D)``.

Non-centred: ``b_i = L u_i`` with ``u_i ~ N(0, I)`` and ``D = LL'``; ``L`` and σ² move in the
same unconstrained coordinates as the collapsed sampler, with the same prior and
log-Jacobian (:mod:`hierlmm.bayes.priors`), and ``p(β) ∝ 1``. It samples β, b, σ², D jointly,
so it is slower and can meet the funnel that the collapsed sampler avoids; it is here to
show that both give the same posterior.
"""

from __future__ import annotations


from hierlmm.bayes.collapsed import log_prior_pt, term_cholesky_pt
from hierlmm.bayes.priors import Layout

__all__ = ["build_hierarchical_model"]


def build_hierarchical_model(design, prior, start_x, start_beta, start_u):
    import pymc as pm
    import pytensor.tensor as pt

    layout = Layout(design)
    with pm.Model() as model:
        x = pm.Flat("x", shape=layout.size, initval=start_x)
        beta = pm.Flat("beta", shape=design.p, initval=start_beta)
        pm.Potential("log_prior", log_prior_pt(layout, prior, x))
        mu = pt.as_tensor_variable(design.X) @ beta
        for j, (t, sl, (pos, _)) in enumerate(zip(design.terms, layout.slices, layout.diag)):
            L = term_cholesky_pt(t, x[sl], pos)
            u = pm.Normal(f"u_{j}", 0.0, 1.0, shape=(t.m, t.k), initval=start_u[j])
            b = u @ L.T
            mu = mu + pt.sum(pt.as_tensor_variable(t.Z) * b[t.codes], axis=1)
        sigma = pt.exp(0.5 * x[layout.n_eta])
        pm.Normal("y", mu=mu, sigma=sigma, observed=design.y)
    return model, layout
