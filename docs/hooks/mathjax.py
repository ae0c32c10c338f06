"""mkdocs hook: put MathJax (2.7, from the jupyter-server-mathjax package of the docs extra)
into the built site, so that formulas render with no network (the site's pages load it from
``assets/mathjax/``)."""

from __future__ import annotations

import shutil
from pathlib import Path


def on_post_build(config, **kwargs):
    import jupyter_server_mathjax

    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    target = Path(config["site_dir"]) / "assets" / "mathjax"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
