"""The Bayesian side: MCMC under flat priors (PyMC + nutpie, ArviZ), posterior modes.

==================  =============================================================
file                what
==================  =============================================================
``priors.py``       flat / flat_sd / weakly informative priors; the log-Jacobian
``propriety.py``    is the posterior under an improper prior proper?
``collapsed.py``    NUTS over (σ², D) with β, b integrated out; exact draws of β, b
``kernel.py``       that log-density and gradient by hand, precompiled (numba cache)
``_kernel_impl.py`` its numba functions, and nutpie's C callbacks
``hierarchical.py`` the model as stated, non-centred, in PyMC
``sample.py``       ``LMM.sample``: runs nutpie, assembles the posterior
``posterior.py``    ``Posterior``: ArviZ DataTree, summary, convergence checks
``mode.py``         posterior modes: REML as a limit, ML as the joint mode
``grid.py``         the exact posterior of a one-term model's variances by quadrature
``compare.py``      ``hl.compare``, ``hl.compare_ranef``
==================  =============================================================

PyMC, PyTensor, nutpie, numba and ArviZ are imported only when sampling.
"""

from hierlmm.bayes.compare import compare, compare_ranef
from hierlmm.bayes.mode import PosteriorMode, posterior_mode
from hierlmm.bayes.priors import WeaklyInformative
from hierlmm.bayes.propriety import ImproperPosteriorError, ProprietyNotVerifiedWarning, check_propriety

__all__ = ["compare", "compare_ranef", "posterior_mode", "PosteriorMode", "WeaklyInformative",
           "ImproperPosteriorError", "ProprietyNotVerifiedWarning", "check_propriety"]
