# Fits a batch of models with lme4 + lmerTest (+ pbkrtest, nlme; glmmTMB for covariance
# structures) and writes what they report.
# Usage: Rscript fit_r.R cases.json results.json
# cases.json: a list of {id, formula, csv, factors: {col: {levels, ordered}}, reml, kr, profile,
# lrt_drop, ar1}. R's start-up is paid once per batch. Every number in results.json is R's.
suppressPackageStartupMessages({
  library(emmeans)
  library(jsonlite)
  library(lme4)
  library(lmerTest)
  library(nlme)
})
# glmmTMB is loaded where a case needs it (glmmTMB::), after lme4: its masking of lme4's
# functions would otherwise change what the lmer cases call
emm_options(pbkrtest.limit = Inf, lmerTest.limit = Inf, msg.interaction = FALSE)
args <- commandArgs(trailingOnly = TRUE)
cases <- fromJSON(args[1], simplifyVector = FALSE)

read_case <- function(cs) {
  # pandas writes a missing value as an empty field: only that is missing ("NA", "None" and
  # "nan" are level names some cases use)
  d <- read.csv(cs$csv, stringsAsFactors = FALSE, na.strings = "", strip.white = FALSE)
  for (col in setdiff(names(cs$factors), "g_new")) {
    f <- cs$factors[[col]]
    d[[col]] <- factor(d[[col]], levels = unlist(f$levels), ordered = isTRUE(f$ordered))
  }
  d
}

named <- function(x) as.list(x)

anova_list <- function(a) {
  list(terms = I(rownames(a)), SumSq = I(a[["Sum Sq"]]), MeanSq = I(a[["Mean Sq"]]),
       NumDF = I(a[["NumDF"]]), DenDF = I(a[["DenDF"]]), F = I(a[["F value"]]), p = I(a[["Pr(>F)"]]))
}

coef_list <- function(cf) {
  list(names = I(rownames(cf)), se = I(unname(cf[, "Std. Error"])), df = I(unname(cf[, "df"])),
       t = I(unname(cf[, "t value"])), p = I(unname(cf[, "Pr(>|t|)"])))
}

catch <- function(expr) tryCatch(expr, error = function(e) list(error = conditionMessage(e)))

inference <- function(m, kr, cs) {
  out <- list(satterthwaite = coef_list(summary(m)$coefficients),
              anova3_S = catch(anova_list(anova(m, type = 3))),
              anova2_S = catch(anova_list(anova(m, type = 2))),
              anova1_S = catch(anova_list(anova(m, type = 1))),
              drop1_S = catch(anova_list(drop1(m))),
              emmeans = catch(emm_case(m, cs)))
  if (kr) {
    out$kr <- catch(coef_list(summary(m, ddf = "Kenward-Roger")$coefficients))
    out$anova3_KR <- catch(anova_list(anova(m, type = 3, ddf = "Kenward-Roger")))
    out$anova2_KR <- catch(anova_list(anova(m, type = 2, ddf = "Kenward-Roger")))
    out$drop1_KR <- catch(anova_list(drop1(m, ddf = "Kenward-Roger")))
  }
  out
}

# lmer on data d, with the case's prior-weight column (weights = <column>, as users write it,
# so that update() and drop1() re-evaluate it in the data)
lmer_case <- function(cs, d) {
  if (is.null(cs$weights)) return(lmerTest::lmer(as.formula(cs$formula), data = d, REML = isTRUE(cs$reml)))
  eval(bquote(lmerTest::lmer(as.formula(cs$formula), data = d, REML = isTRUE(cs$reml),
                             weights = .(as.name(cs$weights)))))
}

# emmeans of the first factor of the fixed part (by the ordered factor o when both are there),
# and its pairs() with Tukey's adjustment; joint_tests of every model term (covariates at their
# mean +- 1); Kenward-Roger df where the case compares KR
emm_case <- function(m, cs) {
  vars <- all.vars(lme4::nobars(as.formula(cs$formula))[[3]])
  specs <- intersect(c("f", "o"), vars)
  if (!length(specs)) return(list(none = TRUE))
  by <- if (length(specs) == 2) "o" else NULL
  e <- emmeans::emmeans(m, specs[1], by = by, lmer.df = if (isTRUE(cs$kr)) "kenward-roger" else "satterthwaite")
  s <- as.data.frame(summary(e))
  pr <- as.data.frame(summary(pairs(e)))
  jt <- tryCatch({
    j <- as.data.frame(emmeans::joint_tests(m, lmer.df = if (isTRUE(cs$kr)) "kenward-roger" else "satterthwaite"))
    list(terms = I(as.character(j[["model term"]])), df1 = I(j$df1), df2 = I(j$df2), F = I(j$F.ratio),
         p = I(j$p.value))
  }, error = function(e) list(error = conditionMessage(e)))
  list(specs = specs[1], by = by, ddf = if (isTRUE(cs$kr)) "kenward-roger" else "satterthwaite", joint = jt,
       emmean = I(s$emmean), SE = I(s$SE), df = I(s$df), lower = I(s$lower.CL), upper = I(s$upper.CL),
       contrast = I(as.character(pr$contrast)), estimate = I(pr$estimate), cSE = I(pr$SE), cdf = I(pr$df),
       t = I(pr$t.ratio), p = I(pr$p.value))
}

profile_case <- function(m) catch({
  pw <- character(0)
  ci <- withCallingHandlers(confint(m, method = "profile", oldNames = FALSE, quiet = TRUE),
    warning = function(w) { pw <<- c(pw, conditionMessage(w)); invokeRestart("muffleWarning") })
  list(names = I(rownames(ci)), lower = I(unname(ci[, 1])), upper = I(unname(ci[, 2])), warnings = I(pw))
})

fit_lmer <- function(cs, d) {
  warns <- character(0)
  m <- withCallingHandlers(
    lmer_case(cs, d),
    warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") },
    message = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleMessage") })
  out <- list(ok = TRUE, warnings = I(warns))
  out$fixef <- named(fixef(m))
  out$fixef_names <- I(names(fixef(m)))
  V <- as.matrix(vcov(m))
  out$se <- named(sqrt(diag(V)))
  out$vcov <- unname(V)
  out$theta <- I(unname(getME(m, "theta")))
  out$sigma <- sigma(m)
  out$nobs <- nobs(m)
  out$rank_XZ <- qr(cbind(as.matrix(getME(m, "X")), as.matrix(t(getME(m, "Zt")))))$rank
  out$logLik <- as.numeric(logLik(m))
  out$crit <- if (isTRUE(cs$reml)) unname(getME(m, "devcomp")$cmp[["REML"]]) else unname(deviance(m))
  out$singular <- isSingular(m)
  vc <- VarCorr(m)
  out$varcorr <- lapply(seq_along(vc), function(i) {
    v <- vc[[i]]
    list(group = names(vc)[i], terms = I(colnames(v)), cov = unname(as.matrix(v)))
  })
  re <- as.data.frame(ranef(m, condVar = TRUE))
  out$ranef <- list(grpvar = I(as.character(re$grpvar)), term = I(as.character(re$term)),
                    grp = I(as.character(re$grp)), condval = I(re$condval), condsd = I(re$condsd))
  out$coef <- catch(lapply(coef(m), function(x) list(levels = I(rownames(x)), names = I(colnames(x)),
                                                    values = unname(as.matrix(x)))))
  out$r2 <- catch({
    r <- suppressWarnings(suppressMessages(performance::r2_nakagawa(m)))
    list(marginal = unname(r$R2_marginal), conditional = unname(r$R2_conditional))
  })
  # Nakagawa & Schielzeth / Johnson's definition from lme4's own matrices: the random part's
  # variance averaged over the rows, sigma^2 mean_i |Lambda' z_i|^2
  out$r2_definition <- catch({
    vf <- var(as.vector(getME(m, "X") %*% fixef(m)))
    vr <- sigma(m)^2 * mean(Matrix::colSums((getME(m, "Lambdat") %*% getME(m, "Zt"))^2))
    tot <- vf + vr + sigma(m)^2
    list(marginal = vf / tot, conditional = (vf + vr) / tot)
  })
  out$drop1 <- catch({
    a <- suppressWarnings(suppressMessages(drop1(as(m, "lmerMod"), test = "Chisq")))
    list(terms = I(rownames(a)), npar = I(a$npar), AIC = I(a$AIC), LRT = I(a$LRT), p = I(a[["Pr(Chi)"]]))
  })
  out$fitted <- I(unname(fitted(m)))
  if (!is.null(cs$newdata)) {
    out$predict_new <- catch({
      nd <- read.csv(cs$newdata, stringsAsFactors = FALSE, na.strings = "", strip.white = FALSE)
      for (col in setdiff(names(cs$factors), c("g", "g_new"))) if (col %in% names(nd))
        nd[[col]] <- factor(nd[[col]], levels = levels(d[[col]]), ordered = is.ordered(d[[col]]))
      nd$g <- factor(nd$g, levels = unlist(cs$factors$g_new$levels))
      I(unname(predict(m, newdata = nd, allow.new.levels = TRUE)))
    })
  }
  out <- c(out, inference(m, isTRUE(cs$kr), cs))
  if (!is.null(cs$rescale) || !is.null(cs$centre)) {
    # the same model in other coordinates: a covariate on a scale far from 1 divided by its SD
    # (the same hypotheses, a well-scaled X), a random slope's covariate far from 0 standardised
    # (a reparametrisation; lme4's theta, in which lmerTest and pbkrtest differentiate, then
    # well-conditioned). The test applies the same transformation to the data in Python.
    d2 <- d
    if (!is.null(cs$rescale)) d2[[cs$rescale]] <- d2[[cs$rescale]] / sd(d2[[cs$rescale]], na.rm = TRUE)
    if (!is.null(cs$centre)) {
      v <- d2[[cs$centre]]
      d2[[cs$centre]] <- (v - mean(v, na.rm = TRUE)) / sd(v, na.rm = TRUE)
    }
    m2 <- suppressWarnings(suppressMessages(lmer_case(cs, d2)))
    out$rescaled <- inference(m2, isTRUE(cs$kr), cs)
    out$rescaled$theta <- I(unname(getME(m2, "theta")))
    out$rescaled$crit <- if (isTRUE(cs$reml)) unname(getME(m2, "devcomp")$cmp[["REML"]]) else unname(deviance(m2))
    if (isTRUE(cs$profile) && !is.null(cs$centre)) out$rescaled$profile <- profile_case(m2)
  }
  if (isTRUE(cs$profile)) out$profile <- profile_case(m)
  if (!is.null(cs$lrt_drop)) {
    out$lrt <- catch({
      small <- update(m, as.formula(paste(". ~ . -", cs$lrt_drop)))
      a <- suppressMessages(anova(small, m))
      list(npar = I(a$npar), AIC = I(a$AIC), BIC = I(a$BIC), logLik = I(a$logLik), deviance = I(a$deviance),
           Chisq = a$Chisq[2], Df = a$Df[2], p = a[["Pr(>Chisq)"]][2])
    })
  }
  out
}

fit_ar1 <- function(cs, d) {
  random <- as.formula(paste("~", if (is.null(cs$ar1_random)) "1" else cs$ar1_random, "| g"))
  fit <- function(opt) lme(y ~ x, random = random, data = d, correlation = corAR1(form = ~ 1 | g),
                           method = if (isTRUE(cs$reml)) "REML" else "ML",
                           control = lmeControl(maxIter = 200, msMaxIter = 200, msMaxEval = 2000, opt = opt))
  # nlme's default optimiser (nlminb) stops with an error on some fits that optim completes
  m <- tryCatch(fit("nlminb"), error = function(e) fit("optim"))
  list(ok = TRUE, fixef = named(fixef(m)), fixef_names = names(fixef(m)),
       se = named(sqrt(diag(vcov(m)))), sigma = m$sigma, logLik = as.numeric(logLik(m)),
       random_sd = as.numeric(VarCorr(m)[1, "StdDev"]),
       Phi = unname(coef(m$modelStruct$corStruct, unconstrained = FALSE)))
}

# a random term with a covariance structure: glmmTMB's fit of the same formula, or nlme's lme
# with pdCompSymm / pdIdent for homcs / homdiag (one grouping factor g)
fit_structured <- function(cs, d) {
  reml <- isTRUE(cs$reml)
  if (cs$structure == "mmrm") {  # gls: unstructured correlation of the visits f within g, an SD per visit
    d$t <- as.integer(d$f)
    m <- gls(as.formula(cs$formula), data = d, correlation = corSymm(form = ~ t | g),
             weights = varIdent(form = ~ 1 | f), method = if (reml) "REML" else "ML",
             control = glsControl(maxIter = 500, msMaxIter = 500))
    ratio <- coef(m$modelStruct$varStruct, unconstrained = FALSE, allCoef = TRUE)
    k <- nlevels(d$f)
    R <- diag(k)
    R[lower.tri(R)] <- coef(m$modelStruct$corStruct, unconstrained = FALSE)
    R[upper.tri(R)] <- t(R)[upper.tri(R)]
    # gls's vcov of an ML fit carries sigma^2 N/(N - p); the SEs here are the ML sigma's, as lme4's
    factor <- if (reml) 1 else m$dims$N / (m$dims$N - m$dims$p)
    return(list(ok = TRUE, engine = "nlme-gls", fixef = named(coef(m)), fixef_names = I(names(coef(m))),
                se = named(sqrt(diag(vcov(m)) / factor)), sigma = m$sigma, logLik = as.numeric(logLik(m)),
                df = attr(logLik(m), "df"), residual_sd = as.list(m$sigma * ratio), R = unname(R),
                converged = TRUE))
  }
  if (cs$structure %in% c("homcs", "homdiag")) {
    pd <- switch(cs$structure, homcs = pdCompSymm, homdiag = pdIdent)
    fixed <- lme4::nobars(as.formula(sub(paste0(cs$structure, "\\("), "(", cs$formula)))
    m <- lme(fixed, random = list(g = pd(as.formula(paste("~", cs$struct_expr)))), data = d,
             method = if (reml) "REML" else "ML",
             control = lmeControl(maxIter = 500, msMaxIter = 500, msMaxEval = 5000))
    V <- getVarCov(m)
    D <- list(matrix(as.numeric(V), nrow(V)))
    return(list(ok = TRUE, engine = "nlme", fixef = named(fixef(m)), fixef_names = I(names(fixef(m))),
                se = named(sqrt(diag(vcov(m)))), sigma = m$sigma, logLik = as.numeric(logLik(m)),
                df = attr(logLik(m), "df"), D = D, converged = TRUE))
  }
  m <- suppressWarnings(glmmTMB::glmmTMB(as.formula(cs$formula), data = d, REML = reml))
  vc <- glmmTMB::VarCorr(m)$cond
  b <- glmmTMB::fixef(m)$cond
  D <- lapply(vc, function(v) unname(matrix(as.numeric(v), nrow(v))))
  list(ok = TRUE, engine = "glmmTMB", fixef = named(b), fixef_names = I(names(b)),
       se_tmb = named(sqrt(diag(vcov(m)$cond))), se = named(catch(gls_se(cs, d, D, sigma(m)^2))),
       sigma = sigma(m), logLik = as.numeric(logLik(m)), df = attr(logLik(m), "df"), D = D,
       converged = m$fit$convergence == 0 && isTRUE(m$sdr$pdHess))
}

# sqrt(diag((X'V^-1 X)^-1)) at glmmTMB's estimates, V = sigma^2 I + sum_t Z_t (I x D_t) Z_t' (dense):
# the SEs lme4 and nlme report. glmmTMB's own vcov() inverts its joint Hessian in (beta, theta)
# and differs by up to ~1% (seed 20261125's s0001: 0.026006 where this gives 0.025769)
gls_se <- function(cs, d, D, s2) {
  f <- as.formula(gsub("(us|diag|homdiag|homcs|cs|ar1|toep)\\(", "(", cs$formula))
  rt <- lme4::mkReTrms(lme4::findbars(f), model.frame(lme4::subbars(f), d))
  V <- diag(s2, nrow(d))
  for (i in seq_along(rt$Ztlist)) {
    grp <- trimws(sub("^.*\\|", "", names(rt$Ztlist)[i]))
    Zt <- rt$Ztlist[[i]]
    k <- nrow(D[[grp]])
    V <- V + as.matrix(Matrix::t(Zt) %*% kronecker(diag(nrow(Zt) / k), D[[grp]]) %*% Zt)
  }
  X <- model.matrix(lme4::nobars(f), d)
  setNames(sqrt(diag(solve(crossprod(X, solve(V, X))))), colnames(X))
}

results <- lapply(cases, function(cs) {
  d <- read_case(cs)
  res <- tryCatch(if (!is.null(cs$structure)) fit_structured(cs, d)
                  else if (isTRUE(cs$ar1)) fit_ar1(cs, d) else fit_lmer(cs, d),
                  error = function(e) list(ok = FALSE, error = conditionMessage(e)))
  res$id <- cs$id
  res
})
writeLines(toJSON(results, auto_unbox = TRUE, digits = NA, na = "null", null = "null"), args[2])
