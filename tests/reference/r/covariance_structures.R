# References for the covariance structures of random-effects terms (hierlmm.covariance):
# glmmTMB 1.1.5 (us, diag, cs, ar1, toep) and nlme (pdSymm, pdDiag, pdIdent, pdCompSymm), REML
# and ML, on nlme's Machines (6 workers x 3 machines x 3 replicates) and lme4's sleepstudy.
# Run from the repository root:  Rscript tests/reference/r/covariance_structures.R
suppressMessages({library(glmmTMB); library(nlme); library(lme4); library(jsonlite)})
data(Machines, package = "nlme")
M <- data.frame(score = Machines$score, Machine = factor(as.character(Machines$Machine), levels = c("A", "B", "C")),
                Worker = factor(as.character(Machines$Worker), levels = as.character(1:6)))
write.csv(M, "tests/reference/machines.csv", row.names = FALSE)
S <- as.data.frame(sleepstudy)

tmb <- function(formula, data, reml) {
  f <- glmmTMB(as.formula(formula), data = data, REML = reml)
  vc <- VarCorr(f)$cond
  list(engine = "glmmTMB", formula = formula, REML = reml, fixef = unname(fixef(f)$cond),
       fixef_names = names(fixef(f)$cond), se = unname(sqrt(diag(vcov(f)$cond))),
       sigma = sigma(f), logLik = as.numeric(logLik(f)), df = attr(logLik(f), "df"),
       D = lapply(vc, function(m) unname(as.matrix(m)[, ])), D_names = lapply(vc, function(m) colnames(m)),
       converged = f$fit$convergence == 0 && isTRUE(f$sdr$pdHess))
}
nl <- function(formula, random, data, reml, label) {
  f <- lme(as.formula(formula), random = random, data = data, method = if (reml) "REML" else "ML")
  D <- matrix(as.numeric(getVarCov(f)), nrow(getVarCov(f)))
  list(engine = "nlme", formula = label, REML = reml, fixef = unname(fixef(f)), fixef_names = names(fixef(f)),
       se = unname(sqrt(diag(vcov(f)))), sigma = f$sigma, logLik = as.numeric(logLik(f)),
       df = attr(logLik(f), "df"), D = list(D))
}
l4 <- function(formula, data, reml) {
  f <- lmer(as.formula(formula), data = data, REML = reml)
  list(engine = "lme4", formula = formula, REML = reml, fixef = unname(fixef(f)), se = unname(sqrt(diag(vcov(f)))),
       sigma = sigma(f), logLik = as.numeric(logLik(f)), df = attr(logLik(f), "df"),
       D = lapply(VarCorr(f), function(m) unname(as.matrix(m)[, ])))
}
# a structure beside a residual SD per level (glmmTMB's dispformula = ~ f is nlme's varIdent)
tmb_disp <- function(formula, data, reml, by) {
  f <- glmmTMB(as.formula(formula), dispformula = as.formula(paste("~", by)), data = data, REML = reml)
  vc <- VarCorr(f)$cond
  sd <- tapply(predict(f, type = "disp"), data[[by]], mean)  # the residual SD of each level
  list(engine = "glmmTMB", formula = formula, variance = by, REML = reml, fixef = unname(fixef(f)$cond),
       fixef_names = names(fixef(f)$cond), se = unname(sqrt(diag(vcov(f)$cond))), sigma = NA,
       residual_sd = as.list(sd), logLik = as.numeric(logLik(f)), df = attr(logLik(f), "df"),
       D = lapply(vc, function(m) unname(as.matrix(m)[, ])), converged = f$fit$convergence == 0 && isTRUE(f$sdr$pdHess))
}
out <- list()
for (reml in c(TRUE, FALSE)) {
  tag <- if (reml) "reml" else "ml"
  for (s in c("us", "diag", "cs", "ar1", "toep"))
    out[[paste0("machines_", s, "_", tag)]] <- tmb(sprintf("score ~ Machine + %s(0 + Machine | Worker)", s), M, reml)
  out[[paste0("machines_lme4_us_", tag)]] <- l4("score ~ Machine + (0 + Machine | Worker)", M, reml)
  out[[paste0("machines_nlme_us_", tag)]] <- nl("score ~ Machine", list(Worker = pdSymm(~ 0 + Machine)), M, reml,
                                                "score ~ Machine + (0 + Machine | Worker)")
  out[[paste0("machines_nlme_diag_", tag)]] <- nl("score ~ Machine", list(Worker = pdDiag(~ 0 + Machine)), M, reml,
                                                  "score ~ Machine + diag(0 + Machine | Worker)")
  out[[paste0("machines_nlme_homdiag_", tag)]] <- nl("score ~ Machine", list(Worker = pdIdent(~ 0 + Machine)), M,
                                                     reml, "score ~ Machine + homdiag(0 + Machine | Worker)")
  out[[paste0("machines_nlme_homcs_", tag)]] <- nl("score ~ Machine", list(Worker = pdCompSymm(~ 0 + Machine)), M,
                                                   reml, "score ~ Machine + homcs(0 + Machine | Worker)")
  out[[paste0("sleepstudy_diag_", tag)]] <- tmb("Reaction ~ Days + diag(Days | Subject)", S, reml)
  out[[paste0("sleepstudy_nlme_homdiag_", tag)]] <- nl("Reaction ~ Days", list(Subject = pdIdent(~ Days)), S, reml,
                                                       "Reaction ~ Days + homdiag(Days | Subject)")
  out[[paste0("sleepstudy_lme4_uncorr_", tag)]] <- l4("Reaction ~ Days + (Days || Subject)", S, reml)
}
out$machines_ar1_varident_reml <- tmb_disp("score ~ Machine + ar1(0 + Machine | Worker)", M, TRUE, "Machine")
out$machines_diag_varident_ml <- tmb_disp("score ~ Machine + diag(0 + Machine | Worker)", M, FALSE, "Machine")
out$versions <- list(glmmTMB = as.character(packageVersion("glmmTMB")), nlme = as.character(packageVersion("nlme")),
                     lme4 = as.character(packageVersion("lme4")))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "tests/reference/covariance_structures.json")
