# lme4/lmerTest with prior weights and offsets (issue 14). Run from the repository root:
#   Rscript tests/reference/r/weights_refs.R
# sleepstudy with random weights w and a random offset o (drawn here, stored in the JSON);
# Kenward-Roger of the weighted model from the explicitly whitened model, since pbkrtest's KR
# ignores prior weights (its V is ZDZ' + sigma^2 I).
suppressPackageStartupMessages({library(lmerTest); library(jsonlite)})
set.seed(1)
d <- lme4::sleepstudy
d$w <- round(runif(nrow(d), 0.5, 3), 4)
d$o <- round(rnorm(nrow(d)), 4)
coefs <- function(cf) list(names = rownames(cf), estimate = unname(cf[, 1]), se = unname(cf[, 2]),
                           df = unname(cf[, "df"]), t = unname(cf[, "t value"]))
summ <- function(m) {
  re <- as.data.frame(ranef(m, condVar = TRUE))
  list(crit = if (isREML(m)) REMLcrit(m) else deviance(m), logLik = as.numeric(logLik(m)),
       theta = unname(getME(m, "theta")), sigma = sigma(m), fixef = unname(fixef(m)),
       satterthwaite = coefs(summary(m)$coefficients), fitted = unname(fitted(m)),
       pearson_scaled = unname(residuals(m, type = "pearson", scaled = TRUE)),
       condval = re$condval, condsd = re$condsd)
}
m_w <- lmer(Reaction ~ Days + (Days | Subject), d, weights = w)
d$sw <- sqrt(d$w); d$yw <- d$Reaction * d$sw; d$swd <- d$Days * d$sw
m_white <- lmer(yw ~ 0 + sw + swd + (0 + sw + swd | Subject), d)
m_wo_ml <- lmer(Reaction ~ Days + offset(o) + (Days | Subject), d, weights = w, REML = FALSE)
m_o <- lmer(Reaction ~ Days + offset(2 * o) + (1 | Subject), d)
new <- data.frame(Days = c(0, 4.5, 9), Subject = factor(c("308", "335", "372"), levels = levels(d$Subject)),
                  o = c(1, -1, 0.5))
out <- list(
  data = list(w = d$w, o = d$o),
  weighted_reml = c(summ(m_w), list(kr_whitened = coefs(summary(m_white, ddf = "Kenward-Roger")$coefficients),
                                    crit_whitened = REMLcrit(m_white),
                                    theta_whitened = unname(getME(m_white, "theta")))),
  weighted_offset_ml = c(summ(m_wo_ml), list(anova_lrt_days = {
    a <- anova(update(m_wo_ml, . ~ . - Days), m_wo_ml); list(Chisq = a$Chisq[2], p = a[["Pr(>Chisq)"]][2])
  })),
  offset_reml = c(summ(m_o), list(newdata = new, predict = unname(predict(m_o, newdata = new)),
                                  predict_population = unname(predict(m_o, newdata = new, re.form = NA)))),
  versions = list(lme4 = as.character(packageVersion("lme4")), lmerTest = as.character(packageVersion("lmerTest"))))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null"),
           "tests/reference/weights_offsets.json")
