"""Models stated level by level (``LMM.from_levels``) are exactly their combined lme4 models."""

from __future__ import annotations

import numpy as np
import pytest

import hierlmm as hl


@pytest.fixture(scope="module")
def mathach():
    return hl.datasets.load("MathAchieve")


@pytest.mark.parametrize("level1, level2, combined", [
    ("MathAch ~ 1 + SES", {"(Intercept)": "~ 1 + MEANSES", "SES": "~ 1 + MEANSES"},
     "MathAch ~ SES * MEANSES + (SES | School)"),
    # an unlisted coefficient is fixed; a coefficient without level-2 predictors varies alone
    ("MathAch ~ 1 + SES + Sex", {"(Intercept)": "~ 1 + MEANSES"},
     "MathAch ~ SES + Sex + MEANSES + (1 | School)"),
    ("MathAch ~ 1 + SES", {"SES": "~ 1"}, "MathAch ~ SES + (0 + SES | School)"),
])
def test_two_levels_are_the_combined_model(mathach, level1, level2, combined):
    m = hl.LMM.from_levels(level1, level2, group="School", data=mathach)
    a, b = m.fit(), hl.LMM(combined, mathach).fit()
    assert a.deviance == pytest.approx(b.deviance, rel=1e-12)
    assert sorted(a.fixef.index) == sorted(b.fixef.index)
    np.testing.assert_allclose(a.fixef[b.fixef.index], b.fixef, rtol=1e-9)
    np.testing.assert_allclose(a.varcorr.vcov, b.varcorr.vcov, rtol=1e-8)
    text = m.describe()
    assert "Level-wise form:" in text and "Hierarchical form:" in text and "Implied marginal form:" in text
    assert f"combined (lme4): {m.formula}" in text


def test_three_levels_are_the_nested_model():
    pastes = hl.datasets.load("Pastes")
    m = hl.LMM.from_levels("strength ~ 1", {"(Intercept)": "~ 1"}, group=["batch", "cask"], data=pastes,
                           level3={"(Intercept)": "~ 1"})
    assert m.fit().deviance == pytest.approx(hl.LMM("strength ~ 1 + (1 | batch/cask)", pastes).fit().deviance,
                                             rel=1e-12)
    lines = m.levels.lines()
    assert lines[1] == "level 2 (cask:batch): π0_jk = β00_k + r0_jk"
    assert lines[2] == "level 3 (batch): β00_k = γ000 + u0_k"


def test_level_errors_name_the_piece(mathach):
    with pytest.raises(hl.DataError, match="'SES' of a level-2 equation varies within School"):
        hl.LMM.from_levels("MathAch ~ 1 + SES", {"(Intercept)": "~ 1 + SES"}, group="School", data=mathach)
    with pytest.raises(hl.FormulaError, match="'Sex', which are not level-1 coefficients"):
        hl.LMM.from_levels("MathAch ~ 1 + SES", {"Sex": "~ 1"}, group="School", data=mathach)
    with pytest.raises(hl.FormulaError, match="no coefficient varies"):
        hl.LMM.from_levels("MathAch ~ 1 + SES", {}, group="School", data=mathach)
    with pytest.raises(hl.FormulaError, match="level3 needs group"):
        hl.LMM.from_levels("MathAch ~ 1", {"(Intercept)": "~ 1"}, group="School", data=mathach,
                           level3={"(Intercept)": "~ 1"})
