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
levels), or ``group=`` when given (a column of the data; required in a model without random
effects, nlme's ``gls``).

Structures with several parameters:

=====================================  ====================================  ===================
structure                              residual covariance                   nlme
=====================================  ====================================  ===================
``Unstructured(time, group)``          a free correlation per pair of times  ``corSymm(~ t | g)``
``VarIdent(column)`` (``variance=``)   an SD ratio per level of ``column``   ``varIdent(~1 | c)``
=====================================  ====================================  ===================

Every structure states its parameters as a vector ``u`` (unbounded) with :meth:`n_params`,
:meth:`values` (``u`` to its natural value), :meth:`start_vector` and :meth:`report` (names and
natural values, as the results show them). ``Unstructured`` with ``VarIdent`` of the same time
column is the unstructured covariance of an MMRM (SAS's ``TYPE=UN``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hierlmm.errors import DataError, HierlmmError, HierlmmWarning, warn

__all__ = ["ResidualCorrelation", "AR1", "Exponential", "GaussianCorr", "CompoundSymmetry", "Unstructured",
           "VarIdent"]


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

    # --- the vector protocol (one parameter here; Unstructured has many) -----------------
    def n_params(self, data: pd.DataFrame) -> int:
        """How many parameters the structure has on these data."""
        return 1

    def values(self, u: np.ndarray):
        """The natural value(s) of the unbounded parameters ``u``."""
        return self.natural(float(u[0]))

    def start_vector(self, positions: list[np.ndarray], data: pd.DataFrame) -> np.ndarray:
        return np.atleast_1d(np.asarray(self.start(positions), dtype=float))

    def null_vector(self, positions: list[np.ndarray], data: pd.DataFrame) -> np.ndarray:
        """Parameters at which the residuals are (numerically) uncorrelated."""
        return np.atleast_1d(np.asarray(self.null_start(positions), dtype=float))

    def report(self, value, data: pd.DataFrame) -> dict:
        """The natural parameters by name, e.g. ``{"phi": 0.54}``."""
        return {self.param: float(value)}

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


def _time_levels(data: pd.DataFrame, column: str, structure: str) -> list:
    if column not in data.columns:
        raise DataError(f"{structure}: column {column!r} is not in the data")
    col = data[column]
    if isinstance(col.dtype, pd.CategoricalDtype):
        return list(col.cat.categories)
    return sorted(pd.unique(col.dropna()))


def _level_codes(data: pd.DataFrame, rows: np.ndarray, column: str, levels: list) -> np.ndarray:
    col = data[column].iloc[rows]
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.cat.codes.to_numpy().astype(np.int64)
    index = {v: i for i, v in enumerate(levels)}
    return np.array([index[v] for v in col], dtype=np.int64)


def correlation_from_unbounded(u: np.ndarray, k: int) -> np.ndarray:
    """A ``k x k`` correlation matrix from ``k(k−1)/2`` unbounded numbers: ``L`` lower
    triangular with unit diagonal and ``u`` below it (column by column), ``R = S LL' S`` with
    ``S`` scaling to a unit diagonal. Every ``u`` gives a positive-definite ``R`` and every
    positive-definite ``R`` has one ``u``."""
    L = np.eye(k)
    cols, rows = np.triu_indices(k, 1)
    L[rows, cols] = u
    C = L @ L.T
    s = 1.0 / np.sqrt(np.diag(C))
    return C * np.outer(s, s)


def unbounded_from_correlation(R: np.ndarray) -> np.ndarray:
    """Inverse of :func:`correlation_from_unbounded`."""
    k = R.shape[0]
    C = np.linalg.cholesky(R)
    L = C / np.diag(C)[:, None]  # chol(R) = S L: rows scaled
    cols, rows = np.triu_indices(k, 1)
    return L[rows, cols].copy()


@dataclass(frozen=True)
class Unstructured(ResidualCorrelation):
    """A free correlation between the residuals at any two times (levels of ``time``) of a
    group (nlme's ``corSymm(form = ~ as.integer(time) | group)``; with
    ``variance=VarIdent(time)`` the unstructured covariance of an MMRM, SAS's ``TYPE=UN``).
    A group may miss times (missing visits); a time may occur once per group."""

    time: str = ""
    name = "unstructured"
    param = "cor"

    def __post_init__(self):
        if not isinstance(self.time, str) or not self.time:
            raise HierlmmError("Unstructured(time=..., group=...) needs the time column (the visits) by name")

    def columns(self) -> tuple[str, ...]:
        return tuple(c for c in (self.time, self.group or "") if c)

    def levels(self, data) -> list:
        return _time_levels(data, self.time, "Unstructured")

    def n_params(self, data) -> int:
        k = len(self.levels(data))
        return k * (k - 1) // 2

    def values(self, u):
        u = np.asarray(u, dtype=float)
        k = int(round((1 + np.sqrt(1 + 8 * u.size)) / 2))
        return correlation_from_unbounded(u, k)

    def start_vector(self, positions, data):
        return np.zeros(self.n_params(data))

    def null_vector(self, positions, data):
        return np.zeros(self.n_params(data))

    def positions(self, data, rows, group_label):
        codes = _level_codes(data, rows, self.time, self.levels(data))
        values, counts = np.unique(codes, return_counts=True)
        if np.any(counts > 1):
            lev = self.levels(data)
            raise DataError(f"Unstructured(time={self.time!r}): group {group_label!r} has time(s) "
                            f"{', '.join(str(lev[v]) for v in values[counts > 1])} more than once; a correlation "
                            "per pair of times needs each time once per group")
        return codes.astype(float)

    def matrix(self, R, pos):
        p = np.asarray(pos, dtype=np.int64)
        return R[np.ix_(p, p)]

    def report(self, R, data) -> dict:
        lev = [str(v) for v in self.levels(data)]
        cols, rows = np.triu_indices(len(lev), 1)
        return {f"cor({lev[r]},{lev[c]})": float(R[r, c]) for r, c in zip(rows, cols)}


@dataclass(frozen=True)
class VarIdent:
    """A residual SD per level of ``column``: ``sd(ε_i) = σ δ_level(i)``, ``δ = 1`` for the first
    level (nlme's ``weights = varIdent(form = ~ 1 | column)``). Given as ``variance=``; it
    composes with any ``residual=`` correlation and with random effects. Parameters: ``log δ``
    of the other levels."""

    column: str

    name = "varIdent"

    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def levels(self, data) -> list:
        return _time_levels(data, self.column, "VarIdent")

    def n_params(self, data) -> int:
        return len(self.levels(data)) - 1

    def values(self, u) -> np.ndarray:
        return np.concatenate([[1.0], np.exp(np.asarray(u, dtype=float))])

    def codes(self, data, rows) -> np.ndarray:
        return _level_codes(data, rows, self.column, self.levels(data))

    def report(self, delta, data) -> dict:
        lev = [str(v) for v in self.levels(data)]
        return {f"sd ratio {self.column}={v}": float(d) for v, d in zip(lev[1:], delta[1:])}

    def describe(self, value=None) -> str:
        return f"{self.name}(~ 1 | {self.column})"
