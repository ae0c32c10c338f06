# emmeans' joint_tests (KR and Satterthwaite df, with and without by=) and the "mvt" adjustment
# (consecutive and pairwise contrasts), on lmerTest fits, for tests/test_inference.py. The mvt
# p-values are also computed to 1e-7 by mvtnorm::pmvt itself (emmeans' own call stops at
# mvtnorm's default absolute error 1e-3): "p_exact", with mvtnorm's own error estimate
# "p_exact_error" (1e-7 is not always reached in 11 dimensions: ~4e-5 there).
# Run from the repository root:  Rscript tests/reference/r/joint_mvt.R
suppressPackageStartupMessages({library(lmerTest); library(emmeans); library(mvtnorm); library(jsonlite)})
emm_options(msg.interaction = FALSE)
frame <- function(s) {
  s <- as.data.frame(s)
  lapply(as.list(s), function(v) if (is.factor(v)) as.character(v) else v)
}
ortho <- read.csv("hierlmm/datasets/data/Orthodont.csv")
ortho$Subject <- factor(ortho$Subject)
ortho$Sex <- factor(ortho$Sex, levels = c("Male", "Female"))
oats <- read.csv("hierlmm/datasets/data/Oats.csv")
oats$Block <- factor(oats$Block, levels = c("VI", "V", "III", "IV", "II", "I"))
oats$Variety <- factor(oats$Variety, levels = c("Golden Rain", "Marvellous", "Victory"))
oats$N <- factor(oats$nitro)
m1 <- lmer(distance ~ age * Sex + (1 | Subject), ortho)
m2 <- lmer(yield ~ Variety * N + (1 | Block / Variety), oats)
m3 <- lmer(yield ~ Variety + nitro + (1 | Block / Variety), oats)
exact <- function(con) {
  s <- as.data.frame(summary(con, adjust = "none"))
  V <- vcov(con)
  R <- cov2cor(V)
  df <- emmeans:::.fix.df(s$df)
  p <- lapply(seq_len(nrow(s)), function(i) {
    a <- abs(s$t.ratio[i])
    inside <- pmvt(lower = rep(-a, nrow(s)), upper = rep(a, nrow(s)), df = as.integer(df[i]), corr = R,
                   algorithm = GenzBretz(maxpts = 5e6, abseps = 1e-7, releps = 0))
    c(1 - inside, attr(inside, "error"))
  })
  c(frame(summary(con, adjust = "mvt")), list(p_exact = sapply(p, `[`, 1), p_exact_error = sapply(p, `[`, 2)))
}
set.seed(1)
out <- list(
  joint_orthodont = frame(joint_tests(m1)),
  joint_orthodont_satterthwaite = frame(joint_tests(m1, lmer.df = "satterthwaite")),
  joint_oats = frame(joint_tests(m2)),
  joint_oats_by = frame(joint_tests(m2, by = "Variety")),
  joint_oats_additive = frame(joint_tests(m3)),
  consec_n = exact(contrast(emmeans(m2, "N"), "consec")),
  pairs_n = exact(contrast(emmeans(m2, "N"), "pairwise")),
  consec_variety_by_n = exact(contrast(emmeans(m2, "Variety", by = "N"), "consec", by = NULL))
)
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE), "tests/reference/joint_mvt.json")
