# %% [markdown]
# # sleepstudy: random intercepts and slopes
#
# Reaction times of 18 subjects over 10 days of sleep deprivation (lme4's `sleepstudy`).
# Each subject gets their own intercept and slope; the BLUPs shrink each subject's own
# least-squares line toward the population line.

# %%
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import hierlmm as hl
from hierlmm import plots

out = Path("output") / "sleepstudy"  # figures go to ./output/sleepstudy/
out.mkdir(parents=True, exist_ok=True)
df = hl.datasets.load("sleepstudy")

# %% [markdown]
# ## The model, stated hierarchically, and its REML fit (as `lmer`)

# %%
model = hl.LMM("Reaction ~ Days + (Days | Subject)", df)
print(model.describe())
fit = model.fit()
print(fit.summary())

# %% [markdown]
# ## BLUPs, their posterior, and the shrinkage

# %%
print(fit.ranef()["Subject"].head())
post = fit.ranef_posterior(beta="integrated")["Subject"]
print(post.sd.head())
plots.shrinkage(fit).savefig(out / "shrinkage.png", dpi=90)
plots.caterpillar(fit, beta="integrated").savefig(out / "caterpillar.png", dpi=90)
plots.spaghetti(fit, "Days").savefig(out / "spaghetti.png", dpi=90)

# %% [markdown]
# ## Diagnostics, tests and intervals

# %%
plots.diagnostics(fit).savefig(out / "diagnostics.png", dpi=90)
print(fit.anova())
print(fit.ranova())
print(fit.confint(method="profile"))
print(hl.anova(hl.LMM("Reaction ~ Days + (1 | Subject)", df).fit(), fit))
