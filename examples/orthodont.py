# %% [markdown]
# # Orthodont: growth curves of 27 children
#
# Distance from the pituitary to the pterygomaxillary fissure at ages 8–14 (nlme's
# `Orthodont`). Four random-effects structures compared by ML (AIC/BIC), then the REML fit
# of the chosen one with its Type III tests of `age * Sex`, estimated marginal means and
# pictures.

# %%
import hierlmm as hl
from hierlmm import plots

df = hl.datasets.load("Orthodont")
formulas = {
    "intercept": "distance ~ age * Sex + (1 | Subject)",
    "slope": "distance ~ age * Sex + (0 + age | Subject)",
    "uncorrelated": "distance ~ age * Sex + (1 | Subject) + (0 + age | Subject)",
    "correlated": "distance ~ age * Sex + (age | Subject)",
}
fits = {name: hl.LMM(f, df).fit(method="ML") for name, f in formulas.items()}
hl.anova(*fits.values(), names=list(fits))

# %% [markdown]
# ## The random-intercept model by REML

# %%
fit = hl.LMM(formulas["intercept"], df).fit()
fit

# %%
fit.anova(type=3, ddf="kenward-roger")

# %% [markdown]
# Estimated marginal means of each sex at ages 8 and 14 (emmeans' reference grid), and
# their difference at each age.

# %%
fit.emmeans("Sex", by="age", at={"age": [8, 14]})

# %%
fit.emmeans("Sex", by="age", at={"age": [8, 14]}, pairwise=True)

# %%
plots.effect(fit, "age", by="Sex")

# %%
plots.spaghetti(fit, "age")

# %%
plots.diagnostics(fit)
