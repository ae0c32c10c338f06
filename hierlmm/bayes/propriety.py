"""Is the posterior proper? Hobert & Casella (1996, JASA 91:1461), Theorem 1.

For a model whose random-effects terms are all scalar, with ``p(σ_i²) ∝ (σ_i²)^{-(a_i+1)}``
(flat on variances: ``a = −1``; flat on SDs: ``a = −1/2``), ``p = rank X``, ``q_i`` the
levels of term i, ``q = Σ q_i``, ``t = rank(Z'(I − P_X)Z)``, the posterior under a flat prior
on β is proper iff

* ``a_i < 0`` for every term,
* ``q_i > q − t − 2a_i`` for every term, and
* ``n + 2Σ a_i + 2a_e > p``.

A one-way model with an intercept has ``t = q − 1``, so flat priors on the variances need
``q > 3`` levels (4 or more), flat priors on the SDs ``q > 2``.
"""

from __future__ import annotations

import warnings

import numpy as np

from hierlmm.errors import HierlmmError, HierlmmWarning

__all__ = ["check_propriety", "ImproperPosteriorError", "ProprietyNotVerifiedWarning"]


class ImproperPosteriorError(HierlmmError):
    """The improper prior gives an improper posterior for this design."""


class ProprietyNotVerifiedWarning(HierlmmWarning):
    """No proven condition covers this design (vector-valued random-effects terms)."""


def check_propriety(design, prior) -> None:
    """Raise :class:`ImproperPosteriorError` if ``prior`` makes the posterior improper."""
    if prior not in ("flat", "flat_sd"):
        return  # proper priors give proper posteriors
    if any(t.k > 1 for t in design.terms):
        warnings.warn(
            "propriety of the posterior was not verified: Hobert & Casella's condition covers "
            "scalar random-effects terms only, and this model has a vector-valued term "
            f"({', '.join(t.describe() for t in design.terms if t.k > 1)}); check the sampler's "
            "diagnostics, or use a proper prior (hierlmm.bayes.WeaklyInformative)",
            ProprietyNotVerifiedWarning,
            stacklevel=3,
        )
        return
    from hierlmm.bayes.priors import hobert_casella_exponents
    from hierlmm.crossprod import term_matrix

    a, a_e = hobert_casella_exponents(prior)
    X = design.X
    n, p = X.shape
    p = int(np.linalg.matrix_rank(X))
    Z = np.hstack([term_matrix(t).toarray() for t in design.terms])
    Q, _ = np.linalg.qr(X)
    R = Z - Q @ (Q.T @ Z)
    t = int(np.linalg.matrix_rank(R.T @ R))
    qs = [term.m for term in design.terms]
    q = sum(qs)
    problems = []
    for term, qi in zip(design.terms, qs):
        if not qi > q - t - 2 * a:
            need = int(np.floor(q - t - 2 * a)) + 1
            problems.append(
                f"term {term.describe()} has {qi} levels but needs more than q - t - 2a = "
                f"{q} - {t} - 2({a:g}) = {q - t - 2 * a:g}, i.e. at least {need}"
            )
    if not n + 2 * a * len(qs) + 2 * a_e > p:
        problems.append(f"n + 2 Σa_i + 2a_e = {n + 2 * a * len(qs) + 2 * a_e:g} must exceed rank(X) = {p}")
    if problems:
        other = "prior='flat_sd' (flat on the standard deviations) or a proper prior" if prior == "flat" else "a proper prior (hierlmm.bayes.WeaklyInformative)"
        raise ImproperPosteriorError(
            f"the posterior under prior={prior!r} is improper (Hobert & Casella 1996): "
            + "; ".join(problems)
            + f". Use more levels, {other}, or the REML fit."
        )
