# %% [markdown]
# # Penicillin: crossed random effects
#
# Six penicillin samples tested on each of 24 plates (lme4's `Penicillin`): `plate` and
# `sample` are crossed grouping factors.

# %%
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import hierlmm as hl
from hierlmm import plots

out = Path("output") / "penicillin"  # figures go to ./output/penicillin/
out.mkdir(parents=True, exist_ok=True)
fit = hl.LMM("diameter ~ 1 + (1 | plate) + (1 | sample)", hl.datasets.load("Penicillin")).fit()
print(fit.summary())
print(fit.varcorr)
print(fit.confint())

# %%
plots.caterpillar(fit, group="plate").savefig(out / "caterpillar_plate.png", dpi=90)
plots.caterpillar(fit, group="sample").savefig(out / "caterpillar_sample.png", dpi=90)
print(fit.marginal_corr("a", group="plate").round(3))
