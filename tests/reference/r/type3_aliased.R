# lmerTest's Type III tables on a design with an aliased column (x:o^4, 29 rows, seed 90210's
# differential case m0192): a factor is not "contained" in its interaction with a covariate.
# Run from the repository root: Rscript tests/reference/r/type3_aliased.R
suppressPackageStartupMessages({library(lmerTest); library(jsonlite)})
d <- read.csv("tests/reference/type3_aliased.csv")
d$f <- factor(d$f); d$e <- factor(d$e); d$g <- factor(d$g); d$o <- factor(d$o, ordered = TRUE)
m <- suppressMessages(lmer(y ~ z + x + f + x:f + o + x:o + e + f:e + (1 | g), data = d, REML = TRUE))
tab <- function(a) list(terms = rownames(a), F = a[["F value"]], DenDF = a[["DenDF"]], NumDF = a[["NumDF"]])
out <- list(formula = "y ~ z + x + f + x:f + o + x:o + e + f:e + (1 | g)", REML = TRUE,
            dropped = names(attr(getME(m, "X"), "col.dropped")),
            satterthwaite = tab(anova(m, type = 3)), kenward_roger = tab(anova(m, type = 3, ddf = "Kenward-Roger")))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE), "tests/reference/type3_aliased.json")
