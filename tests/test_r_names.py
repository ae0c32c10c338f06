"""Names as R prints them: coefficients, vcov's columns, anova's terms and random effects,
against lme4/lmerTest's for the same formulas (tests/reference/r/r_names.R): factor levels
(``SexFemale``), logicals as R's factors (``lateTRUE``, two columns for ``(0 + late | g)``),
``I(Days^2)``, ``poly(Days, 2)1``, ``ns(Days, 3)1``, and an interaction's factors in the order
of their variables' first appearance in the formula (``ffb:x`` for ``ff + x + x:ff``)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import hierlmm as hl
from conftest import load_ref
from hierlmm.rnames import column_names

REF = load_ref("r_names")["fits"]
EMM = load_ref("r_names")["logical_emmeans"]


def _data(name: str) -> pd.DataFrame:
    d = hl.datasets.load(name)
    if name == "sleepstudy":  # the columns r_names.R adds
        d = d.assign(late=d.Days >= 5, ff=pd.Categorical(np.array(["a", "b", "c"])[d.Days % 3]), x=d.Days / 10)
    return d


@pytest.mark.parametrize("ref", REF, ids=[r["formula"][0] for r in REF])
def test_names_and_numbers_are_lme4s(ref):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = hl.LMM(ref["formula"][0], _data(ref["data"][0])).fit()
        anova = fit.anova()
    assert list(fit.fixef.index) == ref["fixef_names"]
    assert list(fit.vcov.columns) == ref["vcov_names"]
    assert list(fit.ranef()["Subject"].columns) == ref["ranef_names"]
    assert list(anova.index) == ref["anova_terms"]
    np.testing.assert_allclose(fit.fixef.to_numpy(), ref["fixef"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(anova["F"].to_numpy(), ref["anova_F"], rtol=1e-4)
    assert fit.loglik == pytest.approx(ref["logLik"][0], abs=1e-6)


def test_names_do_not_depend_on_how_levels_are_spelt():
    """A level with ``:``, ``]`` or ``T.`` in it is read factor by factor, never split in the
    wrong place; where R's names of two columns coincide (``a`` level ``b1`` beside ``ab``
    level ``1``: both ``ab1``), those keep formulaic's names, which are unique."""
    from formulaic import model_matrix

    d = pd.DataFrame({"x": np.arange(8.0), "f": ["p:q", "a]:x", "T.z", "p:q"] * 2,
                      "a": ["a0", "b1"] * 4, "ab": ["0", "0", "1", "1"] * 2})
    text = "f + x + x:f"
    mm = model_matrix(text, d)
    assert column_names(mm.model_spec, list(mm.columns), text) == [
        "(Intercept)", "fa]:x", "fp:q", "x", "fa]:x:x", "fp:q:x"]
    text = "a + ab + x"
    mm = model_matrix(text, d)
    assert column_names(mm.model_spec, list(mm.columns), text) == ["(Intercept)", "a[T.b1]", "ab[T.1]", "x"]


def test_names_are_the_same_on_new_data_and_dask_like_levels():
    """predict() re-encodes new data under the fit's names (a logical factor included)."""
    d = _data("sleepstudy")
    fit = hl.LMM("Reaction ~ late * Days + (1 | Subject)", d).fit()
    new = d.iloc[:3]  # late is FALSE on every row: the level TRUE still has its column
    X = fit.design.fixed_matrix(new)
    np.testing.assert_array_equal(X[:, list(fit.fixef.index).index("lateTRUE")], 0.0)
    np.testing.assert_allclose(fit.predict(new, kind="marginal").to_numpy(), X @ fit.fixef.to_numpy())


def test_emmeans_of_a_logical_as_r_prints_it():
    d = _data("sleepstudy")
    fit = hl.LMM("Reaction ~ late * Days + (1 | Subject)", d).fit()
    e = fit.emmeans("late")
    assert list(e["late"]) == EMM["late"] == ["FALSE", "TRUE"]
    np.testing.assert_allclose(e["emmean"], EMM["emmean"], rtol=1e-6)
    np.testing.assert_allclose(e["SE"], EMM["SE"], rtol=1e-5)
    assert list(fit.emmeans("late", pairwise=True)["contrast"]) == EMM["contrast"]
