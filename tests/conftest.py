"""Shared helpers: the lme4 references (copied from ../shared/reference) and name mapping."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest

REF_DIR = Path(__file__).parent / "reference"


def load_ref(name: str) -> dict:
    return json.loads((REF_DIR / f"{name}.json").read_text())


def lme4_models() -> list[str]:
    """Every reference file with an lme4 ``formula`` field."""
    out = []
    for p in sorted(REF_DIR.glob("*.json")):
        d = json.loads(p.read_text())
        if isinstance(d.get("formula"), str):
            out.append(p.stem)
    return out


_T = re.compile(r"(\w+)\[T\.([^\]]+)\]")


def r_name(name: str) -> str:
    """formulaic's coefficient name -> R's (``Sex[T.Female]`` -> ``SexFemale``)."""
    return _T.sub(lambda m: m.group(1) + m.group(2), name)


@pytest.fixture(scope="session")
def fit_ref():
    """Fit a reference model once per session: ``fit_ref(name) -> (fit, ref)``."""
    import hierlmm as hl

    cache = {}

    def get(name):
        if name not in cache:
            ref = load_ref(name)
            df = hl.datasets.load(ref["data"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", hl.SingularFitWarning)
                fit = hl.LMM(ref["formula"], df).fit(method="REML" if ref["REML"] else "ML")
            cache[name] = (fit, ref)
        return cache[name]

    return get


# CI runs a fixed sequence of hypothesis examples (reproducible); locally they vary
import os  # noqa: E402

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


# ---------------------------------------------------------------- the differential suite
def pytest_addoption(parser):
    group = parser.getgroup("differential", "hierlmm against R on random models")
    group.addoption("--models", type=int, default=None,
                    help="number of random models to compare with R (default 150, or $HIERLMM_DIFF_MODELS)")
    group.addoption("--seed", type=int, default=None,
                    help="seed of the model generator (default 20261125, or $HIERLMM_DIFF_SEED)")
