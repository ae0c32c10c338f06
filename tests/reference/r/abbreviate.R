# R's abbreviate(minlength = 6) of coefficient names, as summary(lmer) heads the columns of
# the fixed effects' correlation matrix. Run from the repository root: Rscript tests/reference/r/abbreviate.R
suppressPackageStartupMessages(library(jsonlite))
sets <- list(
  c("(Intercept)", "VarietyMarvellous", "VarietyVictory", "nitro", "VarietyMarvellous:nitro", "VarietyVictory:nitro"),
  c("(Intercept)", "Days", "I(Days^2)", "SexFemale", "age:SexFemale", "poly(Days, 2)1", "poly(Days, 2)2"),
  c("(Intercept)", "treatmentB", "treatmentC", "time", "treatmentB:time", "treatmentC:time", "log(dose + 1)"),
  c("(Intercept)", "f02", "f03", "o.L", "o.Q", "o.C", "o^4", "x", "lateTRUE", "aLongName Here", "aLongName There"))
out <- lapply(sets, function(s) list(names = s, abbreviated = unname(abbreviate(s, minlength = 6))))
writeLines(toJSON(out, auto_unbox = TRUE), "tests/reference/abbreviate.json")
