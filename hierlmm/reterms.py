"""One type per random-effects term: grouping codes, Z columns and its covariance factor.

For term ``t`` with ``k`` columns and ``m`` levels, the random effects of level ``j`` are
``b_j = σ T u_j``, ``u_j ~ N(0, I_k)``, where ``T`` (``k x k``, lower triangular) is the
term's *relative covariance factor*: ``D = σ² T T'``. ``Λ_θ`` is block diagonal with ``T``
repeated over the ``m`` levels. ``θ`` holds the lower triangle of ``T`` column by column
(lme4's order), with lower bound 0 on the diagonal so singular fits (``T`` singular, ``D``
on the boundary of the positive-semidefinite cone) are reachable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ReTerm"]


@dataclass(eq=False)
class ReTerm:
    """A random-effects term ``(expr | group)`` evaluated on the data.

    Attributes
    ----------
    group : str
        lme4's name of the grouping factor (``Subject``, ``cask:batch``).
    label : str
        Unique label among the model's terms (``Subject``, ``Subject.1``), as lme4's VarCorr.
    factors : tuple of str
        The grouping columns.
    expr : str
        The left of the bar.
    codes : ndarray of int, shape (n,)
        Level index of every observation.
    levels : list of str
        Level labels, in R's order.
    Z : ndarray, shape (n, k)
        Values of the term's columns per observation (row ``i`` of ``Z_t`` lives in
        columns ``codes[i]*k : codes[i]*k + k`` of the sparse model matrix).
    names : list of str
        Names of the ``k`` columns (``(Intercept)``, ``Days``).
    """

    group: str
    factors: tuple[str, ...]
    expr: str
    codes: np.ndarray
    levels: list[str]
    Z: np.ndarray
    names: list[str]
    source: str = ""
    label: str = ""
    model_spec: object = field(default=None, repr=False)  # formulaic spec of ``expr``, for predict
    _tril: tuple[np.ndarray, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self):
        k = self.k
        # lower triangle, column by column (lme4's theta order)
        cols, rows = np.triu_indices(k)
        self._tril = (rows, cols)
        if not self.label:
            self.label = self.group

    @property
    def k(self) -> int:
        """Number of columns (random effects per level)."""
        return self.Z.shape[1]

    @property
    def m(self) -> int:
        """Number of levels."""
        return len(self.levels)

    @property
    def q(self) -> int:
        """Number of random effects, ``m * k``."""
        return self.m * self.k

    @property
    def n_theta(self) -> int:
        """Number of covariance parameters, ``k (k + 1) / 2``."""
        return self.k * (self.k + 1) // 2

    @property
    def theta_diagonal(self) -> np.ndarray:
        """Boolean mask of the entries of θ on the diagonal of ``T`` (bounded below by 0)."""
        rows, cols = self._tril
        return rows == cols

    def theta_lower(self) -> np.ndarray:
        """Lower bounds of θ: 0 on the diagonal of ``T``, -inf elsewhere."""
        return np.where(self.theta_diagonal, 0.0, -np.inf)

    def theta_start(self) -> np.ndarray:
        """lme4's starting value: ``T = I``."""
        return self.theta_diagonal.astype(float)

    def boundary_escapes(self, theta: np.ndarray, tol: float = 1e-4, lift: float = 0.3) -> list[np.ndarray]:
        """Starts off the boundary for a singular ``T`` of a vector-valued term (else ``[]``).

        With a diagonal entry ``T_jj`` at 0, the deviance is stationary in ``T_jj`` and the
        entries below it in column ``j`` only rotate on a sphere: a local minimum in θ that
        need not be the lowest, while with ``T_jj > 0`` the sign of those entries relative to
        the others matters. Two starts: every zero diagonal entry set to ``lift``, and the
        same with the entries below it negated (a differential model, m0027: ML deviance
        1180.86474 at the boundary, 1180.86142 from the second start, as lme4)."""
        if self.k < 2:
            return []
        T = self.template(theta)
        zero = np.flatnonzero(np.diag(T) < tol)
        if zero.size == 0:
            return []
        lifted = T.copy()
        lifted[zero, zero] = lift
        flipped = lifted.copy()
        for j in zero:
            flipped[j + 1:, j] *= -1
        return [self.theta_from_template(lifted), self.theta_from_template(flipped)]

    def template(self, theta: np.ndarray) -> np.ndarray:
        """The ``k x k`` lower-triangular relative covariance factor ``T`` from θ."""
        T = np.zeros((self.k, self.k))
        T[self._tril] = theta
        return T

    def theta_from_template(self, T: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`template`."""
        return np.asarray(T)[self._tril].copy()

    def relcov(self, theta: np.ndarray) -> np.ndarray:
        """``T T'``: the covariance of ``b_j`` in units of σ²."""
        T = self.template(theta)
        return T @ T.T

    def describe(self) -> str:
        """The term as lme4 would print it, e.g. ``(1 + Days | Subject)``."""
        return f"({self.expr} | {self.group})"
