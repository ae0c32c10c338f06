"""Data sets bundled with hierlmm, with R's factor-level order kept.

Each data set is a CSV file from the R packages lme4 1.1-31 or nlme 3.1-162, plus a
``NAME.levels.json`` file giving, for every factor column, its levels in R's order.
:func:`load` reads the factor columns as pandas ``Categorical`` with exactly those
categories, so treatment contrasts and coefficient names match R's (the first level is
the reference level).

========== =================================================================================
name       description
========== =================================================================================
sleepstudy lme4. Reaction time (ms) of 18 subjects (``Subject``) over 10 days (``Days``, 0-9)
           of sleep deprivation. 180 rows.
Orthodont  nlme. Distance (mm) from pituitary to pterygomaxillary fissure (``distance``) of
           27 children (``Subject``, ``Sex``) at ages 8, 10, 12, 14 (``age``). 108 rows.
Penicillin lme4. Diameter of growth-inhibition zone (``diameter``) of 6 penicillin samples
           (``sample``) on 24 plates (``plate``), fully crossed. 144 rows.
Pastes     lme4. Strength of paste (``strength``) from 10 delivery batches (``batch``), 3 casks
           per batch (``cask``; ``sample`` = batch:cask), 2 assays each. 60 rows.
Dyestuff   lme4. Yield of dyestuff (``Yield``, grams) from 6 batches (``Batch``) of an
           intermediate product, 5 preparations each. 30 rows.
Dyestuff2  lme4. Simulated data of the same layout as Dyestuff (``Yield``, ``Batch``) whose
           between-batch variance estimate is zero. 30 rows.
Rail       nlme. Travel time of ultrasonic waves (``travel``, ns - 36100) through 6 rails
           (``Rail``), 3 measurements each. 18 rows.
Oats       nlme. Yield of oats (``yield``) in a split-plot experiment: 6 blocks (``Block``),
           3 varieties (``Variety``) on whole plots, 4 nitrogen levels (``nitro``, 0-0.6 cwt/acre)
           on sub-plots. 72 rows.
Ovary      nlme. Number of large ovarian follicles (``follicles``) of 11 mares (``Mare``)
           observed over time (``Time``, scaled to the oestrus cycle). 308 rows.
MathAchieve nlme. Mathematics achievement (``MathAch``) of 7185 students in 160 schools
           (``School``) with socio-economic status (``SES``), ``Sex``, ``Minority`` and the
           school mean SES (``MEANSES``).
InstEval   lme4. Lecture evaluations (``y``, 1-5) by students (``s``, 2972) of lecturers (``d``,
           1128) in departments (``dept``, 14), with ``service``, ``studage``, ``lectage``.
           73421 rows.
========== =================================================================================
"""

from __future__ import annotations

import json
from importlib import resources

import pandas as pd

_NAMES = (
    "sleepstudy", "Orthodont", "Penicillin", "Pastes", "Dyestuff", "Dyestuff2",
    "Rail", "Oats", "Ovary", "MathAchieve", "InstEval",
)

__all__ = ["load", "list", "path"]


def list() -> list[str]:  # noqa: A001 - mirrors the CLI's ``hierlmm datasets``
    """Names of the bundled data sets."""
    return [*_NAMES]


def _lookup(name: str) -> str:
    for known in _NAMES:
        if known.lower() == name.lower():
            return known
    from hierlmm.errors import DataError

    raise DataError(f"no bundled data set named {name!r}; available: {', '.join(_NAMES)}")


def path(name: str):
    """Path of the bundled CSV file of data set ``name``."""
    return resources.files(__name__) / "data" / f"{_lookup(name)}.csv"


def load(name: str) -> pd.DataFrame:
    """Load a bundled data set as a DataFrame, factors in R's level order.

    Parameters
    ----------
    name : str
        One of :func:`list` (case-insensitive).

    Returns
    -------
    pandas.DataFrame
        Factor columns are ``Categorical`` with R's levels; the rest numeric.
    """
    name = _lookup(name)
    base = resources.files(__name__) / "data"
    levels = json.loads((base / f"{name}.levels.json").read_text())
    df = pd.read_csv(base / f"{name}.csv", dtype={col: str for col in levels})
    for col, lev in levels.items():
        df[col] = pd.Categorical(df[col], categories=lev)
    return df
