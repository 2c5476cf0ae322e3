#!/usr/bin/env bash
# The book as a reader with a network gets it, on GPT-2 124M: writes a GPT-2-shaped folder (random
# weights, GPT-2's tokenizer; scripts/gpt2_shaped.py) and runs the strict build on it
# (tests/test_book_gpt2.py). Many minutes, so not part of scripts/test.sh. Times per chapter go to
# _build/gpt2_times.txt. GPTLEARN_GPT2_SHAPED=<folder> reuses a folder written before.
set -euo pipefail
cd "$(dirname "$0")/.."
export GPTLEARN_DATA_DIR=${GPTLEARN_DATA_DIR:-$(pwd)/../shared/data}
GPTLEARN_HEAVY_CHECKS=1 python3 -m pytest -m "book or not book" -p no:cacheprovider tests/test_book_gpt2.py "$@"
cat _build/gpt2_times.txt
