"""Make gptlearn-embed's untrained base: a byte-level BPE learned on the corpus and a fresh GPT-2.

Usage: python scripts/embedder_base.py CORPUS.txt OUT_DIR [--vocab 8192] [--layers 4] [--heads 6]
       [--width 384] [--positions 128] [--dropout 0]

The tokenizer is gptlearn's own trainer (``BPETokenizer.train``) run on the unlabelled sentences, so
modern words are single tokens instead of the many pieces gptlearn-mini's Shakespeare BPE cuts them
into. OUT_DIR then holds config.json, model.safetensors (random weights), vocab.json and merges.txt:
``gptlearn train-embeddings --model OUT_DIR`` trains it (see scripts/train_embedder.sh).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from gptlearn import GPT, GPTConfig
from gptlearn.tokenizers import BPETokenizer, Tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--width", type=int, default=384)
    ap.add_argument("--positions", type=int, default=128)
    ap.add_argument("--dropout", type=float, default=0.0, help="dropout everywhere (distillation underfits: none)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t0 = time.perf_counter()
    text = args.corpus.read_text(encoding="utf-8")
    bpe = BPETokenizer.train(text, args.vocab)
    print(f"BPE with {bpe.vocab_size} tokens learned in {time.perf_counter() - t0:.0f} s")
    torch.manual_seed(args.seed)
    config = GPTConfig(vocab_size=bpe.vocab_size, n_positions=args.positions, n_embd=args.width,
                       n_layer=args.layers, n_head=args.heads, bos_token_id=bpe.eot_token,
                       eos_token_id=bpe.eot_token, resid_pdrop=args.dropout, embd_pdrop=args.dropout,
                       attn_pdrop=args.dropout)
    model = GPT(config)
    model.tokenizer = Tokenizer.from_bpe(bpe)
    model.save_pretrained(args.out)
    print(f"{model.num_parameters() / 1e6:.1f}M-parameter base -> {args.out}")


if __name__ == "__main__":
    main()
