# %% [markdown]
# # Dyestuff and Dyestuff2: an interior and a boundary fit
#
# Yield of dyestuff from 6 batches, 5 preparations each (lme4's `Dyestuff`):
# $y_{ij} = \mu + b_j + \varepsilon_{ij}$, $b_j \sim N(0, \tau^2)$. `Dyestuff2` has the same layout
# but its between-batch variance is estimated as zero: a singular fit, reported as such.

# %%
import warnings

import hierlmm as hl
from hierlmm import plots

fit1 = hl.LMM("Yield ~ 1 + (1 | Batch)", hl.datasets.load("Dyestuff")).fit()
fit1

# %% [markdown]
# Profile intervals (the ML deviance raised by $\chi^2_1(0.95)$) and the intraclass correlation
# $\tau^2/(\tau^2 + \sigma^2)$.

# %%
fit1.confint(progressbar=False)

# %%
fit1.icc()

# %%
plots.caterpillar(fit1)

# %% [markdown]
# ## Dyestuff2: $\hat\tau^2 = 0$

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    fit2 = hl.LMM("Yield ~ 1 + (1 | Batch)", hl.datasets.load("Dyestuff2")).fit()
print("\n".join(str(w.message) for w in caught))
fit2.varcorr
