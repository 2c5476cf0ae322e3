#!/usr/bin/env bash
# Reproduces gptlearn/assets/gptlearn-mini (see docs/gptlearn-mini.md): the exact commands that trained it.
# Usage: scripts/train_mini.sh [OUT_DIR]   (needs GPTLEARN_DATA_DIR with tinyshakespeare.txt, or the network)
# Stage 1 writes OUT_DIR/stage1, stage 2 (the shipped model) OUT_DIR/stage2.
# One thread: on the shared 2-core machine it was 2-4x faster than two (no OpenMP spin-waiting).
set -euo pipefail
OUT=${1:-runs/gptlearn-mini}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# stage 1: from scratch (31 min 48 s here)
python -m gptlearn.train \
  --data tinyshakespeare --out "$OUT/stage1" \
  --preset mini --config '{"n_layer": 4, "n_head": 8, "n_embd": 128, "n_positions": 256, "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.0}' \
  --tokenizer bpe:1024 --pos-init sinusoidal \
  --steps 2600 --batch-size 8 --block-size 256 --lr 2e-3 --min-lr 2e-4 --warmup 100 \
  --eval-every 200 --eval-iters 5 --seed 1337 --device cpu
# stage 2: a quarter of the rows read a passage twice (8 min 4 s here)
python -m gptlearn.train \
  --data tinyshakespeare --init "$OUT/stage1" --out "$OUT/stage2" \
  --steps 1200 --batch-size 8 --block-size 256 --lr 1e-3 --min-lr 1e-4 --warmup 50 \
  --eval-every 300 --eval-iters 5 --seed 1338 --repeat-frac 0.25 --device cpu
