"""Data as users have it: other units, types and labels give the same answer, bad arguments a
one-line HierlmmError naming the argument, formulas never run code.

Every expected number is either the same model's fit on the nicely shaped data (an exact
invariance, within the optimiser's or the data's precision) or lme4's reference
(``tests/reference``), never a literal copied from hierlmm.
"""

from __future__ import annotations

import os
import pickle
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

import hierlmm as hl
from conftest import load_ref


@pytest.fixture(scope="module")
def sleep():
    return hl.datasets.load("sleepstudy")


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(20), 8)
    x = rng.normal(size=160)
    y = 1 + 0.5 * x + rng.normal(size=20)[g] + rng.normal(size=160)
    return pd.DataFrame({"y": y, "x": x, "g": g, "w": rng.uniform(0.5, 2, 160),
                         "f": np.where(rng.random(160) < 0.5, "a", "b")})


def _fit(formula, data, **kw):
    return hl.LMM(formula, data, **{k: v for k, v in kw.items() if k != "method"}).fit(method=kw.get("method", "REML"))


# ------------------------------------------------------------------ units and origins
@pytest.mark.parametrize("shift", [1e5, 1e10, 1e12])
def test_response_with_a_large_mean(small, shift):
    """y + c: the same θ, σ, slope and log-likelihood, to the digits y + c carries (ε c)."""
    base = _fit("y ~ x + (1 | g)", small)
    fit = _fit("y ~ x + (1 | g)", small.assign(y=small.y + shift))
    delta = np.finfo(float).eps * shift  # what each y has lost, in units of y (SD ~1.4)
    assert fit.converged
    assert fit.theta.iloc[0] == pytest.approx(base.theta.iloc[0], rel=1e-5 + 100 * delta)
    assert fit.sigma == pytest.approx(base.sigma, rel=1e-6 + 100 * delta)
    assert fit.fixef["x"] == pytest.approx(base.fixef["x"], abs=1e-5 + 100 * delta)
    assert fit.fixef["(Intercept)"] - shift == pytest.approx(base.fixef["(Intercept)"], abs=1e-5 + 100 * delta)
    assert fit.loglik == pytest.approx(base.loglik, abs=1e-6 + 100 * delta * np.sqrt(160))


@pytest.mark.parametrize("shift", [1e6, 1e10])
def test_covariate_with_a_large_mean_is_not_aliased(small, shift):
    base = _fit("y ~ x + (1 | g)", small)
    fit = _fit("y ~ x + (1 | g)", small.assign(x=small.x + shift))
    assert fit.design.dropped_columns == []
    assert fit.fixef["x"] == pytest.approx(base.fixef["x"], rel=1e-6 + 1e3 * np.finfo(float).eps * shift)
    assert fit.loglik == pytest.approx(base.loglik, abs=1e-5)


@pytest.mark.parametrize("scale", [1e-8, 1e8])
@pytest.mark.parametrize("method", ["REML", "ML"])
def test_random_slope_in_other_units_is_lme4s_fit(sleep, scale, method):
    """sleepstudy's (Days | Subject) with Days in other units: lme4's log-likelihood (its
    reference, in days); the slope and its SD scale by 1/scale, the correlation is the same.
    (lme4 itself refuses Days × 1e8: "Downdated VtV is not positive definite".)"""
    ref = load_ref("sleepstudy_slope_reml" if method == "REML" else "sleepstudy_slope_ml")
    fit = _fit("Reaction ~ Days + (Days | Subject)", sleep.assign(Days=sleep.Days * scale), method=method)
    assert fit.converged
    # REML's log-likelihood holds −log|det| of X's basis: Days × a moves it by −log a
    basis = -np.log(scale) if method == "REML" else 0.0
    assert fit.loglik == pytest.approx(ref["logLik"] + basis, abs=1e-6)
    assert fit.fixef["Days"] * scale == pytest.approx(ref["fixef"]["Days"], rel=1e-6)
    vc = ref["varcorr"][0]
    sd = fit.varcorr.set_index(["var1"]).loc["Days"]
    assert float(sd.sdcor.iloc[0] if hasattr(sd.sdcor, "iloc") else sd.sdcor) * scale == pytest.approx(vc["sd"][1], rel=1e-4)


def test_weights_on_any_scale(small):
    """Var(ε_i) = σ²/w_i: weights × k leave D and the likelihood unchanged, σ × √k."""
    base = _fit("y ~ x + (1 | g)", small, weights="w")
    for k in (1e-12, 1e12):
        fit = _fit("y ~ x + (1 | g)", small.assign(w=small.w * k), weights="w")
        assert fit.loglik == pytest.approx(base.loglik, abs=1e-6)
        assert fit.sigma == pytest.approx(base.sigma * np.sqrt(k), rel=1e-6)
        assert fit.varcorr.vcov.iloc[0] == pytest.approx(base.varcorr.vcov.iloc[0], rel=1e-5)


def test_a_slope_far_from_zero_is_flagged_not_converged(sleep):
    """Days + 1e4 SDs in (Days | Subject): lme4's parametrisation computes the intercept at 0
    by a cancellation that leaves too few digits; the fit says so."""
    import warnings

    data = sleep.assign(Days=sleep.Days + 1e4 * sleep.Days.std())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = _fit("Reaction ~ Days + (Days | Subject)", data)
    assert any(issubclass(w.category, hl.ConvergenceWarning) and "nearly collinear" in str(w.message) for w in caught)
    assert not fit.converged


# ------------------------------------------------------------------ types of the same values
@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.uint8, "Int64", "UInt16", "int64[pyarrow]"])
def test_integer_columns_are_promoted_before_arithmetic(small, dtype):
    """I(k^2), I(k*k*k) of small integer types: R's double arithmetic, no wrap-around."""
    k = (np.arange(160) % 100).astype(np.int64)
    base = _fit("y ~ I(k^3) + (1 | g)", small.assign(k=k.astype(float)))
    fit = _fit("y ~ I(k^3) + (1 | g)", small.assign(k=pd.Series(k).astype(dtype)))
    np.testing.assert_allclose(fit.fixef, base.fixef, rtol=1e-10)


@pytest.mark.parametrize("convert", [
    lambda v: v.astype(object),
    lambda v: pd.Series([Decimal(repr(x)) for x in v], index=v.index),
    lambda v: pd.Series([Fraction(x) for x in v], index=v.index, dtype=object),
])
@pytest.mark.parametrize("column", ["y", "x"])
def test_python_number_objects_are_numbers(small, convert, column):
    """A column of Python numbers (object dtype: floats, Decimal, Fraction), the response as
    well as a covariate, is R's numeric (a response of them was refused as not numeric)."""
    base = _fit("y ~ x + (1 | g)", small)
    fit = _fit("y ~ x + (1 | g)", small.assign(**{column: convert(small[column])}))
    np.testing.assert_allclose(fit.fixef, base.fixef, rtol=1e-12)
    assert fit.loglik == pytest.approx(base.loglik, rel=1e-12)


def test_epoch_milliseconds_squared(small):
    t = (1.6e12 + np.arange(160) * 1e7).astype(np.int64)
    fit = _fit("y ~ I(t^2) + (1 | g)", small.assign(t=t))
    ref = _fit("y ~ I(t^2) + (1 | g)", small.assign(t=t.astype(float)))
    np.testing.assert_allclose(fit.fixef, ref.fixef, rtol=1e-8)


def test_factor_of_an_integer_keeps_level_names(small):
    fit = _fit("y ~ C(k) + (1 | g)", small.assign(k=(np.arange(160) % 3).astype(np.int8)))
    assert fit.fixef.index.tolist() == ["(Intercept)", "C(k)1", "C(k)2"]


@pytest.mark.parametrize("kind", ["float", "str", "category", "int8", "Int64", "object"])
def test_predict_finds_levels_by_value(small, kind):
    """Fitted with integer groups, predicted with the same groups in another type: the same
    conditional predictions (not the population line for 'new' levels)."""
    fit = _fit("y ~ x + (1 | g)", small)
    g = small.g
    new = {"float": g.astype(float), "str": g.astype(str), "category": g.astype("category"),
           "int8": g.astype(np.int8), "Int64": g.astype("Int64"), "object": g.astype(object)}[kind]
    np.testing.assert_allclose(fit.predict(small.assign(g=new)), fit.predict(small), rtol=1e-12)


def test_dates_as_grouping_match_across_types(sleep):
    data = sleep.assign(day=pd.Timestamp("2020-01-01") + pd.to_timedelta(sleep.Days, unit="D"))
    fit = _fit("Reaction ~ Days + (1 | Subject) + (1 | day)", data)
    assert "2020-01-01" in fit.ranef()["day"].index
    as_text = data.assign(day=data.day.dt.strftime("%Y-%m-%d"))
    np.testing.assert_allclose(fit.predict(as_text), fit.predict(data), rtol=1e-12)


# ------------------------------------------------------------------ labels
def test_one_and_the_string_one_are_one_level(small):
    """R reads a column of 1 and "1" as one level "1" (as.character): so does hierlmm."""
    mixed = small.g.astype(object).where(small.g != 1, "1")
    fit = _fit("y ~ x + (1 | g)", small.assign(g=mixed))
    base = _fit("y ~ x + (1 | g)", small.assign(g=small.g.astype(str)))
    assert fit.ranef()["g"].index.tolist() == base.ranef()["g"].index.tolist()
    assert fit.loglik == pytest.approx(base.loglik, abs=1e-9)


def test_interaction_labels_with_colons_do_not_collide(small):
    a = np.where(np.arange(160) % 2, "a:b", "a")
    b = np.where(np.arange(160) % 2, "c", "b:c")
    fit = _fit("y ~ x + (1 | a:b) + (1 | g)", small.assign(a=a, b=b))
    labels = fit.ranef()["a:b"].index.tolist()
    assert len(labels) == len(set(labels)) == 2


def test_interaction_of_many_levels_does_not_overflow():
    """Four factors of 60 000 levels: 1.3e19 combinations, past int64, in (1 | a:b:c:d)."""
    rng = np.random.default_rng(3)
    n = 3000
    cols = {c: rng.integers(0, 60_000, n) for c in "abcd"}
    pairs = np.repeat(np.arange(n // 2), 2)  # two rows per combination
    data = pd.DataFrame({c: v[pairs] for c, v in cols.items()})
    data["y"] = rng.normal(size=n) + rng.normal(size=n // 2)[pairs]
    data["x"] = rng.normal(size=n)
    fit = _fit("y ~ x + (1 | a:b:c:d)", data)
    assert fit.design.terms[0].m == n // 2
    key = data[list("abcd")].astype(str).agg(":".join, axis=1)
    assert set(fit.ranef()["a:b:c:d"].index) == set(key)


def test_a_column_named_intercept_is_a_covariate(small):
    fit = _fit("y ~ Intercept + (1 | g)", small.assign(Intercept=small.x))
    base = _fit("y ~ x + (1 | g)", small)
    assert fit.fixef.index.tolist() == ["(Intercept)", "Intercept"]
    np.testing.assert_allclose(fit.fixef.to_numpy(), base.fixef.to_numpy(), rtol=1e-10)
    no_int = _fit("y ~ 0 + Intercept + (1 | g)", small.assign(Intercept=small.x))
    assert no_int.fixef.index.tolist() == ["Intercept"]


def test_in_operator_is_nesting(small):
    """R's ``x %in% f``: the columns of x:f."""
    a = _fit("y ~ x %in% f + (1 | g)", small)
    b = _fit("y ~ x:f + (1 | g)", small)
    np.testing.assert_allclose(a.fixef.to_numpy(), b.fixef.to_numpy(), rtol=1e-12)


def test_unseen_level_of_a_text_fixed_factor_is_refused(small):
    fit = _fit("y ~ x + f + (1 | g)", small)
    with pytest.raises(hl.DataError, match=r"'f'.*not in the fit: c"):
        fit.predict(small.assign(f="c"))


def test_predict_needs_no_response_for_a_transformed_one(sleep):
    fit = _fit("log(Reaction) ~ Days + (Days | Subject)", sleep)
    np.testing.assert_allclose(fit.predict(sleep.drop(columns="Reaction")), fit.fitted(), rtol=1e-12)


def test_theta_order_is_lme4s_on_ties():
    """lme4 orders terms by rev(order(nlevels)) when they are not already in decreasing order:
    terms with as many levels as each other come in reverse formula order (R checked:
    ``(x || g) + (1 | k)`` gives θ names k, g.x, g.(Intercept))."""
    rng = np.random.default_rng(1)
    d = pd.DataFrame({"g": np.repeat(np.arange(10), 12), "h": np.tile(np.arange(10), 12),
                      "k": np.tile(np.arange(20), 6), "x": rng.normal(size=120), "y": rng.normal(size=120)})
    names = lambda f: [n for t in hl.LMM(f, d).design.terms for n in t.theta_names()]  # noqa: E731
    assert names("y ~ x + (1|g) + (1|h)") == ["g.(Intercept)", "h.(Intercept)"]
    assert names("y ~ x + (1|g) + (1|h) + (1|k)") == ["k.(Intercept)", "h.(Intercept)", "g.(Intercept)"]
    assert [n.replace(".1", "") for n in names("y ~ x + (x||g) + (1|k)")] == ["k.(Intercept)", "g.x",
                                                                             "g.(Intercept)"]


# ------------------------------------------------------------------ bad arguments: one line each
def _bad(call, match):
    with pytest.raises(hl.HierlmmError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("make, match", [
    (lambda d: d.assign(y=3.0), r"response 'y' is constant"),
    (lambda d: d.assign(y=2 * d.x + 1), r"fit the response exactly"),
    (lambda d: d.assign(y=d.y + 1j), r"column 'y' holds complex"),
    (lambda d: d.assign(x=d.x + 0j), r"column 'x' holds complex"),
    (lambda d: d.assign(g=d.g + 0.5), r"'g'.*non-integer"),
])
def test_data_that_cannot_carry_a_fit(small, make, match):
    _bad(lambda: _fit("y ~ x + (1 | g)", make(small)), match)


def test_rank_of_x_and_z_equal_to_n_is_refused():
    """25 rows, fixed effects and (1 | g/h) spanning them all: unbounded likelihood."""
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(8), 3)[:24]
    d = pd.DataFrame({"g": np.append(g, 7), "h": np.tile([0, 1, 2], 9)[:25], "x": rng.normal(size=25),
                      "z": rng.normal(size=25), "y": rng.normal(size=25)})
    XZ = np.column_stack([np.ones(25), d.x, d.z, pd.get_dummies(d.g).to_numpy(float),
                          pd.get_dummies(d.g.astype(str) + ":" + d.h.astype(str)).to_numpy(float)])
    assert np.linalg.matrix_rank(XZ) == 25  # the premise, by a dense computation
    _bad(lambda: _fit("y ~ x + z + (1 | g/h)", d, method="ML"), r"rank \[X Z\] = 25")


@pytest.mark.parametrize("call, match", [
    (lambda m, f: m.fit(theta0=[np.nan]), r"theta0 must hold finite numbers"),
    (lambda m, f: m.fit(theta0=[np.inf]), r"theta0 must hold finite numbers"),
    (lambda m, f: m.fit(theta0=[1.0, 2.0]), r"theta0 has 2 entries; this model's θ has 1"),
    (lambda m, f: m.fit(theta0=[]), r"theta0 has 0 entries"),
    (lambda m, f: f.refit(np.full(160, np.nan)), r"refit\(y\) has 160 value\(s\) that are NaN"),
    (lambda m, f: f.refit(np.ones(10)), r"refit\(y\) needs one response value per observation"),
    (lambda m, f: f.refit(pd.Series(np.ones(160), index=np.arange(160) + 5)), r"refit\(y\).*index"),
    (lambda m, f: f.refit(np.ones(160) + 1j), r"complex"),
    (lambda m, f: f.simulate(-1), r"simulate\(n\) must be a whole number >= 1"),
    (lambda m, f: f.simulate(0), r"simulate\(n\)"),
    (lambda m, f: f.simulate(2.5), r"simulate\(n\)"),
    (lambda m, f: f.bootstrap(0), r"n_boot"),
    (lambda m, f: m.posterior_mode(beta_prior_sd=0), r"beta_prior_sd must be a positive"),
    (lambda m, f: m.posterior_mode(beta_prior_sd=-1), r"beta_prior_sd"),
    (lambda m, f: m.posterior_mode(beta_prior_sd=np.nan), r"beta_prior_sd"),
    (lambda m, f: m.sample(draws=0), r"draws must be a whole number >= 1"),
    (lambda m, f: m.sample(draws=-5), r"draws"),
    (lambda m, f: m.sample(chains=0), r"chains must be"),
    (lambda m, f: m.sample(tune=-1), r"tune must be a whole number >= 0"),
    (lambda m, f: m.sample(draws=10, max_draws=5), r"max_draws"),
])
def test_bad_arguments(small, call, match):
    model = hl.LMM("y ~ x + (1 | g)", small)
    fit = model.fit()
    _bad(lambda: call(model, fit), match)


@pytest.mark.parametrize("arg", ["weights", "offset"])
def test_series_arguments_are_matched_by_index(small, arg):
    col = small.w if arg == "weights" else small.x
    by_name = _fit("y ~ x + (1 | g)", small, **{arg: "w" if arg == "weights" else "x"})
    shuffled = col.sample(frac=1.0, random_state=1)  # the same values, another order of rows
    fit = _fit("y ~ x + (1 | g)", small, **{arg: shuffled})
    assert fit.loglik == pytest.approx(by_name.loglik, abs=1e-9)
    _bad(lambda: hl.LMM("y ~ x + (1 | g)", small, **{arg: col.set_axis(col.index + 1000)}), rf"{arg}: .*index")


def test_compare_refuses_two_models(small):
    pytest.importorskip("nutpie")
    from hierlmm.bayes.compare import check_same_model

    class Post:  # the part of a posterior check_same_model reads
        def __init__(self, model):
            self.model = model

    fit = _fit("y ~ x + (1 | g)", small)
    check_same_model(fit, Post(fit.model))
    _bad(lambda: check_same_model(fit, Post(hl.LMM("y ~ 1 + (1 | g)", small))), r"different models: their formula differs")
    _bad(lambda: check_same_model(fit, Post(hl.LMM("y ~ x + (1 | g)", small.assign(y=small.y * 2)))),
         "different data")


def test_pickle_a_model_and_its_fit(small):
    model = hl.LMM("y ~ x + (1 | g)", small)
    fit = model.fit()
    again = pickle.loads(pickle.dumps(fit))
    np.testing.assert_array_equal(again.fixef, fit.fixef)


# ------------------------------------------------------------------ formulas never run code
@pytest.mark.parametrize("formula", [
    "y ~ I(__import__('os').system('touch {path}')) + (1 | g)",
    "y ~ I(np.__builtins__['__import__']('os').system('touch {path}')) + (1 | g)",
    "y ~ I(open('{path}', 'w').write('x')) + (1 | g)",
    "y ~ I((open)('{path}', 'w')) + (1 | g)",
    "y ~ I(getattr(np, 'save')('{path}', x)) + (1 | g)",
    "y ~ np.save('{path}', x) + (1 | g)",
    "y ~ I([open('{path}', 'w') for _ in [1]]) + (1 | g)",
    "y ~ I(x.__class__.__mro__) + (1 | g)",
    "y ~ I((lambda: open('{path}', 'w'))()) + (1 | g)",
    "y ~ {{open('{path}', 'w')}} + (1 | g)",
    "y ~ I(f'{{open(\"{path}\", \"w\")}}') + (1 | g)",
    "y ~ x + (1 | g); open('{path}', 'w')",
    "y ~ I(Q('__builtins__')) + (1 | g)",
    "y ~ I(eval('1')) + (1 | g)",
])
def test_formulas_never_run_code(small, tmp_path, formula):
    path = tmp_path / "pwned"
    with pytest.raises(hl.FormulaError, match="not allowed"):
        hl.LMM(formula.format(path=path), small)
    assert not os.path.exists(path)


def test_cli_refuses_a_formula_that_runs_code(tmp_path, small):
    from hierlmm.cli import main

    csv = tmp_path / "d.csv"
    small.to_csv(csv, index=False)
    target = tmp_path / "pwned"
    assert main(["fit", str(csv), f"y ~ I(__import__('os').system('touch {target}')) + (1 | g)"]) == 2
    assert not target.exists()


# ------------------------------------------------------------------ the command line
def test_cli_reads_levels_named_like_missing_values(tmp_path, capsys):
    """nlme's Alfalfa has a level "None": R's read.csv keeps it, so must the CLI (every row)."""
    from hierlmm.cli import main, read_csv

    rng = np.random.default_rng(2)
    g = np.tile(["None", "NA", "null", "S1"], 18)
    d = pd.DataFrame({"y": rng.normal(size=72), "x": rng.normal(size=72), "g": g})
    csv = tmp_path / "a.csv"
    d.to_csv(csv, index=False)
    back = read_csv(str(csv))
    assert back.g.tolist() == g.tolist() and back.y.notna().all()
    assert main(["fit", str(csv), "y ~ x + (1 | g)", "--json"]) == 0
    assert '"nobs": 72' in capsys.readouterr().out


@pytest.mark.parametrize("content, match", [
    (b"\xff\xfe\x00\x01", "cannot read"),
    (b"", "cannot read"),
])
def test_cli_unreadable_csv_is_one_line(tmp_path, capsys, content, match):
    from hierlmm.cli import main

    csv = tmp_path / "bad.csv"
    csv.write_bytes(content)
    assert main(["fit", str(csv), "y ~ x + (1 | g)"]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and str(csv) in err and "\n" not in err and "Traceback" not in err


def test_cli_unwritable_plots_folder_is_one_line(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from hierlmm.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["fit", "sleepstudy", "Reaction ~ Days + (1 | Subject)", "--plots", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hierlmm: error:") and "\n" not in err


# ------------------------------------------------------------------ Parquet files, by name
def test_parquet_files_are_checked_by_name(tmp_path, sleep):
    pytest.importorskip("dask.dataframe")
    folder = tmp_path / "pq"
    folder.mkdir()
    sleep.iloc[:90].to_parquet(folder / "a.parquet")
    sleep.iloc[90:].drop(columns="Days").to_parquet(folder / "b.parquet")
    _bad(lambda: hl.LMM.from_parquet("Reaction ~ Days + (1 | Subject)", str(folder), progress=False),
         r"b\.parquet has no column\(s\) 'Days'")
    sleep.iloc[90:].to_parquet(folder / "b.parquet")
    (folder / "c.parquet").write_bytes((folder / "b.parquet").read_bytes()[:100])
    _bad(lambda: hl.LMM.from_parquet("Reaction ~ Days + (1 | Subject)", str(folder), progress=False),
         r"cannot read .*c\.parquet as Parquet")
    (folder / "c.parquet").write_bytes(b"")
    _bad(lambda: hl.LMM.from_parquet("Reaction ~ Days + (1 | Subject)", str(folder / "*.parquet"), progress=False),
         r"c\.parquet")


@pytest.mark.parametrize("shift_y, shift_x", [(1e10, 0.0), (0.0, 1e10), (1e12, 1e8)])
def test_dask_data_far_from_zero(small, shift_y, shift_x):
    """The Dask reduction centres every partition by the first one's means (Encoder.premap), so
    its sums keep the digits of a response or covariate of mean 1e10, as the rows in memory."""
    dd = pytest.importorskip("dask.dataframe")
    import dask

    base = _fit("y ~ x + (1 | g)", small)
    data = small.assign(y=small.y + shift_y, x=small.x + shift_x)
    with dask.config.set(scheduler="sync"):
        fit = hl.LMM("y ~ x + (1 | g)", dd.from_pandas(data, npartitions=3), progress=False).fit()
    delta = np.finfo(float).eps * max(shift_y / small.y.std(), shift_x / small.x.std())
    assert fit.converged
    assert fit.loglik == pytest.approx(base.loglik, abs=1e-6 + 100 * delta * np.sqrt(len(small)))
    assert fit.fixef["x"] == pytest.approx(base.fixef["x"], abs=1e-5 + 100 * delta)
    assert fit.sigma == pytest.approx(base.sigma, rel=1e-5 + 100 * delta)


@pytest.mark.parametrize("shift, scale", [(20.0, 1.0), (100.0, 1e-3), (200.0, 1.0), (0.0, 1e6)])
def test_satterthwaite_df_do_not_depend_on_a_slopes_units(sleep, shift, scale):
    """Days in (Days | Subject) moved ``shift`` SDs from 0 and in other units: the same t and
    Satterthwaite df for Days (a first-order delta method, the same in any coordinates; in lme4's
    θ a slope far from 0 makes the intercept at 0 correlate with it near ±1, and lmerTest's
    numerical Hessian there gave a model of the differential suite df 76 for 16)."""
    base = _fit("Reaction ~ Days + (Days | Subject)", sleep).coef_table().loc["Days"]
    days = (sleep.Days + shift * sleep.Days.std()) * scale
    got = _fit("Reaction ~ Days + (Days | Subject)", sleep.assign(Days=days)).coef_table().loc["Days"]
    assert got["t"] == pytest.approx(base["t"], rel=1e-5)
    assert got["df"] == pytest.approx(base["df"], rel=1e-4)
