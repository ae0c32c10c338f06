"""The user's entry point: ``LMM(formula, data).fit()`` runs the pipeline.

========================  =====================================  ======================
stage                     hierlmm                                lme4
========================  =====================================  ======================
formula -> design         :func:`hierlmm.design.build_design`    ``lFormula``
design -> deviance        :func:`hierlmm.deviance.make_deviance` ``mkLmerDevfun``
deviance -> optimum       :func:`hierlmm.optimize.optimize_theta` ``optimizeLmer``
optimum -> result         :class:`hierlmm.results.LMMResult`     ``mkMerMod``
========================  =====================================  ======================

Each stage is a plain function a user may call and stop after.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from hierlmm.deviance import Deviance
from hierlmm.design import Design, build_design, design_attribute, overlapping_terms
from hierlmm.errors import HierlmmError, SingularFitWarning, warn
from hierlmm.optimize import optimize_theta, theta_scale, warn_messages
from hierlmm.results import LMMResult
from hierlmm.validate import count, other_names, positive_number, seed

__all__ = ["LMM"]


class LMM:
    """A linear mixed model in hierarchical form.

    ``y | b ~ N(Xβ + Zb, σ²I)``, ``b ~ N(0, D)``, with ``D`` block diagonal: one
    unstructured block per random-effects term, repeated over its levels.

    Parameters
    ----------
    formula : str
        lme4 syntax, e.g. ``"Reaction ~ Days + (Days | Subject)"``.
    data : pandas.DataFrame
        Rows with a missing value in any variable of the formula are dropped (the count is
        reported as ``n_missing``).
    residual : hierlmm.AR1, hierlmm.Exponential, hierlmm.GaussianCorr, hierlmm.CompoundSymmetry or hierlmm.Unstructured, optional
        A correlation of the residuals within the levels of the grouping factor (nlme's
        ``correlation=``, e.g. ``hl.AR1(order="Days")``): ``Var(ε_i) = σ² R_i``; the fit then
        works on the rows (:mod:`hierlmm.residual`). Default: independent residuals. With one,
        the formula may have no random-effects term (nlme's ``gls``; give its ``group=``):
        ``hl.LMM("y ~ arm * visit", d, residual=hl.Unstructured(time="visit", group="id"),
        variance=hl.VarIdent("visit"))`` is the MMRM of clinical trials.
    variance : hierlmm.VarIdent, optional
        A residual SD per level of a column (nlme's ``weights = varIdent(~ 1 | visit)``).
    formulation : {"hierarchical", "marginal"}
        ``"hierarchical"`` (default): ``b ~ N(0, D)`` with ``D`` positive semi-definite, as lme4.
        ``"marginal"``: only ``V = ZDZ' + σ²I`` must be positive definite, so ``D`` may be
        indefinite (a negative variance component, as ANOVA estimators give); no ``b`` stands
        behind it, and what needs ``b`` is refused, naming this.
    weights : str or array_like, optional
        Prior weights (lme4's ``weights=``), a column name or one positive number per row:
        ``Var(ε_i) = σ²/w_i`` (e.g. inverse known sampling variances, or the number of
        observations an averaged response stands for).
    offset : str or array_like, optional
        A known term of the linear predictor, a column name or one number per row, added to
        the formula's ``offset(expr)`` terms (e.g. ``offset(log(exposure))``).
    progress : bool, optional
        For a Dask DataFrame ``data``: a progress bar over its partitions (default: when
        interactive). The data are read once or twice, never held in memory: the fit and the
        collapsed sampler work on the reduced cross-product (:mod:`hierlmm.partitioned`).

    Examples
    --------
    >>> import hierlmm as hl
    >>> df = hl.datasets.load("sleepstudy")
    >>> fit = hl.LMM("Reaction ~ Days + (Days | Subject)", df).fit()
    >>> round(fit.sigma, 3)
    25.592
    """

    def __init__(self, formula: str, data: pd.DataFrame, residual=None, formulation: str = "hierarchical",
                 weights=None, offset=None, progress: bool | None = None, variance=None):
        from hierlmm.residual import ResidualCorrelation, VarIdent

        if formulation not in ("hierarchical", "marginal"):
            raise HierlmmError(f"formulation must be 'hierarchical' or 'marginal', got {formulation!r}")
        if residual is not None and not isinstance(residual, ResidualCorrelation):
            raise HierlmmError(
                "residual must be a correlation structure such as hl.AR1(), hl.Exponential(time='t'), "
                f"hl.GaussianCorr(time='t') or hl.CompoundSymmetry(); got {residual!r}"
            )
        if variance is not None and not isinstance(variance, VarIdent):
            raise HierlmmError(f"variance must be a variance function such as hl.VarIdent('visit'); got {variance!r}")
        from hierlmm.partitioned import build_partitioned_design, is_dask

        self.formula = formula
        self.data = data
        if is_dask(data):
            if variance is not None:
                raise HierlmmError("variance= needs the rows in memory (a pandas DataFrame); the Dask path fits "
                                   "the hierarchical model with independent equal-variance residuals")
            self.design: Design = build_partitioned_design(formula, data, residual=residual, formulation=formulation,
                                                           weights=weights, offset=offset, progress=progress)
        else:
            self.design = build_design(formula, data, residual=residual, formulation=formulation, weights=weights,
                                       offset=offset, variance=variance)
        if formulation == "marginal":
            self.require("formulation='marginal'", needs="unstructured",
                         instead="its parameters are the entries of an unstructured D; use the default hierarchical "
                         "formulation for a structured term")
        self._deviance: dict[bool, Deviance] = {}
        self._compiled: dict = {}  # samplers compiled by sample(), by (sampler, prior)
        self._overlaps: list[str] | None = None  # _overlapping_terms()

    @classmethod
    def from_parquet(cls, formula: str, path, progress: bool | None = None, **kwargs) -> LMM:
        """A model on Parquet data that need not fit in memory: ``path`` (a file, a directory or a
        glob, local or any fsspec URL) is read by ``dask.dataframe.read_parquet`` (further keyword
        arguments that :class:`LMM` does not take go there), only the formula's columns. Needs the
        ``dask`` extra. With a ``dask.distributed`` Client open the work runs on its cluster."""
        try:
            import dask.dataframe as dd
        except ImportError:
            raise HierlmmError("from_parquet() needs Dask: pip install 'hierlmm[dask]'") from None
        own = {k: kwargs.pop(k) for k in ("residual", "formulation", "weights", "offset") if k in kwargs}
        from hierlmm.partitioned import check_parquet_files

        check_parquet_files(formula, path, own.get("weights"), own.get("offset"))
        try:
            ddf = dd.read_parquet(path, **kwargs)
        except (OSError, ValueError) as exc:
            raise HierlmmError(f"cannot read {path} as Parquet: {str(exc).splitlines()[0]}") from None
        return cls(formula, ddf, progress=progress, **own)

    levels = None  # the level-wise statement (LevelSpec) of a model built by from_levels()

    @classmethod
    def from_levels(cls, level1: str, level2: dict, group, data: pd.DataFrame, level3: dict | None = None,
                    **kwargs) -> LMM:
        """A model stated level by level, as textbooks write two- and three-level models.

        ``level1`` is the level-1 regression (``"MathAch ~ 1 + SES"``); ``level2`` maps each
        level-1 coefficient that varies by ``group`` to its level-2 regression
        (``{"(Intercept)": "~ 1 + Sector", "SES": "~ 1 + Sector"}``); unlisted coefficients are
        fixed. The model is exactly the combined one (here ``MathAch ~ SES * Sector +
        (SES | School)``), which ``model.formula`` shows and ``describe()`` prints beside the
        level equations. ``group=["school", "class"]`` with ``level3`` gives three levels.
        Other keyword arguments go to :class:`LMM`. See :mod:`hierlmm.levels`.
        """
        from hierlmm.levels import check_constant_within, combined_formula

        spec = combined_formula(level1, level2, group, level3)
        model = cls(spec.formula, data, **kwargs)
        check_constant_within(spec, model.design.data)
        model.levels = spec
        return model

    weights = design_attribute("weights_argument")  # weights= as given (a column name or an array)
    offset = design_attribute("offset_argument")  # offset= as given
    residual = design_attribute("residual")
    variance = design_attribute("variance")
    formulation = design_attribute("formulation")

    @property
    def grouped(self) -> bool:
        """Fitted by the per-group engine (correlated or heteroscedastic residuals, no random
        term, or the marginal formulation)."""
        return (self.residual is not None or self.variance is not None or self.formulation == "marginal"
                or not self.design.terms)

    def require(self, what: str, needs: str = "iid", instead: str = "") -> None:
        """Refuse ``what`` on a model it does not implement, naming the model feature at fault.

        The one mechanism by which every part of hierlmm declines a model it cannot honour.

        Parameters
        ----------
        what : str
            The method, as the user called it (``"Kenward-Roger"``, ``"simulate()"``).
        needs : {"iid", "b", "rows", "unstructured"}
            ``"iid"``: the hierarchical model with independent residuals (the blocked
            cross-product engine: profiles, bootstrap, Kenward–Roger, simulate, ranova, the
            Bayesian side); ``"b"``: random effects ``b`` exist (not the marginal formulation);
            ``"rows"``: the data's rows in memory (not a Dask DataFrame); ``"unstructured"``:
            every random term lme4's unstructured ``(x | g)`` (:mod:`hierlmm.covariance`).
        instead : str
            What the user can do instead.

        Raises
        ------
        HierlmmError
        """
        why = None
        if needs == "unstructured":
            other = [t for t in self.design.terms if not t.unstructured]
            if other:
                why = ("it is implemented for lme4's unstructured terms, and this model has "
                       + ", ".join(f"{t.describe()} ({t.cov.title})" for t in other))
        elif needs == "rows":
            if not self.design.rows:
                why = ("it needs every row in memory, and this model's rows are in a Dask DataFrame (it is fitted "
                       "from the reduced cross-product)")
                instead = instead or ("for it, fit the model to rows in memory (a pandas DataFrame, e.g. "
                                      "ddf.sample(frac=0.01).compute())")
        elif self.formulation == "marginal":
            why = ("the model is in the marginal formulation (formulation='marginal'): it estimates "
                   "V = ZDZ' + σ²I with D possibly indefinite, so no random effect b stands behind it")
        elif needs == "iid" and self.residual is not None:
            why = f"the model has correlated residuals (residual={self.residual!r})"
        elif needs == "iid" and self.variance is not None:
            why = f"the model has residual variances per level (variance={self.variance!r})"
        elif needs == "iid" and not self.design.terms:
            why = "the model has no random effects (nlme's gls)"
        if why is not None:
            raise HierlmmError(f"{what} is not available: {why}" + (f"; {instead}" if instead else ""))

    def deviance_function(self, reml: bool = True) -> Deviance:
        """The profiled deviance of θ (REML criterion or ML deviance), cached."""
        if reml not in self._deviance:
            other = self._deviance.get(not reml)
            self._deviance[reml] = Deviance(self.design, reml=reml, cp=other.cp if other else None)
        return self._deviance[reml]

    def fit(self, method: str = "REML", theta0=None, check_convergence: bool | None = None,
            maxeval: int = 100_000, **others) -> LMMResult:
        """Fit by REML (default) or ML.

        Parameters
        ----------
        method : {"REML", "ML"}
        theta0 : array_like, optional
            Starting θ (lme4's identity factors by default).
        check_convergence : bool, optional
            Run lme4's gradient/Hessian checks; default when n < 10000.

        Returns
        -------
        LMMResult

        Warns
        -----
        SingularFitWarning
            When the estimate is on the boundary (a variance 0 or a correlation ±1).
        ConvergenceWarning
            When the convergence checks fail; the result is still returned.
        """
        other_names("fit()", others)
        from hierlmm.bayes.kernel import compile_in_background

        compile_in_background()  # once per session, only where sample()'s kernel is not yet compiled
        method = str(method).upper()
        if method not in ("REML", "ML"):
            raise HierlmmError(f"method must be 'REML' or 'ML', got {method!r}")
        maxeval = count(maxeval, "maxeval")
        from hierlmm.threads import one_blas_thread

        if self.grouped:
            with one_blas_thread():  # its start (the iid fit) too
                fit = self._fit_grouped(method, theta0, maxeval, check_convergence)
        else:
            with one_blas_thread():  # A's products too (X'X of a tall X)
                dev = self.deviance_function(reml=method == "REML")
                opt = optimize_theta(dev, theta0=theta0, maxeval=maxeval, check=check_convergence)
                opt = self._off_the_boundary(dev, opt, maxeval, check_convergence)
                if not opt.converged:
                    # a failed check (an indefinite Hessian, a gradient not small) is often a stop
                    # short of the optimum in a flat valley: one restart from there, kept if better
                    # (a 4 x 4 singular (0 + f | g) on Dask data stopped 0.0023 above lme4's optimum)
                    again = optimize_theta(dev, theta0=opt.theta, maxeval=maxeval, check=check_convergence)
                    if again.fun < opt.fun:
                        again.evaluations += opt.evaluations
                        opt = self._off_the_boundary(dev, again, maxeval, check_convergence)
                fit = LMMResult(self, dev, opt)
        opt = fit.opt
        caveats = fit.deviance_function.collinear_terms() + self._overlapping_terms()
        if caveats:  # digits (or a split) the data cannot carry: never converged=True beside them
            opt.messages.extend(caveats)
            opt.converged = False
        if fit.singular:
            warn(
                "boundary (singular) fit: a variance is estimated as 0 or a correlation as ±1 "
                f"(theta = {fit.solution.theta.round(5).tolist()})",
                SingularFitWarning,
            )
            warn_messages(caveats)  # the fit's own doubts, beside the boundary
        elif opt.messages:
            warn_messages(opt.messages)
        return fit

    def _off_the_boundary(self, dev, opt, maxeval, check):
        """A singular optimum may be a local minimum: restart and keep the lowest deviance.

        * A vector-valued term at the boundary: from :meth:`ReTerm.boundary_escapes`.
        * Any term at the boundary: the optimum with each other term's factor set to 0 as
          well (a differential model, seed 7's m0046, ``(1 | g) + (1 | h)`` on 17 rows: ML
          deviance 229.8124 at θ = (0, 0.999), 229.7960 at θ = (0, 0), lme4's).
        * A vector-valued term at the boundary, with the gradient: the search again from
          lme4's start inside lme4's box (``free_signs=False``), another path into other
          basins (a differential model, m0115 of the default draw without ``z``,
          ``(0 + f | g) + (0 + x:e | g)`` on few rows: 38.362 by the first path, 37.448 by this
          one, lme4 38.03).
        """
        slices = self.design.theta_slices()
        terms = self.design.terms
        scale = theta_scale(dev)  # escapes and tests in the optimiser's unit-free φ
        phi = opt.theta * scale
        per_term = [[e / scale[s] for e in t.boundary_escapes(phi[s])] for t, s in zip(terms, slices)]
        starts = [np.concatenate([esc[i] if esc else opt.theta[s] for esc, s in zip(per_term, slices)])
                  for i in range(2) if any(per_term)]
        at_zero = [bool(np.any(np.abs(t.template(phi[s]).diagonal()) < 1e-4)) for t, s in zip(terms, slices)]
        if any(at_zero):
            for j, s in enumerate(slices):
                if not at_zero[j]:
                    start = opt.theta.copy()
                    start[s] = 0.0
                    starts.append(start)
        best, total = opt, opt.evaluations
        runs = [dict(theta0=start, initial_step=0.1) for start in starts]
        if any(per_term) and getattr(dev, "has_gradient", False):
            runs.append(dict(free_signs=False))
        for run in runs:
            other = optimize_theta(dev, maxeval=maxeval, check=check, **run)
            total += other.evaluations
            if other.fun < best.fun:
                best = other
        best.evaluations = total
        return self._onto_the_boundary(dev, best, scale)

    @staticmethod
    def _onto_the_boundary(dev, opt, scale, near: float = 1e-3):
        """BOBYQA's trust region stops short of a bound the optimum sits on (a differential model:
        φ = 1.4e-4 where lme4 reached 0, criterion 7e-8 higher): the bounded entries within
        ``near`` of their bound (in φ) put on it, kept where the deviance is no higher."""
        lower = np.asarray(dev.lower, dtype=float)
        bounded = np.isfinite(lower)
        close = bounded & ((opt.theta - lower) * scale < near) & (opt.theta > lower)
        if not close.any():
            return opt
        theta = np.where(close, lower, opt.theta)
        value = float(dev(theta))
        if value <= opt.fun:
            opt.theta, opt.fun = theta, value
        return opt

    def _fit_grouped(self, method, theta0, maxeval, check):
        from hierlmm.grouped import GroupedDeviance

        dev = GroupedDeviance(self.design, reml=method == "REML")
        if theta0 is None:
            start = np.zeros(0)
            if self.design.terms:
                # start from the iid hierarchical fit (fast) and no residual correlation
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    start = optimize_theta(self.deviance_function(reml=method == "REML"), check=False).theta
                if dev.marginal:
                    start = np.concatenate([t.theta_from_template(t.relcov(start[s]))
                                            for t, s in zip(self.design.terms, self.design.theta_slices())])
            theta0 = np.concatenate([start, dev.theta0[dev.n_theta:]])
        # parameters without bounds (marginal S, correlation parameters) get a definite first step
        opt = optimize_theta(dev, theta0=theta0, maxeval=maxeval, check=check, initial_step=0.1)
        if dev.residual is not None:
            # the likelihood is flat where the residual correlation vanishes; start there too
            # and keep the better optimum
            null = dev.null_start(theta0)
            if not np.array_equal(null, theta0):
                other = optimize_theta(dev, theta0=null, maxeval=maxeval, check=check, initial_step=0.1)
                if other.fun < opt.fun:
                    opt = other
        return LMMResult(self, dev, opt)

    def _overlapping_terms(self) -> list[str]:
        """:func:`hierlmm.design.overlapping_terms` of the design (rows in memory), found once."""
        if self._overlaps is None:
            self._overlaps = overlapping_terms(self.design.terms) if self.design.rows else []
        return self._overlaps

    def updated(self, formula: str | None = None, data=None) -> LMM:
        """The same model (residual structure, variance function, formulation, weights and
        offset) with another formula or data (:meth:`LMMResult.update`)."""
        return type(self)(self.formula if formula is None else formula, self.data if data is None else data,
                          residual=self.residual, formulation=self.formulation, weights=self.weights,
                          offset=self.offset, variance=self.variance)

    def with_response(self, y) -> LMM:
        """The same model and design for another response ``y`` (one value per row used; lme4's
        ``refit``): of the cross-product only the response's row is computed again, and no
        sampler compiled for the old response is carried over."""
        import copy

        model = copy.copy(self)
        model._compiled = {}
        model.design = self.design.with_response(y)  # (the same terms: their overlaps stand)
        model._deviance = {reml: dev.with_response(y) for reml, dev in self._deviance.items()}
        return model

    def __getstate__(self) -> dict:
        """Pickled without the compiled samplers (``_compiled``: numba callbacks and PyTensor
        functions, a cache that ``sample()`` rebuilds)."""
        state = dict(self.__dict__)
        state["_compiled"] = {}
        return state

    def describe(self) -> str:
        """The model in hierarchical form and the marginal form it implies (text)."""
        from hierlmm.describe import describe

        return describe(self)

    def _repr_markdown_(self) -> str:
        from hierlmm.describe import describe

        return describe(self, fmt="markdown")

    def _repr_latex_(self) -> str:
        from hierlmm.describe import describe

        return describe(self, fmt="latex")

    def posterior_grid(self, prior: str = "flat") -> pd.DataFrame:
        """The exact marginal posterior of each variance (median and 95% interval, densities for
        plotting) of a model with one scalar random term, by quadrature instead of MCMC; rows
        in ``fit.varcorr``'s order. See :func:`hierlmm.bayes.grid.posterior_grid`."""
        from hierlmm.bayes.grid import posterior_grid

        return posterior_grid(self, prior=prior)

    def sample(self, prior="flat", sampler: str = "collapsed", draws: int = 1000, tune: int = 1000,
               chains: int = 4, random_seed=None, progressbar: bool = True, max_draws: int | None = None,
               **nuts_kwargs):
        """Sample the posterior of (β, b, σ², D) with NUTS (nutpie); needs the ``bayes`` extra.

        Parameters
        ----------
        prior : {"flat", "flat_sd"} or hierlmm.bayes.WeaklyInformative
            ``"flat"``: p(β, σ², D) ∝ 1 (D over the PSD cone), under which the marginal
            posterior of (σ², D) is ∝ the REML likelihood; ``"flat_sd"``: flat on σ and the
            SDs, uniform correlations. Improper posteriors are refused
            (:func:`hierlmm.bayes.check_propriety`).
        sampler : {"collapsed", "hierarchical"}
            ``"collapsed"`` (default): NUTS over (σ², D) only, β and b drawn exactly given
            each draw (for a model beyond the compiled kernel's size, e.g. crossed factors
            of thousands of levels, an independence Metropolis–Hastings sampler at the
            posterior mode instead: one factorisation per draw, ``tune`` draws discarded;
            :mod:`hierlmm.bayes.independence`); ``"hierarchical"``: the model as stated,
            non-centred.
        draws, tune, chains, random_seed, progressbar
            As PyMC's (4 chains, as Stan and brms: with 2, R-hat and ESS were too optimistic to
            catch a hierarchical run on Penicillin whose median was 5 Monte Carlo SEs off);
            further keyword arguments go to ``nutpie.sample`` (``target_accept`` 0.9 by
            default: 0.8 left an occasional divergence with 6 groups under flat priors).
        max_draws : int, optional
            When the bulk or tail ESS of a variance parameter is below 400 or an R-hat above
            1.01 (and no transition diverged), the chains are run again with more draws, up
            to this many per chain (default ``4 * draws``), before R-hat, ESS and divergences
            are reported as ``ConvergenceWarning``.

        Returns
        -------
        hierlmm.bayes.posterior.Posterior
            ``.idata`` (ArviZ DataTree) and ``.summary()``.
        """
        other_names("sample()", nuts_kwargs, passed_on=True)
        draws, tune, chains = count(draws, "draws"), count(tune, "tune", minimum=0), count(chains, "chains")
        random_seed = seed(random_seed)
        if max_draws is not None:
            max_draws = count(max_draws, "max_draws", minimum=draws)
        why = ("the samplers draw the hierarchical model with independent residuals of one variance, whose "
               "likelihood with β and b integrated out is a function of A = [Z X y]'[Z X y]; residual correlations "
               "or variances would change A at every draw (the rows' whitening, from the rows); "
               if self.residual is not None or self.variance is not None else "")
        self.require("sample()", instead=why + "fit this one with .fit()")
        from hierlmm.bayes.sample import sample

        return sample(self, prior=prior, sampler=sampler, draws=draws, tune=tune, chains=chains,
                      random_seed=random_seed, progressbar=progressbar, max_draws=max_draws, **nuts_kwargs)

    def posterior_mode(self, prior="flat", beta_prior_sd: float | None = None, joint: bool = False,
                       coordinates: str | None = None):
        """Mode of the marginal posterior of (σ², D) (β integrated out), found numerically.

        ``beta_prior_sd=s`` integrates β ~ N(0, s²I) instead of a flat β: as s grows the mode
        tends to REML. ``joint=True`` gives the joint mode of (β, σ², D) under flat priors,
        which is the ML estimate. ``coordinates``: those of the density maximised,
        ``"variances"`` or ``"sds"`` (SDs and correlations); default, those that carry the
        prior, in which both ``"flat"`` and ``"flat_sd"`` have REML as their mode. Where the
        density has no maximum (``"flat_sd"`` in variances) the result says so
        (``.unbounded``). See :mod:`hierlmm.bayes.mode`.
        """
        self.require("posterior_mode()", needs="unstructured", instead="fit it with .fit()")
        self.require("posterior_mode()", instead="the Bayesian side implements the hierarchical model with "
                     "iid residuals only; fit this one with .fit()")
        if beta_prior_sd is not None:
            beta_prior_sd = positive_number(beta_prior_sd, "beta_prior_sd")
        from hierlmm.bayes.mode import posterior_mode

        return posterior_mode(self, prior=prior, beta_prior_sd=beta_prior_sd, joint=joint, coordinates=coordinates)

    def __repr__(self) -> str:
        d = self.design
        return (
            f"LMM({self.formula!r}; n={d.n}, p={d.p}, "
            + ", ".join(f"{t.label}: {t.m} levels x {t.k}" for t in d.terms)
            + ")"
        )
