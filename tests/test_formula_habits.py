"""Formulas as R users write them (``factor(x)``, ``as.factor``, ``relevel``, ``ns``, ``bs``,
``scale``, ``log1p``, ``as.numeric``): each means what it means in R, checked against lme4's
fits of the same formulas (tests/reference/r/formula_habits.R), or is refused with what to
write instead."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pandas as pd
import pytest

import hierlmm as hl
from conftest import load_ref

REF = load_ref("formula_habits")


def _data(d: pd.DataFrame) -> pd.DataFrame:
    """The columns formula_habits.R adds to sleepstudy."""
    return d.assign(dg=d.Days // 3, grp=np.where(d.Days % 2 == 0, "a", np.where(d.Days % 3 == 0, "b", "c")),
                    late=d.Days >= 5)


@pytest.fixture(scope="module")
def sleep():
    return _data(hl.datasets.load("sleepstudy"))


@pytest.mark.parametrize("ref", REF["fits"], ids=[f["formula"] for f in REF["fits"]])
def test_same_fit_as_lme4(sleep, ref):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = hl.LMM(ref["formula"], sleep).fit()
    assert list(fit.fixef.index) == list(ref["fixef"])  # R's names, spaces included
    np.testing.assert_allclose(fit.fixef.to_numpy(), list(ref["fixef"].values()), rtol=1e-6, atol=1e-6)
    assert fit.loglik == pytest.approx(ref["logLik"], abs=1e-6)
    new = pd.DataFrame(REF["newdata"])
    if "bs(" in ref["formula"]:  # formulaic's bs refuses to extrapolate (R warns and does)
        new = new.iloc[[1]]
        want = [ref["predict"][1]]
    else:
        want = ref["predict"]
    want = [float(v) for v in want]  # R's -Inf (log1p(-1)) is text in JSON
    np.testing.assert_allclose(fit.predict(new, kind="marginal").to_numpy(), want, rtol=1e-6)


def test_factor_of_a_column_in_any_dtype_is_one_model(sleep):
    """``factor(dg)`` of int8, int64, float and text columns holding the same values, and of a
    pandas Categorical: the same levels in R's order (numbers numerically, so 10 after 9), the
    same fit; a float column predicts an int column's levels."""
    d = sleep.assign(dg=sleep.Days % 11)  # 0..9: numeric order differs from text order for 10 only if present
    d.loc[d.index[::7], "dg"] = 10
    fits = []
    for col in (d.dg.astype(np.int8), d.dg.astype(np.int64), d.dg.astype(float), d.dg.astype(str),
                pd.Categorical(d.dg.astype(str), categories=[str(i) for i in range(11)])):
        fits.append(hl.LMM("Reaction ~ factor(dg) + (1 | Subject)", d.assign(dg=col)).fit())
    names = list(fits[0].fixef.index)
    assert names[-1] == "factor(dg)10" and names[1] == "factor(dg)1"
    for f in fits[1:3] + fits[4:]:
        assert list(f.fixef.index) == names
        np.testing.assert_allclose(f.fixef.to_numpy(), fits[0].fixef.to_numpy(), rtol=1e-9)
    # text sorts "10" before "2", as R's factor() of a character column does
    assert list(fits[3].fixef.index)[1:3] == ["factor(dg)1", "factor(dg)10"]
    assert fits[3].loglik == pytest.approx(fits[0].loglik, abs=1e-8)
    p = fits[1].predict(pd.DataFrame({"dg": [2.0, 10.0], "Subject": ["308", "308"]}), kind="marginal")
    np.testing.assert_allclose(p.to_numpy(), fits[1].fixef.iloc[0] + fits[1].fixef[["factor(dg)2",
                                                                                   "factor(dg)10"]].to_numpy())


def test_factor_is_a_factor_for_emmeans_and_anova(sleep):
    """``factor(dg)`` is one factor: emmeans averages over its levels, and the Type III table
    has one row for it with 3 numerator df (as the model with a categorical column)."""
    a = hl.LMM("Reaction ~ Days + factor(dg) + (1 | Subject)", sleep).fit()
    b = hl.LMM("Reaction ~ Days + dg + (1 | Subject)", sleep.assign(dg=sleep.dg.astype(str))).fit()
    ta, tb = a.anova(), b.anova()
    assert list(ta.index) == ["Days", "factor(dg)"]
    np.testing.assert_allclose(ta.to_numpy(dtype=float), tb.to_numpy(dtype=float), rtol=1e-8)
    ea = a.emmeans("factor(dg)")
    eb = b.emmeans("dg")
    np.testing.assert_allclose(ea["emmean"].to_numpy(), eb["emmean"].to_numpy(), rtol=1e-10)


def test_unseen_value_of_a_factor_call_in_newdata_is_named(sleep):
    fit = hl.LMM("Reaction ~ factor(dg) + (1 | Subject)", sleep).fit()
    with pytest.raises(hl.HierlmmError, match=r"'dg'.*not levels of factor\(dg\).*: 7"):
        fit.predict(pd.DataFrame({"dg": [1, 7], "Subject": ["308", "308"]}))
    with pytest.raises(hl.HierlmmError, match="lacks column.*dg"):
        fit.predict(pd.DataFrame({"Subject": ["308"]}))


@pytest.mark.parametrize("formula, message", [
    ("Reaction ~ ordered(dg) + (1 | Subject)", "ordered categorical dtype"),
    ("Reaction ~ factor(Days > 3) + (1 | Subject)", "take a column of the data"),
    ("Reaction ~ factor(nope) + (1 | Subject)", "column 'nope' is not in the data"),
    ("Reaction ~ relevel(factor(grp), \"z\") + (1 | Subject)", "reference level 'z' is not a level"),
    ("Reaction ~ relevel(factor(grp), 4) + (1 | Subject)", "position 1..3"),
    ("Reaction ~ factor(dg, labels = c(1, 2)) + (1 | Subject)", "levels = c"),
    ("Reaction ~ as.numeric(grp) + (1 | Subject)", "as.numeric.*non-numeric"),
    ("Reaction ~ factor(dg, levels = c(open('x'))) + (1 | Subject)", "not allowed"),
])
def test_refused_with_what_to_write(sleep, formula, message):
    with pytest.raises(hl.HierlmmError, match=message):
        hl.LMM(formula, sleep).fit()


def test_relevel_of_a_text_column_and_factor_levels_drop_rows(sleep):
    """``relevel(grp, "b")`` of a text column (R needs factor() first) is the model with b as
    reference; ``factor(dg, levels = c(0, 1))`` leaves the rows of other values out, as R's NA."""
    a = hl.LMM('Reaction ~ relevel(grp, "b") + (1 | Subject)', sleep).fit()
    ref = next(f for f in REF["fits"] if f["formula"].startswith('Reaction ~ relevel(factor(grp)'))
    np.testing.assert_allclose(a.fixef.to_numpy(), list(ref["fixef"].values()), rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = hl.LMM("Reaction ~ factor(dg, levels = c(0, 1)) + (1 | Subject)", sleep).fit()
        c = hl.LMM("Reaction ~ factor(dg) + (1 | Subject)", sleep[sleep.dg <= 1]).fit()
    assert b.nobs == c.nobs == int((sleep.dg <= 1).sum())
    np.testing.assert_allclose(b.fixef.to_numpy(), c.fixef.to_numpy(), rtol=1e-9)


@pytest.mark.parametrize("call", ["factor(dg)", "relevel(grp, \"b\")", "ns(Days, 3)"])
def test_dask_refuses_what_the_whole_data_decides(sleep, call):
    """Levels and knots are learned from all rows; a Dask fit's encoder sees a prototype: it
    refuses them naming the call, and says what to do."""
    dd = pytest.importorskip("dask.dataframe")
    with pytest.raises(hl.HierlmmError, match=re.escape(call.split("(")[0]) + r"\(\) learns its (levels|knots)"):
        hl.LMM(f"Reaction ~ {call} + (1 | Subject)", dd.from_pandas(sleep, npartitions=3))


@pytest.mark.parametrize("call, values", [
    ("abs(v)", lambda d: np.abs(d.v)), ("sign(v)", lambda d: np.sign(d.v)), ("floor(v)", lambda d: np.floor(d.v)),
    ("ceiling(v)", lambda d: np.ceil(d.v)), ("trunc(v)", lambda d: np.trunc(d.v)),
    ("round(v)", lambda d: np.round(d.v)), ("round(u, 1)", lambda d: np.round(d.u, 1)),
    ("sin(u)", lambda d: np.sin(d.u)), ("cos(u)", lambda d: np.cos(d.u)), ("tan(u)", lambda d: np.tan(d.u)),
    ("asin(u)", lambda d: np.arcsin(d.u)), ("acos(u)", lambda d: np.arccos(d.u)), ("atan(u)", lambda d: np.arctan(d.u)),
    ("sinh(u)", lambda d: np.sinh(d.u)), ("cosh(u)", lambda d: np.cosh(d.u)), ("tanh(u)", lambda d: np.tanh(d.u)),
    ("pmin(u, 0.5)", lambda d: np.minimum(d.u, 0.5)), ("pmax(u, 0.5, v)", lambda d: np.maximum(np.maximum(d.u, 0.5), d.v)),
    ("log1p(u)", lambda d: np.log1p(d.u)), ("expm1(u)", lambda d: np.expm1(d.u)),
    ("as.integer(v)", lambda d: np.trunc(d.v)), ("as.numeric(late)", lambda d: d.late.astype(float)),
])
def test_r_math_by_its_r_name(sleep, call, values):
    """R's elementwise functions under R's names (``ceiling``, ``asin``, ``pmin`` of several
    vectors; ``round`` to even at a tie, as R): the fit with the column computed beforehand."""
    d = sleep.assign(u=(sleep.Days + 1) / 11, v=sleep.Days * 0.5 - 2.25)
    a = hl.LMM(f"Reaction ~ {call} + (1 | Subject)", d).fit()
    b = hl.LMM("Reaction ~ w + (1 | Subject)", d.assign(w=values(d))).fit()
    assert list(a.fixef.index) == ["(Intercept)", call]
    np.testing.assert_allclose(a.fixef.to_numpy(), b.fixef.to_numpy(), rtol=1e-10)


@pytest.mark.parametrize("call, message", [
    (lambda m: m.fit(REML=False), "method='REML' or method='ML'"),
    (lambda m: m.fit(start=[1.0]), "theta0="),
    (lambda m: m.fit().predict(re_form=None), "kind="),
    (lambda m: m.sample(seed=1, draws=10, tune=10, chains=1), "random_seed="),
    (lambda m: m.sample(iter=2000, chains=1), "draws= and tune="),
])
def test_r_and_pymc_keyword_names_say_hierlmms(sleep, call, message):
    """R's and PyMC's argument names get hierlmm's in the message (``sample(seed=1)`` reached
    nutpie as a second ``seed`` and raised its TypeError); other unknown names are Python's
    TypeError."""
    model = hl.LMM("Reaction ~ Days + (1 | Subject)", sleep)
    with pytest.raises(hl.HierlmmError, match=re.escape(message)):
        call(model)
    with pytest.raises(TypeError, match="unexpected keyword argument 'mthod'"):
        model.fit(mthod="ML")


def test_a_column_named_as_a_function_is_the_column(sleep):
    """A column named ``sign`` or ``c`` is the column (R looks names up in the data first).
    (formulaic resolves a call's name the same way, so ``sign(x)`` beside a column ``sign``
    calls the column and is refused: R would look a call up among functions only.)"""
    d = sleep.assign(sign=sleep.Days * 0.5, c=sleep.Days % 3)
    a = hl.LMM("Reaction ~ sign + c + (1 | Subject)", d).fit()
    b = hl.LMM("Reaction ~ s2 + c2 + (1 | Subject)", d.assign(s2=d["sign"], c2=d["c"])).fit()
    np.testing.assert_allclose(a.fixef.to_numpy(), b.fixef.to_numpy(), rtol=1e-10)
    with pytest.raises(hl.HierlmmError, match="sign"):
        hl.LMM("Reaction ~ sign(Days - 4) + (1 | Subject)", d)
