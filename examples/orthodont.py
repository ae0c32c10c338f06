# %% [markdown]
# # Orthodont: growth curves of 27 children
#
# Distance from the pituitary to the pterygomaxillary fissure at ages 8–14 (nlme's
# `Orthodont`). Four random-effects structures compared by ML (AIC/BIC), then the REML fit
# with its Type III tests of `age * Sex`.

# %%
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import hierlmm as hl
from hierlmm import plots

out = Path("output") / "orthodont"  # figures go to ./output/orthodont/
out.mkdir(parents=True, exist_ok=True)
df = hl.datasets.load("Orthodont")

# %% [markdown]
# ## Random intercept; random slope only; both uncorrelated; both correlated (all ML)

# %%
formulas = {
    "intercept": "distance ~ age * Sex + (1 | Subject)",
    "slope": "distance ~ age * Sex + (0 + age | Subject)",
    "uncorrelated": "distance ~ age * Sex + (1 | Subject) + (0 + age | Subject)",
    "correlated": "distance ~ age * Sex + (age | Subject)",
}
fits = {name: hl.LMM(f, df).fit(method="ML") for name, f in formulas.items()}
print(hl.anova(*fits.values(), names=list(fits)))

# %% [markdown]
# ## The random-intercept model by REML: Type III anova (Satterthwaite), effect plot

# %%
fit = hl.LMM(formulas["intercept"], df).fit()
print(fit.summary())
print(fit.anova(type=3))
print(fit.anova(type=3, ddf="kenward-roger"))
plots.effect(fit, "age", by="Sex").savefig(out / "effect.png", dpi=90)
plots.diagnostics(fit).savefig(out / "diagnostics.png", dpi=90)
plots.shrinkage(fit).savefig(out / "shrinkage.png", dpi=90)
