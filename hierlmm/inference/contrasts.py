"""Contrast matrices for Type I (sequential), Type II and Type III F tests and for the F
tests of ``drop1``, as lmerTest builds them.

Type I: the rows of ``U`` of the Doolittle factorisation ``X'X = L D U`` (``U = L'`` unit upper
triangular) that belong to each term: each term adjusted for the terms before it. lmerTest
sets entries below an absolute 1e-6 to zero, which changes the hypothesis when a column is
rescaled (a covariate in units of 1e-6 loses its adjustment); here the factorisation is done
on unit-RMS columns, so the hypothesis does not depend on units.

Type III (lmerTest's ``extract_contrasts_type3``): with ``X`` in treatment coding and
``X̃`` the over-parametrised design (every term in full indicator coding, ``0 + term``),
``L = (X⁺ X̃)'`` expresses the cell parameters in the coefficients; the columns of each term
are then made orthogonal to those of the terms that contain it (highest order first), and
the rows that correspond to the coefficients of ``X`` give the term's hypothesis. For
treatment coding this reproduces SAS's Type III hypotheses.

Type II (lmerTest's ``anova(type = 2)``, its ``get_contrasts_type2_unfolded``): each term
adjusted for every term that does not contain it. A term contained in no other is tested by
the identity rows of its columns; any other by its Type I rows with ``X``'s columns reordered
as [terms unrelated to it, the term, the terms containing it] (the same hypothesis either way
for a term contained in nothing, but the basis, and so Satterthwaite's multi-df DenDF, is
lmerTest's). Containment is SAS's (lmerTest's ``term_contain``): ``F1`` is contained in ``F2``
when every variable of ``F1`` is in ``F2``, ``F2`` has more, and both involve the same numeric
covariates.

``drop1``'s F tests (lmerTest's ``get_contrasts_marginal``): each term contained in no other
(R's ``drop.scope``) is tested by the identity rows of its columns (all its coefficients 0).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hierlmm.rnames import term_name, variable_name, variable_order
from hierlmm.rsyntax import formula_context, to_formulaic

__all__ = ["fixed_terms", "contrasts_type1", "contrasts_type2", "contrasts_type3", "contrasts_marginal",
           "droppable_terms"]


def _zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    mx = np.max(np.abs(x)) if x.size else 0.0
    if mx <= 0:
        return x
    return np.round(x, max(0, digits - int(np.ceil(np.log10(mx)))))


def _terms(spec, all_names, kept_names, formula_text, logical):
    """Terms of a formulaic model spec made from ``formula_text``: names, their columns among
    ``kept_names``, their factors, intercept (R's names: ``o`` for ``C(o, contr.poly)``, an
    interaction's factors in R's order)."""
    kept = {name: i for i, name in enumerate(kept_names)}
    order = variable_order(formula_text)
    names, cols, factors, intercept = [], {}, {}, False
    for term, idx in spec.term_indices.items():
        label = term_name(term, order, logical)
        if label == "1":
            intercept = True
            continue
        c = [kept[all_names[i]] for i in idx if all_names[i] in kept]
        if not c:
            continue
        names.append(label)
        cols[label] = c
        factors[label] = frozenset(variable_name(str(f), logical) for f in term.factors)
    return names, cols, factors, intercept


def fixed_terms(design) -> tuple[list[str], dict[str, list[int]], dict[str, frozenset], bool]:
    """Terms of the fixed part: names, their columns in ``X``, their factors, intercept."""
    return _terms(design.fixed_spec, design.all_fixef_names, design.fixef_names, design.fixed_formula,
                  design.logical)


def _sequential(X: np.ndarray) -> np.ndarray:
    """``U`` of the Doolittle factorisation ``X'X = U' D U`` (unit upper triangular): row ``j``
    is column ``j``'s hypothesis adjusted for the columns before it."""
    from hierlmm.crossprod import x_scale

    # in the coordinates of X S⁻¹ (unit-RMS columns), so that the zapping of round-off below
    # is free of the columns' units; Ũ β_s = Ũ S β, and row i divided by s_i is lmerTest's
    # unit-diagonal row (the basis matters: Satterthwaite's multi-df DenDF depends on it)
    s = x_scale(X)
    Xs = X / s
    C = np.linalg.cholesky(Xs.T @ Xs)
    U = (C / np.diag(C)).T
    U[np.abs(U) < 1e-6] = 0.0
    return U * s[None, :] / s[:, None]


def contrasts_type1(design) -> dict[str, np.ndarray]:
    """Sequential (Type I) contrasts per term."""
    names, cols, _, _ = fixed_terms(design)
    U = _sequential(design.X)
    return {t: U[cols[t]] for t in names}


def _numeric_variables(design, variables) -> set[str]:
    """The variables (of formulaic's terms) that are numeric covariates in R's sense
    (``dataClasses == "numeric"``): not factors, characters, logicals or ``C(...)``."""
    data = design.data
    out = set()
    for v in variables:
        if v.startswith("C("):
            continue
        col = data[v] if v in data.columns else None
        if col is not None and (isinstance(col.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(col)
                                or pd.api.types.is_bool_dtype(col)):
            continue
        out.add(v)
    return out


def _containing(design, terms) -> dict[str, list[str]]:
    """For each term, the terms that contain it (SAS's definition, lmerTest's ``containment``)."""
    names, _, factors, _ = terms
    numeric = _numeric_variables(design, set().union(*factors.values()) if factors else set())
    return {t: [u for u in names if u != t and factors[t] < factors[u]
                and factors[t] & numeric == factors[u] & numeric] for t in names}


def contrasts_type2(design) -> dict[str, np.ndarray]:
    """Type II contrasts per term (lmerTest's ``get_contrasts_type2``)."""
    terms = fixed_terms(design)
    names, cols, _, _ = terms
    if design.X.shape[1] <= 1 or len(names) <= 1:
        return contrasts_type1(design)
    contained = _containing(design, terms)
    p = design.X.shape[1]
    out = {}
    for t in names:
        if not contained[t]:
            out[t] = np.eye(p)[cols[t]]
            continue
        last = [c for u in [t] + contained[t] for c in cols[u]]
        order = [c for c in range(p) if c not in set(last)] + last
        U = _sequential(design.X[:, order])
        rows = [order.index(c) for c in cols[t]]
        L = np.empty((len(rows), p))
        L[:, order] = U[rows]
        out[t] = L
    return out


def droppable_terms(design) -> list[str]:
    """The terms contained in no other (R's ``drop.scope``: by variables alone)."""
    names, _, factors, _ = fixed_terms(design)
    return [t for t in names if not any(factors[t] < factors[u] for u in names)]


def contrasts_marginal(design) -> dict[str, np.ndarray]:
    """Per droppable term, the identity rows of its columns (lmerTest's ``drop1``); with one
    term or one column, its Type I rows, as lmerTest's ``get_contrasts_marginal``."""
    names, cols, _, _ = fixed_terms(design)
    if design.X.shape[1] <= 1 or len(names) <= 1:
        return contrasts_type1(design)
    eye = np.eye(design.X.shape[1])
    return {t: eye[cols[t]] for t in droppable_terms(design)}


def contrasts_type3(design) -> dict[str, np.ndarray]:
    """Type III contrasts per term, as lmerTest's ``get_contrasts_type3``.

    Built in treatment coding; where ``X`` codes a factor otherwise (an ordered factor's
    polynomial contrasts), the hypotheses are built on the treatment-coded ``X_t`` and mapped
    to ``X``'s coefficients by ``X_t⁺ X`` (the hypotheses are the same, only their coordinates
    change).
    """
    terms = fixed_terms(design)
    if design.X.shape[1] <= 1 or len(terms[0]) <= 1:
        return contrasts_type1(design)
    if design.treatment_formula is None:
        return _type3(design.X, design.fixef_names, terms, design.data, _containing(design, terms), design.logical)
    from formulaic import model_matrix

    from hierlmm.design import _drop_aliased, r_column_names

    mm = model_matrix(design.treatment_formula, design.data, na_action="ignore", context=formula_context())
    all_t = r_column_names(mm.rhs, design.treatment_formula, design.logical)
    Xt, names_t, _ = _drop_aliased(np.asarray(mm.rhs, dtype=float), all_t)
    terms_t = _terms(mm.rhs.model_spec, all_t, names_t, design.treatment_formula, design.logical)
    Lt = _type3(Xt, names_t, terms_t, design.data, _containing(design, terms_t), design.logical)
    M = _zapsmall(np.linalg.pinv(Xt) @ design.X)
    return {t: L @ M for t, L in Lt.items()}


def _type3(X, coef_names, terms, data, contained_in, logical=frozenset()) -> dict[str, np.ndarray]:
    """Type III contrasts of a treatment-coded ``X`` (lmerTest's ``extract_contrasts_type3``):
    each term's rows made orthogonal to the terms that contain it (``contained_in``, lmerTest's
    containment: a factor is not contained in its interaction with a covariate, which matters
    where X has aliased columns)."""
    from formulaic import model_matrix

    from hierlmm.design import r_column_names

    names, cols, factors, intercept = terms
    parts, rd_names = [], []
    if intercept:
        parts.append(np.ones((X.shape[0], 1)))
        rd_names.append("(Intercept)")
    for t in names:
        # a column whose name is not a Python name (``factor(dg)``, made by hierlmm.rfactors)
        # reaches formulaic in backquotes
        spelled = to_formulaic("0 + " + ":".join(f"`{v}`" if v in data.columns and not v.isidentifier() else v
                                                 for v in t.split(":")), logical=logical)
        mm = model_matrix(spelled, data, na_action="ignore", context=formula_context())
        parts.append(np.asarray(mm, dtype=float))
        rd_names.extend(r_column_names(mm, spelled, logical))
    rdX = np.hstack(parts)
    L = _zapsmall((np.linalg.pinv(X) @ rdX).T)  # rows: cell parameters; columns: coefficients
    degree = {t: len(factors[t]) for t in names}
    for t in sorted(names, key=lambda u: -degree[u]):
        if contained_in[t]:
            other = [c for u in contained_in[t] for c in cols[u]]
            B = L[:, other]
            coef, *_ = np.linalg.lstsq(B, L[:, cols[t]], rcond=None)
            L[:, cols[t]] = _zapsmall(L[:, cols[t]] - B @ coef)
    row_of = {n: i for i, n in enumerate(rd_names)}
    rows = [row_of[n] for n in coef_names]  # R names a level alike in either coding
    L = L[rows]
    out = {}
    for t in names:
        Lt = L[:, cols[t]].T
        out[t] = Lt[np.abs(Lt).sum(axis=1) > 1e-8]
    return out
