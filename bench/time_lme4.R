# Times lme4::lmer (or glmmTMB) on a CSV: Rscript time_lme4.R DATA.csv "FORMULA" REPS [LEVELS.json] [ENGINE]
# ENGINE: "lme4" (default) or "glmmTMB". Prints JSON {"median":..,"min":..,"max":..,"reps":..,"evals":..}
# (seconds; evals: the optimiser's objective evaluations of one fit, lme4's optinfo$feval or
# nlminb's function evaluations in glmmTMB), after one warm-up fit.
args <- commandArgs(trailingOnly = TRUE)
engine <- if (length(args) >= 5) args[5] else "lme4"
here <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(), value = TRUE)))
source(file.path(here, "read_data.R"))
levels_json <- if (length(args) >= 4 && nzchar(args[4]) && args[4] != "NA") args[4] else NA
d <- read_bench_data(args[1], levels_json)
form <- as.formula(args[2])
reps <- as.integer(args[3])
if (engine == "glmmTMB") {
  suppressMessages(library(glmmTMB))
  fit_once <- function() glmmTMB(form, data = d, REML = TRUE)
  evals <- function(f) unname(f$fit$evaluations[["function"]])
} else {
  suppressMessages(library(lme4))
  fit_once <- function() lmer(form, data = d, REML = TRUE)
  evals <- function(f) f@optinfo$feval
}
f <- fit_once()
t <- numeric(reps)
for (i in seq_len(reps)) t[i] <- system.time(fit_once())[["elapsed"]]
cat(sprintf('{"median": %.6f, "min": %.6f, "max": %.6f, "reps": %d, "evals": %d}\n', median(t), min(t), max(t), reps,
            as.integer(evals(f))))
