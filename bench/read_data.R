# Reads a benchmark CSV as the Python side does: factor levels in R's order from the data
# set's LEVELS.json (when given), other character columns as factors. Sourced by
# time_lme4.R and time_lme4_profile.R: read_bench_data(csv, levels_json).
read_bench_data <- function(csv, levels_json = NA) {
  d <- read.csv(csv, stringsAsFactors = FALSE)
  if (!is.na(levels_json) && file.exists(levels_json)) {
    lev <- jsonlite::fromJSON(levels_json)
    for (col in names(lev)) d[[col]] <- factor(as.character(d[[col]]), levels = lev[[col]])
  }
  for (col in names(d)) if (is.character(d[[col]])) d[[col]] <- factor(d[[col]])
  d
}
