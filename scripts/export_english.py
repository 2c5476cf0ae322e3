"""Copy a trained teaching model into the package as gptlearn-english: weights in float16, config, tokenizer.

Usage: python scripts/export_english.py TRAINED_DIR [OUT_DIR]   (OUT_DIR default gptlearn/assets/gptlearn-english)

float16 halves the wheel and the book's pages (the package loads the weights back as float32, see
gptlearn.pretrained; the page takes them as they are, see gptlearn.web.exporter). The script checks that every
weight is finite and that the float16 copy's bits per byte on the held-out modern prose
(gptlearn/assets/data/modern_english.txt) is within 0.002 of the trained model's, and writes nothing otherwise.
The training state (trainer_state.*) is not shipped; docs/gptlearn-english.md has the run's numbers.
"""
from __future__ import annotations

import sys
import tempfile
from importlib import resources
from pathlib import Path

import torch

from gptlearn import GPT
from gptlearn.analysis import bits_per_byte

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    src = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "gptlearn" / "assets" / "gptlearn-english"
    text = resources.files("gptlearn").joinpath("assets", "data", "modern_english.txt").read_text(encoding="utf-8")
    trained = GPT.from_pretrained(src).eval()
    if not all(bool(torch.isfinite(p).all()) for p in trained.parameters()):
        raise SystemExit(f"{src} has NaN or infinite weights; not exported")
    before = bits_per_byte(trained, text)
    trained.half()
    with tempfile.TemporaryDirectory() as tmp:
        trained.save_pretrained(tmp, overwrite=True)
        after = bits_per_byte(GPT.from_pretrained(tmp).eval(), text)  # loads as float32
    if abs(after - before) > 0.002:
        raise SystemExit(f"float16 changed the bits per byte from {before:.4f} to {after:.4f}; not exported")
    trained.save_pretrained(out, overwrite=True)
    (out / ".gptlearn-manifest.json").unlink(missing_ok=True)  # the bundled folders ship the model's files only
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"{src} -> {out}: {size:.1f} MB, {before:.4f} bits/byte on modern prose (float32) / {after:.4f} (float16)")


if __name__ == "__main__":
    main()
