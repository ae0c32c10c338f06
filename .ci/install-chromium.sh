#!/bin/sh
# Installs Debian's chromium (about 35 s) for the browser test of the documentation
# (tests/test_docs_browser.py). Skips the install when a chromium is already there.
set -e
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -q chromium >/dev/null
chromium --version 2>/dev/null | tail -1
