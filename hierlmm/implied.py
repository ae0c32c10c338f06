"""The marginal covariance a fitted model implies for one group: ``V_i = Z_i D Z_i' + σ² R_i``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hierlmm.errors import DataError

__all__ = ["marginal_cov", "marginal_corr"]


def _rows(fit, level, group):
    terms = fit.design.terms
    group = group or terms[0].group
    term = next((t for t in terms if t.group == group), None)
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
    with prior weights).
    """
    rows = _rows(fit, level, group)
    d = fit.design
    V = np.zeros((len(rows), len(rows)))
    for t, D in zip(d.terms, fit.covariance_matrices().values()):
        Z = t.Z[rows]
        same = t.codes[rows][:, None] == t.codes[rows][None, :]
        V += (Z @ D.to_numpy() @ Z.T) * same
    residual = fit.residual
    if residual is None:
        R = np.eye(len(rows)) if d.weights is None else np.diag(1.0 / d.weights[rows])
    else:
        dev = fit.deviance_function
        rg = dev.rgroup.codes[rows]
        R = np.zeros_like(V)
        value = dev.residual_value(fit.solution.theta)
        for lev in np.unique(rg):
            sel = np.flatnonzero(rg == lev)
            pos = residual.positions(d.data, rows[sel], dev.rgroup.levels[lev])
            R[np.ix_(sel, sel)] = residual.matrix(value, pos)
    V += fit.solution.sigma2 * R
    labels = d.data.index[rows]
    return pd.DataFrame(V, index=labels, columns=labels)


def marginal_corr(fit, level, group: str | None = None) -> pd.DataFrame:
    """The correlation matrix of :func:`marginal_cov`."""
    V = marginal_cov(fit, level, group)
    sd = np.sqrt(np.diag(V.to_numpy()))
    return V / np.outer(sd, sd)
