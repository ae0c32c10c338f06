# %% [markdown]
# # sleepstudy: random intercepts and slopes
#
# Reaction times of 18 subjects over 10 days of sleep deprivation (lme4's `sleepstudy`).
# Subject $j$ has its own line,
#
# $$\text{Reaction}_{ij} = (\beta_0 + b_{0j}) + (\beta_1 + b_{1j})\,\text{Days}_{ij} + \varepsilon_{ij},
#   \qquad (b_{0j}, b_{1j})' \sim N(0, D),\quad \varepsilon_{ij} \sim N(0, \sigma^2),$$
#
# and the BLUPs shrink each subject's own least-squares line toward the population line.

# %%
import hierlmm as hl
from hierlmm import plots

df = hl.datasets.load("sleepstudy")
model = hl.LMM("Reaction ~ Days + (Days | Subject)", df)
model

# %% [markdown]
# ## The REML fit, as `summary(lmer(...))` prints it

# %%
fit = model.fit()
fit

# %% [markdown]
# ## BLUPs and their posterior
#
# Given $\hat\theta$ and $\hat\sigma$, each subject's $b_j$ has a Gaussian posterior; with
# `beta="integrated"` the uncertainty of $\hat\beta$ is included (Henderson's
# prediction-error variance).

# %%
post = fit.ranef_posterior(beta="integrated")["Subject"]
post.mean.head().join(post.sd.head(), rsuffix=" sd")

# %%
plots.caterpillar(fit, beta="integrated")

# %% [markdown]
# Shrinkage: each subject's own least-squares line (start of the arrow) against its
# conditional coefficients $\hat\beta + \hat b_j$ (end).

# %%
plots.shrinkage(fit)

# %%
plots.spaghetti(fit, "Days")

# %% [markdown]
# ## Diagnostics, tests and intervals

# %%
plots.diagnostics(fit)

# %%
fit.anova()

# %%
fit.ranova()

# %%
fit.confint(method="profile", progressbar=False)

# %% [markdown]
# Is the random slope needed? A likelihood-ratio test of the nested models (refitted by ML).

# %%
hl.anova(hl.LMM("Reaction ~ Days + (1 | Subject)", df).fit(), fit)
