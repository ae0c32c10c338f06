"""Data beyond memory: a model on a Dask DataFrame, fitted from its cross-product.

Everything after the design (the REML/ML fit, the BLUPs' posterior, profiles, Satterthwaite's
degrees of freedom, the collapsed sampler) works on ``A = [Z X y]'[Z X y]``
(:mod:`hierlmm.crossprod`), a sum over rows; so the rows never meet in one place:

1. **Levels.** Every factor column (a grouping factor, or a categorical column of the fixed
   part) needs its levels before any row is encoded, in R's order: a categorical's category
   order, else sorted values. A column whose Dask metadata knows its categories needs no pass;
   otherwise a first pass collects the values present (and the combinations of an interaction
   ``(1 | a:b)``) in complete rows.
2. **One encoder.** The fixed part's formulaic spec is built once, on a prototype frame whose
   factor columns carry those levels, so every partition is encoded with the same columns and
   contrasts (a fixed part of plain columns, :mod:`hierlmm.plain`, is encoded without
   formulaic: the factor columns' categories are the global levels). A transform whose state
   is learned from the data (``scale(x)``, ``poly(x, 2)``, spline knots) would learn it from
   the prototype: it is refused, as is a numeric column used as a factor (``factor(x)``; make
   the column categorical).
3. **Blocks.** Per partition: its complete rows (missing values dropped and counted as in
   memory), the partial ``A`` with ``X`` unscaled and all its columns, ``X``'s R factor (so the
   aliased columns are found by the same QR criterion as in memory, TSQR), the column sums and
   the level counts; added on the workers (:func:`_compute`). A level that no complete row
   uses (an unused category) changes the encoding: the pass is repeated without it.
4. **A row-less design.** Aliased columns are dropped from ``A``, ``X``'s columns scaled (crossprod's
   ``s_j``), and a :class:`~hierlmm.design.Design` built whose ``y``, ``X``, ``Z`` and codes
   are :class:`~hierlmm.design.NoRows` and whose ``source`` hands the reduced ``A`` to every
   engine. What needs the rows is refused with a message (``NoRows``); fitted values and
   residuals are lazy Dask Series, computed partition by partition.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp

from hierlmm.crossprod import CrossProduct, check_residual, crossproduct, fixed_map, sparse_a21
from hierlmm.design import (Design, NoRows, _check_column_types, _model_matrix, _offset, _required, aliased,
                            check_finite, constant_response, join_labels, level_label,
                            check_term, check_weights, logical_columns, make_term, order_terms, r_column_names,
                            used_columns, warn_scales)
from hierlmm.errors import DataError, FormulaError, HierlmmError, RankDeficiencyWarning, warn
from hierlmm.formula import parse_formula
from hierlmm.plain import plain_fixed, plain_matrix
from hierlmm.rsyntax import formula_context, numeric_view, to_formulaic

__all__ = ["is_dask", "build_partitioned_design", "Source"]

_PROTO_ROWS = 4


def is_dask(data) -> bool:
    """``data`` is a Dask DataFrame (checked without importing Dask)."""
    return type(data).__module__.split(".")[0] == "dask" and hasattr(data, "map_partitions")


# ------------------------------------------------------------------------------ the encoder
@dataclass(eq=False)
class Encoder:
    """How one partition becomes the model's rows: picklable, shipped to the workers.

    ``levels`` maps every factor column to its categories (R's order); ``groupings`` gives,
    per grouping factor (the tuple of its columns: ``("g",)``, ``("g", "h")`` for ``g:h``;
    what a term's codes depend on, so terms that share it, as ``(1 | g/h)``'s two or
    ``(1 | g) + (0 + x | g)``, share it), ``None`` or, for an interaction, the sorted codes of
    the present combinations in the product of their categories.
    """

    columns: list[str]  # read from every partition: the formula's, the weights' and the offset's
    levels: dict[str, pd.Index]
    ordered: set[str]
    parsed: object
    spec: object = None  # formulaic ModelSpecs of the fixed part (response and X)
    design: Design | None = None  # the row-less template (terms with their Z specs)
    groupings: dict = field(default_factory=dict)  # factors -> present product codes, or None
    weights: str | None = None
    offset: str | None = None
    dtypes: dict = field(default_factory=dict)  # the metadata's dtype of every column read
    # (R₀, β₀) of every partition's partial A (crossprod's internal coordinates): the response
    # less a constant and each covariate less its mean, both from the first partition, so that
    # a response or covariate of mean 1e10 keeps its digits in the sums (None: raw sums)
    premap: tuple | None = None
    plain: bool = False  # the fixed part is plain columns (hierlmm.plain): no formulaic per partition

    def prepare(self, part: pd.DataFrame) -> tuple[pd.DataFrame, int]:
        """The partition's complete rows of the used columns, factor columns cast to their
        global categories, and the number of rows dropped."""
        frame = part[self.columns]  # the formula's columns, weights and offset
        complete = ~frame.isna().any(axis=1).to_numpy()
        dropped = int((~complete).sum())
        if dropped:
            frame = frame.loc[complete]
        columns = {c: frame[c] for c in frame.columns}  # a new frame of the same columns: no copy of the rows
        for c, cats in self.levels.items():
            values = frame[c]
            columns[c] = coded = pd.Series(_as_levels(values, cats, c in self.ordered), index=frame.index, name=c)
            if coded.isna().any():
                other = pd.unique(values[coded.isna().to_numpy()].astype(object))
                raise DataError(f"column {c!r} has value(s) {', '.join(map(repr, other[:5]))} in a partition that "
                                "are not among its levels (the categories of the Dask DataFrame's metadata): "
                                "partitions must share one categorical dtype")
        return pd.DataFrame(columns, copy=False), dropped

    def codes(self, frame: pd.DataFrame, factors: tuple[str, ...]) -> np.ndarray:
        """Level codes of every row for the grouping factor ``factors`` (global, R's order)."""
        present = self.groupings[factors]
        code = _product_codes([frame[f].cat.codes.to_numpy() for f in factors], [len(self.levels[f]) for f in factors])
        if present is None:
            return code.astype(np.int32)
        return np.searchsorted(present, code).astype(np.int32)

    def counts(self, frame: pd.DataFrame) -> dict:
        """Rows per category of every factor column, and per level of every interaction
        ``a:b`` (keyed by its columns, ``("a", "b")``): which levels the complete rows use."""
        out: dict = {c: np.bincount(frame[c].cat.codes.to_numpy(), minlength=len(cats))
                     for c, cats in self.levels.items()}
        for factors, present in self.groupings.items():
            if present is not None:
                out[factors] = np.bincount(self.codes(frame, factors), minlength=len(present))
        return out

    def response(self, frame: pd.DataFrame) -> np.ndarray:
        """``y`` of a partition's complete rows (the formula's left side)."""
        if self.plain:
            return frame[self.parsed.response].to_numpy(dtype=float, na_value=np.nan)
        y = self.spec.lhs.get_model_matrix(numeric_view(frame, str(self.spec.lhs.formula)), na_action="ignore",
                                           context=formula_context())
        return np.asarray(y, dtype=float).reshape(len(frame), -1)[:, 0]

    def prior_weights(self, frame: pd.DataFrame) -> np.ndarray | None:
        """The prior weights of a partition's complete rows (``None`` without)."""
        if self.weights is None:
            return None
        return check_weights(frame[self.weights].to_numpy(dtype=float), f"weights column {self.weights!r}")

    def rows(self, frame: pd.DataFrame) -> Design:
        """The in-memory design of one partition's complete rows: every column of ``X``."""
        if self.plain:
            X = plain_matrix(self.parsed.fixed, frame)[0]
        else:
            X = np.asarray(self.spec.rhs.get_model_matrix(numeric_view(frame, str(self.spec.rhs.formula)),
                                                          na_action="ignore", context=formula_context()), dtype=float)
        y, names = self.response(frame), self.design.all_fixef_names
        check_finite(y, X, names, self.parsed.response)
        w = self.prior_weights(frame)
        extra = None if self.offset is None else frame[self.offset].to_numpy(dtype=float)
        from hierlmm.newdata import term_columns

        terms = [dataclasses.replace(t, codes=self.codes(frame, t.factors), Z=term_columns(t, frame))
                 for t in self.design.terms]
        return dataclasses.replace(self.design, y=y, X=np.asfortranarray(X), fixef_names=names, terms=terms,
                                   data=frame, weights=w, offset=_offset(self.parsed, frame, extra), source=None)


def _as_levels(values: pd.Series, cats: pd.Index, ordered: bool) -> pd.Categorical:
    """``values`` as a categorical with the categories ``cats`` (a value not among them
    becomes missing): a categorical's codes remapped, sorted numbers by binary search (by a
    shift where they are consecutive), else pandas' hash lookup."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.set_categories(cats, ordered=ordered).array
    dtype = pd.CategoricalDtype(cats, ordered=ordered)
    if (pd.api.types.is_integer_dtype(values.dtype) and pd.api.types.is_integer_dtype(cats.dtype)
            and cats.is_monotonic_increasing and len(cats)):
        v, c = values.to_numpy(), cats.to_numpy()
        if (int(c[-1]) - int(c[0]) == len(c) - 1 and abs(int(c[0])) < 2**62
                and (v.dtype.kind == "i" or v.dtype.itemsize < 8)):  # consecutive integers: a shift
            codes = v.astype(np.int64) - int(c[0])
            codes[(codes < 0) | (codes >= len(c))] = -1
        else:
            codes = np.minimum(np.searchsorted(c, v), len(c) - 1)
            codes = np.where(c[codes] == v, codes, -1)
        return pd.Categorical.from_codes(codes, dtype=dtype)
    return pd.Categorical(values, dtype=dtype)


# ------------------------------------------------------------------------- partial sums
@dataclass(eq=False)
class Partial:
    """What a partition contributes; ``+`` adds two (a step of the reduction)."""

    n: int
    n_missing: int
    counts: dict  # a factor column, or an interaction's columns -> rows per level
    cp: CrossProduct | None = None  # X unscaled, every column of X
    R: np.ndarray | None = None  # R factor of X (unweighted): TSQR
    colsum: np.ndarray | None = None
    binary: np.ndarray | None = None  # column of X holds only 0 and 1
    ystats: tuple = (0, 0.0, 0.0)  # the response's (n, mean, sum of squared deviations)

    def __add__(self, other: Partial) -> Partial:
        counts = {c: self.counts[c] + other.counts[c] for c in self.counts}
        if self.cp is None or other.cp is None:
            keep = self if other.cp is None else other
            return dataclasses.replace(keep, n=self.n + other.n, n_missing=self.n_missing + other.n_missing,
                                       counts=counts)
        a, b = self.cp, other.cp
        cp = dataclasses.replace(a, A11=a.A11 + b.A11, A21=_sum_a21(a.A21, b.A21), A22=a.A22 + b.A22, n=a.n + b.n,
                                 log_weights=a.log_weights + b.log_weights)
        R = np.linalg.qr(np.vstack([self.R, other.R]), mode="r")
        (na, ma, sa), (nb, mb, sb) = self.ystats, other.ystats
        delta = mb - ma  # Chan et al.'s pairwise update: no cancellation for a response far from 0
        ystats = (na + nb, ma + delta * nb / (na + nb), sa + sb + delta * delta * na * nb / (na + nb))
        return Partial(self.n + other.n, self.n_missing + other.n_missing, counts, cp, R,
                       self.colsum + other.colsum, self.binary & other.binary, ystats)


_SATURATED = 0.25  # a sum of A21 with more non-zeros than this share of its entries is kept dense
_DENSE_MAX = 2.5e8  # ... when its entries fit in this many (2 GB)
_ROWS_AT_ONCE = 64  # rows of a sparse A21 added into a dense one at a time


def _sum_a21(x, y):
    """``x + y`` of two partial ``A21`` (CSR or dense). Once the sum is saturated (many of the
    pairs of levels occur: a crossed design at 10⁸ rows fills 64 % of A21) it is dense, and
    further sums are added into it in place, a few rows of a sparse addend at a time: a sum
    of two sparse matrices holds both and a third as large as both, a dense sum one copy
    (``8 r q`` bytes) and a few rows of index arrays. The partials of the reduction are each
    used once, so adding into one changes nothing another sum reads."""
    dense_x, dense_y = not sp.issparse(x), not sp.issparse(y)
    if not (dense_x or dense_y):
        size = x.shape[0] * x.shape[1]
        if x.nnz + y.nnz <= _SATURATED * size or size > _DENSE_MAX:
            return x + y
    if not dense_x and dense_y:
        x, y = y, x
    out = x.toarray() if sp.issparse(x) else x
    if not sp.issparse(y):
        out += y
        return out
    y = y.tocsr()
    y.sum_duplicates()  # one entry per (row, column): a buffered += adds each once
    for start in range(0, y.shape[0], _ROWS_AT_ONCE):
        block = y[start:start + _ROWS_AT_ONCE].tocoo()
        out[block.row + start, block.col] += block.data
    return out


def _partial(part: pd.DataFrame, enc: Encoder, index: int) -> Partial:
    _check_partition(part, enc, index)
    frame, dropped = enc.prepare(part)
    counts = enc.counts(frame)
    if len(frame) == 0:
        return Partial(0, dropped, counts)
    d = enc.rows(frame)
    p = d.X.shape[1]
    cp = crossproduct(d, sparse=True, raw=True, premap=enc.premap)  # A21: CSR (dense without further terms)
    # scipy's mode="r" gives R with n rows (zeros below p): keep the p x p triangle
    R = scipy.linalg.qr(np.array(d.X, order="F"), mode="r", overwrite_a=True, check_finite=False)[0][:p]
    binary = np.array([np.all((d.X[:, j] == 0) | (d.X[:, j] == 1)) for j in range(p)], dtype=bool)
    ystats = (len(d.y), float(d.y.mean()), float(np.sum((d.y - d.y.mean()) ** 2)))
    return Partial(len(frame), dropped, counts, cp, R, d.X.sum(axis=0), binary, ystats)


def _check_partition(part: pd.DataFrame, enc: Encoder, index: int) -> None:
    """Partitions that disagree with the frame's metadata in a used column's type."""
    _has_columns(part, enc.columns, index)
    for c in enc.columns:
        if c in enc.levels:
            continue
        got, want = part[c].dtype, enc.dtypes[c]
        if pd.api.types.is_numeric_dtype(want) != pd.api.types.is_numeric_dtype(got):
            raise DataError(f"column {c!r} is {got} in partition {index} and {want} in the Dask DataFrame's "
                            "metadata: partitions must agree in their columns' types (e.g. "
                            f"ddf[{c!r}] = ddf[{c!r}].astype(float))")


# ------------------------------------------------------------------------ levels (pass 1)
@dataclass(eq=False)
class _Values:
    """The values of the factor columns, and each interaction's combinations, in the rows
    where they are not missing (pass 1)."""

    values: dict[str, pd.Index]
    combos: dict[tuple, pd.DataFrame]  # an interaction's columns -> their combinations

    def __add__(self, other: _Values) -> _Values:
        return _Values({c: v.append(other.values[c]).unique() for c, v in self.values.items()},
                       {s: pd.concat([v, other.combos[s]]).drop_duplicates() for s, v in self.combos.items()})


def _present(part: pd.DataFrame, factor_cols, interactions, index) -> _Values:
    """The values of the factor columns in one partition, and of each interaction's
    combinations. Only these columns are read, so rows are not filtered for missing values
    in the others: a level present only in incomplete rows is found unused by the
    cross-product pass's counts, which then runs again without it."""
    _has_columns(part, factor_cols, index)
    frame = part[factor_cols]
    values = {}
    for c in factor_cols:
        col = frame[c]
        if isinstance(col.dtype, pd.CategoricalDtype):  # the categories used, by their codes
            codes = col.cat.codes.to_numpy()
            values[c] = col.cat.categories[np.unique(codes[codes >= 0])]
        else:
            values[c] = pd.Index(pd.unique(col.dropna().to_numpy()))
    combos = {f: _plain(frame[list(f)].dropna()).drop_duplicates() for f in interactions}
    return _Values(values, combos)


def _has_columns(part: pd.DataFrame, columns, index: int) -> None:
    missing = [c for c in columns if c not in part.columns]
    if missing:
        raise DataError(f"partition {index} of the Dask DataFrame has no column {missing[0]!r}")


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({c: (frame[c].astype(frame[c].cat.categories.dtype)
                             if isinstance(frame[c].dtype, pd.CategoricalDtype) else frame[c])
                         for c in frame.columns}, index=frame.index)


def _order(values: pd.Index, dtype, column: str) -> pd.Index:
    """A factor's levels in R's order (as in memory): a categorical's category order, else
    sorted (pandas' ``astype('category')``)."""
    if isinstance(dtype, pd.CategoricalDtype) and _known(dtype):
        cats = dtype.categories
        unknown = values.difference(cats)
        if len(unknown):
            raise DataError(f"column {column!r} has value(s) {', '.join(map(repr, list(unknown[:5])))} not among "
                            "the categories of the Dask DataFrame's metadata: partitions must share one "
                            f"categorical dtype (ddf[{column!r}] = ddf[{column!r}].cat.set_categories(...))")
        return cats[cats.isin(values)]
    try:
        return values.sort_values()
    except TypeError:
        raise DataError(f"column {column!r} mixes values of different types ({', '.join(sorted({type(v).__name__ for v in values}))}); "
                        "give it one type") from None


def _known(dtype) -> bool:
    return isinstance(dtype, pd.CategoricalDtype) and not (
        len(dtype.categories) == 1 and str(dtype.categories[0]) == "__UNKNOWN_CATEGORIES__")


# ----------------------------------------------------------------------------- the engine
def _compute(ddf, fn, args, desc: str, progress: bool | None):
    """``fn(partition, *args, index)`` on every partition, the results added by a tree
    reduction (pairs of neighbours, on the workers; on a distributed cluster its last few sums
    on the client); a progress bar over partitions. Dask's
    own check of a partition against the metadata becomes a :class:`DataError`."""
    try:
        return _reduce(ddf, fn, args, desc, progress)
    except ValueError as exc:
        if isinstance(exc, HierlmmError) or "Metadata mismatch" not in str(exc):
            raise
        raise DataError("a partition of the Dask DataFrame disagrees with its metadata (a column's type or the "
                        f"columns): {str(exc).strip()}") from None


_CLIENT_SUMS = 8  # the last sums of a distributed reduction, added on the client


def _reduce(ddf, fn, args, desc, progress):
    import dask
    from dask import delayed

    parts = ddf.to_delayed()
    # the arguments (the encoder holds every level) enter the graph once, untraversed
    payload = delayed(args, traverse=False)
    leaves = [delayed(_apply, pure=False)(fn, p, payload, i) for i, p in enumerate(parts)]
    client = _client()
    if client is None:
        tree = leaves
        while len(tree) > 1:
            tree = [delayed(_add)(tree[i], tree[i + 1]) if i + 1 < len(tree) else tree[i]
                    for i in range(0, len(tree), 2)]
        with _LocalProgress(len(leaves), desc, progress, {leaf.key for leaf in leaves}):
            return dask.compute(tree[0])[0]
    from distributed import as_completed

    from hierlmm.progress import progress as bar

    # a fixed tree of pairwise sums on the workers (the same result, to the bit, at every run)
    # down to _CLIENT_SUMS sums, which the client adds in order, one at a time: a sum of many
    # partitions of a crossed design is saturated (10⁸ rows fill 64 % of A21: 0.8 GB dense), and
    # a worker adding two such would hold both and the transfer of one; the client keeps only
    # those sums and the iterator over the leaves, so a partial is released once added
    futures = client.compute(leaves)
    tree = futures
    while len(tree) > _CLIENT_SUMS:
        tree = [client.submit(_add, tree[i], tree[i + 1], pure=False) if i + 1 < len(tree) else tree[i]
                for i in range(0, len(tree), 2)]
    show = bar(len(leaves), desc, progress)
    try:
        queue = as_completed(futures)
        del futures
        for _ in queue:
            show.update(1)
        total = None
        for i in range(len(tree)):
            part, tree[i] = tree[i].result(), None
            total = part if total is None else _add(total, part)
        return total
    finally:
        show.close()


def _apply(fn, part, args, index):
    return fn(part, *args, index)


def _add(a, b):
    return a + b


def _client():
    """The distributed Client in use, or None (Dask's local schedulers, also when the
    configured scheduler says so: ``dask.config.set(scheduler="threads")``)."""
    import dask

    if dask.config.get("scheduler", None) not in (None, "dask.distributed", "distributed"):
        return None
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


class _LocalProgress:
    """A progress bar over partitions for Dask's local schedulers (a scheduler callback)."""

    def __init__(self, total, desc, show, keys):
        self.total, self.desc, self.show, self.keys = total, desc, show, keys

    def __enter__(self):
        from dask.callbacks import Callback

        from hierlmm.progress import progress

        bar = self.bar = progress(self.total, self.desc, self.show)
        keys = self.keys

        class _CB(Callback):
            def _posttask(self, key, result, dsk, state, worker_id):
                if key in keys:
                    bar.update(1)

        self.cb = _CB()
        self.cb.__enter__()
        return self

    def __exit__(self, *exc):
        self.cb.__exit__(*exc)
        self.bar.close()


def build_partitioned_design(formula: str, ddf, residual=None, formulation: str = "hierarchical", weights=None,
                             offset=None, progress: bool | None = None) -> Design:
    """The row-less :class:`~hierlmm.design.Design` of ``formula`` on a Dask DataFrame, with
    the reduced cross-product as its ``source`` (see the module's docstring)."""
    if residual is not None or formulation != "hierarchical":
        raise HierlmmError("a model on a Dask DataFrame is fitted from its cross-product, which needs independent "
                           "residuals and the hierarchical formulation: residual= and formulation='marginal' work "
                           "on a pandas DataFrame (the per-group engine needs every group's rows)")
    for what, value in (("weights", weights), ("offset", offset)):
        if value is not None and not isinstance(value, str):
            raise DataError(f"{what}= on a Dask DataFrame must be a column name (an array cannot be aligned with "
                            "the partitions)")
    parsed = parse_formula(formula)
    learned = _LEARNED.search(formula)
    if learned:  # levels or knots learned from the data: the prototype would learn them
        raise FormulaError(
            f"formula {formula!r}: {learned.group(1)}() learns its {'knots' if learned.group(1) == 'ns' else 'levels'} "
            "from the whole data; on a Dask DataFrame make the column first ("
            + ("ddf['f'] = ddf.x.astype('category').cat.as_known(), reordered as you want"
               if learned.group(1) != "ns" else "the spline's columns computed with knots you choose")
            + ") and use it in the formula")
    meta = ddf._meta
    duplicated = sorted({str(c) for c in meta.columns[meta.columns.duplicated()]})
    if duplicated:
        raise DataError(f"data has duplicated column name(s) {', '.join(map(repr, duplicated))}: "
                        "rename them so that each column has one name")
    for what, value in (("weights", weights), ("offset", offset)):
        if value is not None and value not in meta.columns:
            raise DataError(f"{what}={value!r} is not a column of the data; the data has "
                            f"{', '.join(map(str, meta.columns))}")
        if value is not None and (not pd.api.types.is_numeric_dtype(meta[value])
                                  or pd.api.types.is_bool_dtype(meta[value])):
            raise DataError(f"{what} column {value!r} is not numeric (dtype {meta[value].dtype})")
    used, covariates = used_columns(parsed, meta.columns)
    columns = [c for c in meta.columns if c in used]
    enc_columns = columns + [c for c in (weights, offset) if c is not None and c not in columns]
    ddf = ddf[enc_columns]  # only these columns are read
    _check_column_types(meta, columns, parsed.response, covariates)
    grouping = {f for s in parsed.random for f in s.factors}
    factor_cols = [c for c in columns if c in grouping or (
        c != parsed.response and (not pd.api.types.is_numeric_dtype(meta[c]) or pd.api.types.is_bool_dtype(meta[c])))]
    for c in factor_cols:
        if c in grouping and pd.api.types.is_float_dtype(meta[c]):
            raise DataError(f"grouping variable {c!r} is a float column; on a Dask DataFrame make it integer or "
                            f"categorical (ddf[{c!r}] = ddf[{c!r}].astype('int64'))")
    interactions = sorted({s.factors for s in parsed.random if len(s.factors) > 1})
    known = {c: meta[c].dtype.categories for c in factor_cols if _known(meta[c].dtype)}
    if len(known) < len(factor_cols) or interactions:
        found = _compute(ddf[factor_cols], _present, (factor_cols, interactions), "levels", progress)
        levels = {c: _order(found.values[c], meta[c].dtype, c) for c in factor_cols}
        combos = found.combos
    else:
        levels, combos = dict(known), {}
    ordered = {c for c in factor_cols if isinstance(meta[c].dtype, pd.CategoricalDtype) and meta[c].dtype.ordered}
    premap = None
    while True:
        enc = _encoder(parsed, meta, enc_columns, columns, levels, ordered, combos, weights, offset)
        premap = _premap(ddf, enc) if premap is None else premap
        enc.premap = premap
        total = _compute(ddf, _partial, (enc,), "cross-product", progress)
        if all(np.all(count > 0) for count in total.counts.values()):
            break
        # levels no complete row uses (unused categories, levels only in incomplete rows):
        # encode again without them, as in memory
        combos = {f: _used_combinations(c, f, levels, total.counts[f]) for f, c in combos.items()}
        levels = {c: levels[c][total.counts[c] > 0] for c in levels}
    if total.cp is None:
        raise DataError("no complete rows: every row has a missing value in a variable of the formula")
    return _finish(enc, total, ddf)


def _premap(ddf, enc: Encoder, max_partitions: int = 8) -> tuple | None:
    """``Encoder.premap`` from the first partition with complete rows (of the first few): with
    the intercept as X's first column, ``X̃₀ = X R₀⁻¹`` centres every other column at its mean
    there (``R₀ = I + e₀μ'``, unit upper triangular: dropping an aliased column of X̃₀ drops the
    same covariate) and ``β₀ = ȳ e₀`` the response. ``None`` (raw sums) without an intercept."""
    if enc.design.all_fixef_names[:1] != ["(Intercept)"]:
        return None
    for i in range(min(ddf.npartitions, max_partitions)):
        frame, _ = enc.prepare(ddf.partitions[i].compute())
        if len(frame):
            d = enc.rows(frame)
            p = d.X.shape[1]
            R0 = np.eye(p)
            R0[0, 1:] = d.X[:, 1:].mean(axis=0)
            b0 = np.zeros(p)
            b0[0] = float(np.mean(d.y - (0.0 if d.offset is None else d.offset)))
            return R0, b0
    return None


def _encoder(parsed, meta, enc_columns, columns, levels, ordered, combos, weights, offset) -> Encoder:
    """The encoder: the fixed part's spec on a prototype with the global levels, and the
    row-less template of the terms."""
    proto = _prototype(meta, columns, levels, ordered)
    logical = logical_columns(proto)
    fixed_formula = to_formulaic(parsed.fixed_formula, ordered, logical)
    with warnings.catch_warnings():  # the prototype's made-up values (log(1), scale of a constant)
        warnings.simplefilter("ignore", RuntimeWarning)
        mm = _model_matrix(fixed_formula, proto, "fixed part")
    _refuse_state(mm.model_spec, "the fixed part", levels, proto.columns)
    names = r_column_names(mm.rhs, fixed_formula, logical)
    plain = plain_fixed(parsed.response, parsed.fixed, proto)
    groupings, terms = {}, []
    for spec in parsed.random:
        present = None
        if len(spec.factors) > 1:
            present = _combination_codes(combos[spec.factors], spec.factors, levels)
            labels = _combination_labels(present, spec.factors, levels)
        else:
            labels = [level_label(v) for v in levels[spec.factors[0]]]
        groupings[spec.factors] = present
        term = make_term(spec, proto, ordered, NoRows((0,)), labels)
        if term.model_spec is not None:
            _refuse_state(term.model_spec, f"random-effects term {spec.source}", levels, proto.columns)
        terms.append(term)
    terms = order_terms(terms)  # A's first block is the term with most levels, as in memory
    template = Design(parsed=parsed, y=NoRows((0,)), X=NoRows((0, len(names))), fixef_names=names, dropped_columns=[],
                      terms=terms, data=proto.iloc[:0][columns], n_missing=0, formulaic_spec=mm.rhs.model_spec,
                      fixed_formula=fixed_formula, logical=frozenset(logical),
                      all_fixef_names=names, treatment_formula=to_formulaic(parsed.fixed_formula, logical=logical) if ordered else None,
                      weights_argument=weights, offset_argument=offset)
    return Encoder(columns=enc_columns, levels=levels, ordered=ordered, parsed=parsed, spec=mm.model_spec,
                   design=template, groupings=groupings, weights=weights, offset=offset,
                   dtypes={c: meta[c].dtype for c in enc_columns}, plain=plain is not None and plain[2] == names)


def _prototype(meta, columns, levels, ordered) -> pd.DataFrame:
    """A few rows with the data's types and, in every factor column, its global levels."""
    from dask.dataframe.utils import meta_nonempty

    proto = meta_nonempty(meta)[columns]
    proto = pd.concat([proto] * (_PROTO_ROWS // max(len(proto), 1) + 1), ignore_index=True).iloc[:_PROTO_ROWS]
    for c, cats in levels.items():
        if len(cats) == 0:
            raise DataError("no complete rows: every row has a missing value in a variable of the formula")
        proto[c] = pd.Categorical(np.resize(np.asarray(cats, dtype=object), len(proto)), categories=cats,
                                  ordered=c in ordered)
    return proto


_LEARNED = re.compile(r"(?<![\w.`])(as\.factor|factor|relevel|ns)\s*\(")


def _refuse_state(spec, where: str, levels, columns) -> None:
    """Refuse what an encoder built on the prototype would get wrong: transforms with state
    learned from the data, and numeric columns used as factors."""
    specs = [spec.lhs, spec.rhs] if hasattr(spec, "lhs") else [spec]
    for s in specs:
        if s.transform_state:
            raise FormulaError(
                f"{where} uses {', '.join(map(repr, s.transform_state))}, whose state (a mean, an SD, a basis) is "
                "learned from the whole data; on a Dask DataFrame compute that column first (e.g. "
                "ddf['x_s'] = (ddf.x - mean) / sd with mean and sd computed by Dask) and use it in the formula")
        for key, (kind, _state) in s.encoder_state.items():
            if getattr(kind, "value", kind) != "categorical":
                continue
            cols = _required(key, where, columns) & set(columns)
            numeric = sorted(c for c in cols if c not in levels)
            if numeric:
                raise FormulaError(
                    f"{where} uses {key!r}, a numeric column as a factor; on a Dask DataFrame make the column "
                    f"categorical first (ddf[{numeric[0]!r}] = ddf[{numeric[0]!r}].astype('category')) so that "
                    "its levels are known before the partitions are encoded")


def _product_codes(codes: list[np.ndarray], sizes: list[int]) -> np.ndarray:
    """The code of each row's combination of levels in the product of the factors' levels
    (the first factor slowest: R's order of ``a:b``)."""
    if float(np.prod([float(s) for s in sizes])) >= 2.0**62:
        raise DataError(f"an interaction of grouping factors with {' x '.join(map(str, sizes))} levels has more "
                        "combinations than a 64-bit code holds; on Dask data combine the factors into one column "
                        "first (e.g. a string key), or fit the rows in memory")
    out = np.zeros(len(codes[0]) if codes else 0, dtype=np.int64)
    for c, size in zip(codes, sizes):
        out = out * size + np.asarray(c, dtype=np.int64)
    return out


def _combination_product_codes(combos: pd.DataFrame, factors, levels) -> np.ndarray:
    """:func:`_product_codes` of the rows of ``combos`` (the factors' values)."""
    return _product_codes([pd.Categorical(combos[f], categories=levels[f]).codes for f in factors],
                          [len(levels[f]) for f in factors])


def _used_combinations(combos: pd.DataFrame, factors, levels, counts) -> pd.DataFrame:
    """The combinations of an interaction that complete rows use (``counts`` per level)."""
    code = _combination_product_codes(combos, factors, levels)
    return combos[counts[np.searchsorted(_combination_codes(combos, factors, levels), code)] > 0]


def _combination_codes(combos: pd.DataFrame, factors, levels) -> np.ndarray:
    """The sorted product codes of the combinations present (an interaction's levels)."""
    code = _combination_product_codes(combos, factors, levels)
    return np.unique(code[code >= 0])


def _combination_labels(present, factors, levels) -> list[str]:
    digits = np.unravel_index(present, [len(levels[f]) for f in factors])
    return [join_labels([level_label(levels[f][i]) for f, i in zip(factors, idx)]) for idx in zip(*digits)]


def _finish(enc: Encoder, total: Partial, ddf) -> Design:
    """Aliased columns dropped, ``X`` scaled, the terms checked: the row-less design."""
    cp, n = total.cp, total.n
    names = enc.design.all_fixef_names
    R = total.R
    norms = np.linalg.norm(R, axis=0)
    keep = ~aliased(R, names.index("(Intercept)") if "(Intercept)" in names else None)
    dropped = [nm for nm, k in zip(names, keep) if not k]
    if dropped:
        warn(f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} column(s): "
                      f"{', '.join(dropped)}", RankDeficiencyWarning)
    cont = np.flatnonzero(~total.binary & keep)
    if len(cont) and n > 1:
        sumsq = norms[cont] ** 2
        var = np.maximum(sumsq - total.colsum[cont] ** 2 / n, 0.0) / (n - 1)
        warn_scales([names[j] for j in cont], np.sqrt(var))
    # drop aliased columns from A, then map X and y to crossprod's internal coordinates
    q_rest = cp.q_rest
    rows = np.concatenate([np.arange(q_rest), q_rest + np.flatnonzero(keep), [cp.r - 1]])
    A22 = cp.A22[np.ix_(rows, rows)]
    A21 = cp.A21[rows]
    p = int(keep.sum())
    q1 = cp.A11.shape[0] * cp.A11.shape[1]
    nnz = A21.nnz if sp.issparse(A21) else np.count_nonzero(A21)
    saturated = not sp.issparse(A21) and nnz > _SATURATED * A21.size  # the factorisation copies it dense anyway
    if sparse_a21(nnz, len(rows), q1) and not saturated:
        A21 = sp.csr_matrix(A21)
    elif sp.issparse(A21):
        A21 = A21.toarray()
    R0, b0 = (cp.x_map[np.ix_(keep, keep)], cp.y_shift[keep])  # the partitions' premap (or I, 0)
    raw = CrossProduct(cp.A11, A21, A22, q_rest, p, n, R0, b0, cp.log_weights)
    ix = q_rest + np.arange(p)
    R0inv = scipy.linalg.solve_triangular(R0, np.eye(p), lower=False)
    x_map = fixed_map(A22[np.ix_(ix, ix)], n, lambda: scipy.linalg.qr(R[:, keep] @ R0inv, mode="r")[0])
    reduced = raw.mapped(x_map)
    # the in-memory checks of the response, on the reduced sums
    if total.ystats[2] == 0:
        raise constant_response(enc.parsed.response, float(total.ystats[1]))
    check_residual(float(reduced.A22[-1, -1]), float(raw.A22[-1, -1]))
    tmpl = enc.design
    terms = [dataclasses.replace(t, codes=NoRows((n,)), Z=NoRows((n, t.k))) for t in tmpl.terms]
    for t in terms:
        check_term(t, n)
    kept = [nm for nm, k in zip(names, keep) if k]
    design = dataclasses.replace(
        tmpl, y=NoRows((n,)), X=NoRows((n, p)), fixef_names=kept, dropped_columns=dropped, terms=terms,
        n_missing=total.n_missing, weights=None if enc.weights is None else NoRows((n,)),
        offset=None if enc.offset is None and not enc.parsed.offsets else NoRows((n,)))
    design.source = Source(frame=ddf, cp=reduced, encoder=enc, n_partitions=ddf.npartitions,
                           y_sd=float(np.sqrt(total.ystats[2] / n)))
    return design


# ----------------------------------------------------------------------------- the source
@dataclass(eq=False)
class Source:
    """Where a row-less design's rows are: the Dask frame, the reduced ``A``, the encoder."""

    frame: object
    cp: CrossProduct
    encoder: Encoder
    n_partitions: int
    y_sd: float  # the response's SD (n denominator), as np.std of the rows in memory
    _forms: dict = field(default_factory=dict, repr=False)

    def crossproduct(self, sparse: bool | None = None) -> CrossProduct:
        """The reduced ``A``; ``sparse`` asks for ``A21`` in that storage (converted once)."""
        cp = self.cp
        if sparse is None or bool(sparse) == cp.a21_sparse:
            return cp
        if sparse not in self._forms:
            A21 = sp.csr_matrix(cp.A21) if sparse else cp.A21.toarray()
            self._forms[sparse] = dataclasses.replace(cp, A21=A21)
        return self._forms[sparse]

    def per_row(self, fit, what: str, kind: str, scaled: bool = False):
        """Fitted values or residuals as a lazy Dask Series, one partition at a time."""
        design = dataclasses.replace(fit.design, source=None)
        meta = pd.Series(dtype=float, name=what)
        return self.frame.map_partitions(_per_row, self.encoder, design, fit.solution.beta, fit.solution.b, what,
                                         kind, fit.sigma if scaled else None, meta=meta)


def _per_row(part, enc: Encoder, design: Design, beta, b, what, kind, sigma):
    from hierlmm.newdata import predict_frame

    frame, _ = enc.prepare(part)
    if len(frame) == 0:
        return pd.Series(np.zeros(0), index=frame.index, name=what)
    mu = predict_frame(design, beta, b, frame, kind == "conditional", True)
    if what == "fitted":
        return mu.rename("fitted")
    r = enc.response(frame) - mu.to_numpy()
    if sigma is not None:
        r = r / sigma
        w = enc.prior_weights(frame)
        if w is not None:
            r = r * np.sqrt(w)
    return pd.Series(r, index=frame.index, name="residuals")


def check_parquet_files(formula: str, path, weights=None, offset=None) -> None:
    """Every Parquet file under ``path`` (a file, a directory or a glob; any fsspec URL) is
    readable and has every column the model needs, checked from the files' footers (their
    metadata: no rows are read). A truncated or empty file, or one that lacks a column,
    raises a :class:`~hierlmm.errors.DataError` naming that file, before Dask meets it in the
    middle of the reduction."""
    import fsspec
    import pyarrow.parquet as pq

    fs, _, paths = fsspec.core.get_fs_token_paths(path)
    files = []
    for p in paths:
        if fs.isdir(p):
            files += sorted(f for f in fs.find(p) if not f.rsplit("/", 1)[-1].startswith(("_", ".")))
        else:
            files.append(p)
    if not files:
        raise DataError(f"no Parquet files found at {path}")
    needed = None
    for f in files:
        try:
            with fs.open(f, "rb") as handle:
                names = pq.ParquetFile(handle).schema_arrow.names
        except Exception as exc:  # pyarrow's ArrowInvalid and OSError: truncated, empty, not Parquet
            raise DataError(f"cannot read {f} as Parquet: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                            ) from None
        if needed is None:
            parsed = parse_formula(formula)
            extra = [c for c in (weights, offset) if isinstance(c, str)]
            needed, _ = used_columns(parsed, names, extra)
        missing = sorted(c for c in needed if c not in names)
        if missing:
            raise DataError(f"{f} has no column(s) {', '.join(map(repr, missing))}, which the model needs (the "
                            f"first file has them); every file must have the same columns")
