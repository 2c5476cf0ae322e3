#!/usr/bin/env bash
# README's first command on a fresh machine: a git clone of HEAD, built with scripts/build_book.sh with
# no GPTLEARN_DATA_DIR, no ../shared/data and no network (tests/test_book_offline.py). Many minutes, so
# not part of scripts/test.sh. Times per chapter go to _build/offline_times.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
GPTLEARN_HEAVY_CHECKS=1 python3 -m pytest -m "book or not book" -p no:cacheprovider tests/test_book_offline.py "$@"
cat _build/offline_times.txt
