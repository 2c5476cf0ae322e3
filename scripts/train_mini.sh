#!/usr/bin/env bash
# Reproduces gptlearn/assets/gptlearn-mini (see docs/gptlearn-mini.md): the exact commands that trained it.
# Usage: scripts/train_mini.sh [OUT_DIR]   (needs GPTLEARN_DATA_DIR with tinyshakespeare.txt, or the network)
# Each stage writes OUT_DIR/stageN; stage 4 is the shipped model.
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
# stage 3: 70% of the rows are random tokens written over and over, loss only where copying can predict
# them: the induction heads form here, between steps 1,750 and 2,250 (18 min 47 s here, two runs at once)
python -m gptlearn.train \
  --data tinyshakespeare --init "$OUT/stage2" --out "$OUT/stage3" \
  --steps 3000 --batch-size 8 --block-size 256 --lr 3e-3 --min-lr 3e-4 --warmup 100 \
  --eval-every 250 --eval-iters 5 --seed 1343 --induction-frac 0.7 --device cpu
# stage 4 (shipped): mostly text again to win back bits per byte; 10% induction rows keep the heads
# (without them the best induction score fell from 0.92 to 0.21 in 1,000 steps) (6 min 29 s here)
python -m gptlearn.train \
  --data tinyshakespeare --init "$OUT/stage3" --out "$OUT/stage4" \
  --steps 1000 --batch-size 8 --block-size 256 --lr 1e-3 --min-lr 1e-4 --warmup 100 \
  --eval-every 250 --eval-iters 5 --seed 1344 --induction-frac 0.1 --device cpu
