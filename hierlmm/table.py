"""Result tables that print as R prints them and render as HTML in notebooks.

A :class:`Table` is a pandas DataFrame (every number kept, every pandas operation available)
whose display is formatted for reading: a title, p-values as R writes them (``< 2e-16``,
three significant digits) with significance codes, counts as integers, other numbers to a
common number of decimals per column (R's ``print.default``), empty cells for missing values,
and optionally only the columns a reader needs (``shown``; the rest stay in the frame, e.g.
``table[["hdi_low", "hdi_high"]]``). In a terminal it is aligned text; in Jupyter, HTML from
pandas' Styler.
"""

from __future__ import annotations

from html import escape

import numpy as np
import pandas as pd

__all__ = ["Table", "as_table"]

from hierlmm.summary import SIGNIF_LEGEND


class Table(pd.DataFrame):
    """A DataFrame with R-like display (see module doc).

    Attributes
    ----------
    title : str or None
        Printed above the table (e.g. ``Type III Analysis of Variance Table with
        Satterthwaite's method``).
    pvalues : list of str
        Columns holding p-values.
    shown : list of str or None
        Columns displayed (``None``: all).
    notes : list of str
        Printed below the table (emmeans' "Results are averaged over the levels of: N").
    headers : dict
        Printed headers of columns: the frame's columns are spelt for Python (``sum_sq``,
        ``den_df``, ``p``), the display as R prints them (``Sum Sq``, ``DenDF``, ``Pr(>F)``).
    """

    _metadata = ["title", "pvalues", "shown", "notes", "headers"]

    @property
    def _constructor(self):
        return Table

    # -------------------------------------------------------------------- formatting
    def _display_columns(self) -> list:
        shown = getattr(self, "shown", None)
        return [c for c in self.columns if shown is None or c in shown]

    def _formatters(self) -> dict:
        """One function value -> string per displayed column."""
        from hierlmm.summary import _column, _pvalue

        out = {}
        pcols = set(getattr(self, "pvalues", None) or [])
        for c in self._display_columns():
            col = self[c]
            if c in pcols:
                out[c] = lambda v: _pvalue(float(v)) if _is_number(v) else ""
            elif pd.api.types.is_bool_dtype(col):
                out[c] = lambda v: "" if v is None else str(bool(v))
            elif pd.api.types.is_numeric_dtype(col):
                values = col.to_numpy(dtype=float)
                finite = values[np.isfinite(values)]
                if finite.size and np.all(finite == np.round(finite)) and np.all(np.abs(finite) < 1e15):
                    out[c] = lambda v: f"{int(v)}" if _is_number(v) and np.isfinite(v) else ""
                else:
                    lookup = {v: s for v, s in zip(values, _column(list(values), digits=5)) if np.isfinite(v)}
                    out[c] = lambda v, lookup=lookup: lookup.get(float(v), f"{float(v):.5g}") \
                        if _is_number(v) and np.isfinite(v) else ""
            else:  # text, or numbers mixed with text (a mode that does not exist)
                out[c] = lambda v: ("" if v is None or (isinstance(v, float) and np.isnan(v))
                                    else f"{v:.6g}" if _is_number(v) else str(v))
        return out

    def _stars(self) -> list[str] | None:
        """Significance codes of the first p-value column (None when no p is below 0.1)."""
        from hierlmm.summary import _stars

        pcols = [c for c in (getattr(self, "pvalues", None) or []) if c in self._display_columns()]
        if not pcols:
            return None
        stars = [_stars(float(v)) if _is_number(v) else "" for v in self[pcols[0]]]
        return stars if any(stars) else None

    def formatted(self) -> pd.DataFrame:
        """The displayed cells as strings (a plain DataFrame)."""
        fmt = self._formatters()
        cols = self._display_columns()
        out = pd.DataFrame({c: [fmt[c](v) for v in self[c]] for c in cols}, index=self.index)
        out.columns = [(getattr(self, "headers", None) or {}).get(c, c) for c in cols]
        stars = self._stars()
        if stars is not None:
            out[" "] = stars
        return out

    def _plain_index(self) -> bool:
        """A 0, 1, 2, ... index carries nothing to show."""
        return isinstance(self.index, pd.RangeIndex) and self.index.start == 0 and self.index.step == 1

    def to_text(self) -> str:
        from hierlmm.summary import _table

        cells = self.formatted()
        if self._plain_index():
            rows = [list(r) for r in cells.itertuples(index=False)]
            body = _table(rows, [str(c) for c in cells.columns], align_left=0)
        else:
            rows = [[str(i)] + list(r) for i, r in zip(cells.index, cells.itertuples(index=False))]
            body = _table(rows, [""] + [str(c) for c in cells.columns])
        lines = [self.title, ""] if getattr(self, "title", None) else []
        lines.append(body)
        if self._stars() is not None:
            lines += ["---", SIGNIF_LEGEND]
        hidden = [c for c in self.columns if c not in self._display_columns()]
        if hidden:
            lines.append(f"(also in the table: {', '.join(map(str, hidden))})")
        notes = getattr(self, "notes", None) or []
        if notes:
            lines += [""] + list(notes)
        return "\n".join(lines)

    def __repr__(self) -> str:
        if not isinstance(self.index, pd.Index) or self.columns.nlevels > 1:
            return super().__repr__()
        return self.to_text()

    def _repr_html_(self) -> str:
        cells = self.formatted()
        headers = getattr(self, "headers", None) or {}
        numeric = [headers.get(c, c) for c in self._display_columns() if pd.api.types.is_numeric_dtype(self[c])
                   or c in (getattr(self, "pvalues", None) or [])]
        styler = cells.style.set_properties(subset=numeric, **{"text-align": "right"})
        styler = styler.set_table_styles([
            {"selector": "th.row_heading", "props": "text-align: left;"},
            {"selector": "td, th", "props": "padding: 0.1em 0.6em;"},
            {"selector": "caption", "props": "text-align: left; font-weight: bold;"}])
        if self._plain_index():
            styler = styler.hide(axis="index")
        if getattr(self, "title", None):
            styler = styler.set_caption(self.title)
        html = styler.to_html()
        if self._stars() is not None:
            html += f"<p><small>{SIGNIF_LEGEND}</small></p>"
        hidden = [c for c in self.columns if c not in self._display_columns()]
        if hidden:
            html += f"<p><small>also in the table: {', '.join(map(str, hidden))}</small></p>"
        for note in getattr(self, "notes", None) or []:
            html += f"<p><small>{escape(note)}</small></p>"
        return html


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and np.isfinite(v)


def as_table(frame: pd.DataFrame, title: str | None = None, pvalues=(), shown=None, notes=(),
             headers=None) -> Table:
    """``frame`` as a :class:`Table` (same data, R-like display; ``headers``: R's printed
    header of a column, where it differs from the column's name)."""
    out = Table(frame)
    out.notes = list(notes)
    out.headers = dict(headers or {})
    out.title = title
    if title:
        out.attrs["title"] = title
    out.pvalues = [c for c in pvalues if c in frame.columns]
    out.shown = list(shown) if shown is not None else None
    return out
