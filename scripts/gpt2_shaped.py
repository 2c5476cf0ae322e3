"""Write a folder shaped exactly like GPT-2 124M, with random weights, for building the book "as if
online" where GPT-2's weights cannot be downloaded:

    python scripts/gpt2_shaped.py /tmp/gpt2-shaped
    GPTLEARN_MODEL=/tmp/gpt2-shaped jupyter-book build . -W -n --keep-going

The weights come from ``transformers.GPT2LMHeadModel(GPT2Config())`` (GPT-2 124M's configuration,
Hugging Face's initialisation, seeded); the tokenizer files are GPT-2's own (the package ships them as
gptlearn/assets/gpt2/encoder.json and vocab.bpe, byte-identical to the Hub's vocab.json and merges.txt).
So the shapes, the tokenizer, the memory and the time are GPT-2's; what the trained heads do is not.
tests/test_book_gpt2.py builds the book on it.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "gptlearn" / "assets" / "gpt2"


def write_gpt2_shaped(folder: str | Path, seed: int = 0) -> Path:
    """``folder`` with config.json, model.safetensors, vocab.json and merges.txt of a random GPT-2 124M."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = Path(folder)
    torch.manual_seed(seed)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(folder, safe_serialization=True)
    shutil.copyfile(ASSETS / "encoder.json", folder / "vocab.json")
    shutil.copyfile(ASSETS / "vocab.bpe", folder / "merges.txt")
    return folder


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--seed", type=int, default=0)
    print(write_gpt2_shaped(ap.parse_args().folder, ap.parse_args().seed))
