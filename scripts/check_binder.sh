#!/usr/bin/env bash
# The book as Binder runs it: binder/requirements.txt (local torch in place of the CPU index) in a fresh
# Python 3.11 venv, every chapter's .ipynb twin run in it by nbclient; and the Colab install line from a
# git URL (tests/test_binder.py). Many minutes, so only the cheap part of that file runs in
# scripts/test.sh. Times and peak memory per chapter go to _build/binder_times.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
export GPTLEARN_DATA_DIR=${GPTLEARN_DATA_DIR:-$(pwd)/../shared/data}
GPTLEARN_HEAVY_CHECKS=1 python3 -m pytest -m "book or not book" -p no:cacheprovider tests/test_binder.py "$@"
cat _build/binder_times.txt
