"""Measure a gptlearn-mini checkpoint the way docs/gptlearn-mini.md reports it, on the held-out last 10%
of TinyShakespeare: bits per byte (and the unigram baselines), the best previous-token heads, induction
scores on repeated random tokens, and loss on held-out passages read twice (copying real text).

Usage: python scripts/measure_mini.py [MODEL_DIR_OR_NAME ...] [--quick]   (needs GPTLEARN_DATA_DIR)
"""
from __future__ import annotations

import argparse
import json

import torch

import gptlearn
from gptlearn.analysis import (bits_per_byte, induction_scores, previous_token_scores, repeated_passage_loss,
                               top_heads, unigram_bits_per_byte)
from gptlearn.data import data_folder, split_text


def previous_token_windows(model, text: str, n: int = 8, T: int = 256) -> torch.Tensor:
    """(L, H) previous-token scores over ``n`` consecutive windows of ``T`` held-out tokens."""
    ids = torch.tensor(model.tokenizer.encode(text)[: n * T]).view(n, T)  # (n, T)
    return previous_token_scores(model, ids)


def measure(name: str, quick: bool = False) -> dict:
    model = gptlearn.GPT.from_pretrained(name).eval()
    folder = data_folder()
    if folder is None:
        raise SystemExit("measure_mini: error: no data folder; set GPTLEARN_DATA_DIR to the shared data folder")
    data = folder / "tinyshakespeare.txt"
    train_text, val_text = split_text(data.read_text(encoding="utf-8"))
    prev = previous_token_windows(model, val_text)
    ind = induction_scores(model, seq_len=50, batch=8)
    first, second = repeated_passage_loss(model, val_text)
    out = {
        "model": name,
        "previous_token_top": top_heads(prev, 3),
        "induction_top": top_heads(ind, 3),
        "repeated_passage_nats": {"first_reading": round(first, 3), "second_reading": round(second, 3)},
    }
    if not quick:
        out["bits_per_byte"] = round(bits_per_byte(model, val_text), 4)
        out["unigram_bpe_bits_per_byte"] = round(unigram_bits_per_byte(train_text, val_text, model.tokenizer), 4)
        out["unigram_byte_bits_per_byte"] = round(unigram_bits_per_byte(train_text, val_text), 4)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", default=["gptlearn-mini"])
    p.add_argument("--quick", action="store_true", help="heads only, no bits per byte")
    args = p.parse_args()
    for name in args.models:
        print(json.dumps(measure(name, args.quick)), flush=True)


if __name__ == "__main__":
    main()
