# Times lme4::lmer on a CSV: Rscript time_lme4.R DATA.csv "FORMULA" REPS LEVELS.json
# Prints JSON {"median":..,"min":..,"max":..,"reps":..} (seconds), after one warm-up fit.
args <- commandArgs(trailingOnly = TRUE)
suppressMessages(library(lme4))
here <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(), value = TRUE)))
source(file.path(here, "read_data.R"))
d <- read_bench_data(args[1], if (length(args) >= 4) args[4] else NA)
form <- as.formula(args[2])
reps <- as.integer(args[3])
invisible(lmer(form, data = d, REML = TRUE))
t <- numeric(reps)
for (i in seq_len(reps)) t[i] <- system.time(lmer(form, data = d, REML = TRUE))[["elapsed"]]
cat(sprintf('{"median": %.6f, "min": %.6f, "max": %.6f, "reps": %d}\n', median(t), min(t), max(t), reps))
