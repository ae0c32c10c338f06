"""Independent blocks of observations: rows that share no level of any grouping factor.

``V = ZDZ' + σ²R`` is block diagonal over the connected components of the graph whose nodes
are the levels of all grouping factors and whose edges join the levels one observation
has. Kenward–Roger and the per-group engine work block by block with small dense matrices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

__all__ = ["Grouping", "column_grouping", "independent_blocks", "split_blocks"]


@dataclass(frozen=True)
class Grouping:
    """A grouping of the rows by a data column that is no random term's (a residual
    structure's ``group=``, nlme's ``gls``): ``codes`` per row into ``levels``."""

    group: str
    codes: np.ndarray
    levels: list[str]

    @property
    def m(self) -> int:
        return len(self.levels)


def column_grouping(data, name: str) -> Grouping:
    """The rows of ``data`` grouped by column ``name`` (a factor's categories in order, else the
    sorted values)."""
    col = data[name]
    cat = col.astype("category") if not isinstance(col.dtype, pd.CategoricalDtype) else col
    return Grouping(name, cat.cat.codes.to_numpy().astype(np.int64), [str(c) for c in cat.cat.categories])


def independent_blocks(design, extra=()) -> np.ndarray:
    """Label of the block of independent rows each observation belongs to: connected through
    the levels of the random terms and of the groupings in ``extra`` (a residual structure's);
    each row its own block when there are none."""
    groupings = list(design.terms) + [g for g in extra if all(g is not t for t in design.terms)]
    if not groupings:
        return np.arange(design.n)
    offsets = np.cumsum([0] + [t.m for t in groupings])
    rows, cols = [], []
    first = groupings[0].codes + offsets[0]
    for t, off in zip(groupings[1:], offsets[1:]):
        rows.append(first)
        cols.append(t.codes + off)
    total = offsets[-1]
    if rows:
        r, c = np.concatenate(rows), np.concatenate(cols)
        adj = sp.coo_matrix((np.ones(r.size), (r, c)), shape=(total, total))
    else:
        adj = sp.coo_matrix((total, total))
    _, labels = connected_components(adj, directed=False)
    return labels[first]


def split_blocks(labels: np.ndarray) -> list[np.ndarray]:
    """Row indices of each block, in data order within a block."""
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    return np.split(order, bounds)
