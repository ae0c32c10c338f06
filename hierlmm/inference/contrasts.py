"""Contrast matrices for Type I (sequential) and Type III F tests, as lmerTest builds them.

Type I: the rows of ``U`` of the Doolittle factorisation ``X'X = L D U`` (``U = L'`` unit upper
triangular) that belong to each term: each term adjusted for the terms before it.

Type III (lmerTest's ``extract_contrasts_type3``): with ``X`` in treatment coding and
``X̃`` the over-parametrised design (every term in full indicator coding, ``0 + term``),
``L = (X⁺ X̃)'`` expresses the cell parameters in the coefficients; the columns of each term
are then made orthogonal to those of the terms that contain it (highest order first), and
the rows that correspond to the coefficients of ``X`` give the term's hypothesis. For
treatment coding this reproduces SAS's Type III hypotheses.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["fixed_terms", "contrasts_type1", "contrasts_type3"]


def _zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    mx = np.max(np.abs(x)) if x.size else 0.0
    if mx <= 0:
        return x
    return np.round(x, max(0, digits - int(np.ceil(np.log10(mx)))))


def fixed_terms(design) -> tuple[list[str], dict[str, list[int]], dict[str, frozenset], bool]:
    """Terms of the fixed part: names, their columns in ``X``, their factors, intercept."""
    spec = design.fixed_spec
    kept = {name: i for i, name in enumerate(design.fixef_names)}
    names, cols, factors, intercept = [], {}, {}, False
    for term, idx in spec.term_indices.items():
        label = str(term)
        if label == "1":
            intercept = True
            continue
        c = [kept[design.all_fixef_names[i]] for i in idx if design.all_fixef_names[i] in kept]
        if not c:
            continue
        names.append(label)
        cols[label] = c
        factors[label] = frozenset(str(f) for f in term.factors)
    return names, cols, factors, intercept


def contrasts_type1(design) -> dict[str, np.ndarray]:
    """Sequential (Type I) contrasts per term."""
    X = design.X
    names, cols, _, _ = fixed_terms(design)
    C = np.linalg.cholesky(X.T @ X)
    U = (C / np.diag(C)).T  # unit upper triangular: X'X = U' D U
    U[np.abs(U) < 1e-6] = 0.0
    return {t: U[cols[t]] for t in names}


def _full_coding_name(name: str) -> str:
    """``Sex[T.Female]`` (treatment coding) -> ``Sex[Female]`` (indicator coding)."""
    return re.sub(r"\[T\.", "[", name)


def contrasts_type3(design) -> dict[str, np.ndarray]:
    """Type III contrasts per term (lmerTest's, for treatment-coded factors)."""
    from formulaic import model_matrix

    names, cols, factors, intercept = fixed_terms(design)
    X = design.X
    if X.shape[1] <= 1 or len(names) <= 1:
        return contrasts_type1(design)
    parts, rd_names = [], []
    if intercept:
        parts.append(np.ones((X.shape[0], 1)))
        rd_names.append("(Intercept)")
    for t in names:
        mm = model_matrix(f"0 + {t}", design.data, na_action="ignore")
        parts.append(np.asarray(mm, dtype=float))
        rd_names.extend(mm.columns)
    rdX = np.hstack(parts)
    L = _zapsmall((np.linalg.pinv(X) @ rdX).T)  # rows: cell parameters; columns: coefficients
    contained_in = {t: [u for u in names if u != t and factors[t] < factors[u]] for t in names}
    degree = {t: len(factors[t]) for t in names}
    for t in sorted(names, key=lambda u: -degree[u]):
        if contained_in[t]:
            other = [c for u in contained_in[t] for c in cols[u]]
            B = L[:, other]
            coef, *_ = np.linalg.lstsq(B, L[:, cols[t]], rcond=None)
            L[:, cols[t]] = _zapsmall(L[:, cols[t]] - B @ coef)
    row_of = {n: i for i, n in enumerate(rd_names)}
    rows = [row_of[_full_coding_name(n)] for n in design.fixef_names]
    L = L[rows]
    out = {}
    for t in names:
        Lt = L[:, cols[t]].T
        out[t] = Lt[np.abs(Lt).sum(axis=1) > 1e-8]
    return out
