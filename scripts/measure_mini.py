"""Measure a gptlearn-mini checkpoint the way docs/gptlearn-mini.md reports it, on the held-out last 10%
of TinyShakespeare: bits per byte (and the unigram baselines), the best previous-token heads, induction
scores on repeated random tokens, and loss on repeated held-out passages (copying real text).

Usage: python scripts/measure_mini.py [MODEL_DIR_OR_NAME ...] [--quick]   (needs GPTLEARN_DATA_DIR)
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

import gptlearn
from gptlearn.analysis import (bits_per_byte, induction_scores, previous_token_scores, top_heads,
                               unigram_bits_per_byte)
from gptlearn.data import split_text


def previous_token_windows(model, text: str, n: int = 8, T: int = 256) -> torch.Tensor:
    """(L, H) previous-token scores over ``n`` consecutive windows of ``T`` held-out tokens."""
    ids = torch.tensor(model.tokenizer.encode(text)[: n * T]).view(n, T)  # (n, T)
    return previous_token_scores(model, ids)


@torch.no_grad()
def repeated_text_loss(model, text: str, n: int = 8, half: int = 100) -> tuple[float, float]:
    """Mean loss (nats/token) on the first and on the second reading of ``n`` held-out passages of ``half``
    tokens read twice: a model that copies from context does far better on the second reading."""
    ids = torch.tensor(model.tokenizer.encode(text)[: n * half]).view(n, half)  # (n, half)
    x = torch.cat([ids, ids], dim=1)  # (n, 2 * half)
    logits = model(x[:, :-1])  # (n, 2 * half - 1, V)
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")  # (n, 2 half - 1)
    return nll[:, : half - 1].mean().item(), nll[:, half:].mean().item()


def measure(name: str, quick: bool = False) -> dict:
    model = gptlearn.GPT.from_pretrained(name).eval()
    data = Path(os.environ["GPTLEARN_DATA_DIR"]) / "tinyshakespeare.txt"
    train_text, val_text = split_text(data.read_text(encoding="utf-8"))
    prev = previous_token_windows(model, val_text)
    ind = induction_scores(model, seq_len=50, batch=8)
    first, second = repeated_text_loss(model, val_text[len(val_text) // 2:])
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
