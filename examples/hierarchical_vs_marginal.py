# %% [markdown]
# # Hierarchical vs marginal formulation, and serial correlation
#
# The hierarchical model `y_i | b_i ~ N(X_iβ + Z_ib_i, σ²R_i)`, `b_i ~ N(0, D)` implies the
# marginal model `y_i ~ N(X_iβ, V_i)`, `V_i = Z_iDZ_i' + σ²R_i` — but not the other way: `V_i`
# can be positive definite while `D` is not.

# %%
import warnings

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import hierlmm as hl

out = Path("output") / "hierarchical_vs_marginal"  # figures go to ./output/hierarchical_vs_marginal/
out.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## Dyestuff2: τ² stops at 0 in the hierarchical fit, goes negative in the marginal one

# %%
d2 = hl.datasets.load("Dyestuff2")
with warnings.catch_warnings():
    warnings.simplefilter("ignore", hl.SingularFitWarning)
    hier = hl.LMM("Yield ~ 1 + (1 | Batch)", d2).fit()
marg = hl.LMM("Yield ~ 1 + (1 | Batch)", d2, formulation="marginal").fit()
print(hier.varcorr, "\nlogLik", round(hier.loglik, 3))
print(marg.varcorr, "\nlogLik", round(marg.loglik, 3))
print(marg.summary())
print("implied V_i, hierarchical:\n", hier.marginal_cov("A").round(2))
print("implied V_i, marginal:\n", marg.marginal_cov("A").round(2))

# %% [markdown]
# ## Two hierarchical models, one marginal V
#
# With `age` centred at 11 the correlated model `(1 + age11 | Subject)` is the same model as
# `(1 + age | Subject)` — D differs, V_i and the likelihood do not.

# %%
ortho = hl.datasets.load("Orthodont")
ortho["age11"] = ortho.age - 11
a = hl.LMM("distance ~ age * Sex + (age | Subject)", ortho).fit()
b = hl.LMM("distance ~ age11 * Sex + (age11 | Subject)", ortho).fit()
print(a.covariance_matrices()["Subject"].round(3))
print(b.covariance_matrices()["Subject"].round(3))
print("logLik:", round(a.loglik, 4), round(b.loglik, 4))
print("max |V_a - V_b| for M01:", float(abs(a.marginal_cov("M01").to_numpy() - b.marginal_cov("M01").to_numpy()).max()))

# %% [markdown]
# ## Ovary: random intercept vs AR(1) residuals vs both

# %%
ov = hl.datasets.load("Ovary")
fixed = "follicles ~ np.sin(2*np.pi*Time) + np.cos(2*np.pi*Time)"
ri = hl.LMM(fixed + " + (1 | Mare)", ov).fit()
both = hl.LMM(fixed + " + (1 | Mare)", ov, residual=hl.AR1()).fit()
print(both.summary())
print(hl.anova(ri, both, names=["random intercept", "random intercept + AR(1)"], refit=False))
print("AR(1) phi:", round(both.residual_params["phi"], 4))
print(both.marginal_corr("1").iloc[:5, :5].round(3))

# %% [markdown]
# ## The implied correlation of one mare's observations, without and with AR(1)

# %%
from matplotlib.figure import Figure

fig = Figure(figsize=(9, 4), layout="constrained")
for ax, (label, f) in zip(fig.subplots(1, 2), [("random intercept", ri), ("random intercept + AR(1)", both)]):
    im = ax.imshow(f.marginal_corr("1").to_numpy(), vmin=0, vmax=1, cmap="viridis")
    ax.set_title(f"{label}: corr(y_i), mare 1", fontsize=10)
    ax.set_xlabel("observation")
    ax.set_ylabel("observation")
fig.colorbar(im, ax=fig.axes, shrink=0.8)
fig.savefig(out / "implied_correlation.png", dpi=90)
