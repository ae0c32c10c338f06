# broom.mixed's glance() and augment() of lme4 fits (REML, ML, prior weights).
# Run from the repository root: Rscript tests/reference/r/broom_glance_augment.R
suppressPackageStartupMessages({library(lme4); library(broom.mixed); library(jsonlite)})
d <- sleepstudy
d$w <- 1 + (d$Days %% 4)
fits <- list(
  reml = lmer(Reaction ~ Days + (Days | Subject), d),
  ml = lmer(Reaction ~ Days + (Days | Subject), d, REML = FALSE),
  weighted = lmer(Reaction ~ Days + (1 | Subject), d, weights = w))
out <- lapply(fits, function(m) {
  a <- as.data.frame(augment(m))
  list(theta = unname(getME(m, "theta")), glance = as.list(as.data.frame(glance(m))),
       augment = list(.fitted = a$.fitted, .resid = a$.resid, .hat = a$.hat, .cooksd = a$.cooksd,
                      .fixed = a$.fixed, .wtres = a$.wtres))
})
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE), "tests/reference/broom_glance_augment.json")
