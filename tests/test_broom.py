"""broom.mixed's ``glance()`` and ``augment()`` (with lme4's ``hatvalues`` and
``cooks.distance``) against R (tests/reference/r/broom_glance_augment.R), and the hat values'
defining property against brute force."""

from __future__ import annotations

import numpy as np
import pytest

import hierlmm as hl
from conftest import at_theta, load_ref

REF = load_ref("broom_glance_augment")


def _fit(name):
    d = hl.datasets.load("sleepstudy").assign(w=lambda d: 1 + (d.Days % 4))
    if name == "weighted":
        return hl.LMM("Reaction ~ Days + (1 | Subject)", d, weights="w").fit()
    return hl.LMM("Reaction ~ Days + (Days | Subject)", d).fit(method="ML" if name == "ml" else "REML")


@pytest.mark.parametrize("name", list(REF))
def test_glance_and_augment_as_broom_mixed(name):
    """At lme4's θ (sleepstudy's ML optimum is flat: hierlmm's log-likelihood is 1.3e-8
    higher, σ 4e-6 apart), every column to rounding."""
    ref = REF[name]
    fit = at_theta(_fit(name), ref["theta"])
    g = fit.glance()
    assert list(g.columns) == list(ref["glance"])
    for col, want in ref["glance"].items():
        assert float(g[col].iloc[0]) == pytest.approx(want, rel=1e-9), col
    a = fit.augment()
    for col, want in ref["augment"].items():
        np.testing.assert_allclose(a[col].to_numpy(), want, rtol=1e-8, atol=1e-10 * np.max(np.abs(want)), err_msg=col)


def test_hat_values_are_the_derivative_of_the_fitted_values():
    """``h_i = ∂ŷ_i/∂y_i`` at fixed θ̂, by brute force: the conditional fitted values are
    linear in y given θ, so moving one response by 1 moves its own fitted value by ``h_i``
    (prior weights; every h in (0, 1))."""
    fit = _fit("weighted")
    h = fit.hatvalues().to_numpy()
    dev, theta = fit.deviance_function, fit.solution.theta

    def fitted(y):
        sol = dev.with_response(y).solve(theta)
        return fit.design.X @ sol.beta + fit._zb(sol.b, [t.codes for t in fit.design.terms],
                                                 [t.Z for t in fit.design.terms])

    y0 = fit.design.y
    base = fitted(y0)
    for i in (0, 57, 179):
        y = y0.copy()
        y[i] += 1.0
        assert fitted(y)[i] - base[i] == pytest.approx(h[i], rel=1e-9)
    assert np.all((h > 0) & (h < 1))
