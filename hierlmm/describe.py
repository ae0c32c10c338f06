"""Show a model as the user would write it on a blackboard: hierarchical and marginal form.

``model.describe()`` prints, with the user's names and dimensions,

* the hierarchical form: ``Reaction_ij | b_i ~ N(β₀ + β₁ Days_ij + b_i0 + b_i1 Days_ij, σ²)``,
  ``b_i ~ N(0, D)`` with D's size and structure and the number of levels;
* the marginal form it implies: ``y_i ~ N(X_i β, V_i)``, ``V_i = Z_i D Z_i' + σ² R_i``.

Notebooks render ``_repr_markdown_`` / ``_repr_latex_`` of :class:`hierlmm.LMM`.
"""

from __future__ import annotations

__all__ = ["describe"]

_SUB = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")


def _coef_terms(names, sym, index, fmt):
    out = []
    for k, name in enumerate(names):
        if fmt == "latex":
            coef = f"{sym}_{{{index}{k}}}" if index else f"{sym}_{{{k}}}"
        else:
            coef = f"{sym}_{index}{k}" if index else f"{sym}{str(k).translate(_SUB)}"
        if name == "(Intercept)":
            out.append(coef)
        else:
            var = name.replace("_", r"\_") if fmt == "latex" else name
            if fmt == "latex":
                out.append(fr"{coef}\,\mathrm{{{var}}}_{{ij}}")
            else:
                out.append(f"{coef} {var}_ij")
    return out


def describe(model, fmt: str = "text") -> str:
    """The hierarchical and implied marginal form of ``model`` as text, markdown or LaTeX."""
    d = model.design
    resp = d.response
    single = len({t.group for t in d.terms}) == 1
    fixed = _coef_terms(d.fixef_names, "β" if fmt != "latex" else r"\beta", "", fmt)
    rand = []
    dists = []
    for n, t in enumerate(d.terms):
        sym = "b" if len(d.terms) == 1 else f"b{n + 1}"
        idx = "i" if single else t.group
        for k, name in enumerate(t.names):
            if fmt == "latex":
                coef = f"{sym}_{{i{k}}}"
                rand.append(coef if name == "(Intercept)" else fr"{coef}\,\mathrm{{{name}}}_{{ij}}")
            else:
                coef = f"{sym}_{idx}{k}"
                rand.append(coef if name == "(Intercept)" else f"{coef} {name}_ij")
        struct = t.cov.title if t.k > 1 or not t.unstructured else "a variance"
        dname = "D" if len(d.terms) == 1 else f"D{n + 1}"
        dists.append((sym, idx, dname, t, struct))
    residual, variance = model.residual, model.variance
    marginal = model.formulation == "marginal"
    r_text = "I" if residual is None else f"R_i ({residual.name})"
    if variance is not None:  # Δ_i: the SD ratios of the rows' levels
        r_text = f"Δ_i {r_text} Δ_i" if residual is not None else "Δ_i²"
    if fmt == "latex" and not d.terms:  # nlme's gls: the marginal model itself
        r_tex = (r"\Delta_i R_i \Delta_i" if residual is not None else r"\Delta_i^2") if variance is not None else (
            "R_i" if residual is not None else "I")
        return "$$y_i \\sim \\mathcal{N}(X_i\\beta, V_i),\\quad V_i = \\sigma^2 " + r_tex + "$$"
    if fmt == "latex":
        mean = " + ".join(fixed + rand)
        lines = [r"\begin{aligned}",
                 fr"\mathrm{{{resp}}}_{{ij}} \mid b &\sim \mathcal{{N}}\left({mean},\ \sigma^2\right)\\"]
        for _, _, dname, t, struct in dists:
            lines.append(fr"b_{{i}} &\sim \mathcal{{N}}(0, {dname}),\quad {dname}\ {t.k}\times{t.k}\ \text{{{struct}}},\ i = 1,\dots,{t.m}\ (\text{{{t.group}}})\\")
        lines.append(r"y_i &\sim \mathcal{N}(X_i\beta, V_i),\quad V_i = Z_i D Z_i' + \sigma^2 " + ("I" if residual is None else "R_i"))
        lines.append(r"\end{aligned}")
        return "$$" + "\n".join(lines) + "$$"
    offset = ["offset_ij"] if d.offset is not None else []
    mean = " + ".join(offset + fixed + rand)
    var = "σ²" if d.weights is None else "σ²/w_ij"
    lines = []
    if getattr(model, "levels", None) is not None:
        lines += ["Level-wise form:"] + [f"  {line}" for line in model.levels.lines()]
    if not d.terms:  # nlme's gls: the marginal model itself
        within = f" within {residual.group}" if residual is not None else ""
        lines += ["Marginal model (generalized least squares, no random effects):",
                  f"  y_i ~ N(X_i β, V_i),  V_i = σ² {r_text}{within}"]
        if variance is not None:
            lines.append(f"  Δ_i: a residual SD ratio per level of {variance.column} (varIdent)")
        text = "\n".join(lines)
        return "```text\n" + text + "\n```" if fmt == "markdown" else text
    lines += ["Hierarchical form:", f"  {resp}_ij | b ~ N({mean}, {var})"]
    for sym, idx, dname, t, struct in dists:
        lines.append(f"  {sym}_{idx} ~ N(0, {dname}),  {dname}: {t.k} x {t.k} {struct} ({', '.join(t.names)}); "
                     f"{t.m} levels of {t.group}")
    if residual is not None:
        lines.append(f"  residuals within {d.terms[0].group if residual.group is None else residual.group}: "
                     f"N(0, σ² R_i), R_i {residual.name}")
    lines.append("Implied marginal form:")
    if d.weights is not None:
        r_text = "W_i⁻¹ (W_i the prior weights)"
    lines.append(f"  y_i ~ N({'o_i + ' if offset else ''}X_i β, V_i),  V_i = Z_i D Z_i' + σ² {r_text}")
    if variance is not None:
        lines.append(f"  Δ_i: a residual SD ratio per level of {variance.column} (varIdent)")
    if marginal:
        lines.append("  (fitted in the marginal formulation: only V_i must be positive definite, D may be "
                     "indefinite, and then no hierarchical model implies V_i)")
    text = "\n".join(lines)
    if fmt == "markdown":
        return "```text\n" + text + "\n```"
    return text
