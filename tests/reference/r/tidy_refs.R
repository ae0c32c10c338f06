# broom.mixed's tidy() of three lmerTest fits (issue 14: a tidy output in broom.mixed's layout).
# Run from the repository root:  Rscript tests/reference/r/tidy_refs.R
suppressPackageStartupMessages({library(lmerTest); library(broom.mixed); library(jsonlite)})
models <- list(
  sleepstudy = list(formula = "Reaction ~ Days + (Days | Subject)", data = lme4::sleepstudy),
  sleepstudy_uncorr = list(formula = "Reaction ~ Days + (Days || Subject)", data = lme4::sleepstudy),
  penicillin = list(formula = "diameter ~ 1 + (1 | plate) + (1 | sample)", data = lme4::Penicillin))
frame <- function(t) lapply(as.list(as.data.frame(t)), function(v) if (is.factor(v)) as.character(v) else v)
out <- lapply(models, function(md) {
  m <- lmer(as.formula(md$formula), md$data, REML = TRUE)
  list(formula = md$formula, default = frame(tidy(m)), ran_vals = frame(tidy(m, effects = "ran_vals")),
       wald = frame(tidy(m, conf.int = TRUE)),
       # on the lmerMod: broom.mixed gives an lmerTest fit's fixed effects Wald limits under
       # conf.method = "profile" (warning that ddf.method is ignored); lme4's own are profiles
       profile = suppressMessages(frame(tidy(as(m, "lmerMod"), conf.int = TRUE, conf.method = "profile"))))
})
out$versions <- list(broom.mixed = as.character(packageVersion("broom.mixed")),
                     lmerTest = as.character(packageVersion("lmerTest")))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null"), "tests/reference/tidy_broom_mixed.json")
