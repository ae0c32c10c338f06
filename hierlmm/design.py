"""Stage 2 of the pipeline (lme4's ``lFormula``): from formula and data to the design.

:func:`build_design` checks the data against the formula, drops incomplete rows, builds
the response ``y``, the fixed-effects model matrix ``X`` (through formulaic) and one
:class:`~hierlmm.reterms.ReTerm` per random-effects term, sorted by decreasing number of
levels (lme4's order, which also puts the largest block first in the blocked Cholesky).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hierlmm.errors import DataError, FormulaError, RankDeficiencyWarning, ScaleWarning, warn
from hierlmm.covariance import make_covariance
from hierlmm.formula import ParsedFormula, RandomSpec, parse_formula
from hierlmm.plain import plain_columns, plain_fixed, plain_variables
from hierlmm.rfactors import derive_factors
from hierlmm.safety import check_formula
from hierlmm.reterms import ReTerm, term_matrix
from hierlmm.rnames import column_names
from hierlmm.rsyntax import INTERCEPT_COLUMN, formula_context, number_objects, numeric_view, python_attribute, to_formulaic

__all__ = ["Design", "NoRows", "build_design"]

_PANDAS_MAJOR = int(pd.__version__.split(".")[0])


class NoRows:
    """Stands in for a per-row array (``y``, ``X``, a term's ``Z`` or codes, weights) of a design
    whose rows are not in memory (a Dask DataFrame, :mod:`hierlmm.partitioned`): it knows its
    shape, and anything that reads its values raises a :class:`~hierlmm.errors.DataError` that
    says so. A method that needs the rows can therefore never run on an empty or stale array."""

    __array_ufunc__ = None  # numpy defers to the operators below, which refuse

    def __init__(self, shape):
        self.shape = tuple(int(s) for s in shape)
        self.ndim = len(self.shape)

    def _refuse(self, *args, **kwargs):
        raise DataError(
            "this needs the data's rows, and the model's rows are in a Dask DataFrame, not in memory. On "
            "Dask data hierlmm works on the reduced cross-product: fit(), summary(), fixef, vcov, varcorr, "
            "ranef() and ranef_posterior(), coef_table(ddf='satterthwaite'), confint(method='profile' or "
            "'wald'), sample(); fitted() and residuals() are lazy dask Series. Kenward-Roger, anova() and "
            "emmeans() (Type III contrasts and reference grids), bootstrap, simulate, refit, r2 and plots of "
            "the rows need every row: fit those on a sample of the data in pandas")

    def __array__(self, *args, **kwargs):
        self._refuse()

    def __len__(self):
        return self.shape[0]

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        self._refuse()

    __getitem__ = __iter__ = __matmul__ = __rmatmul__ = __mul__ = __rmul__ = __add__ = __radd__ = _refuse
    __sub__ = __rsub__ = __truediv__ = __rtruediv__ = __pow__ = __neg__ = __eq__ = __lt__ = __gt__ = _refuse
    __hash__ = object.__hash__

    def __reduce__(self):
        return (NoRows, (self.shape,))

    def __repr__(self) -> str:
        return f"NoRows{self.shape}"


@dataclass(eq=False)
class Design:
    """The complete model specification: everything the deviance needs (the fixed part, the
    random terms, the residual structure and the formulation), and the labels the results need.

    Attributes
    ----------
    parsed : ParsedFormula
    y : ndarray, shape (n,)
    X : ndarray, shape (n, p)
        Fixed-effects model matrix, aliased columns dropped.
    fixef_names : list of str
    dropped_columns : list of str
        Columns of X dropped as linear combinations of earlier ones.
    terms : list of ReTerm
        Sorted by decreasing number of levels.
    data : DataFrame
        The rows used (complete cases), with their original index.
    n_missing : int
        Number of rows dropped for missing values (lme4's ``na.action``).
    residual : ResidualCorrelation or None
        The residuals' correlation structure (``None``: independent, ``σ²I``).
    variance : VarIdent or None
        The residuals' variance function (``None``: one residual SD σ).
    formulation : {"hierarchical", "marginal"}
        ``"marginal"``: only ``V = ZDZ' + σ²R`` must be positive definite (D may be indefinite).
    weights : ndarray, shape (n,), or None
        Prior weights ``w_i`` (lme4's ``weights=``): ``Var(ε_i) = σ²/w_i``.
    offset : ndarray, shape (n,), or None
        A known part of the linear predictor (``offset(z)`` terms and ``offset=``):
        ``E(y | b) = o + Xβ + Zb``.

    With weights or an offset the likelihood is that of the whitened model
    (:meth:`whitened`) ``W^½(y − o) = W^½X β + W^½Z b + ε̃``, ``ε̃ ~ N(0, σ²I)``, an ordinary
    LMM, times the Jacobian ``|W|^½``: ``−2ℓ`` is the whitened model's minus ``Σ log w_i``
    (lme4's deviance and log-likelihood).
    """

    parsed: ParsedFormula
    y: np.ndarray
    X: np.ndarray
    fixef_names: list[str]
    dropped_columns: list[str]
    terms: list[ReTerm]
    data: pd.DataFrame
    n_missing: int
    # formulaic's ModelSpec of X (before dropping aliased columns); None where X was built
    # without formulaic (hierlmm.plain) until something asks for it (fixed_spec)
    formulaic_spec: object = None
    fixed_formula: str = ""  # the fixed part as given to formulaic (R's meaning: hierlmm.rsyntax)
    logical: frozenset = frozenset()  # boolean columns, factors where used as terms (R's logicals)
    all_fixef_names: list[str] | None = None  # names of X's columns before dropping
    # the fixed part with every factor in treatment coding, where X is coded otherwise
    # (ordered factors): lmerTest builds Type III hypotheses there and maps them to X
    treatment_formula: str | None = None
    derived: tuple = ()  # columns made from factor()/relevel() calls (hierlmm.rfactors.Derived)
    residual: object = None
    variance: object = None  # a variance function of the residuals (hierlmm.residual.VarIdent)
    formulation: str = "hierarchical"
    weights: np.ndarray | None = None
    offset: np.ndarray | None = None
    weights_argument: object = None  # weights= as given: a column name, an array, or None
    offset_argument: object = None  # offset= as given: a column name, an array, or None
    # rows beyond memory: the partitioned source (hierlmm.partitioned.Source) holding the Dask
    # frame and the reduced cross-product; y, X, the terms' Z and codes are then NoRows
    source: object = None

    @property
    def fixed_spec(self):
        """formulaic's ModelSpec of the fixed part (before dropping aliased columns), which
        re-encodes new data and names the terms of ``X``'s columns. A design of plain columns
        (:mod:`hierlmm.plain`) builds it on first use, from the rows the design holds."""
        if self.formulaic_spec is None:
            self.formulaic_spec = _model_matrix(self.fixed_formula, self.data, "fixed part").rhs.model_spec
        return self.formulaic_spec

    @property
    def rows(self) -> bool:
        """The rows are in memory (``False`` for a model on a Dask DataFrame)."""
        return self.source is None

    @property
    def n(self) -> int:
        return self.y.shape[0]

    @property
    def p(self) -> int:
        return self.X.shape[1]

    @property
    def q(self) -> int:
        return sum(t.q for t in self.terms)

    @property
    def n_theta(self) -> int:
        return sum(t.n_theta for t in self.terms)

    def theta_slices(self) -> list[slice]:
        """The slice of θ that belongs to each term."""
        out, start = [], 0
        for t in self.terms:
            out.append(slice(start, start + t.n_theta))
            start += t.n_theta
        return out

    @property
    def response_sd(self) -> float:
        """The SD of the response (``n`` denominator) on the data's scale (no weights, no
        offset); of a design on a Dask DataFrame from the sums of its partitions."""
        return float(np.std(self.y)) if self.rows else self.source.y_sd

    @property
    def response(self) -> str:
        return self.parsed.response

    def with_response(self, y: np.ndarray) -> Design:
        """The same design with another response (simulate, bootstrap): everything else shared."""
        y = np.asarray(y, dtype=float)
        if y.shape != self.y.shape:
            raise DataError(f"the new response has shape {y.shape}, the design's {self.y.shape}")
        return dataclasses.replace(self, y=y)

    @property
    def log_weights(self) -> float:
        """``Σ log w_i`` (0 without weights): ``−2ℓ`` of the weighted model is the whitened
        model's minus this."""
        return 0.0 if self.weights is None else float(np.log(self.weights).sum())

    def whiten_response(self, y: np.ndarray) -> np.ndarray:
        """``W^½(y − o)``: a response of the model on the whitened scale."""
        y = np.asarray(y, dtype=float)
        if self.offset is not None:
            y = y - self.offset
        return y if self.weights is None else y * np.sqrt(self.weights)

    def whitened(self) -> Design:
        """The ordinary LMM with independent equal-variance residuals whose likelihood is this
        model's up to ``|W|^½``: ``y, X, Z`` replaced by ``W^½(y − o), W^½X, W^½Z``, no weights,
        no offset. ``self`` when there are neither (what every engine factorises)."""
        if self.weights is None and self.offset is None:
            return self
        cached = self.__dict__.get("_whitened")
        if cached is None:
            if self.weights is None:
                cached = dataclasses.replace(self, y=self.y - self.offset, offset=None)
            else:
                sw = np.sqrt(self.weights)
                cached = dataclasses.replace(
                    self, y=self.whiten_response(self.y), X=np.asfortranarray(self.X * sw[:, None]),
                    terms=[dataclasses.replace(t, Z=t.Z * sw[:, None]) for t in self.terms], weights=None,
                    offset=None)
            self.__dict__["_whitened"] = cached
        return cached

    def with_offset(self, j: int, value: float) -> Design:
        """β_j fixed at ``value``: column j of X dropped and ``value · x_j`` subtracted from y
        (a fixed effect's profile)."""
        names = [n for i, n in enumerate(self.fixef_names) if i != j]
        if not self.rows:  # only the layout changes; the cross-product does the rest
            return dataclasses.replace(self, X=NoRows((self.n, self.p - 1)), fixef_names=names)
        return dataclasses.replace(self, y=self.y - value * self.X[:, j], X=np.delete(self.X, j, axis=1),
                                   fixef_names=names)

    def offset_on(self, data: pd.DataFrame) -> np.ndarray | None:
        """The offset on (new) data: the formula's ``offset()`` terms plus the ``offset=``
        column (``None`` when the model has no offset)."""
        if self.offset is None:
            return None
        extra = None
        if self.offset_argument is not None:
            if not isinstance(self.offset_argument, str):
                raise DataError("the model's offset= was given as an array, which new data cannot supply: give it "
                                "as a column name of the data to predict on new data")
            if self.offset_argument not in data.columns:
                raise DataError(f"new data has no column {self.offset_argument!r}, the model's offset")
            extra = data[self.offset_argument].to_numpy(dtype=float)
        return _offset(self.parsed, data, extra)

    def fixed_matrix(self, data: pd.DataFrame) -> np.ndarray:
        """``X`` for (new) data, with the fit's coding, columns and aliased columns dropped."""
        data = numeric_view(data, str(self.fixed_spec.formula))
        mm = self.fixed_spec.get_model_matrix(data, na_action="ignore", context=formula_context())
        mm.columns = self.all_fixef_names  # the spec's columns, in its order, under R's names
        return np.asarray(mm[self.fixef_names], dtype=float)


def design_attribute(name: str) -> property:
    """A read-only property of a model or a fit that is its design's (one place for the
    residual structure and the formulation)."""
    return property(lambda self: getattr(self.design, name),
                    doc=f"The design's ``{name}`` (see :class:`Design`).")


def _required(expr: str, where: str, columns=frozenset()) -> set[str]:
    """The variables ``expr`` (R syntax) needs.

    formulaic's ``required_variables`` misses the arguments of its stateful transforms
    (``poly(x, 2)``, ``center(x)``) and reads R's dotted names (``my.var``, raw, backquoted or
    in ``Q('my.var')``) as attribute accesses (``my``). So the names are also taken from the
    expression's tokens: every dotted one (a name formulaic reports that only prefixes one is
    dropped), and every other one that is a column of the data."""
    plain = plain_variables(expr)
    if plain is not None:
        return plain
    from formulaic import Formula

    try:
        functions = set(formula_context())  # formulaic reads a function it does not know as a variable
        found = {"Intercept" if v == INTERCEPT_COLUMN else v for v in Formula(to_formulaic(expr)).required_variables
                 if v not in functions or v in columns}
    except Exception as exc:  # formulaic's parser errors
        raise FormulaError(f"cannot parse {where} {expr!r}: {exc}") from None
    tokens = {next(g for g in m.groups() if g) for m in _NAME.finditer(expr)}
    dotted = {t for t in tokens if "." in t and (t in columns or not python_attribute(t))}
    return ({v for v in found if not any(d.startswith(v + ".") for d in dotted)} | dotted
            | (tokens & set(columns)))


# a name: bare (not a call), backquoted, or the string of Q('...') / Q("...")
_NAME = re.compile(r"(?<![\w.`'\"])([A-Za-z.][\w.]*)(?![\w.]|\s*\()|`([^`]+)`|Q\(\s*['\"]([^'\"]+)['\"]\s*\)")


def _model_matrix(spec: str, data: pd.DataFrame, where: str):
    from formulaic import model_matrix

    try:
        return model_matrix(spec, numeric_view(data, spec), na_action="ignore", context=formula_context())
    except Exception as exc:
        raise FormulaError(f"cannot evaluate {where} {spec!r}: {exc}") from None


def _check_column_types(data: pd.DataFrame, cols, response: str, covariates) -> None:
    """One-line messages for columns a model cannot use as they are: a response that is not
    numeric, date-time covariates."""
    if response in cols and not (pd.api.types.is_numeric_dtype(data[response]) or number_objects(data[response])):
        raise DataError(f"response {response!r} is not numeric (dtype {data[response].dtype}); "
                        f"convert it, e.g. with pd.to_numeric(data[{response!r}])")
    for c in cols:
        if (c in covariates or c == response) and pd.api.types.is_complex_dtype(data[c]):
            raise DataError(f"column {c!r} holds complex numbers (dtype {data[c].dtype}); a model's columns must be "
                            f"real: use data[{c!r}].real or .imag, or abs()")
        if c in covariates and (pd.api.types.is_datetime64_any_dtype(data[c])
                                or pd.api.types.is_timedelta64_dtype(data[c])):
            raise DataError(f"column {c!r} holds dates or times (dtype {data[c].dtype}); use a number, e.g. "
                            f"days since the start, (data[{c!r}] - data[{c!r}].min()).dt.days")


def _drop_unused_categories(col: pd.Series) -> pd.Series | None:
    """``col`` without its unused categories (``None`` if all are used), in ``O(n)``: pandas'
    ``remove_unused_categories`` sorts the codes (4 s of a 7 s design at 10⁷ rows)."""
    codes = col.cat.codes.to_numpy()
    categories = col.cat.categories
    used = np.bincount(codes[codes >= 0], minlength=len(categories)) > 0
    if used.all():
        return None
    new = (np.cumsum(used) - 1).astype(codes.dtype)
    codes = np.where(codes >= 0, new[codes], codes)
    return pd.Series(pd.Categorical.from_codes(codes, categories=categories[used], ordered=col.cat.ordered),
                     index=col.index, name=col.name)


def level_label(value) -> str:
    """The label of a grouping factor's level, the same for the same value whatever the column's
    type: an integral number as an integer (``1``, ``1.0``, ``np.int8(1)`` and ``"1"`` are one
    level, as R's ``factor`` reads them), other numbers by ``repr``, a time by its ISO form
    (``2020-01-02`` for a date), anything else by ``str``."""
    if isinstance(value, (bool, np.bool_)):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, (pd.Timestamp, np.datetime64)):
        ts = pd.Timestamp(value)
        return ts.date().isoformat() if ts == ts.normalize() and ts.tz is None else ts.isoformat()
    return str(value)


def join_labels(parts) -> str:
    """One label of an interaction level ``a:b`` from its factors' labels (R's ``a:b``); a label
    that holds ``:`` is backquoted (its backquotes doubled), so that ``("a:b", "c")`` and
    ``("a", "b:c")`` stay two levels, where R's labels collide."""
    if len(parts) == 1:
        return parts[0]
    return ":".join(f"`{p.replace('`', '``')}`" if ":" in p else p for p in parts)


def factor_levels(col: pd.Series, name: str, where: str) -> tuple[np.ndarray, list[str]]:
    """Codes (``-1`` for missing) and labels of one grouping column, in R's order (a
    ``Categorical``'s own order, else sorted), values that are one level (:func:`level_label`)
    merged."""
    if pd.api.types.is_float_dtype(col) and not np.all(np.mod(col.dropna().to_numpy(), 1) == 0):
        raise DataError(
            f"grouping variable {name!r} in {where} holds non-integer numbers; "
            "a grouping factor must be categorical (convert it with astype('category'))"
        )
    if pd.api.types.is_complex_dtype(col):
        raise DataError(f"grouping variable {name!r} in {where} holds complex numbers")
    if isinstance(col.dtype, pd.CategoricalDtype):
        cat = col
    elif col.dtype == object and not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                                         for v in pd.unique(col.dropna())):
        # R reads a column of mixed values (1 and "1") as character: levels sorted by label
        cat = col.map(level_label, na_action="ignore").astype("category")
    else:
        cat = col.astype("category")  # sorted categories (numbers numerically)
    labels = [level_label(c) for c in cat.cat.categories]
    codes = cat.cat.codes.to_numpy().astype(np.int64)
    unique, first = np.unique(labels, return_index=True)
    if len(unique) < len(labels):  # 1 and "1", 1 and 1.0: one level, at its first place
        keep = np.sort(first)
        index = {labels[i]: j for j, i in enumerate(keep)}
        remap = np.array([index[lab] for lab in labels], dtype=np.int64)
        codes = np.where(codes >= 0, remap[np.maximum(codes, 0)], -1)
        labels = [labels[i] for i in keep]
    return codes, labels


def _grouping_codes(data: pd.DataFrame, spec: RandomSpec) -> tuple[np.ndarray, list[str]]:
    """Codes and labels of the grouping factor ``a`` or interaction ``a:b`` (R's order: the
    first factor slowest). The codes of an interaction are renumbered after each factor, so
    they stay below the number of rows however many levels the factors have (four factors of
    6e4 levels: 1.3e19 combinations, past int64)."""
    codes = np.zeros(len(data), dtype=np.int64)
    labels: list[tuple[str, ...]] = [()]
    for name in spec.factors:
        fcodes, lev = factor_levels(data[name], name, spec.source)
        combined = codes * len(lev) + fcodes  # < n · len(lev) <= n²: no overflow below 3e9 rows
        nlev = len(labels) * len(lev)
        if nlev <= 4 * len(codes) + 1024:  # O(n) relabelling without sorting
            present = np.bincount(combined, minlength=nlev) > 0
            used = np.flatnonzero(present)
            codes = (np.cumsum(present) - 1)[combined]
        else:
            used, codes = np.unique(combined, return_inverse=True)
        prev, cur = np.divmod(used, len(lev))
        labels = [labels[p] + (lev[c],) for p, c in zip(prev, cur)]
    labels = [join_labels(lab) for lab in labels]
    # int32 when the levels allow: 4 bytes a row per term fewer (the design holds the codes)
    return codes.astype(np.int32 if len(labels) < 2**31 else np.intp), labels


def aliased(R: np.ndarray, intercept: int | None) -> np.ndarray:
    """Which columns of ``X`` are linear combinations of earlier ones (lme4 drops them), from
    the R factor of ``X = QR`` (column j of ``R`` holds ``x_j``'s coordinates) and the index of
    the intercept column (``None`` without one).

    ``|R_jj|`` is the distance of column j from the span of the columns before it. It is a
    (relative) zero when below ``1e-7`` times the column's norm about its mean (with an
    intercept; else its norm), so a covariate of mean 1e10 and SD 1 beside the intercept counts
    as the covariate it is (R's ``qr`` measures it against its raw norm, 1e10·√n, and drops
    it), and also when below what the stored values carry (``1e3 ε`` times the raw norm:
    ``2x + 1e10`` beside ``x`` is aliased up to the rounding of its entries). Both norms come
    from ``R`` (orthogonal coordinates), not from sums of squares less squared sums, which
    cancel catastrophically for such a column."""
    p = R.shape[1]
    R = R[:p] if R.shape[0] >= p else np.vstack([R, np.zeros((p - R.shape[0], p))])
    diag = np.abs(np.diag(R))
    raw = np.linalg.norm(R, axis=0)
    norms = raw
    if intercept is not None:
        one = R[:, intercept]
        scale = one @ one
        if scale > 0:
            norms = np.linalg.norm(R - np.outer(one, one @ R) / scale, axis=0)
            norms[intercept] = raw[intercept]
    return ~((diag > 1e-7 * np.maximum(norms, 1e-300)) & (diag > 1e3 * np.finfo(float).eps * raw))


def _drop_aliased(X: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """Drop columns that are linear combinations of earlier ones (:func:`aliased`)."""
    import scipy.linalg

    if X.shape[1] == 0:
        return X, names, []
    R = scipy.linalg.qr(X, mode="r", check_finite=False)[0]
    drop = aliased(R, names.index("(Intercept)") if "(Intercept)" in names else None)
    if not drop.any():
        return X, names, []
    keep = ~drop
    dropped = [n for n, k in zip(names, keep) if not k]
    return X[:, keep], [n for n, k in zip(names, keep) if k], dropped


def _state_from_all_rows(formula: str, data: pd.DataFrame, frame: pd.DataFrame, transforms):
    """The fixed part's matrices on the complete rows ``frame``, with the state of its stateful
    ``transforms`` (``poly(x, 2)``'s basis, ``scale(x)``'s mean and SD) learned from every row
    where their arguments are present, as R does: ``model.frame`` evaluates ``poly(x, 2)`` on the
    whole data and drops the rows with a missing response or factor afterwards (lme4 then fits
    that basis; learned from the complete rows alone, the basis differs, and so do the
    coefficients and the REML criterion). Factors keep the complete rows' levels."""
    arguments = set().union(*(_required(t, "fixed part", data.columns) for t in transforms)) & set(data.columns)
    rows = data.loc[data[sorted(arguments)].notna().all(axis=1).to_numpy()] if arguments else data
    rows = rows.copy()
    for c in frame.columns:
        col = frame[c]
        if isinstance(col.dtype, pd.CategoricalDtype):
            rows[c] = pd.Categorical(rows[c], categories=col.cat.categories, ordered=col.cat.ordered)
        elif not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
            rows[c] = pd.Categorical(rows[c], categories=sorted(col.unique()))
    spec = _model_matrix(formula, rows, "fixed part").model_spec
    try:
        return spec.get_model_matrix(numeric_view(frame, formula), na_action="ignore", context=formula_context())
    except Exception as exc:
        raise FormulaError(f"cannot evaluate fixed part {formula!r}: {exc}") from None


def _formulaic_fixed(parsed: ParsedFormula, fixed_formula: str, data: pd.DataFrame, frame: pd.DataFrame,
                     n_missing: int, logical) -> tuple[np.ndarray, np.ndarray, list[str], object]:
    """``(y, X, R's names of X's columns, formulaic's ModelSpec)`` of the fixed part through
    formulaic, on the complete rows ``frame`` (stateful transforms learned from ``data``'s rows
    where their arguments are present: :func:`_state_from_all_rows`)."""
    mm = _model_matrix(fixed_formula, frame, "fixed part")
    if n_missing and mm.rhs.model_spec.transform_state:
        mm = _state_from_all_rows(fixed_formula, data, frame, mm.rhs.model_spec.transform_state)
    y = np.asarray(mm.lhs, dtype=float)
    if y.ndim == 2:
        if y.shape[1] != 1:
            raise FormulaError(
                f"response {parsed.response!r} must be one numeric column, got {y.shape[1]} "
                f"columns ({', '.join(mm.lhs.columns)})"
            )
        y = y[:, 0]
    X = np.asarray(mm.rhs, dtype=float)
    return y, X, r_column_names(mm.rhs, fixed_formula, logical), mm.rhs.model_spec


def _check_scales(X: np.ndarray, names: list[str], tol: float = 1e3) -> None:
    """lme4's ``checkScaleX``: warn when the SDs of the non-indicator columns differ by more
    than ``tol`` from each other or from 1. The fit itself does not need it (``X`` is scaled
    internally, see :mod:`hierlmm.crossprod`), but estimates in units 1e8 apart are hard to
    read and the derivative-based inference works on their scale."""
    cont = [j for j in range(X.shape[1]) if not np.all(np.isin(X[:, j], (0.0, 1.0)))]
    if not cont or X.shape[0] < 2:
        return
    warn_scales([names[j] for j in cont], X[:, cont].std(axis=0, ddof=1), tol)


def warn_scales(names: list[str], sd: np.ndarray, tol: float = 1e3) -> None:
    """The warning of :func:`_check_scales`, given the non-indicator columns and their SDs."""
    if not np.any(sd > 0):
        return
    logs = np.log(sd[sd > 0])
    if np.ptp(logs) > np.log(tol) or np.max(np.abs(logs)) > np.log(tol):
        listed = ", ".join(f"{name} (sd {s:.3g})" for name, s in zip(names, sd))
        warn(
            f"Some predictor variables are on very different scales: {listed}; consider rescaling",
            ScaleWarning,
        )


def _argument_column(value, data: pd.DataFrame, what: str) -> tuple[pd.Series | None, str]:
    """``weights=`` / ``offset=`` (a column name or one number per row) as a Series aligned
    with ``data``, and how to name it in messages."""
    if value is None:
        return None, ""
    if isinstance(value, str):
        if value not in data.columns:
            raise DataError(f"{what}={value!r} is not a column of the data; the data has "
                            f"{', '.join(map(str, data.columns))}")
        col, name = data[value], f"{what} column {value!r}"
    else:
        from hierlmm.validate import aligned

        arr = np.asarray(aligned(value, data.index, what))
        if arr.ndim != 1 or len(arr) != len(data):
            raise DataError(f"{what} must be a column name or one value per row of the data ({len(data)} rows), "
                            f"got shape {arr.shape}")
        col, name = pd.Series(arr, index=data.index), f"the {what} given"
    if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        raise DataError(f"{name} is not numeric (dtype {col.dtype})")
    return col, name


def _offset(parsed: ParsedFormula, frame: pd.DataFrame, extra: np.ndarray | None) -> np.ndarray | None:
    """The sum of the formula's ``offset(expr)`` terms and the ``offset=`` argument."""
    parts = [] if extra is None else [extra]
    for expr in parsed.offsets:
        mm = _model_matrix(to_formulaic(f"~ 0 + I({expr})"), frame, f"offset({expr})")
        parts.append(np.asarray(mm, dtype=float)[:, 0])
    if not parts:
        return None
    out = np.sum(parts, axis=0)
    if not np.all(np.isfinite(out)):
        raise DataError("the offset has non-finite values (" + ", ".join(f"offset({e})" for e in parsed.offsets) + ")")
    return out


def check_weights(w: np.ndarray, name: str) -> np.ndarray:
    """Prior weights must be positive and finite (``name`` says where they come from)."""
    bad = ~np.isfinite(w) | (w <= 0)
    if bad.any():
        raise DataError(f"{name} must be positive and finite; it has {int(bad.sum())} value(s) that are not "
                        f"(e.g. {w[bad][0]:g}); drop those rows (a zero weight removes a row)")
    return w


def check_response(y: np.ndarray, response: str) -> None:
    """A response with one value has nothing to model: its residual variance would be 0 and its
    log-likelihood unbounded (lme4 refuses it too)."""
    if len(y) and np.all(y == y[0]):
        raise constant_response(response, float(y[0]))


def constant_response(response: str, value: float) -> DataError:
    """The error of :func:`check_response` (also raised from partitioned data's sums)."""
    return DataError(f"response {response!r} is constant (every value is {value:g}): there is no variation to model")


def check_finite(y: np.ndarray, X: np.ndarray, names: list[str], response: str) -> None:
    """The response and the fixed-effects columns hold finite numbers (naming the columns)
    whose squares double precision can hold: a column of values ~1e200 (or ~1e-200) overflows
    (underflows) in the cross-product, and no rescaling inside can recover what is lost."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        # one pass per column: a sum of squares is finite exactly when no value is inf or NaN and
        # none overflows, so the checks below run only on the columns that need them
        sums = [float(col @ col) for col in [y] + [X[:, j] for j in range(X.shape[1])]]
    if not np.isfinite(sums[0]) and not np.all(np.isfinite(y)):
        raise DataError(f"response {response!r} has non-finite values (inf)")
    bad = [n for n, ss, col in zip(names, sums[1:], X.T) if not np.isfinite(ss) and not np.all(np.isfinite(col))]
    if bad:
        raise DataError(f"fixed-effects column(s) {', '.join(bad)} have non-finite values")
    for name, col, ss in zip([f"response {response!r}"] + [f"column {n!r}" for n in names], [y, *X.T], sums):
        top = max(float(np.max(col)), -float(np.min(col))) if len(col) else 0.0
        if not np.isfinite(ss) or top > 1e150:
            raise DataError(f"{name} has values too large to compute with (up to {top:.3g}): their squares overflow "
                            "double precision; rescale it (e.g. divide by 1e100)")
        if top > 0 and (ss == 0 or top < 1e-150):
            raise DataError(f"{name} has values too small to compute with (at most {top:.3g}): their squares "
                            "underflow double precision; rescale it (e.g. multiply by 1e100)")


def logical_columns(frame: pd.DataFrame) -> set[str]:
    """The boolean columns of ``frame``: factors with levels FALSE, TRUE where a formula uses
    them as terms, as R's logicals."""
    return {c for c in frame.columns if pd.api.types.is_bool_dtype(frame[c].dtype)}


def r_column_names(mm, formula_text: str, logical) -> list[str]:
    """R's names of the columns of formulaic's model matrix ``mm`` made from ``formula_text``."""
    return column_names(mm.model_spec, list(mm.columns), formula_text, logical)


def make_term(spec: RandomSpec, frame: pd.DataFrame, ordered, codes, levels: list[str]) -> ReTerm:
    """The term ``spec`` on ``frame``: its ``Z`` columns (plain columns or formulaic), given the
    level codes of every row and the level labels."""
    simple = plain_columns(spec.expr, frame)
    if simple is not None:
        (Z, znames), zspec = simple, None
    else:
        logical = logical_columns(frame)
        expr = to_formulaic(spec.expr, ordered, logical)
        zmm = _model_matrix(expr, frame, f"random-effects term {spec.source}")
        Z, znames, zspec = np.ascontiguousarray(zmm, dtype=float), r_column_names(zmm, expr, logical), zmm.model_spec
    if Z.shape[1] == 0:
        raise FormulaError(f"random-effects term {spec.source} has no columns")
    return ReTerm(group=spec.group, factors=spec.factors, expr=spec.expr, codes=codes, levels=levels, Z=Z,
                  names=znames, source=spec.source, model_spec=zspec,
                  cov=make_covariance(spec.structure, znames, spec.source))


def check_term(term: ReTerm, n: int) -> None:
    """lme4's checks of a term's levels against the ``n`` observations."""
    if term.m < 2:
        raise DataError(
            f"grouping factor {term.group!r} of {term.source} has a single level "
            f"({term.levels[0]!r}); grouping factors must have > 1 sampled level"
        )
    if term.m >= n:
        raise DataError(
            f"grouping factor {term.group!r} of {term.source} has {term.m} levels for {n} "
            "observations: the number of levels of each grouping factor must be < number "
            "of observations"
        )
    if n <= term.q:
        raise DataError(
            f"number of observations (={n}) <= number of random effects (={term.q}) for "
            f"term {term.source}; the random-effects parameters and the residual variance "
            "are probably unidentifiable"
        )


def overlapping_terms(terms: list[ReTerm]) -> list[str]:
    """Messages for terms of one grouping factor whose columns overlap (``(Days | Subject) +
    (1 | Subject)``: two intercepts per subject). Only the covariance of the sum of the
    overlapping effects is estimable; how it splits between the terms is not (the deviance
    is flat along the split), so the optimiser stops anywhere on that ridge: lme4 reports a
    degenerate Hessian. Overlap: ``rank [Z_s Z_t] < k_s + k_t`` on the rows (columns scaled to
    unit RMS, numerical rank at 1e-9 of the largest singular value)."""
    out = []
    for i, s_ in enumerate(terms):
        for t in terms[i + 1:]:
            if s_.factors != t.factors or s_.Z.shape[0] == 0:
                continue
            Z = np.hstack([s_.Z, t.Z])
            rms = np.sqrt(np.mean(Z**2, axis=0))
            Z = Z / np.where(rms > 0, rms, 1.0)
            sv = np.linalg.svd(Z, compute_uv=False)
            if np.sum(sv > 1e-9 * sv[0]) < Z.shape[1]:
                out.append(f"the random effects of {s_.describe()} and {t.describe()} overlap (the same grouping "
                           "factor and columns that are not linearly independent): only the variance of their sum "
                           "is estimable, and how it splits between the terms is arbitrary; drop one of the "
                           "terms, or the shared columns from one of them")
    return out


def check_identifiable(X: np.ndarray, terms: list[ReTerm], n: int, max_entries: float = 5e7) -> None:
    """The residual variance is identifiable: ``rank [X Z] < n``. Where the fixed and random
    effects together span every observation, ``y − Xβ`` lies in Z's column space for some β,
    and as σ → 0 with D fixed, ``V = ZDZ' + σ²I`` turns singular with the data in its range:
    the likelihood is unbounded and an optimiser runs θ off to 1e7 (lme4 stops there
    unconverged). Only a design with ``p + Σ q_t >= n`` can be so, and it is checked by the
    rank of the dense ``[X Z]`` (when that has at most ``max_entries`` entries)."""
    q = sum(t.q for t in terms)
    width = X.shape[1] + q
    if width < n or float(n) * width > max_entries:
        return
    XZ = np.hstack([X] + [term_matrix(t).toarray() for t in terms])
    rank = np.linalg.matrix_rank(XZ)
    if rank >= n:
        raise DataError(
            f"the fixed and random effects together fit every observation exactly (rank [X Z] = {rank} = the "
            f"number of observations): the residual variance cannot be estimated and the likelihood is unbounded "
            f"as it goes to 0; use fewer fixed effects or random-effects terms "
            f"({', '.join(dict.fromkeys(t.source for t in terms))})")


def order_terms(terms: list[ReTerm]) -> list[ReTerm]:
    """lme4's order and unique labels (``Subject``, ``Subject.1``). lme4's ``mkReTrms`` keeps the
    formula's order when the numbers of levels never increase, and otherwise orders by
    ``rev(order(nl))``: decreasing, with terms of equal numbers of levels in reverse formula
    order (``(x || g) + (1 | k)``, k with more levels: θ is ``k, g.x, g.(Intercept)``)."""
    m = [t.m for t in terms]
    if any(b > a for a, b in zip(m, m[1:])):
        terms = [terms[i] for i in reversed(sorted(range(len(terms)), key=lambda i: m[i]))]
    seen: dict[str, int] = {}
    for t in terms:
        count = seen.get(t.group, 0)
        t.label = t.group if count == 0 else f"{t.group}.{count}"
        seen[t.group] = count + 1
    return terms


def used_columns(parsed: ParsedFormula, columns, extra_columns=()) -> tuple[set[str], set[str]]:
    """The data columns a model uses and, of those, the covariates (not the response, not only
    a grouping factor); a column the formula names that is not in ``columns`` is an error that
    names the term it appears in."""
    formula = parsed.formula
    # which columns does each piece use? (the response's own, log(conc)'s conc, apart: new data
    # for predict() need not have them)
    used = set(_required(parsed.fixed, "fixed part", columns)) if parsed.fixed.strip() not in ("", "1", "0") else set()
    for spec in parsed.random:
        used |= _required(spec.expr, f"random-effects term {spec.source}", columns)
    for expr in parsed.offsets:
        used |= _required(f"I({expr})", f"offset({expr})", columns)
    covariates = used - {parsed.response}  # grouping factors may be of any type
    used |= {parsed.response} if parsed.response in columns else _required(f"I({parsed.response})", "response",
                                                                             columns)
    for spec in parsed.random:
        used |= set(spec.factors)
    absent = [c for c in extra_columns if c not in columns]
    if absent:
        raise DataError(
            f"column(s) {', '.join(map(repr, absent))} needed by the residual correlation structure "
            f"are not in the data; the data has {', '.join(map(str, columns))}"
        )
    used |= set(extra_columns)
    missing = sorted(v for v in used if v not in columns)
    if missing:
        where = []
        for v in missing:
            pieces = [s.source for s in parsed.random if v in s.factors or v in _required(s.expr, "", columns)]
            where.append(f"{v!r} (in {pieces[0]})" if pieces else repr(v))
        raise FormulaError(
            f"formula {formula!r} refers to column(s) not in the data: {', '.join(where)}; "
            f"the data has {', '.join(map(str, columns))}"
        )
    return used, covariates


def build_design(formula: str, data: pd.DataFrame, extra_columns=(), residual=None,
                 formulation: str = "hierarchical", weights=None, offset=None, variance=None) -> Design:
    """Evaluate an lme4 formula on a data frame.

    Parameters
    ----------
    formula : str
        lme4 syntax, e.g. ``"Reaction ~ Days + (Days | Subject)"``.
    data : pandas.DataFrame
        Factor columns as ``Categorical`` keep their category order (the first is the
        reference level); string columns are categorical in sorted order.
    extra_columns : sequence of str
        Further columns the model needs (e.g. the time column of a residual correlation
        structure): checked, kept in ``Design.data`` and included in the missing-value filter.
    residual, formulation, variance
        Stored in the design (see :class:`Design`); the residual structure's columns are
        added to ``extra_columns``. With a residual structure the formula may have no
        random-effects term (nlme's ``gls``).
    weights, offset : str or array_like, optional
        Prior weights (positive) and an offset added to the formula's ``offset()`` terms: a
        column of ``data`` or one value per row. Rows where either is missing are dropped.

    Returns
    -------
    Design

    Raises
    ------
    FormulaError, DataError
        Naming the term, column or level at fault.
    """
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    duplicated = sorted({str(c) for c in data.columns[data.columns.duplicated()]})
    if duplicated:
        raise DataError(f"data has duplicated column name(s) {', '.join(map(repr, duplicated))}: "
                        "rename them so that each column has one name")
    if len(data) == 0:
        raise DataError("data has no rows")
    check_formula(formula)  # before anything reads it
    formula, data, derived = derive_factors(formula, data)
    parsed = parse_formula(formula, random_required=residual is None and variance is None)
    for structure in (residual, variance):
        if structure is not None:
            extra_columns = tuple(extra_columns) + tuple(structure.columns())
    wcol, wname = _argument_column(weights, data, "weights")
    ocol, _ = _argument_column(offset, data, "offset")
    if (wcol is not None or ocol is not None or parsed.offsets) and (residual is not None or variance is not None
                                                                     or formulation == "marginal"):
        raise FormulaError("weights and offsets are not available with a residual correlation structure or the "
                           "marginal formulation (only for the hierarchical model with independent residuals)")

    used, covariates = used_columns(parsed, data.columns, extra_columns)

    cols = [c for c in data.columns if c in used]
    _check_column_types(data, cols, parsed.response, covariates)
    frame = data[cols]
    complete = ~frame.isna().any(axis=1).to_numpy()
    for col in (wcol, ocol):
        if col is not None:
            complete &= col.notna().to_numpy()
    n_missing = int((~complete).sum())
    if n_missing:
        frame = frame.loc[complete]
    else:  # pandas >= 3 copies on write: the user's later edits of data cannot reach the design
        frame = pd.DataFrame({c: data[c] for c in cols}, copy=_PANDAS_MAJOR < 3)
    if len(frame) == 0:
        raise DataError("no complete rows: every row has a missing value in a variable of the formula")
    w = None
    if wcol is not None:
        w = check_weights(wcol.to_numpy(dtype=float)[complete], wname)
    offset_values = _offset(parsed, frame, None if ocol is None else ocol.to_numpy(dtype=float)[complete])
    for c in frame.columns:
        if isinstance(frame[c].dtype, pd.CategoricalDtype):
            kept = _drop_unused_categories(frame[c])
            if kept is not None:
                frame[c] = kept

    # fixed part: plain columns directly, anything else through formulaic with R's meaning
    # (powers in calls, ordered factors)
    ordered = {c for c in frame.columns
               if isinstance(frame[c].dtype, pd.CategoricalDtype) and frame[c].cat.ordered}
    logical = logical_columns(frame)
    fixed_formula = to_formulaic(parsed.fixed_formula, ordered, logical)
    plain = plain_fixed(parsed.response, parsed.fixed, frame)
    if plain is None:
        y, X, names, model_spec = _formulaic_fixed(parsed, fixed_formula, data[cols], frame, n_missing, logical)
    else:
        (y, X, names), model_spec = plain, None
    check_finite(y, X, names, parsed.response)
    check_response(y, parsed.response)
    all_names = list(names)
    X, names, dropped = _drop_aliased(X, names)
    if dropped:
        warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
            f"column(s): {', '.join(dropped)}",
            RankDeficiencyWarning,
        )

    _check_scales(X, names)

    terms = []
    n = len(y)
    for spec in parsed.random:
        codes, levels = _grouping_codes(frame, spec)
        term = make_term(spec, frame, ordered, codes, levels)
        check_term(term, n)
        terms.append(term)
    terms = order_terms(terms)
    check_identifiable(X, terms, n)

    return Design(
        parsed=parsed,
        y=y,
        X=np.asfortranarray(X),
        fixef_names=names,
        dropped_columns=dropped,
        terms=terms,
        data=frame,
        n_missing=n_missing,
        formulaic_spec=model_spec,
        fixed_formula=fixed_formula,
        logical=frozenset(logical),
        all_fixef_names=all_names,
        treatment_formula=to_formulaic(parsed.fixed_formula, logical=logical) if ordered else None,
        residual=residual,
        variance=variance,
        formulation=formulation,
        weights=w,
        offset=offset_values,
        weights_argument=weights,
        offset_argument=offset,
        derived=derived,
    )
