# %% [markdown]
# # The hierarchical model implies the marginal one, not vice versa
#
# A hierarchical model $y_i \mid b_i \sim N(X_i\beta + Z_ib_i,\ \sigma^2 R_i)$,
# $b_i \sim N(0, D)$ implies the marginal model $y_i \sim N(X_i\beta,\ V_i)$ with
# $V_i = Z_iDZ_i' + \sigma^2R_i$. The converse fails twice:
#
# 1. **Different hierarchical models, one marginal model.** Several $(D, \sigma^2)$ can give
#    the same $V_i$; the likelihood, a function of $V_i$ only, cannot tell them apart.
# 2. **Marginal models no hierarchical model implies.** $V_i$ can be positive definite while
#    $D$ is not (a "negative variance").

# %%
import warnings

import numpy as np
import pandas as pd

import hierlmm as hl
from hierlmm import plots

# %% [markdown]
# ## 1. Two hierarchical models, one marginal model
#
# Orthodont: the distance grows with age in each of 27 children. Model A lets intercept and
# slope vary, `(age | Subject)`, the intercept being the distance at age 0. Model B is the
# same but with age centred at 11, `(age11 | Subject)`: its intercept is the distance at 11.
# Their $D$ differ — at age 0 the children differ far more (and the intercept and slope are
# negatively correlated) than at 11 — but $Z_iDZ_i'$ is the same matrix, so $V_i$, the
# likelihood and every fitted value are the same.

# %%
ortho = hl.datasets.load("Orthodont")
ortho["age11"] = ortho.age - 11
a = hl.LMM("distance ~ age * Sex + (age | Subject)", ortho).fit()
b = hl.LMM("distance ~ age11 * Sex + (age11 | Subject)", ortho).fit()
generic = {"(Intercept)": "intercept", "age": "slope", "age11": "slope"}
pd.concat({"A: D of (age | Subject)": a.covariance_matrices()["Subject"].rename(index=generic, columns=generic),
           "B: D of (age11 | Subject)": b.covariance_matrices()["Subject"].rename(index=generic, columns=generic)}
          ).round(3)

# %%
pd.DataFrame({"REML log-likelihood": [a.loglik, b.loglik],
              "max |V_i(A) - V_i(B)|, child M01": [0.0, float(np.abs(a.marginal_cov("M01").to_numpy()
                                                                   - b.marginal_cov("M01").to_numpy()).max())]},
             index=["A", "B"])

# %% [markdown]
# The data cannot prefer one hierarchical story to the other; they only see $V_i$. Under flat
# priors the two posteriors agree too: $D_B = AD_AA'$ with $A$ unit triangular is a linear
# map of unit Jacobian, so a flat prior on $D_A$ is a flat prior on $D_B$, and the posterior
# of $\sigma^2$ (a function of $V_i$) is the same. The propriety check treats both alike and
# proves both proper: 27 subjects, 2 level-2 columns (the intercept and `Sex`), and
# $m - r = 25 > 2k = 4$ (the condition is in the Bayes guide).

# %%
try:
    import pymc  # noqa: F401

    have_bayes = True
except ImportError:
    have_bayes = False
if have_bayes:
    rows = {}
    for name, formula in [("A", "distance ~ age * Sex + (age | Subject)"),
                          ("B", "distance ~ age11 * Sex + (age11 | Subject)")]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            post = hl.LMM(formula, ortho).sample(random_seed=2, progressbar=False)
        s2 = post.draws("sigma2")
        rows[name] = {"sigma^2 median": np.median(s2), "2.5%": np.quantile(s2, 0.025),
                      "97.5%": np.quantile(s2, 0.975)}
        notes = [str(w.message) for w in caught if isinstance(w.message, hl.bayes.ProprietyNotVerifiedWarning)]
        print(f"{name}: propriety check: {notes[0] if notes else 'proper (proven)'}")
    comparison = pd.DataFrame(rows).T
comparison if have_bayes else None

# %% [markdown]
# The extreme case is a random intercept and slope with **two** measurements per subject:
# $V_i$ ($2\times2$, three numbers) cannot determine $D$ and $\sigma^2$ (four), so a whole
# ridge of hierarchical models has one likelihood. hierlmm refuses the model, as lme4 does:

# %%
rng = np.random.default_rng(1)
two = pd.DataFrame({"y": rng.normal(size=40), "t": np.tile([0.0, 1.0], 20),
                    "subject": pd.Categorical(np.repeat(np.arange(20), 2).astype(str))})
try:
    hl.LMM("y ~ t + (t | subject)", two)
except hl.HierlmmError as exc:
    print(exc)

# %% [markdown]
# ## 2. A marginal model no hierarchical model implies: Dyestuff2
#
# In `Dyestuff2` the batches vary less than the assays within them. The hierarchical fit
# stops at $\tau^2 = 0$ (a singular fit); the marginal formulation only asks $V_i$ to be
# positive definite and finds $\tau^2 < 0$, with a higher likelihood.

# %%
d2 = hl.datasets.load("Dyestuff2")
with warnings.catch_warnings():
    warnings.simplefilter("ignore", hl.SingularFitWarning)
    hier = hl.LMM("Yield ~ 1 + (1 | Batch)", d2).fit()
marg = hl.LMM("Yield ~ 1 + (1 | Batch)", d2, formulation="marginal").fit()
pd.DataFrame({"hierarchical": [hier.varcorr.vcov[0], hier.sigma**2, hier.loglik],
              "marginal": [marg.varcorr.vcov[0], marg.sigma**2, marg.loglik]},
             index=["tau^2 (Batch)", "sigma^2", "REML log-likelihood"])

# %% [markdown]
# The implied $V_i$ of one batch: compound symmetry with a negative covariance in the
# marginal fit — a valid covariance matrix, but no random intercept produces it.

# %%
marg.marginal_cov("A").round(2)

# %% [markdown]
# ## 3. Serial correlation: what a random intercept cannot say
#
# Ovary (follicle counts of 11 mares over time): a random intercept makes every pair of a
# mare's observations equally correlated; AR(1) residuals add correlation that decays with
# the time between them. The likelihood-ratio test prefers the second.

# %%
ov = hl.datasets.load("Ovary")
fixed = "follicles ~ np.sin(2*np.pi*Time) + np.cos(2*np.pi*Time)"
ri = hl.LMM(fixed + " + (1 | Mare)", ov).fit()
both = hl.LMM(fixed + " + (1 | Mare)", ov, residual=hl.AR1()).fit()
hl.anova(ri, both, refit=False)  # rows: the formula, and the residual structure where it differs

# %%
fig, axes = plots.figure(1, 2, width=9, height=4)
for ax, (label, f) in zip(axes[0], [("random intercept", ri), ("random intercept + AR(1)", both)]):
    im = ax.imshow(f.marginal_corr("1").to_numpy(), vmin=0, vmax=1, cmap="viridis")
    ax.set_title(f"{label}: corr(y_i), mare 1", fontsize=10)
    ax.set_xlabel("observation")
    ax.set_ylabel("observation")
fig.colorbar(im, ax=list(axes[0]), shrink=0.8)
fig
