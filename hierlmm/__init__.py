"""hierlmm: linear mixed models in hierarchical form, fitted by exact REML/ML and by MCMC.

The public surface::

    import hierlmm as hl
    df = hl.datasets.load("sleepstudy")
    fit = hl.LMM("Reaction ~ Days + (Days | Subject)", df).fit()
    print(fit.summary())

The pipeline stages (:func:`build_design`, :func:`make_deviance`, :func:`optimize_theta`,
:class:`LMMResult`) are exported too, so a user can stop after any of them.
"""

from hierlmm import datasets
from hierlmm.design import Design, build_design
from hierlmm.deviance import Deviance, make_deviance
from hierlmm.errors import (
    ConvergenceWarning,
    DataError,
    FormulaError,
    HierlmmError,
    HierlmmWarning,
    ProfileWarning,
    RankDeficiencyWarning,
    ScaleWarning,
    SingularFitWarning,
)
from hierlmm.formula import parse_formula
from hierlmm.inference.lrt import anova


def compare(fit, post, mode=None, coordinates: str | None = None):
    """REML/ML estimates beside the posterior; see :func:`hierlmm.bayes.compare.compare`."""
    from hierlmm.bayes.compare import compare as _compare

    return _compare(fit, post, mode=mode, coordinates=coordinates)


def compare_ranef(fit, post, level: float = 0.95):
    """Plug-in vs full posterior of each b_i; see :func:`hierlmm.bayes.compare.compare_ranef`."""
    from hierlmm.bayes.compare import compare_ranef as _compare_ranef

    return _compare_ranef(fit, post, level=level)

from hierlmm.model import LMM
from hierlmm.optimize import optimize_theta
from hierlmm.residual import AR1, CompoundSymmetry, Exponential, GaussianCorr, Unstructured, VarIdent
from hierlmm.results import LMMResult

__version__ = "0.1.0"

__all__ = [
    "LMM",
    "LMMResult",
    "anova",
    "compare",
    "compare_ranef",
    "Design",
    "Deviance",
    "build_design",
    "make_deviance",
    "optimize_theta",
    "parse_formula",
    "datasets",
    "AR1",
    "Exponential",
    "GaussianCorr",
    "CompoundSymmetry",
    "Unstructured",
    "VarIdent",
    "HierlmmError",
    "FormulaError",
    "DataError",
    "HierlmmWarning",
    "SingularFitWarning",
    "ConvergenceWarning",
    "RankDeficiencyWarning",
    "ScaleWarning",
    "ProfileWarning",
]
