"""The result object's interface, formula variants, missing data, and the posterior of b."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.linalg

import hierlmm as hl
from hierlmm.crossprod import term_matrix


@pytest.fixture(scope="module")
def sleep():
    return hl.datasets.load("sleepstudy")


def test_import_is_light():
    code = (
        "import sys, hierlmm; bad = [m for m in ('pymc', 'arviz', 'matplotlib', 'pytensor', 'statsmodels', 'numba', 'nutpie', "
        "'dask', 'distributed') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_result_interface(sleep):
    fit = hl.LMM("Reaction ~ Days + (Days | Subject)", sleep).fit()
    assert isinstance(fit.fixef, pd.Series) and list(fit.fixef.index) == ["(Intercept)", "Days"]
    assert isinstance(fit.vcov, pd.DataFrame) and fit.vcov.shape == (2, 2)
    assert fit.method == "REML" and fit.nobs == 180 and fit.ngroups == {"Subject": 18}
    assert fit.deviance == pytest.approx(-2 * fit.loglik)
    assert fit.theta.index.tolist() == ["Subject.(Intercept)", "Subject.Days.(Intercept)", "Subject.Days"]
    re = fit.ranef()["Subject"]
    assert re.shape == (18, 2) and list(re.columns) == ["(Intercept)", "Days"]
    # conditional fitted = marginal + Zb; residuals add up
    np.testing.assert_allclose(fit.fitted() + fit.residuals(), sleep.Reaction)
    np.testing.assert_allclose(fit.fitted("marginal"), fit.design.X @ fit.fixef.to_numpy())
    np.testing.assert_allclose(fit.residuals(scaled=True), fit.residuals() / fit.sigma)
    text = str(fit.summary())
    for piece in ("REML criterion at convergence: 1743.6", "Random effects:", "Subject", "Residual",
                  "Number of obs: 180, groups:  Subject, 18", "Fixed effects:", "Correlation of Fixed Effects:"):
        assert piece in text
    assert "<table" in fit._repr_html_()
    ml = hl.LMM("Reaction ~ Days + (Days | Subject)", sleep).fit(method="ML")
    assert ml.method == "ML" and "AIC" in str(ml.summary())


def test_predict(sleep):
    fit = hl.LMM("Reaction ~ Days + (Days | Subject)", sleep).fit()
    np.testing.assert_allclose(fit.predict(sleep), fit.fitted(), rtol=1e-12)
    np.testing.assert_allclose(fit.predict(sleep, kind="marginal"), fit.fitted("marginal"), rtol=1e-12)
    new = pd.DataFrame({"Days": [0.0, 5.0, 5.0], "Subject": ["308", "308", "unseen"]})
    pred = fit.predict(new, allow_new_levels=True).to_numpy()
    b = fit.ranef()["Subject"].loc["308"]
    beta = fit.fixef
    assert pred[0] == pytest.approx(beta["(Intercept)"] + b["(Intercept)"])
    assert pred[1] == pytest.approx(beta["(Intercept)"] + b["(Intercept)"] + 5 * (beta["Days"] + b["Days"]))
    assert pred[2] == pytest.approx(beta["(Intercept)"] + 5 * beta["Days"])  # population prediction


def test_predict_with_factor_contrasts():
    df = hl.datasets.load("Orthodont")
    fit = hl.LMM("distance ~ age * Sex + (1 | Subject)", df).fit()
    sub = df.iloc[[0, 70]].copy()
    sub["Sex"] = sub["Sex"].astype(str)  # plain strings: the fit's categories must be used
    np.testing.assert_allclose(fit.predict(sub), fit.fitted().iloc[[0, 70]], rtol=1e-12)


def test_missing_values_dropped_and_counted(sleep):
    df = sleep.copy()
    df["Days"] = df.Days.astype(float)
    df.loc[[0, 5], "Reaction"] = np.nan
    df.loc[7, "Days"] = np.nan
    df.loc[9, "Subject"] = np.nan
    df["unused"] = np.nan  # not in the formula: ignored
    fit = hl.LMM("Reaction ~ Days + (1 | Subject)", df).fit()
    assert fit.n_missing == 4 and fit.nobs == 176
    ref = hl.LMM("Reaction ~ Days + (1 | Subject)", df.dropna(subset=["Reaction", "Days", "Subject"])).fit()
    assert fit.deviance == pytest.approx(ref.deviance, rel=1e-12)
    assert "missing" in str(fit.summary())


def test_unused_levels_dropped(sleep):
    df = sleep[sleep.Subject != "308"]
    fit = hl.LMM("Reaction ~ Days + (1 | Subject)", df).fit()
    assert fit.ngroups == {"Subject": 17}
    assert "308" not in fit.ranef()["Subject"].index


def test_rank_deficient_X_dropped_with_message(sleep):
    df = sleep.copy()
    df["Days2"] = 2 * df.Days
    with pytest.warns(hl.RankDeficiencyWarning, match="Days2"):
        fit = hl.LMM("Reaction ~ Days + Days2 + (1 | Subject)", df).fit()
    ref = hl.LMM("Reaction ~ Days + (1 | Subject)", sleep).fit()
    assert list(fit.fixef.index) == ["(Intercept)", "Days"]
    np.testing.assert_allclose(fit.fixef, ref.fixef, rtol=1e-10)


@pytest.mark.parametrize(
    "formula, structure",
    [
        ("Reaction ~ Days + (Days | Subject)", [("Subject", ["(Intercept)", "Days"])]),
        ("Reaction ~ Days + (0 + Days | Subject)", [("Subject", ["Days"])]),
        ("Reaction ~ Days + (-1 + Days | Subject)", [("Subject", ["Days"])]),
        ("Reaction ~ Days + (Days || Subject)", [("Subject", ["(Intercept)"]), ("Subject.1", ["Days"])]),
        ("Reaction ~ (1 | Subject)", [("Subject", ["(Intercept)"])]),
        ("Reaction ~ 1 + (1 | Subject)", [("Subject", ["(Intercept)"])]),
        ("Reaction ~ Days + (1 + Days + I(Days**2) | Subject)", [("Subject", ["(Intercept)", "Days", "I(Days^2)"])]),
        ("Reaction ~ Days + (0 + half | Subject)", [("Subject", ["halfa", "halfb"])]),
        ("Reaction ~ Days + (1 | Subject:half)", [("Subject:half", ["(Intercept)"])]),
        ("Reaction ~ Days + (1 | Subject/half)", [("half:Subject", ["(Intercept)"]), ("Subject", ["(Intercept)"])]),
        ("Reaction ~ Days + (1 | Subject) + (1 | half)", [("Subject", ["(Intercept)"]), ("half", ["(Intercept)"])]),
    ],
)
def test_formula_variants(sleep, formula, structure):
    df = sleep.copy()
    df["half"] = np.where(df.Days < 5, "a", "b")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hl.SingularFitWarning)
        warnings.simplefilter("ignore", hl.ConvergenceWarning)
        fit = hl.LMM(formula, df).fit()
    assert [(t.label, t.names) for t in fit.design.terms] == structure
    assert "(Intercept)" in fit.fixef.index  # the default intercept


def test_no_intercept_fixed_part(sleep):
    fit = hl.LMM("Reaction ~ 0 + Days + (1 | Subject)", sleep).fit()
    assert list(fit.fixef.index) == ["Days"]


def _dense_posterior(fit, beta):
    """Posterior of b from the dense V: the closed forms of the core issue."""
    d = fit.design
    Z = np.hstack([term_matrix(t).toarray() for t in d.terms])
    Lam = scipy.linalg.block_diag(*[np.kron(np.eye(t.m), t.template(fit.solution.theta[s]))
                                    for t, s in zip(d.terms, d.theta_slices())])
    s2 = fit.sigma**2
    D = s2 * Lam @ Lam.T
    V = Z @ D @ Z.T + s2 * np.eye(d.n)
    Vi = np.linalg.inv(V)
    X = d.X
    mean = D @ Z.T @ Vi @ (d.y - X @ fit.fixef.to_numpy())
    if beta == "fixed":
        cov = D - D @ Z.T @ Vi @ Z @ D
    else:
        P = Vi - Vi @ X @ np.linalg.solve(X.T @ Vi @ X, X.T @ Vi)
        cov = D - D @ Z.T @ P @ Z @ D
    return mean, cov


@pytest.mark.parametrize("beta", ["fixed", "integrated"])
@pytest.mark.parametrize(
    "data, formula",
    [
        ("sleepstudy", "Reaction ~ Days + (Days | Subject)"),
        ("sleepstudy", "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)"),
        ("Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
        ("Pastes", "strength ~ 1 + (1 | batch/cask)"),
        ("Orthodont", "distance ~ age * Sex + (age | Subject)"),
    ],
)
def test_posterior_of_b_matches_dense_formulas(data, formula, beta):
    fit = hl.LMM(formula, hl.datasets.load(data)).fit()
    mean, cov = _dense_posterior(fit, beta)
    post = fit.ranef_posterior(beta=beta)
    # positions of each (term, level, column) in the stacked b
    offset = 0
    pos = {}
    for t in fit.design.terms:
        for j in range(t.m):
            for c in range(t.k):
                pos[(t.group, t.levels[j], t.names[c], t.label)] = offset + j * t.k + c
        offset += t.q
    for group, rp in post.items():
        terms = [t for t in fit.design.terms if t.group == group]
        cols = [(t.label, n) for t in terms for n in t.names]
        for j, level in enumerate(rp.mean.index):
            idx = [pos[(group, level, n, lab)] for lab, n in cols]
            np.testing.assert_allclose(rp.mean.loc[level].to_numpy(), mean[idx], rtol=1e-6, atol=1e-8 * fit.sigma)
            np.testing.assert_allclose(rp.cov[j], cov[np.ix_(idx, idx)], rtol=1e-6, atol=1e-8 * fit.sigma**2)


def test_integrated_posterior_is_wider(sleep):
    fit = hl.LMM("Reaction ~ Days + (Days | Subject)", sleep).fit()
    fixed = fit.ranef_posterior("fixed")["Subject"].sd
    integ = fit.ranef_posterior("integrated")["Subject"].sd
    assert (integ.to_numpy() > fixed.to_numpy()).all()


def test_icc_random_intercept():
    fit = hl.LMM("Yield ~ 1 + (1 | Batch)", hl.datasets.load("Dyestuff")).fit()
    tau2 = fit.varcorr.vcov.iloc[0]
    assert fit.icc()["Batch"] == pytest.approx(tau2 / (tau2 + fit.sigma**2))


def test_datasets_keep_r_levels():
    assert hl.datasets.load("Orthodont").Sex.cat.categories.tolist() == ["Male", "Female"]
    assert hl.datasets.load("Rail").Rail.cat.categories.tolist() == ["2", "5", "1", "6", "3", "4"]
    assert set(hl.datasets.list()) >= {"sleepstudy", "InstEval", "MathAchieve"}


def test_predict_bad_newdata(sleep):
    fit = hl.LMM("Reaction ~ Days + (Days | Subject)", sleep).fit()
    with pytest.raises(hl.DataError, match="Days"):
        fit.predict(pd.DataFrame({"Subject": ["308"]}))
    with pytest.raises(hl.DataError, match="Subject"):
        fit.predict(pd.DataFrame({"Days": [1.0]}))
    assert fit.predict(pd.DataFrame({"Days": [1.0]}), kind="marginal").iloc[0] == pytest.approx(fit.fixef.sum())
    ortho = hl.LMM("distance ~ age * Sex + (1 | Subject)", hl.datasets.load("Orthodont")).fit()
    with pytest.raises(hl.DataError, match=r"'Sex'.*Other"):
        ortho.predict(pd.DataFrame({"age": [8], "Sex": ["Other"], "Subject": ["M01"]}))


def test_evaluation_counts_stay_in_range():
    """Guards the optimiser settings the speed work relies on: with the criterion's gradient,
    L-BFGS-B from lme4's start needs 10-20 factorisations on these models (BOBYQA with its
    restarts needed 60-80, and its finite-difference convergence check 19 more); the per-group
    engine (residual structures) has no gradient and runs BOBYQA with restarts as before. A
    change that makes fits take many more evaluations shows up here."""
    fit = hl.LMM("Reaction ~ Days + (Days | Subject)", hl.datasets.load("sleepstudy")).fit()
    assert 5 <= fit.opt.evaluations <= 30
    fit = hl.LMM("diameter ~ 1 + (1 | plate) + (1 | sample)", hl.datasets.load("Penicillin")).fit()
    assert 5 <= fit.opt.evaluations <= 30
    # a nesting: the diagonal rest block (cholesky._diagonal_rest) has its own reverse pass
    fit = hl.LMM("strength ~ 1 + (1 | batch) + (1 | batch:cask)", hl.datasets.load("Pastes")).fit()
    assert 5 <= fit.opt.evaluations <= 30
    # no gradient: BOBYQA with restarts
    ortho = hl.LMM("distance ~ age + (1 | Subject)", hl.datasets.load("Orthodont"), residual=hl.AR1(group="Subject"))
    assert 30 <= ortho.fit().opt.evaluations <= 200


def test_one_blas_thread_inside_and_the_users_setting_after():
    """hierlmm.threads: BLAS runs with one thread inside hierlmm's loops (a fit, profiles, the
    bootstrap; see the module for the measurements) and as before outside them."""
    from threadpoolctl import threadpool_info

    from hierlmm.threads import one_blas_thread

    blas = lambda: [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]  # noqa: E731
    before = blas()
    with one_blas_thread():
        assert set(blas()) <= {1}
    assert blas() == before
    seen = []
    import hierlmm.optimize as O

    spied = {name: getattr(O, name) for name in ("bobyqa_restarted", "quasi_newton")}

    def spy(original):
        def inner(*args, **kwargs):
            seen.append(blas())
            return original(*args, **kwargs)
        return inner

    for name, original in spied.items():
        setattr(O, name, spy(original))
    try:
        hl.LMM("Reaction ~ Days + (Days | Subject)", hl.datasets.load("sleepstudy")).fit()  # quasi-Newton
        hl.LMM("distance ~ age + (1 | Subject)", hl.datasets.load("Orthodont"),
               residual=hl.AR1(group="Subject")).fit()  # BOBYQA
    finally:
        for name, original in spied.items():
            setattr(O, name, original)
    assert len(seen) >= 2 and all(set(s) <= {1} for s in seen)
    assert blas() == before


def test_coef_is_fixef_plus_ranef_where_names_align():
    fit = hl.LMM("Reaction ~ Days + (Days | Subject)", hl.datasets.load("sleepstudy")).fit()
    cf = fit.coef()["Subject"]
    re = fit.ranef()["Subject"]
    assert list(cf.columns) == list(fit.fixef.index) and list(cf.index) == list(re.index)
    np.testing.assert_allclose(cf.to_numpy(), fit.fixef.to_numpy() + re.to_numpy(), rtol=1e-14)
    # a fixed effect without a random counterpart is the same on every row
    o = hl.LMM("distance ~ age + Sex + (1 | Subject)", hl.datasets.load("Orthodont")).fit()
    assert (o.coef()["Subject"]["age"] == o.fixef["age"]).all()
    # a random effect without a fixed counterpart: a fixed effect of 0, first (as lme4)
    f = hl.LMM("Reaction ~ 1 + (Days | Subject)", hl.datasets.load("sleepstudy")).fit()
    cf = f.coef()["Subject"]
    assert list(cf.columns) == ["Days", "(Intercept)"]
    np.testing.assert_allclose(cf["Days"], f.ranef()["Subject"]["Days"], rtol=1e-14)


def test_predict_new_levels_as_lme4_offers():
    data = hl.datasets.load("sleepstudy")
    fit = hl.LMM("Reaction ~ Days + (Days | Subject)", data).fit()
    new = pd.DataFrame({"Days": [1.0, 2.0], "Subject": ["308", "999"]})
    got = fit.predict(new, allow_new_levels=True)  # the new subject at the population level
    assert got.iloc[1] == pytest.approx(fit.predict(new, kind="marginal").iloc[1], rel=1e-14)
    assert got.iloc[0] != pytest.approx(fit.predict(new, kind="marginal").iloc[0], rel=1e-6)
    with pytest.raises(hl.HierlmmError, match=r"level\(s\) of 'Subject' not in the fit: '999'"):
        fit.predict(new)  # lme4's default: refused, naming the level
    fit.predict(new.iloc[:1])  # seen levels only: fine


def test_update_and_refit_as_lme4():
    data = hl.datasets.load("sleepstudy")
    fit = hl.LMM("Reaction ~ Days + (Days | Subject)", data).fit()
    for new, same in [(". ~ . - Days", "Reaction ~ 1 + (Days | Subject)"),
                      (". ~ . - (Days | Subject) + (1 | Subject)", "Reaction ~ Days + (1 | Subject)"),
                      ("log(.) ~ .", "log(Reaction) ~ Days + (Days | Subject)")]:
        a, b = fit.update(new), hl.LMM(same, data).fit()
        assert a.deviance == pytest.approx(b.deviance, rel=1e-10)
        np.testing.assert_allclose(a.fixef.to_numpy(), b.fixef.to_numpy(), rtol=1e-8)
    ml = fit.update(method="ML")
    assert ml.model is fit.model and ml.deviance == pytest.approx(fit.model.fit(method="ML").deviance, rel=1e-12)
    half = fit.update(data=data[data.Days < 5])
    assert half.nobs == 90
    # refit: a new response through the same design and A's response row only
    y = data.Reaction.to_numpy() * 2 + 1
    fit.model._compiled = {("collapsed", "flat"): object()}  # as sample() leaves it
    r = fit.refit(y)
    assert r.model._compiled == {} and fit.model._compiled  # a sampler compiled for the old response is not reused
    direct = hl.LMM("Reaction ~ Days + (Days | Subject)", data.assign(Reaction=y)).fit()
    assert r.deviance == pytest.approx(direct.deviance, rel=1e-10)
    np.testing.assert_allclose(r.fixef.to_numpy(), direct.fixef.to_numpy(), rtol=1e-8)
    assert fit.deviance == pytest.approx(hl.LMM("Reaction ~ Days + (Days | Subject)", data).fit().deviance)
    with pytest.raises(hl.HierlmmError, match="one response value per observation"):
        fit.refit(y[:10])
    with pytest.raises(hl.FormulaError, match="no such random-effects term"):
        fit.update(". ~ . - (1 | Days)")


@pytest.mark.parametrize("key, data", [("sleepstudy", "sleepstudy"), ("sleepstudy_uncorr", "sleepstudy"),
                                       ("penicillin", "Penicillin")])
def test_tidy_is_broom_mixed(key, data):
    """tidy() against broom.mixed 0.2.x (tests/reference/r/tidy_refs.R): the same rows, names
    and numbers (fixed with lmerTest's Satterthwaite df; random SDs and correlations; each
    level's BLUP and conditional SD)."""
    from conftest import load_ref

    ref = load_ref("tidy_broom_mixed")[key]
    fit = hl.LMM(ref["formula"], hl.datasets.load(data)).fit()
    for effects, want in ((("ran_pars", "fixed"), ref["default"]), ("ran_vals", ref["ran_vals"])):
        got = fit.tidy(effects)
        assert list(got.effect) == want["effect"]
        assert [None if pd.isna(g) else g for g in got.group] == want["group"]
        assert list(got.term) == want["term"]
        if "level" in want:
            assert list(got.level) == want["level"]
        for col in ("estimate", "std.error", "statistic", "df", "p.value"):
            if col not in want:
                continue
            mine = got[col].to_numpy(dtype=float)
            theirs = np.array([np.nan if v is None else v for v in want[col]], dtype=float)
            assert np.array_equal(np.isnan(mine), np.isnan(theirs)), col
            ok = ~np.isnan(theirs)
            # p within 1% (as the differential suite: a p of 1e-17 moves 6e-4 with df in the 6th
            # digit); the rest to 1e-4 of the column's scale (BLUPs near 0 move with θ's last digits)
            if col == "p.value":
                np.testing.assert_allclose(mine[ok], theirs[ok], rtol=1e-2, err_msg=col)
            else:
                np.testing.assert_allclose(mine[ok], theirs[ok], rtol=1e-4, atol=1e-4 * np.abs(theirs[ok]).max(),
                                           err_msg=col)
    # conf.int = TRUE: Wald (t with the rows' df, fixed effects only) to 1e-4 of the scale;
    # profile (every parameter) to 1% of each interval's width, as tests/test_inference.py's
    # profile references (lme4 interpolates its profile by splines)
    for method, want in (("Wald", ref["wald"]), ("profile", ref["profile"])):
        got = fit.tidy(conf_int=True, conf_method=method)
        assert list(got.term) == want["term"]
        lo = np.array([np.nan if v is None else v for v in want["conf.low"]], dtype=float)
        hi = np.array([np.nan if v is None else v for v in want["conf.high"]], dtype=float)
        for col, theirs in (("conf.low", lo), ("conf.high", hi)):
            mine = got[col].to_numpy(dtype=float)
            assert np.array_equal(np.isnan(mine), np.isnan(theirs)), (method, col)
            ok = ~np.isnan(theirs)
            tol = (1e-4 * np.abs(theirs[ok]).max()) if method == "Wald" else 1e-2 * (hi - lo)[ok]
            assert np.all(np.abs(mine[ok] - theirs[ok]) <= tol), (method, col, mine[ok], theirs[ok])


def test_tables_print_as_r_and_render_html():
    """Result tables keep their numbers (a DataFrame) but print as R does: a title, p-values
    as '< 2e-16' or three significant digits with significance codes, integer counts, empty
    cells for missing values; HTML with the same cells and a caption."""
    from hierlmm.table import Table

    d = hl.datasets.load("Orthodont")
    fit = hl.LMM("distance ~ age * Sex + (age | Subject)", d).fit()
    tab = fit.anova()
    assert isinstance(tab, Table) and isinstance(tab, pd.DataFrame)
    assert tab.loc["age", "p"] == pytest.approx(fit.anova().loc["age", "p"])  # numbers untouched
    text = repr(tab)
    assert text.splitlines()[0] == "Type III Analysis of Variance Table with Satterthwaite's method"
    assert "1.15e-09 ***" in text and "Signif. codes:" in text and "nan" not in text.lower()
    html = tab._repr_html_()
    assert "<caption>Type III Analysis of Variance Table" in html and "1.15e-09" in html and "nan" not in html
    coef = repr(fit.coef_table())
    assert "< 2e-16" not in coef and "1.14e-14 ***" in coef
    small = fit.update(". ~ . - age:Sex")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lrt = hl.anova(small, fit)
    assert list(lrt.index) == [small.design.parsed.formula, fit.design.parsed.formula]
    first = repr(lrt).splitlines()[3]
    assert first.split()[-1] == "432.84"  # the first row's chi-square, df and p are empty, not NaN
    sleep = hl.LMM("Reaction ~ Days + (Days | Subject)", hl.datasets.load("sleepstudy")).fit()
    assert "< 2e-16 ***" in repr(sleep.coef_table())
    ran = repr(sleep.ranova())
    assert "npar" in ran and " 6 " in ran  # integer counts
    # slicing keeps the display; pandas operations stay available
    assert isinstance(tab[["F", "p"]], Table) and tab["p"].max() < 1


def test_summary_html_shows_what_the_text_shows():
    fit = hl.LMM("Reaction ~ Days + (Days | Subject)", hl.datasets.load("sleepstudy")).fit()
    html = fit._repr_html_()
    for piece in ("Scaled residuals", "Random effects", "Fixed effects", "Correlation of fixed effects",
                  "-3.9536", "&lt; 2e-16", "-0.138", "Signif. codes"):
        assert piece in html, piece


def _imports(path: Path, module: str, package: str, known: set[str]) -> set[str]:
    """The hierlmm modules ``module`` imports anywhere in its file (inside functions too):
    ``from a.b import c`` counts ``a.b.c`` when that is a module, else ``a.b``."""
    import ast

    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{target}.{alias.name}"
                out.add(full if full in known else target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m in known and m != module}


def test_no_import_circles():
    """Imports flow one way: no circle among hierlmm's modules, counting imports inside
    functions (the package's ``__init__`` included: a module that imports ``hierlmm`` itself
    closes a circle through everything the package re-exports)."""
    root = Path(hl.__file__).parent
    files = {}
    for p in root.rglob("*.py"):
        parts = p.relative_to(root.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    known = set(files)
    graph = {}
    for m, p in files.items():
        package = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        graph[m] = _imports(p, m, package, known)
    # a circle is a path back to the start: depth-first search from every module
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                assert nxt != start, " -> ".join(path + [start])
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))


def test_warnings_point_at_the_users_line(sleep):
    """However deep inside hierlmm a warning is raised, it names the caller's file and line
    (Python 3.12's skip_file_prefixes; a fixed stacklevel pointed into hierlmm from sample()
    and from fits several calls down)."""
    import warnings

    d = sleep.assign(D2=sleep.Days * 2.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hl.LMM("Reaction ~ Days + D2 + (1 | Subject)", d)
        hl.LMM("Reaction ~ Days + (Days | Subject)", d).fit(maxeval=2)
        hl.LMM("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", d).fit().icc(kind="term")
        hl.anova(hl.LMM("Reaction ~ Days + (1 | Subject)", d).fit(), hl.LMM("Reaction ~ 1 + (1 | Subject)", d).fit())
    kinds = {type(w.message).__name__ for w in caught}
    assert {"RankDeficiencyWarning", "ConvergenceWarning", "HierlmmWarning", "RefitWarning"} <= kinds
    assert all(w.filename == __file__ for w in caught), {(w.filename, type(w.message).__name__) for w in caught}


def test_map_one_blas_thread_in_order_or_in_threads(monkeypatch):
    """hierlmm.threads.map_one_blas_thread: the results of fn in the items' order, every call
    with one BLAS thread, in threads when the first call takes ``slow`` seconds or more and in
    order (the calling thread only) when it is quicker or there is one core."""
    import threading

    from threadpoolctl import threadpool_info

    import hierlmm.threads as T

    def run(slow, threads=None):
        seen = []

        def fn(i):
            seen.append((threading.get_ident(), [x["num_threads"] for x in threadpool_info()
                                                 if x["user_api"] == "blas"]))
            return i * i

        assert T.map_one_blas_thread(fn, range(12), slow=slow, threads=threads) == [i * i for i in range(12)]
        assert all(set(n) <= {1} for _, n in seen)
        return {ident for ident, _ in seen}

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert run(slow=1e3) == {threading.get_ident()}  # the first call was quick: in order
    assert len(run(slow=0.0) - {threading.get_ident()}) >= 1  # slow: worker threads took part
    # decided by the caller: nothing timed, every item in workers, or every item in order
    assert threading.get_ident() not in run(slow=1e3, threads=True)
    assert run(slow=0.0, threads=False) == {threading.get_ident()}
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert run(slow=0.0) == {threading.get_ident()}
    assert T.map_one_blas_thread(lambda i: i, []) == []


def test_factor_in_a_worker_thread_is_the_main_threads(monkeypatch):
    """hierlmm.cholesky.dense_cholesky takes scipy's LAPACK in the main thread and numpy's in
    any other (they run side by side): the blocked factor and the deviance of a crossed model
    (a dense rest block of 42 rows: a's 40 levels, X and y) are the same in both to rounding,
    and a matrix that is not positive definite raises LinAlgError in both."""
    from concurrent.futures import ThreadPoolExecutor

    from hierlmm.cholesky import dense_cholesky

    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 40, 600), rng.integers(0, 50, 600)
    df = pd.DataFrame({"y": rng.normal(size=600) + rng.normal(size=40)[a] + rng.normal(size=50)[b],
                       "a": pd.Categorical(a), "b": pd.Categorical(b)})
    dev = hl.LMM("y ~ 1 + (1 | a) + (1 | b)", df).deviance_function()
    theta = np.array([0.8, 1.3])
    assert not dev.chol._diagonal_rest() and dev.cp.r == 40 + 1 + 1  # the dense factor of the rest block
    calls = []
    numpy_cholesky = np.linalg.cholesky
    monkeypatch.setattr(np.linalg, "cholesky", lambda M: calls.append(M.shape) or numpy_cholesky(M))
    with ThreadPoolExecutor(1) as pool:
        f_main, f_worker = dev.chol.factor(theta), pool.submit(dev.chol.factor, theta).result()
        bad = np.diag([1.0, -1.0, 2.0])
        for run in (lambda g: g(), lambda g: pool.submit(g).result()):
            with pytest.raises(np.linalg.LinAlgError):
                run(lambda: dense_cholesky(bad.copy()))
    np.testing.assert_allclose(f_worker.L22, f_main.L22, rtol=1e-12, atol=1e-12)
    assert dev.from_parts(f_worker) == pytest.approx(dev.from_parts(f_main), rel=1e-13)
    assert calls == [f_main.L22.shape, (3, 3)]  # numpy's: the worker's two calls only
