# R's names of coefficients, terms and random effects (lme4 + lmerTest), for hierlmm's names:
# factor levels (SexFemale), logicals as factors (lateTRUE; (0 + late | g) has two columns),
# I(Days^2), poly(Days, 2)1, ns(Days, 3)1, and an interaction's factors in the order of their
# variables' first appearance in the formula (ffb:x for ff + x + x:ff).
# Run from the repository root: Rscript tests/reference/r/r_names.R
suppressPackageStartupMessages({library(lmerTest); library(splines); library(emmeans); library(jsonlite)})
s <- read.csv("hierlmm/datasets/data/sleepstudy.csv")
s$Subject <- factor(s$Subject)
s$late <- s$Days >= 5
s$ff <- factor(c("a", "b", "c")[s$Days %% 3 + 1])
s$x <- s$Days / 10
O <- read.csv("hierlmm/datasets/data/Orthodont.csv")
O$Sex <- factor(O$Sex, levels = c("Male", "Female"))
O$Subject <- factor(O$Subject)
cases <- list(
  list(data = "Orthodont", formula = "distance ~ age * Sex + (1 | Subject)"),
  list(data = "Orthodont", formula = "distance ~ Sex + age + age:Sex + (1 | Subject)"),
  list(data = "sleepstudy", formula = "Reaction ~ Days + I(Days^2) + (Days | Subject)"),
  list(data = "sleepstudy", formula = "Reaction ~ poly(Days, 2) + (1 | Subject)"),
  list(data = "sleepstudy", formula = "Reaction ~ ns(Days, 3) + (1 | Subject)"),
  list(data = "sleepstudy", formula = "Reaction ~ late * Days + (1 | Subject)"),
  list(data = "sleepstudy", formula = "Reaction ~ Days + (0 + late | Subject)"),
  list(data = "sleepstudy", formula = "Reaction ~ late:Days + (1 | Subject)"),
  list(data = "sleepstudy", formula = "Reaction ~ ff + x + x:ff + (1 | Subject)"),
  list(data = "sleepstudy", formula = "Reaction ~ x:ff + ff + x + (1 | Subject)"),
  list(data = "sleepstudy", formula = "Reaction ~ x * ff + late + (1 | Subject)"),
  list(data = "sleepstudy", formula = "Reaction ~ ff * late + (1 | Subject)")
)
out <- lapply(cases, function(cs) {
  d <- if (cs$data == "Orthodont") O else s
  m <- lmer(as.formula(cs$formula), d, REML = TRUE)
  a <- anova(m)
  re <- ranef(m)[[1]]
  list(data = cs$data, formula = cs$formula, fixef_names = names(fixef(m)), fixef = unname(fixef(m)),
       vcov_names = colnames(vcov(m)), anova_terms = rownames(a), anova_F = unname(a[["F value"]]),
       ranef_names = colnames(re), logLik = as.numeric(logLik(m)))
})
# emmeans of a logical: its levels FALSE, TRUE and their pairs' name
m <- lmer(Reaction ~ late * Days + (1 | Subject), s)
e <- as.data.frame(summary(emmeans(m, "late")))
pr <- as.data.frame(summary(pairs(emmeans(m, "late"))))
logical_emmeans <- list(late = as.character(e$late), emmean = e$emmean, SE = e$SE, contrast = as.character(pr$contrast))
writeLines(toJSON(list(fits = out, logical_emmeans = logical_emmeans), digits = NA, auto_unbox = FALSE),
           "tests/reference/r_names.json")
