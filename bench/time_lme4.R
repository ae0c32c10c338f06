# Times lme4::lmer on a CSV: Rscript time_lme4.R DATA.csv "FORMULA" REPS LEVELS.json
# Prints JSON {"median":..,"min":..,"max":..,"reps":..} (seconds), after one warm-up fit.
args <- commandArgs(trailingOnly = TRUE)
suppressMessages(library(lme4))
d <- read.csv(args[1], stringsAsFactors = FALSE)
if (length(args) >= 4 && file.exists(args[4])) {
  lev <- jsonlite::fromJSON(args[4])
  for (col in names(lev)) d[[col]] <- factor(as.character(d[[col]]), levels = lev[[col]])
}
for (col in names(d)) if (is.character(d[[col]])) d[[col]] <- factor(d[[col]])
form <- as.formula(args[2])
reps <- as.integer(args[3])
invisible(lmer(form, data = d, REML = TRUE))
t <- numeric(reps)
for (i in seq_len(reps)) t[i] <- system.time(lmer(form, data = d, REML = TRUE))[["elapsed"]]
cat(sprintf('{"median": %.6f, "min": %.6f, "max": %.6f, "reps": %d}\n', median(t), min(t), max(t), reps))
