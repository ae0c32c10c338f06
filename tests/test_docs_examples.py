"""Examples run, notebooks match their scripts and execute, the docs build strictly, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hierlmm as hl

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.py") if p.name != "build_notebooks.py")
ENV = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_notebook_matches_script(script):
    jupytext = pytest.importorskip("jupytext")
    nbformat = pytest.importorskip("nbformat")
    nb_path = ROOT / "examples" / "notebooks" / f"{script.stem}.ipynb"
    assert nb_path.exists(), f"regenerate with: python examples/build_notebooks.py {script.stem}"
    from_script = [c.source for c in jupytext.read(script).cells if c.cell_type == "code"]
    stored = [c.source for c in nbformat.read(nb_path, as_version=4).cells if c.cell_type == "code"]
    assert from_script == stored, f"regenerate with: python examples/build_notebooks.py {script.stem}"
    # stored executed: a reader of the repository sees the figures and tables
    outputs = [o for c in nbformat.read(nb_path, as_version=4).cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs), "stored without its figures"


@pytest.mark.slow
@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.stem)
def test_notebook_executes(script, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(ROOT / "examples" / "notebooks" / f"{script.stem}.ipynb", as_version=4)
    old = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "Agg"
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        if old is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = old
    # a notebook, not a script: figures inline as PNG, tables as HTML, narrative in markdown,
    # no headless leftovers
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no inline figure"
    assert any("text/html" in o.get("data", {}) for o in outputs), "no HTML table"
    assert not any(o.output_type == "error" for o in outputs)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "savefig" not in code and 'matplotlib.use("Agg")' not in code
    assert sum(c.cell_type == "markdown" for c in nb.cells) >= 3


def test_docs_build_strict(tmp_path):
    if shutil.which("mkdocs") is None and not (Path(sys.executable).parent / "mkdocs").exists():
        pytest.skip("mkdocs is not installed (docs extra)")
    mkdocs = shutil.which("mkdocs") or str(Path(sys.executable).parent / "mkdocs")
    out = subprocess.run([mkdocs, "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT,
                         env={**ENV, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "hierlmm", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=300)


def test_cli_fit_json_matches_api():
    out = _cli("fit", "sleepstudy", "Reaction ~ Days + (Days | Subject)", "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    fit = hl.LMM("Reaction ~ Days + (Days | Subject)", hl.datasets.load("sleepstudy")).fit()
    assert got["fixef"] == pytest.approx(fit.fixef.to_dict(), rel=1e-10)
    assert got["loglik"] == pytest.approx(fit.loglik, rel=1e-12)
    assert got["sigma"] == pytest.approx(fit.sigma, rel=1e-10)
    np.testing.assert_allclose([r["vcov"] for r in got["varcorr"]], fit.varcorr.vcov, rtol=1e-10)
    table = fit.coef_table()
    for name, row in got["coefficients"].items():
        for key in ("estimate", "se", "df", "t", "p"):
            assert row[key] == pytest.approx(table.loc[name, key], rel=1e-8), (name, key)


def test_cli_weights_offset_and_kenward_roger(tmp_path):
    """--weights/--offset are the API's weights=/offset=; --ddf kenward-roger its KR table."""
    d = hl.datasets.load("sleepstudy").assign(w=lambda d: 1 + (d.Days % 3), o=lambda d: 0.5 * d.Days)
    csv = tmp_path / "ss.csv"
    d.to_csv(csv, index=False)
    out = _cli("fit", str(csv), "Reaction ~ Days + (Days | Subject)", "--weights", "w", "--offset", "o",
               "--ddf", "kenward-roger", "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    d["Subject"] = d["Subject"].astype(str)
    fit = hl.LMM("Reaction ~ Days + (Days | Subject)", d, weights="w", offset="o").fit()
    table = fit.coef_table(ddf="kenward-roger")
    assert got["ddf"] == "kenward-roger"
    for name, row in got["coefficients"].items():
        assert row["df"] == pytest.approx(table.loc[name, "df"], rel=1e-6)
        assert row["se"] == pytest.approx(table.loc[name, "se"], rel=1e-8)
    text = _cli("fit", str(csv), "Reaction ~ Days + (Days | Subject)", "--weights", "w", "--ddf", "kenward-roger")
    assert "Kenward-Roger's method" in text.stdout and "Weights: w" in text.stdout


def test_cli_sample_prints_intervals_with_digits():
    """The sample table's interval bounds keep five significant digits (not "150 150")."""
    pytest.importorskip("pymc")
    out = _cli("sample", "sleepstudy", "Reaction ~ Days + (1 | Subject)", "--draws", "200", "--tune", "200",
               "--chains", "2", "--seed", "1", "--prior", "weak")
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("beta[Days]"))
    lb, ub = (float(v) for v in row.split()[3:5])
    assert 8 < lb < ub < 13 and lb != round(lb) and ub != round(ub)


def test_cli_csv_with_factor_order(tmp_path):
    csv = tmp_path / "ortho.csv"
    hl.datasets.load("Orthodont").to_csv(csv, index=False)
    out = _cli("fit", str(csv), "distance ~ age * Sex + (1 | Subject)", "--factor-order", "Sex=Male,Female",
               "--ml", "--plots", str(tmp_path / "figs"))
    assert out.returncode == 0, out.stderr
    assert "SexFemale" in out.stdout and "maximum likelihood" in out.stdout
    assert (tmp_path / "figs" / "diagnostics.png").exists()


def test_cli_errors_are_one_line():
    out = _cli("fit", "sleepstudy", "Reaction ~ Days + (Days | Subj)")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "'Subj'" in out.stderr
    out = _cli("fit", "no_such_file.csv", "y ~ 1 + (1 | g)")
    assert out.returncode == 2 and "no such file" in out.stderr


def test_cli_datasets():
    out = _cli("datasets")
    assert "sleepstudy" in out.stdout.split()
    out = _cli("datasets", "Rail")
    assert out.stdout.splitlines()[0] == "Rail,travel"
