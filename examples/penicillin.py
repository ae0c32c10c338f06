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

# %%
fit.confint(progressbar=False)

# %%
plots.caterpillar(fit, group="plate")

# %%
plots.caterpillar(fit, group="sample")
