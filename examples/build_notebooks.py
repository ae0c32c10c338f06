"""Regenerate examples/notebooks/*.ipynb from the scripts beside this file, executed, so that
the stored notebooks show their figures and tables.

    python examples/build_notebooks.py            # all
    python examples/build_notebooks.py sleepstudy # one

The scripts (jupytext's percent format) are the source: edit them, then run this. The tests
check that each notebook's code is its script's and execute them again.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import jupytext
import nbclient
import nbformat

HERE = Path(__file__).resolve().parent


def build(script: Path) -> Path:
    nb = jupytext.read(script)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    os.environ.setdefault("MPLBACKEND", "Agg")
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(HERE)}}).execute()
    out = HERE / "notebooks" / f"{script.stem}.ipynb"
    nbformat.write(nb, out)
    return out


if __name__ == "__main__":
    names = sys.argv[1:]
    for script in sorted(HERE.glob("*.py")):
        if script.name != Path(__file__).name and (not names or script.stem in names):
            print(build(script))
