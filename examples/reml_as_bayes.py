# %% [markdown]
# # REML as Bayes
#
# Under flat priors on β and on (σ², D), integrating β out leaves a marginal posterior of
# (σ², D) proportional to the REML likelihood: REML is its mode. ML is the mode of the joint
# posterior of (β, σ², D). This walk-through shows it number for number on sleepstudy.

# %%
import warnings

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import hierlmm as hl
from hierlmm import plots

out = Path("output") / "reml_as_bayes"  # figures go to ./output/reml_as_bayes/
out.mkdir(parents=True, exist_ok=True)
model = hl.LMM("Reaction ~ Days + (1 | Subject)", hl.datasets.load("sleepstudy"))
fit = model.fit()

# %% [markdown]
# ## REML = the posterior mode; ML = the joint mode

# %%
print(model.posterior_mode(prior="flat").varcorr())
print(fit.varcorr)
print(model.posterior_mode(joint=True).varcorr())
print(model.fit(method="ML").varcorr)

# %% [markdown]
# ## The limit: β ~ N(0, s²I) integrated out, s → ∞

# %%
for s in (1, 10, 100, 1000):
    print(s, model.posterior_mode(beta_prior_sd=s).varcorr().vcov.round(3).tolist())
plots.limit_path(model, s_values=(1, 3, 10, 30, 100, 300, 1000)).savefig(out / "limit.png", dpi=90)

# %% [markdown]
# ## The full posterior (collapsed NUTS) beside REML

# %%
try:
    import pymc  # noqa: F401
    have_bayes = True
except ImportError:
    have_bayes = False
    print("install the bayes extra (pip install 'hierlmm[bayes]') to sample")
if have_bayes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hl.ConvergenceWarning)
        post = model.sample(random_seed=1, progressbar=False)
    story = ["grp", "var1", "estimate", "post_mode", "mode_in", "post_median", "post_q025", "post_q975"]
    print(hl.compare(fit, post)[story].round(3).to_string())  # REML = the mode, in variances
    print(hl.compare_ranef(fit, post).head(6).round(3))
    plots.posterior_densities(fit, post).savefig(out / "posterior.png", dpi=90)
    plots.plugin_vs_full(fit, post).savefig(out / "plugin_vs_full.png", dpi=90)
