"""Stage 4 of the pipeline (lme4's ``optimizeLmer``): minimise the profiled deviance over θ.

Where the deviance has its gradient (:mod:`hierlmm.gradient`: every model of the blocked
engine), the optimiser is scipy's L-BFGS-B (lme4's box, but a relative factor's diagonal left
free: the criterion is even in it), with probes off 0 of those entries (:func:`quasi_newton`):
about 10-25 factorisations where BOBYQA needed 60-150 (each gradient costs one factorisation
and about two more factorisations' work for ``M⁻¹``). Elsewhere (the per-group engine of residual structures)
it is BOBYQA (Powell 2009), a derivative-free trust-region method with bounds, through nlopt,
with lme4's ``nloptwrap`` settings (``xtol_abs = ftol_abs = 1e-8``) and restarts
(:func:`bobyqa_restarted`). Both work on ``φ = s θ`` (:func:`theta_scale`: ``s_r`` the root
mean square of the column of ``Z`` in θ's row), the relative factor of ``Z`` with unit-RMS
columns, and start at ``φ = I``: the start, the steps, the convergence check and the boundary
tests do not depend on the units of a random slope's covariate (in θ, Days in units of 1e-8
days puts the optimum at 1e7). After it stops, :func:`check_convergence` repeats lme4's
``checkConv``: the gradient and Hessian at the optimum over the parameters not on the boundary
(the exact gradient and forward differences of it where there is one, finite differences of
the deviance otherwise), the Newton step ``H⁻¹g`` compared with a tolerance, and the
Hessian's positive definiteness.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hierlmm.errors import ConvergenceWarning, HierlmmError, warn

__all__ = ["OptResult", "optimize_theta", "check_convergence", "fd_hessian", "fd_jacobian", "bobyqa",
           "bobyqa_restarted", "quasi_newton", "restart_step", "theta_scale"]

# lme4's isSingular tolerance on θ's bounded entries
SINGULAR_TOL = 1e-4
# lme4's check.conv.grad tolerance
GRAD_TOL = 2e-3
# BOBYQA restarts from the best point after the first run (see optimize_theta)
_RESTARTS = 4


@dataclass
class OptResult:
    """What the optimiser found.

    Attributes
    ----------
    theta : ndarray
    fun : float
        The deviance at ``theta``.
    evaluations : int
    converged : bool
        The optimiser's own stop criterion and the convergence checks all passed.
    messages : list of str
        Why convergence is in doubt, if it is.
    """

    theta: np.ndarray
    fun: float
    evaluations: int
    converged: bool = True
    messages: list[str] = field(default_factory=list)
    gradient: np.ndarray | None = None
    hessian: np.ndarray | None = None


def bobyqa(f, x0, lower=None, upper=None, maxeval: int = 100_000, xtol_abs=None, xtol_rel=None,
           ftol_abs=None, initial_step=None):
    """Minimise ``f`` with nlopt's BOBYQA, keeping the best point it evaluated.

    nlopt raises on a round-off stop and then returns no point; the best evaluated point
    is kept here instead, so every stop returns a usable answer. Non-finite values are given
    to BOBYQA as 1e300; the ``fun`` returned is ``f``'s own value (``inf`` when no point had a
    finite one).

    Returns
    -------
    x, fun, evaluations, messages
    """
    import nlopt

    x0 = np.asarray(x0, dtype=float)
    opt = nlopt.opt(nlopt.LN_BOBYQA, x0.size)
    if lower is not None:
        opt.set_lower_bounds(np.asarray(lower, dtype=float))
        x0 = np.maximum(x0, lower)
    if upper is not None:
        opt.set_upper_bounds(np.where(np.isfinite(upper), upper, 1e300))
        # nlopt's rescaling can return a point an ulp outside its box; restarting from it
        # would be refused ("invalid argument")
        x0 = np.minimum(x0, upper)
    if initial_step is not None:
        opt.set_initial_step(initial_step)
    if xtol_abs is not None:
        opt.set_xtol_abs(xtol_abs)
    if xtol_rel is not None:
        opt.set_xtol_rel(xtol_rel)
    if ftol_abs is not None:
        opt.set_ftol_abs(ftol_abs)
    opt.set_maxeval(maxeval)
    best = [np.inf, x0.copy()]

    def objective(x, grad):
        val = float(f(x))
        if val < best[0]:
            best[0], best[1] = val, x.copy()
        return val if np.isfinite(val) else 1e300

    opt.set_min_objective(objective)
    messages = []
    try:
        opt.optimize(x0.copy())
        code = opt.last_optimize_result()
    except nlopt.RoundoffLimited:
        code = nlopt.ROUNDOFF_LIMITED
    if code == nlopt.MAXEVAL_REACHED:
        messages.append(f"the optimiser reached its limit of {maxeval} evaluations")
    elif code < 0 and code != nlopt.ROUNDOFF_LIMITED:
        messages.append(f"nlopt's BOBYQA stopped with code {code}")
    return best[1], best[0], opt.get_numevals(), messages


def bobyqa_restarted(f, x0, lower=None, upper=None, maxeval: int = 100_000, xtol: float = 1e-8,
                     ftol: float = 1e-8, initial_step=None):
    """:func:`bobyqa`, then restarts from the best point until a restart no longer improves.

    BOBYQA stops when its trust region has shrunk below ``xtol``; in a flat valley, or near a
    bound that the optimum sits on, that happens short of the optimum (seen: 1e-9 to 1e-3 in
    deviance). Each restart builds a fresh interpolation model around the best point with a
    moderate step (10% of each coordinate, at least 0.02); when one improves by less than
    ``ftol/100``, or by less than the objective's rounding (1e-13 of its value: a deviance of
    9e4 computed two mathematically equal ways differs by ~1e-9, and restarts "improving" by
    that much cost a nested benchmark 50% more evaluations), the point is converged in θ,
    not only in the objective.
    """
    x, fun, nev, messages = bobyqa(f, x0, lower, upper, maxeval=maxeval, xtol_abs=xtol, ftol_abs=ftol,
                                   initial_step=initial_step)
    for _ in range(_RESTARTS):
        step = restart_step(x, lower, upper)
        x2, f2, n2, _ = bobyqa(f, x, lower, upper, maxeval=max(maxeval - nev, 1), xtol_abs=xtol,
                               ftol_abs=ftol * 1e-2, initial_step=step)
        nev += n2
        improved = f2 < fun - max(ftol * 1e-2, 1e-13 * abs(fun))
        if f2 < fun:
            x, fun = x2, f2
        if not improved:
            break
    return x, fun, nev, messages


def restart_step(x, lower=None, upper=None):
    """A restart's initial step: 10% of each coordinate, at least 0.02, and at most half the
    width of its box (BOBYQA's requirement). Not limited by the distance to a bound: BOBYQA
    moves a start that close onto the bound or a step inside, and a step shrunk to that
    distance (an SD started at 1e-8) could never leave the boundary."""
    step = np.maximum(0.1 * np.abs(x), 0.02)
    if lower is not None and upper is not None:
        width = np.asarray(upper, dtype=float) - np.asarray(lower, dtype=float)
        step = np.where(np.isfinite(width), np.minimum(step, 0.499 * width), step)
    return step


def optimize_theta(deviance, theta0=None, maxeval: int = 100_000, xtol: float = 1e-8,
                   ftol: float = 1e-8, check: bool | None = None, initial_step=None,
                   free_signs: bool = True) -> OptResult:
    """Minimise ``deviance(θ)`` subject to ``θ >= deviance.lower``.

    Parameters
    ----------
    deviance : callable with attributes ``lower`` and ``theta0``
        e.g. :class:`hierlmm.deviance.Deviance`.
    theta0 : array_like, optional
        Starting θ; lme4's (identity relative factors) by default.
    check : bool, optional
        Run :func:`check_convergence`; by default when ``n < 10000`` (as lme4's
        ``calc.derivs``), since it costs ``O(len(θ)²)`` further evaluations.
    initial_step : float or array_like, optional
        BOBYQA's initial trust-region step (nlopt's default from the bounds otherwise).
    free_signs : bool
        With the gradient, leave a relative factor's diagonal unbounded (below); False keeps
        lme4's box for every entry (another path, for a second start: model.LMM._off_the_boundary).

    Returns
    -------
    OptResult
    """
    scale = theta_scale(deviance)
    lower = np.asarray(deviance.lower, dtype=float) * scale
    if theta0 is None:
        x0 = np.asarray(deviance.theta0, dtype=float)  # identity factors of Z with unit-RMS columns
    else:
        x0 = np.atleast_1d(np.asarray(theta0, dtype=float))
        if x0.shape != scale.shape:
            terms = getattr(getattr(deviance, "design", None), "terms", [])
            names = [name for t in terms for name in t.theta_names()]
            raise HierlmmError(f"theta0 has {x0.size} entries; this model's θ has {scale.size}"
                               + (f" (lme4's order: {', '.join(names)})" if len(names) == scale.size else ""))
        if not np.all(np.isfinite(x0)):
            raise HierlmmError(f"theta0 must hold finite numbers, got {np.asarray(theta0).tolist()}")
        x0 = x0 * scale  # bobyqa clips it

    def f(phi):
        return deviance(phi / scale)

    def fg(phi):
        value, g = deviance.value_and_gradient(phi / scale)
        return value, (None if g is None else g / scale)

    use_gradient = getattr(deviance, "has_gradient", False)
    grad = (lambda phi: fg(phi)[1]) if use_gradient else None  # noqa: E731
    if use_gradient:
        # the sign-free entries of vector-valued terms (the criterion is even in them)
        # unbounded: a step may cross 0 instead of stopping on the bound, where their gradient
        # vanishes by that symmetry, a saddle whose face the search then explores ((SES | School):
        # bounded, 38 factorisations; unbounded, 17). A scalar term's θ stays bounded: a 0 there
        # is a variance of 0, reached in one projected step (InstEval: 23, unbounded 32).
        vector = np.concatenate([np.full(t.n_theta, t.k > 1 and free_signs) for t in deviance.design.terms])
        open_lower = np.where(deviance.sign_free & vector, -np.inf, lower)
        x, fun, nev, messages = quasi_newton(fg, np.maximum(x0, lower), open_lower, deviance.sign_free,
                                             maxeval=maxeval)
        x = deviance.canonical(x / scale) * scale
    else:
        x, fun, nev, messages = bobyqa_restarted(f, x0, lower, maxeval=maxeval, xtol=xtol, ftol=ftol,
                                                 initial_step=initial_step)
    res = OptResult(theta=x / scale, fun=float(fun), evaluations=int(nev), messages=messages)
    if check is None:
        check = getattr(deviance, "n", 0) < 10_000
    if check:
        more, g, H = check_convergence(f, x, lower, grad=grad)
        # BOBYQA stops on small steps; in a flat valley that can leave a visible gradient.
        # Polish with (at most two) Newton steps on the free parameters, kept if they help.
        for _ in range(2):
            # a gradient or Hessian not computable near x (NaN), or a Hessian numpy cannot solve
            # with (seed 31337's metamorphic x_shift of m0079 raised "Singular matrix" here), gives
            # no Newton step
            if (not more or H.size == 0 or not (np.all(np.isfinite(H)) and np.all(np.isfinite(g)))
                    or np.any(np.linalg.eigvalsh(H) <= 0)):
                break
            try:
                step = np.linalg.solve(H, g)
            except np.linalg.LinAlgError:
                break
            if not np.all(np.isfinite(step)):
                break
            free = ~(np.isfinite(lower) & (x - lower < SINGULAR_TOL))
            trial = x.copy()
            trial[free] -= step
            trial = np.maximum(trial, lower)
            f_trial = float(f(trial))
            if not f_trial < res.fun:
                break
            x, res.theta, res.fun = trial, trial / scale, f_trial
            more, g, H = check_convergence(f, x, lower, grad=grad)
        res.messages.extend(more)
        res.gradient, res.hessian = g, H
    res.converged = not res.messages
    return res


def theta_scale(deviance) -> np.ndarray:
    """The scale of each parameter, ``φ = scale · θ`` the optimiser's coordinates: the
    deviance's ``theta_scale`` (:attr:`hierlmm.deviance.Deviance.theta_scale`; ones for an
    objective without one)."""
    n = len(np.asarray(deviance.lower))
    scale = getattr(deviance, "theta_scale", None)
    return np.ones(n) if scale is None else np.asarray(scale, dtype=float)


def fd_hessian(f, x, h: float = 1e-4, free=None):
    """Central finite-difference gradient and Hessian of ``f`` at ``x`` over ``free``."""
    x = np.asarray(x, dtype=float)
    idx = np.arange(len(x)) if free is None else np.flatnonzero(free)
    d = len(idx)
    f0 = f(x)
    g = np.zeros(d)
    H = np.zeros((d, d))

    def at(*steps):
        z = x.copy()
        for i, s in steps:
            z[idx[i]] += s
        return f(z)

    fp = np.array([at((i, h)) for i in range(d)])
    fm = np.array([at((i, -h)) for i in range(d)])
    g = (fp - fm) / (2 * h)
    H[np.arange(d), np.arange(d)] = (fp - 2 * f0 + fm) / h**2
    for i in range(d):
        for j in range(i):
            v = (at((i, h), (j, h)) - at((i, h), (j, -h)) - at((i, -h), (j, h)) + at((i, -h), (j, -h))) / (4 * h * h)
            H[i, j] = H[j, i] = v
    return g, H


def fd_jacobian(grad, x, h: float = 1e-5, free=None):
    """The gradient at ``x`` and the Hessian as forward differences of the exact gradient
    ``grad`` (symmetrised) over ``free``: ``len(free) + 1`` gradients instead of
    ``O(len(free)²)`` values (error O(h) relative: enough for lme4's tests of the Newton step
    and of positive definiteness)."""
    x = np.asarray(x, dtype=float)
    idx = np.arange(len(x)) if free is None else np.flatnonzero(free)
    d = len(idx)
    g0 = grad(x)
    H = np.full((d, d), np.nan)
    if g0 is None:
        return np.full(d, np.nan), H
    for i in range(d):
        up = x.copy()
        up[idx[i]] += h
        gu = grad(up)
        if gu is None:
            return g0[idx], H
        H[:, i] = (gu[idx] - g0[idx]) / h
    return g0[idx], 0.5 * (H + H.T)


def quasi_newton(fg, x0, lower, sign_free=None, maxeval: int = 100_000):
    """Minimise ``f`` with its gradient (``fg(x) -> (f, g)``; ``g`` None where ``f`` is not
    finite) by scipy's L-BFGS-B on the box ``x >= lower``, keeping the best point evaluated.

    Stops when the projected gradient's largest entry is below 1e-6 or an iteration improves
    ``f`` by less than 1e-14 of its value (about the criterion's rounding: tighter, the line
    search spends tens of evaluations on rounding noise); a line search that can make no
    further progress is a stop, not a failure. Points where ``f`` is not finite are given to
    it as a large value with a zero gradient, so its line search steps back; a point asked for
    again is answered from memory.

    ``f`` is even in the ``sign_free`` entries, so its gradient vanishes at 0 whether that is a
    minimum or a maximum along one: a first step of unit length from 1 (or, where they are
    bounded, a step projected onto the bound) stops there. Each such entry found within 0.01 of
    0 is probed at 0.1 (a lower value: a minimum further out) and at 0.001 (a negative
    derivative: 0 is a maximum along it), and from such a probe the search runs again
    (differential models ``y ~ x + (1 | g)``: stopped at θ = 0, a local maximum, 2.3 above the
    optimum; ``y ~ x + f + x:f + (1 | g)``: 7e-4 above it, the minimum at θ < 0.1;
    MathAchieve's ``(SES | School)``, bounded: on the bound of T's second diagonal entry, 3.15
    above it).

    Returns
    -------
    x, fun, evaluations, messages
    """
    import scipy.optimize

    x0 = np.asarray(x0, dtype=float)
    best = [np.inf, x0.copy()]
    calls = [0]

    seen: dict = {}

    def objective(x):
        key = x.tobytes()
        if key in seen:  # L-BFGS-B's line search asks again for a point it has (at its end, often)
            return seen[key]
        calls[0] += 1
        val, g = fg(x)
        if g is None or not np.isfinite(val) or not np.all(np.isfinite(g)):
            val, g = 1e300, np.zeros_like(x)
        elif val < best[0]:
            best[0], best[1] = float(val), x.copy()
        if len(seen) > 64:
            seen.clear()
        seen[key] = (val, g)
        return val, g

    bounds = [(lo if np.isfinite(lo) else None, None) for lo in np.asarray(lower, dtype=float)]
    sign_free = np.zeros(x0.size, dtype=bool) if sign_free is None else np.asarray(sign_free, dtype=bool)
    messages, start = [], x0
    for _ in range(1 + sign_free.sum()):
        r = scipy.optimize.minimize(objective, start, jac=True, method="L-BFGS-B", bounds=bounds,
                                    options=dict(maxfun=max(maxeval - calls[0], 1), maxiter=maxeval, ftol=1e-14,
                                                 gtol=1e-6, maxcor=20))
        if not r.success and "ABNORMAL" not in str(r.message).upper():
            messages.append(f"L-BFGS-B stopped: {r.message}")
        start = None
        for i in np.flatnonzero(sign_free & (np.abs(best[1]) < 0.01)):
            for step in (0.1, 0.001):
                probe = best[1].copy()
                probe[i] = step
                before = best[0]
                _, g = objective(probe)
                if best[0] < before or g[i] < 0:
                    start = probe
                    break
            if start is not None:
                break
        if start is None or calls[0] >= maxeval:
            break
    if calls[0] >= maxeval:
        messages.append(f"the optimiser reached its limit of {maxeval} evaluations")
    return best[1], best[0], calls[0], messages


def check_convergence(deviance, theta, lower, grad=None):
    """lme4's ``checkConv`` on the parameters not on the boundary; with ``grad`` (the exact
    gradient), the gradient is exact and the Hessian its forward differences
    (:func:`fd_jacobian`), else both are finite differences of ``deviance`` (:func:`fd_hessian`).

    Returns
    -------
    messages : list of str
        Empty when the gradient test passes and the Hessian is positive definite.
    gradient, hessian : ndarray
    """
    theta = np.asarray(theta, dtype=float)
    free = ~(np.isfinite(lower) & (theta - lower < SINGULAR_TOL))
    if not free.any():
        return [], np.zeros(0), np.zeros((0, 0))
    g, H = fd_hessian(deviance, theta, free=free) if grad is None else fd_jacobian(grad, theta, free=free)
    messages = []
    try:
        c = np.linalg.cholesky(H)
        # lme4: scgrad <- solve(chol(Hessian), gradient); max(pmin(|scgrad|, |gradient|)) < tol
        scgrad = np.linalg.solve(c.T, g)
        worst = float(np.max(np.minimum(np.abs(scgrad), np.abs(g))))
        if worst > GRAD_TOL:
            messages.append(f"Model failed to converge with max|grad| = {worst:.4g} (tol = {GRAD_TOL})")
    except np.linalg.LinAlgError:
        ev = np.linalg.eigvalsh(H)
        messages.append(
            "Model failed to converge: the Hessian of the deviance is not positive definite "
            f"(smallest eigenvalue {ev.min():.3g}); the model may be nearly unidentifiable"
        )
    return messages, g, H


def warn_messages(messages):
    """Each message as a ConvergenceWarning at the user's line."""
    for m in messages:
        warn(m, ConvergenceWarning)
