# Profile intervals from lme4 for the regression tests of tests/test_inference.py
# (issue item 2b: MathAchieve's correlation profile).
# Run from the repository root:  Rscript tests/reference/r/profile_refs.R
suppressPackageStartupMessages({library(lme4); library(nlme); library(jsonlite)})
data(MathAchieve, package = "nlme")
d <- as.data.frame(MathAchieve)
m <- lmer(MathAch ~ SES + (SES | School), d, REML = TRUE)
ci <- suppressWarnings(confint(profile(m, signames = FALSE), level = 0.95))
out <- list(data = "MathAchieve", formula = "MathAch ~ SES + (SES | School)", REML = TRUE,
            names = rownames(ci), lower = unname(ci[, 1]), upper = unname(ci[, 2]),
            ml_deviance = deviance(refitML(m)),
            lme4 = as.character(packageVersion("lme4")))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, na = "null", pretty = TRUE),
           "tests/reference/mathach_ses_profile.json")
