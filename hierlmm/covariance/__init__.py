"""Covariance structures of random-effects terms: one type per structure
(:class:`~hierlmm.covariance.base.Covariance`), chosen in a formula by glmmTMB's wrappers
around an lme4 term: ``us(x | g)`` (lme4's ``(x | g)``), ``diag``, ``homdiag``, ``cs``,
``homcs``, ``ar1``, ``toep``."""

from __future__ import annotations

from hierlmm.covariance.ar1 import AR1
from hierlmm.covariance.base import Covariance, psd_cholesky, sd_corr
from hierlmm.covariance.compound import CompoundSymmetry, HomCompoundSymmetry
from hierlmm.covariance.diagonal import Diagonal, HomDiagonal
from hierlmm.covariance.toeplitz import Toeplitz
from hierlmm.covariance.unstructured import Unstructured

__all__ = ["Covariance", "STRUCTURES", "make_covariance", "psd_cholesky", "sd_corr"]

# the formula's wrapper -> the structure; (minimum number of columns)
STRUCTURES: dict[str, tuple[type[Covariance], int]] = {
    "us": (Unstructured, 1),
    "diag": (Diagonal, 1),
    "homdiag": (HomDiagonal, 1),
    "cs": (CompoundSymmetry, 2),
    "homcs": (HomCompoundSymmetry, 2),
    "ar1": (AR1, 2),
    "toep": (Toeplitz, 2),
}


def make_covariance(kind: str, names, source: str = "") -> Covariance:
    """The structure ``kind`` over columns ``names`` (a clear error where it cannot be one)."""
    cls, minimum = STRUCTURES[kind]
    cov = cls(tuple(names))
    cov._check(minimum, source)
    return cov
