#!/usr/bin/env bash
# Build the HTML book into _build/html, executing every chapter; any cell error or warning fails.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh   # the .venv setup.sh made, if it made one
export GPTLEARN_DATA_DIR=${GPTLEARN_DATA_DIR:-$(pwd)/../shared/data}
[ -d "$GPTLEARN_DATA_DIR" ] || unset GPTLEARN_DATA_DIR   # then data sets download into the cache
jupyter-book build . -W -n --keep-going "$@"
echo "book: $(pwd)/_build/html/index.html"
