# performance::icc() of models with random slopes and nested intercepts (adjusted and
# conditional ICC, Nakagawa's variances). Run from the repository root: Rscript tests/reference/r/icc.R
suppressPackageStartupMessages({library(lme4); library(performance); library(jsonlite)})
one <- function(formula, data) {
  i <- icc(lmer(as.formula(formula), data, REML = TRUE))
  list(formula = formula, adjusted = i$ICC_adjusted, conditional = i$ICC_conditional)
}
out <- list(one("Reaction ~ Days + (Days | Subject)", sleepstudy), one("strength ~ 1 + (1 | batch/cask)", Pastes))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE), "tests/reference/icc.json")
