"""The REML/ML criterion: one function of the pieces every engine computes.

With ``V = σ² V0`` the marginal covariance of ``y``, ``r² = min_β (y − Xβ)'V0⁻¹(y − Xβ)``
(the penalised residual sum of squares of the blocked engine), ``n`` observations, ``p``
fixed effects and ``m = n − p`` (REML) or ``n`` (ML),

.. math::

    -2\\ell(θ, σ^2) = \\log|V0| + [\\log|X'V0^{-1}X|]_{REML} + m \\log(2πσ^2) + r^2/σ^2,

and with σ² profiled out (``σ̂² = r²/m``)

.. math::

    -2\\ell(θ) = \\log|V0| + [\\log|X'V0^{-1}X|]_{REML} + m [1 + \\log(2π r^2/m)].

In the blocked engine ``log|V0| = log|L_θ|²`` and ``log|X'V0⁻¹X| = log|R_X|²`` (Bates et al.
2015, eqs. 34 and 41); in the per-group engine both are sums over blocks. The same function
serves numpy and PyTensor (pass ``log=pytensor.tensor.log``), so the collapsed sampler's
log-density is this criterion, not a copy of it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LOG2PI", "criterion"]

LOG2PI = float(np.log(2 * np.pi))


def criterion(logdet_v, logdet_x, r2, n: int, p: int, reml: bool, sigma2=None, log=np.log, log_weights=0.0):
    """``−2 log L`` (REML or ML), profiled in σ² when ``sigma2`` is None.

    Parameters
    ----------
    logdet_v : float
        ``log|V0|`` (``log|L_θ|²``).
    logdet_x : float
        ``log|X'V0⁻¹X|`` (``log|R_X|²``); used by REML only.
    r2 : float
        ``r²``, the generalised residual sum of squares at β̂.
    n, p : int
    reml : bool
    sigma2 : float, optional
        σ² (not profiled).
    log : callable
        ``np.log`` or ``pytensor.tensor.log``.
    log_weights : float
        ``Σ log w_i`` of prior weights (``V0`` then holds ``W⁻¹`` where ``I`` stood, and the
        other pieces are the whitened model's): subtracted, ``log|V0| = log|L_θ|² − Σ log w_i``.
    """
    m = n - p if reml else n
    logdet_v = logdet_v - log_weights
    if sigma2 is None:
        out = logdet_v + m * (1.0 + LOG2PI + log(r2 / m))
    else:
        out = logdet_v + m * (LOG2PI + log(sigma2)) + r2 / sigma2
    return out + logdet_x if reml else out
