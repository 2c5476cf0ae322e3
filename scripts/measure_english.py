"""Measure a teaching model the way docs/gptlearn-english.md reports it.

Usage: python scripts/measure_english.py [MODEL_DIR_OR_NAME ...] [--samples N]   (default: gptlearn-english
and gptlearn-mini; needs GPTLEARN_DATA_DIR for STS-B and the Shakespeare check)

For each model, one JSON line:
* ``words_one_token``: the share of the 144 common words of ``english_words.json`` (12 categories) that are one
  token with a leading space; ``stsb_dev_top500_one_token``: the same for the 500 commonest words of the STS-B
  dev sentences (never trained on);
* ``nearest_word_same_category``: for each of those words, is its nearest other word (cosine of the token
  vectors, a word's pieces averaged) in its own category? (chance is 11/143 = 0.077);
* ``bits_per_byte_modern`` on ``modern_english.txt`` (prose written for this check, never trained on), and
  ``unigram_bits_per_byte_modern``: a unigram model fit on STS-B train in the same tokenizer; their ratio;
* ``bits_per_byte_shakespeare`` on TinyShakespeare's last 10%;
* the best previous-token heads (held-out English text) and induction heads (repeated random tokens);
* samples at temperature 0.8.
GPT-2's tokenizer is measured for the word shares too (``gpt2-tokenizer``).
"""
from __future__ import annotations

import argparse
import collections
import json
import re
from importlib import resources
from pathlib import Path

import torch

import gptlearn
from gptlearn.analysis import (bits_per_byte, induction_scores, neighbour_accuracy, one_token_share,
                               previous_token_scores, top_heads, unigram_bits_per_byte, word_groups, word_vectors)
from gptlearn.data import data_folder, read_pairs, split_text


def asset_text(name: str) -> str:
    return resources.files("gptlearn").joinpath("assets", "data", name).read_text(encoding="utf-8")


def data_file(name: str) -> Path | None:
    """The file ``name`` in the shared data folder, or None when it is not there."""
    folder = data_folder()
    return folder / name if folder is not None and (folder / name).is_file() else None


def stsb(split: str) -> list[str]:
    """STS-B's ``split`` ("train" or "dev") as one list of sentences, read by gptlearn.data.read_pairs;
    empty where the data folder lacks it."""
    if data_file(f"stsb/sts-{split}.csv") is None:
        return []
    pairs = read_pairs("stsb" if split == "train" else "stsb-dev")
    return [s for pair in zip(pairs.sentences1, pairs.sentences2) for s in pair]


def tokenizer_shares(tok) -> dict:
    cats = word_groups()
    words = [w for ws in cats.values() for w in ws]
    out = {"words_one_token": round(one_token_share(tok, words), 3),
           "words_not_one_token": [w for w in words if len(tok.encode(" " + w)) != 1]}
    dev = stsb("dev")
    if dev:
        counts = collections.Counter(w for s in dev for w in re.findall(r"[A-Za-z']+", s))
        out["stsb_dev_top500_one_token"] = round(one_token_share(tok, [w for w, _ in counts.most_common(500)]), 3)
    return out


@torch.no_grad()
def measure(name: str, n_samples: int = 3) -> dict:
    model = gptlearn.GPT.from_pretrained(name).eval()
    tok = model.tokenizer
    out = {"model": name, "parameters": sum(p.numel() for p in model.parameters()), **tokenizer_shares(tok)}
    groups = word_groups()
    words = [w for ws in groups.values() for w in ws]
    labels = [g for g, ws in groups.items() for _ in ws]
    out["nearest_word_same_category"] = round(neighbour_accuracy(word_vectors(model, words), labels), 3)
    modern = asset_text("modern_english.txt")
    out["bits_per_byte_modern"] = round(bits_per_byte(model, modern), 4)
    train = stsb("train")
    if train:
        uni = unigram_bits_per_byte("\n".join(train), modern, tok)
        out["unigram_bits_per_byte_modern"] = round(uni, 4)
        out["ratio_to_unigram"] = round(out["bits_per_byte_modern"] / uni, 3)
    shakespeare = data_file("tinyshakespeare.txt")
    if shakespeare is not None:
        out["bits_per_byte_shakespeare"] = round(bits_per_byte(model, split_text(shakespeare.read_text())[1]), 4)
    T = min(256, model.config.n_positions)
    ids = tok.encode(modern)[: 4 * T]
    ids = torch.tensor(ids[: len(ids) // T * T]).view(-1, T)  # (n, T)
    out["previous_token_top"] = top_heads(previous_token_scores(model, ids), 3)
    out["induction_top"] = top_heads(induction_scores(model, seq_len=50, batch=8), 3)
    out["samples"] = [model.generate(p, 40, temperature=0.8, top_k=50, seed=i)
                      for i, p in enumerate(["The", "My mother said that", "How to"][:n_samples])]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", default=["gptlearn-english", "gptlearn-mini"])
    p.add_argument("--samples", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(json.dumps({"model": "gpt2-tokenizer", **tokenizer_shares(gptlearn.load_tokenizer("gpt2"))}), flush=True)
    for name in args.models:
        print(json.dumps(measure(name, args.samples)), flush=True)


if __name__ == "__main__":
    main()
