"""Is the posterior under an improper prior proper?

With β integrated out under its flat prior, the data enter through ``K'y ~ N(0, Σ(λ))``
(``K`` an orthonormal basis of ``col(X)^⊥``, ``n − p`` columns) with

.. math::  Σ(λ) = λ_0 I + Σ_i λ_i C_i C_i',\\qquad C_i = K'Z_i,

``λ_0 = σ²`` and ``λ_i`` the variance of scalar term i. The priors ``flat`` (on variances)
and ``flat_sd`` (on standard deviations) are ``p(λ) ∝ Π λ_i^{-(a_i+1)}`` with ``a = −1`` and
``a = −½``, every ``a_i < 0``.

**Criterion.** For almost every ``y``, the posterior is proper if and only if, for every
non-empty set ``S`` of variance parameters,

.. math::  F(S) = ½\\, r(S) + Σ_{i∈S} a_i > 0,

with ``r(S) = dim span{col((I − P_X) Z_i) : i ∈ S}`` (``n − p`` when ``S`` holds σ²).

*Why.* Near 0 every prior factor is integrable (``a_i < 0``) and where ``|Σ|`` vanishes the
factor ``exp(−½ y'KΣ⁻¹K'y)`` decays faster than any power, for almost every ``y``. Towards
infinity (``λ_i = e^{s_i}``, ``s ≥ 0``) that factor is bounded between ``e^{−|y|²/2}`` and 1,
and by Cauchy–Binet ``|Σ(λ)|`` is a sum of monomials ``λ^α``, one for each basis of
``R^{n−p}`` drawn from the blocks' columns (``α_i`` columns from block i), so
``log|Σ(e^{s})| = h(s) + O(1)`` with ``h(s) = max_α ⟨α, s⟩``. By the greedy algorithm for
the linear matroid of the columns, ``h`` is the Lovász extension of the rank function ``r``;
the integrand is ``exp(−φ(s) + O(1))`` with ``φ(s) = ½h(s) + ⟨a, s⟩`` the Lovász extension
of ``F``, which is linear on each cone ``{s_{π(1)} ≥ … ≥ s_{π(m)} ≥ 0}`` spanned by the
indicator vectors ``1_S`` of a chain of sets. ``∫ e^{−φ}`` over the orthant converges iff
``φ > 0`` off the origin, iff ``F(S) = φ(1_S) > 0`` for every ``S``.

For a one-way design with an intercept and ``q`` levels, ``S = {term}`` gives ``q − 1 > 2``
(flat; at least 4 levels) or ``q − 1 > 1`` (flat on SDs); ``S`` = all gives Hobert & Casella's
(1996) ``n − p + 2Σa_i + 2a_e > 0``. Their condition ``q_i > q − t − 2a_i`` agrees for one-way
designs, but counts every linear dependence among the columns of ``[X Z]`` against every
term: a crossed design with a 4-level factor, proper (its balanced ANOVA factorisation has
a ``λ^{-3/2}`` kernel), and nested designs such as Pastes were refused by it.

Vector-valued terms (a covariance matrix per term) are not covered: for them the check says
so in one sentence (a warning) after checking the scalar parameters' sets, whose failure
proves impropriety whatever the other parameters.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np

from hierlmm.errors import HierlmmError, HierlmmWarning

__all__ = ["check_propriety", "ImproperPosteriorError", "ProprietyNotVerifiedWarning", "span_rank"]


class ImproperPosteriorError(HierlmmError):
    """The improper prior gives an improper posterior for this design."""


class ProprietyNotVerifiedWarning(HierlmmWarning):
    """No proven condition covers this design (vector-valued random-effects terms)."""


def span_rank(design, terms, at_least: int, seed: int = 0) -> int:
    """``min(r, at_least)`` with ``r = dim span{col((I − P_X) Z_t)}`` over ``terms``.

    Through a random sketch: ``(I − P_X) Σ_t Z_t R_t`` with Gaussian ``R_t`` of ``at_least``
    columns has rank ``min(r, at_least)`` with probability one, and costs ``O(n · at_least)``
    whatever the number of levels.
    """
    rng = np.random.default_rng(seed)
    n = design.n
    M = np.zeros((n, at_least))
    for t in terms:
        R = rng.standard_normal((t.q, at_least)).reshape(t.m, t.k, at_least)
        M += np.einsum("ik,ikw->iw", t.Z, R[t.codes])
    Q, _ = np.linalg.qr(design.X)
    M -= Q @ (Q.T @ M)
    s = np.linalg.svd(M, compute_uv=False)
    return int(np.sum(s > 1e-8 * max(s.max(initial=0.0), 1e-300)))


def check_propriety(design, prior) -> None:
    """Raise :class:`ImproperPosteriorError` if ``prior`` makes the posterior improper.

    Scalar terms: the criterion ``F(S) > 0`` of this module's docstring, for every set ``S``
    of variance parameters. With a vector-valued term, the sets of scalar parameters are
    checked (a failure proves impropriety) and a :class:`ProprietyNotVerifiedWarning` says
    that nothing here decides the rest.
    """
    if prior not in ("flat", "flat_sd"):
        return  # proper priors give proper posteriors
    from hierlmm.bayes.priors import hobert_casella_exponents

    a, a_e = hobert_casella_exponents(prior)
    scalar = [t for t in design.terms if t.k == 1]
    problems = []
    n_minus_p = design.n - int(np.linalg.matrix_rank(design.X))
    if not n_minus_p + 2 * a_e + 2 * a * len(scalar) > 0:  # S = σ² and every scalar term
        problems.append(f"n - p = {n_minus_p} observations beyond the fixed effects are too few for "
                        f"{len(scalar) + 1} variance parameters")
    for size in range(1, len(scalar) + 1):
        for S in itertools.combinations(scalar, size):
            need = -2 * a * size  # F(S) > 0  <=>  r(S) > need
            r = span_rank(design, S, at_least=int(np.floor(need)) + 1)
            if not r > need:
                what = (f"term {S[0].describe()} ({S[0].m} levels)" if size == 1 else
                        "terms " + " and ".join(t.describe() for t in S) + " together")
                problems.append(
                    f"{what} span{'s' if size == 1 else ''} only r = {r} dimension(s) of the data beyond "
                    "the fixed effects, and "
                    f"prior={prior!r} needs r > {need:g} (the likelihood decays like λ^(-r/2) as "
                    f"{'their variances grow' if size > 1 else 'its variance grows'})"
                )
    if problems:
        other = ("prior='flat_sd' (flat on the standard deviations) or a proper prior" if prior == "flat"
                 else "a proper prior (hierlmm.bayes.WeaklyInformative)")
        raise ImproperPosteriorError(
            f"the posterior under prior={prior!r} is improper: " + "; ".join(problems)
            + f". Use more levels, {other}, or the REML fit."
        )
    vector = [t for t in design.terms if t.k > 1]
    if vector:
        warnings.warn(
            f"propriety under prior={prior!r} is not proven for the vector-valued term(s) "
            f"{', '.join(t.describe() for t in vector)} (no theorem here covers covariance matrices); "
            "check the sampler's diagnostics, or use a proper prior (hierlmm.bayes.WeaklyInformative)",
            ProprietyNotVerifiedWarning,
            stacklevel=3,
        )
