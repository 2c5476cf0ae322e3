"""Copy a trained embedder into the package as gptlearn-embed: weights in float16, settings, tokenizer.

Usage: python scripts/embedder_export.py TRAINED_DIR [OUT_DIR]   (OUT_DIR default gptlearn/assets/gptlearn-embed)

float16 halves the wheel (the weights are loaded back as float32, see gptlearn.pretrained); the script
checks that the STS-B dev Spearman of the float16 copy is within 0.002 of the trained one and that
every weight is finite, and writes nothing otherwise. The training log (train_embeddings.json) is not
shipped; its numbers are in docs/gptlearn-embed.md.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from gptlearn import Embedder
from gptlearn.data import read_pairs
from gptlearn.embed_train import evaluate_sts

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    src = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "gptlearn" / "assets" / "gptlearn-embed"
    trained = Embedder.from_pretrained(src)
    if not all(bool(torch.isfinite(p).all()) for p in trained.parameters()):
        raise SystemExit(f"{src} has NaN or infinite weights; not exported")
    dev = read_pairs("stsb-dev")
    before = evaluate_sts(trained, dev)
    with tempfile.TemporaryDirectory() as tmp:
        half = Embedder.from_pretrained(src)
        half.model.half()
        half.save_pretrained(tmp)
        after = evaluate_sts(Embedder.from_pretrained(tmp), dev)  # loads as float32
        if abs(after - before) > 0.002:
            raise SystemExit(f"float16 changed the dev Spearman from {before:.4f} to {after:.4f}; not exported")
        half.save_pretrained(out)
    (out / ".gptlearn-manifest.json").unlink(missing_ok=True)  # the bundled folders ship the model's files only
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"{src} -> {out}: {size:.1f} MB, STS-B dev Spearman {before:.4f} (float32) / {after:.4f} (float16)")


if __name__ == "__main__":
    main()
