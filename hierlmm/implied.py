"""The marginal covariance a fitted model implies for one group: ``V_i = Z_i D Z_i' + σ² R_i``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hierlmm.blocks import column_grouping
from hierlmm.errors import DataError

__all__ = ["marginal_cov", "marginal_corr"]


def _rows(fit, level, group):
    terms = list(fit.design.terms)
    rgroup = getattr(fit.deviance_function, "rgroup", None)
    if rgroup is not None and all(rgroup is not t for t in terms):
        terms.append(rgroup)  # a residual structure's group that is no random term (gls)
    if not terms and group is None:
        raise DataError("the model has no grouping factor: name the column whose level's rows to show (group=)")
    group = group or terms[0].group
    term = next((t for t in terms if t.group == group), None)
    if term is None and not terms and group in fit.design.data.columns:
        term = column_grouping(fit.design.data, group)  # rows of a level of any column: V is diagonal
    if term is None:
        raise DataError(f"{group!r} is not a grouping factor of the model ({', '.join(sorted({t.group for t in terms}))})")
    level = str(level)
    if level not in term.levels:
        raise DataError(f"{level!r} is not a level of {group!r}")
    return np.flatnonzero(term.codes == term.levels.index(level))


def marginal_cov(fit, level, group: str | None = None) -> pd.DataFrame:
    """``V_i`` for the rows of ``level`` of grouping factor ``group`` (default: the first).

    Every random-effects term contributes ``Z_t D_t Z_t'`` between rows that share its level
    (so a crossed factor adds covariance within the group too); the residual contributes
    ``σ² R_i`` (``R_i = I`` unless the fit has a residual correlation structure; ``W_i⁻¹``
    with prior weights; ``Δ R_i Δ`` with a variance function's SD ratios ``Δ``). With a
    residual structure, from the per-group engine's own blocks ``σ² V0_b``.
    """
    rows = _rows(fit, level, group)
    d = fit.design
    dev = fit.deviance_function
    labels = d.data.index[rows]
    if hasattr(dev, "block_matrices"):
        V = np.zeros((len(rows), len(rows)))
        for block, V0 in dev.block_matrices(fit.solution.theta):
            mine = np.flatnonzero(np.isin(block, rows))
            if mine.size:
                at = np.searchsorted(rows, block[mine])  # rows is sorted (np.flatnonzero)
                V[np.ix_(at, at)] = fit.solution.sigma2 * V0[np.ix_(mine, mine)]
        return pd.DataFrame(V, index=labels, columns=labels)
    V = np.zeros((len(rows), len(rows)))
    for t, D in zip(d.terms, fit.covariance_matrices().values()):
        Z = t.Z[rows]
        same = t.codes[rows][:, None] == t.codes[rows][None, :]
        V += (Z @ D.to_numpy() @ Z.T) * same
    R = np.eye(len(rows)) if d.weights is None else np.diag(1.0 / d.weights[rows])
    V += fit.solution.sigma2 * R
    return pd.DataFrame(V, index=labels, columns=labels)


def marginal_corr(fit, level, group: str | None = None) -> pd.DataFrame:
    """The correlation matrix of :func:`marginal_cov`."""
    V = marginal_cov(fit, level, group)
    sd = np.sqrt(np.diag(V.to_numpy()))
    return V / np.outer(sd, sd)
