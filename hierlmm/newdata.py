"""New data for prediction: the fixed and random model matrices of a fitted design.

One construction for the fit's :meth:`~hierlmm.results.LMMResult.predict` and the posterior's
:meth:`~hierlmm.bayes.posterior.Posterior.predict`: ``X`` with the fit's coding, the offset,
and per random-effects term the level codes (``-1`` for a level the fit has not seen) and its
``Z`` columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hierlmm.errors import DataError
from hierlmm.plain import plain_columns, plain_names

__all__ = ["NewData", "new_data", "predict_frame", "term_columns"]


@dataclass
class NewData:
    """``X`` (n x p), the offset (or None), and per term ``codes`` and ``Z``; a level the fit has
    not seen has a negative code, ``-1`` for the first such level, ``-2`` for the next, ..."""

    X: np.ndarray
    offset: np.ndarray | None
    codes: list[np.ndarray]
    Z: list[np.ndarray]
    index: pd.Index


def term_columns(term, data: pd.DataFrame) -> np.ndarray:
    """The ``Z`` columns of a random-effects term evaluated on (new) data."""
    if term.model_spec is None:
        plain = plain_columns(term.expr, data)
        if plain is None:
            raise DataError(f"the columns {', '.join(map(repr, plain_names(term.expr)[0]))} of {term.source} must "
                            "be numeric columns of the new data, as they were of the fit's")
        return plain[0]
    from hierlmm.rsyntax import formula_context, numeric_view

    data = numeric_view(data, str(term.model_spec.formula))
    return np.asarray(term.model_spec.get_model_matrix(data, na_action="ignore", context=formula_context()),
                      dtype=float)


def align_categories(design, newdata: pd.DataFrame) -> pd.DataFrame:
    """Check newdata's columns and give its factors the fit's categories (same contrasts)."""
    from hierlmm.design import used_columns

    grouping = {f for t in design.terms for f in t.factors}
    _, covariates = used_columns(design.parsed, design.data.columns)
    if design.derived:  # factor(x), relevel(f, "b"): made from their columns with the fit's levels
        absent = sorted({d.source for d in design.derived if d.source not in newdata.columns})
        if absent:
            raise DataError(f"newdata lacks column(s) {', '.join(absent)} used by the model")
        newdata = newdata.assign(**{d.name: d.apply(newdata) for d in design.derived})
        for d in design.derived:
            unknown = newdata[d.name].isna() & newdata[d.source].notna()
            if unknown.any():
                bad = sorted(set(newdata.loc[unknown, d.source].astype(str)))
                raise DataError(f"newdata column {d.source!r} has value(s) that are not levels of {d.name} in the "
                                f"fit: {', '.join(bad)}")
    extra = list(design.residual.columns()) if design.residual is not None else []
    needed = [c for c in design.data.columns if (c in covariates or c in extra) and c not in grouping]
    missing = [c for c in needed if c not in newdata.columns]
    if missing:
        raise DataError(f"newdata lacks column(s) {', '.join(missing)} used by the model")
    newdata = newdata.copy()
    for c in needed:
        col = design.data[c]
        if not isinstance(col.dtype, pd.CategoricalDtype):
            if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
                continue
            # a text column is a factor with sorted levels (build_design): the same check
            col = col.astype("category")
        cats = col.cat.categories
        values = newdata[c].astype(str) if cats.dtype == object else newdata[c]
        unknown = sorted(set(values[values.notna() & ~values.isin(cats)].astype(str)))
        if unknown:
            raise DataError(f"newdata column {c!r} has level(s) not in the fit: {', '.join(unknown)}")
        if isinstance(values.dtype, pd.CategoricalDtype):  # its other categories are unused (checked above)
            newdata[c] = values.cat.set_categories(cats).cat.as_unordered()
        else:
            newdata[c] = pd.Categorical(values, categories=cats)
    return newdata


def grouping_labels(data: pd.DataFrame, factors) -> np.ndarray:
    """Each row's level label of the grouping factor ``a`` or ``a:b`` by the fit's rule
    (:func:`hierlmm.design.level_label`, :func:`hierlmm.design.join_labels`): a level is found
    by its value whether the new column holds it as int, float, str, category or date."""
    from hierlmm.design import join_labels, level_label

    parts = []
    for f in factors:
        col = data[f]
        codes, uniques = pd.factorize(col, use_na_sentinel=True)
        lab = np.array([level_label(u) for u in uniques] + [None], dtype=object)
        parts.append(lab[codes])  # code -1 (missing) -> None, a level of no fit
    if len(parts) == 1:
        return parts[0]
    return np.array([None if None in v else join_labels(v) for v in zip(*parts)], dtype=object)


def new_data(design, newdata: pd.DataFrame, random: bool = True, allow_new_levels: bool = True) -> NewData:
    """The matrices of ``newdata`` (``random=False``: the fixed part only).

    ``allow_new_levels=False`` refuses a level of a grouping factor the fit has not seen,
    naming it (lme4's default); otherwise its code is negative (one per unseen level).
    """
    if not isinstance(newdata, pd.DataFrame):
        raise DataError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}")
    newdata = align_categories(design, newdata)
    try:
        X = design.fixed_matrix(newdata)
    except Exception as exc:
        raise DataError(f"cannot build the fixed-effects matrix for newdata: {exc}") from None
    codes, Zs = [], []
    if random:
        for t in design.terms:
            missing = [f for f in t.factors if f not in newdata.columns]
            if missing:
                raise DataError(f"newdata lacks grouping column(s) {', '.join(missing)} of {t.source}")
            labels = grouping_labels(newdata, t.factors)
            lookup = pd.Series(np.arange(t.m), index=t.levels)
            c = lookup.reindex(labels).to_numpy(dtype=float)
            seen = ~np.isnan(c)
            if not allow_new_levels and not seen.all():
                new = list(dict.fromkeys(labels[~seen]))
                raise DataError(
                    f"newdata has level(s) of {t.group!r} not in the fit: "
                    f"{', '.join(map(repr, new[:5]))}{' ...' if len(new) > 5 else ''}; "
                    "allow_new_levels=True predicts them at the population level (b = 0)")
            unseen = pd.factorize(labels[~seen])[0]
            full = np.nan_to_num(c).astype(np.int64)
            full[~seen] = -1 - unseen
            codes.append(full)
            Zs.append(term_columns(t, newdata))
    return NewData(X=X, offset=design.offset_on(newdata), codes=codes, Z=Zs, index=newdata.index)


def predict_frame(design, beta: np.ndarray, b, newdata: pd.DataFrame, conditional: bool,
                  allow_new_levels: bool) -> pd.Series:
    """``Xβ + o (+ Zb)`` on ``newdata``: a level the fit has not seen gets ``b = 0`` for its term."""
    nd = new_data(design, newdata, random=conditional, allow_new_levels=allow_new_levels)
    mu = nd.X @ beta
    if nd.offset is not None:
        mu = mu + nd.offset
    for codes, Z, bt in zip(nd.codes, nd.Z, b):
        seen = codes >= 0
        mu[seen] += np.einsum("ik,ik->i", Z[seen], bt[codes[seen]])
    return pd.Series(mu, index=nd.index, name="predicted")
