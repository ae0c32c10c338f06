# brms (Stan) on one of bench/bayes_time.py's cases: compile, sampling, and a second call on
# another response (update() without recompiling, as a brms user refits), 4 chains x (1000 +
# 1000), flat priors on the fixed effects (the intercept included), on the SDs and on sigma
# (brms's lower bound of 0), LKJ(1) on the correlations. Prints one JSON line.
#   Rscript bench/brms_time.R DATA.csv DATA2.csv "FORMULA" CORES
# DATA2.csv "-": no second call (second_s is null).
args <- commandArgs(trailingOnly = TRUE)
# Debian's r-cran-bh is a virtual package (Boost is in /usr/include) and rstan looks for BH's
# include folder: a library folder with BH's files and that link satisfies it
if (!nzchar(system.file("include", package = "BH")) && dir.exists("/usr/include/boost")) {
  lib <- file.path(tempdir(), "bh-shim")
  dir.create(file.path(lib, "BH"), recursive = TRUE)
  file.copy(list.files(find.package("BH"), full.names = TRUE), file.path(lib, "BH"), recursive = TRUE)
  file.symlink("/usr/include", file.path(lib, "BH", "include"))
  .libPaths(c(lib, .libPaths()))
}
suppressMessages(library(brms))
d1 <- read.csv(args[1], stringsAsFactors = TRUE)
d2 <- if (args[2] == "-") NULL else read.csv(args[2], stringsAsFactors = TRUE)
form <- as.formula(args[3])
cores <- as.integer(args[4])
pr <- c(set_prior("", class = "Intercept"), set_prior("", class = "sd"), set_prior("", class = "sigma"))
if (any(grepl("cor", get_prior(form, data = d1)$class))) pr <- c(pr, set_prior("lkj(1)", class = "cor"))
secs <- function(t) as.numeric(t, units = "secs")
t0 <- Sys.time()
fit0 <- brm(form, data = d1, prior = pr, chains = 0, silent = 2, refresh = 0)
t1 <- Sys.time()
run <- function(data) update(fit0, newdata = data, recompile = FALSE, chains = 4, cores = cores, iter = 2000,
                             warmup = 1000, seed = 1, refresh = 0, silent = 2)
fit1 <- suppressWarnings(run(d1))
t2 <- Sys.time()
if (!is.null(d2)) fit2 <- suppressWarnings(run(d2))
t3 <- Sys.time()
second <- if (is.null(d2)) "null" else sprintf("%.3f", secs(t3 - t2))
s <- posterior::summarise_draws(posterior::as_draws_df(fit1), "ess_bulk")
ess <- min(s$ess_bulk[grepl("^(sd_|sigma$|cor_)", s$variable)])
np <- nuts_params(fit1)
div <- sum(np$Value[np$Parameter == "divergent__"])
cat(sprintf('{"compile_s": %.3f, "sample_s": %.3f, "first_s": %.3f, "second_s": %s, "ess": %.1f, "divergences": %d}\n',
            secs(t1 - t0), secs(t2 - t1), secs(t2 - t0), second, ess, as.integer(div)))
