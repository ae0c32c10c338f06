"""Checks of the arguments users pass, each raising a :class:`~hierlmm.errors.HierlmmError`
that names the argument and what was expected (never numpy's, pandas' or nutpie's own error
from deep inside)."""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from hierlmm.errors import DataError, HierlmmError

__all__ = ["count", "positive_number", "per_row", "aligned", "seed", "other_names"]


def seed(value, name: str = "random_seed"):
    """A seed numpy accepts: None, a whole number >= 0, a sequence of them, a SeedSequence or
    a Generator."""
    if value is None or isinstance(value, (np.random.SeedSequence, np.random.Generator, np.random.BitGenerator)):
        return value
    try:
        np.random.SeedSequence(value)
    except (TypeError, ValueError):
        raise HierlmmError(f"{name} must be None, a whole number >= 0 or a numpy Generator, got {value!r}") from None
    return value


def count(value, name: str, minimum: int = 1) -> int:
    """A whole number ``>= minimum`` (``draws``, ``chains``, ``n_boot``, ``simulate(n)``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        if not (isinstance(value, numbers.Real) and float(value).is_integer()):
            raise HierlmmError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise HierlmmError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def positive_number(value, name: str) -> float:
    """A finite number ``> 0`` (a prior's scale, a tolerance)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise HierlmmError(f"{name} must be a positive number, got {value!r}") from None
    if isinstance(value, (bool, np.bool_)) or not (np.isfinite(v) and v > 0):
        raise HierlmmError(f"{name} must be a positive finite number, got {value!r}")
    return v


def aligned(value, index: pd.Index, name: str):
    """``value`` as one entry per row of ``index``: a pandas Series is matched by its index (it
    must hold each of ``index``'s labels once; a Series indexed otherwise is refused, never
    used by position), anything else is taken in row order."""
    if not isinstance(value, pd.Series):
        return value
    if value.index.equals(index):
        return value.to_numpy()
    if not value.index.is_unique:
        raise DataError(f"{name}: a Series with a duplicated index cannot be matched to the data's rows")
    missing = index.difference(value.index)
    if len(missing):
        raise DataError(f"{name}: the Series' index does not match the data's: {len(missing)} row label(s) of the "
                        f"data are not in it (e.g. {missing[0]!r}); give a Series indexed like the data, or an array "
                        "in the data's row order")
    return value.reindex(index).to_numpy()


def per_row(value, n: int, name: str, index: pd.Index | None = None, what: str = "value") -> np.ndarray:
    """One finite real number per row (``refit(y)``): complex, non-numeric, NaN and inf values
    are refused naming the argument."""
    if index is not None:
        value = aligned(value, index, name)
    arr = np.asarray(value)
    if arr.dtype == object:
        try:
            arr = arr.astype(float)
        except (TypeError, ValueError):
            raise DataError(f"{name} must hold numbers, got values of type {type(arr.flat[0]).__name__}") from None
    if np.iscomplexobj(arr):
        raise DataError(f"{name} holds complex numbers; a response must be real")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(f"{name} must hold numbers, got dtype {arr.dtype}")
    arr = arr.astype(float).ravel()
    if arr.shape != (n,):
        raise DataError(f"{name} needs one {what} per observation used in the fit ({n}), got {arr.size}")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise DataError(f"{name} has {int(bad.sum())} value(s) that are NaN or infinite (first at position "
                        f"{int(np.flatnonzero(bad)[0])})")
    return arr


def kind(value: str) -> str:
    """``kind=`` of residuals, fitted values and predictions: ``"conditional"`` (with the
    random effects) or ``"marginal"`` (without)."""
    if value not in ("conditional", "marginal"):
        raise HierlmmError(f"kind must be 'conditional' or 'marginal', got {value!r}")
    return value


# keyword names users bring from R (lme4, brms, rstan) and PyMC, and hierlmm's for them
_THEIR_NAMES = {
    "seed": "random_seed=", "REML": "method='REML' or method='ML'", "re_form": "kind='conditional' or "
    "kind='marginal' (re.form = NA is kind='marginal')", "re.form": "kind= ('marginal' for re.form = NA)",
    "allow.new.levels": "allow_new_levels=", "iter": "draws= and tune= (brms's iter counts the warmup)",
    "warmup": "tune=", "num_warmup": "tune=", "num_samples": "draws=", "n_chains": "chains=",
    "start": "theta0=", "control": "maxeval= (and check_convergence=)",
}


def other_names(where: str, kwargs: dict, passed_on: bool = False) -> dict:
    """Refuse the keyword arguments of another package's spelling (``seed=``, ``REML=``,
    ``re_form=``), naming hierlmm's. The others are returned where ``passed_on`` (e.g. to
    nutpie), and refused as Python refuses an unknown keyword otherwise."""
    for key in kwargs:
        if key in _THEIR_NAMES:
            raise HierlmmError(f"{where} has no argument {key!r}; hierlmm's is {_THEIR_NAMES[key]}")
        if not passed_on:
            raise TypeError(f"{where} got an unexpected keyword argument {key!r}")
    return kwargs
