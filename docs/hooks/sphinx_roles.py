"""mkdocs hook: the package's docstrings are written in reStructuredText's habits, which
mkdocstrings' numpy style leaves as raw text. In each page's HTML:

* Sphinx roles (``:meth:`LMM.fit```, ``:class:`~hierlmm.table.Table```) are dropped before
  their code span, and a ``~`` target shows its last component, as Sphinx shows it;
* ``.. math::`` directives become display formulas that MathJax typesets (the markup of
  pymdownx.arithmatex's generic mode, as the guides' ``$$ … $$``);
* double backquotes left inside a code span (``callable with ``lower`` ``) are dropped.
"""

from __future__ import annotations

import html
import re

_ROLE = re.compile(r":(?:py:)?(?:meth|func|class|mod|attr|data|exc|obj|const|ref):(<code>)(~?)([^<]*)(</code>)")
# ".. math::  TeX" in a paragraph, or ".. math::" followed by the TeX as an indented block
_MATH_INLINE = re.compile(r"<p>\.\. math::\s+(.+?)</p>", re.S)
_MATH_BLOCK = re.compile(r"<p>\.\. math::\s*</p>\s*<pre><code>(.+?)</code></pre>", re.S)
_CODE = re.compile(r"<code>([^<]*)</code>")


def _shown(match: re.Match) -> str:
    target = match.group(3)
    if match.group(2):  # ~a.b.C -> C
        target = target.rsplit(".", 1)[-1]
    return f"{match.group(1)}{target}{match.group(4)}"


def _display(match: re.Match) -> str:
    return f"<div class=\"arithmatex\">\\[{match.group(1).strip()}\\]</div>"  # still HTML-escaped, as the DOM needs


def on_page_content(html_text, **kwargs):
    out = _ROLE.sub(_shown, html_text)
    out = _MATH_BLOCK.sub(_display, out)
    out = _MATH_INLINE.sub(_display, out)
    return _CODE.sub(lambda m: f"<code>{m.group(1).replace('``', '')}</code>", out)
