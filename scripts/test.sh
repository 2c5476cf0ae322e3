#!/usr/bin/env bash
# Set up (with test tools and chromium) and run the whole test suite: unit tests, the strict book build,
# the built-HTML checks and the headless-browser tests. Extra arguments go to pytest. (Plain `pytest`
# leaves out the book's tests, marked `book`; `-m "book or not book"` puts them back.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
source scripts/env.sh   # the .venv setup.sh made, if it made one
export GPTLEARN_DATA_DIR=${GPTLEARN_DATA_DIR:-$(pwd)/../shared/data}
"${PYTHON:-python3}" -m ruff check .   # lint first ([tool.ruff] in pyproject.toml): a finding fails the run
"${PYTHON:-python3}" -m pytest -m "book or not book" "$@"
