"""Each plot function runs on a real fit and returns a Figure with the expected axes (Agg)."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

import hierlmm as hl  # noqa: E402
from hierlmm import plots  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


@pytest.fixture(scope="module")
def sleep_fit():
    return hl.LMM("Reaction ~ Days + (Days | Subject)", hl.datasets.load("sleepstudy")).fit()


@pytest.fixture(scope="module")
def ortho_fit():
    return hl.LMM("distance ~ age * Sex + (1 | Subject)", hl.datasets.load("Orthodont")).fit()


def n_axes(fig):
    return len([ax for ax in fig.axes if ax.get_visible()])


def test_diagnostics(sleep_fit):
    fig = plots.diagnostics(sleep_fit)
    assert isinstance(fig, Figure) and n_axes(fig) == 4
    assert n_axes(plots.qq_ranef(sleep_fit)) == 2  # (Intercept), Days
    qq = plots.qq_residuals(sleep_fit)
    assert len(qq.axes[0].collections[0].get_offsets()) == 180
    assert len(plots.residuals_vs_fitted(sleep_fit).axes[0].collections[0].get_offsets()) == 180
    box = plots.residuals_by_group(sleep_fit)
    assert len(box.axes[0].get_xticklabels()) == 18


def test_caterpillar(sleep_fit):
    fig = plots.caterpillar(sleep_fit, beta="integrated")
    # one order in every panel (by the intercept, as lme4's dotplot): a subject on one row
    labels = [[t.get_text() for t in ax.get_yticklabels()] for ax in fig.axes]
    assert len(labels) == 2 and labels[0] == labels[1]
    b0 = sleep_fit.ranef()["Subject"]["(Intercept)"]
    assert labels[0] == [str(i) for i in b0.sort_values(kind="stable").index]
    assert n_axes(fig) == 2
    assert len(fig.axes[0].get_yticklabels()) == 18
    with pytest.raises(hl.HierlmmError, match="not a grouping factor"):
        plots.caterpillar(sleep_fit, group="Days")


def test_residuals_by_group_stay_readable_with_many_groups():
    """160 schools: medians and quartiles instead of 160 box plots, no tick labels, a bounded
    figure; the medians drawn are the groups' medians of the scaled residuals, sorted."""
    fit = hl.LMM("MathAch ~ SES + (SES | School)", hl.datasets.load("MathAchieve")).fit()
    for fig, ax in ((f := plots.residuals_by_group(fit), f.axes[0]), (g := plots.diagnostics(fit), g.axes[3])):
        assert fig.get_size_inches()[0] <= 10
        assert ax.get_xlabel() == "School: 160 levels, sorted by median" and len(ax.get_xticks()) == 0
        medians = ax.lines[0].get_ydata()
        r = fit.residuals(scaled=True).groupby(fit.design.terms[0].codes).median().to_numpy()
        np.testing.assert_allclose(medians, np.sort(r), rtol=1e-12)


def test_caterpillar_many_groups():
    fit = hl.LMM("MathAch ~ SES + (1 | School)", hl.datasets.load("MathAchieve")).fit()
    fig = plots.caterpillar(fit)
    assert fig.get_size_inches()[1] <= 10  # 160 levels stay on one readable page
    assert fig.axes[0].get_ylabel() == "160 levels, sorted by (Intercept)"


def test_shrinkage(sleep_fit, ortho_fit):
    fig = plots.shrinkage(sleep_fit)
    assert len(fig.axes[0].texts) == 18  # one arrow per subject
    fig = plots.shrinkage(ortho_fit)
    assert "shrinkage factor" in fig.axes[0].get_title()
    assert fig.axes[0].get_xlabel() == "Subject"
    # slopes with a factor in the fixed part: like with like. Each subject's own line of
    # distance less the Sex effects (at β̂) against coef()'s intercept and slope
    data = hl.datasets.load("Orthodont")
    fit = hl.LMM("distance ~ age * Sex + (age | Subject)", data).fit()
    fig = plots.shrinkage(fit)
    own, mixed = (c.get_offsets() for c in fig.axes[0].collections[:2])
    b = fit.fixef
    female = (data.Sex == "Female").to_numpy()
    r = data.distance - female * (b["SexFemale"] + b["age:SexFemale"] * data.age)
    t = fit.design.terms[0]
    for j, subject in enumerate(t.levels):
        sel = (data.Subject.astype(str) == subject).to_numpy()
        np.testing.assert_allclose(own[j], np.polyfit(data.age[sel], r[sel], 1)[::-1], rtol=1e-10)
    np.testing.assert_allclose(mixed, fit.coef()["Subject"][["(Intercept)", "age"]].to_numpy(), rtol=1e-12)
    assert fig.axes[0].get_xlabel() == "(Intercept)" and fig.axes[0].get_ylabel() == "age"


def test_spaghetti_and_effect(sleep_fit, ortho_fit):
    fig = plots.spaghetti(sleep_fit, "Days")
    assert len(fig.axes[0].lines) == 18 + 1  # each subject's fit and the population line
    # with a factor in the fixed part: one population line per sex, each = predict(marginal)
    fig = plots.spaghetti(ortho_fit, "age")
    population = [ln for ln in fig.axes[0].lines if ln.get_label().startswith("Sex = ")]
    assert sorted(ln.get_label() for ln in population) == ["Sex = Female", "Sex = Male"]
    data = ortho_fit.design.data
    for ln in population:
        ages, mu = ln.get_data()
        sex = ln.get_label().split(" = ")[1]
        new = pd.DataFrame({"age": ages, "Sex": pd.Categorical([sex] * len(ages), categories=data.Sex.cat.categories),
                            "Subject": data.Subject.iloc[0]})
        np.testing.assert_allclose(mu, ortho_fit.predict(new, kind="marginal").to_numpy(), rtol=1e-12)
    # a second numeric covariate is held at its mean and said so; 160 groups are sampled, said so
    fit = hl.LMM("MathAch ~ SES + MEANSES + (1 | School)", hl.datasets.load("MathAchieve")).fit()
    fig = plots.spaghetti(fit, "SES")
    assert "60 of 160 groups shown" in fig.axes[0].get_title()
    labels = [ln.get_label() for ln in fig.axes[0].lines]
    assert any(lab.startswith("held at MEANSES = ") for lab in labels)
    (line,) = [ln for ln in fig.axes[0].lines if ln.get_label() == "population mean"]
    ses, mu = line.get_data()
    beta = fit.fixef
    expected = beta["(Intercept)"] + beta["SES"] * ses + beta["MEANSES"] * fit.design.data.MEANSES.mean()
    np.testing.assert_allclose(mu, expected, rtol=1e-12)
    fig = plots.effect(ortho_fit, "age", by="Sex")
    assert len(fig.axes[0].lines) == 2 and len(fig.axes[0].collections) == 2  # lines and bands


@pytest.mark.bayes
def test_bayes_plots():
    pytest.importorskip("pymc")
    model = hl.LMM("Yield ~ 1 + (1 | Batch)", hl.datasets.load("Dyestuff"))
    fit = model.fit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hl.ConvergenceWarning)
        post = model.sample(draws=500, tune=500, chains=2, random_seed=1, progressbar=False)
    fig = plots.posterior_densities(fit, post)
    assert n_axes(fig) == 2
    assert len(fig.axes[0].lines) == 3  # REML, mode, median
    fig = plots.plugin_vs_full(fit, post)
    assert len(fig.axes[0].get_yticklabels()) == 6 and fig.axes[0].get_title() == ""
    fig = plots.plugin_vs_full(fit, post, max_levels=4)  # many levels: an even sample, said so
    assert len(fig.axes[0].get_yticklabels()) == 4
    assert fig.axes[0].get_title().startswith("4 of 6 levels shown")
    fig = plots.limit_path(model, s_values=(1, 100, 1e4, 1e6))
    assert n_axes(fig) == 2
    first = []
    for ax in fig.axes:  # relative distance to REML on a log scale: near it at s = 1e6
        assert ax.get_yscale() == "log" and ax.get_ylabel() == "|mode − REML| / REML"
        rel = ax.lines[0].get_ydata()
        assert rel[-1] < 1e-4
        first.append(rel[0])
    assert max(first) > 1e-2  # and far from it at s = 1 (the intercept, 1527, shrunk to 0)


def _cell_outputs(code: str, tmp_path) -> list:
    """The outputs of one notebook cell run in a Jupyter kernel (hierlmm from this tree)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import sys; sys.path.insert(0, %r)\n" % str(Path(__file__).resolve().parent.parent)
        + "import hierlmm as hl\nfrom hierlmm import plots\n"
        "fit = hl.LMM('Reaction ~ Days + (Days | Subject)', hl.datasets.load('sleepstudy')).fit()\n" + code)]
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb.cells[0].outputs


def test_figures_show_inline_in_a_notebook_without_magic(tmp_path):
    """A plot returned by the last line of a cell appears as a PNG in Jupyter, with no
    ``%matplotlib inline`` and no pyplot import (a bare matplotlib Figure shows as text)."""
    outputs = _cell_outputs("plots.caterpillar(fit)", tmp_path)
    data = [o.get("data", {}) for o in outputs if o.output_type == "execute_result"]
    assert data and "image/png" in data[0], outputs


def test_notebook_shows_progress_and_html_summary(tmp_path):
    """In a Jupyter kernel (stderr not a terminal) the bootstrap's progress bar still shows
    (tqdm.auto), and a fit's summary renders as HTML."""
    outputs = _cell_outputs("ci = fit.confint(method='bootstrap', n_boot=30, random_seed=1)\nfit", tmp_path)
    shown = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    shown += "".join(str(o.get("data", {}).get("text/plain", "")) for o in outputs if o.output_type == "display_data")
    assert "bootstrap" in shown, outputs
    html = [o["data"]["text/html"] for o in outputs if o.output_type == "execute_result"]
    assert html and "Random effects" in html[0] and "Fixed effects" in html[0]


def _simulated(m: int, per: int, seed: int = 0) -> pd.DataFrame:
    """m groups of ``per`` rows: a within-group slope on x, a group-level factor f (two
    levels) and a numeric covariate z in the fixed part."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(m), per)
    x = np.tile(np.arange(per, dtype=float), m) + rng.normal(0, 0.1, m * per)
    f = np.where(np.arange(m) % 2 == 0, "a", "b")[g]
    z = rng.normal(0, 1, m * per)
    b = rng.normal(0, [1.0, 0.3], size=(m, 2))
    y = 1 + 0.5 * x + (f == "b") * 1.5 + 0.3 * z + b[g, 0] + b[g, 1] * x + rng.normal(0, 0.5, m * per)
    return pd.DataFrame({"y": y, "x": x, "z": z, "f": pd.Categorical(f), "g": pd.Categorical(g.astype(str))})


@pytest.mark.parametrize("m, per", [(6, 6), (27, 5), (160, 4), (2000, 3)])
def test_every_plot_stays_readable_and_right_from_6_to_2000_groups(m, per):
    """Each plot of a fit, on 6 to 2000 groups with a second fixed covariate and a factor:
    the figure stays at most 16 inches either way, the population lines are one per level of
    the fixed factor and equal predict(kind="marginal") with z at its mean, and where groups
    are sampled the figure says so."""
    d = _simulated(m, per)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hl.HierlmmWarning)
        fit = hl.LMM("y ~ x + f + z + (x | g)", d).fit()
    figures = {
        "diagnostics": plots.diagnostics(fit), "residuals_by_group": plots.residuals_by_group(fit),
        "qq_ranef": plots.qq_ranef(fit), "qq_residuals": plots.qq_residuals(fit),
        "residuals_vs_fitted": plots.residuals_vs_fitted(fit), "caterpillar": plots.caterpillar(fit),
        "shrinkage": plots.shrinkage(fit), "spaghetti": plots.spaghetti(fit, "x"),
        "effect": plots.effect(fit, "x", by="f"),
    }
    for name, fig in figures.items():
        w, h = fig.get_size_inches()
        assert w <= 16 and h <= 16, (name, w, h)
        for ax in fig.axes:  # tick labels stay legible: no more than 60 on an axis
            assert len(ax.get_yticklabels()) <= 60 and len(ax.get_xticklabels()) <= 60, name
    ax = figures["spaghetti"].axes[0]
    population = [ln for ln in ax.lines if ln.get_label().startswith("f = ")]
    assert sorted(ln.get_label() for ln in population) == ["f = a", "f = b"]
    for ln in population:
        xs, mu = ln.get_data()
        level = ln.get_label().split(" = ")[1]
        new = pd.DataFrame({"x": xs, "z": d.z.mean(), "f": pd.Categorical([level] * len(xs), categories=["a", "b"]),
                            "g": d.g.iloc[0]})
        np.testing.assert_allclose(mu, fit.predict(new, kind="marginal").to_numpy(), rtol=1e-10)
    if m > 60:
        assert f"60 of {m} groups shown" in ax.get_title()
    else:
        assert "groups shown" not in ax.get_title()
    shrink = figures["shrinkage"].axes[0]
    assert (f"200 of {m} groups shown" in shrink.get_title()) == (m > 200)
    # the random-intercept version labels its groups: at most 60, said so beyond
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hl.HierlmmWarning)
        fig = plots.shrinkage(hl.LMM("y ~ x + f + z + (1 | g)", d).fit())
    ax = fig.axes[0]
    assert len(ax.get_xticklabels()) == min(m, 60) and fig.get_size_inches()[0] <= 16
    assert ("groups shown" in ax.get_title()) == (m > 60)


@pytest.mark.parametrize("m, per", [(27, 4), (2000, 3)])
def test_implied_correlation_shows_each_fits_corr_of_one_group(m, per):
    """One panel per fit, each image the fit's marginal_corr of that group (a random intercept,
    a random slope, an unstructured gls), on one scale; at most 16 inches; a label column that
    is not in the data is named."""
    d = _simulated(m, per)
    d["visit"] = pd.Categorical(d.groupby("g", observed=True).cumcount().astype(str))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hl.HierlmmWarning)
        fits = {"(1 | g)": hl.LMM("y ~ x + f + z + (1 | g)", d).fit(),
                "(x | g)": hl.LMM("y ~ x + f + z + (x | g)", d).fit(),
                "unstructured": hl.LMM("y ~ x + f + z", d, residual=hl.Unstructured(time="visit", group="g")).fit()}
    level = d.g.cat.categories[1]
    fig = plots.implied_correlation(fits, level, group="g", labels="visit")
    assert max(fig.get_size_inches()) <= 16
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert [ax.get_title() for ax in panels] == list(fits)
    for ax, fit in zip(panels, fits.values()):
        shown = ax.get_images()[0].get_array()
        np.testing.assert_allclose(np.asarray(shown), fit.marginal_corr(level, group="g").to_numpy(), rtol=1e-12)
        assert ax.get_images()[0].get_clim() == (-1, 1)
    with pytest.raises(hl.HierlmmError, match="'when'"):
        plots.implied_correlation(fits, level, group="g", labels="when")
