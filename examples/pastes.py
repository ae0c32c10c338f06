# %% [markdown]
# # Pastes: nested random effects and the variance decomposition
#
# Strength of paste from 10 batches, 3 casks per batch, 2 assays per cask (lme4's
# `Pastes`). `(1 | batch/cask)` is `(1 | batch) + (1 | cask:batch)`; the total variance
# splits into batch, cask-within-batch and assay parts.

# %%
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import hierlmm as hl
from hierlmm import plots

out = Path("output") / "pastes"  # figures go to ./output/pastes/
out.mkdir(parents=True, exist_ok=True)
fit = hl.LMM("strength ~ 1 + (1 | batch/cask)", hl.datasets.load("Pastes")).fit()
print(fit.summary())

# %% [markdown]
# ## How the variance divides

# %%
vc = fit.varcorr[["grp", "vcov"]].copy()
vc["share"] = vc.vcov / vc.vcov.sum()
print(vc.round(3))
print(fit.ranova())
plots.caterpillar(fit, group="cask:batch").savefig(out / "caterpillar_cask.png", dpi=90)
