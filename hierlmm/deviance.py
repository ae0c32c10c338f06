"""Stage 3 of the pipeline (lme4's ``mkLmerDevfun``): the profiled deviance of θ.

With ``L_θ`` the blocked Cholesky factor (:mod:`hierlmm.cholesky`), ``r²(θ)`` the penalised
residual sum of squares, ``n`` observations and ``p`` fixed effects,

.. math::

    -2\\ell_{ML}(θ) = \\log|L_θ|^2 + n\\left[1 + \\log\\frac{2π r^2(θ)}{n}\\right]

    -2\\ell_{REML}(θ) = \\log|L_θ|^2 + \\log|R_X|^2 + (n-p)\\left[1 + \\log\\frac{2π r^2(θ)}{n-p}\\right]

β and σ² are profiled out: ``β̂(θ)`` solves the penalised least-squares problem and
``σ̂² = r²/n`` (ML) or ``r²/(n-p)`` (REML). These are Bates et al. (2015, JSS 67(1)) eqs.
(34) and (41). The unprofiled REML log-likelihood at (θ, σ²), used by the Bayesian side, is
``-½[log|L|² + log|R_X|² + (n-p) log(2πσ²) + r²/σ²]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from hierlmm.cholesky import BlockedCholesky, BlockedFactor
from hierlmm.criterion import criterion
from hierlmm.crossprod import CrossProduct, crossproduct
from hierlmm.design import Design
from hierlmm.gradient import criterion_gradient

__all__ = ["Deviance", "Solution", "make_deviance"]

# condition number of a term's Z_t'Z_t (unit-RMS columns) above which its fit is flagged: the
# deviance then carries fewer than ~10 digits (Deviance.collinear_terms)
COLLINEAR_LIMIT = 1e6


@dataclass(eq=False)
class Solution:
    """Everything that follows from the factorisation at one θ.

    The one solution type of every engine (:class:`Deviance`, and
    :class:`hierlmm.grouped.GroupedDeviance`, whose parameters also hold the residual
    correlation's and which has no blocked factor).

    Attributes
    ----------
    theta : ndarray
        The parameters (θ; for the per-group engine θ or S, then the residual correlation's).
    beta : ndarray, shape (p,)
        ``β̂(θ)``.
    b : list of ndarray, shape (m_t, k_t) per term
        Conditional modes of the random effects, ``b = Λ_θ u`` (BLUPs).
    sigma2 : float
        Profiled residual variance (REML or ML denominator, as the deviance).
    deviance : float
        The objective at θ (REML criterion or ML deviance).
    factor : BlockedFactor or None
        The blocked Cholesky factor (blocked engine).
    u : list of ndarray or None
        Spherical conditional modes (blocked engine).
    xtvx : ndarray or None
        ``X'V0⁻¹X`` (per-group engine).
    """

    theta: np.ndarray
    beta: np.ndarray
    b: list[np.ndarray]
    sigma2: float
    deviance: float
    factor: BlockedFactor | None = None
    u: list[np.ndarray] | None = None
    xtvx: np.ndarray | None = None


class Deviance:
    """The profiled deviance of a design: call it with θ.

    The objective protocol both engines implement (this one, on the blocked cross-product,
    for independent residuals; :class:`hierlmm.grouped.GroupedDeviance` block by block):
    ``design, reml, lower, theta0, n, p, n_theta, n_resid, residual, marginal``;
    ``__call__(θ)``, ``unprofiled(θ, σ)``, ``unscaled_vcov(θ)``, ``solve(θ) -> Solution``,
    ``relcovs(θ)``, ``residual_value(θ)``, ``ranef_posterior(fit, beta)`` and
    ``simulate(fit, n, rng)``. :class:`~hierlmm.results.LMMResult` works on these only.

    Parameters
    ----------
    design : Design
    reml : bool
        REML criterion (default) or ML deviance.

    Attributes
    ----------
    lower : ndarray
        Lower bounds of θ (0 on the diagonals of the relative covariance factors).
    theta0 : ndarray
        lme4's start, identity factors.
    evaluations : int
        Number of calls so far.
    """

    def __init__(self, design: Design, reml: bool = True, cp: CrossProduct | None = None):
        self.design = design
        self.reml = bool(reml)
        self.cp = cp if cp is not None else crossproduct(design)
        self.chol = BlockedCholesky(self.cp, design.terms)
        self.slices = self.chol.slices
        self.lower = np.concatenate([t.theta_lower() for t in design.terms])
        self.theta0 = np.concatenate([t.theta_start() for t in design.terms])
        self.n, self.p = design.n, design.p
        self.n_theta = design.n_theta
        self.evaluations = 0
        self._parts_memo: dict[bytes, tuple | None] = {}
        self._theta_scale = None

    # what the per-group engine adds: no residual correlation, no marginal formulation here
    n_resid = 0
    residual = None
    variance = None
    marginal = False

    @property
    def theta_scale(self) -> np.ndarray:
        """Per θ entry, the root mean square ``s_r`` of its row's column of ``Z`` (from ``A``'s
        diagonal, so also for rows not in memory): the optimiser works on ``φ = s_r θ``, the
        relative factor of ``Z`` with unit-RMS columns, so its start, steps, convergence check
        and boundary tests do not depend on the units of a random slope's covariate (``Days``
        in days or in 1e-8 days: the same φ)."""
        if self._theta_scale is None:
            cp, parts = self.cp, []
            ss = [np.einsum("mkk->k", cp.A11)]
            diag, at = np.diag(cp.A22), 0
            for t in self.design.terms[1:]:
                ss.append(diag[at : at + t.q].reshape(t.m, t.k).sum(axis=0))
                at += t.q
            for t, col in zip(self.design.terms, ss):
                parts.append(t.theta_scale(np.sqrt(col / max(self.n, 1))))
            self._theta_scale = np.concatenate(parts) if parts else np.zeros(0)
        return self._theta_scale

    def term_grams(self) -> list[np.ndarray]:
        """``Z_t'Z_t`` pooled over each term's levels (``k x k``), from ``A``."""
        cp = self.cp
        out = [cp.A11.sum(axis=0)]
        at = 0
        for t in self.design.terms[1:]:
            blocks = cp.A22[at : at + t.q, at : at + t.q].reshape(t.m, t.k, t.m, t.k)
            out.append(np.einsum("jajb->ab", blocks))
            at += t.q
        return out

    def collinear_terms(self) -> list[str]:
        """:func:`collinear_terms` of this model, from ``A``."""
        return collinear_terms(self.design.terms, self.term_grams())

    @property
    def sign_free(self) -> np.ndarray:
        """Per θ entry, whether its bound is only a sign convention (the criterion is even in
        it: :meth:`hierlmm.covariance.Covariance.sign_free`), for the optimiser's probes."""
        return np.concatenate([t.cov.sign_free() for t in self.design.terms])

    def canonical(self, theta) -> np.ndarray:
        """θ of the same covariances within the bounds (each term's
        :meth:`~hierlmm.covariance.Covariance.canonical`)."""
        theta = np.asarray(theta, dtype=float)
        return np.concatenate([t.cov.canonical(theta[s]) for t, s in zip(self.design.terms, self.slices)])

    # value_and_gradient() exists (every storage path of the blocked factor has its reverse
    # pass); the per-group engine has none, and the optimiser falls back to BOBYQA there
    has_gradient = True

    def value_and_gradient(self, theta) -> tuple[float, np.ndarray | None]:
        """The criterion and its gradient in θ (:func:`hierlmm.gradient.criterion_gradient`)
        from one factorisation; ``(inf, None)`` where the factor does not exist."""
        self.evaluations += 1
        theta = np.asarray(theta, dtype=float)
        factor = self.chol.factor(theta)
        if factor is None or not factor.r2 > 0:
            return np.inf, None
        return self.from_parts(factor), criterion_gradient(self.chol, theta, self.n, self.p, self.reml, f=factor)

    def relcovs(self, theta) -> list[np.ndarray]:
        """``T_t T_t'`` per term: ``D_t / σ²``."""
        return [t.relcov(theta[s]) for t, s in zip(self.design.terms, self.slices)]

    def residual_value(self, theta):
        return None

    def ranef_posterior(self, fit, beta: str = "fixed"):
        """The posterior of ``b`` from the blocked factor (:func:`ranef_posterior_blocks`)."""
        from hierlmm.posterior_b import ranef_posterior_blocks

        return ranef_posterior_blocks(fit, beta=beta)

    def simulate(self, fit, n: int, rng) -> np.ndarray:
        """``y* = o + Xβ̂ + Σ_t Z_t b*_t + ε*``, ``b*_t ~ N(0, D̂_t)`` per level,
        ``ε* ~ N(0, σ̂² W⁻¹)`` (``W`` the prior weights, ``o`` the offset); shape ``(n, nobs)``."""
        d, sol, sigma = self.design, fit.solution, fit.sigma
        mu = d.X @ sol.beta
        if d.offset is not None:
            mu = mu + d.offset
        noise_sd = sigma if d.weights is None else sigma / np.sqrt(d.weights)
        out = np.empty((n, d.n))
        for i in range(n):
            y = mu + noise_sd * rng.standard_normal(d.n)
            for t, s in zip(d.terms, self.slices):
                b = sigma * rng.standard_normal((t.m, t.k)) @ t.template(sol.theta[s]).T
                y += np.einsum("ik,ik->i", t.Z, b[t.codes])
            out[i] = y
        return out

    def with_response(self, y) -> Deviance:
        """The same model's deviance for another response (simulate, parametric bootstrap):
        ``A``'s response row recomputed, everything else shared (:meth:`CrossProduct.with_response`)."""
        design = self.design.with_response(y)
        return Deviance(design, reml=self.reml, cp=self.cp.with_response(design, design.y))

    def with_offset(self, j: int, value: float) -> Deviance:
        """The deviance with ``β_j`` fixed at ``value`` (a fixed effect's profile), from ``A``
        alone (:meth:`CrossProduct.with_offset`)."""
        return Deviance(self.design.with_offset(j, value), reml=self.reml, cp=self.cp.with_offset(j, value))

    def from_parts(self, factor: BlockedFactor, sigma2: float | None = None) -> float:
        """The objective from a factor (at ``sigma2`` when given, σ² not profiled)."""
        return criterion(factor.logdet_L(), factor.logdet_RX(), factor.r2, self.n, self.p, self.reml,
                         sigma2=sigma2, log_weights=self.cp.log_weights)

    def __call__(self, theta) -> float:
        self.evaluations += 1
        factor = self.chol.factor(theta)
        if factor is None or not factor.r2 > 0:
            return np.inf
        return self.from_parts(factor)

    def unprofiled(self, theta, sigma: float) -> float:
        """−2 log-likelihood (REML or ML, as ``self.reml``) at (θ, σ), σ not profiled out.

        ``log|L|² [+ log|R_X|²] + m log(2πσ²) + r²(θ)/σ²`` with ``m = n − p`` (REML) or ``n``.
        This is lmerTest's ``devfun_vp``, the function whose Hessian in (θ, σ) gives the
        asymptotic covariance of the variance parameters.
        """
        if not np.all(np.isfinite(theta)):  # no model here (a profile's point a structure cannot take)
            return np.inf
        parts = self._criterion_parts(theta)
        if parts is None or not sigma > 0:
            return np.inf
        return criterion(*parts, self.n, self.p, self.reml, sigma2=sigma * sigma, log_weights=self.cp.log_weights)

    def _criterion_parts(self, theta) -> tuple[float, float, float] | None:
        """``(log|L|², log|R_X|², r²)`` at θ (``None`` where ``L`` does not exist), memoised
        by θ: a Hessian in (θ, σ) revisits every θ at each of its σ steps (numDeriv's scheme:
        of 48 evaluations for two θ's, 24 distinct θ)."""
        theta = np.asarray(theta, dtype=float)
        key = theta.tobytes()
        if key not in self._parts_memo:
            f = self.chol.factor(theta)
            if len(self._parts_memo) >= 1024:
                self._parts_memo.clear()
            self._parts_memo[key] = None if f is None else (f.logdet_L(), f.logdet_RX(), f.r2)
        return self._parts_memo[key]

    def at_beta(self, theta, beta, sigma: float) -> float:
        """The ML deviance ``−2 log L(θ, β, σ)`` with nothing profiled (the joint density of
        the flat-prior posterior): ``log|L|² + n log(2πσ²) + (r² + |R_X'(β − β̂)|²)/σ²``,
        since ``|y − Xβ − Zb̂|² + |u|²`` grows by ``|R_X'(β − β̂)|²`` away from β̂."""
        f = self.chol.factor(theta)
        if f is None or not sigma > 0:
            return np.inf
        q, p = f.q_rest, f.p
        beta_hat, _, _ = self.backsolve(theta, f)
        d = f.L22[q : q + p, q : q + p].T @ (self.cp.x_map @ (np.asarray(beta) - beta_hat))  # R_X̃' R (β − β̂)
        return criterion(f.logdet_L(), 0.0, f.r2 + d @ d, self.n, self.p, reml=False, sigma2=sigma * sigma,
                         log_weights=self.cp.log_weights)

    def unscaled_vcov(self, theta) -> np.ndarray:
        """``(X'V⁻¹X)⁻¹ / σ²`` at θ, i.e. ``(R_X R_X')⁻¹``: multiply by σ² for ``vcov(β̂)``."""
        f = self.chol.factor(theta)
        q, p = f.q_rest, f.p
        Rinv = scipy.linalg.solve_triangular(f.L22[q : q + p, q : q + p], np.eye(p), lower=True, check_finite=False)
        return self.cp.cov(Rinv.T @ Rinv)

    def unscaled_vcov_jacobian(self, theta, factor: BlockedFactor | None = None) -> np.ndarray:
        """``∂U/∂θ_i`` for every θ entry, ``U = (X'V⁻¹X)⁻¹`` (:meth:`unscaled_vcov`), exactly,
        from one factorisation and the blocks of ``A``; shape ``(n_theta, p, p)``. For a
        structured term, the derivatives in ``T``'s entries times ``∂T/∂θ``
        (:meth:`hierlmm.covariance.Covariance.factor_jacobian`).

        With ``V = I + ZΛΛ'Z'`` and ``W = Z'V⁻¹X``, ``∂(X'V⁻¹X)/∂θ_i = −W'(E_iΛ' + ΛE_i')W``,
        ``E_i = ∂Λ/∂θ_i = I_m ⊗ e_a e_b'`` for θ_i at ``T[a, b]`` of its term. Woodbury gives
        ``Λ'W = M⁻¹Λ'Z'X = Q`` with ``M = L_Z L_Z'``, so ``Q = L_Z^{-T} L_XZ'`` from ``L``'s
        X rows, and ``W = Z'X − Z'Z ΛQ`` from ``A``. Then, per level ``j`` of the term,
        ``K_i = Σ_j W_j[a]' Q_j[b]`` and ``∂U/∂θ_i = U (K_i + K_i') U``.
        """
        theta = np.asarray(theta, dtype=float)
        f = self.chol.factor(theta) if factor is None else factor  # ``factor``: L at this θ
        cp, chol, terms = self.cp, self.chol, self.design.terms
        q, p, first = f.q_rest, f.p, terms[0]
        m1, k1 = first.m, first.k
        xr = slice(q, q + p)
        # Q = L_Z^{-T} L_XZ' (the spherical coefficients of X̃ on ZΛ): L's X rows solved
        # through its random-effects columns
        L21_x = f.L21[xr].toarray().T if sp.issparse(f.L21) else f.L21[xr].T
        Q1, Q2 = self._back_substitute(f, L21_x, f.L22[xr, :q].T, q)
        # ΛQ, then W = Z'X̃ − Z'Z ΛQ from the blocks of A; products with the first q rows of
        # A21 as products with zero-padded right-hand sides (slicing would copy a sparse A21)
        def rows_q(M):  # (q, p) -> (r, p), zero beyond the first q rows
            return np.vstack([M, np.zeros((cp.r - q, M.shape[1]))])

        v1 = np.einsum("ab,jbp->jap", first.template(theta[self.slices[0]]), Q1)
        lam = chol.rest_lambda(theta) if q else None
        if lam is None:
            v2 = Q2
        elif chol.scalar_rest:
            v2 = lam[:q, None] * Q2
        else:
            v2 = np.asarray(lam[:q, :q] @ Q2)
        A21 = cp.A21
        W1 = ((A21[xr].toarray().T if cp.a21_sparse else A21[xr].T) - np.einsum("jab,jbp->jap", cp.A11, v1)
              .reshape(m1 * k1, p) - np.asarray(A21.T @ rows_q(v2)))
        W2 = cp.A22[:q, xr] - np.asarray(A21 @ v1.reshape(m1 * k1, p))[:q] - cp.A22[:q, :q] @ v2
        Ws, Qs, start = [W1.reshape(m1, k1, p)], [Q1], 0
        for t in terms[1:]:
            Ws.append(W2[start : start + t.q].reshape(t.m, t.k, p))
            Qs.append(Q2[start : start + t.q].reshape(t.m, t.k, p))
            start += t.q
        Rinv = scipy.linalg.solve_triangular(f.L22[xr, xr], np.eye(p), lower=True, check_finite=False)
        U = Rinv.T @ Rinv  # (X̃'V⁻¹X̃)⁻¹
        out = []
        for t, W, Q, s in zip(terms, Ws, Qs, self.slices):
            rows, cols = t.cov.pattern
            per_entry = []  # ∂U/∂T[a, b] over T's possibly non-zero entries
            for a, b in zip(rows.tolist(), cols.tolist()):
                K = W[:, a, :].T @ Q[:, b, :]
                per_entry.append(U @ (K + K.T) @ U)
            # chain rule to the structure's parameters (the identity for an unstructured term)
            out.extend(np.einsum("epq,ei->ipq", np.stack(per_entry), t.cov.factor_jacobian(theta[s])))
        return self.cp.cov(np.stack(out))

    def sigma2(self, factor: BlockedFactor) -> float:
        return factor.r2 / (self.n - self.p if self.reml else self.n)

    def backsolve(self, theta, f: BlockedFactor, noise=None):
        """Solve ``L₋' x = c`` for ``x = (u, β)`` (``c`` the last row of ``L``).

        With ``noise = σ z``, ``z ~ N(0, I)``, it returns ``L₋^{-T}(c + σz)``: an exact draw
        from the Gaussian ``(u, β) | θ, σ, y`` (flat prior on β), which the collapsed sampler
        uses for every posterior draw.
        """
        q, p = f.q_rest, f.p
        first_q = self.design.terms[0].q
        c2 = f.L22[-1, :-1]
        # c1 = L21's last row (+ noise) is folded into the back substitution's product with
        # L21' (last_row=True): one pass over A21 per draw, not two
        if noise is None:
            c1 = np.zeros(first_q)
        else:
            c1, c2 = noise[:first_q], c2 + noise[first_q:]
        x1, x2 = self._back_substitute(f, c1, c2, q + p, last_row=True)
        us = [x1]
        start = 0
        for t in self.design.terms[1:]:
            us.append(x2[start : start + t.q].reshape(t.m, t.k))
            start += t.q
        beta = self.cp.beta(x2[q : q + p])
        bs = [u @ t.template(theta[s]).T for t, u, s in zip(self.design.terms, us, self.slices)]
        return beta, us, bs

    def _back_substitute(self, f: BlockedFactor, c1, c2, k: int, last_row: bool = False):
        """Solve ``[[L11', L21[:k]'], [0, L22[:k, :k]']] [x1; x2] = [c1; c2]``: back through
        ``L``'s first ``q1 + k`` columns (``k = q_rest + p`` for ``(u, β)``, ``k = q_rest`` for
        the random effects alone), for one right-hand side (vectors) or several (columns).
        With ``last_row`` (one vector, ``k`` short of ``L``'s last row), ``c1`` is taken plus
        ``L21``'s last row: ``L21'(e_last − [x2; 0])`` in one product.

        Returns ``x1`` per level of the first term (``(m1, k1)``, or ``(m1, k1, columns)``)
        and ``x2``. ``L21[:k]' x2`` is taken as ``L21' [x2; 0]``: slicing rows of a sparse
        ``L21`` would copy nearly all of it.
        """
        first = self.design.terms[0]
        x2 = scipy.linalg.solve_triangular(f.L22[:k, :k], c2, trans="T", lower=True, check_finite=False)
        padded = np.zeros((f.L22.shape[0],) + x2.shape[1:])
        padded[:k] = x2
        if last_row:
            padded[-1] = -1.0
        v = (c1 - f.l21_t(padded).reshape(np.shape(c1))).reshape(first.m, first.k, -1)
        if first.k == 1:
            x1 = v / f.L11[:, None, None]
        else:  # L_j' x_j = v_j per level
            x1 = np.linalg.solve(np.transpose(f.L11, (0, 2, 1)), v)
        return (x1[..., 0] if np.ndim(c1) == 1 else x1), x2

    def solve(self, theta) -> Solution:
        """β̂, the conditional modes and σ̂² at θ (lme4's ``updateXwts``/``solve`` step)."""
        theta = np.asarray(theta, dtype=float)
        f = self.chol.factor(theta)
        if f is None:
            raise np.linalg.LinAlgError("the penalised system is not positive definite at this theta")
        beta, us, bs = self.backsolve(theta, f)
        return Solution(theta=theta, beta=beta, b=bs, sigma2=self.sigma2(f), deviance=self.from_parts(f),
                        factor=f, u=us)


def collinear_terms(terms, grams, limit: float = COLLINEAR_LIMIT) -> list[str]:
    """Messages for the random terms whose columns are so nearly collinear that the deviance
    has lost digits: the condition number of ``Z_t'Z_t`` (``grams``, pooled over levels) with
    unit-RMS columns above ``limit``. The usual cause is a slope's covariate far from 0 against
    its spread (in ``(x | g)`` with x = c + SD·z, the condition is ~2(c/SD)²): the random
    intercept is then the effect at x = 0, and lme4's parametrisation computes it by a
    cancellation (sleepstudy with Days + 3000 SDs: log-likelihood off by 1e-3, + 1e4 SDs: by
    0.2)."""
    out = []
    for t, G in zip(terms, grams):
        if t.k < 2:
            continue
        s = np.sqrt(np.diag(G))
        s = np.where(s > 0, s, 1.0)
        with np.errstate(all="ignore"):
            cond = np.linalg.cond(G / np.outer(s, s))
        if not cond < limit:
            out.append(f"the columns of the random term {t.describe()} are nearly collinear (condition number "
                       f"{cond:.2g}): a covariate in it is far from 0 against its spread, so the effects at 0 are "
                       "computed by a cancellation and the estimates carry few digits; centre the covariate "
                       "(e.g. x - mean(x)) and refit")
    return out


def make_deviance(design: Design, reml: bool = True) -> Deviance:
    """lme4's ``mkLmerDevfun``: the profiled deviance function of a design."""
    return Deviance(design, reml=reml)
