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

**One vector-valued term** (``k`` columns, ``m`` levels, ``D`` a ``k × k`` covariance; prior
``p(D) ∝ 1`` on the PD cone for ``flat``, flat on the SDs with uniform correlations,
``∝ ∏ D_jj^{-k/2}``, for ``flat_sd``; ``p(σ²) ∝ (σ²)^{-(a_e+1)}``). Suppose every level's
``Z_i`` has rank ``k``. Per level, ``y_i ↦ (b̂_i, R_i)`` with ``b̂_i = W_iZ_i'y_i``,
``W_i = (Z_i'Z_i)^{-1}``, and ``R_i = H_i'y_i`` (``H_i`` an orthonormal basis of
``col(Z_i)^⊥``) is linear and one-to-one, and the two parts are independent:
``b̂_i ~ N(M_iβ, D + σ²W_i)``, ``M_i = W_iZ_i'X_i``, and ``R_i ~ N(H_i'X_iβ, σ²I)``. So

.. math::  L(β, D, σ²) ∝ L_w(β, σ²) \\prod_i φ(b̂_i;\\ M_iβ,\\ D + σ²W_i),

and ``L_w ≤ h(σ²) = (σ²)^{-(n-mk)/2} e^{-SSE/2σ²}`` with ``SSE`` the residual sum of squares
of ``y`` on ``[X Z]``. With ``w_-, w_+`` the extreme eigenvalues of all ``W_i``,
``b = σ²w_+`` and ``E = D + bI``: ``D + σ²W_i ≤ E`` bounds the exponent and
``|D + σ²W_i| ≥ |D + σ²w_-I| ≥ (w_-/w_+)^k |E|`` the determinant, so integrating β (``M``
stacked, rank ``p``) leaves at most a constant times the REML likelihood of
``b̂ ~ N(Mβ, I_m ⊗ E)``. ``col(M)`` lies in ``col(I_k ⊗ G)``, ``G`` (``m × r``) a basis of
the columns of the ``m × k`` matrices ``M_{·,·,c}`` (the level-2 design); the REML
likelihood of ``col(M)`` is that of ``col(I_k ⊗ G)`` times the conditional density of
``d = rk − p`` further contrasts, whose conditional variance is at least ``λ_min(E) ≥ b``:
at most ``c\\, b^{-d/2}``. The REML likelihood of ``I_k ⊗ G`` is the inverse-Wishart kernel
``|E|^{-ν/2} e^{-tr(E^{-1}S)/2}``, ``ν = m − r``, ``S = B̂'(I − P_G)B̂``. Hence

.. math::  L_{REML}(D, σ²) ≤ c\\, h(σ²)\\, (σ²)^{-d/2}\\, |E|^{-ν/2} e^{-tr(E^{-1}S)/2}.

*flat*: ``∫_{D ≻ 0} |D + bI|^{-ν/2}e^{-tr(\\cdot^{-1}S)/2} dD ≤ ∫_{E ≻ 0}`` (a translate), the
inverse-Wishart constant, finite iff ``ν > 2k`` and ``S ≻ 0``. *flat_sd*: in SDs and
correlations (flat measure), ``λ_max(E) ≥ max_j D_jj = t`` and the kernel's other factors are
bounded, so the shell ``t ∈ [T, 2T]`` (volume ``∝ T^{k/2}``) carries ``O(T^{k/2 − ν/2})``:
finite iff ``ν > k``. Both bounds hold for every ``b``, and ``∫ h(σ²) (σ²)^{-d/2 - a_e - 1}
dσ²`` is finite iff ``n − mk − d + 2a_e > 0`` and ``SSE > 0``. **Sufficient** conditions:
every level's ``Z_i`` of rank ``k``, ``rank M = p``, ``SSE > 0``, ``S ≻ 0``,

.. math::  m − r > 2k \\ (\\text{flat}),\\quad m − r > k \\ (\\text{flat\\_sd}),\\qquad n − mk − d + 2a_e > 0.

(``k = 1`` gives the scalar ``m − r > 2`` / ``> 1``.) The flat condition is sharp where it was
tried: along one eigen-direction of ``D`` the likelihood decays like ``λ^{-ν/2}`` against the
flat measure's ``λ^{k−1}dλ``, and ``tests/test_bayes_exact.py`` shows the mass over growing
boxes converging at ``m − r = 2k + 1`` and growing at ``m − r = 2k``; no theorem here proves
impropriety, so the check does not refuse on it. Where these conditions fail, or with several
terms of which one is vector-valued, nothing here decides and the check says so in one
sentence (a warning), after
checking the scalar parameters' sets, whose failure proves impropriety.
"""

from __future__ import annotations

import itertools

import numpy as np

from hierlmm.errors import HierlmmError, HierlmmWarning, warn

__all__ = ["check_propriety", "ImproperPosteriorError", "ProprietyNotVerifiedWarning", "span_rank"]


class ImproperPosteriorError(HierlmmError):
    """The improper prior gives an improper posterior for this design."""


class ProprietyNotVerifiedWarning(HierlmmWarning):
    """No proven condition covers this design (vector-valued random-effects terms)."""


def span_rank(design, terms, at_least: int, seed: int = 0, cp=None) -> int:
    """``min(r, at_least)`` with ``r = dim span{col((I − P_X) Z_t)}`` over ``terms``.

    Through a random sketch on the cross-product ``A`` (:mod:`hierlmm.crossprod`; computed
    unless given as ``cp``): with Gaussian ``R_t`` of ``at_least`` columns,
    ``M = (I − P_X) Σ_t Z_t R_t`` has rank ``min(r, at_least)`` with probability one, and
    ``M'M = V'CV − (X'ZV)'(X'X)⁻¹(X'ZV)`` (``C = [Z X]'[Z X]``, ``V`` the ``R_t`` in their
    terms' rows) is ``at_least × at_least``, from ``A``'s blocks whatever the number of rows
    or levels. An eigenvalue counts when above ``1e-10`` times the largest of ``V'CV``
    (an ``M`` wholly inside ``col(X)`` leaves only rounding, ``~1e-16``).
    """
    from hierlmm.crossprod import crossproduct

    cp = crossproduct(design) if cp is None else cp
    rng = np.random.default_rng(seed)
    first = design.terms[0]
    m1, k1 = cp.A11.shape[:2]
    V1 = np.zeros((m1 * k1, at_least))
    V2 = np.zeros((cp.r - 1, at_least))  # block 2 without y
    offset = 0
    for t in design.terms:
        R = rng.standard_normal((t.q, at_least))
        chosen = any(t is s for s in terms)
        if t is first:
            if chosen:
                V1 = R
        else:
            if chosen:
                V2[offset:offset + t.q] = R
            offset += t.q
    A21 = cp.A21[:-1]
    CV1 = np.einsum("mab,mbw->maw", cp.A11, V1.reshape(m1, k1, at_least)).reshape(m1 * k1, at_least)
    CV1 += np.asarray(A21.T @ V2)
    CV2 = np.asarray(A21 @ V1) + cp.A22[:-1, :-1] @ V2
    G = V1.T @ CV1 + V2.T @ CV2
    x = slice(cp.q_rest, cp.q_rest + cp.p)
    XZV = CV2[x]
    proj = G - XZV.T @ np.linalg.lstsq(cp.A22[x, x], XZV, rcond=None)[0]
    top = max(float(np.linalg.eigvalsh(G).max(initial=0.0)), 1e-300)
    return int(np.sum(np.linalg.eigvalsh((proj + proj.T) / 2) > 1e-10 * top))


def check_propriety(design, prior, cp=None) -> None:
    """Raise :class:`ImproperPosteriorError` if ``prior`` makes the posterior improper.

    Scalar terms: the criterion ``F(S) > 0`` of this module's docstring, for every set ``S``
    of variance parameters. With a vector-valued term, the sets of scalar parameters are
    checked (a failure proves impropriety) and a :class:`ProprietyNotVerifiedWarning` says
    that nothing here decides the rest. ``cp``: the design's cross-product, if the caller has
    it (else computed).
    """
    if prior not in ("flat", "flat_sd"):
        return  # proper priors give proper posteriors
    from hierlmm.bayes.priors import hobert_casella_exponents

    a, a_e = hobert_casella_exponents(prior)
    from hierlmm.crossprod import crossproduct

    cp = crossproduct(design) if cp is None else cp  # the model's A, where the caller has it
    scalar = [t for t in design.terms if t.k == 1]
    problems = []
    n_minus_p = design.n - design.p  # aliased columns of X are dropped: X has full rank p
    if not n_minus_p + 2 * a_e + 2 * a * len(scalar) > 0:  # S = σ² and every scalar term
        problems.append(f"n - p = {n_minus_p} observations beyond the fixed effects are too few for "
                        f"{len(scalar) + 1} variance parameters")
    for size in range(1, len(scalar) + 1):
        for S in itertools.combinations(scalar, size):
            need = -2 * a * size  # F(S) > 0  <=>  r(S) > need
            r = span_rank(design, S, at_least=int(np.floor(need)) + 1, cp=cp)
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
    if not vector:
        return
    if len(design.terms) == 1:
        unmet = vector_term_conditions(design, prior, cp)
        if not unmet:
            return
        why = "; ".join(unmet)
    else:
        why = "the proven condition covers a single vector-valued term, this model has " + \
              f"{len(design.terms)} terms"
    warn(
        f"propriety under prior={prior!r} is not proven for {', '.join(v.describe() for v in vector)}: "
        f"{why} (hierlmm.bayes.check_propriety states the conditions); check the sampler's diagnostics, "
        "or use a proper prior (hierlmm.bayes.WeaklyInformative)",
        ProprietyNotVerifiedWarning,
    )


def vector_term_conditions(design, prior, cp=None) -> list[str]:
    """The sufficient conditions of the module docstring for a model with one term (of any
    ``k``), checked on the whitened design: the list of those that fail (empty: proper).

    Everything comes from the cross-product ``A`` (:func:`hierlmm.crossprod.crossproduct`,
    or ``cp``), whatever the number of rows: per level ``Z_i'Z_i``, ``Z_i'X_i`` and ``Z_i'y_i``
    are the blocks ``A11`` and ``A21`` (``X`` there divided by its column scales, which
    changes no condition); ``SSE``, the residual sum of squares of ``y`` on ``[X Z]``, is the
    Schur complement of ``[X y]'[X y]`` after the levels' ``Z_i`` are eliminated, then ``X``.
    """
    from hierlmm.bayes.priors import hobert_casella_exponents
    from hierlmm.crossprod import crossproduct

    cp = crossproduct(design) if cp is None else cp
    (t,) = design.terms
    k, m, n, p = t.k, t.m, design.n, design.p
    bottom = cp.A21.toarray() if cp.a21_sparse else np.asarray(cp.A21)
    bottom = bottom.reshape(p + 1, m, k)  # [X y]'Z per level
    # every condition is unchanged by Z -> ZT (T invertible: b̂_i -> T⁻¹b̂_i, M_i -> T⁻¹M_i):
    # Z's columns made orthonormal (T = U⁻¹, Z'Z = U'U), so a covariate far from 0 or on a
    # large scale does not make Z_i'Z_i look singular in floating point
    ZtZ, a_e = cp.A11, hobert_casella_exponents(prior)[1]
    try:
        Tinv = np.linalg.inv(np.linalg.cholesky(ZtZ.sum(axis=0)).T)
    except np.linalg.LinAlgError:
        Tinv = np.eye(k)
    ZtZ = np.einsum("ab,mbc,cd->mad", Tinv.T, ZtZ, Tinv)
    bottom = bottom @ Tinv
    ev = np.linalg.eigvalsh(ZtZ)
    thin = np.flatnonzero(ev[:, 0] <= 1e-10 * np.maximum(ev[:, -1], 1e-300))
    if thin.size:
        return [f"{thin.size} of the {m} levels of {t.group} (e.g. {t.levels[thin[0]]!r}) "
                f"{'has' if thin.size == 1 else 'have'} a Z of rank "
                f"below k = {k} (too few distinct rows), so their own estimates b̂_i are not defined"]
    Bhat = np.linalg.solve(ZtZ, bottom[p][..., None])[..., 0]  # m × k
    M = np.linalg.solve(ZtZ, bottom[:p].transpose(1, 2, 0))  # m × k × p
    unmet = []

    def rank(a):  # of the column-normalised matrix: scale-free, rounding noise not counted
        norms = np.linalg.norm(a, axis=0)
        a = a[:, norms > 1e-12 * max(norms.max(initial=0.0), 1e-300)]
        s = np.linalg.svd(a / np.linalg.norm(a, axis=0), compute_uv=False) if a.size else np.zeros(0)
        return int(np.sum(s > 1e-9 * max(s.max(initial=0.0), 1e-300)))

    if rank(M.reshape(m * k, p)) < p:
        unmet.append("some fixed effects are not estimable from the levels' own estimates b̂_i "
                     "(rank of M below p)")
    G = M.transpose(0, 2, 1).reshape(m, p * k)  # the level-2 design's columns
    r = rank(G)
    nu, dd = m - r, r * k - p
    need = 2 * k if prior == "flat" else k
    if not nu > need:
        unmet.append(f"m - r = {m} levels - {r} level-2 columns = {nu} must exceed "
                     f"{'2k' if prior == 'flat' else 'k'} = {need} (more levels of {t.group}"
                     + (f", or prior='flat_sd', which needs more than k = {k})" if prior == "flat" else ")"))
    else:
        U = np.linalg.svd(G, full_matrices=False)[0][:, :r]  # basis of col(G)
        R = Bhat - U @ (U.T @ Bhat)
        S_ev = np.linalg.eigvalsh(R.T @ R)
        if S_ev[0] <= 1e-10 * max(S_ev[-1], 1e-300):
            unmet.append("the levels' estimates b̂_i are collinear beyond the level-2 design (S singular)")
    if not n - m * k - dd + 2 * a_e > 0:
        unmet.append(f"n - mk - d = {n} - {m * k} - {dd} = {n - m * k - dd} must exceed {-2 * a_e:g}")
    else:
        P = np.linalg.solve(ZtZ, bottom.transpose(1, 2, 0))  # m × k × (p+1): levels' own fits
        W = cp.A22 - np.einsum("jmk,mkl->jl", bottom, P)  # [X y]' (I − P_Z) [X y]
        coef = np.linalg.lstsq(W[:p, :p], W[:p, p], rcond=None)[0]
        sse = float(W[p, p] - W[p, :p] @ coef)
        if not sse > 1e-12 * float(cp.A22[p, p]):
            unmet.append("y is fitted exactly by [X Z] (SSE = 0)")
    return unmet
