"""The result of ``model.sample(...)``: draws as an ArviZ DataTree, and their summary."""

from __future__ import annotations


import numpy as np
import pandas as pd

from hierlmm.errors import ConvergenceWarning, warn
from hierlmm.validate import kind as valid_kind

__all__ = ["Posterior", "assemble"]

RHAT_MAX, ESS_MIN = 1.01, 400


class Posterior:
    """Posterior draws of a linear mixed model.

    Attributes
    ----------
    idata : xarray.DataTree
        ArviZ data: group ``posterior`` with ``beta`` (dim ``coef``), ``sigma``, ``sigma2``,
        and per random-effects term ``LABEL`` the variances and SDs ``var_LABEL``,
        ``sd_LABEL`` (dim ``LABEL_effect``: ``(Intercept)``, ``Days``), for a term with
        several effects the covariances and correlations below the diagonal ``cov_LABEL``,
        ``corr_LABEL`` (dim ``LABEL_pair``: ``Days.(Intercept)``, lme4's order), and the
        random effects ``b_LABEL`` (dims ``LABEL_level``, ``LABEL_term``); plus
        ``sample_stats`` and ``observed_data``. Only what varies is stored (no unit diagonal of
        a correlation matrix), so that ``arviz.summary``, ``arviz.plot_trace`` and the
        diagnostics apply as they are; :meth:`covariance` gives the full matrices.
    model : LMM
    prior, sampler : str
    """

    extended_to = None  # draws per chain, when sample() drew more than asked for ESS

    def __init__(self, idata, model, prior, sampler, layout=None):
        self.idata = idata
        self.model = model
        self.prior = prior
        self.sampler = sampler
        self.layout = layout

    @property
    def posterior(self):
        return self.idata["posterior"]

    def variance_names(self) -> list[str]:
        return [n for n in self.posterior.data_vars if n.startswith(("var_", "cov_")) or n == "sigma2"]

    def summary(self, var_names=None, ci_prob: float = 0.95, round_to="auto") -> pd.DataFrame:
        """ArviZ summary: mean, sd, 95% equal-tailed interval, bulk/tail ESS, R-hat.

        ``round_to``: ArviZ's rounding, ``"auto"`` (digits the Monte Carlo error supports)
        or ``"none"`` (full precision)."""
        import arviz as az

        if var_names is None:
            var_names = ["beta", "sigma"] + [n for n in self.posterior.data_vars if n.startswith(("sd_", "corr_"))]
        return az.summary(self.idata, var_names=var_names, ci_prob=ci_prob, round_to=round_to)

    def covariance(self, label: str) -> np.ndarray:
        """Draws of the full covariance matrix ``D`` of term ``label``: (chain, draw, k, k)."""
        post = self.posterior
        var = post[f"var_{label}"].to_numpy()
        k = var.shape[-1]
        D = var[..., :, None] * np.eye(k)
        if k > 1 and f"cov_{label}" in post.data_vars:  # (a diagonal structure stores none)
            r, c = _below_diagonal(k)
            cov = post[f"cov_{label}"].to_numpy()
            D[..., r, c] = cov
            D[..., c, r] = cov
        return D

    def draws(self, name: str) -> np.ndarray:
        """Draws of one variable, chains stacked: shape (chains*draws, ...)."""
        v = self.posterior[name].to_numpy()
        return v.reshape((-1,) + v.shape[2:])

    def diagnostics(self) -> pd.DataFrame:
        """Per variance parameter (``sigma2``, ``var_*``, the covariances ``cov_*``): the
        worst R-hat, bulk ESS and tail ESS over its entries (ArviZ's rank-normalised ones)."""
        import arviz as az

        post = self.posterior
        rows = []
        for name in ["sigma2"] + [n for n in post.data_vars if n.startswith(("var_", "cov_"))]:
            da = post[name]
            with np.errstate(all="ignore"):
                rhat = np.atleast_1d(az.rhat(da).to_numpy()).ravel()
                bulk = np.atleast_1d(az.ess(da).to_numpy()).ravel()
                tail = np.atleast_1d(az.ess(da, method="tail").to_numpy()).ravel()
            rows.append({"name": name, "r_hat": np.nanmax(rhat) if post.sizes.get("chain", 1) > 1 else np.nan,
                         "ess_bulk": np.nanmin(bulk), "ess_tail": np.nanmin(tail)})
        return pd.DataFrame(rows).set_index("name")

    def divergences(self) -> int:
        """Divergent transitions after tuning."""
        stats = self.idata.children.get("sample_stats") if hasattr(self.idata, "children") else None
        return int(stats["diverging"].to_numpy().sum()) if stats is not None and "diverging" in stats else 0

    def check(self) -> list[str]:
        """Warn about divergences, R-hat > 1.01, bulk or tail ESS < 400, naming the parameters."""
        messages = []
        nd = self.divergences()
        if nd:
            messages.append(f"{nd} divergent transitions after tuning: the draws may be biased")
        for name, row in self.diagnostics().iterrows():
            if row.r_hat > RHAT_MAX:
                messages.append(f"R-hat of {name} is {row.r_hat:.3f} (> {RHAT_MAX})")
            for kind in ("bulk", "tail"):
                if row[f"ess_{kind}"] < ESS_MIN:
                    messages.append(f"{kind} ESS of {name} is {row[f'ess_{kind}']:.0f} (< {ESS_MIN})")
        if messages and self.extended_to:
            messages = [f"{m}, after {self.extended_to} draws per chain" for m in messages]
        for m in messages:
            warn(m, ConvergenceWarning)
        return messages

    # ------------------------------------------------------ likelihood and predictions
    def _draws(self):
        """β (chain, draw, p), σ² (chain, draw), b per term (chain, draw, m, k), D per term."""
        post = self.posterior
        design = self.model.design
        beta = post["beta"].to_numpy()
        bs = [post[f"b_{t.label}"].to_numpy() for t in design.terms]
        Ds = [self.covariance(t.label) for t in design.terms]
        return beta, post["sigma2"].to_numpy(), bs, Ds

    def _mean(self, X, offset, codes, Zs, rng=None):
        """``o + Xβ + Σ_t Z_t b_t`` per draw, shape (chain, draw, n); a negative code (a level
        not in the fit) gets ``b ~ N(0, D)`` drawn per draw and level (``rng`` given), else 0."""
        beta, _, bs, Ds = self._draws()
        mu = np.einsum("cdp,np->cdn", beta, X)
        if offset is not None:
            mu = mu + offset
        for codes_t, Z, b, D in zip(codes, Zs, bs, Ds):
            seen = codes_t >= 0
            if seen.any():
                mu[..., seen] += np.einsum("nk,cdnk->cdn", Z[seen], b[:, :, codes_t[seen]])
            if rng is not None and not seen.all():
                new_levels, inverse = np.unique(codes_t[~seen], return_inverse=True)
                k = D.shape[-1]
                lam, Q = np.linalg.eigh(D)  # D = L L' with L = Q Λ^½ (D may be singular)
                L = Q * np.sqrt(np.clip(lam, 0.0, None))[..., None, :]
                u = rng.standard_normal(D.shape[:2] + (len(new_levels), k))
                bnew = np.einsum("cdkl,cdml->cdmk", L, u)
                mu[..., ~seen] += np.einsum("nk,cdnk->cdn", Z[~seen], bnew[:, :, inverse])
        return mu

    def log_likelihood(self, kind: str = "conditional"):
        """The pointwise log-likelihood of every draw, stored in the ``log_likelihood`` group
        of :attr:`idata`, so that ``arviz.loo(post.idata)`` and ``arviz.compare`` work;
        returns :attr:`idata`.

        ``kind="conditional"`` (default), variable ``y``: per observation, given the draw's
        ``b``, ``log N(y_i | o_i + x_i'β + z_i'b, σ²/w_i)`` (dim ``obs``):
        leave-one-observation-out. ``kind="marginal"``, variable ``y_marginal``: per level of
        the outermost grouping factor (every term's levels nested in its levels), ``b``
        integrated out, ``log N(y_g | o_g + X_gβ, Z_g D Z_g' + σ²W_g⁻¹)`` (dim
        ``GROUP_level``): leave-one-group-out, the prediction of a new group. Both can be
        stored side by side; ArviZ then needs ``var_name="y"`` or ``var_name="y_marginal"``.
        """
        import xarray as xr

        design = self.model.design
        y = design.y
        beta, sigma2, _, Ds = self._draws()
        if kind == "conditional" and sigma2.size * design.n > 2e8:
            from hierlmm.errors import HierlmmError

            raise HierlmmError(f"the pointwise log-likelihood would hold {sigma2.size} draws x {design.n} observations "
                               f"({sigma2.size * design.n * 8 / 1e9:.1f} GB); use kind='marginal' (one value per "
                               "group) or fewer draws")
        w = np.ones(design.n) if design.weights is None else design.weights
        if kind == "conditional":
            mu = self._mean(design.X, design.offset, [t.codes for t in design.terms], [t.Z for t in design.terms])
            var = sigma2[..., None] / w
            ll = -0.5 * (np.log(2 * np.pi * var) + (y - mu) ** 2 / var)
            return self._store_log_likelihood(xr.DataArray(ll, dims=("chain", "draw", "obs"), name="y"))
        valid_kind(kind)
        outer = _outermost(design)
        mu = np.einsum("cdp,np->cdn", beta, design.X) + (0.0 if design.offset is None else design.offset)
        rows = [np.flatnonzero(outer.codes == j) for j in range(outer.m)]
        ll = np.empty(sigma2.shape + (outer.m,))
        for j, r in enumerate(rows):
            V = np.zeros(sigma2.shape + (len(r), len(r)))
            for t, D in zip(design.terms, Ds):
                Z = t.Z[r]
                same = (t.codes[r][:, None] == t.codes[r][None, :])
                V += np.einsum("ik,cdkl,jl->cdij", Z, D, Z) * same
            V += sigma2[..., None, None] * np.diag(1.0 / w[r])
            C = np.linalg.cholesky(V)
            e = (y[r] - mu[..., r])[..., None]
            z = np.linalg.solve(C, e)[..., 0]
            ll[..., j] = (-0.5 * len(r) * np.log(2 * np.pi) - np.log(np.diagonal(C, axis1=-2, axis2=-1)).sum(-1)
                          - 0.5 * (z * z).sum(-1))
        dim = f"{outer.label}_level"
        return self._store_log_likelihood(xr.DataArray(ll, dims=("chain", "draw", dim), name="y_marginal",
                                                       coords={dim: list(outer.levels)}))

    def _store_log_likelihood(self, da):
        """Add (or replace) one variable of the ``log_likelihood`` group, keeping the others."""
        group = self.idata.children.get("log_likelihood")
        ds = group.to_dataset() if group is not None else None
        self.idata["log_likelihood"] = da.to_dataset() if ds is None else ds.drop_vars(da.name, errors="ignore").assign(
            {da.name: da})
        return self.idata

    def predict(self, newdata: pd.DataFrame | None = None, kind: str = "conditional", noise: bool = False,
                random_seed=None):
        """Posterior draws of the mean (``noise=False``) or of new observations
        (``noise=True``: ``+ ε``, ``ε ~ N(0, σ²)``, ``σ²/w_i`` on the fitted rows) for
        ``newdata`` (default: the rows fitted), as an ``xarray.DataArray`` (chain, draw, obs).

        ``kind="conditional"``: ``o + Xβ + Zb`` with each draw's ``b``; a level the fit has not
        seen gets ``b ~ N(0, D)`` drawn from the same draw's ``D`` (the posterior predictive of
        a new group, brms's ``sample_new_levels = "gaussian"``). ``kind="marginal"``: ``o + Xβ``.
        """
        import xarray as xr

        from hierlmm.newdata import new_data

        design = self.model.design
        rng = np.random.default_rng(random_seed)
        conditional = valid_kind(kind) == "conditional"
        if newdata is None:
            X, offset, index = design.X, design.offset, design.data.index
            codes, Zs = [t.codes for t in design.terms], [t.Z for t in design.terms]
            w = design.weights
        else:
            nd = new_data(design, newdata, random=conditional)
            X, offset, codes, Zs, index, w = nd.X, nd.offset, nd.codes, nd.Z, nd.index, None
        if not conditional:
            codes, Zs = [], []
        out = self._mean(X, offset, codes, Zs, rng=rng)
        if noise:
            sigma2 = self.posterior["sigma2"].to_numpy()[..., None]
            var = sigma2 if w is None else sigma2 / w
            out = out + np.sqrt(var) * rng.standard_normal(out.shape)
        return xr.DataArray(out, dims=("chain", "draw", "obs"), coords={"obs": np.asarray(index)},
                            name="y" if noise else "mu")

    def posterior_predictive(self, random_seed=None):
        """Replicated responses ``y_rep`` of the fitted rows, one per draw (each draw's β, b,
        σ²), stored as the ``posterior_predictive`` group (variable ``y``) of :attr:`idata` for
        ArviZ's predictive checks; returns :attr:`idata`."""
        import xarray as xr

        y_rep = self.predict(noise=True, random_seed=random_seed)
        self.idata["posterior_predictive"] = xr.Dataset({"y": (("chain", "draw", "obs"), y_rep.to_numpy())})
        return self.idata

    def __repr__(self) -> str:
        c, d = self.posterior.sizes.get("chain", 1), self.posterior.sizes.get("draw", 0)
        return f"Posterior({self.model.formula!r}, prior={self.prior!r}, sampler={self.sampler!r}, {c} chains x {d} draws)"

    def _repr_html_(self) -> str:
        return f"<p>{repr(self)}</p>" + self.summary().to_html()


def _below_diagonal(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the entries below the diagonal of a ``k x k`` matrix, column by
    column (lme4's order of θ and of ``VarCorr``'s correlations)."""
    c, r = np.triu_indices(k, 1)
    return r, c


def pair_names(names: list[str]) -> list[str]:
    """Coordinates of the ``pair`` dimension, lme4's ``cor_Days.(Intercept)`` without the prefix."""
    r, c = _below_diagonal(len(names))
    return [f"{names[a]}.{names[b]}" for a, b in zip(r, c)]


def _outermost(design):
    """The term whose grouping factors are part of every term's (its levels contain every
    other term's levels): the groups of the marginal likelihood."""
    for t in design.terms:
        if all(set(t.factors) <= set(u.factors) for u in design.terms):
            return t
    from hierlmm.errors import HierlmmError

    raise HierlmmError("the marginal log-likelihood per group needs a grouping factor in which every term's levels "
                       "are nested; crossed terms make all rows one group: use kind='conditional'")


def assemble(model, layout, x, beta, bs, sample_stats=None):
    """Build the DataTree from unconstrained draws ``x`` (chain, draw, size), β and b draws."""
    import arviz as az

    design = model.design
    nc, nd = x.shape[:2]
    flat = x.reshape(nc * nd, -1)
    post = {"beta": beta.reshape(nc, nd, -1)}
    sigma2 = np.exp(flat[:, layout.n_eta])
    post["sigma2"] = sigma2.reshape(nc, nd)
    post["sigma"] = np.sqrt(sigma2).reshape(nc, nd)
    dims = {"beta": ["coef"]}
    coords = {"coef": list(design.fixef_names)}
    covs = [[] for _ in design.terms]
    for i in range(flat.shape[0]):
        Ls, _ = layout.unpack(flat[i])
        for j, L in enumerate(Ls):
            covs[j].append(L @ L.T)
    for j, t in enumerate(design.terms):
        lab = t.label
        D = np.asarray(covs[j]).reshape(nc, nd, t.k, t.k)
        sd = np.sqrt(np.diagonal(D, axis1=2, axis2=3))
        post[f"var_{lab}"] = sd**2
        post[f"sd_{lab}"] = sd
        dims[f"var_{lab}"] = dims[f"sd_{lab}"] = [f"{lab}_effect"]
        coords[f"{lab}_effect"] = list(t.names)
        if t.k > 1 and not t.cov.diagonal:  # what varies: the covariances and correlations below the diagonal
            r, c = _below_diagonal(t.k)
            post[f"cov_{lab}"] = D[..., r, c]
            with np.errstate(invalid="ignore", divide="ignore"):
                post[f"corr_{lab}"] = D[..., r, c] / (sd[..., r] * sd[..., c])
            dims[f"cov_{lab}"] = dims[f"corr_{lab}"] = [f"{lab}_pair"]
            coords[f"{lab}_pair"] = pair_names(t.names)
        # b's dimensions first appear here: every variable's dimensions are then in the order
        # in which they first appear in the dataset, the order ArviZ's stacking (summary) assumes
        post[f"b_{lab}"] = bs[j].reshape(nc, nd, t.m, t.k)
        dims[f"b_{lab}"] = [f"{lab}_level", f"{lab}_term"]
        coords[f"{lab}_level"] = list(t.levels)
        coords[f"{lab}_term"] = list(t.names)
    data = {"posterior": post}
    if design.rows:  # a model on a Dask DataFrame has no observations in memory to attach
        data["observed_data"] = {"y": design.y}
        dims["y"] = ["obs"]
    if sample_stats is not None:
        data["sample_stats"] = sample_stats
    return az.from_dict(data, dims=dims, coords=coords)
