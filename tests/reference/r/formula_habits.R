# lme4 fits of formulas written as R users write them: factor(), as.factor(), relevel(),
# factor(levels = ), ns(), bs(), scale(), log1p(), as.numeric(), a factor() in a random term.
# Run from the repository root: Rscript tests/reference/r/formula_habits.R
suppressPackageStartupMessages({library(lme4); library(splines); library(jsonlite)})
d <- sleepstudy
d$dg <- d$Days %/% 3L
d$grp <- ifelse(d$Days %% 2 == 0, "a", ifelse(d$Days %% 3 == 0, "b", "c"))
d$late <- d$Days >= 5
formulas <- c(
  'Reaction ~ factor(dg) + (1 | Subject)',
  'Reaction ~ as.factor(dg) + Days + (1 | Subject)',
  'Reaction ~ relevel(factor(grp), "b") + (1 | Subject)',
  'Reaction ~ relevel(factor(dg), ref = 3) + (1 | Subject)',
  'Reaction ~ factor(dg, levels = c(3, 2, 1, 0)) + (1 | Subject)',
  'Reaction ~ ns(Days, 3) + (1 | Subject)',
  'Reaction ~ ns(Days, df = 4, intercept = FALSE) + (1 | Subject)',
  'Reaction ~ bs(Days, 3) + (1 | Subject)',
  'Reaction ~ scale(Days) + (Days | Subject)',
  'Reaction ~ log1p(Days) + (1 | Subject)',
  'Reaction ~ as.numeric(dg) + (1 | Subject)',
  'Reaction ~ Days + (factor(late) | Subject)'
)
new <- data.frame(Days = c(-1, 2.5, 12), dg = c(0L, 2L, 3L), grp = c("b", "a", "c"), late = c(FALSE, TRUE, TRUE))
out <- lapply(formulas, function(f) {
  m <- lmer(as.formula(f), d, REML = TRUE)
  list(formula = f, fixef = as.list(fixef(m)), logLik = as.numeric(logLik(m)),
       predict = as.numeric(predict(m, newdata = new, re.form = NA)))
})
writeLines(toJSON(list(newdata = new, fits = out), digits = NA, auto_unbox = TRUE),
           "tests/reference/formula_habits.json")
