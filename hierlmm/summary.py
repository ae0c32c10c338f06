"""Printing a fit the way lme4 + lmerTest print it (text), and as HTML for notebooks.

Computation stays in :mod:`hierlmm.results`; this module only formats.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from hierlmm.reterms import sd_corr

__all__ = ["Summary"]

SIGNIF_LEGEND = "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1"


def _column(values, digits=4) -> list[str]:
    """Format a column with a common number of decimals, as R's print.default."""
    vals = [v for v in values if v is not None and np.isfinite(v)]
    if not vals:
        return ["" for _ in values]
    mags = [int(np.floor(np.log10(abs(v)))) if v != 0 else 0 for v in vals]
    decimals = max(0, min(digits - 1 - max(min(mags), -digits), 8))
    decimals = max(decimals, 0)
    return ["" if v is None or not np.isfinite(v) else f"{v:.{decimals}f}" for v in values]


def _pvalue(p: float) -> str:
    if not np.isfinite(p):
        return ""
    return "< 2e-16" if p < 2e-16 else f"{p:.3g}"


def _stars(p: float) -> str:
    if not np.isfinite(p):
        return ""
    for cut, s in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p < cut:
            return s
    return ""


def _table(rows: list[list[str]], header: list[str], align_left: int = 1) -> str:
    cols = list(zip(*([header] + rows))) if rows else [[h] for h in header]
    widths = [max(len(c) for c in col) for col in cols]
    out = []
    for r in [header] + rows:
        cells = [c.ljust(w) if i < align_left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        out.append(" ".join(cells).rstrip())
    return "\n".join(out)


class Summary:
    """A fit's summary: ``print(fit.summary())`` or display it in a notebook.

    Attributes
    ----------
    coefficients : DataFrame
        Estimate, Std. Error, (df, t value, Pr(>|t|) with lmerTest's Satterthwaite df
        when the inference module is available).
    random : DataFrame
        Groups, Name, Variance, Std.Dev. and correlations.
    """

    def __init__(self, fit, ddf: str = "satterthwaite"):
        self.fit = fit
        self.ddf = ddf
        self.inference_note: str | None = None  # why df and p are missing, if they are
        self.coefficients = self._coefficients()

    def _coefficients(self) -> pd.DataFrame:
        """The t tests with ``self.ddf``'s df (Satterthwaite, or Kenward–Roger with its adjusted
        SEs); where they cannot be computed (a refusal, or a singular matrix), Estimate/SE/t
        only and the reason in :attr:`inference_note` (printed)."""
        from hierlmm.errors import HierlmmError

        fit = self.fit
        try:
            ct = fit.coef_table(ddf=self.ddf)
        except (HierlmmError, np.linalg.LinAlgError) as exc:
            name = "Kenward-Roger" if self.ddf.lower().startswith("k") else "Satterthwaite"
            self.inference_note = f"no {name} df or p-values: {exc}"
            est, se = fit.fixef, fit.se
            return pd.DataFrame({"Estimate": est, "Std. Error": se, "t value": est / se})
        return pd.DataFrame({"Estimate": ct["estimate"], "Std. Error": ct["se"], "df": ct["df"],
                             "t value": ct["t"], "Pr(>|t|)": ct["p"]})

    # -------------------------------------------------------------------- text
    def _header(self) -> list[str]:
        fit = self.fit
        how = "REML" if fit.method == "REML" else "maximum likelihood"
        tests = "" if self.inference_note else (
            ". t-tests use " + ("Kenward-Roger" if self.ddf.lower().startswith("k") else "Satterthwaite") + "'s method")
        kind = "Linear mixed model" if fit.design.terms else "Generalized least squares"  # nlme's gls
        lines = [f"{kind} fit by {how}{tests}", f"Formula: {fit.design.parsed.formula}"]
        for what, arg in (("Weights", fit.model.weights), ("Offset", fit.model.offset)):
            if arg is not None:
                lines.append(f"{what}: {arg if isinstance(arg, str) else 'given as an array'}")
        if fit.n_missing:
            lines.append(f"   (rows dropped for missing values: {fit.n_missing})")
        lines.append("")
        if fit.method == "REML":
            lines.append(f"REML criterion at convergence: {fit.deviance:.1f}")
        else:
            vals = [fit.aic, fit.bic, fit.loglik, fit.deviance, fit.nobs - fit.design.p]
            lines.append(_table([[f"{v:.1f}" for v in vals[:4]] + [str(vals[4])]],
                                ["AIC", "BIC", "logLik", "deviance", "df.resid"], align_left=0))
        lines.append("")
        return lines

    _NO_ROWS = ("not computed (the rows are in a Dask DataFrame: fit.residuals(scaled=True) is a lazy "
                "Dask Series, its quantiles another pass over the data)")

    def _residual_lines(self) -> list[str]:
        if not self.fit.design.rows:
            return [f"Scaled residuals: {self._NO_ROWS}", ""]
        header, rows = self._residual_cells()
        return ["Scaled residuals:", _table(rows, header, 0), ""]

    def _residual_cells(self) -> tuple[list[str], list[list[str]]]:
        kind = "marginal" if self.fit.model.formulation == "marginal" else "conditional"
        r = self.fit.residuals(kind=kind, scaled=True).to_numpy()
        qs = np.quantile(r, [0, 0.25, 0.5, 0.75, 1.0])
        # lme4: print(zapsmall(quantile(r), digits + 1), digits = digits), digits = 4
        mx = np.abs(qs).max()
        zap = max(0, 5 - int(np.ceil(np.log10(mx)))) if mx > 0 else 5
        qs = np.round(qs, zap)
        dec = _decimals_for(qs, 4, zap)
        return ["Min", "1Q", "Median", "3Q", "Max"], [[f"{v:.{dec}f}" for v in qs]]

    def random_table(self) -> tuple[list[str], list[list[str]]]:
        fit = self.fit
        rows = []
        covs = fit.covariance_matrices()
        diagonal = {t.label: t.cov.diagonal for t in fit.design.terms}  # no correlations to show
        maxk = max([len(D) for label, D in covs.items() if not diagonal.get(label)] + [1])
        vars_ = [D.to_numpy()[i, i] for D in covs.values() for i in range(len(D))] + [fit.sigma**2]
        vstr = _column(vars_, 4)
        with np.errstate(invalid="ignore"):
            sstr = [s if v >= 0 else "NaN" for s, v in zip(_column(np.sqrt(np.clip(vars_, 0, None)), 4), vars_)]
        i = 0
        for label, D in covs.items():
            _, R = sd_corr(D.to_numpy())
            for j, name in enumerate(D.index):
                corr = [] if diagonal.get(label) else [  # as lme4
                    "NaN" if np.isnan(R[j, c]) else f"{R[j, c]:.2f}" for c in range(j)]
                rows.append([label if j == 0 else "", name, vstr[i], sstr[i]] + corr + [""] * (maxk - 1 - len(corr)))
                i += 1
        rows.append(["Residual", "", vstr[i], sstr[i]] + [""] * (maxk - 1))
        header = ["Groups", "Name", "Variance", "Std.Dev."] + (["Corr"] + [""] * (maxk - 2) if maxk > 1 else [])
        return header, rows

    def _random_lines(self) -> list[str]:
        header, rows = self.random_table()
        text = _table(rows, header, align_left=2)
        fit = self.fit
        groups = ", ".join(f"{g}, {m}" for g, m in fit.ngroups.items()) or "none"
        lines = ["Random effects:", *(" " + line for line in text.splitlines())]
        structured = [t for t in fit.design.terms if not t.unstructured]
        if structured:
            lines.append("Covariance structures: " + ", ".join(f"{t.label} {t.cov.kind} ({t.cov.title})"
                                                                for t in structured))
        dev, theta = fit.deviance_function, fit.solution.theta
        if fit.residual is not None:
            lines.append(f"Residual correlation: {fit.residual.name} within {dev.rgroup.group}, "
                         + ", ".join(f"{n} = {v:.4g}" for n, v in dev.correlation_report(theta).items()))
        if fit.variance is not None:
            lines.append(f"Residual variance: {fit.variance.describe()}, "
                         + ", ".join(f"{n} = {v:.4g}" for n, v in dev.variance_report(theta).items()))
        return lines + [f"Number of obs: {fit.nobs}, groups:  {groups}", ""]

    def _fixed_lines(self) -> list[str]:
        header, body, has_p = self._fixed_cells()
        lines = ["Fixed effects:", _table(body, header, 1)]
        if has_p:
            lines += ["---", SIGNIF_LEGEND]
        return lines

    def _fixed_cells(self) -> tuple[list[str], list[list[str]], bool]:
        """printCoefmat's cells: header, rows (name first), whether p-values are there."""
        t = self.coefficients
        cols = list(t.columns)
        body = []
        fmt = _coefmat(t)
        has_p = "Pr(>|t|)" in t
        for i, name in enumerate(t.index):
            row = [name] + [fmt[c][i] for c in cols if c != "Pr(>|t|)"]
            if has_p:
                p = t["Pr(>|t|)"].iloc[i]
                row += [_pvalue(p), _stars(p)]
            body.append(row)
        header = [""] + [c for c in cols if c != "Pr(>|t|)"] + (["Pr(>|t|)", ""] if has_p else [])
        return header, body, has_p

    def _corr_lines(self) -> list[str]:
        cells = self._corr_cells()
        if cells is None:
            return []
        return ["", "Correlation of Fixed Effects:", _table(cells[1], cells[0], 1)]

    def _corr_cells(self) -> tuple[list[str], list[list[str]]] | None:
        V = self.fit.vcov.to_numpy()
        p = V.shape[0]
        if p < 2:
            return None
        sd = np.sqrt(np.diag(V))
        C = V / np.outer(sd, sd)
        names = self.fit.design.fixef_names
        abbrev = _abbrev(names)
        rows = [[names[i]] + [f"{C[i, j]:.3f}" for j in range(i)] + [""] * (p - 1 - i) for i in range(1, p)]
        return [""] + abbrev[: p - 1], rows

    def _notes(self) -> list[str]:
        fit, notes = self.fit, []
        if fit.design.dropped_columns:
            notes.append("fixed-effect model matrix is rank deficient so dropping "
                         f"{len(fit.design.dropped_columns)} column(s): {', '.join(fit.design.dropped_columns)}")
        if fit.singular:
            notes.append("boundary (singular) fit: see the documentation of LMMResult.singular")
        notes += fit.opt.messages
        if self.inference_note:
            notes.append(self.inference_note)
        if fit.model.formulation == "marginal":
            notes.append("marginal formulation: V = ZDZ' + σ²I was estimated requiring only that V be "
                         "positive definite; D may be indefinite (a negative variance has no Std.Dev.), "
                         "in which case no hierarchical model implies this V")
        return [""] + notes if notes else []

    def __str__(self) -> str:
        lines = (self._header() + self._residual_lines() + self._random_lines() + self._fixed_lines()
                 + self._corr_lines() + self._notes())
        return "\n".join(lines)

    __repr__ = __str__

    # -------------------------------------------------------------------- HTML
    def _repr_html_(self) -> str:
        """What the text shows, as HTML tables of the same cells."""
        fit = self.fit
        head = html.escape("\n".join(self._header()).strip())
        groups = ", ".join(f"{g}: {m}" for g, m in fit.ngroups.items())
        notes = "".join(f"<p><em>{html.escape(n)}</em></p>" for n in self._notes() if n)
        fixed_header, fixed_rows, has_p = self._fixed_cells()
        corr = self._corr_cells()
        parts = [
            f"<div class='hierlmm-summary'><pre>{head}</pre>",
            "<h4>Scaled residuals</h4>",
            _html(*self._residual_cells()) if fit.design.rows else f"<p>{html.escape(self._NO_ROWS)}</p>",
            "<h4>Random effects</h4>", _html(*self.random_table()),
            f"<p>Number of obs: {fit.nobs}; groups: {html.escape(groups)}</p>",
            "<h4>Fixed effects</h4>", _html(fixed_header, fixed_rows),
            f"<p><small>{html.escape(SIGNIF_LEGEND)}</small></p>" if has_p else "",
        ]
        if corr is not None:
            parts += ["<h4>Correlation of fixed effects</h4>", _html(*corr)]
        return "".join(parts) + notes + "</div>"


def _html(header: list[str], rows: list[list[str]]) -> str:
    """An HTML table of already formatted cells (numbers right-aligned)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td style='text-align:{'left' if j == 0 else 'right'}'>{html.escape(c)}</td>"
                                    for j, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table class='hierlmm'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _decimals_for(values, digits: int, cap: int) -> int:
    """Decimals R's ``format(x, digits)`` shows: enough for ``digits`` significant digits in
    every element, but no more than ``cap`` (the values were rounded to ``cap`` decimals)."""
    vals = np.abs(np.asarray([v for v in values if np.isfinite(v) and v != 0]))
    if vals.size == 0:
        return 0
    need = max(0, int(np.max(digits - 1 - np.floor(np.log10(vals)))))
    return min(need, cap)


def _coefmat(t: pd.DataFrame, digits: int = 4) -> dict[str, list[str]]:
    """Column formats of R's ``printCoefmat`` (as lme4's summary calls it, ``digits = 4``).

    Estimate and SE are rounded together to ``max(1, digits - digmin)`` decimals, ``digmin``
    the number of digits before the point of the smallest of them; test statistics to
    ``max(1, min(5, digits - 1))`` decimals; other columns (df) with ``digits`` significant.
    """
    out: dict[str, list[str]] = {}
    cs = [c for c in ("Estimate", "Std. Error") if c in t]
    acs = np.abs(t[cs].to_numpy().ravel())
    acs = acs[np.isfinite(acs) & (acs != 0)]
    digmin = 1 + (int(np.floor(np.log10(acs.min()))) if acs.size else 0)
    cap = max(1, digits - digmin)
    dec = _decimals_for(t[cs].to_numpy().ravel(), digits, cap)
    for c in cs:
        out[c] = [f"{v:.{dec}f}" for v in t[c]]
    for c in ("t value", "z value"):
        if c in t:
            cap_t = max(1, min(5, digits - 1))
            d = _decimals_for(np.round(t[c].to_numpy(), cap_t), digits, cap_t)
            out[c] = [f"{v:.{d}f}" for v in t[c]]
    for c in t.columns:
        if c not in out and c != "Pr(>|t|)":
            d = _decimals_for(t[c].to_numpy(), digits, 8)
            out[c] = [f"{v:.{d}f}" for v in t[c]]
    return out


def _abbreviate_one(name: str, minlength: int) -> str:
    """R's ``abbreviate(name, minlength)`` of one string (its C code's ``stripchars``): drop
    lower-case vowels that end a word, then other lower-case vowels, then lower-case letters
    that end a word, then other lower-case letters, then anything, each pass from the right
    and never a word's first character, until ``minlength`` characters are left."""
    s = list(name.strip())
    if len(s) <= minlength:
        return "".join(s)
    vowel = lambda c: c in "aeiou"  # noqa: E731
    first = lambda i: s[i - 1].isspace()  # noqa: E731
    last = lambda i: not s[i - 1].isspace() and (i + 1 == len(s) or s[i + 1].isspace())  # noqa: E731
    passes = [lambda i: vowel(s[i]) and last(i), lambda i: vowel(s[i]) and not first(i),
              lambda i: s[i].islower() and last(i), lambda i: s[i].islower() and not first(i),
              lambda i: not first(i) and not s[i].isspace()]
    for drop in passes:
        for i in range(len(s) - 1, 0, -1):
            if i < len(s) and drop(i):
                del s[i]
            if len(s) - sum(c.isspace() for c in s) <= minlength:
                return "".join(c for c in s if not c.isspace()) if len(s) > minlength else "".join(s)
    return "".join(s)


def _abbrev(names: list[str], minlength: int = 6) -> list[str]:
    """R's ``abbreviate(names, minlength)`` of coefficient names (R's names: ``VarietyVictory``
    → ``VrtyVc``): where two come out the same, those get longer abbreviations until they
    differ, as R's does."""
    out = [_abbreviate_one(n, minlength) for n in names]
    length = minlength
    while len(set(out)) < len(out) and length < max(map(len, names)):
        length += 1
        seen = {a for a in out if out.count(a) > 1}
        out = [_abbreviate_one(n, length) if a in seen else a for n, a in zip(names, out)]
    return out