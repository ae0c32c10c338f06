# Times lme4's profile intervals: Rscript time_lme4_profile.R DATA.csv "FORMULA" REPS LEVELS.json
# confint(profile(m)) of a REML fit (lme4 refits by ML), after one warm-up; prints JSON
# {"median":..,"min":..,"max":..,"reps":..} (seconds) and the intervals.
args <- commandArgs(trailingOnly = TRUE)
suppressMessages(library(lme4))
here <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(), value = TRUE)))
source(file.path(here, "read_data.R"))
d <- read_bench_data(args[1], if (length(args) >= 4) args[4] else NA)
m <- lmer(as.formula(args[2]), data = d, REML = TRUE)
reps <- as.integer(args[3])
ci <- suppressWarnings(confint(profile(m)))
t <- numeric(reps)
for (i in seq_len(reps)) t[i] <- system.time(suppressWarnings(confint(profile(m))))[["elapsed"]]
cat(sprintf('{"median": %.6f, "min": %.6f, "max": %.6f, "reps": %d}\n', median(t), min(t), max(t), reps))
