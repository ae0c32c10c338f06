"""Issue 12: a model on a Dask DataFrame (hierlmm/partitioned.py) is the in-memory model.

The rows are split into unequal, shuffled partitions (one of them empty) and reduced on a
``LocalCluster(processes=False)`` or Dask's local scheduler; the reduced cross-product ``A``
must equal the in-memory one to rounding, and everything computed from it (the deviance, β̂,
σ̂, the covariance of β̂, the BLUPs and their posterior variances, the collapsed sampler's
log-density) to 1e-9 at the same θ. The two fits' θ̂ are each an optimum of the same function
evaluated with different rounding, so they agree to the optimiser's tolerance, not to 1e-9;
the test says so and checks both that tolerance and that the deviance at either optimum is the
same to 1e-9.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import hierlmm as hl

dd = pytest.importorskip("dask.dataframe")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

FORMULA = "y ~ x1 + x2 * f + s + (x1 | g) + (1 | h)"


def simulate(n: int, seed: int, groups=(400, 30)) -> pd.DataFrame:
    """Crossed g × h, a correlated slope on x1, numeric, categorical (with an unused category)
    and string fixed effects, x2 on a scale of 1e3, missing values in four columns."""
    rng = np.random.default_rng(seed)
    G, H = groups
    g, h = rng.integers(0, G, n), rng.integers(0, H, n)
    x1, x2 = rng.normal(size=n), rng.uniform(0, 1e3, n)
    f = rng.choice(["lo", "mid", "hi"], n)
    s = rng.choice(["a", "b", "c", "d"], n)
    bg = rng.normal(size=(G, 2)) * [1.0, 0.4]
    bh = rng.normal(size=H) * 0.5
    y = (1 + 0.5 * x1 + 0.002 * x2 + (f == "hi") - 0.3 * (s == "c") + bg[g, 0] + bg[g, 1] * x1 + bh[h]
         + rng.normal(size=n))
    df = pd.DataFrame({"y": y, "x1": x1, "x2": x2,
                       "f": pd.Categorical(f, categories=["lo", "mid", "hi", "never"]),
                       "s": s, "g": np.char.add("g", g.astype(str)), "h": h,
                       "w": rng.uniform(0.5, 2.0, n), "o": rng.normal(size=n) * 0.1})
    for col, k in (("x1", n // 200), ("f", n // 300), ("y", n // 400), ("s", n // 500)):
        df.loc[rng.choice(n, k, replace=False), col] = None
    return df


def partitioned(df: pd.DataFrame, seed: int, cuts=(0.0, 0.05, 0.4, 0.4, 0.41, 1.0)):
    """``df`` shuffled and cut into unequal partitions (one empty) as a Dask DataFrame."""
    perm = np.random.default_rng(seed).permutation(len(df))
    edges = (np.asarray(cuts) * len(df)).astype(int)
    parts = [df.iloc[perm[a:b]] for a, b in zip(edges[:-1], edges[1:])]
    return dd.from_delayed([dask.delayed(p) for p in parts], meta=df.iloc[:0])


@pytest.fixture(scope="module")
def client():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(processes=False, n_workers=2, threads_per_worker=1,
                                           dashboard_address=None)
        c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def _dense(a):
    return a.toarray() if hasattr(a, "toarray") else np.asarray(a)


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-300))


def assert_same_model(m0: hl.LMM, m1: hl.LMM, reml: bool = True) -> None:
    """The in-memory model ``m0`` and the Dask one ``m1``: the same ``A``, and the same
    everything at the in-memory optimum θ̂ (to 1e-9)."""
    d0, d1 = m0.design, m1.design
    assert not d1.rows and d0.rows
    assert (d1.n, d1.p, d1.n_missing) == (d0.n, d0.p, d0.n_missing)
    assert d1.fixef_names == d0.fixef_names and d1.dropped_columns == d0.dropped_columns
    assert [(t.label, t.levels, t.names) for t in d1.terms] == [(t.label, t.levels, t.names) for t in d0.terms]
    dev0, dev1 = m0.deviance_function(reml), m1.deviance_function(reml)
    c0, c1 = dev0.cp, dev1.cp
    # A in the user's coordinates ([Z X y]'[Z X y]): the internal X̃ and y_c are maps of X and y
    # that may differ (Dask's partitions are centred first, crossprod's pre-map)
    assert _rel(c0.A11, c1.A11) < 1e-12
    assert _rel(c0.dense(), c1.dense()) < 1e-12
    assert c1.log_weights == pytest.approx(c0.log_weights, rel=1e-12)
    assert d1.response_sd == pytest.approx(d0.response_sd, rel=1e-12)
    fit0 = m0.fit(method="REML" if reml else "ML")
    theta = fit0.solution.theta
    s0, s1 = dev0.solve(theta), dev1.solve(theta)
    assert s1.deviance == pytest.approx(s0.deviance, rel=1e-12)
    assert _rel(s0.beta, s1.beta) < 1e-9 and s1.sigma2 == pytest.approx(s0.sigma2, rel=1e-9)
    for b0, b1 in zip(s0.b, s1.b):
        assert _rel(b0, b1) < 1e-9
    assert _rel(dev0.unscaled_vcov(theta), dev1.unscaled_vcov(theta)) < 1e-9
    return fit0


def assert_same_fit(fit0, fit1) -> None:
    """Two optima of the same criterion: θ̂ to the optimiser's tolerance, the criterion at
    either to 1e-9, and the results that follow from θ̂ to what θ̂'s tolerance allows."""
    dev0, dev1 = fit0.deviance_function, fit1.deviance_function
    t0, t1 = fit0.solution.theta, fit1.solution.theta
    assert np.max(np.abs(t0 - t1)) < 1e-5 * max(1.0, np.max(np.abs(t0)))
    assert dev1(t1) == pytest.approx(dev0(t0), rel=1e-9)
    assert dev0(t1) == pytest.approx(dev0(t0), rel=1e-9)
    assert fit1.loglik == pytest.approx(fit0.loglik, rel=1e-9)
    assert _rel(fit0.fixef, fit1.fixef) < 1e-6 and _rel(fit0.se, fit1.se) < 1e-5
    assert fit1.sigma == pytest.approx(fit0.sigma, rel=1e-6)
    post0, post1 = fit0.ranef_posterior(), fit1.ranef_posterior()
    for label in post0:
        assert _rel(post0[label].mean, post1[label].mean) < 1e-5
        assert _rel(post0[label].cov, post1[label].cov) < 1e-5


@pytest.mark.parametrize("client_sums", [8, 2])
def test_cluster_fit_equals_the_in_memory_fit(client, client_sums, monkeypatch):
    """The issue's equality check, on 10⁵ rows, 5 unequal shuffled partitions (one empty),
    crossed (x1 | g) + (1 | h), numeric, categorical and string fixed effects, an
    interaction, missing values and an unused category; REML and ML. The partial sums added on
    the client alone, and on the workers down to two (the cluster fixture's workers are
    threads of this process, which sees the monkeypatch)."""
    from hierlmm import partitioned as part_module

    monkeypatch.setattr(part_module, "_CLIENT_SUMS", client_sums)
    df = simulate(100_000, seed=12)
    ddf = partitioned(df, seed=1)
    m0 = hl.LMM(FORMULA, df)
    m1 = hl.LMM(FORMULA, ddf)
    assert m1.design.n_missing == m0.design.n_missing > 0
    assert "fnever" not in m1.design.fixef_names  # an unused category, dropped as in memory
    for reml in (True, False):
        fit0 = assert_same_model(m0, m1, reml)
        assert_same_fit(fit0, m1.fit(method="REML" if reml else "ML"))


def test_weights_offset_interaction_grouping_on_the_local_scheduler():
    """Prior weights, an offset column and an offset() term, a grouping interaction g:h and
    a numeric grouping column, without a distributed Client (Dask's threads)."""
    df = simulate(20_000, seed=3, groups=(60, 8))
    # a level of g, one of h and a combination g:h met only in rows with a missing response:
    # dropped as in memory (Dask's levels pass reads only the factor columns and finds them)
    extra = df.iloc[:3].assign(y=np.nan, g=["gNA", "g1", "g2"], h=[99, 99, 7])
    df = pd.concat([df, extra], ignore_index=True)
    formula = "y ~ x1 + f + offset(0.5 * x2 / 1000) + (1 | g:h) + (1 | h)"
    ddf = partitioned(df, seed=2, cuts=(0, 0.3, 0.3, 0.9, 1.0))
    m0 = hl.LMM(formula, df, weights="w", offset="o")
    with dask.config.set(scheduler="threads"):
        m1 = hl.LMM(formula, ddf, weights="w", offset="o")
    assert m1.design.terms[0].m == m0.design.terms[0].m > 400
    fit0 = assert_same_model(m0, m1)
    fit1 = m1.fit()
    assert_same_fit(fit0, fit1)
    # fitted values and residuals: lazy Series that equal the model's predictions row by row
    with dask.config.set(scheduler="threads"):
        r = fit1.residuals(scaled=True).compute().sort_index()
    keep = df.index.isin(r.index)
    expected = (df.y[keep] - fit1.predict(df[keep])) / fit1.sigma * np.sqrt(df.w[keep])
    np.testing.assert_allclose(r.to_numpy(), expected.sort_index().to_numpy(), rtol=1e-12, atol=1e-12)
    assert len(r) == m0.design.n


def test_collapsed_log_density_is_the_same(client):
    """The collapsed sampler's compiled log-density on the reduced A equals the in-memory one
    at random points (flat and flat_sd priors)."""
    pytest.importorskip("numba")
    pytest.importorskip("nutpie")
    from hierlmm.bayes import kernel
    from hierlmm.bayes.priors import Layout

    df = simulate(30_000, seed=5, groups=(200, 12))
    formula = "y ~ x1 + f + (x1 | g) + (1 | h)"
    m0, m1 = hl.LMM(formula, df), hl.LMM(formula, partitioned(df, seed=3))
    cp0, cp1 = m0.deviance_function().cp, m1.deviance_function().cp
    layout = Layout(m0.design)
    rng = np.random.default_rng(0)
    for prior in ("flat", "flat_sd"):
        assert kernel.supported(m1.design, cp1, prior)
        b0, b1 = kernel.pack(m0.design, cp0, prior), kernel.pack(m1.design, cp1, prior)
        for _ in range(5):
            v = rng.normal(size=layout.size) * 0.5
            l0, g0 = kernel.logp_grad(v, b0)
            l1, g1 = kernel.logp_grad(v, b1)
            assert l1 == pytest.approx(l0, rel=1e-9)
            np.testing.assert_allclose(g1, g0, rtol=1e-7, atol=1e-7 * np.max(np.abs(g0)))


def test_what_works_and_what_is_refused(client):
    """On Dask data: the summary, Satterthwaite's t tests, profile intervals, drop1, ranef,
    predict on pandas data and sample() work; what needs every row is refused, naming Dask."""
    d = hl.datasets.load("sleepstudy")
    ddf = dd.from_pandas(d.sample(frac=1.0, random_state=4), npartitions=3)
    fit0 = hl.LMM("Reaction ~ Days + (Days | Subject)", d).fit()
    fit1 = hl.LMM("Reaction ~ Days + (Days | Subject)", ddf).fit()
    text = str(fit1.summary())
    assert "Number of obs: 180, groups:  Subject, 18" in text and "Dask" in text
    assert _rel(fit0.coef_table().df, fit1.coef_table().df) < 1e-4
    ci0, ci1 = fit0.confint(), fit1.confint()
    assert _rel(ci0.to_numpy(), ci1.to_numpy()) < 1e-4
    assert _rel(fit0.drop1()["lrt"].iloc[1:], fit1.drop1()["lrt"].iloc[1:]) < 1e-5
    assert _rel(fit0.predict(d.head(20)), fit1.predict(d.head(20))) < 1e-6
    # likelihood-ratio tests between fits on the same Dask DataFrame (what ranova's refusal suggests)
    small0 = hl.LMM("Reaction ~ Days + (1 | Subject)", d).fit()
    small1 = hl.LMM("Reaction ~ Days + (1 | Subject)", ddf).fit()
    lrt0, lrt1 = hl.anova(small0, fit0, refit=False), hl.anova(small1, fit1, refit=False)
    assert _rel(lrt0["chisq"].iloc[1:], lrt1["chisq"].iloc[1:]) < 1e-6
    with pytest.raises(hl.HierlmmError, match="different responses"):
        hl.anova(fit1, hl.LMM("Days ~ Reaction + (1 | Subject)", ddf).fit(), refit=False)
    for call in (lambda f: f.anova(), lambda f: f.coef_table(ddf="kenward-roger"), lambda f: f.simulate(),
                 lambda f: f.emmeans("Days"), lambda f: f.refit(np.zeros(180)), lambda f: f.r2(),
                 lambda f: f.confint(method="bootstrap", n_boot=2), lambda f: f.ranova()):
        with pytest.raises(hl.HierlmmError, match="Dask"):
            call(fit1)
    with pytest.raises(hl.HierlmmError, match="Dask DataFrame, not in memory"):
        np.asarray(fit1.design.X)  # anything that reads the rows refuses, never an empty array


@pytest.mark.bayes
def test_sample_on_dask_data(client):
    """sample() on a Dask DataFrame: the collapsed sampler on the reduced A, propriety proven
    from A (one vector-valued term, no warning), no observed data attached."""
    pytest.importorskip("nutpie")
    d = hl.datasets.load("sleepstudy")
    m = hl.LMM("Reaction ~ Days + (Days | Subject)", dd.from_pandas(d, npartitions=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", hl.HierlmmWarning)
        post = m.sample(random_seed=1, progressbar=False)
    assert "observed_data" not in post.idata.children
    assert post.summary().loc["beta[Days]", "mean"] == pytest.approx(10.47, abs=1.0)


def test_from_parquet(tmp_path, client):
    """hl.LMM.from_parquet reads only the formula's columns of a directory of Parquet files."""
    pytest.importorskip("pyarrow")
    df = simulate(10_000, seed=9, groups=(50, 6))
    shuffled = df.sample(frac=1.0, random_state=0)
    for i, (a, b) in enumerate([(0, 1000), (1000, 6000), (6000, len(df))]):
        shuffled.iloc[a:b].to_parquet(tmp_path / f"part{i}.parquet")
    formula = "y ~ x1 + x2 + s + (1 | g) + (1 | h)"
    fit1 = hl.LMM.from_parquet(formula, str(tmp_path), progress=False).fit()
    fit0 = hl.LMM(formula, df).fit()
    assert_same_fit(fit0, fit1)


def test_bad_input_is_named(client):
    df = simulate(4_000, seed=1, groups=(40, 5))
    ddf = partitioned(df, seed=0)
    with pytest.raises(hl.FormulaError, match=r"scale\(x1\).*learned from the whole data"):
        hl.LMM("y ~ scale(x1) + (1 | g)", ddf)
    with pytest.raises(hl.FormulaError, match=r"'C\(h\)', a numeric column as a factor.*ddf\['h'\]"):
        hl.LMM("y ~ x1 + C(h) + (1 | g)", ddf)
    with pytest.raises(hl.HierlmmError, match="independent residuals"):
        hl.LMM("y ~ x1 + (1 | g)", ddf, residual=hl.AR1())
    with pytest.raises(hl.DataError, match="weights= on a Dask DataFrame must be a column name"):
        hl.LMM("y ~ x1 + (1 | g)", ddf, weights=np.ones(len(df)))
    with pytest.raises(hl.FormulaError, match="'zz'"):
        hl.LMM("y ~ zz + (1 | g)", ddf)
    bad = df.assign(gf=df.h + 0.5)
    with pytest.raises(hl.DataError, match="'gf'.*float"):
        hl.LMM("y ~ x1 + (1 | gf)", partitioned(bad, seed=0))
    # a partition whose column is text where the metadata says numbers
    parts = [df.iloc[:2000], df.iloc[2000:].assign(x2=df.x2.iloc[2000:].astype(str))]
    mixed = dd.from_delayed([dask.delayed(p) for p in parts], meta=df.iloc[:0], verify_meta=False)
    with pytest.raises(hl.DataError, match="'x2'.*partition 1"):
        hl.LMM("y ~ x2 + (1 | g)", mixed)
    checked = dd.from_delayed([dask.delayed(p) for p in parts], meta=df.iloc[:0])  # Dask's own check
    with pytest.raises(hl.DataError, match="(?s)disagrees with its metadata.*x2"):
        hl.LMM("y ~ x2 + (1 | g)", checked)
    # a partition whose categorical has a category the metadata does not list
    other = df.iloc[2000:].assign(f=pd.Categorical(["zzz"] * 2000, categories=["lo", "mid", "hi", "zzz"]))
    cats = dd.from_delayed([dask.delayed(df.iloc[:2000]), dask.delayed(other)], meta=df.iloc[:0], verify_meta=False)
    with pytest.raises(hl.DataError, match="'f'.*'zzz'.*not among the categories"):
        hl.LMM("y ~ f + (1 | g)", cats)
    # a categorical whose categories Dask does not know: a first pass finds them
    unknown = partitioned(df.assign(g=df.g.astype("category")), seed=0)
    unknown["g"] = unknown["g"].cat.as_unknown()
    fit0 = hl.LMM("y ~ x1 + (1 | g)", df).fit()
    assert_same_fit(fit0, hl.LMM("y ~ x1 + (1 | g)", unknown).fit())
    # rank deficiency: the same warning and the same dropped column as in memory
    with pytest.warns(hl.RankDeficiencyWarning, match="x3"):
        m = hl.LMM("y ~ x1 + x3 + (1 | g)", partitioned(df.assign(x3=2 * df.x1), seed=0))
    assert m.design.dropped_columns == ["x3"]


def test_terms_that_share_a_source_or_a_factor():
    """``(1 | h/g)`` expands into two terms with one source, and ``(1 | g) + (0 + x1 | g)`` are
    two terms on one factor: each term's codes are its own grouping factor's (keyed by the
    factor's columns; keyed by the source, the two terms of h/g once got one set of codes)."""
    df = simulate(6_000, seed=4, groups=(30, 6))
    for formula in ("y ~ x1 + (1 | h/g)", "y ~ x1 + (1 | g) + (0 + x1 | g) + (1 | h:g)"):
        m0 = hl.LMM(formula, df)
        with dask.config.set(scheduler="sync"):
            m1 = hl.LMM(formula, partitioned(df, seed=5))
        assert_same_fit(assert_same_model(m0, m1), m1.fit())


def test_partial_a21_sums_in_every_storage(monkeypatch):
    """The tree reduction's sum of two partial A21 (hierlmm.partitioned._sum_a21) is x + y in
    every combination of storage; a saturated sum of two sparse ones turns dense, and a dense
    one takes a sparse addend in place, a few rows at a time (three rows here, so that the
    blocks' offsets are exercised)."""
    import scipy.sparse as sp

    from hierlmm import partitioned

    monkeypatch.setattr(partitioned, "_ROWS_AT_ONCE", 3)
    rng = np.random.default_rng(5)
    for density in (0.05, 0.2):
        x = sp.random(11, 40, density=density, format="csr", random_state=rng)
        y = sp.random(11, 40, density=density, format="csr", random_state=rng)
        want = x.toarray() + y.toarray()
        got = partitioned._sum_a21(x.copy(), y.copy())
        assert sp.issparse(got) == (x.nnz + y.nnz <= partitioned._SATURATED * x.shape[0] * x.shape[1])
        np.testing.assert_allclose(_dense(got), want, rtol=0, atol=1e-15)
        for a, b in ((x.toarray(), y), (x, y.toarray()), (x.toarray(), y.toarray())):
            got = partitioned._sum_a21(a.copy(), b.copy())
            assert not sp.issparse(got)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    # a sparse addend that holds an entry twice (CSR need not be canonical) adds both
    twice = sp.csr_matrix((np.array([1.0, 2.0, 4.0]), np.array([3, 3, 0]), np.array([0, 2, 2, 3])), shape=(3, 5))
    got = partitioned._sum_a21(np.ones((3, 5)), twice)
    np.testing.assert_array_equal(got, np.ones((3, 5)) + twice.toarray())
    assert got[0, 3] == 4.0
