"""The ``hierlmm`` command line: ``hierlmm fit DATA.csv "FORMULA" [--ml]``.

A CSV has no factor types: columns that are not numeric are read as strings and become
factors with their levels in sorted order, as formulaic does. Set another order (and so
another reference level) with ``--factor-order COL=a,b,c`` (repeatable).

``hierlmm sample DATA "FORMULA" [--prior flat|flat_sd|weak]`` samples the posterior (the
``bayes`` extra); ``hierlmm datasets [NAME]`` lists or exports the bundled data sets.
"""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]


def read_csv(path: str):
    """A CSV as R's ``read.csv`` reads it: a text column keeps every value as a level (``None``,
    ``null``, ``NA``, ``n/a`` are levels, not missing: nlme's Alfalfa has a level ``None``); an
    empty field is missing, and so is ``NA`` in a column whose other values are all numbers.
    Errors name the file."""
    import pandas as pd

    from hierlmm.errors import DataError

    try:
        df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise DataError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"cannot read {path} as CSV: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    for col in df.columns:
        if not pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col]):
            values = df[col].where(df[col] != "NA")
            numeric = pd.to_numeric(values, errors="coerce")
            if numeric.notna().sum() == values.notna().sum() and values.notna().any():
                df[col] = numeric
    return df


def _read_data(path: str, orders: list[str]):
    import pandas as pd

    from hierlmm import datasets
    from hierlmm.errors import DataError

    if path.lower().endswith(".csv"):
        df = read_csv(path)
    else:
        df = datasets.load(path)
    for spec in orders:
        col, _, levels = spec.partition("=")
        if col not in df.columns or not levels:
            raise DataError(f"--factor-order {spec!r}: expected COL=a,b,c with COL a column of the data")
        lev = levels.split(",")
        values = df[col].astype(str)
        unknown = sorted(set(values.dropna()) - set(lev))
        if unknown:
            raise DataError(f"--factor-order for {col!r} misses level(s) {', '.join(unknown)}")
        df[col] = pd.Categorical(values, categories=lev)
    return df


def _fit_json(fit, ddf: str) -> dict:
    vc = fit.varcorr.astype(object).where(fit.varcorr.notna(), None)
    table = fit.coef_table(ddf=ddf)
    return {
        "formula": fit.design.parsed.formula,
        "method": fit.method,
        "nobs": fit.nobs,
        "n_missing": fit.n_missing,
        "ngroups": fit.ngroups,
        "fixef": fit.fixef.to_dict(),
        "se": fit.se.to_dict(),
        "coefficients": {name: {"estimate": row.estimate, "se": row.se, "df": row.df, "t": row.t, "p": row.p}
                         for name, row in table.iterrows()},
        "ddf": ddf,
        "sigma": fit.sigma,
        "theta": fit.theta.tolist(),
        "varcorr": vc.to_dict(orient="records"),
        "loglik": fit.loglik,
        "aic": fit.aic,
        "bic": fit.bic,
        "deviance": fit.deviance,
        "singular": fit.singular,
        "converged": fit.converged,
    }


def _plots(fit, folder: str) -> None:
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    from hierlmm import plots

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    plots.diagnostics(fit).savefig(out / "diagnostics.png", dpi=100)
    for group in dict.fromkeys(t.group for t in fit.design.terms):
        safe = group.replace(":", "_")
        plots.caterpillar(fit, group=group).savefig(out / f"caterpillar_{safe}.png", dpi=100)
    print(f"plots written to {out}/", file=sys.stderr)


def _sample(hl, df, args) -> int:
    try:
        import pymc  # noqa: F401
    except ImportError:
        raise hl.HierlmmError("sampling needs the bayes extra: pip install 'hierlmm[bayes]'") from None
    from hierlmm.bayes import WeaklyInformative

    model = hl.LMM(args.formula, df, weights=args.weights, offset=args.offset)
    prior = WeaklyInformative() if args.prior == "weak" else args.prior
    post = model.sample(prior=prior, sampler=args.sampler, draws=args.draws, tune=args.tune,
                        chains=args.chains, random_seed=args.seed, progressbar=sys.stderr.isatty())
    fit = model.fit()
    table = hl.compare(fit, post)
    if args.json:
        print(table.astype(object).where(table.notna(), None).to_json(orient="records", indent=2))
    else:
        # five significant digits: an interval 146.0-152.8 must not print as "150 150"
        fmt = lambda v: f"{v:.5g}"  # noqa: E731
        print(post.summary(round_to="none").to_string(float_format=fmt))
        print()
        print(table.to_string(float_format=fmt))
    return 0


def _common(p) -> None:
    """The arguments ``fit`` and ``sample`` share."""
    p.add_argument("data", help="a CSV file, or the name of a bundled data set (e.g. sleepstudy)")
    p.add_argument("formula", help='lme4 formula, e.g. "Reaction ~ Days + (Days | Subject)"; '
                   "offset(expr) terms allowed")
    p.add_argument("--factor-order", action="append", default=[], metavar="COL=a,b,c",
                   help="level order of a factor column (the first level is the reference); repeatable")
    p.add_argument("--weights", metavar="COL", help="column of prior weights (lme4's weights=): Var(e_i) = sigma^2/w_i")
    p.add_argument("--offset", metavar="COL", help="column added to the linear predictor (as offset(COL))")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hierlmm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_fit = sub.add_parser("fit", help="fit a model by REML (or ML) and print the summary")
    _common(p_fit)
    p_fit.add_argument("--ml", action="store_true", help="fit by maximum likelihood instead of REML")
    p_fit.add_argument("--ddf", default="satterthwaite", choices=["satterthwaite", "kenward-roger"],
                       help="denominator degrees of freedom of the t tests (default satterthwaite)")
    p_fit.add_argument("--json", action="store_true",
                       help="print a machine-readable result (estimates, SE, df, t and p of every fixed effect)")
    p_fit.add_argument("--plots", metavar="DIR", help="write the diagnostic plots as PNG files to DIR")
    p_sample = sub.add_parser("sample", help="MCMC of the posterior (needs the bayes extra)")
    _common(p_sample)
    p_sample.add_argument("--draws", type=int, default=1000, help="draws per chain kept (default 1000)")
    p_sample.add_argument("--tune", type=int, default=1000, help="warm-up draws per chain (default 1000)")
    p_sample.add_argument("--chains", type=int, default=4, help="number of chains (default 4)")
    p_sample.add_argument("--prior", default="flat", choices=["flat", "flat_sd", "weak"],
                          help="flat on variances (default; its marginal mode is REML), flat on SDs, or "
                          "weakly informative (half-normal SDs at the response's SD, LKJ(2))")
    p_sample.add_argument("--sampler", default="collapsed", choices=["collapsed", "hierarchical"],
                          help="collapsed: (sigma^2, D) with beta and b integrated out (default); "
                          "hierarchical: every b sampled (PyMC)")
    p_sample.add_argument("--seed", type=int, default=None, help="random seed, for reproducible draws")
    p_sample.add_argument("--json", action="store_true", help="print hl.compare(fit, posterior) as JSON")
    p_ds = sub.add_parser("datasets", help="list the bundled data sets, or export one as CSV")
    p_ds.add_argument("name", nargs="?", help="write this data set as CSV to standard output")
    args = parser.parse_args(argv)

    from hierlmm.errors import HierlmmError

    try:
        if args.command == "datasets":
            from hierlmm import datasets

            if args.name:
                datasets.load(args.name).to_csv(sys.stdout, index=False)
            else:
                print("\n".join(datasets.list()))
            return 0
        import hierlmm as hl

        df = _read_data(args.data, args.factor_order)
        if args.command == "sample":
            return _sample(hl, df, args)
        fit = hl.LMM(args.formula, df, weights=args.weights, offset=args.offset).fit(
            method="ML" if args.ml else "REML")
        if args.json:
            print(json.dumps(_fit_json(fit, args.ddf), indent=2, default=float))
        else:
            print(fit.summary(ddf=args.ddf))
        if args.plots:
            _plots(fit, args.plots)
        return 0
    except HierlmmError as exc:
        print(f"hierlmm: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `hierlmm datasets | head`: the reader has gone, nothing to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # e.g. an unwritable --plots folder
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"hierlmm: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
