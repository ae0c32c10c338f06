# %% [markdown]
# # REML as Bayes
#
# The linear mixed model in hierarchical form is
#
# $$y \mid b \sim N(X\beta + Zb,\ \sigma^2 I), \qquad b \sim N(0, D),$$
#
# and integrating $b$ out gives its marginal form $y \sim N(X\beta,\ V)$ with
# $V = ZDZ' + \sigma^2 I$. Put flat priors on $\beta$ and on $(\sigma^2, D)$. Integrating $\beta$
# out as well leaves the marginal posterior
#
# $$p(\sigma^2, D \mid y) \;\propto\; |V|^{-1/2}\,|X'V^{-1}X|^{-1/2}
#   \exp\!\big(-\tfrac12\, y'(V^{-1} - V^{-1}X(X'V^{-1}X)^{-1}X'V^{-1})\,y\big),$$
#
# which is the REML likelihood: **REML is the mode of the marginal posterior of the variance
# parameters**. The joint posterior of $(\beta, \sigma^2, D)$ is the likelihood itself, so
# **ML is the joint mode**. This notebook shows both number for number on `sleepstudy`
# (18 subjects, reaction time over 10 days of sleep deprivation), then what the full
# posterior adds.

# %%
import warnings

import hierlmm as hl
from hierlmm import plots

model = hl.LMM("Reaction ~ Days + (1 | Subject)", hl.datasets.load("sleepstudy"))
fit = model.fit()
fit

# %% [markdown]
# ## REML is the marginal posterior mode
#
# `posterior_mode(prior="flat")` maximises the marginal posterior numerically, without
# calling the REML code; its variances equal the REML estimates.

# %%
mode = model.posterior_mode(prior="flat")
mode.varcorr().assign(REML=fit.varcorr.vcov.to_numpy())

# %% [markdown]
# ## ML is the joint posterior mode
#
# Maximising the joint posterior of $(\beta, \sigma^2, D)$ instead gives the ML estimates
# (`joint=True`).

# %%
joint = model.posterior_mode(joint=True)
ml = model.fit(method="ML")
joint.varcorr().assign(ML=ml.varcorr.vcov.to_numpy())

# %% [markdown]
# ## The limit $s \to \infty$
#
# Give $\beta$ a proper prior $N(0, s^2 I)$ and integrate it out: the marginal posterior
# mode of $(\sigma^2, D)$ is then an ML-type estimate with $\beta$ shrunk to 0, and as $s$
# grows it moves to REML. With $s$ in units of the response, the intercept (about 250 ms)
# is pulled to 0 for small $s$, which inflates the between-subject variance; by
# $s \approx 10^3$ the prior is flat where the likelihood lives and the mode is REML. The
# figure shows the relative distance to REML on log scales.

# %%
plots.limit_path(model, s_values=(1, 3, 10, 30, 100, 300, 1000, 3000))

# %% [markdown]
# ## The full posterior beside REML
#
# The collapsed sampler draws $(\sigma^2, D)$ by NUTS on the marginal posterior above
# ($\beta$ and $b$ are drawn exactly given each draw). The table puts the REML estimate, the
# posterior mode in the prior's coordinates (variances) and the posterior quantiles side by
# side: the mode equals REML, while the median and mean sit higher, since the posterior of
# a variance is skewed to the right.

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
    table = hl.compare(fit, post)
table if have_bayes else None

# %% [markdown]
# The marginal densities of the variance parameters, with REML and the joint mode marked.
# (A joint mode need not sit at the peak of a one-dimensional marginal.)

# %%
plots.posterior_densities(fit, post) if have_bayes else None

# %% [markdown]
# ## The exact curve, without MCMC
#
# With one scalar random term, the marginal posterior of each variance is a one-dimensional
# integral (given $\theta = \tau/\sigma$, both variances are inverse gamma), so
# `posterior_grid()` computes it exactly by quadrature: the medians and 95% limits below carry
# no Monte Carlo error, and the MCMC histograms lie on the curves. The REML estimate (red) is
# the joint mode of $(\tau^2, \sigma^2)$; each marginal's median sits to its right.

# %%
grid = model.posterior_grid(prior="flat")
grid

# %%
plots.posterior_grid(grid, post if have_bayes else None)

# %% [markdown]
# ## Plug-in vs full uncertainty of the random effects
#
# The BLUPs' usual intervals plug in $\hat\sigma^2$ and $\hat D$; the full posterior also
# carries their uncertainty, so its intervals are wider — most for the subjects whose data
# say least.

# %%
plots.plugin_vs_full(fit, post) if have_bayes else None
