# Kenward-Roger F test of a 3-level factor with a correlated random effect per level
# (issue 10 item 1: y ~ f + (0 + f | g); pbkrtest scales the Wald F by lambda).
# Run from the repository root:  Rscript tests/reference/r/kr_multidf.R
suppressPackageStartupMessages({library(lmerTest); library(pbkrtest); library(jsonlite)})
set.seed(20261125)
g <- factor(rep(sprintf("g%02d", 1:8), each = 12))
f <- factor(rep(rep(c("a", "b", "c"), each = 4), 8))
B <- matrix(rnorm(8 * 3), 8, 3) %*% chol(matrix(c(4, 2, 1, 2, 3, 1.5, 1, 1.5, 2), 3))
y <- 10 + c(a = 0, b = 1.5, c = -1)[as.character(f)] + B[cbind(as.integer(g), as.integer(f))] + rnorm(96, sd = 1.5)
d <- data.frame(y = y, f = f, g = g)
m <- lmer(y ~ f + (0 + f | g), d, REML = TRUE)
a <- anova(m, ddf = "Kenward-Roger", type = 3)
m0 <- lmer(y ~ 1 + (0 + f | g), d, REML = TRUE)
kr <- KRmodcomp(m, m0)
out <- list(formula = "y ~ f + (0 + f | g)", data = list(y = d$y, f = as.character(d$f), g = as.character(d$g)),
            REML = TRUE, reml_crit = REMLcrit(m),
            anova_KR = list(terms = rownames(a), NumDF = a$NumDF, DenDF = a$DenDF, F = a[["F value"]],
                            p = a[["Pr(>F)"]]),
            KRmodcomp = list(F = kr$test["Ftest", "stat"], ndf = kr$test["Ftest", "ndf"],
                             ddf = kr$test["Ftest", "ddf"], F_scaling = kr$test["Ftest", "F.scaling"],
                             p = kr$test["Ftest", "p.value"]),
            versions = list(lmerTest = as.character(packageVersion("lmerTest")),
                            pbkrtest = as.character(packageVersion("pbkrtest"))))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "tests/reference/kr_multidf.json")
