# emmeans (R's emmeans package) on lmerTest fits, for tests/test_inference.py. Run from the
# repository root:  Rscript tests/reference/r/emmeans_refs.R
suppressPackageStartupMessages({library(lmerTest); library(emmeans); library(jsonlite)})
emm_options(msg.interaction = FALSE)
frame <- function(e) {
  s <- as.data.frame(summary(e))
  lapply(as.list(s), function(v) if (is.factor(v)) as.character(v) else v)
}
ortho <- as.data.frame(nlme::Orthodont)
ortho$Subject <- factor(as.character(ortho$Subject))
ortho$Sex <- factor(as.character(ortho$Sex), levels = c("Male", "Female"))
m1 <- lmer(distance ~ age * Sex + (age | Subject), ortho)
m3 <- lmer(distance ~ Sex * (age + I(age^2)) + (1 | Subject), ortho)
oats <- as.data.frame(nlme::Oats)
oats$Block <- factor(as.character(oats$Block), levels = levels(oats$Block))
oats$Variety <- factor(as.character(oats$Variety), levels = levels(oats$Variety))
oats$N <- factor(oats$nitro)
m2 <- lmer(yield ~ Variety * N + (1 | Block / Variety), oats)
out <- list(
  orthodont = list(theta = unname(getME(m1, "theta")),
    by_age = frame(emmeans(m1, "Sex", by = "age", at = list(age = c(8, 14)))),
    sex_satterthwaite = frame(emmeans(m1, "Sex", lmer.df = "satterthwaite")),
    pairs_by_age = frame(pairs(emmeans(m1, "Sex", by = "age", at = list(age = c(8, 14))))),
    trends_age = frame(emtrends(m1, "Sex", var = "age")),
    trends_age_satterthwaite = frame(emtrends(m1, "Sex", var = "age", lmer.df = "satterthwaite")),
    trends_quadratic = frame(emtrends(m3, "Sex", var = "age")), theta_quadratic = unname(getME(m3, "theta"))),
  oats = list(theta = unname(getME(m2, "theta")),
    variety = frame(emmeans(m2, "Variety")),
    variety_n = frame(emmeans(m2, c("Variety", "N"))),
    pairs_n = frame(pairs(emmeans(m2, "N"))),
    pairs_n_bonferroni = frame(pairs(emmeans(m2, "N"), adjust = "bonferroni")),
    pairs_n_holm = frame(pairs(emmeans(m2, "N"), adjust = "holm")),
    pairs_n_sidak = frame(pairs(emmeans(m2, "N"), adjust = "sidak")),
    pairs_n_fdr = frame(pairs(emmeans(m2, "N"), adjust = "fdr")),
    pairs_n_scheffe = frame(pairs(emmeans(m2, "N"), adjust = "scheffe")),
    pairs_n_by_variety_holm = frame(pairs(emmeans(m2, "N", by = "Variety"), adjust = "holm")),
    trt_vs_ctrl = frame(contrast(emmeans(m2, "N"), method = "trt.vs.ctrl")),
    poly = frame(contrast(emmeans(m2, "N"), method = "poly")),
    eff = frame(contrast(emmeans(m2, "N"), method = "eff")),
    consec_holm = frame(contrast(emmeans(m2, "N"), method = "consec", adjust = "holm")),
    trt_vs_ctrl_by_variety = frame(contrast(emmeans(m2, "N", by = "Variety"), method = "trt.vs.ctrl")),
    eff_scheffe = frame(contrast(emmeans(m2, "Variety"), method = "eff", adjust = "scheffe"))),
  versions = list(emmeans = as.character(packageVersion("emmeans")), lmerTest = as.character(packageVersion("lmerTest"))))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null"), "tests/reference/emmeans.json")
