"""Random but valid linear mixed models and data sets, for the differential tests against R.

:func:`generate` draws ``n`` cases from a seeded grammar covering what hierlmm accepts:

* random parts: intercepts ``(1 | g)``, correlated slopes ``(x | g)``, uncorrelated slopes
  ``(x || g)``, slopes on a factor ``(0 + f | g)``, nesting ``(1 | g/h)``, an explicit
  interaction ``(1 | g:h)``, crossed terms ``(1 | g) + (1 | h)`` with or without a slope;
* fixed parts: numeric covariates (one on a scale drawn from 1e-8 to 1e8), unordered and
  ordered factors, interactions, ``I(x^2)`` and ``log(w)`` written as R users write them;
* data: unbalanced groups, groups of size one, missing values in the response and the
  covariates, random-effect variances that are sometimes zero (singular fits), responses on
  scales from 1e-2 to 1e3; REML and ML;
* prior weights (lme4's ``weights=``, a column ``pw``: counts or spread-out positive numbers,
  the residual SD σ/√pw) and offsets (``offset(ofs)``, ``offset(2 * log(w))``). These are
  drawn from a second stream, so adding them left every other choice of a seed unchanged.
* from a third stream (:func:`_reshape`), the shapes users' data have: level names such as
  ``None``, ``NA``, `` a+b ``, ``TRUE``, ``1.5``; a random slope's covariate on a scale 1e-3
  to 1e3 and a location up to 30 SDs from 0, a response up to 1e6 SDs from 0; ``log(y)``
  responses, ``poly(x, 2)``, a factor × factor fixed interaction; three-level nesting
  ``(1 | g/h/k)``, three crossed factors, three numeric slopes ``(x + v | g)``, slopes on two
  factors; AR(1) with a random slope; a few cases of 2000–4000 rows; and ``predict()`` on new
  data with a level the fit has not seen.

A fourth stream draws covariance-structure cases (:func:`_structured_case`: glmmTMB's ``us``,
``diag``, ``cs``, ``ar1``, ``toep`` and nlme's ``homcs``/``homdiag`` around a term on repeated
measures), which R fits with glmmTMB or nlme.

Every formula is written once, in lme4's syntax, and given unchanged to both lme4 and
hierlmm. A case carries flags for the costlier comparisons (Kenward–Roger, profile
intervals, a likelihood-ratio test of a nested pair, nlme's AR(1)).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["Case", "generate"]


@dataclass
class Case:
    """One model and its data.

    Attributes
    ----------
    id : str
    formula : str
        lme4 syntax, identical for R and hierlmm.
    data : DataFrame
        Factors as pandas ``Categorical`` (``ordered=True`` for ordered factors).
    reml : bool
    kr, profile : bool
        Also compare Kenward–Roger tables / profile intervals.
    lrt_drop, small_formula : str or None
        A fixed-effects term to drop for a likelihood-ratio test of the nested pair, and the
        formula without it.
    ar1 : bool
        Fit with AR(1) residuals within the grouping factor (nlme's ``lme`` + ``corAR1``).
    weights : str or None
        The column of prior weights (``weights=`` of both lme4 and hierlmm).
    rescale : str or None
        A covariate on a scale far from 1: R also fits the model with it divided by its SD
        (the same hypotheses in other units), since lmerTest's contrasts use absolute
        thresholds and change with the units.
    centre : str or None
        A random slope's covariate far from 0: R also fits the model with it standardised,
        ``(x - mean) / SD``, a reparametrisation (the fixed part spans the same space). lmerTest
        and pbkrtest differentiate in lme4's θ, where the intercept at 0 and the slope then
        correlate near ±1 and numDeriv's Hessian misleads; in the standardised refit they do
        not. hierlmm is compared with that refit on the same standardised data, and on its own
        data for the coefficients the reparametrisation leaves alone.
    """

    id: str
    formula: str
    data: pd.DataFrame
    reml: bool
    kr: bool = False
    profile: bool = False
    lrt_drop: str | None = None
    small_formula: str | None = None
    ar1: bool = False
    rescale: str | None = None
    centre: str | None = None
    weights: str | None = None
    notes: list[str] = field(default_factory=list)
    newdata: pd.DataFrame | None = None  # predict() on it (lme4: allow.new.levels = TRUE)
    ar1_random: str = "1"  # the random part of an AR(1) case (nlme: random = ~ <this> | g)
    structure: str | None = None  # a covariance-structure case: glmmTMB's (or nlme's) fit of it
    struct_expr: str = ""  # its term's left side (nlme: random = list(g = pd*(~ <this>)))

    def residual_arguments(self) -> dict:
        """``residual=`` and ``variance=`` of hierlmm's fit of this case: AR(1) within g, or the
        MMRM's unstructured covariance over the visits f within g (nlme's gls with corSymm and
        varIdent)."""
        import hierlmm as hl

        if self.ar1:
            return {"residual": hl.AR1()}
        if self.structure == "mmrm":
            return {"residual": hl.Unstructured(time="f", group="g"), "variance": hl.VarIdent("f")}
        return {}


RANDOM_KINDS = ["int", "slope", "uncorr", "fslope", "nested", "inter", "crossed", "crossed_slope"]


def _sizes(rng, m: int, mean: float) -> np.ndarray:
    """Unbalanced group sizes, some groups of size one."""
    sizes = 1 + rng.poisson(mean - 1, size=m)
    if rng.random() < 0.5:
        sizes[rng.choice(m, size=max(1, m // 6), replace=False)] = 1
    return sizes


def _factor(values, levels, ordered=False) -> pd.Categorical:
    return pd.Categorical(values, categories=levels, ordered=ordered)


def _levels(prefix: str, k: int) -> list[str]:
    return [f"{prefix}{j + 1:02d}" for j in range(k)]


def _crossed_factor(rng, d: pd.DataFrame, name: str, n: int, high: int) -> np.ndarray:
    """A crossed grouping factor ``name`` of 3 to ``high - 1`` levels added to ``d``, and its
    random intercepts' contribution to the linear predictor (the draws in one fixed order, so a
    generator that calls it draws what it drew before)."""
    m = int(rng.integers(3, high))
    levels = _levels(name, m)
    codes = rng.integers(0, m, n)
    d[name] = _factor(np.array(levels)[codes], levels)
    return float(np.exp(rng.normal(-0.3, 0.5))) * rng.normal(size=m)[codes]


def _cov(rng, k: int, scale: float, zero: bool) -> np.ndarray:
    """A random k x k covariance; ``zero`` makes it singular (a zero variance)."""
    A = rng.normal(size=(k, k))
    D = A @ A.T / k + 0.2 * np.eye(k)
    sd = scale * np.exp(rng.normal(0, 0.5, size=k))
    D = D / np.sqrt(np.outer(np.diag(D), np.diag(D))) * np.outer(sd, sd)
    if zero:
        D[:, 0] = D[0, :] = 0.0
    return D


def _case(rng, i: int, extra=None) -> Case:
    kind = RANDOM_KINDS[i % len(RANDOM_KINDS)] if rng.random() < 0.7 else str(rng.choice(RANDOM_KINDS))
    m = int(rng.integers(5, 26))
    mean = float(rng.uniform(2.5, 9))
    if kind == "fslope":
        mean = max(mean, 6.0)
    sizes = _sizes(rng, m, mean)
    if kind in ("fslope", "slope", "uncorr", "crossed_slope"):
        sizes[sizes < 2] = 2  # a slope needs some within-group spread somewhere
    n = int(sizes.sum())
    g_levels = _levels("g", m)
    g = np.repeat(np.arange(m), sizes)
    d = pd.DataFrame({"g": _factor(np.array(g_levels)[g], g_levels)})

    # covariates
    d["x"] = rng.normal(0, 1, n) + rng.normal(0, 0.5, m)[g]
    d["w"] = np.exp(rng.normal(0, 0.6, n))
    zscale = 10.0 ** rng.integers(-8, 9) if rng.random() < 0.3 else 10.0 ** rng.uniform(-1, 1)
    d["z"] = rng.normal(0, 1, n) * zscale
    kf = int(rng.integers(2, 5))
    f_levels = _levels("f", kf)
    d["f"] = _factor(np.array(f_levels)[rng.integers(0, kf, n)], f_levels)
    ko = int(rng.integers(3, 6))
    o_levels = _levels("o", ko)
    d["o"] = _factor(np.array(o_levels)[rng.integers(0, ko, n)], o_levels, ordered=True)

    # second grouping factor
    if kind in ("nested", "inter"):
        per = rng.integers(2, 4, size=m)
        hmax = int(per.max())
        h = np.concatenate([rng.integers(0, per[j], size=sizes[j]) for j in range(m)])
        h_levels = _levels("h", hmax)
        d["h"] = _factor(np.array(h_levels)[h], h_levels)
    elif kind in ("crossed", "crossed_slope"):
        mh = int(rng.integers(3, 12))
        h_levels = _levels("h", mh)
        d["h"] = _factor(np.array(h_levels)[rng.integers(0, mh, n)], h_levels)

    # fixed part: a random subset of terms, R's spelling
    pool = ["x", "z", "f", "o", "x:f", "I(x^2)", "log(w)", "x:o"]
    weights = np.array([5, 3, 3, 2, 1.5, 1.5, 1.5, 0.7])
    nterm = int(rng.integers(1, 5))
    chosen = list(rng.choice(pool, size=nterm, replace=False, p=weights / weights.sum()))
    if "x:f" in chosen:
        chosen = [t for t in chosen if t != "x:f"] + ["x", "f"]
        chosen = list(dict.fromkeys(chosen)) + ["x:f"]
    if "x:o" in chosen:
        chosen = [t for t in chosen if t != "x:o"] + ["x", "o"]
        chosen = list(dict.fromkeys(chosen)) + ["x:o"]
    if kind == "fslope" and "f" not in chosen:
        chosen.append("f")
    if kind in ("slope", "uncorr", "crossed_slope") and "x" not in chosen:
        chosen.insert(0, "x")
    chosen = list(dict.fromkeys(chosen))
    fixed = " + ".join(chosen)

    random = {
        "int": "(1 | g)",
        "slope": "(x | g)",
        "uncorr": "(x || g)",
        "fslope": "(0 + f | g)",
        "nested": "(1 | g/h)",
        "inter": "(1 | g) + (1 | g:h)",
        "crossed": "(1 | g) + (1 | h)",
        "crossed_slope": "(1 + x | g) + (1 | h)",
    }[kind]

    # simulate the response
    X = np.column_stack([np.ones(n), d["x"], d["z"] / d["z"].std(), np.log(d["w"]), d["x"] ** 2,
                         d["f"].cat.codes, d["o"].cat.codes])
    beta = rng.normal(0, 1, X.shape[1])
    sigma = 1.0
    singular = rng.random() < 0.15
    eta = X @ beta
    if kind in ("slope", "uncorr", "crossed_slope"):
        D = _cov(rng, 2, 1.0, singular)
        if kind == "uncorr":
            D[0, 1] = D[1, 0] = 0.0
        b = rng.multivariate_normal(np.zeros(2), D, size=m)
        eta += b[g, 0] + b[g, 1] * d["x"].to_numpy()
    elif kind == "fslope":
        D = _cov(rng, kf, 1.0, singular)
        b = rng.multivariate_normal(np.zeros(kf), D, size=m)
        eta += b[g, d["f"].cat.codes.to_numpy()]
    else:
        tau = 0.0 if singular else float(np.exp(rng.normal(0, 0.7)))
        eta += tau * rng.normal(size=m)[g]
    if "h" in d:
        hc = d["h"].cat.codes.to_numpy()
        if kind in ("nested", "inter"):
            key = g * 10 + hc
            _, inv = np.unique(key, return_inverse=True)
            eta += float(np.exp(rng.normal(-0.5, 0.6))) * rng.normal(size=inv.max() + 1)[inv]
        else:
            eta += float(np.exp(rng.normal(-0.3, 0.6))) * rng.normal(size=hc.max() + 1)[hc]
    yscale = 10.0 ** rng.uniform(-2, 3)
    noise = rng.normal(size=n)
    weighted = extra is not None and extra.random() < 0.25
    offset = str(extra.choice(["offset(ofs)", "offset(2 * log(w))"])) if extra is not None and extra.random() < 0.2 else ""
    if weighted:
        pw = extra.integers(1, 9, n).astype(float) if extra.random() < 0.5 else np.exp(extra.normal(0, 1, n))
        d["pw"] = pw
        noise = noise / np.sqrt(pw)
    d["y"] = (eta + sigma * noise) * yscale + rng.normal(0, 3) * yscale
    if offset == "offset(ofs)":
        d["ofs"] = extra.normal(0, 2, n) * yscale
        d["y"] += d["ofs"]
    elif offset:
        d["y"] += 2 * np.log(d["w"])

    notes = [kind] + (["weights"] if weighted else []) + (["offset"] if offset else [])
    if offset:
        fixed = f"{fixed} + {offset}"
    if rng.random() < 0.2:
        for col in rng.choice(["y", "x", "w", "f"], size=2, replace=False):
            rows = rng.choice(n, size=max(1, n // 30), replace=False)
            d.loc[rows, col] = np.nan
        notes.append("missing")
    reml = bool(rng.random() < 0.6)
    lrt = chosen[-1] if len(chosen) >= 2 and rng.random() < 0.35 else None
    case = Case(
        id=f"m{i:04d}",
        formula=f"y ~ {fixed} + {random}",
        data=d[["y"] + [c for c in d.columns if c != "y"]],
        reml=reml,
        # pbkrtest ignores prior weights (its V is ZDZ' + σ²I): no reference for weighted KR
        kr=reml and n <= 350 and not weighted,
        profile=bool(n <= 180 and rng.random() < 0.25),
        lrt_drop=lrt,
        small_formula=f"y ~ {' + '.join(chosen[:-1] + ([offset] if offset else []))} + {random}" if lrt else None,
        rescale="z" if "z" in chosen and not 1e-3 < d["z"].std() < 1e3 else None,
        weights="pw" if weighted else None,
        notes=notes,
    )
    return case


def _ar1_case(rng, i: int, shape=None) -> Case:
    """A random-intercept model (from the third stream, sometimes a random slope) with AR(1)
    residuals in time order within each group."""
    m = int(rng.integers(6, 20))
    t = int(rng.integers(4, 9))
    g_levels = _levels("g", m)
    g = np.repeat(np.arange(m), t)
    n = m * t
    x = rng.normal(0, 1, n)
    phi = float(rng.uniform(-0.3, 0.85))
    e = np.empty(n)
    for j in range(m):
        z = rng.normal(size=t)
        e[j * t] = z[0]
        for s in range(1, t):
            e[j * t + s] = phi * e[j * t + s - 1] + np.sqrt(1 - phi**2) * z[s]
    tau = float(np.exp(rng.normal(0, 0.5)))
    y = 1 + 0.5 * x + tau * rng.normal(size=m)[g] + e
    d = pd.DataFrame({"y": y, "x": x, "g": _factor(np.array(g_levels)[g], g_levels)})
    slope = shape is not None and shape.random() < 0.4
    if slope:
        d["y"] += shape.normal(0, 0.6, m)[g] * x
    return Case(id=f"a{i:04d}", formula=f"y ~ x + ({'x' if slope else '1'} | g)", data=d,
                reml=bool(rng.random() < 0.7), ar1=True, notes=["ar1"] + (["ar1-slope"] if slope else []),
                ar1_random="x" if slope else "1")


STRUCTURES_TMB = ["us", "diag", "cs", "ar1", "toep"]  # glmmTMB 1.1.5's
STRUCTURES_NLME = ["homcs", "homdiag"]  # nlme's pdCompSymm, pdIdent


def _structured_D(rng, kind: str, k: int, singular: bool) -> np.ndarray:
    """A covariance of structure ``kind`` over ``k`` columns (an SD 0 when ``singular``)."""
    sd = np.exp(rng.normal(0, 0.5, k))
    if kind.startswith("hom") or kind == "ar1":
        sd[:] = sd[0]
    if singular:
        sd[0 if not (kind.startswith("hom") or kind == "ar1") else slice(None)] = 0.0
    i = np.arange(k)
    lag = np.abs(i[:, None] - i[None, :])
    if kind in ("diag", "homdiag"):
        R = np.eye(k)
    elif kind in ("cs", "homcs"):
        rho = rng.uniform(-0.3 / (k - 1), 0.9)
        R = np.where(lag == 0, 1.0, rho)
    elif kind == "ar1":
        R = rng.uniform(-0.5, 0.9) ** lag
    elif kind == "toep":
        from hierlmm.covariance.toeplitz import autocorrelations

        r = np.concatenate([[1.0], autocorrelations(rng.uniform(-0.5, 0.8, k - 1))])
        R = r[lag]
    else:
        A = rng.normal(size=(k, k))
        C = A @ A.T / k + 0.2 * np.eye(k)
        R = C / np.sqrt(np.outer(np.diag(C), np.diag(C)))
    return R * np.outer(sd, sd)


def _structured_case(rng, i: int) -> Case:
    """A random term with a covariance structure (hierlmm.covariance) on repeated measures:
    ``s(0 + f | g)`` over 3-5 ordered visits with 1-3 replicates per visit and some visits
    missing, or ``diag``/``homdiag(1 + x | g)``; with glmmTMB's structures sometimes a crossed
    ``(1 | h)`` too. R fits it with glmmTMB (nlme's lme for homcs/homdiag) in the same process."""
    kinds = STRUCTURES_TMB + STRUCTURES_NLME + ["mmrm"]
    kind = kinds[i % len(kinds)] if rng.random() < 0.7 else str(rng.choice(kinds))
    if kind == "mmrm":
        return _mmrm_case(rng, i)
    m = int(rng.integers(6, 26))
    kf = int(rng.integers(3, 6))
    f_levels = [f"v{j + 1}" for j in range(kf)]
    rows = []
    for j in range(m):
        for v in range(kf):
            if rng.random() < 0.12:  # a missed visit
                continue
            rows += [(j, v)] * int(rng.integers(1, 4))
    g, v = np.array(rows).T
    n = len(g)
    g_levels = _levels("g", m)
    d = pd.DataFrame({"g": _factor(np.array(g_levels)[g], g_levels), "f": _factor(np.array(f_levels)[v], f_levels),
                      "x": rng.normal(0, 1, n) + rng.normal(0, 0.3, m)[g]})
    slope = kind in ("diag", "homdiag") and rng.random() < 0.4
    expr = "1 + x" if slope else "0 + f"
    k = 2 if slope else kf
    singular = rng.random() < 0.12
    D = _structured_D(rng, kind, k, singular)
    b = rng.multivariate_normal(np.zeros(k), D, size=m, method="eigh")
    Z = np.column_stack([np.ones(n), d["x"]]) if slope else np.eye(kf)[v]
    beta = rng.normal(0, 1, kf + 1)
    eta = beta[0] + beta[1] * d["x"].to_numpy() + np.concatenate([[0.0], beta[2:]])[v] + np.einsum("ik,ik->i", Z, b[g])
    random = f"{kind}({expr} | g)"
    notes = ["structured", kind]
    if kind in STRUCTURES_TMB and rng.random() < 0.3:
        eta += _crossed_factor(rng, d, "h", n, 9)
        random += " + (1 | h)"
        notes.append("crossed")
    yscale = 10.0 ** rng.uniform(-2, 3)
    d["y"] = (eta + rng.normal(size=n)) * yscale + rng.normal(0, 3) * yscale
    fixed = "f + x" if not slope or rng.random() < 0.5 else "x"
    return Case(id=f"s{i:04d}", formula=f"y ~ {fixed} + {random}", data=d[["y", "g", "f", "x"] + (["h"] if "h" in d else [])],
                reml=bool(rng.random() < 0.6), structure=kind, struct_expr=expr, notes=notes)


def _mmrm_case(rng, i: int) -> Case:
    """The MMRM: no random effects, an unstructured covariance of the 3-5 visits f within a
    subject g (nlme's gls with corSymm and varIdent), each visit at most once, some missed."""
    m = int(rng.integers(12, 40))
    kf = int(rng.integers(3, 6))
    f_levels = [f"v{j + 1}" for j in range(kf)]
    A = rng.normal(size=(kf, kf))
    S = A @ A.T / kf + 0.3 * np.eye(kf)
    sd = np.exp(rng.normal(0, 0.4, kf))
    S = S / np.sqrt(np.outer(np.diag(S), np.diag(S))) * np.outer(sd, sd)
    rows = [(j, v) for j in range(m) for v in range(kf) if rng.random() > 0.1]
    g, v = np.array(rows).T
    arm = (np.arange(m) % 2)[g]
    e = rng.multivariate_normal(np.zeros(kf), S, size=m)[g, v]
    beta = rng.normal(0, 1, (2, kf))
    yscale = 10.0 ** rng.uniform(-2, 3)
    g_levels = _levels("g", m)
    d = pd.DataFrame({"y": (beta[arm, v] + e) * yscale, "g": _factor(np.array(g_levels)[g], g_levels),
                      "f": _factor(np.array(f_levels)[v], f_levels),
                      "a": _factor(np.array(["a1", "a2"])[arm], ["a1", "a2"])})
    return Case(id=f"s{i:04d}", formula="y ~ a * f", data=d, reml=bool(rng.random() < 0.7), structure="mmrm",
                notes=["structured", "mmrm"])


AWKWARD = ["None", "NA", " a+b ", "TRUE", "1.5", "null", "a b", "é", "-1", "nan", "`q`", "0"]


def _awkward(col: pd.Categorical, rng) -> pd.Categorical:
    """The same factor with its levels renamed (order kept) to names that look like missing
    values, numbers, booleans or formula syntax."""
    names = [f"{AWKWARD[j % len(AWKWARD)]}{'' if j < len(AWKWARD) else j}" for j in range(len(col.categories))]
    rng.shuffle(names)
    return col.rename_categories(names)


def _newdata(d: pd.DataFrame, rng) -> pd.DataFrame | None:
    """Rows of the data with a new level of ``g`` in every other row, for ``predict()``."""
    rows = d.dropna()
    if len(rows) < 4:
        return None
    nd = rows.iloc[rng.permutation(len(rows))[: min(20, len(rows))]].copy()
    g = nd["g"].cat.add_categories(["brand_new"])
    g[::2] = "brand_new"
    nd["g"] = g
    return nd.drop(columns="y")


def _reshape(case: Case, rng) -> Case:
    """The third stream's changes to a case (module doc); the model stays one both fit."""
    d = case.data.copy()
    kind = case.notes[0]
    n = len(d)
    rand = case.formula.split(" + (", 1)[1]
    fixed = case.formula.split("~", 1)[1].split(" + (", 1)[0].strip()
    random = "(" + rand
    g = d["g"].cat.codes.to_numpy()
    extra_eta = np.zeros(n)
    if kind == "nested" and rng.random() < 0.4:  # (1 | g/h/k)
        k = rng.integers(0, 2, n)
        d["k"] = _factor(np.array(["k01", "k02"])[k], ["k01", "k02"])
        key = (g * 10 + d["h"].cat.codes.to_numpy()) * 10 + k
        _, inv = np.unique(key, return_inverse=True)
        extra_eta += float(np.exp(rng.normal(-0.5, 0.5))) * rng.normal(size=inv.max() + 1)[inv]
        random = "(1 | g/h/k)"
        case.notes.append("nested3")
    elif kind == "crossed" and rng.random() < 0.4:  # a third crossed factor
        extra_eta += _crossed_factor(rng, d, "k", n, 8)
        random += " + (1 | k)"
        case.notes.append("crossed3")
    elif kind == "slope" and rng.random() < 0.4:  # three numeric effects per level
        d["v"] = rng.normal(0, 1, n)
        extra_eta += rng.normal(0, 0.5, d["g"].cat.categories.size)[g] * d["v"].to_numpy()
        fixed += " + v"
        random = "(x + v | g)"
        case.notes.append("slope3")
    elif kind == "fslope" and rng.random() < 0.4:  # slopes on two factors: x's slope per level of e
        # ((0 + e | g) beside (0 + f | g) would not be identifiable: both spans hold the intercept)
        ke = 2
        e = rng.integers(0, ke, n)
        d["e"] = _factor(np.array(["e01", "e02"])[e], ["e01", "e02"])
        extra_eta += rng.normal(0, 0.7, (d["g"].cat.categories.size, ke))[g, e] * np.nan_to_num(d["x"].to_numpy())
        fixed += " + e + x:e" if "x" in fixed.split(" + ") else " + e + x + x:e"
        random += " + (0 + x:e | g)"
        case.notes.append("fslope2")
    if rng.random() < 0.15 and "f" in d and "f" in fixed.split(" + ") and "e" not in d:  # factor x factor
        e = rng.integers(0, 3, n)
        d["e"] = _factor(np.array(["e1", "e2", "e3"])[e], ["e1", "e2", "e3"])
        extra_eta += rng.normal(0, 0.5, 3)[e]
        fixed += " + e + f:e"
        case.notes.append("fxf")
    yscale = float(np.nanstd(d["y"])) or 1.0
    d["y"] = d["y"] + extra_eta * yscale
    # a random slope's covariate in other units, away from 0 (y stays: the model is the same)
    if re.search(r"\(\s*(1 \+ )?x\b", random) and "||" not in random and rng.random() < 0.35:
        d["x"] = d["x"] * 10 ** rng.uniform(-3, 3)
        shift = rng.uniform(-30, 30) * float(np.nanstd(d["x"]))
        # away from 0 only where that is a reparametrisation (I(x^2) without x is not)
        if "I(x^2)" not in fixed.split(" + ") or "x" in fixed.split(" + "):
            d["x"] = d["x"] + shift
            case.centre = "x"
        case.notes.append("x-units")
    response = "y"
    if rng.random() < 0.1 and "offset" not in fixed:  # log(y): a transformed response
        d["y"] = np.exp((d["y"] - np.nanmean(d["y"])) / (2 * yscale))
        response = "log(y)"
        case.notes.append("log-y")
    elif rng.random() < 0.3 and "offset" not in fixed:  # far from 0
        d["y"] = d["y"] + 10 ** rng.uniform(1, 6) * yscale
        case.notes.append("y-location")
    if ("I(x^2)" in fixed and "x:" not in fixed and not d["x"].isna().any() and rng.random() < 0.5):
        fixed = " + ".join(t for t in fixed.replace("I(x^2)", "poly(x, 2)").split(" + ") if t != "x")
        case.notes.append("poly")
    if rng.random() < 0.3:
        for col in ("g", "f"):
            if col in d and not (col == "g" and ":" in random):
                d[col] = _awkward(d[col].array, rng)
        case.notes.append("awkward-levels")
    case.data = d
    case.formula = f"{response} ~ {fixed} + {random}"
    if case.small_formula is not None:
        case.lrt_drop = case.small_formula = None  # the fixed part has changed
    if case.rescale and case.rescale not in case.formula:
        case.rescale = None
    if rng.random() < 0.3:
        case.newdata = _newdata(d, rng)
    return case


def _big_case(rng, i: int) -> Case:
    """2000-4000 rows: a crossed model with a random slope."""
    m, mh = int(rng.integers(80, 160)), int(rng.integers(10, 40))
    n = int(rng.integers(2000, 4001))
    g, h = rng.integers(0, m, n), rng.integers(0, mh, n)
    gl, hl = _levels("g", m), _levels("h", mh)
    x = rng.normal(0, 1, n)
    b = rng.multivariate_normal([0, 0], [[1, 0.3], [0.3, 0.5]], size=m)
    y = 2 + 0.5 * x + b[g, 0] + b[g, 1] * x + 0.7 * rng.normal(size=mh)[h] + rng.normal(size=n)
    f = rng.integers(0, 3, n)
    d = pd.DataFrame({"y": y, "x": x, "f": _factor(np.array(["f01", "f02", "f03"])[f], ["f01", "f02", "f03"]),
                      "g": _factor(np.array(gl)[g], gl), "h": _factor(np.array(hl)[h], hl)})
    return Case(id=f"b{i:04d}", formula="y ~ x + f + (x | g) + (1 | h)", data=d, reml=bool(rng.random() < 0.6),
                notes=["big"], newdata=_newdata(d, rng))


def generate(seed: int, n: int, n_ar1: int | None = None) -> list[Case]:
    """``n`` random cases (about one in fifteen with AR(1) residuals, one in fifteen with a
    covariance structure, one in fifty of 2000-4000 rows), reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    extra = np.random.default_rng([seed, 14])  # weights and offsets
    shape = np.random.default_rng([seed, 24])  # the shapes of users' data (_reshape)
    n_ar1 = max(1, n // 15) if n_ar1 is None else n_ar1
    n_big = n // 50
    n_struct = max(1, n // 15)
    structured = np.random.default_rng([seed, 25])  # covariance structures: every other choice unchanged
    cases = [_reshape(_case(rng, i, extra), shape) for i in range(n - n_ar1 - n_big - n_struct)]
    cases += [_ar1_case(rng, i, shape) for i in range(n_ar1)]
    cases += [_structured_case(structured, i) for i in range(n_struct)]
    cases += [_big_case(shape, i) for i in range(n_big)]
    return cases
