"""The model matrices of plain columns (hierlmm.plain) are formulaic's, column for column.

Random frames with every column kind a user has (floats, integers of several widths, nullable
integers, float32, booleans, strings, pandas' string dtype, categoricals of strings) and random
sums of them, with and without intercept: where the plain path answers, its ``y``, ``X`` and
R's names equal what formulaic gives through hierlmm's R syntax; where every column is of a
kind it claims, it must answer. Whole designs (and prediction on new data, summaries, Type III
tests, emmeans) are the same built either way.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hierlmm as hl
import hierlmm.design as design_module
from hierlmm.design import _formulaic_fixed, build_design, logical_columns
from hierlmm.formula import parse_formula
from hierlmm.plain import plain_columns, plain_fixed, plain_names, plain_variables
from hierlmm.rsyntax import to_formulaic

KINDS = ["float", "int8", "int64", "Int64", "float32", "uint16", "bool", "str", "string", "cat", "cat_unused"]
FACTORS = {"bool", "str", "string", "cat", "cat_unused"}


def column(kind: str, rng, n: int):
    if kind == "float":
        return rng.normal(size=n) * 10.0 ** rng.integers(-3, 4)
    if kind in ("int8", "int64", "uint16", "Int64"):
        return pd.array(rng.integers(0, 100, n), dtype=kind)
    if kind == "float32":
        return rng.normal(size=n).astype(np.float32)
    if kind == "bool":
        out = rng.random(n) < 0.5
        out[:2] = [True, False]
        return out
    levels = ["b", "a", "C", "x y", "a:b", "é"][: rng.integers(2, 7)]
    values = rng.choice(levels, n)
    values[: len(levels)] = levels
    if kind == "str":
        return values.astype(object)
    if kind == "string":
        return pd.array(values, dtype="string")
    categories = list(rng.permutation(levels))
    return pd.Categorical(values, categories=categories)


@st.composite
def frames(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    n = int(rng.integers(12, 40))
    k = draw(st.integers(0, 4))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=k, max_size=k))
    df = pd.DataFrame({f"v{i}": column(kind, rng, n) for i, kind in enumerate(kinds)})
    df["y"] = rng.normal(size=n) + 100
    for i, kind in enumerate(kinds):
        if kind == "cat_unused":  # build_design drops unused categories first: do the same
            df[f"v{i}"] = df[f"v{i}"].cat.remove_unused_categories()
    intercept = draw(st.sampled_from(["", "1 + ", "0 + ", "-1 + "]))
    names = [f"v{i}" for i in draw(st.permutations(range(k)))]
    rhs = intercept + " + ".join(names) if names else (intercept.strip(" +") or "1")
    if intercept == "-1 + " and names:
        rhs = " + ".join(names) + " - 1"
    return df, rhs, kinds


def formulaic_fixed(df: pd.DataFrame, rhs: str):
    parsed = parse_formula(f"y ~ {rhs}", random_required=False)
    logical = logical_columns(df)
    ordered = {c for c in df.columns if isinstance(df[c].dtype, pd.CategoricalDtype) and df[c].cat.ordered}
    return _formulaic_fixed(parsed, to_formulaic(parsed.fixed_formula, ordered, logical), df, df, 0, logical)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames())
def test_plain_fixed_part_is_formulaics(case):
    df, rhs, kinds = case
    plain = plain_fixed("y", rhs, df)
    if plain_names(rhs) == ([], False):  # "0" alone: no columns; formulaic's business
        assert plain is None
        return
    assert plain is not None, (rhs, kinds)  # every kind drawn is one the plain path claims
    y, X, names, _ = formulaic_fixed(df, rhs)
    np.testing.assert_array_equal(plain[0], y)
    assert plain[2] == names, rhs
    np.testing.assert_array_equal(plain[1], X)


def test_what_the_plain_path_leaves_to_formulaic():
    df = pd.DataFrame({"y": [1.0, 2, 3, 4], "x": [1.0, 2, 3, 5], "o": pd.Categorical(list("abab"), ordered=True),
                       "t": [True] * 4,
                       "k": pd.Categorical([1, 2, 1, 2]), "d": [1, "a", 2, "b"], "one": ["a"] * 4,
                       "z": [1 + 1j, 2, 3, 4], "my.x": [1.0, 2, 3, 4]})
    for rhs in ["t", "x + t", "x:o", "x*o", "log(x)", "I(x^2)", "o", "k", "d", "one", "z", "x - 2", "`my.x`", "my.x",
                "0 + 1 + x", "x + x", "Intercept", "C(x)", "poly(x, 2)", "1 +", "x + + x", "True", "x + None"]:
        assert plain_fixed("y", rhs, df) is None, rhs
    assert plain_fixed("log(y)", "x", df) is None
    assert plain_variables("y ~ x + f - 1") == {"y", "x", "f"}
    assert plain_variables("log(y) ~ x") is None and plain_variables("x + I(x)") is None
    assert plain_columns("1 + k", df) is None  # a factor left of the bar: formulaic
    assert plain_columns("x - 1", df)[1] == ["x"]
    Z, names = plain_columns("1", df)
    assert names == ["(Intercept)"] and Z.shape == (4, 1) and not Z.flags.writeable


DESIGNS = [
    ("Reaction ~ Days + (Days | Subject)", "sleepstudy"),
    ("diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin"),
    ("MathAch ~ SES + Sex + Minority + (SES | School)", "MathAchieve"),
    ("yield ~ 0 + Variety + nitro + (1 | Block/Variety)", "Oats"),
]


@pytest.mark.parametrize("formula,name", DESIGNS)
def test_designs_and_what_follows_are_the_same_either_way(formula, name, monkeypatch):
    data = hl.datasets.load(name)
    if name == "Oats":
        data = data.assign(nitro=data["nitro"].astype(float))
    plain = build_design(formula, data)
    assert plain.formulaic_spec is None  # built without formulaic
    monkeypatch.setattr(design_module, "plain_fixed", lambda *a: None)
    slow = build_design(formula, data)
    assert slow.formulaic_spec is not None
    assert plain.fixef_names == slow.fixef_names and plain.all_fixef_names == slow.all_fixef_names
    np.testing.assert_array_equal(plain.X, slow.X)
    np.testing.assert_array_equal(plain.y, slow.y)
    new = data.sample(frac=0.5, random_state=1)
    np.testing.assert_array_equal(plain.fixed_matrix(new), slow.fixed_matrix(new))
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = hl.LMM(formula, data).fit()
    assert fit.model.design.formulaic_spec is None
    table = fit.anova()  # Type III tests read the terms of formulaic's spec, built on demand
    assert fit.model.design.formulaic_spec is not None
    monkeypatch.setattr(design_module, "plain_fixed", lambda *a: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slow_fit = hl.LMM(formula, data).fit()
    pd.testing.assert_frame_equal(table, slow_fit.anova())
    np.testing.assert_array_equal(fit.predict(new), slow_fit.predict(new))
