"""Bad input raises a hierlmm error (a ValueError) naming the term, column or level at fault."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hierlmm as hl


@pytest.fixture(scope="module")
def sleep():
    return hl.datasets.load("sleepstudy")


@pytest.mark.parametrize(
    "formula, match",
    [
        ("Reaction ~ Days + (Days |)", r"\(Days \|\).*no grouping factor"),
        ("Reaction ~ Days + (| Subject)", r"\(\| Subject\).*nothing before"),
        ("Reaction ~ Days + (Days | Subject", "unbalanced parentheses"),
        ("Reaction ~ Days + Days | Subject)", "unbalanced parentheses"),
        ("Reaction ~ Dayz + (1 | Subject)", "'Dayz'"),
        ("Reaction ~ Days + (1 | Subj)", r"'Subj' \(in \(1 \| Subject\)\)|'Subj' \(in \(1 \| Subj\)\)"),
        ("Reaction ~ Days + (Dose | Subject)", "'Dose'"),
        ("Reaction ~ Days", "no random-effects term"),
        ("Reaction Days + (1 | Subject)", "response ~ terms"),
        ("Reaction ~ Days + (1 | Subject + Days)", r"'Subject \+ Days'"),
        ("Reaction ~ Days + (1 | log(Subject))", r"'log\(Subject\)'"),
    ],
)
def test_formula_errors_name_the_piece(sleep, formula, match):
    with pytest.raises(hl.HierlmmError, match=match) as info:
        hl.LMM(formula, sleep)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, hl.FormulaError)


def test_single_level_grouping_factor(sleep):
    df = sleep.copy()
    df["one"] = "only"
    with pytest.raises(hl.DataError, match=r"'one'.*single level.*'only'"):
        hl.LMM("Reaction ~ Days + (1 | one)", df)


def test_as_many_random_effects_as_observations(sleep):
    df = sleep.copy()
    df["obs"] = np.arange(len(df)).astype(str)
    with pytest.raises(hl.DataError, match=r"'obs'.*levels.*< number of observations"):
        hl.LMM("Reaction ~ Days + (1 | obs)", df)
    # 18 subjects x 10 coefficients = 180 random effects for 180 observations
    df["d"] = pd.Categorical(df.Days.astype(str))
    with pytest.raises(hl.DataError, match=r"number of observations \(=180\) <= number of random effects \(=180\)"):
        hl.LMM("Reaction ~ 1 + (d | Subject)", df)


def test_non_integer_numeric_grouping(sleep):
    df = sleep.copy()
    df["w"] = np.linspace(0, 1, len(df))
    with pytest.raises(hl.DataError, match=r"'w'.*non-integer"):
        hl.LMM("Reaction ~ Days + (1 | w)", df)


def test_data_must_be_a_dataframe():
    with pytest.raises(hl.DataError, match="DataFrame"):
        hl.LMM("y ~ 1 + (1 | g)", {"y": [1, 2], "g": ["a", "b"]})


def test_response_with_two_columns(sleep):
    with pytest.raises(hl.HierlmmError):
        hl.LMM("Reaction + Days ~ 1 + (1 | Subject)", sleep)


def test_infinite_values_named(sleep):
    df = sleep.copy()
    df["Days"] = df.Days.astype(float)
    df.loc[3, "Days"] = np.inf
    with pytest.raises(hl.DataError, match="Days"):
        hl.LMM("Reaction ~ Days + (1 | Subject)", df)


def test_bad_method_and_kind(sleep):
    model = hl.LMM("Reaction ~ Days + (1 | Subject)", sleep)
    with pytest.raises(hl.HierlmmError, match="method"):
        model.fit(method="Bayes")
    fit = model.fit()
    with pytest.raises(hl.HierlmmError, match="kind"):
        fit.fitted(kind="population")
    with pytest.raises(hl.HierlmmError, match="beta"):
        fit.ranef_posterior(beta="random")


def test_unknown_dataset():
    with pytest.raises(hl.DataError, match="no bundled data set named 'sleep'"):
        hl.datasets.load("sleep")


@pytest.mark.parametrize("change, formula, message", [
    (lambda d: pd.concat([d, d[["Days"]]], axis=1), "Reaction ~ Days + (1 | Subject)",
     r"duplicated column name\(s\) 'Days'"),
    (lambda d: d.assign(Reaction=d.Reaction.astype(str)), "Reaction ~ Days + (1 | Subject)",
     r"response 'Reaction' is not numeric .*pd.to_numeric"),
    (lambda d: d.assign(t=pd.Timestamp("2020-01-01") + pd.to_timedelta(d.Days, unit="D")),
     "Reaction ~ t + (1 | Subject)", r"column 't' holds dates or times .*\.dt\.days"),
    (lambda d: d.iloc[:0], "Reaction ~ Days + (1 | Subject)", r"data has no rows"),
])
def test_unusable_columns_get_one_line_messages(change, formula, message):
    data = change(hl.datasets.load("sleepstudy"))
    with pytest.raises(hl.HierlmmError, match=message) as info:
        hl.LMM(formula, data)
    assert "\n" not in str(info.value) and len(str(info.value)) < 200


def test_a_date_grouping_factor_is_a_factor():
    data = hl.datasets.load("sleepstudy")
    data["day"] = pd.Timestamp("2020-01-01") + pd.to_timedelta(data.Days, unit="D")
    fit = hl.LMM("Reaction ~ Days + (1 | Subject) + (1 | day)", data).fit()
    assert fit.design.terms[1].m == 10
