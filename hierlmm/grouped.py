"""The per-group engine: residual correlation, and the marginal formulation.

When ``ε_i ~ N(0, σ²R_i(ψ))`` with ``R_i ≠ I``, or when ``D`` may be indefinite (the marginal
formulation), the cross-product shortcut of :mod:`hierlmm.cholesky` no longer applies. The
marginal covariance is block diagonal over independent blocks of rows
(:mod:`hierlmm.blocks`), ``V_b = σ² V0_b`` with

.. math:: V0_b = \\sum_t Z_{tb} (I ⊗ S_t) Z_{tb}' + R_b(ψ),

``S_t = T_tT_t'`` (hierarchical: θ as in the core, ``D_t = σ² S_t``) or any symmetric ``S_t``
with every ``V0_b`` positive definite (marginal). Blocks of equal size are stacked and
factorised together (batched Cholesky); no ``n x n`` matrix is formed. With
``X'V0⁻¹X = Σ_b X_b'V0_b⁻¹X_b`` etc., the profiled criteria are those of the core:

.. math::

    -2\\ell_{REML} = \\sum_b \\log|V0_b| + \\log|X'V0^{-1}X| + (n-p)[1 + \\log(2π r^2/(n-p))],
    \\quad r^2 = \\min_β (y − Xβ)'V0^{-1}(y − Xβ).

The blocks hold the fixed part and the response in :mod:`hierlmm.crossprod`'s internal
coordinates, ``X̃ = X R⁻¹`` and ``y_c = y − Xβ₀`` (the same map,
:func:`~hierlmm.crossprod.fixed_map`), so a response or covariate far from 0 keeps its digits
here too; ``β = R⁻¹β̃ + β₀``, ``log|X'V0⁻¹X| = log|X̃'V0⁻¹X̃| + 2 Σ log R_jj``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from hierlmm.blocks import column_grouping, independent_blocks, split_blocks
from hierlmm.crossprod import center_response, fixed_map, internal_columns
from hierlmm.criterion import criterion
from hierlmm.deviance import Solution, collinear_terms
from hierlmm.errors import HierlmmError

__all__ = ["GroupedDeviance"]


class GroupedDeviance:
    """Profiled REML/ML deviance of ``(θ or S, ψ)`` computed block by block: the objective
    protocol of :class:`hierlmm.deviance.Deviance` for correlated residuals and the marginal
    formulation (the parameters hold ψ, the residual correlation's, after θ or S).

    Parameters
    ----------
    design : Design
    reml : bool
    residual : ResidualCorrelation, optional
        The design's (``design.residual``) by default.
    marginal : bool, optional
        Parametrise each term by a symmetric ``S_t`` (any sign) instead of ``T_t``; by default
        when ``design.formulation == "marginal"``.
    """

    def term_grams(self) -> list[np.ndarray]:
        """``Z_t'Z_t`` pooled over each term's levels, from the rows."""
        return [np.asarray(t.Z).T @ np.asarray(t.Z) for t in self.design.terms]

    def collinear_terms(self) -> list[str]:
        """:func:`hierlmm.deviance.collinear_terms` of this model."""
        return collinear_terms(self.design.terms, self.term_grams())

    @property
    def theta_scale(self) -> np.ndarray:
        """The optimiser's unit-free coordinates (:attr:`hierlmm.deviance.Deviance.theta_scale`):
        per θ (or S) entry from the root mean squares of Z's columns, 1 for ψ."""
        parts = [t.theta_scale(np.sqrt(np.mean(np.asarray(t.Z) ** 2, axis=0)), covariance=self.marginal)
                 for t in self.design.terms]
        return np.concatenate(parts + [np.ones(self.n_resid)])

    def __init__(self, design, reml=True, residual=None, marginal=None, variance=None):
        residual = design.residual if residual is None else residual
        variance = design.variance if variance is None else variance
        marginal = design.formulation == "marginal" if marginal is None else marginal
        self.design, self.reml, self.residual, self.marginal = design, bool(reml), residual, bool(marginal)
        self.variance = variance
        self.n, self.p = design.n, design.p
        self.n_theta = design.n_theta
        # the residual structure's parameters after θ: its correlation's, then its variance function's
        self.n_corr = 0 if residual is None else residual.n_params(design.data)
        self.n_var = 0 if variance is None else variance.n_params(design.data)
        self.n_resid = self.n_corr + self.n_var
        self.slices = design.theta_slices()
        self.evaluations = 0
        terms = design.terms
        lower = np.concatenate([np.full(t.n_theta, -np.inf) if marginal else t.theta_lower() for t in terms]
                               + [np.zeros(0)])
        self.lower = np.concatenate([lower, np.full(self.n_resid, -np.inf)])
        # residual groups: levels of the innermost grouping factor, or of the column named
        if residual is not None:
            gname = residual.group
            if gname is None and not terms:
                raise HierlmmError(f"a model without random effects needs the group of its residual structure: "
                                   f"{type(residual).__name__}(..., group='column')")
            rterm = next((t for t in terms if t.group == gname), None) if gname else terms[0]
            self.rgroup = rterm if rterm is not None else column_grouping(design.data, gname)
        # X̃ = X R⁻¹ and y_c = y − Xβ₀ (module doc)
        X = design.X
        self.x_map = fixed_map(X.T @ X, self.n, lambda: scipy.linalg.qr(X, mode="r", check_finite=False)[0])
        M, u = internal_columns(X, self.x_map)
        Xt = M * u
        yc, b0 = center_response(Xt, np.ones(self.p), Xt.T @ Xt, design.y)
        self._rinv = scipy.linalg.solve_triangular(self.x_map, np.eye(self.p), lower=False) if self.p else self.x_map
        self.y_shift = self._rinv @ b0
        labels = independent_blocks(design, [self.rgroup] if residual is not None else [])
        by_size: dict[int, list[np.ndarray]] = {}
        for rows in split_blocks(labels):
            by_size.setdefault(len(rows), []).append(rows)
        self.stacks = []
        self.positions_all = []
        for _, blocks in sorted(by_size.items()):
            rows = np.stack(blocks)  # (G, s)
            comps = []  # per (term, a, c) in θ's order: (G, s, s) matrices Z_a Z_c' within level
            for t in terms:
                codes = t.codes[rows]
                same = codes[:, :, None] == codes[:, None, :]
                for a, c in t.tril_pairs:
                    za, zc = t.Z[rows, a], t.Z[rows, c]
                    G = za[:, :, None] * zc[:, None, :] * same
                    if a != c:
                        G = G + np.transpose(G, (0, 2, 1))
                    comps.append(G)
            comps = np.stack(comps, axis=1) if comps else np.zeros((rows.shape[0], 0) + rows.shape[1:] * 2)
            stack = {"rows": rows, "comps": comps, "X": Xt[rows], "y": yc[rows]}
            if variance is not None:
                stack["vcodes"] = variance.codes(design.data, rows.ravel()).reshape(rows.shape)
            if residual is not None:
                stack["rgroups"] = self.rgroup.codes[rows]  # (G, s)
                stack["pos"] = np.empty(rows.shape)
                for g in range(rows.shape[0]):
                    for lev in np.unique(stack["rgroups"][g]):
                        sel = stack["rgroups"][g] == lev
                        pos = residual.positions(design.data, rows[g][sel], self.rgroup.levels[lev])
                        stack["pos"][g, sel] = pos
                        self.positions_all.append(pos)
            self.stacks.append(stack)
        self.theta0 = self._start()

    # -- parameters ------------------------------------------------------------------
    def relcovs(self, params) -> list[np.ndarray]:
        """``S_t`` per term: ``T T'`` (hierarchical) or the symmetric matrix (marginal)."""
        out = []
        for t, s in zip(self.design.terms, self.slices):
            if self.marginal:
                S = t.template(params[s])
                out.append(S + np.tril(S, -1).T)
            else:
                out.append(t.relcov(params[s]))
        return out

    def residual_value(self, params):
        """The residual correlation's natural value(s) (``None``: independent residuals)."""
        if self.residual is None:
            return None
        return self.residual.values(np.asarray(params[self.n_theta:self.n_theta + self.n_corr], dtype=float))

    def variance_value(self, params):
        """The variance function's SD ratios per level (``None``: one residual SD)."""
        if self.variance is None:
            return None
        return self.variance.values(np.asarray(params[self.n_theta + self.n_corr:], dtype=float))

    def correlation_report(self, params) -> dict:
        """The residual correlation's natural parameters by name (:meth:`ResidualCorrelation.report`)."""
        return {} if self.residual is None else self.residual.report(self.residual_value(params), self.design.data)

    def variance_report(self, params) -> dict:
        """The variance function's SD ratios by name (:meth:`VarIdent.report`)."""
        return {} if self.variance is None else self.variance.report(self.variance_value(params), self.design.data)

    def residual_report(self, params) -> dict:
        """:meth:`correlation_report` and :meth:`variance_report` together."""
        return {**self.correlation_report(params), **self.variance_report(params)}

    def residual_names(self) -> list[str]:
        """Names of the residual structure's (unbounded) parameters, in θ's order after the terms'."""
        names = []
        if self.residual is not None:
            names += [f"{self.residual.param}{i + 1 if self.n_corr > 1 else ''} (unconstrained)"
                      for i in range(self.n_corr)]
        if self.variance is not None:
            names += [f"log {n}" for n in self.variance.report(np.ones(self.n_var + 1), self.design.data)]
        return names

    def _start(self):
        start = np.concatenate([t.theta_start() for t in self.design.terms] + [np.zeros(0)])
        if self.residual is not None:
            start = np.append(start, self.residual.start_vector(self.positions_all, self.design.data))
        return np.append(start, np.zeros(self.n_var))

    def null_start(self, theta0):
        """``theta0`` with the residual correlation's parameters where it (numerically) vanishes."""
        out = np.array(theta0, dtype=float)
        if self.residual is not None:
            out[self.n_theta:self.n_theta + self.n_corr] = self.residual.null_vector(self.positions_all,
                                                                                     self.design.data)
        return out

    def _svec(self, params):
        """The entries of every ``S_t``'s lower triangle, in θ's order (``comps``'s order)."""
        return np.array([S[a, c] for t, S in zip(self.design.terms, self.relcovs(params)) for a, c in t.tril_pairs])

    def _V0(self, stack, svec, rvalue, delta=None):
        """``V0_b = Σ_t Z_t (I ⊗ S_t) Z_t' + Δ R(ψ) Δ`` for every block of the stack (``Δ`` the
        variance function's SD ratios of the rows, ``I`` without one)."""
        V = np.einsum("c,gcij->gij", svec, stack["comps"])
        G, s = stack["rows"].shape
        if self.residual is None:
            R = np.broadcast_to(np.eye(s), (G, s, s))
        else:
            rg, pos = stack["rgroups"], stack["pos"]
            R = np.empty((G, s, s))
            for g in range(G):
                same = rg[g][:, None] == rg[g][None, :]
                R[g] = self.residual.matrix(rvalue, pos[g]) * same
        if delta is not None:
            d = delta[stack["vcodes"]]
            R = R * d[:, :, None] * d[:, None, :]
        return V + R

    # -- the criterion ------------------------------------------------------------------
    def _accumulate(self, params):
        svec = self._svec(params)
        rvalue, delta = self.residual_value(params), self.variance_value(params)
        p = self.p
        logdet = 0.0
        XtVX = np.zeros((p, p))
        XtVy = np.zeros(p)
        ytVy = 0.0
        for stack in self.stacks:
            V = self._V0(stack, svec, rvalue, delta)
            try:
                C = np.linalg.cholesky(V)
            except np.linalg.LinAlgError:
                return None
            logdet += 2 * np.sum(np.log(np.diagonal(C, axis1=1, axis2=2)))
            Xw = np.linalg.solve(C, stack["X"])
            yw = np.linalg.solve(C, stack["y"][..., None])[..., 0]
            XtVX += np.einsum("gsi,gsj->ij", Xw, Xw)
            XtVy += np.einsum("gsi,gs->i", Xw, yw)
            ytVy += float(np.sum(yw * yw))
        return logdet, XtVX, XtVy, ytVy

    def _parts(self, params):
        acc = self._accumulate(np.asarray(params, dtype=float))
        if acc is None:
            return None
        logdet, XtVX, XtVy, ytVy = acc
        try:
            c = np.linalg.cholesky(XtVX)
        except np.linalg.LinAlgError:
            return None
        beta = np.linalg.solve(XtVX, XtVy)  # β̃, in X̃'s coordinates
        r2 = ytVy - XtVy @ beta
        logdet_x = 2 * np.sum(np.log(np.diag(c))) + 2 * np.sum(np.log(np.abs(np.diag(self.x_map))))
        return logdet, logdet_x, r2, beta, XtVX

    def __call__(self, params) -> float:
        self.evaluations += 1
        parts = self._parts(params)
        if parts is None or not parts[2] > 0:
            return np.inf
        logdet, logdet_x, r2, _, _ = parts
        return criterion(logdet, logdet_x, r2, self.n, self.p, self.reml)

    def unprofiled(self, params, sigma) -> float:
        parts = self._parts(params)
        if parts is None or not sigma > 0:
            return np.inf
        logdet, logdet_x, r2, _, _ = parts
        return criterion(logdet, logdet_x, r2, self.n, self.p, self.reml, sigma2=sigma * sigma)

    def unscaled_vcov(self, params) -> np.ndarray:
        return self._rinv @ np.linalg.inv(self._parts(params)[4]) @ self._rinv.T

    def solve(self, params) -> Solution:
        params = np.asarray(params, dtype=float)
        parts = self._parts(params)
        if parts is None:
            raise HierlmmError("V is not positive definite at these parameters")
        logdet, logdet_x, r2, beta, XtVX = parts
        sigma2 = r2 / (self.n - self.p if self.reml else self.n)
        dev = self(params)
        b = self._blups(params, beta)  # the blocks' residuals y_c − X̃β̃ = y − Xβ
        R = self.x_map
        return Solution(theta=params, beta=self._rinv @ beta + self.y_shift, b=b, sigma2=sigma2, deviance=dev,
                        xtvx=R.T @ XtVX @ R)

    def _blups(self, params, beta):
        """``b̂ = S Z'V0⁻¹(y − Xβ̂)`` per term and level (``D Z'V⁻¹ r`` with σ² cancelling)."""
        svec, rvalue, delta = self._svec(params), self.residual_value(params), self.variance_value(params)
        terms = self.design.terms
        Ss = self.relcovs(params)
        out = [np.zeros((t.m, t.k)) for t in terms]
        for stack in self.stacks:
            V = self._V0(stack, svec, rvalue, delta)
            w = np.linalg.solve(V, (stack["y"] - stack["X"] @ beta)[..., None])[..., 0]  # (G, s)
            rows = stack["rows"]
            for t, o in zip(terms, out):
                # Z_t' w per level: accumulate z_i w_i into the level of row i
                zw = t.Z[rows] * w[..., None]  # (G, s, k)
                np.add.at(o, t.codes[rows].ravel(), zw.reshape(-1, t.k))
        return [o @ S.T for o, S in zip(out, Ss)]

    def block_matrices(self, params):
        """Yield ``(rows, V0_b)`` for every block (for posteriors and marginal covariances)."""
        svec, rvalue, delta = self._svec(params), self.residual_value(params), self.variance_value(params)
        for stack in self.stacks:
            V = self._V0(stack, svec, rvalue, delta)
            for g in range(V.shape[0]):
                yield stack["rows"][g], V[g]

    # -- what the results need of the engine (the protocol of hierlmm.deviance.Deviance) ----
    def simulate(self, fit, n: int, rng) -> np.ndarray:
        """``n`` draws ``y* ~ N(Xβ̂, σ̂² V0)`` block by block, with ``V0`` the fitted
        ``ZSZ' + R(ψ̂)`` (in the marginal formulation the estimated ``V`` itself)."""
        out = np.tile(self.design.X @ fit.solution.beta, (n, 1))
        for rows, V0 in self.block_matrices(fit.solution.theta):
            out[:, rows] += fit.sigma * rng.standard_normal((n, len(rows))) @ np.linalg.cholesky(V0).T
        return out

    def ranef_posterior(self, fit, beta: str = "fixed"):
        """Per block: ``Cov(b | y) = D − DZ'V⁻¹ZD`` (+ ``DZ'V⁻¹X(X'V⁻¹X)⁻¹X'V⁻¹ZD`` when β is
        integrated out), with ``V`` including the residual correlation."""
        import pandas as pd
        import scipy.linalg

        from hierlmm.crossprod import term_matrix
        from hierlmm.posterior_b import RanefPosterior

        d, sol = self.design, fit.solution
        params, s2 = sol.theta, sol.sigma2
        Ss = self.relcovs(params)
        XtVXi = np.linalg.inv(sol.xtvx)
        groups: dict[str, list[int]] = {}
        for i, t in enumerate(d.terms):
            groups.setdefault(t.group, []).append(i)
        Zs = [term_matrix(t).tocsr() for t in d.terms]
        out = {}
        for g, idx in groups.items():
            ts = [d.terms[i] for i in idx]
            K = sum(t.k for t in ts)
            Sbig = scipy.linalg.block_diag(*[Ss[i] for i in idx])
            cov = np.zeros((ts[0].m, K, K))
            for rows, V0 in self.block_matrices(params):
                Vi = np.linalg.inv(V0)
                Xb = d.X[rows]
                for j in np.unique(ts[0].codes[rows]):
                    A = np.vstack([Ss[i] @ Zs[i][rows][:, j * d.terms[i].k:(j + 1) * d.terms[i].k].toarray().T
                                   for i in idx])  # (K, s): D Z_j' / σ²
                    C = Sbig - A @ Vi @ A.T
                    if beta == "integrated":
                        B = A @ Vi @ Xb
                        C = C + B @ XtVXi @ B.T
                    cov[j] = s2 * C
            mean = pd.concat([pd.DataFrame(sol.b[i], index=pd.Index(d.terms[i].levels, name=g),
                                           columns=d.terms[i].names) for i in idx], axis=1)
            out[g] = RanefPosterior(g, mean, cov, beta)
        return out
