"""Shared helpers: the lme4 references (copied from ../shared/reference) and name mapping."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

REF_DIR = Path(__file__).parent / "reference"


def load_ref(name: str) -> dict:
    return json.loads((REF_DIR / f"{name}.json").read_text())


def at_theta(fit, theta):
    """hierlmm's result at a given θ (lme4's), not at its own optimum: where lme4 stopped
    short in a flat valley, the statistics that follow θ are compared at lme4's θ."""
    import numpy as np

    from hierlmm.optimize import OptResult
    from hierlmm.results import LMMResult

    theta = np.atleast_1d(np.asarray(theta, dtype=float))  # JSON gives a one-entry θ as a number
    dev = fit.deviance_function
    return LMMResult(fit.model, dev, OptResult(theta=theta, fun=float(dev(theta)), evaluations=0))


def untouched(fit, other) -> list[int]:
    """The coefficients of ``fit`` that mean the same in ``other``, a fit of the same formula to
    data with a covariate in other affine coordinates (the same column space, ``X = X_o M``):
    those whose row of ``M⁻¹`` is a positive multiple of their own unit vector (``β = M⁻¹ β_o``), so that their
    t statistics and df must agree. A covariate's shift leaves the slopes of its
    highest-order terms alone and moves the intercept and the main effects it interacts with."""
    import numpy as np

    if list(fit.design.fixef_names) != list(other.design.fixef_names):
        return []
    X, Xo = np.asarray(fit.design.X, dtype=float), np.asarray(other.design.X, dtype=float)
    # solved on the better-conditioned of the two (a covariate 1e10 SDs from 0 is not)
    if np.linalg.cond(X) <= np.linalg.cond(Xo):
        Minv = np.linalg.lstsq(X, Xo, rcond=None)[0]  # X_o = X M⁻¹
    else:
        Minv = np.linalg.inv(np.linalg.lstsq(Xo, X, rcond=None)[0])
    # round-off in column k of M⁻¹ is relative to that column's largest entry (x shifted by
    # c puts c² into x²'s column): entries below 1e-8 of it are zeros
    N = Minv / np.max(np.abs(Minv), axis=0)
    return [j for j in range(N.shape[0])
            if N[j, j] > 1e-8 and np.all(np.abs(np.delete(N[j], j)) < 1e-8)]


def lme4_models() -> list[str]:
    """Every reference file of an lme4 fit (an lme4 ``formula`` and its ``fixef``)."""
    out = []
    for p in sorted(REF_DIR.glob("*.json")):
        d = json.loads(p.read_text())
        if isinstance(d, dict) and isinstance(d.get("formula"), str) and "fixef" in d:
            out.append(p.stem)
    return out


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

# The differential suite's fixtures (tests/differential): generate the cases, fit them all in R
# once, fit each in hierlmm on first use. ``pytest tests/differential --models 1000 --seed 7``
# (or ``HIERLMM_DIFF_MODELS`` and ``HIERLMM_DIFF_SEED``) runs another draw. Without R the suite
# is skipped with a message saying how to install it; under CI (``CI=true``) a missing R is an
# error. (Kept here, not in a second conftest.py, so that ``from conftest import ...`` in the
# test modules always finds this file.)
import sys  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "differential"))

from generator import generate  # noqa: E402
from rharness import INSTALL_HINT, fit_in_r, r_available  # noqa: E402

DEFAULT_MODELS = 150
DEFAULT_SEED = 20261125


def _settings(config) -> tuple[int, int]:
    n = config.getoption("--models") or int(os.environ.get("HIERLMM_DIFF_MODELS", DEFAULT_MODELS))
    seed = config.getoption("--seed")
    seed = seed if seed is not None else int(os.environ.get("HIERLMM_DIFF_SEED", DEFAULT_SEED))
    return n, seed


_CASES: dict[tuple[int, int], list] = {}


def _cases(config):
    key = _settings(config)
    if key not in _CASES:
        _CASES[key] = generate(seed=key[1], n=key[0])
    return _CASES[key]


# Disagreements found by the default draw that are not resolved yet, as
# {(test name, case id): reason}: each an expected failure, strict (it must fail, so a fix shows
# up as XPASS and the entry is removed). Only for the default seed and count. None at present:
# the last ones were lmerTest's and pbkrtest's derivatives in lme4's θ with a slope's covariate
# far from 0 (now compared on R's standardised refit), R's interaction names in coef() (R's two
# columns added), and R's ptukey below 2 df (against a direct integration).
KNOWN: dict[tuple[str, str], str] = {}


def pytest_collection_modifyitems(config, items):
    if _settings(config) != (DEFAULT_MODELS, DEFAULT_SEED):
        return
    for item in items:
        callspec = getattr(item, "callspec", None)
        key = (item.originalname, callspec.params.get("diff_case") if callspec else None)
        if key in KNOWN:
            item.add_marker(pytest.mark.xfail(reason=KNOWN[key], strict=True))


def pytest_generate_tests(metafunc):
    if "diff_case" in metafunc.fixturenames:
        ids = [c.id for c in _cases(metafunc.config)]
        metafunc.parametrize("diff_case", ids, indirect=True)


@pytest.fixture(scope="session")
def r_results(request, tmp_path_factory):
    why = r_available()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"differential tests need R under CI: {why}. {INSTALL_HINT}")
        pytest.skip(f"{why}. {INSTALL_HINT}")
    cases = _cases(request.config)
    return fit_in_r(cases, tmp_path_factory.mktemp("differential"))


_FITS: dict[str, tuple] = {}


@pytest.fixture
def diff_case(request, r_results):
    """``(case, R's results, hierlmm's fit or None, hierlmm's error or None)``."""
    import hierlmm as hl

    case = next(c for c in _cases(request.config) if c.id == request.param)
    if case.id not in _FITS:
        fit, err = None, None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fit = hl.LMM(case.formula, case.data, weights=case.weights, **case.residual_arguments()).fit(
                    method="REML" if case.reml else "ML")
            except hl.HierlmmError as exc:
                err = exc
        _FITS[case.id] = (fit, err)
    fit, err = _FITS[case.id]
    return case, r_results[case.id], fit, err


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _CASES:
        return
    n, seed = _settings(config)
    cases = _cases(config)
    better = sorted(c.id for c in cases if "better" in c.notes)
    line = f"differential: {n} models, seed {seed}"
    if better:
        line += (f"; where they differ the likelihood sides with hierlmm on {len(better)} "
                 f"({', '.join(better[:10])}{', ...' if len(better) > 10 else ''})")
    terminalreporter.write_line(line)
