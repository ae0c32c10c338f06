#!/usr/bin/env bash
# Creates .venv with a Python >= 3.12 and installs hierlmm into it (editable), with the extras
# given as arguments: `bash .ci/venv.sh` (core only) or `bash .ci/venv.sh all`.
set -euo pipefail
cd "$(dirname "$0")/.."

candidates=(python3.14 python3.13 python3.12 python3 python)
PY=""
for c in "${candidates[@]}" /root/.pyenv/versions/3.1[2-9]*/bin/python /usr/local/bin/python3.1[2-9] /usr/bin/python3.1[2-9]; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
        PY="$c"; break
    fi
done
if [ -z "$PY" ]; then
    echo "error: hierlmm needs Python >= 3.12 and none was found (tried python3.1x, python3, pyenv's versions)." >&2
    exit 1
fi
echo "using $PY ($("$PY" --version 2>&1))" >&2

rm -rf .venv
"$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
extras="$(IFS=,; echo "${*:-}")"
if [ -n "$extras" ]; then
    .venv/bin/python -m pip install --quiet -e ".[$extras]"
else
    .venv/bin/python -m pip install --quiet -e .
fi
