# %% [markdown]
# # Covariance structures: random effects, residuals, and the unstructured MMRM
#
# Orthodont: the distance from the pituitary to the pterygomaxillary fissure of 27 children,
# measured at ages 8, 10, 12 and 14. Each child's four measurements $y_i$ have some covariance
# $V_i$ (4 x 4). The models below differ only in the structure they give $V_i$:
#
# | model | how | $V_i$ |
# | --- | --- | --- |
# | random intercept | `(1 \| Subject)` | $\tau^2 J + \sigma^2 I$: compound symmetry, $\rho \ge 0$ |
# | compound symmetry | `residual=hl.CompoundSymmetry(group="Subject")` | $\sigma^2[(1-\rho)I + \rho J]$, $\rho$ may be $< 0$ |
# | random intercept and slope | `(age \| Subject)` | $Z_iDZ_i' + \sigma^2I$ |
# | independent intercept and slope | `diag(age \| Subject)` | the same with $D$ diagonal |
# | AR(1) residuals | `residual=hl.AR1(group="Subject")` | $\sigma^2\phi^{\lvert j-k\rvert}$ |
# | unstructured (the MMRM) | `residual=hl.Unstructured(time="occ", group="Subject"), variance=hl.VarIdent("occ")` | any positive-definite $V$ |
#
# The last has no random effects at all (nlme's `gls`; SAS's `REPEATED / TYPE=UN`; R's `mmrm`).

# %%
import warnings

import pandas as pd

import hierlmm as hl

ortho = hl.datasets.load("Orthodont")
ortho["occ"] = pd.Categorical(ortho["age"].astype(int).astype(str), ["8", "10", "12", "14"])
fixed = "distance ~ age * Sex"
specs = {
    "random intercept": dict(formula=f"{fixed} + (1 | Subject)"),
    "compound symmetry (gls)": dict(formula=fixed, residual=hl.CompoundSymmetry(group="Subject")),
    "random intercept + slope": dict(formula=f"{fixed} + (age | Subject)"),
    "diag(age | Subject)": dict(formula=f"{fixed} + diag(age | Subject)"),
    "AR(1) residuals (gls)": dict(formula=fixed, residual=hl.AR1(group="Subject")),
    "unstructured (MMRM)": dict(formula=fixed, residual=hl.Unstructured(time="occ", group="Subject"),
                                variance=hl.VarIdent("occ")),
}
fits = {}
with warnings.catch_warnings():
    warnings.simplefilter("ignore", hl.SingularFitWarning)
    for name, spec in specs.items():
        fits[name] = hl.LMM(spec.pop("formula"), ortho, **spec).fit(method="ML")

# %% [markdown]
# ## One table: parameters, log-likelihood, AIC (ML fits, the same fixed part)

# %%
table = pd.DataFrame({name: {"covariance parameters": f.df_model - len(f.fixef), "logLik": f.loglik,
                             "AIC": f.aic, "BIC": f.bic} for name, f in fits.items()}).T
table.sort_values("AIC").round(2)

# %% [markdown]
# ## What implies what
#
# * The random intercept **implies** compound symmetry with $\rho = \tau^2/(\tau^2+\sigma^2) \ge 0$:
#   where the compound-symmetry fit has $\rho \ge 0$, the two are the same model, with the same
#   log-likelihood to the optimiser's precision.
# * Compound symmetry with $\rho < 0$ is a marginal model **no random intercept implies**.
# * Every structure here is a special case of the unstructured $V$ (10 parameters for 4 times),
#   which therefore has the highest likelihood; AIC asks whether the extra parameters pay.

# %%
ri, cs = fits["random intercept"], fits["compound symmetry (gls)"]
tau2 = ri.covariance_matrices()["Subject"].iloc[0, 0]
pd.DataFrame({"random intercept": {"rho implied": tau2 / (tau2 + ri.sigma**2), "logLik": ri.loglik},
              "compound symmetry": {"rho implied": cs.residual_params["rho"], "logLik": cs.loglik}}).round(6)

# %% [markdown]
# The implied $V_i$ of one child under three structures: the random intercept's has one
# covariance everywhere; the random slope's grows with age; the unstructured one is free.

# %%
pd.concat({name: fits[name].marginal_cov("M01", group="Subject").set_axis(["8", "10", "12", "14"], axis=0)
           .set_axis(["8", "10", "12", "14"], axis=1)
           for name in ["random intercept", "random intercept + slope", "unstructured (MMRM)"]}).round(2)

# %% [markdown]
# The same as correlations, and beside them compound symmetry and AR(1): one scale from −1 to 1.

# %%
from hierlmm import plots

plots.implied_correlation({name: fits[name] for name in ["random intercept", "random intercept + slope",
                                                         "AR(1) residuals (gls)", "unstructured (MMRM)"]},
                          "M01", group="Subject", labels="occ")

# %% [markdown]
# ## The MMRM as a trial statistician fits it
#
# REML, Kenward–Roger degrees of freedom, the means by time and group (`emmeans`), and the
# estimated unstructured covariance. A missing visit needs nothing special: the likelihood of
# each child uses the rows it has.

# %%
mmrm = hl.LMM("distance ~ occ * Sex", ortho, residual=hl.Unstructured(time="occ", group="Subject"),
              variance=hl.VarIdent("occ")).fit()
mmrm.coef_table("kenward-roger")

# %%
mmrm.emmeans("Sex", by="occ", ddf="kenward-roger")

# %%
pd.Series(mmrm.residual_params).round(3)

# %% [markdown]
# The same structures exist for random effects: `us`, `diag`, `cs`, `ar1`, `toep` (glmmTMB's
# names) and `homdiag`, `homcs` (nlme's `pdIdent`, `pdCompSymm`) wrap a term:
# `cs(0 + occ | Subject)` gives each child a random effect per age, with a common correlation.
# With one measurement per child and age those effects and the residual are not separable, so
# hierlmm (as lme4) refuses the model; with repeated measurements per age they are.

# %%
try:
    hl.LMM("distance ~ occ + cs(0 + occ | Subject)", ortho)
except hl.HierlmmError as exc:
    print(exc)
