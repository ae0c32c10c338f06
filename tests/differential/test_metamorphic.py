"""Metamorphic tests: every model of the differential suite refitted after transformations of its
data that must not change the answer (no R needed; it checks what R cannot).

For each case of :mod:`generator` (the differential suite's own draw, ``--models``/``--seed``),
with transformation parameters from a seeded stream:

* ``y_affine``: ``y → a·y + c`` (``|a|`` from 1e-12 to 1e12, either sign; ``|c|`` up to 1e12
  SDs; an ``offset(ofs)`` column scaled with y; for a ``log(y)`` response, ``y → a·y``, which
  shifts it by ``log a``). Exactly: θ and the correlations unchanged,
  σ and the BLUPs times ``|a|``, ``β → aβ + c e₀``, the log-likelihood less ``m log|a|`` (``m``
  the REML or ML count of the likelihood's dimension), the t statistics of the slopes times
  ``sign(a)``, every df unchanged.
* ``x_scale``: each covariate (fixed and random-slope: ``x``, ``z``, ``w``) times its own ``a``
  (1e-8 to 1e8). The same likelihood, σ, fitted values, t statistics, df and correlations.
* ``x_shift``: ``x → x + c``, ``z → z + c`` (1e6 to 1e10 SDs) where the model spans the same
  space after it (an intercept; ``x`` beside ``I(x^2)``; no ``(x || g)``, which is not
  shift-invariant): the same likelihood, σ and fitted values, and the same t and df of the
  coefficients the shift leaves alone (``conftest.untouched``).
* ``weights``: prior weights times ``k`` (1e-12 to 1e12): the same REML and ML likelihood
  (the ``|W|`` Jacobian cancels the scale), σ times ``√k``, β and t unchanged.
* ``relabel``: rows permuted (for AR(1) residuals, whose time is the row order within a group,
  whole groups), every factor's levels renamed in the same order (names such as ``"None"``,
  ``"NA"``, ``" a+b "``, ``"x:y"``): everything unchanged, row by row.
* ``dtypes``: the same values in other types: grouping factors as int8/uint16/Int64 codes,
  plain strings and pyarrow strings; integral weights as int16; the response and covariates as
  nullable Float64 or pyarrow doubles: everything unchanged.

Tolerances: the optimiser stops at a relative change of ~1e-8 in the criterion, so the
parameters agree to ~1e-5 of their SEs; a shift by ``c`` also costs the digits ``y`` or ``x``
no longer carry, ``ε|c|/SD`` of their SD, which is added to every tolerance.
"""

from __future__ import annotations

import itertools
import re
import warnings
import zlib

import numpy as np
import pandas as pd
import pytest
from conftest import _cases, untouched

import hierlmm as hl

EPS = np.finfo(float).eps
BASE = 2e-5  # the optimiser's relative precision in β/SE, t, fitted/σ
MAX_CASES = 120


@pytest.fixture(params=range(MAX_CASES))
def meta_case(request):
    """The first ordinary cases of the draw and up to 30 of its AR(1), covariance-structure and
    large ones (in turn)."""
    cases = _cases(request.config)
    kinds = [[c for c in cases if c.ar1], [c for c in cases if c.structure], [c for c in cases if "big" in c.notes]]
    special = [c for group in itertools.zip_longest(*kinds) for c in group if c is not None][:30]
    chosen = [c for c in cases if c not in special and not c.ar1 and not c.structure and "big" not in c.notes]
    chosen = chosen[: MAX_CASES - len(special)] + special
    if request.param >= len(chosen):
        pytest.skip("fewer cases in this draw")
    return chosen[request.param]


def _fit(case, data, weights=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hl.LMM(case.formula, data, weights=weights, **case.residual_arguments()).fit(
            method="REML" if case.reml else "ML")


def _stats(fit) -> dict:
    out = {"ll": fit.loglik, "sigma": fit.sigma, "beta": fit.fixef.to_numpy(), "theta": fit.theta.to_numpy(),
           "fitted": fit.fitted().to_numpy(), "index": fit.design.data.index.to_numpy(), "names": fit.fixef.index}
    try:
        ct = fit.coef_table()
        out.update(se=ct["se"].to_numpy(), t=ct["t"].to_numpy(), df=ct["df"].to_numpy())
    except hl.HierlmmError:  # a model without Satterthwaite's df (e.g. AR(1) residuals)
        out.update(se=fit.se.to_numpy(), t=None, df=None)
    return out


def _common_optimum(base, fit):
    """Both fits at one optimum: each re-optimised from the other's θ carried into its own
    coordinates, and kept where that is better. A covariate scaled by ``a`` scales the
    columns of ``Z`` that carry it (ratio of their RMS), and row ``r`` of each term's ``T`` by
    the inverse. Where the deviance is flat to 1e-8 along a direction (a correlation known to
    a few 1e-4: seed 31337's m0073, logLiks 3e-9 apart, correlations 3e-4 apart; seed 4242's
    y_affine of m0001, logLiks 1.1e-5 apart) two optimisers stop at different points of that
    valley; invariance is of the optimum. A transformation that leaves Z alone (y, rows,
    labels) leaves θ alone."""
    ratio = []
    for tb, tf in zip(base.design.terms, fit.design.terms):
        rb, rf = np.sqrt(np.mean(tb.Z**2, axis=0)), np.sqrt(np.mean(tf.Z**2, axis=0))
        # per parameter of the term's structure: a relative SD scales with its column's RMS
        ratio.append(tb.cov.par_scale(rf) / tb.cov.par_scale(rb))
    ratio = np.concatenate(ratio + [np.zeros(0)])  # (a gls has no terms)
    theta_b, theta_f = base.solution.theta, fit.solution.theta
    ratio = np.concatenate([ratio, np.ones(len(theta_b) - len(ratio))])  # a residual correlation's: unscaled

    def improved(result, theta0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            other = result.model.fit(method=result.method, theta0=theta0)
        return other if other.deviance < result.deviance else result

    return improved(base, theta_f * ratio), improved(fit, theta_b / ratio)


def _corrs(fit) -> np.ndarray:
    vc = fit.varcorr
    return vc.loc[vc["var2"].notna(), "sdcor"].to_numpy(dtype=float)


def _reml_basis(base, fit) -> float:
    """What the REML log-likelihood gains from X's basis: it holds ``−½ log|X'V⁻¹X|``, so with
    ``X_new = X_old M`` it moves by ``−log|det M|`` (lme4's too); 0 for ML."""
    if base.method != "REML" or base.design.p == 0:
        return 0.0
    M = np.linalg.lstsq(base.design.X, fit.design.X, rcond=None)[0]
    return -float(np.linalg.slogdet(M)[1])


def _corr_check(base, fit, tol):
    """Correlations of the random effects: undefined where an SD is 0 (a singular fit puts it
    at 0 or 1e-10 as it stops, the correlation then NaN or ±1), so compared on regular fits."""
    if not base.singular and not fit.singular:
        _check("correlations", _corrs(fit), _corrs(base), tol)


def _sigma_se(fit) -> float:
    """σ̂'s asymptotic SE, ``σ/√(2(n − p))``: the scale on which an optimum that stopped within
    its tolerance on a flat likelihood may differ (the criterion itself is compared tightly)."""
    return fit.sigma / np.sqrt(2 * max(fit.nobs - fit.design.p, 1))


def _blup_check(label, base, fit, order=None, tol=BASE * 100):
    """BLUPs on the scale of their conditional SDs (lme4's condVar): an intercept at x = 0 with
    x far from 0 is an extrapolation whose SD dwarfs σ, and so does its optimiser noise."""
    for (g, pa), (_, pb) in zip(base.ranef_posterior().items(), fit.ranef_posterior().items()):
        # a term at zero variance: BLUPs and SDs 0, up to rounding (1e-8 σ)
        _check(f"{label} {g}", pb.mean.to_numpy(), pa.mean.to_numpy(), tol, pa.sd.to_numpy() + 1e-8 * base.sigma)


def _m(fit) -> int:
    d = fit.design
    return d.n - d.p if fit.method == "REML" else d.n


def _slopes(names) -> np.ndarray:
    return np.array([n != "(Intercept)" for n in names])


def _check(label, got, want, tol, scale=1.0):
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    scale = np.broadcast_to(np.asarray(scale, dtype=float), want.shape)
    bad = ~(np.abs(got - want) <= tol * scale)
    bad &= ~(np.isnan(got) & np.isnan(want))
    assert not bad.any(), f"{label}: {got[bad][:4]} != {want[bad][:4]} (tol {tol:.2g} x {scale[bad][:4]})"


def _ll_tol(fit, delta: float = 0.0) -> float:
    """The log-likelihood's tolerance: the optimiser's (BASE·1e-3 of it), and for data rounded
    to ``delta`` of their SD per row (a shift), the ``~delta·√n`` that rounding moves it by."""
    return BASE * 1e-3 * max(1.0, abs(fit.loglik)) + 10 * delta * np.sqrt(fit.nobs)


def _compare_same(a: dict, b: dict, tol: float, slopes_only_t=None, t_sign: float = 1.0):
    """t and df, which a transformation leaves unchanged."""
    if a["t"] is not None and b["t"] is not None:
        keep = np.ones(len(a["t"]), bool) if slopes_only_t is None else slopes_only_t
        _check("t", b["t"][keep], t_sign * a["t"][keep], tol, np.maximum(1.0, np.abs(a["t"][keep])))
        _check("df", b["df"][keep], a["df"][keep], tol * 50, np.maximum(1.0, np.abs(a["df"][keep])))


def _base(case):
    """The case's own fit; a model hierlmm refuses (checked against R in test_fit) or whose
    fit did not converge has nothing invariant to compare."""
    try:
        fit = _fit(case, case.data, case.weights)
    except hl.HierlmmError as exc:
        pytest.skip(f"the model is refused: {exc}")
    if not fit.converged and not fit.singular:
        pytest.skip("the fit itself did not converge: nothing invariant to compare")
    return fit


def _draw(case, name):
    """The transformation's parameters: a stream fixed by the case and the transformation
    (zlib's CRC, not Python's hash, which changes from process to process)."""
    return np.random.default_rng([zlib.crc32(case.id.encode()), zlib.crc32(name.encode())])


def _intercept(case) -> bool:
    fixed = case.formula.split("~", 1)[1]
    return not re.search(r"(^|\+)\s*(0|-\s*1)\s*(\+|$)", fixed)


def test_y_affine(meta_case):
    case = meta_case
    base = _base(case)
    rng = _draw(case, "y")
    a = float(10 ** rng.uniform(-12, 12)) * (1 if rng.random() < 0.7 else -1)
    if "offset(2 * log(w))" in case.formula:
        a = 1.0  # the offset cannot scale with y
    sd = float(np.nanstd(case.data["y"]))
    c = float(rng.choice([1.0, 1e4, 1e8, 1e12])) * sd * abs(a) * rng.uniform(0.5, 1) if _intercept(case) else 0.0
    if case.formula.startswith("log(y)"):
        # y → a·y (a > 0) shifts the response log(y) by log a: the affine map (1, log a)
        a = abs(a)
        data = case.data.assign(y=a * case.data["y"])
        a, c, sd = 1.0, float(np.log(a)), float(np.nanstd(np.log(case.data["y"])))
    else:
        data = case.data.assign(y=a * case.data["y"] + c)
    if "ofs" in data:
        data["ofs"] = a * data["ofs"]
    fit = _fit(case, data, case.weights)
    base, fit = _common_optimum(base, fit)
    A, B = _stats(base), _stats(fit)
    delta = EPS * abs(c) / (abs(a) * sd)  # the rounding of the shifted y, in its SDs
    tol = BASE + 100 * delta
    _check("logLik", B["ll"], A["ll"] - _m(base) * np.log(abs(a)), 1.0, _ll_tol(base, delta))
    _check("sigma", B["sigma"], abs(a) * A["sigma"], tol * 50, abs(a) * _sigma_se(base))
    shift = np.where(np.array(A["names"]) == "(Intercept)", c, 0.0)
    _check("beta", B["beta"], a * A["beta"] + shift, tol * 10, abs(a) * A["se"])
    _check("fitted", B["fitted"], a * A["fitted"] + c, tol * 10, abs(a) * A["sigma"])
    _corr_check(base, fit, tol * 10)
    _compare_same(A, B, tol * 10, slopes_only_t=_slopes(A["names"]), t_sign=np.sign(a))


def test_x_scale(meta_case):
    case = meta_case
    base = _base(case)
    rng = _draw(case, "xs")
    data = case.data.copy()
    for col in ("x", "z", "w"):
        if col in data and re.search(rf"\b{col}\b", case.formula):
            data[col] = data[col] * float(10 ** rng.uniform(-8, 8))
    if "log(w)" in case.formula and not _intercept(case):
        pytest.skip("log(a w) = log a + log w needs an intercept")
    fit = _fit(case, data, case.weights)
    base, fit = _common_optimum(base, fit)
    A, B = _stats(base), _stats(fit)
    _check("logLik", B["ll"], A["ll"] + _reml_basis(base, fit), 1.0, _ll_tol(base))
    _check("sigma", B["sigma"], A["sigma"], BASE * 50, _sigma_se(base))
    _check("fitted", B["fitted"], A["fitted"], BASE * 10, A["sigma"])
    _corr_check(base, fit, BASE * 10)
    slopes = _slopes(A["names"]) if "log(w)" in case.formula else None  # log(a w) moves the intercept
    _compare_same(A, B, BASE * 10, slopes_only_t=slopes)


def test_x_shift(meta_case):
    case = meta_case
    if (not _intercept(case) or "||" in case.formula or "offset(2 * log(w))" in case.formula
            or re.search(r"\(0 \+[^|]*\bx\b", case.formula)):
        # (x || g) and (0 + x:e | g) lack the columns a shift of x moves into the term
        pytest.skip("the model is not invariant to a covariate's origin")
    # a covariate that is a term of its own (x beside I(x^2): the span of 1, x, x² is shift-free)
    cols = [c for c in ("x", "z") if re.search(rf"\b{c}\b", case.formula.replace("I(x^2)", ""))]
    if not cols:
        pytest.skip("no covariate that can be shifted")
    base = _base(case)
    rng = _draw(case, "xc")
    data = case.data.copy()
    square = "I(x^2)" in case.formula and "x" in cols
    rel = 0.0  # what a shifted column no longer carries, in its SDs
    for col in cols:
        # x² of x shifted by k SDs carries ε k² of its spread, x:f has 1/k of its norm beside f
        # (R's 1e-7 rule would drop it as aliased): k up to 1e5 there, else 1e10
        near = (square and col == "x") or f"{col}:" in case.formula
        k = float(10 ** rng.uniform(2, 5)) if near else float(10 ** rng.uniform(6, 10))
        data[col] = data[col] + k * float(np.nanstd(data[col]))
        rel = max(rel, k * k if square and col == "x" else k)
    fit = _fit(case, data, case.weights)
    if fit.deviance_function.collinear_terms():
        # a slope's covariate shifted so far that lme4's parametrisation of its term cannot carry
        # the fit (Deviance.collinear_terms): it must say so, never report a converged fit
        assert not fit.converged and any("nearly collinear" in m for m in fit.opt.messages)
        return
    A, B = _stats(base), _stats(fit)
    tol = BASE * 10 + 100 * EPS * rel
    _check("logLik", B["ll"], A["ll"] + _reml_basis(base, fit), 1.0, _ll_tol(base, EPS * rel))
    _check("sigma", B["sigma"], A["sigma"], tol * 50, _sigma_se(base))
    _check("fitted", B["fitted"], A["fitted"], tol, A["sigma"])
    # the coefficients the shift leaves alone (a slope of x, x:f; not the intercept at x = 0);
    # their df only off the boundary, where the deviance's Hessian does not depend on coordinates
    if not base.singular and not fit.singular:
        keep = np.zeros(len(A["names"]), bool)
        keep[untouched(base, fit)] = True
        _compare_same(A, B, tol, slopes_only_t=keep)


def test_weights_scale(meta_case):
    case = meta_case
    if case.weights is None:
        pytest.skip("no prior weights")
    base = _base(case)
    k = float(10 ** _draw(case, "w").uniform(-12, 12))
    fit = _fit(case, case.data.assign(pw=case.data["pw"] * k), case.weights)
    A, B = _stats(base), _stats(fit)
    _check("logLik", B["ll"], A["ll"], 1.0, _ll_tol(base))
    _check("sigma", B["sigma"], np.sqrt(k) * A["sigma"], BASE * 50, np.sqrt(k) * _sigma_se(base))
    _check("beta", B["beta"], A["beta"], BASE * 10, A["se"])
    _compare_same(A, B, BASE * 10)


_AWKWARD = ["None", "NA", " a+b ", "x:y", "null", "1", "1.0", "`q`", "ä ö", "-", "TRUE", "nan"]


def _relabel(col: pd.Series, rng) -> pd.Series:
    cats = list(col.cat.categories)
    new = [f"{_AWKWARD[j % len(_AWKWARD)]}{'' if j < len(_AWKWARD) else j}" for j in range(len(cats))]
    rng.shuffle(new)  # new names in another lexical order; the category order is kept
    return col.cat.rename_categories(dict(zip(cats, new)))


def test_relabel_and_permute(meta_case):
    case = meta_case
    base = _base(case)
    rng = _draw(case, "perm")
    data = case.data.copy()
    for c in data.columns:
        if isinstance(data[c].dtype, pd.CategoricalDtype):
            data[c] = _relabel(data[c], rng)
    if case.ar1:  # AR(1)'s time is the row order within a group: whole groups permuted, in order
        codes = data["g"].cat.codes.to_numpy()
        order = rng.permutation(codes.max() + 1)
        data = data.iloc[np.argsort(np.argsort(order)[codes], kind="stable")]
    else:
        data = data.iloc[rng.permutation(len(data))]
    fit = _fit(case, data, case.weights)
    base, fit = _common_optimum(base, fit)  # (relabelled levels may permute θ: a poor start then, kept only if better)
    A, B = _stats(base), _stats(fit)
    _check("logLik", B["ll"], A["ll"], 1.0, _ll_tol(base))
    _check("beta", B["beta"], A["beta"], BASE * 10, A["se"])
    order = pd.Series(np.arange(len(B["index"])), index=B["index"]).reindex(A["index"]).to_numpy()
    _check("fitted", B["fitted"][order], A["fitted"], BASE * 10, A["sigma"])
    _compare_same(A, B, BASE * 10)
    _blup_check("BLUPs", base, fit)


def test_dtypes(meta_case):
    case = meta_case
    base = _base(case)
    rng = _draw(case, "dt")
    data = case.data.copy()
    kinds = ["int8", "uint16", "Int64", "str", "string[pyarrow]", "int64"]
    for c in ("g", "h"):
        if c in data:
            kind = kinds[int(rng.integers(len(kinds)))]
            codes = data[c].cat.codes
            if kind == "str":
                data[c] = data[c].astype(str)
            elif kind == "string[pyarrow]":
                data[c] = data[c].astype(str).astype("string[pyarrow]")
            else:  # codes as numbers: the same order
                data[c] = codes.astype(kind)
    if case.weights and np.all(np.mod(data["pw"], 1) == 0):
        data["pw"] = data["pw"].astype(np.int16)
    for c in ("y", "x", "z"):  # the same doubles as pandas' nullable or pyarrow's
        if c in data and rng.random() < 0.5:
            data[c] = data[c].astype(["Float64", "double[pyarrow]"][int(rng.integers(2))])
    fit = _fit(case, data, case.weights)
    A, B = _stats(base), _stats(fit)
    _check("logLik", B["ll"], A["ll"], 1.0, _ll_tol(base))
    _check("beta", B["beta"], A["beta"], BASE * 10, A["se"])
    _check("fitted", B["fitted"], A["fitted"], BASE * 10, A["sigma"])
    _compare_same(A, B, BASE * 10)


def test_x_shift_where_the_newton_polish_could_not_solve():
    """Seed 31337's m0079, ``y ~ z + x + (1 + x | g) + (1 | h)`` on 44 rows with x and z shifted
    as test_x_shift shifts them: the convergence check's Newton polish met a Hessian numpy's
    solve refused, and fit() raised LinAlgError; now the step is skipped and the shifted fit is
    the same model as the original (every check of test_x_shift)."""
    from generator import generate

    case = next(c for c in generate(31337, 100) if c.id == "m0079")
    test_x_shift(case)
