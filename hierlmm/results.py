"""Stage 5 of the pipeline (lme4's ``mkMerMod``): the fitted model a user reads.

:class:`LMMResult` is built from the design, the deviance function and the optimum θ̂.
Every quantity follows from the blocked factor at θ̂; nothing is refitted. Printing lives in
:mod:`hierlmm.summary`.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from hierlmm.design import design_attribute
from hierlmm.deviance import Deviance, Solution
from hierlmm.errors import ConvergenceWarning, HierlmmError, warn
from hierlmm.optimize import SINGULAR_TOL, OptResult, optimize_theta, theta_scale
from hierlmm.validate import count, other_names, per_row, seed
from hierlmm.validate import kind as valid_kind
from hierlmm.posterior_b import RanefPosterior
from hierlmm.reterms import varcorr_rows

__all__ = ["LMMResult"]


class LMMResult:
    """A linear mixed model fitted by REML or ML.

    Attributes
    ----------
    model : LMM
    design : Design
    deviance_function : Deviance
    opt : OptResult
    solution : Solution
    method : {"REML", "ML"}
    """

    def __init__(self, model, deviance_function: Deviance, opt: OptResult):
        self.model = model
        self.design = deviance_function.design
        self.deviance_function = deviance_function
        self.opt = opt
        self.solution: Solution = deviance_function.solve(opt.theta)
        self.method = "REML" if deviance_function.reml else "ML"

    # ---------------------------------------------------------------- basic quantities
    @property
    def residual_params(self) -> dict:
        """The residual structure's estimated parameters by name: a correlation's (``{"phi":
        0.54}``; ``Unstructured``: ``cor(v2,v1)``, ...) and a variance function's SD ratios
        (``sd ratio visit=v2``, ...); ``{}`` for independent equal-variance residuals."""
        report = getattr(self.deviance_function, "residual_report", None)
        return {} if report is None else report(self.solution.theta)

    residual = design_attribute("residual")
    variance = design_attribute("variance")
    formulation = design_attribute("formulation")

    @property
    def nobs(self) -> int:
        """Number of observations used (after dropping incomplete rows)."""
        return self.design.n

    @property
    def n_missing(self) -> int:
        """Number of rows dropped for missing values."""
        return self.design.n_missing

    @property
    def ngroups(self) -> dict[str, int]:
        """Number of levels of each grouping factor (lme4's ``ngrps``)."""
        out: dict[str, int] = {}
        for t in self.design.terms:
            out.setdefault(t.group, t.m)
        return out

    @property
    def theta(self) -> pd.Series:
        """θ̂, the relative covariance factors' entries, with lme4's names."""
        return pd.Series(self.solution.theta[: self.design.n_theta], index=theta_names(self.design.terms),
                         name="theta")

    @property
    def fixef(self) -> pd.Series:
        """β̂, indexed by coefficient name."""
        return pd.Series(self.solution.beta, index=self.design.fixef_names, name="fixef")

    @property
    def sigma(self) -> float:
        """Residual standard deviation σ̂."""
        return float(np.sqrt(self.solution.sigma2))

    @cached_property
    def _rx_inv(self) -> np.ndarray:
        return self.deviance_function.unscaled_vcov(self.solution.theta)

    @cached_property
    def _varpar_covariance(self):
        """Satterthwaite's ingredients (:func:`hierlmm.inference.satterthwaite.varpar_covariance`)."""
        from hierlmm.inference.satterthwaite import compute_varpar_covariance

        return compute_varpar_covariance(self)

    @cached_property
    def _kr_adjustment(self):
        """Kenward–Roger's adjusted covariance (:func:`hierlmm.inference.kenward_roger.kr_adjust`)."""
        from hierlmm.inference.kenward_roger import compute_kr_adjust

        return compute_kr_adjust(self)

    # ------------------------------------------- the variance-parameter interface
    # Inference (Satterthwaite, profiles, Wald intervals of variance parameters) works on
    # these four members only, so every kind of fit that provides them gets it.
    @property
    def varpar(self) -> np.ndarray:
        """The variance parameters as lmerTest parametrises them: ``(θ, σ)``."""
        return np.append(self.solution.theta, self.sigma)

    @property
    def varpar_names(self) -> list[str]:
        names = getattr(self.deviance_function, "residual_names", None)
        return [*self.theta.index, *(names() if names is not None else []), "sigma"]

    def deviance_at(self, varpar) -> float:
        """−2 log-likelihood (REML or ML, as fitted) at the variance parameters ``(θ, σ)``."""
        vp = np.asarray(varpar, dtype=float)
        return self.deviance_function.unprofiled(vp[:-1], vp[-1])

    def vcov_at(self, varpar) -> np.ndarray:
        """``Var(β̂)`` as a function of the variance parameters ``(θ, σ)``."""
        vp = np.asarray(varpar, dtype=float)
        return vp[-1] ** 2 * self.deviance_function.unscaled_vcov(vp[:-1])

    @property
    def vcov(self) -> pd.DataFrame:
        """Covariance matrix of β̂, ``σ̂² (X'V⁻¹X)⁻¹`` with V in units of σ²."""
        names = self.design.fixef_names
        return pd.DataFrame(self.solution.sigma2 * self._rx_inv, index=names, columns=names)

    @property
    def se(self) -> pd.Series:
        """Standard errors of β̂."""
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self.design.fixef_names, name="se")

    def covariance_matrices(self) -> dict[str, pd.DataFrame]:
        """``D_t = σ̂² S_t`` for each term (``S_t = T_t T_t'``; in the marginal formulation any
        symmetric ``S_t``), labelled by term columns."""
        Ss = self.deviance_function.relcovs(self.solution.theta)
        return {t.label: pd.DataFrame(self.solution.sigma2 * S, index=t.names, columns=t.names)
                for t, S in zip(self.design.terms, Ss)}

    @property
    def varcorr(self) -> pd.DataFrame:
        """Variance components in lme4's ``as.data.frame(VarCorr(fit))`` layout.

        Columns ``grp, var1, var2, vcov, sdcor``: one row per variance (``var2`` missing,
        ``sdcor`` the SD), one per covariance (``sdcor`` the correlation), then the residual.
        """
        rows = [row for t, (label, D) in zip(self.design.terms, self.covariance_matrices().items())
                for row in varcorr_rows(label, list(D.index), D.to_numpy(), diagonal=t.cov.diagonal)]
        rows.append(("Residual", None, None, self.solution.sigma2, self.sigma))
        return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])

    # ------------------------------------------------------------------ likelihood
    @property
    def deviance(self) -> float:
        """−2 logLik for ML; the REML criterion for REML (as lme4's ``deviance``/``REMLcrit``)."""
        return self.solution.deviance

    @property
    def loglik(self) -> float:
        """The maximised log-likelihood; for a REML fit the REML log-likelihood (as lme4)."""
        return -0.5 * self.solution.deviance

    @property
    def df_model(self) -> int:
        """Number of parameters: ``p`` fixed effects, θ, the residual correlation's, and σ."""
        return self.design.p + self.design.n_theta + self.deviance_function.n_resid + 1

    @property
    def aic(self) -> float:
        """Akaike's criterion ``−2 logLik + 2 df_model`` (of the REML log-likelihood for a
        REML fit, as lme4 reports it: compare AICs of REML fits only when their fixed effects
        are the same)."""
        return -2 * self.loglik + 2 * self.df_model

    @property
    def bic(self) -> float:
        """Schwarz's criterion ``−2 logLik + log(n) df_model`` (``n`` the observations used)."""
        return -2 * self.loglik + np.log(self.nobs) * self.df_model

    @property
    def singular(self) -> bool:
        """lme4's ``isSingular``: a bounded θ entry within 1e-4 of its bound (never in the
        marginal formulation, whose parameters are unbounded)."""
        n = self.design.n_theta
        scale = theta_scale(self.deviance_function)[:n]  # in the optimiser's unit-free φ
        lower = self.deviance_function.lower[:n] * scale
        bounded = np.isfinite(lower)
        return bool(np.any((self.solution.theta[:n] * scale)[bounded] - lower[bounded] < SINGULAR_TOL))

    @property
    def converged(self) -> bool:
        """The optimiser stopped at a point that passes lme4's convergence checks (gradient
        and Hessian at the optimum); if not, the fit warned with the reason
        (``fit.opt.messages``)."""
        return self.opt.converged

    # ---------------------------------------------------------------- random effects
    def ranef(self) -> dict[str, pd.DataFrame]:
        """Conditional modes (BLUPs) of the random effects: grouping factor -> levels x terms."""
        self.model.require("ranef()", needs="b", instead="use kind='marginal' or a hierarchical fit")
        out: dict[str, pd.DataFrame] = {}
        for t, b in zip(self.design.terms, self.solution.b):
            df = pd.DataFrame(b, index=pd.Index(t.levels, name=t.group), columns=t.names)
            out[t.group] = pd.concat([out[t.group], df], axis=1) if t.group in out else df
        return out

    def coef(self) -> dict[str, pd.DataFrame]:
        """lme4's ``coef()``: per grouping factor, each level's coefficients, ``β̂`` plus the
        level's ``b̂`` in the columns its random effects share with the fixed part.

        Columns as lme4's: first the random effects of any grouping factor that have no fixed
        effect of the same name (as fixed effects of 0, e.g. the first level of ``(0 + f | g)``
        beside an intercept), then ``fixef``'s; rows in ``ranef``'s order. Names align as R's
        do: the fixed ``fb`` (treatment coding) is the random ``fb`` (full coding).
        """
        fe = self.fixef
        ranef = self.ranef()
        missing = list(dict.fromkeys(c for re in ranef.values() for c in re.columns if c not in fe.index))
        row = np.concatenate([np.zeros(len(missing)), fe.to_numpy()])
        out = {}
        for group, re in ranef.items():
            table = pd.DataFrame(np.tile(row, (len(re), 1)), index=re.index, columns=missing + list(fe.index))
            for c in dict.fromkeys(re.columns):  # a name in two terms of one group: lme4 adds both
                values = re[c].to_numpy()
                table[c] += values if values.ndim == 1 else values.sum(axis=1)
            out[group] = table
        return out

    def tidy(self, effects=("ran_pars", "fixed"), ddf: str = "satterthwaite", conf_int: bool = False,
             conf_level: float = 0.95, conf_method: str = "Wald") -> pd.DataFrame:
        """Every estimate in one long table, in broom.mixed's ``tidy()`` layout.

        Parameters
        ----------
        effects : str or sequence of {"fixed", "ran_pars", "ran_vals"}
            ``"fixed"``: β̂ with SE, t, df and p (``ddf``: ``"satterthwaite"`` or
            ``"kenward-roger"``); ``"ran_pars"``: per term the SDs and correlations
            (``sd__(Intercept)``, ``cor__(Intercept).Days``, in θ's order) and the residual SD
            (``sd__Observation``); ``"ran_vals"``: each level's BLUP with its conditional SD
            (lme4's ``condVar``) as ``std.error``.
        conf_int, conf_level, conf_method
            broom.mixed's ``conf.int = TRUE``: columns ``conf.low, conf.high``. ``"Wald"``
            (default): fixed effects ``estimate ± t_{df} SE`` with the rows' df (as broom.mixed
            on an lmerTest fit), none for the random parameters; ``"profile"``: every fixed and
            random parameter's profile interval (:meth:`confint`).

        Returns
        -------
        DataFrame
            Columns ``effect, group, level, term, estimate, std.error, statistic, df,
            p.value`` (``level`` only with ``"ran_vals"``; ``conf.low, conf.high`` with
            ``conf_int``), rows in broom.mixed's order: fixed effects, then random parameters,
            then random values.
        """
        from hierlmm.reterms import sd_corr

        effects = (effects,) if isinstance(effects, str) else tuple(effects)
        unknown = [e for e in effects if e not in ("fixed", "ran_pars", "ran_vals")]
        if unknown:
            raise HierlmmError(f"effects must be among 'fixed', 'ran_pars', 'ran_vals'; got {unknown}")
        rows = []
        if "fixed" in effects:
            table = self.coef_table(ddf)
            for name, r in table.iterrows():
                rows.append({"effect": "fixed", "group": None, "term": name, "estimate": r.estimate,
                             "std.error": r.se, "statistic": r.t, "df": r.df, "p.value": r.p})
        if "ran_pars" in effects:
            for t, D in zip(self.design.terms, self.covariance_matrices().values()):
                sd, corr = sd_corr(D.to_numpy())
                # broom.mixed's rows (every SD, every correlation a structure has, from D) and, for
                # an unstructured term, confint's names of the same parameters, in this order
                names = iter(t.sdcor_names()) if t.unstructured else None
                for a, b in t.tril_pairs:
                    if a != b and t.cov.diagonal:
                        continue
                    term = f"sd__{t.names[a]}" if a == b else f"cor__{t.names[b]}.{t.names[a]}"
                    rows.append({"effect": "ran_pars", "group": t.label, "term": term,
                                 "estimate": sd[a] if a == b else corr[a, b],
                                 "_ci": next(names) if names is not None else None})
            rows.append({"effect": "ran_pars", "group": "Residual", "term": "sd__Observation",
                         "estimate": self.sigma, "_ci": "sigma"})
        if "ran_vals" in effects:
            for group, post in self.ranef_posterior(beta="fixed").items():
                for term in post.mean.columns:
                    for level in post.mean.index:
                        rows.append({"effect": "ran_vals", "group": group, "level": str(level), "term": term,
                                     "estimate": post.mean.loc[level, term], "std.error": post.sd.loc[level, term]})
        columns = ["effect", "group", *(["level"] if "ran_vals" in effects else []), "term", "estimate",
                   "std.error", "statistic", "df", "p.value"]
        out = pd.DataFrame(rows, columns=columns + ["_ci"])
        if conf_int:
            method = str(conf_method).lower()
            if method == "wald":
                from scipy import stats

                fixed = (out.effect == "fixed").to_numpy()
                q = np.where(fixed, stats.t.ppf(0.5 + conf_level / 2, out["df"].astype(float)), np.nan)
                out["conf.low"] = out.estimate - q * out["std.error"].astype(float)
                out["conf.high"] = out.estimate + q * out["std.error"].astype(float)
            elif method == "profile":
                ci = self.confint(method="profile", level=conf_level, progressbar=False)
                key = out["_ci"].where(out.effect != "fixed", out.term)
                out["conf.low"] = [ci.loc[k, "lower"] if k in ci.index else np.nan for k in key]
                out["conf.high"] = [ci.loc[k, "upper"] if k in ci.index else np.nan for k in key]
            else:
                raise HierlmmError(f"conf_method must be 'Wald' or 'profile', got {conf_method!r}")
        return out.drop(columns="_ci")

    def drop1(self, test: str = "Chisq", ddf: str = "satterthwaite") -> pd.DataFrame:
        """Single-term deletions of every fixed term that can be dropped (one contained in no
        other term, R's ``drop.scope``).

        ``test="Chisq"`` (default): lme4's ``drop1(fit, test = "Chisq")``, the model without
        the term, by ML (a REML fit is refitted by ML first, as lme4's drop1 does): rows
        ``<none>`` and the terms; columns ``npar`` (the term's coefficients), ``aic``, ``lrt``
        (the ML deviance's increase) and ``p`` (printed as lme4's ``AIC``, ``LRT``, ``Pr(Chi)``). Each reduced model comes from the full
        model's cross-product A with the term's columns removed (no pass over the data), its θ
        optimised from the full model's. The full model nests each reduced one, so a reduced
        model that fits better shows the full ML fit to be a local optimum (lme4 then prints a
        negative LRT): the full model is refitted from that θ, a ``ConvergenceWarning`` says so
        and gives the θ, and ``<none>`` is the better optimum.

        ``test="F"``: lmerTest's ``drop1``, the F test that all the term's coefficients are 0 in
        the fitted model (no refits), with ``ddf`` Satterthwaite's or Kenward–Roger's df;
        columns as :meth:`anova`'s.
        """
        from scipy.stats import chi2

        from hierlmm.inference.contrasts import droppable_terms, fixed_terms
        from hierlmm.threads import one_blas_thread

        if str(test).lower() == "f":
            from hierlmm.inference.ftests import drop1_f

            return drop1_f(self, ddf=ddf)
        if str(test).lower() not in ("chisq", "chi", "lrt"):
            raise HierlmmError(f"test must be 'Chisq' (likelihood ratio) or 'F', got {test!r}")
        self.model.require("drop1()", instead="compare fits with hl.anova(small, big), or use drop1(test='F')")
        ml = self if self.method == "ML" else self.model.fit(method="ML")
        _, cols, _, _ = fixed_terms(self.design)
        scope = droppable_terms(self.design)
        k_full = self.design.p + self.design.n_theta + 1
        full_dev, full_theta = ml.deviance, ml.solution.theta
        with one_blas_thread():
            reduced = {t: self._drop_term(ml, cols[t], full_theta) for t in scope}
            # a model without a term fits better than the model with it: the full fit is a
            # local optimum (at the reduced θ̂ the full model is at least as good); the full
            # model is refitted from there, and every reduced one from the new optimum
            low = min((r.fun for r in reduced.values()), default=np.inf)
            if low < full_dev - 1e-6 * max(1.0, abs(full_dev)):
                t_low = min(reduced, key=lambda t: reduced[t].fun)
                refit = optimize_theta(ml.deviance_function, theta0=reduced[t_low].theta)
                if refit.fun < full_dev:
                    full_dev, full_theta = refit.fun, refit.theta
                    reduced = {t: min(r, self._drop_term(ml, cols[t], full_theta), key=lambda o: o.fun)
                               for t, r in reduced.items()}
                warn(
                    f"drop1: the model without {t_low} has a lower ML deviance ({low:.6g}) than the full "
                    f"model's ML fit ({ml.deviance:.6g}), which is therefore a local optimum; the full model "
                    f"refitted from that θ reaches {full_dev:.6g}, used as <none> here (fit it with "
                    f"theta0={np.array2string(full_theta, precision=6, separator=', ')}, method='ML')",
                    ConvergenceWarning)
        rows = {"<none>": (np.nan, full_dev + 2 * k_full, np.nan, np.nan)}
        for t in scope:
            df_t = len(cols[t])
            # ≥ 0 up to the optimiser's tolerance (the full model nests every reduced one)
            lrt = max(reduced[t].fun - full_dev, 0.0)
            rows[t] = (df_t, reduced[t].fun + 2 * (k_full - df_t), lrt, float(chi2.sf(lrt, df_t)))
        from hierlmm.inference.lrt import LRT_HEADERS
        from hierlmm.table import as_table

        return as_table(pd.DataFrame.from_dict(rows, orient="index", columns=["npar", "aic", "lrt", "p"]),
                        "Single term deletions (likelihood ratio, ML fits)", pvalues=["p"],
                        headers={**LRT_HEADERS, "p": "Pr(Chi)"})

    def _drop_term(self, ml, columns, theta):
        """The ML optimum without the fixed-effect ``columns`` (their coefficients set to 0 in
        A), from ``theta`` and from lme4's start, as a fit would (escaping a singular local
        minimum of a vector-valued term): the lower."""
        dev = ml.deviance_function
        for j in sorted(columns, reverse=True):
            dev = dev.with_offset(j, 0.0)
        best = min((optimize_theta(dev, theta0=start) for start in (theta, None)), key=lambda o: o.fun)
        return self.model._off_the_boundary(dev, best, 100_000, None)

    def update(self, formula: str | None = None, data: pd.DataFrame | None = None, method: str | None = None,
               **fit_kwargs) -> LMMResult:
        """lme4's ``update()``: the same model with a new formula (R's ``"."`` notation:
        ``". ~ . - Days"``, ``". ~ . + (0 + x | g)"``, ``"log(.) ~ ."``; see
        :func:`hierlmm.formula.update_formula`), new data, or the other method
        (``"REML"``/``"ML"``). What did not change is reused: with the same formula and data
        the model and its cross-product A are shared."""
        from hierlmm.formula import update_formula

        model = self.model
        if formula is not None or data is not None:
            model = model.updated(None if formula is None else update_formula(model.formula, formula), data)
        return model.fit(method=method or self.method, **fit_kwargs)

    def refit(self, y) -> LMMResult:
        """lme4's ``refit(newresp)``: the same model, method and design for a new response
        ``y`` (one value per observation used in the fit); of the cross-product A only the
        response's row is computed again."""
        self.model.require("refit()", needs="rows")
        self.model.require("refit()", instead="use update(data=...) with the new response in the data")
        y = per_row(y, self.nobs, "refit(y)", index=self.design.data.index, what="response value")
        return self.model.with_response(y).fit(method=self.method)

    def r2(self) -> dict[str, float]:
        """R² for mixed models (Nakagawa & Schielzeth 2013; random slopes per Johnson 2014), as
        ``performance::r2_nakagawa``:

        .. math::  R^2_m = \\frac{σ_f^2}{σ_f^2 + σ_r^2 + σ^2}, \\qquad
                   R^2_c = \\frac{σ_f^2 + σ_r^2}{σ_f^2 + σ_r^2 + σ^2}

        with ``σ_f²`` the variance of ``Xβ̂`` over the observations (``n − 1`` denominator),
        ``σ_r² = Σ_t mean_i z_it' D̂_t z_it`` (each term's variance averaged over the rows'
        covariates ``z_it``: a random intercept's variance, or for ``(x | g)`` the mean of
        ``D11 + 2 D12 x_i + D22 x_i²``) and ``σ²`` the residual variance.

        Returns
        -------
        dict
            ``{"marginal": R²_m, "conditional": R²_c}``
        """
        var_fixed, var_random, var_residual = self._variance_parts("r2()")
        total = var_fixed + var_random + var_residual
        return {"marginal": var_fixed / total, "conditional": (var_fixed + var_random) / total}

    def _variance_parts(self, what: str) -> tuple[float, float, float]:
        """Nakagawa & Schielzeth's ``(σ_f², σ_r², σ²)`` (:meth:`r2`), shared by :meth:`icc`."""
        self.model.require(what, needs="rows")
        self.model.require(what, instead="it needs independent residuals and a covariance D per term")
        d = self.design
        if d.weights is not None:
            raise HierlmmError(f"{what} is not defined for a model with prior weights: the residual variance σ²/w_i "
                               "differs by observation, and Nakagawa & Schielzeth's decomposition has one σ²")
        var_fixed = float(np.var(d.X @ self.solution.beta, ddof=1))
        Ds = self.covariance_matrices()
        var_random = sum(float(np.mean(np.einsum("ik,kl,il->i", t.Z, Ds[t.label].to_numpy(), t.Z)))
                         for t in d.terms)
        return var_fixed, var_random, self.sigma**2

    def glance(self) -> pd.DataFrame:
        """One row, broom.mixed's ``glance()``: ``nobs, sigma, logLik, AIC, BIC``, then −2 logLik
        as ``deviance`` (ML) or ``REMLcrit`` (REML, as broom.mixed names it), and
        ``df.residual`` (the observations less the parameters)."""
        crit = "REMLcrit" if self.method == "REML" else "deviance"
        return pd.DataFrame([{"nobs": self.nobs, "sigma": self.sigma, "logLik": self.loglik, "AIC": self.aic,
                              "BIC": self.bic, crit: self.deviance, "df.residual": self.nobs - self.df_model}])

    def hatvalues(self) -> pd.Series:
        """lme4's ``hatvalues``: the leverages ``h_i = ∂ŷ_i/∂y_i`` of the conditional fitted
        values given θ̂ (:mod:`hierlmm.influence`)."""
        from hierlmm.influence import hat_values

        self.model.require("hatvalues()", needs="rows")
        self.model.require("hatvalues()", instead="the hat matrix here is that of the hierarchical model with "
                           "independent residuals")
        return pd.Series(hat_values(self), index=self.design.data.index, name="hat")

    def augment(self) -> pd.DataFrame:
        """The data used with broom.mixed's ``augment()`` columns: ``.fitted`` (conditional),
        ``.resid``, ``.hat``, ``.cooksd`` (lme4's ``cooks.distance``), ``.fixed`` (marginal),
        ``.offset``, ``.weights``, ``.wtres`` (``√w (y − ŷ)``)."""
        from hierlmm.influence import cooks_distance

        d = self.design
        hat = self.hatvalues()
        w = np.ones(d.n) if d.weights is None else d.weights
        resid = self.residuals()
        out = d.data.copy()
        out[".fitted"] = self.fitted()
        out[".resid"] = resid
        out[".hat"] = hat
        out[".cooksd"] = cooks_distance(self, hat.to_numpy())
        out[".fixed"] = self.fitted("marginal")
        out[".offset"] = 0.0 if d.offset is None else d.offset
        out[".weights"] = w
        out[".wtres"] = np.sqrt(w) * resid.to_numpy()
        return out

    def ranef_posterior(self, beta: str = "fixed") -> dict[str, RanefPosterior]:
        """Gaussian posterior of each level's random effects given θ̂ and σ̂.

        Parameters
        ----------
        beta : {"fixed", "integrated"}
            ``"fixed"``: β held at β̂, ``N(b̂_i, D − D Z_i'V_i⁻¹Z_iD)`` (lme4's ``condVar``).
            ``"integrated"``: β integrated out under a flat prior, covariance
            ``D − D Z'PZ D`` (Henderson's prediction-error variance; ``D Z'PZ D`` alone is the
            sampling variance of the BLUP, not a posterior variance).

        Returns
        -------
        dict
            grouping factor -> :class:`~hierlmm.posterior_b.RanefPosterior`
        """
        self.model.require("the posterior of b", needs="b", instead="use a hierarchical fit")
        if beta not in ("fixed", "integrated"):
            raise HierlmmError(f"beta must be 'fixed' or 'integrated', got {beta!r}")
        return self.deviance_function.ranef_posterior(self, beta=beta)

    # ------------------------------------------------------------ fitted and residuals
    def _zb(self, terms_b, codes_list, Z_list) -> np.ndarray:
        out = 0.0
        for b, codes, Z in zip(terms_b, codes_list, Z_list):
            out = out + np.einsum("ik,ik->i", Z, b[codes])
        return out

    def fitted(self, kind: str = "conditional") -> pd.Series:
        """Fitted values: ``Xβ̂ + Zb̂`` (conditional) or ``Xβ̂`` (marginal), plus the offset if
        the model has one (as lme4), in data order."""
        kind = valid_kind(kind)
        if not self.design.rows:  # a Dask DataFrame: a lazy Series, partition by partition
            return self.design.source.per_row(self, "fitted", kind)
        mu = self.design.X @ self.solution.beta
        if self.design.offset is not None:
            mu = mu + self.design.offset
        if kind == "conditional":
            self.model.require("the conditional fitted value", needs="b", instead="use kind='marginal'")
            ts = self.design.terms
            mu = mu + self._zb(self.solution.b, [t.codes for t in ts], [t.Z for t in ts])
        return pd.Series(mu, index=self.design.data.index, name="fitted")

    def residuals(self, kind: str = "conditional", scaled: bool = False) -> pd.Series:
        """Response minus fitted values; ``scaled=True`` gives lme4's scaled Pearson residuals,
        ``√w_i (y_i − ŷ_i) / σ̂`` (``w_i`` the prior weights, 1 without). On a Dask DataFrame,
        fitted values and residuals are lazy Dask Series, computed partition by partition."""
        if not self.design.rows:
            return self.design.source.per_row(self, "residuals", valid_kind(kind), scaled)
        r = self.design.y - self.fitted(kind).to_numpy()
        if scaled:
            r = r / self.sigma
            if self.design.weights is not None:
                r = r * np.sqrt(self.design.weights)
        return pd.Series(r, index=self.design.data.index, name="residuals")

    def predict(self, newdata: pd.DataFrame | None = None, kind: str = "conditional",
                allow_new_levels: bool = False, **others) -> pd.Series:
        """Predictions for new data.

        Parameters
        ----------
        newdata : DataFrame, optional
            Needs the fixed-effects covariates and, for ``kind="conditional"``, the grouping
            columns and random-effect covariates. Defaults to the fitted data.
        kind : {"conditional", "marginal"}
        allow_new_levels : bool
            ``False`` (default, as lme4's): a level of a grouping factor not seen in the fit is
            an error naming it. ``True``: such a level gets ``b = 0`` for that term, i.e. the
            population prediction (lme4's ``allow.new.levels = TRUE``).

        Notes
        -----
        A model's offset (``offset()`` terms, ``offset=`` as a column name) is evaluated on
        ``newdata`` and added, as lme4's ``predict``.
        """
        other_names("predict()", others)
        from hierlmm.newdata import predict_frame

        kind = valid_kind(kind)
        if newdata is None:
            return self.fitted(kind)
        conditional = kind == "conditional"
        if conditional:
            self.model.require("the conditional prediction", needs="b", instead="use kind='marginal'")
        return predict_frame(self.design, self.solution.beta, self.solution.b, newdata, conditional,
                             allow_new_levels)

    def marginal_cov(self, level, group: str | None = None) -> pd.DataFrame:
        """The implied ``V_i = Z_i D Z_i' + σ² R_i`` for the rows of one level (see
        :func:`hierlmm.implied.marginal_cov`), labelled by those rows."""
        from hierlmm.implied import marginal_cov

        self.model.require("marginal_cov()", needs="rows")
        return marginal_cov(self, level, group)

    def marginal_corr(self, level, group: str | None = None) -> pd.DataFrame:
        """The correlation matrix of :meth:`marginal_cov`."""
        from hierlmm.implied import marginal_corr

        self.model.require("marginal_corr()", needs="rows")
        return marginal_corr(self, level, group)

    def icc(self, kind: str | None = None) -> pd.Series:
        """Intra-class correlation.

        ``kind="term"`` (the default for a model of random intercepts only): per term
        ``(1 | g)``, ``τ_g² / (Σ_h τ_h² + σ²)``, the sum over all random-intercept terms: the
        correlation of two observations that share level ``g`` only. A term with random slopes
        has no such ICC (the covariance of two observations of one level, ``z_i' D z_j``,
        depends on their covariates); it is left out with a warning naming it.

        ``kind="adjusted"`` (the default when a term has random slopes) and
        ``"conditional"``: performance's ``icc()``, ``σ_r² / (σ_r² + σ²)`` and
        ``σ_r² / (σ_f² + σ_r² + σ²)`` with Nakagawa's variances (:meth:`r2`: ``σ_r²``
        averages each term's ``z_i' D z_i`` over the rows), one number for the model:
        sleepstudy's ``(Days | Subject)`` 0.7217 and 0.5206, as performance. (performance
        leaves out a slope in a term of its own, ``(0 + Days | Subject)``; hierlmm counts it.)
        """
        from hierlmm.errors import HierlmmWarning

        slopes = [t.describe() for t in self.design.terms if t.names != ["(Intercept)"]]
        kind = ("adjusted" if slopes else "term") if kind is None else kind
        if kind in ("adjusted", "conditional"):
            var_fixed, var_random, var_residual = self._variance_parts("icc()")
            den = var_random + var_residual + (var_fixed if kind == "conditional" else 0.0)
            return pd.Series({kind: var_random / den}, name="icc")
        if kind != "term":
            raise HierlmmError(f"kind must be 'term', 'adjusted' or 'conditional', got {kind!r}")
        why = ("the correlation of two observations in one level, z_i'Dz_j / sqrt(...), depends on "
               "their covariates")
        if len(slopes) == len(self.design.terms):
            raise HierlmmError(
                f"the intraclass correlation of a term is not defined for {', '.join(slopes)}: {why}; "
                "icc(kind='adjusted') gives performance's ICC of the model, fit.marginal_corr(level) the "
                "implied correlations of one level's rows"
            )
        if slopes:
            warn(f"icc(): {', '.join(slopes)} left out ({why})", HierlmmWarning)
        vc = self.varcorr
        inter = vc[(vc.var1 == "(Intercept)") & vc.var2.isna()]
        only_intercept = {t.label for t in self.design.terms if t.names == ["(Intercept)"]}
        inter = inter[inter.grp.isin(only_intercept)]
        total = inter.vcov.sum() + self.solution.sigma2
        return pd.Series(inter.vcov.to_numpy() / total, index=inter.grp.to_numpy(), name="icc")

    # ---------------------------------------------------------------------- inference
    def coef_table(self, ddf: str = "satterthwaite") -> pd.DataFrame:
        """t tests of the fixed effects: ``estimate, se, df, t, p``.

        ``ddf="satterthwaite"`` (lmerTest's default), ``"kenward-roger"`` (pbkrtest's adjusted
        SE and df) or ``"asymptotic"`` (``z`` and a normal p-value).
        """
        from hierlmm.inference.ftests import coef_table

        return coef_table(self, ddf=ddf)

    def anova(self, type: int = 3, ddf: str = "satterthwaite") -> pd.DataFrame:  # noqa: A002
        """F tests of the fixed-effects terms (lmerTest's ``anova``): Type III, II or I.

        Columns ``sum_sq, mean_sq, num_df, den_df, F, p``, one row per term (``age``,
        ``Sex``, ``age:Sex``).
        """
        from hierlmm.inference.ftests import anova_table

        self.model.require("anova()", needs="rows", instead="its contrasts and F tests need X; the t tests of "
                           "coef_table() work, and drop1() compares ML fits from the cross-product")
        return anova_table(self, type=type, ddf=ddf)

    def emmeans(self, specs, by=None, at: dict | None = None, ddf: str = "kenward-roger", level: float = 0.95,
                pairwise: bool = False, adjust: str | None = None, contrast: str | None = None) -> pd.DataFrame:
        """Estimated marginal means of the factor(s) ``specs`` within each level of ``by``
        (R's ``emmeans(fit, specs, by = by)``), or with ``pairwise=True`` their pairwise
        differences (``pairs()``, Tukey-adjusted by default), or with ``contrast=`` emmeans'
        ``contrast(emm, method)``: ``"trt.vs.ctrl"``, ``"consec"``, ``"eff"``, ``"poly"``,
        each with emmeans' default adjustment unless ``adjust`` is given (``"tukey"``,
        ``"dunnettx"``, ``"mvt"``, ``"scheffe"``, ``"sidak"``, ``"bonferroni"``, ``"holm"``,
        ``"fdr"``, ``"none"``). Covariates at their
        means unless ``at`` gives values; ``ddf`` ``"kenward-roger"`` (emmeans' default:
        adjusted SEs and df), ``"satterthwaite"`` or ``"asymptotic"``. See
        :mod:`hierlmm.inference.emmeans`."""
        from hierlmm.inference.emmeans import emmeans

        self.model.require("emmeans()", needs="rows")
        return emmeans(self, specs, by=by, at=at, ddf=ddf, level=level, pairwise=pairwise, adjust=adjust,
                       contrast=contrast)

    def emtrends(self, specs, var: str, by=None, at: dict | None = None, ddf: str = "kenward-roger",
                 level: float = 0.95) -> pd.DataFrame:
        """The slope of the estimated marginal means in covariate ``var`` per level of the
        factor(s) ``specs`` (R's ``emtrends(fit, specs, var = "age")``): columns ``VAR.trend,
        SE, df, lower.CL, upper.CL``. See :func:`hierlmm.inference.emmeans.emtrends`."""
        from hierlmm.inference.emmeans import emtrends

        self.model.require("emtrends()", needs="rows")
        return emtrends(self, specs, var, by=by, at=at, ddf=ddf, level=level)

    def joint_tests(self, by=None, ddf: str = "kenward-roger") -> pd.DataFrame:
        """emmeans' ``joint_tests(fit, by = by)``: an F test of every model term among the
        reference grid's factors (covariates at their mean ± 1), columns ``model term, df1, df2,
        F.ratio, p.value``. See :func:`hierlmm.inference.emmeans.joint_tests`."""
        from hierlmm.inference.emmeans import joint_tests

        self.model.require("joint_tests()", needs="rows")
        return joint_tests(self, by=by, ddf=ddf)

    def ranova(self) -> pd.DataFrame:
        """Likelihood-ratio tests that reduce each random term in turn (lmerTest's ``ranova``)."""
        from hierlmm.inference.lrt import ranova

        self.model.require("ranova()", needs="rows", instead="fit the reduced models with hl.LMM on the same Dask "
                           "DataFrame and compare them with hl.anova(small, big)")
        return ranova(self)

    def confint(self, method: str = "profile", level: float = 0.95, **kwargs) -> pd.DataFrame:
        """Confidence intervals in lme4's order and names (``sd_(Intercept)|Subject``, ...,
        ``sigma``, then the fixed effects). ``method``: ``"wald"``, ``"profile"`` or
        ``"bootstrap"`` (``n_boot``, ``random_seed``, ``progressbar``, ``n_jobs``)."""
        from hierlmm.inference.confint import confint

        return confint(self, method=method, level=level, **kwargs)

    def bootstrap(self, n_boot: int = 200, statistic=None, random_seed=None, progressbar=None,
                  n_jobs: int = 1) -> pd.DataFrame:
        """Parametric bootstrap replicates of ``statistic(fit)`` (default: the parameters of
        :meth:`confint`), as lme4's ``bootMer``: a DataFrame, one row per replicate, with the
        fit's own value in ``.attrs["t0"]``. See :func:`hierlmm.inference.confint.bootstrap`."""
        from hierlmm.inference.confint import bootstrap

        n_boot, random_seed = count(n_boot, "n_boot"), seed(random_seed)
        n_jobs = count(n_jobs, "n_jobs")
        from hierlmm.threads import one_blas_thread

        with one_blas_thread():
            return bootstrap(self, n_boot, statistic=statistic, random_seed=random_seed, progressbar=progressbar,
                             n_jobs=n_jobs)

    def simulate(self, n: int = 1, random_seed=None) -> pd.DataFrame:
        """``n`` draws of the response from the fitted model, as lme4's ``simulate()``: one
        column per draw (``sim_1``, ``sim_2``, ...), one row per observation used in the fit
        (indexed as in the data). The engine's array, shape ``(n, nobs)``, is
        :func:`hierlmm.inference.simulate.simulate`."""
        from hierlmm.inference.simulate import simulate

        n, random_seed = count(n, "simulate(n)"), seed(random_seed)
        self.model.require("simulate()", needs="rows")
        draws = simulate(self, n=n, random_seed=random_seed)
        return pd.DataFrame(draws.T, index=self.design.data.index, columns=[f"sim_{i + 1}" for i in range(n)])

    # ---------------------------------------------------------------------- printing
    def summary(self, ddf: str = "satterthwaite"):
        """lme4-style summary; prints as text, renders as HTML in a notebook. ``ddf``: the t
        tests' df, ``"satterthwaite"`` (lmerTest's default) or ``"kenward-roger"``."""
        from hierlmm.summary import Summary

        return Summary(self, ddf=ddf)

    def __repr__(self) -> str:
        return str(self.summary())

    def _repr_html_(self) -> str:
        return self.summary()._repr_html_()


def theta_names(terms) -> list[str]:
    """lme4's names of θ's entries: ``Subject.(Intercept)``, ``Subject.Days.(Intercept)``, ..."""
    return [n for t in terms for n in t.theta_names()]
