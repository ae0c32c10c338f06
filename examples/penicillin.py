# %% [markdown]
# # Penicillin: crossed random effects
#
# Six penicillin samples tested on each of 24 plates (lme4's `Penicillin`): `plate` and
# `sample` are crossed grouping factors, $y_{ij} = \mu + p_i + s_j + \varepsilon_{ij}$.

# %%
import hierlmm as hl
from hierlmm import plots

fit = hl.LMM("diameter ~ 1 + (1 | plate) + (1 | sample)", hl.datasets.load("Penicillin")).fit()
fit

# %% [markdown]
# ## Profile intervals
#
# The profiled ML deviance raised by $\chi^2_1(0.95)$ on either side of each parameter, as
# lme4's `confint(method = "profile")`.

# %%
fit.confint(progressbar=False)

# %% [markdown]
# ## The plates and the samples
#
# Each crossed factor has its own BLUPs: 24 plates (small effects, precisely estimated from 6
# samples each) and 6 samples (large effects, each seen on all 24 plates).

# %%
plots.caterpillar(fit, group="plate")

# %%
plots.caterpillar(fit, group="sample")
