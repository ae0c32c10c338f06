"""Correlation structures for the residuals within groups: ``ε_i ~ N(0, σ² R_i(ψ))``.

As nlme's ``correlation=`` argument (SPSS's "repeated" covariance). Each structure maps an
unconstrained parameter ``u`` to its natural one and builds ``R_i`` for one group:

=====================  ==========================================  =====================
structure              ``corr(ε_ij, ε_ik)``                        nlme
=====================  ==========================================  =====================
``AR1()``              ``φ^|j − k|`` (positions within the group)  ``corAR1()``
``Exponential(time)``  ``exp(−|t_j − t_k| / range)``               ``corExp(form=~t)``
``GaussianCorr(time)`` ``exp(−(|t_j − t_k| / range)²)``            ``corGaus(form=~t)``
``CompoundSymmetry()`` ``ρ`` for ``j ≠ k``                         ``corCompSymm()``
=====================  ==========================================  =====================

The group is the innermost grouping factor of the random effects (the term with most
levels), or ``group=`` when given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hierlmm.errors import DataError, HierlmmWarning, warn

__all__ = ["ResidualCorrelation", "AR1", "Exponential", "GaussianCorr", "CompoundSymmetry"]


class ResidualOrderWarning(HierlmmWarning):
    """The order or spacing of observations within groups may not be what AR(1) assumes."""


@dataclass(frozen=True)
class ResidualCorrelation:
    """Base class. Subclasses define ``name``, ``param`` and the correlation function."""

    group: str | None = None

    name = "iid"
    param = ""
    # the map from the optimiser's unconstrained parameter to the natural one: "tanh" for a
    # correlation in (-1, 1), "exp" for a positive range
    link = "tanh"

    def natural(self, u: float) -> float:
        return float(np.tanh(u) if self.link == "tanh" else np.exp(u))

    def unconstrained(self, value: float) -> float:
        return float(np.arctanh(value) if self.link == "tanh" else np.log(value))

    def start(self, positions: list[np.ndarray]) -> float:
        return 0.0

    def null_start(self, positions: list[np.ndarray]) -> float:
        """An unconstrained value at which the residuals are (numerically) uncorrelated."""
        return 0.0

    def columns(self) -> tuple[str, ...]:
        """Data columns the structure reads (its time or order column, its group)."""
        cols = [getattr(self, "time", "") or getattr(self, "order", None) or "", self.group or ""]
        return tuple(c for c in cols if c)

    def positions(self, data: pd.DataFrame, rows: np.ndarray, group_label: str) -> np.ndarray:
        """Positions (times) of the rows of one group, in the order of ``rows``."""
        return np.arange(len(rows), dtype=float)

    def matrix(self, value: float, pos: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self, value=None) -> str:
        v = "" if value is None else f", {self.param} = {value:.4g}"
        return f"{self.name}{v}"


def _time_positions(data, rows, column, group_label, structure):
    if column not in data.columns:
        raise DataError(f"{structure}: time column {column!r} is not in the data")
    t = data[column].to_numpy(dtype=float)[rows]
    values, counts = np.unique(t, return_counts=True)
    if np.any(counts > 1):
        raise DataError(
            f"{structure}(time={column!r}): group {group_label!r} has repeated times "
            f"({', '.join(f'{v:g}' for v in values[counts > 1])}); a correlation in time needs "
            "distinct times within a group"
        )
    return t


@dataclass(frozen=True)
class AR1(ResidualCorrelation):
    """First-order autoregressive correlation ``φ^|j − k|`` in the order of the rows within a
    group, or of column ``order`` (ranks; AR(1) assumes equally spaced times: for irregular
    times use :class:`Exponential`)."""

    order: str | None = None
    name = "AR(1)"
    param = "phi"

    def positions(self, data, rows, group_label):
        if self.order is None:
            if np.any(np.diff(rows) != 1):
                warn(
                    f"AR(1): the rows of group {group_label!r} are not contiguous in the data; their "
                    "order in the data is used as the time order (pass order='column' to state it)",
                    ResidualOrderWarning)
            return np.arange(len(rows), dtype=float)
        t = _time_positions(data, rows, self.order, group_label, "AR1")
        steps = np.diff(np.sort(t))
        if len(steps) and not np.allclose(steps, steps[0]):
            warn(
                f"AR(1): times in {self.order!r} of group {group_label!r} are irregularly spaced; AR(1) "
                "uses their rank order (use Exponential(time=...) for a correlation in continuous time)",
                ResidualOrderWarning)
        return np.argsort(np.argsort(t)).astype(float)

    def matrix(self, phi, pos):
        return phi ** np.abs(pos[:, None] - pos[None, :])


@dataclass(frozen=True)
class Exponential(ResidualCorrelation):
    """``exp(−|t − t'| / range)`` in the time column ``time`` (nlme's ``corExp``)."""

    time: str = ""
    name = "exponential"
    param = "range"
    link = "exp"

    def start(self, positions):
        d = np.concatenate([np.abs(np.diff(np.sort(p))) for p in positions if len(p) > 1] or [[1.0]])
        return float(np.log(np.median(d[d > 0]) if np.any(d > 0) else 1.0))

    def null_start(self, positions):
        return self.start(positions) - np.log(20.0)  # correlation at the smallest spacing ~ e^-20

    def positions(self, data, rows, group_label):
        return _time_positions(data, rows, self.time, group_label, type(self).__name__)

    def matrix(self, rng, pos):
        return np.exp(-np.abs(pos[:, None] - pos[None, :]) / rng)


@dataclass(frozen=True)
class GaussianCorr(Exponential):
    """``exp(−(|t − t'| / range)²)`` (nlme's ``corGaus``)."""

    name = "Gaussian"

    def matrix(self, rng, pos):
        return np.exp(-((pos[:, None] - pos[None, :]) / rng) ** 2)


@dataclass(frozen=True)
class CompoundSymmetry(ResidualCorrelation):
    """Equal correlation ``ρ`` between any two residuals of a group (nlme's ``corCompSymm``)."""

    name = "compound symmetry"
    param = "rho"

    def matrix(self, rho, pos):
        n = len(pos)
        return (1 - rho) * np.eye(n) + rho * np.ones((n, n))
