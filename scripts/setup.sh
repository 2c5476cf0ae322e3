#!/usr/bin/env bash
# Set up the course environment: packages, then gptlearn itself (editable).
# Usage: bash scripts/setup.sh [--dev]    (--dev adds test tools and Debian's chromium for browser tests)
# Installs into the active virtual environment (or conda environment), else into ./.venv if there is one.
# With neither, a Python that refuses installs (PEP 668: "externally managed", e.g. Debian 12+, Ubuntu
# 23.04+) gets a new ./.venv; any other Python (pyenv, python.org, Docker's python images) is used as it is.
# PYTHON=... picks the Python (default python3; 3.11 or newer for the pinned packages, see check_pythons.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
if ! "${PYTHON:-python3}" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then  # numpy 2.4, pandas 3, scipy 1.17
  echo "setup: the course's pinned packages (requirements.txt) need Python 3.11 or newer, and ${PYTHON:-python3} is older; run it with a newer one (PYTHON=python3.12 bash scripts/setup.sh), or install the package alone: pip install -e '.[book]'" >&2
  exit 1
fi
if ! in_env && "${PYTHON:-python3}" -c 'import os, sys, sysconfig
sys.exit(not os.path.isfile(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
  echo "setup: ${PYTHON:-python3} is externally managed (PEP 668); installing into a new virtual environment, .venv" >&2
  if ! "${PYTHON:-python3}" -m venv .venv; then
    rm -rf .venv
    echo "setup: could not create .venv; install python3-venv (sudo apt-get install python3-venv) or activate a virtual environment, then run this again" >&2
    exit 1
  fi
  use_venv
fi
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
if [ "${VIRTUAL_ENV:-}" = "$(pwd)/.venv" ]; then
  echo "setup: installed into .venv; scripts/build_book.sh and scripts/test.sh use it, and \`source .venv/bin/activate\` does in your shell" >&2
fi
