# Times lme4's profile intervals: Rscript time_lme4_profile.R DATA.csv "FORMULA" REPS LEVELS.json
# confint(profile(m)) of a REML fit (lme4 refits by ML), after one warm-up; prints JSON
# {"median":..,"min":..,"max":..,"reps":..} (seconds) and the intervals.
args <- commandArgs(trailingOnly = TRUE)
suppressMessages(library(lme4))
d <- read.csv(args[1], stringsAsFactors = FALSE)
if (length(args) >= 4 && file.exists(args[4])) {
  lev <- jsonlite::fromJSON(args[4])
  for (col in names(lev)) d[[col]] <- factor(as.character(d[[col]]), levels = lev[[col]])
}
for (col in names(d)) if (is.character(d[[col]])) d[[col]] <- factor(d[[col]])
m <- lmer(as.formula(args[2]), data = d, REML = TRUE)
reps <- as.integer(args[3])
ci <- suppressWarnings(confint(profile(m)))
t <- numeric(reps)
for (i in seq_len(reps)) t[i] <- system.time(suppressWarnings(confint(profile(m))))[["elapsed"]]
cat(sprintf('{"median": %.6f, "min": %.6f, "max": %.6f, "reps": %d}\n', median(t), min(t), max(t), reps))
