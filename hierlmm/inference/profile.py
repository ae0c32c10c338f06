"""Profile-likelihood intervals (lme4's ``profile.merMod`` and ``confint.thpr``).

As lme4, a REML fit is profiled on the ML deviance. For a parameter ψ the signed root
deviance is ``ζ(ψ) = sign(ψ − ψ̂) √(d̃(ψ) − d̂)``, with ``d̃(ψ)`` the ML deviance minimised over
every other parameter and ``d̂`` its minimum; a limit is where ``ζ = ±z_{(1+level)/2}``,
found by stepping outward from ψ̂ and root finding (lme4 interpolates a spline through ζ on a
grid). An SD whose profile stays below the cut-off down to 0 gets the limit 0; a
correlation likewise ±1.

**The other parameters.** For a fixed effect ``β_j``: θ, with ``β_{−j}`` and σ profiled
(``y − β_j x_j`` as the response). For a variance parameter (an SD, a correlation or σ): the
other SDs, correlations and σ, in coordinates where every point of a box is a valid
covariance (:class:`Coordinates`), so that moving ψ never leaves the positive-semidefinite
cone (lme4's SD/correlation coordinates do; it then gives NA).

**Local minima.** ``d̃(ψ)`` is a minimum over the other parameters, and it can have several
local minima (branches where another SD is 0 or positive, a correlation ±1 or not); the
start decides which is found. :class:`_Side` starts each evaluation from the nearest
solutions already found and from those with zero SDs lifted, and at the limit it tries
random starts; a lower minimum there restarts the search outward.
"""

from __future__ import annotations


import numpy as np
import pandas as pd
from scipy import stats

from hierlmm.errors import ProfileWarning, warn
from hierlmm.inference.sdcor import bounds, psd_cholesky, sdcor_from_theta, sdcor_names

__all__ = ["profile_intervals", "Coordinates"]


# ------------------------------------------------------------------ coordinates
def unit_row(phi: np.ndarray) -> np.ndarray:
    """A unit vector in ``R^{m+1}`` from ``m`` spherical angles in ``[0, π]``:
    ``(cos φ₁, sin φ₁ cos φ₂, …, sin φ₁⋯sin φ_{m−1} cos φ_m, sin φ₁⋯sin φ_m)``;
    its last entry is ``≥ 0``."""
    out = np.empty(len(phi) + 1)
    s = 1.0
    for t, a in enumerate(phi):
        out[t] = s * np.cos(a)
        s *= np.sin(a)
    out[-1] = s
    return out


def row_angles(c: np.ndarray) -> np.ndarray:
    """Inverse of :func:`unit_row` (``c`` a unit vector with ``c[-1] >= 0``)."""
    phi = np.zeros(len(c) - 1)
    for t in range(len(c) - 1):
        rest = np.linalg.norm(c[t:])
        phi[t] = np.arccos(np.clip(c[t] / rest, -1.0, 1.0)) if rest > 1e-15 else 0.0
    return phi


class Coordinates:
    """The parameters other than ψ of a variance-parameter profile, as a box.

    Every term's covariance is ``D = S R S`` with ``S`` the diagonal of SDs and ``R = C C'``
    a correlation matrix, each row of the lower-triangular ``C`` a unit vector in spherical
    coordinates (:func:`unit_row`; Pinheiro & Bates 1996's spherical parametrisation). Any
    point of the box ``SD ≥ 0, φ ∈ [0, π], σ > 0`` is a valid model, and its corners reach
    every singular one. When ψ is the correlation ``ρ_rc`` of a term, that term's
    coordinates are ordered ``(c, r, the others)``: rows 0 and 1 of ``C`` are then
    ``(1, 0, …)`` and ``(ρ, √(1−ρ²), 0, …)``, fixed, and the rest stay free, so every
    correlation matrix with ``R_rc = ρ`` is reachable and none other.

    A term with another covariance structure (:mod:`hierlmm.covariance`) has its own natural
    parameters as coordinates, in their ranges (:meth:`Covariance.natural_bounds`): its SDs,
    its correlation(s); a point the structure cannot take (a Toeplitz matrix that is not
    positive definite) has an infinite deviance.

    ``x`` holds, per term, its free SDs and its free angles, then σ; SDs and σ in units of
    ``unit`` (σ̂), so that the optimiser's steps are of order one.
    """

    def __init__(self, design, est: np.ndarray, j: int, unit: float):

        lo, hi = bounds(design)
        self.est, self.j, self.unit = np.asarray(est, dtype=float), j, unit
        self.lo, self.hi = lo, hi
        self.terms = []  # per term: (k, positions of its sdcor entries, fixed (r, c) or None, perm)
        i = 0
        for t in design.terms:
            if not t.unstructured:  # its natural parameters at positions i .. i + n
                n = len(t.sdcor_names())
                self.terms.append((None, range(i, i + n), None, None))
                i += n
                continue
            pos = {pair: i + a for a, pair in enumerate(t.cov.pairs)}
            i += t.n_theta
            fixed = next(((r, c) for (r, c), p in pos.items() if p == j and r != c), None)
            perm = list(range(t.k)) if fixed is None else (
                [fixed[1], fixed[0]] + [a for a in range(t.k) if a not in fixed])
            self.terms.append((t.k, pos, fixed, np.array(perm)))
        self.n = i + 1  # sdcor entries, σ last
        self.is_sd = np.array([lo[p] == 0 for p in range(self.n - 1)] + [False])

    def _free_rows(self, k, fixed):
        return range(2 if fixed is not None else 1, k)

    def _sd(self, p: int) -> bool:
        """Entry ``p`` of the sdcor vector is an SD (kept in units of σ̂)."""
        return self.lo[p] == 0 and not np.isfinite(self.hi[p])

    def start(self) -> np.ndarray:
        """``x`` at the estimate (ψ's own value aside)."""
        x = []
        for k, pos, fixed, perm in self.terms:
            if k is None:  # a structured term's natural parameters
                x += [self.est[p] / self.unit if self._sd(p) else self.est[p] for p in pos if p != self.j]
                continue
            sd = np.array([self.est[pos[a, a]] for a in range(k)])
            x += [sd[a] / self.unit for a in range(k) if pos[a, a] != self.j]
            R = np.eye(k)
            for (r, c), p in pos.items():
                if r != c:
                    R[r, c] = R[c, r] = self.est[p]
            C = _unit_cholesky(R[np.ix_(perm, perm)])
            for a in self._free_rows(k, fixed):
                x += list(row_angles(C[a, :a + 1]))
        if self.j != self.n - 1:
            x.append(self.est[-1] / self.unit)
        return np.array(x)

    def bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Lower and upper bounds of ``x``, and the mask of its SD entries."""
        lo, hi, sd = [], [], []
        for k, pos, fixed, _ in self.terms:
            if k is None:
                for p in pos:
                    if p != self.j:
                        lo.append(0.0 if self._sd(p) else self.lo[p])
                        hi.append(self.hi[p])
                        sd.append(self._sd(p))
                continue
            nsd = sum(pos[a, a] != self.j for a in range(k))
            nang = sum(a for a in self._free_rows(k, fixed))
            lo += [0.0] * nsd + [0.0] * nang
            hi += [np.inf] * nsd + [np.pi] * nang
            sd += [True] * nsd + [False] * nang
        if self.j != self.n - 1:
            lo, hi, sd = lo + [1e-12 / self.unit], hi + [np.inf], sd + [False]
        return np.array(lo), np.array(hi), np.array(sd)

    def _parts(self, x: np.ndarray, psi: float):
        """Per term ``(SDs, C, perm)`` (``R = C C'`` in the order ``perm``), and σ."""
        i, parts = 0, []
        for k, pos, fixed, perm in self.terms:
            if k is None:  # the structured term's natural values, ψ in its place
                vals = []
                for p in pos:
                    if p == self.j:
                        vals.append(psi)
                    else:
                        vals.append(x[i] * self.unit if self._sd(p) else x[i])
                        i += 1
                parts.append((None, np.array(vals), None))
                continue
            sd = np.empty(k)
            for a in range(k):
                if pos[a, a] == self.j:
                    sd[a] = psi
                else:
                    sd[a] = x[i] * self.unit
                    i += 1
            C = np.zeros((k, k))
            C[0, 0] = 1.0
            if fixed is not None:
                C[1, :2] = psi, np.sqrt(max(1.0 - psi**2, 0.0))
            for a in self._free_rows(k, fixed):
                C[a, :a + 1] = unit_row(x[i:i + a])
                i += a
            parts.append((sd, C, perm))
        sigma = psi if self.j == self.n - 1 else x[i] * self.unit
        return parts, sigma

    def sdcor(self, x: np.ndarray, psi: float) -> np.ndarray:
        """The SDs, correlations and σ (lme4's order, :func:`confint.sdcor_from_theta`)."""
        parts, sigma = self._parts(x, psi)
        v = np.empty(self.n)
        for (k, pos, _, _), (sd, C, perm) in zip(self.terms, parts):
            if k is None:
                v[list(pos)] = C
                continue
            R = np.empty((k, k))
            R[np.ix_(perm, perm)] = C @ C.T
            for (r, c), p in pos.items():
                v[p] = sd[r] if r == c else R[r, c]
        v[-1] = sigma
        return v

    def theta(self, design, x: np.ndarray, psi: float) -> tuple[np.ndarray, float]:
        """``(θ, σ)`` at ``x``: ``T = S C / σ`` directly (lower triangular, ``TT'σ² = SRS``)
        where the term's order is its own; a Cholesky factor of ``D`` where ψ's correlation
        reordered it."""

        parts, sigma = self._parts(x, psi)
        theta = []
        for t, (sd, C, perm) in zip(design.terms, parts):
            if sd is None:  # a structured term: its parameters from the natural values (None: no such D)
                par = t.cov.par_from_natural(C, sigma)
                theta.append(np.full(t.n_theta, np.nan) if par is None else par)
                continue
            if np.array_equal(perm, np.arange(t.k)):
                T = sd[:, None] * C
            else:
                R = np.empty((t.k, t.k))
                R[np.ix_(perm, perm)] = C @ C.T
                T = psd_cholesky(R * np.outer(sd, sd))
            theta.append(t.theta_from_template(T / sigma))
        return np.concatenate(theta), sigma

    def random(self, rng) -> np.ndarray:
        """A random start: SDs and σ in ``(0.05, 2) × max(1, estimate)``, angles (and a structured
        term's correlations) uniform over their range."""
        lo, hi, _ = self.bounds()
        x0 = self.start()
        scale = np.maximum(1.0, np.where(np.isfinite(hi), 1.0, x0))
        return np.where(np.isfinite(hi), rng.uniform(lo, np.where(np.isfinite(hi), hi, lo + 1)),
                        rng.uniform(0.05, 2.0, lo.size) * scale)


def _unit_cholesky(R: np.ndarray) -> np.ndarray:
    """A lower-triangular ``C`` with unit rows and ``C C' = R`` for a correlation matrix
    ``R`` (zero pivots allowed; rows renormalised against round-off)."""

    C = psd_cholesky(R)
    norms = np.linalg.norm(C, axis=1)
    for a in range(len(C)):
        if norms[a] > 0:
            C[a] /= norms[a]
        else:  # not a correlation matrix here (a zero row): any unit row
            C[a, a] = 1.0
    return C


# ------------------------------------------------------------------ one side of a profile
def _minimize(f, x0, lo, hi, coarse=False):
    """Minimise ``f`` over the box from ``x0`` (coordinates of order one).

    The first step is moderate (restarted BOBYQA's, :func:`hierlmm.optimize.restart_step`),
    not nlopt's default of a fraction of ``x0``: an SD that sits at 0 at the optimum must be
    able to leave it as the profiled parameter moves (m0005 of the differential draw: the
    other SD of a nested model grows from 0 to 3 below the estimate). ``coarse``: one run to
    a tolerance of 1e-3 instead of restarted runs to 1e-7 (exploring from random starts)."""
    from hierlmm.optimize import restart_step, bobyqa, bobyqa_restarted

    x0 = np.clip(np.asarray(x0, dtype=float), lo, hi)
    if x0.size == 0:
        return f(x0), x0
    step = restart_step(x0, lo, hi)
    if coarse:  # one BOBYQA run to 1e-3: which basin, roughly where its bottom is
        x, fun, _, _ = bobyqa(f, x0, lo, hi, maxeval=1000, xtol_abs=1e-3, ftol_abs=1e-4, initial_step=step)
    else:
        x, fun, _, _ = bobyqa_restarted(f, x0, lo, hi, maxeval=5000, xtol=1e-7, ftol=1e-8, initial_step=step)
    return fun, x


def _crossing(zeta, start, step, limit, target, z_start=0.0):
    """Solve ``zeta(ψ) = target`` moving from ``start`` (where ζ is ``z_start``) by growing
    steps toward ``limit``.

    Returns ``limit`` when ζ stays short of the target up to the parameter's bound, and NaN
    when no crossing is found (the profile is not monotone or cannot be evaluated). Where ζ
    cannot be evaluated at a step's end, the step is halved (up to 8 times) before giving up.
    """
    a, za = start, z_start
    b = start + step
    for _ in range(60):
        if (step > 0 and b >= limit) or (step < 0 and b <= limit):
            b = limit
        zb = zeta(b)
        for _ in range(8):  # not computable that far out: a shorter step from the last point
            if np.isfinite(zb):
                break
            step /= 2
            b = a + step
            zb = zeta(b)
        if not np.isfinite(zb):
            return np.nan
        if (zb - target) * (za - target) <= 0:
            return _bracketed_root(zeta, a, za, b, zb, target)
        if b == limit:
            return limit
        a, za = b, zb
        step *= 2
        b = a + step
    return np.nan


def _bracketed_root(zeta, a, za, b, zb, target):
    """The root of ``ζ − target`` in ``[a, b]`` by the Illinois method, from the values at the
    ends already computed: ζ comes from an optimisation warm-started at a nearby point, so
    evaluating it again at an end need not reproduce the same last digits (brentq's failure)."""
    fa, fb = za - target, zb - target
    tol = 1e-9 * max(1.0, abs(a), abs(b))
    c = b
    for _ in range(100):
        if fb == fa:
            break
        c = b - fb * (b - a) / (fb - fa)
        fc = zeta(c) - target
        if not np.isfinite(fc):
            return np.nan
        if abs(fc) < 1e-7 or abs(b - a) < tol:
            return c
        if fc * fb < 0:
            a, fa = b, fb
        else:
            fa /= 2
        b, fb = c, fc
    return c


class _Side:
    """One side of one parameter's profile: ``ζ(ψ)`` and the limit where it crosses ``±z``.

    ``inner(ψ, x0, coarse=False) -> (d̃, x)`` minimises the ML deviance over the other parameters ``x`` with
    the parameter fixed at ψ, from ``x0``. Each evaluation starts

    * from the solution at the evaluated ψ' nearest to ψ on the estimate's side of it (the
      profile's path is continuous outward from the estimate), and from the nearest one
      overall when that differs (starting only from the last point, a root finder that has
      just visited a degenerate point carries it inward: m0078 of the differential draw);
    * from each of those with its ``bounded`` entries at 0 lifted to 0.3 (at an SD of 0 the
      correlations with it have no effect and the deviance is flat to first order in the
      SD: a saddle that a start there cannot leave, while the branch with that SD positive
      can be far lower; m0121: 1.31 instead of 3.84 above the minimum).

    At the limit found, :meth:`improve` tries ``restarts`` random starts (``random_start``,
    seeded; coarse runs, the best one then polished); if one reaches a lower minimum,
    the points beyond are dropped and the crossing is searched again outward from there
    (m0121's fixed effect: two minima over θ). Likewise when the root found is not a
    crossing (|ζ − z| ≥ 1e-4): a lower branch appeared inside the bracket, whose far end was
    computed on the branch left behind (m0121's ``sd_x``: a jump from ζ 1.17 to 1.99).
    """

    def __init__(self, inner, centre, x0, base, bounded, random_start, restarts=4):
        self.inner, self.centre, self.base = inner, centre, base
        self.bounded, self.random_start, self.restarts = bounded, random_start, restarts
        self.points = {centre: (np.asarray(x0, dtype=float), base)}  # ψ -> best (x, d̃) there
        self.rng = np.random.default_rng(0)

    def _starts(self, psi):
        dist = lambda p: abs(p - psi)  # noqa: E731
        inside = [p for p in self.points if abs(p - self.centre) <= abs(psi - self.centre)]
        a, b = min(inside, key=dist), min(self.points, key=dist)
        starts = [self.points[a][0]] if a == b else [self.points[a][0], self.points[b][0]]
        for x0 in list(starts):
            if np.any(x0[self.bounded] < 1e-4):
                x = x0.copy()
                x[self.bounded & (x < 1e-4)] = 0.3
                starts.append(x)
        return starts

    def _best(self, psi, starts):
        val, x = min((self.inner(psi, x0) for x0 in starts), key=lambda r: r[0])
        if np.isfinite(val) and val < self.points.get(psi, (None, np.inf))[1]:
            self.points[psi] = (x, val)
        return val

    def _zeta_of(self, psi, val):
        if not np.isfinite(val):
            return np.nan  # no valid model near here with the others held: not computable
        return np.sign(psi - self.centre) * np.sqrt(max(val - self.base, 0.0))

    def zeta(self, psi):
        return self._zeta_of(psi, self._best(psi, self._starts(psi)))

    def improve(self, psi) -> float | None:
        """ζ at ψ from random starts, if lower (by more than 1e-6) than found before; else None."""
        x_before, before = self.points.get(psi, (None, np.inf))
        val, x = min((self.inner(psi, self.random_start(self.rng), coarse=True)
                      for _ in range(self.restarts)), key=lambda r: r[0])
        # polish only another basin that may be lower (coarse values are within ~1e-3 of its
        # bottom); a coarse run that ended next to the known minimum found nothing new
        same = x_before is not None and np.max(np.abs(x - x_before)) < 0.05
        if not val < before - 1e-6 and (same or not val < before + 1e-3):
            return None
        val = self._best(psi, [x])
        if not val < before - 1e-6:
            return None
        return self._restart_from(psi)  # the search outward restarts from ψ

    def _restart_from(self, psi) -> float:
        """Drop the points beyond ψ (a branch left behind) and return ζ(ψ) as now known."""
        far = abs(psi - self.centre)
        self.points = {p: v for p, v in self.points.items() if abs(p - self.centre) <= far}
        return self._zeta_of(psi, self.points[psi][1])

    def limit(self, step, end, target):
        root = _crossing(self.zeta, self.centre, step, end, target)
        for _ in range(4):
            if not np.isfinite(root) or root == end:
                break
            z_root = self._zeta_of(root, self.points[root][1]) if root in self.points else np.nan
            if not abs(z_root - target) < 1e-4:
                # the bracket's far end was on a branch that a lower one replaced inside it:
                # the root finder closed on a jump, not a crossing; search on from here
                z_root = self._restart_from(root)
            else:
                z_root = self.improve(root)
                if z_root is None:
                    break
            root = _crossing(self.zeta, root, step, end, target, z_start=z_root)
        return root


def _limit(name: str, side: str, find) -> float:
    """One profile limit, or NaN with a warning naming it: never the whole table lost."""
    try:
        value = find()
    except (np.linalg.LinAlgError, ValueError, FloatingPointError) as exc:
        value, why = np.nan, f"{type(exc).__name__}: {exc}"
    else:
        why = "the profile does not cross the cut-off (not monotone, or not computable there)"
    if not np.isfinite(value):
        warn(f"the {side} profile limit of {name} could not be found ({why}); it is NaN", ProfileWarning)
    return float(value)


# ------------------------------------------------------------------ the table
def profile_intervals(fit, level: float = 0.95, parm=None, progressbar=None) -> pd.DataFrame:
    """Profile intervals of the variance parameters (lme4's order) and the fixed effects."""
    from hierlmm.progress import progress
    from hierlmm.optimize import optimize_theta

    design = fit.design
    ml_dev = fit.model.deviance_function(reml=False)
    ml = fit if fit.method == "ML" else fit.model.fit(method="ML")
    base = ml.deviance
    z = stats.norm.ppf(0.5 + level / 2)
    # a correlation with a zero SD is undefined (NaN) and has no effect on the likelihood: any
    # value is an optimum; 0 is the profile's centre for it
    est = np.nan_to_num(sdcor_from_theta(design, ml.solution.theta, ml.sigma), nan=0.0)
    lo, hi = bounds(design)
    names = sdcor_names(fit)

    rows = {}
    todo = [n for n in names + list(design.fixef_names) if parm is None or n in parm]
    bar = progress(len(todo), "profile", progressbar)
    for j, name in enumerate(names):
        if parm is not None and name not in parm:
            continue
        bar.update(1)
        coords = Coordinates(design, est, j, ml.sigma)
        a, b, sd = coords.bounds()

        def inner(psi, x0, coarse=False, coords=coords, a=a, b=b):
            return _minimize(lambda x: ml_dev.unprofiled(*coords.theta(design, x, psi)), x0, a, b, coarse)

        is_cor = lo[j] == -1
        scale = 0.05 if is_cor else max(abs(est[j]), 1e-3 * ml.sigma)
        top = hi[j] if np.isfinite(hi[j]) else 1e6 * (abs(est[j]) + 1)
        rows[name] = tuple(
            _limit(name, side, lambda: _Side(inner, est[j], coords.start(), base, sd, coords.random)
                   .limit(sgn * scale * 0.25, end, sgn * z))
            for side, sgn, end in (("lower", -1, lo[j]), ("upper", 1, top)))

    # fixed effects: β_j fixed by an offset (from A alone), θ optimised, β_-j and σ profiled (ML)
    diag = np.isfinite(ml_dev.lower)  # θ's diagonal entries (bounded below by 0)

    def random_theta(rng):
        # SDs log-uniform over 0.05-20 σ, entries below the diagonal N(0, 1.5²): a lower branch
        # can sit far from the estimate (seed 4242's m0263: θ = (0.46, −3.05, 0, 2.99) at a limit
        # where starts with SDs below 2 σ all stayed on a branch 1.31 higher)
        return np.where(diag, np.exp(rng.uniform(np.log(0.05), np.log(20.0), diag.size)),
                        rng.normal(0, 1.5, diag.size))

    for j, name in enumerate(design.fixef_names):
        if parm is not None and name not in parm:
            continue
        bar.update(1)
        bhat, se = ml.fixef.iloc[j], ml.se.iloc[j]

        def inner_b(b, theta0, coarse=False, j=j):
            tol = 1e-3 if coarse else 1e-8
            res = optimize_theta(ml_dev.with_offset(j, b), theta0=theta0, check=False, initial_step=0.1,
                                 xtol=tol, ftol=tol / 10)
            return res.fun, res.theta

        rows[name] = tuple(
            _limit(name, side, lambda: _Side(inner_b, bhat, ml.solution.theta, base, diag, random_theta)
                   .limit(sgn * se, sgn * np.inf, sgn * z))
            for side, sgn in (("lower", -1), ("upper", 1)))
    bar.close()
    return pd.DataFrame.from_dict(rows, orient="index", columns=["lower", "upper"])
