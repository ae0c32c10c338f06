# %% [markdown]
# # Dyestuff and Dyestuff2: an interior and a boundary fit
#
# Yield of dyestuff from 6 batches, 5 preparations each (lme4's `Dyestuff`), and a
# simulated data set of the same layout (`Dyestuff2`) whose between-batch variance is
# estimated as zero: a singular fit, reported as such.

# %%
import warnings

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import hierlmm as hl
from hierlmm import plots

out = Path("output") / "dyestuff"  # figures go to ./output/dyestuff/
out.mkdir(parents=True, exist_ok=True)
fit1 = hl.LMM("Yield ~ 1 + (1 | Batch)", hl.datasets.load("Dyestuff")).fit()
print(fit1.summary())
print(fit1.confint())
print("ICC:", fit1.icc().round(3).to_dict())

# %%
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    fit2 = hl.LMM("Yield ~ 1 + (1 | Batch)", hl.datasets.load("Dyestuff2")).fit()
print([str(w.message) for w in caught])
print("singular:", fit2.singular)
print(fit2.varcorr)
plots.caterpillar(fit1).savefig(out / "caterpillar_dyestuff.png", dpi=90)
