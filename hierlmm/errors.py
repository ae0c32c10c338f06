"""Errors and warnings raised by hierlmm.

Every error is a subclass of :class:`HierlmmError`, itself a :class:`ValueError`,
so ``except ValueError`` keeps working for callers who do not know hierlmm.
Messages name the formula term, column or level at fault.
"""

from __future__ import annotations


class HierlmmError(ValueError):
    """Base class of every error hierlmm raises on bad input."""


class FormulaError(HierlmmError):
    """The model formula cannot be parsed or refers to something unusable."""


class DataError(HierlmmError):
    """The data cannot support the model (missing columns, too few levels, ...)."""


class HierlmmWarning(UserWarning):
    """Base class of hierlmm's warnings."""


class SingularFitWarning(HierlmmWarning):
    """The fit lies on the boundary of the parameter space (lme4's ``isSingular``)."""


class ConvergenceWarning(HierlmmWarning):
    """The optimiser stopped, but the convergence checks failed."""


class RankDeficiencyWarning(HierlmmWarning):
    """Columns of the fixed-effects model matrix were aliased and dropped."""


class ScaleWarning(HierlmmWarning):
    """Predictors on very different scales (lme4's ``checkScaleX``): the fit is still computed
    in a well-conditioned internal scaling, but rescaling helps interpretation and inference."""


class ProfileWarning(HierlmmWarning):
    """A profile limit could not be found; it is NaN (lme4 gives NA likewise)."""


_PACKAGE = __file__.rsplit("/", 1)[0] + "/"


def warn(message: str, category: type[Warning] = HierlmmWarning) -> None:
    """Warn at the caller's line: the first frame outside hierlmm (however deep inside the
    package the warning is raised), so that a warning points at the user's code."""
    import warnings

    warnings.warn(message, category, skip_file_prefixes=(_PACKAGE,))
