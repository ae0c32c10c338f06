"""The documentation site in a real browser: built, served from a sub-path on 127.0.0.1, and
opened in headless Chromium (Debian's ``chromium``, installed by ``.ci/install-chromium.sh``).
Formulas must be typeset with no network (MathJax is bundled), no raw TeX may remain, the 404
page and internal links must work under the sub-path."""

from __future__ import annotations

import functools
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    mkdocs = shutil.which("mkdocs") or str(Path(sys.executable).parent / "mkdocs")
    browser = _chromium()
    missing = [what for what, ok in (("mkdocs (docs extra)", Path(mkdocs).exists()), ("chromium", browser)) if not ok]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test of the docs needs {', '.join(missing)} under CI "
                        "(bash .ci/install-chromium.sh; pip install -e '.[docs]')")
        pytest.skip(f"needs {', '.join(missing)}")
    root = tmp_path_factory.mktemp("www")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}/hierlmm/"
    out = subprocess.run([mkdocs, "build", "--strict", "-d", str(root / "hierlmm")], cwd=ROOT,
                         env={**os.environ, "HIERLMM_SITE_URL": base, "NO_MKDOCS_2_WARNING": "1"},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield base, browser, root / "hierlmm"
    server.shutdown()


def _dom(browser: str, url: str) -> str:
    out = subprocess.run([browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--no-first-run", "--virtual-time-budget=20000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.parametrize("page", ["", "guide/bayes/", "guide/inference/", "guide/reml-ml/", "api/"])
def test_math_is_typeset_offline(site, page):
    base, browser, _ = site
    dom = _dom(browser, base + page)
    text = re.sub(r"<script.*?</script>", "", dom, flags=re.S)  # MathJax keeps the TeX in scripts
    arithmatex = dom.count('class="arithmatex"')
    if page:  # these pages have formulas
        assert arithmatex > 0
    if arithmatex:
        assert 'class="MathJax' in dom, "formulas were not typeset (MathJax did not load)"
        assert "\\(" not in text and "\\[" not in text and "$$" not in text, "raw TeX left on the page"
        assert "Math Processing Error" not in dom
    assert "fonts.googleapis" not in dom
    # the docstrings' reStructuredText habits are rendered, not shown raw (docs/hooks/sphinx_roles.py)
    for raw in (":meth:", ":func:", ":class:", ":mod:", ":attr:", ".. math::", "``"):
        assert raw not in text, raw


def test_404_and_links_under_a_sub_path(site):
    base, browser, built = site
    dom = _dom(browser, base + "404.html")
    assert "404" in dom
    hrefs = re.findall(r'(?:href|src)="(/[^"#?]+)', (built / "404.html").read_text())
    assert hrefs and all(h.startswith("/hierlmm/") for h in hrefs), hrefs  # absolute, under site_url
    for h in hrefs:
        with urllib.request.urlopen(base.split("/hierlmm/")[0] + h) as r:
            assert r.status == 200, h
    # every internal link of every page resolves under the sub-path
    broken = []
    for page in built.rglob("index.html"):
        for link in re.findall(r'href="([^"#:?]+)[^"]*"', page.read_text()):
            if link.startswith(("/", "http")):
                continue
            target = (page.parent / link).resolve()
            if not (target.exists() or (target / "index.html").exists()):
                broken.append(f"{page.relative_to(built)} -> {link}")
    assert not broken, broken[:10]
