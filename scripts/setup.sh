#!/usr/bin/env bash
# Set up the course environment in the current Python: packages, then gptlearn itself (editable).
# Usage: bash scripts/setup.sh [--dev]    (--dev adds test tools and Debian's chromium for browser tests)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
req=requirements.txt
[ "${1:-}" = "--dev" ] && req=requirements-dev.txt
# torch first and alone, so no other package's looser range can pull a different (CUDA) build
"$PY" -m pip install -q "torch==2.13.0"
"$PY" -m pip install -q -r "$req"
"$PY" -m pip install -q --no-deps -e .
if [ "${1:-}" = "--dev" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
  else
    echo "note: Debian's chromium is not installed; the browser tests need it (sudo apt-get install chromium)" >&2
  fi
fi
