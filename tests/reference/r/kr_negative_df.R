# Kenward-Roger F tests whose denominator df come out negative (pbkrtest reports them, with a
# negative scaled F and no p-value): seed 90210's differential case m0023.
# Run from the repository root: Rscript tests/reference/r/kr_negative_df.R
suppressPackageStartupMessages({library(lmerTest); library(jsonlite)})
d <- read.csv("tests/reference/kr_negative_df.csv")
d$g <- factor(d$g); d$h <- factor(d$h); d$o <- factor(d$o, ordered = TRUE)
f <- "y ~ z + x + o + x:o + (1 + x | g) + (1 | h)"
m <- suppressMessages(lmer(as.formula(f), data = d, REML = TRUE))
a <- anova(m, type = 2, ddf = "Kenward-Roger")
out <- list(formula = f, REML = TRUE, terms = rownames(a), F = a[["F value"]], DenDF = a[["DenDF"]],
            NumDF = a[["NumDF"]], p = a[["Pr(>F)"]])
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, na = "null"), "tests/reference/kr_negative_df.json")
