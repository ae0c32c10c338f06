# %% [markdown]
# # Pastes: nested random effects and the variance decomposition
#
# Strength of paste from 10 batches, 3 casks per batch, 2 assays per cask (lme4's
# `Pastes`). `(1 | batch/cask)` is `(1 | batch) + (1 | cask:batch)`:
# $y_{ijk} = \mu + a_i + c_{ij} + \varepsilon_{ijk}$, and the total variance splits into batch,
# cask-within-batch and assay parts. The same model stated level by level is
# `LMM.from_levels`.

# %%
import hierlmm as hl
from hierlmm import plots

pastes = hl.datasets.load("Pastes")
model = hl.LMM.from_levels("strength ~ 1", {"(Intercept)": "~ 1"}, group=["batch", "cask"], data=pastes,
                           level3={"(Intercept)": "~ 1"})
print(model.describe())
fit = model.fit()
fit

# %% [markdown]
# ## How the variance divides

# %%
vc = fit.varcorr[["grp", "vcov"]].copy()
vc["share"] = vc.vcov / vc.vcov.sum()
vc

# %% [markdown]
# ## Is each level of nesting needed?
#
# Likelihood-ratio tests that drop one random term at a time (lmerTest's `ranova`), with the
# χ̄² mixture p-value for a variance on its boundary beside the naive χ² one.

# %%
fit.ranova()

# %% [markdown]
# ## The casks' random effects
#
# The BLUP of each of the 30 casks' effects $c_{ij}$ with its 95% interval.

# %%
plots.caterpillar(fit, group="cask:batch")
