"""Exact flat-prior posteriors of balanced designs, from their ANOVA factorisation.

For a balanced design with an intercept only, ``K'y`` splits into orthogonal contrasts, and the
REML likelihood is a product of kernels ``λ^(-df/2) exp(-SS/2λ)``:

* crossed, one observation per cell (Penicillin, a plates x b samples): ``λ_P = σ² + b τ_P²``
  (df a − 1), ``λ_S = σ² + a τ_S²`` (df b − 1), ``λ_E = σ²`` (df (a − 1)(b − 1));
* nested (Pastes, a batches x c casks x r samples): ``λ_A = σ² + r τ_c² + c r τ_b²`` (df a − 1),
  ``λ_B = σ² + r τ_c²`` (df a(c − 1)), ``λ_E = σ²`` (df a c (r − 1));
* crossed with replicates and their interaction (a rows x b columns x r per cell,
  ``(1 | row) + (1 | col) + (1 | row:col)``): ``λ_R = σ² + r τ_RC² + b r τ_R²`` (df a − 1),
  ``λ_C = σ² + r τ_RC² + a r τ_C²`` (df b − 1), ``λ_RC = σ² + r τ_RC²`` (df (a − 1)(b − 1)),
  ``λ_E = σ²`` (df a b (r − 1)); the flat posterior lives on ``λ_E ≤ λ_RC ≤ min(λ_R, λ_C)``.

Under flat priors on the variances the posterior is that product on the variances' orthant. One
variance's marginal is a one-dimensional integral after the others are integrated in closed form,

    ∫_x^∞ λ^(-ν) e^(-C/λ) dλ = C^(1-ν) Γ(ν-1) P(ν-1, C/x),
    ∫_0^x λ^(-ν) e^(-C/λ) dλ = C^(1-ν) Γ(ν-1) Q(ν-1, C/x)

(``ν = df/2``, ``C = SS/2``, P and Q the regularised incomplete gamma functions), and is
integrated here on a grid. ``test_bayes_exact`` checks the factorisation against hierlmm's REML
likelihood (a constant difference at any parameters) before these are used as references.
"""

from __future__ import annotations

import numpy as np
from scipy import special


def log_kernel(lam, ss, df):
    return -0.5 * df * np.log(lam) - ss / (2 * lam)


def _log_upper(x, ss, df):
    """log ∫_x^∞ kernel (up to a constant)."""
    return np.log(special.gammainc(df / 2 - 1, ss / 2 / x))


def _log_lower(x, ss, df):
    """log ∫_0^x kernel (up to a constant)."""
    return np.log(special.gammaincc(df / 2 - 1, ss / 2 / x))


def crossed_parts(df, response, row, col):
    Y = df.pivot(index=row, columns=col, values=response).to_numpy(dtype=float)
    a, b = Y.shape
    g = Y.mean()
    rows, cols = Y.mean(1, keepdims=True), Y.mean(0, keepdims=True)
    return {"a": a, "b": b, "P": (b * ((rows - g) ** 2).sum(), a - 1), "S": (a * ((cols - g) ** 2).sum(), b - 1),
            "E": (((Y - rows - cols + g) ** 2).sum(), (a - 1) * (b - 1))}


def nested_parts(df, response, outer, inner):
    """``inner`` labels unique within ``outer`` are not needed: cells are (outer, inner)."""
    cell = df.groupby([outer, inner], observed=True)[response]
    r = int(cell.size().iloc[0])
    cm = cell.mean()
    om = df.groupby(outer, observed=True)[response].mean()
    a, c = len(om), len(cm) // len(om)
    g = df[response].mean()
    ss_a = c * r * ((om - g) ** 2).sum()
    ss_b = r * ((cm - om.reindex(cm.index.get_level_values(0)).to_numpy()) ** 2).sum()
    ss_e = ((df[response].to_numpy() - cm.reindex(pd_index(df, outer, inner)).to_numpy()) ** 2).sum()
    return {"a": a, "c": c, "r": r, "A": (ss_a, a - 1), "B": (ss_b, a * (c - 1)), "E": (ss_e, a * c * (r - 1))}


def pd_index(df, outer, inner):
    import pandas as pd

    return pd.MultiIndex.from_arrays([df[outer], df[inner]])


def _quantiles(grid, log_density, probs):
    """Quantiles of a density on a log-spaced grid (``log_density`` per grid point)."""
    w = np.exp(log_density - log_density.max()) * grid  # d grid = grid d log(grid)
    cdf = np.cumsum((w[1:] + w[:-1]) / 2 * np.diff(np.log(grid)))
    cdf = np.concatenate([[0.0], cdf]) / cdf[-1]
    return np.interp(probs, cdf, grid)


def crossed_quantiles(parts, probs, which):
    """Quantiles of ``τ_P²`` (``which="P"``), ``τ_S²`` (``"S"``) or ``σ²`` (``"E"``)."""
    ss_e, df_e = parts["E"]
    s2 = ss_e / df_e * np.exp(np.linspace(-1.2, 1.2, 801))
    base = log_kernel(s2, *parts["E"])
    if which == "E":
        return _quantiles(s2, base + _log_upper(s2, *parts["P"]) + _log_upper(s2, *parts["S"]), probs)
    other = "S" if which == "P" else "P"
    mult = parts["b"] if which == "P" else parts["a"]
    w = base + _log_upper(s2, *parts[other]) + np.log(np.gradient(s2))
    t = np.geomspace(1e-8, 1e6, 6001)
    dens = special.logsumexp(w[None, :] + log_kernel(s2[None, :] + mult * t[:, None], *parts[which]), axis=1)
    return _quantiles(t, dens, probs)


def nested_quantiles(parts, probs, which):
    """Quantiles of ``τ_b²`` (``which="A"``), ``τ_c²`` (``"B"``) or ``σ²`` (``"E"``)."""
    r, c = parts["r"], parts["c"]
    if which == "A":  # λ_A = λ_B + c r τ_b²; λ_E ≤ λ_B integrated
        ss, df = parts["B"]
        lb = ss / df * np.exp(np.linspace(-3, 3, 1201))
        w = log_kernel(lb, *parts["B"]) + _log_lower(lb, *parts["E"]) + np.log(np.gradient(lb))
        t = np.geomspace(1e-8, 1e6, 6001)
        dens = special.logsumexp(w[None, :] + log_kernel(lb[None, :] + c * r * t[:, None], *parts["A"]), axis=1)
        return _quantiles(t, dens, probs)
    ss, df = parts["E"]
    le = ss / df * np.exp(np.linspace(-1.5, 1.5, 801))
    if which == "B":  # λ_B = λ_E + r τ_c²; λ_A ≥ λ_B integrated
        w = log_kernel(le, *parts["E"]) + np.log(np.gradient(le))
        t = np.geomspace(1e-8, 1e6, 6001)
        lb = le[None, :] + r * t[:, None]
        dens = special.logsumexp(w[None, :] + log_kernel(lb, *parts["B"]) + _log_upper(lb, *parts["A"]), axis=1)
        return _quantiles(t, dens, probs)
    # σ²: ∫_{λ_E}^∞ k_B(y) ∫_y^∞ k_A dy, on a grid of y
    ssb, dfb = parts["B"]
    y = np.geomspace(le[0], ssb / dfb * 50, 4001)
    inner = log_kernel(y, *parts["B"]) + _log_upper(y, *parts["A"]) + np.log(np.gradient(y))
    tail = np.logaddexp.accumulate(inner[::-1])[::-1]  # log ∫_{y_i}^∞
    return _quantiles(le, log_kernel(le, *parts["E"]) + np.interp(le, y, tail), probs)


def replicated_parts(df, response, row, col):
    """The four mean-square parts of a balanced two-way layout with ``r`` replicates per cell."""
    cells = df.groupby([row, col], observed=True)[response]
    r = int(cells.size().iloc[0])
    assert (cells.size() == r).all()
    M = cells.mean().unstack().to_numpy(dtype=float)  # cell means, a x b
    a, b = M.shape
    g = M.mean()
    rows, cols = M.mean(1, keepdims=True), M.mean(0, keepdims=True)
    resid = df[response].to_numpy(dtype=float) - cells.transform("mean").to_numpy(dtype=float)
    return {"a": a, "b": b, "r": r, "R": (b * r * ((rows - g) ** 2).sum(), a - 1),
            "C": (a * r * ((cols - g) ** 2).sum(), b - 1), "RC": (r * ((M - rows - cols + g) ** 2).sum(), (a - 1) * (b - 1)),
            "E": ((resid ** 2).sum(), a * b * (r - 1))}


def replicated_quantiles(parts, probs, which):
    """Quantiles of ``τ_R²`` (``which="R"``), ``τ_C²`` (``"C"``), ``τ_RC²`` (``"RC"``) or ``σ²``
    (``"E"``) under flat priors on the four variances: one or two integrals on grids, the
    others in closed form (the module's incomplete gammas)."""
    a, b, r = parts["a"], parts["b"], parts["r"]
    t = np.geomspace(1e-8, 1e6, 6001)
    if which in ("R", "C"):  # λ_which = λ_RC + mult τ²; λ_E ≤ λ_RC, the other λ ≥ λ_RC integrated
        other, mult = ("C", b * r) if which == "R" else ("R", a * r)
        ss, df = parts["RC"]
        lrc = ss / df * np.exp(np.linspace(-3, 3, 1201))
        w = (log_kernel(lrc, *parts["RC"]) + _log_lower(lrc, *parts["E"]) + _log_upper(lrc, *parts[other])
             + np.log(np.gradient(lrc)))
        dens = special.logsumexp(w[None, :] + log_kernel(lrc[None, :] + mult * t[:, None], *parts[which]), axis=1)
        return _quantiles(t, dens, probs)
    ss, df = parts["E"]
    le = ss / df * np.exp(np.linspace(-1.5, 1.5, 801))
    if which == "RC":  # λ_RC = λ_E + r τ²; λ_R, λ_C ≥ λ_RC integrated
        w = log_kernel(le, *parts["E"]) + np.log(np.gradient(le))
        lrc = le[None, :] + r * t[:, None]
        dens = special.logsumexp(w[None, :] + log_kernel(lrc, *parts["RC"]) + _log_upper(lrc, *parts["R"])
                                 + _log_upper(lrc, *parts["C"]), axis=1)
        return _quantiles(t, dens, probs)
    # σ²: k_E(s) ∫_s^∞ k_RC(y) U_R(y) U_C(y) dy, on a grid of y
    ssrc, dfrc = parts["RC"]
    y = np.geomspace(le[0], ssrc / dfrc * 50, 4001)
    inner = log_kernel(y, *parts["RC"]) + _log_upper(y, *parts["R"]) + _log_upper(y, *parts["C"]) + np.log(np.gradient(y))
    tail = np.logaddexp.accumulate(inner[::-1])[::-1]
    return _quantiles(le, log_kernel(le, *parts["E"]) + np.interp(le, y, tail), probs)


def replicated_log_posterior(parts, var_r, var_c, var_rc, sigma2):
    """The log of the flat posterior's kernel at the four variances (up to a constant)."""
    a, b, r = parts["a"], parts["b"], parts["r"]
    lam = {"E": sigma2, "RC": sigma2 + r * var_rc, "R": sigma2 + r * var_rc + b * r * var_r,
           "C": sigma2 + r * var_rc + a * r * var_c}
    return sum(log_kernel(lam[k], *parts[k]) for k in lam)
