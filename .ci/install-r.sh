#!/bin/sh
# Installs R with lme4, lmerTest, pbkrtest, nlme, emmeans, performance, glmmTMB and jsonlite from Debian's packages (a few
# minutes): the reference the differential tests (tests/differential) compare hierlmm with.
# Skips the install when R and those packages are already there.
set -e
if command -v Rscript >/dev/null 2>&1 && Rscript -e 'for (p in c("lme4","lmerTest","pbkrtest","nlme","emmeans","performance","glmmTMB","jsonlite")) if (!requireNamespace(p, quietly=TRUE)) quit(status=1)' >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -q r-base-core r-cran-lme4 r-cran-lmertest r-cran-pbkrtest r-cran-nlme r-cran-emmeans r-cran-performance r-cran-glmmtmb \
    r-cran-jsonlite >/dev/null
Rscript -e 'for (p in c("lme4","lmerTest","pbkrtest","nlme","emmeans","performance","glmmTMB")) cat(p, as.character(packageVersion(p)), "\n")'
