# References for residual structures with several parameters (hierlmm.residual): nlme's gls with
# corSymm and varIdent (the MMRM of tests/reference/mmrm_sim.csv: 60 subjects, 4 visits, some
# missed) and lme with varIdent / corSymm beside a random intercept, REML and ML; emmeans on the
# gls fit with Satterthwaite df (emmeans' mode = "satterthwaite" for gls).
# Run from the repository root:  Rscript tests/reference/r/residual_structures.R
suppressMessages({library(nlme); library(emmeans); library(jsonlite)})
d <- read.csv("tests/reference/mmrm_sim.csv")
d$visit <- factor(d$visit, levels = c("V1", "V2", "V3", "V4"))
d$arm <- factor(d$arm, levels = c("pbo", "trt"))
d$id <- factor(d$id)
d$t <- as.integer(d$visit)
O <- read.csv("hierlmm/datasets/data/Orthodont.csv")
O$Sex <- factor(O$Sex, levels = c("Male", "Female"))
O$Subject <- factor(O$Subject)
O$occ <- factor(O$age, levels = c(8, 10, 12, 14))
O$t <- as.integer(O$occ)

out <- list()
pack <- function(m, what) {
  V <- tryCatch(getVarCov(m, individual = what$individual, type = what$type), error = function(e) {
    # gls without a correlation: V_i = sigma^2 diag(delta_row^2) over the individual's rows
    rows <- which(d$id == what$individual)
    diag(m$sigma^2 / varWeights(m$modelStruct$varStruct)[rows]^2, length(rows))
  })
  b <- if (inherits(m, "lme")) fixef(m) else coef(m)
  res <- list(fixef = unname(b), fixef_names = names(b), se = unname(sqrt(diag(vcov(m)))),
              sigma = m$sigma, logLik = as.numeric(logLik(m)), df = attr(logLik(m), "df"),
              V = unname(matrix(as.numeric(if (is.list(V)) V[[1]] else V), nrow(if (is.list(V)) V[[1]] else V))))
  cs <- m$modelStruct$corStruct
  if (!is.null(cs)) res$cor <- unname(as.numeric(coef(cs, unconstrained = FALSE)))
  vs <- m$modelStruct$varStruct
  if (!is.null(vs)) {  # nlme's reference level is the first in the order nlme sorts the data (lme: by group)
    ratio <- coef(vs, unconstrained = FALSE, allCoef = TRUE)
    res$varident <- unname(as.numeric(ratio))
    res$residual_sd <- as.list(m$sigma * ratio)  # per level, by name: free of the reference's choice
  }
  # gls's vcov for ML fits uses sigma^2 N/(N - p) (lme's and lme4's use the ML sigma^2)
  res$vcov_factor <- if (inherits(m, "gls") && m$method == "ML") m$dims$N / (m$dims$N - m$dims$p) else 1
  res
}
for (reml in c(TRUE, FALSE)) {
  tag <- if (reml) "reml" else "ml"
  meth <- if (reml) "REML" else "ML"
  g <- gls(y ~ arm * visit, data = d, correlation = corSymm(form = ~ t | id), weights = varIdent(form = ~ 1 | visit),
           method = meth)
  out[[paste0("mmrm_us_", tag)]] <- c(list(formula = "y ~ arm * visit", residual = "Unstructured", variance = "visit",
                                           group = "id", time = "visit", data = "mmrm", REML = reml),
                                      pack(g, list(individual = "id001", type = NULL)))
  if (reml) {
    e <- emmeans(g, ~ arm | visit, mode = "satterthwaite")
    s <- as.data.frame(summary(e))
    pr <- as.data.frame(summary(pairs(e)))
    out$mmrm_us_reml$emmeans <- list(emmean = s$emmean, SE = s$SE, df = s$df, contrast_estimate = pr$estimate,
                                     contrast_SE = pr$SE, contrast_df = pr$df, contrast_p = pr$p.value)
  }
  g2 <- gls(y ~ arm * visit, data = d, correlation = corSymm(form = ~ t | id), method = meth)
  out[[paste0("mmrm_cor_only_", tag)]] <- c(list(formula = "y ~ arm * visit", residual = "Unstructured",
                                                 group = "id", time = "visit", data = "mmrm", REML = reml),
                                            pack(g2, list(individual = "id001", type = NULL)))
  g3 <- gls(y ~ arm * visit, data = d, weights = varIdent(form = ~ 1 | visit), method = meth)
  out[[paste0("mmrm_varident_only_", tag)]] <- c(list(formula = "y ~ arm * visit", variance = "visit",
                                                      data = "mmrm", REML = reml),
                                                 pack(g3, list(individual = "id001", type = NULL)))
  m <- lme(distance ~ age + Sex, random = ~ 1 | Subject, data = O, weights = varIdent(form = ~ 1 | Sex),
           method = meth)
  out[[paste0("orthodont_int_varident_", tag)]] <- c(
    list(formula = "distance ~ age + Sex + (1 | Subject)", variance = "Sex", data = "Orthodont", REML = reml),
    pack(m, list(individual = "M01", type = "marginal")))
  # (a random intercept beside corSymm is not identifiable: the intercept's variance and a common
  # shift of the correlations are one direction; nlme stops somewhere on it)
  m2 <- gls(distance ~ age + Sex, data = O, correlation = corSymm(form = ~ t | Subject),
            weights = varIdent(form = ~ 1 | occ), method = meth)
  out[[paste0("orthodont_gls_us_", tag)]] <- c(
    list(formula = "distance ~ age + Sex", residual = "Unstructured", variance = "occ", time = "occ",
         group = "Subject", data = "Orthodont", REML = reml),
    pack(m2, list(individual = "M01", type = NULL)))
  # a structured random term beside a residual structure: pdDiag with corAR1, pdCompSymm with varIdent
  O$Sub2 <- O$Subject
  m3 <- lme(distance ~ age + Sex, random = list(Subject = pdDiag(~ age)), data = O,
            correlation = corAR1(form = ~ 1 | Subject), method = meth)
  out[[paste0("orthodont_diag_ar1_", tag)]] <- c(
    list(formula = "distance ~ age + Sex + diag(age | Subject)", residual = "AR1", group = "Subject",
         data = "Orthodont", REML = reml), pack(m3, list(individual = "M01", type = "marginal")))
}
out$versions <- list(nlme = as.character(packageVersion("nlme")), emmeans = as.character(packageVersion("emmeans")))
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "tests/reference/residual_structures.json")
