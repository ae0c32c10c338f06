"""Independent blocks of observations: rows that share no level of any grouping factor.

``V = ZDZ' + σ²R`` is block diagonal over the connected components of the graph whose nodes
are the levels of all grouping factors and whose edges join the levels one observation
has. Kenward–Roger and the per-group engine work block by block with small dense matrices.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

__all__ = ["independent_blocks", "split_blocks"]


def independent_blocks(design) -> np.ndarray:
    """Label of the block of independent rows each observation belongs to."""
    offsets = np.cumsum([0] + [t.m for t in design.terms])
    rows, cols = [], []
    first = design.terms[0].codes + offsets[0]
    for t, off in zip(design.terms[1:], offsets[1:]):
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
