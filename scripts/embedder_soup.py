"""Average two trained embedders' weights (a "model soup", WiSE-FT): (1 - alpha) * A + alpha * B.

Usage: python scripts/embedder_soup.py A_DIR B_DIR ALPHA OUT_DIR

Used for gptlearn-embed (docs/gptlearn-embed.md): A is the distilled model, B the same model after CoSENT
on STS-B train. CoSENT raises the STS-B ranking but pulls every sentence into one narrow cone (unrelated
sentences at cosine 0.75) and blurs the topics; halfway between the two keeps nearly all of B's ranking
and much of A's geometry. Both folders must be the same architecture and pooling; OUT_DIR gets B's
tokenizer and settings.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from gptlearn import Embedder


def main() -> None:
    if len(sys.argv) != 5:
        raise SystemExit(__doc__.split("\n\n")[1])
    a, b = Embedder.from_pretrained(sys.argv[1]), Embedder.from_pretrained(sys.argv[2])
    alpha, out = float(sys.argv[3]), Path(sys.argv[4])
    if not 0.0 <= alpha <= 1.0:
        raise SystemExit(f"ALPHA must be in [0, 1], got {alpha}")
    if a.pooling != b.pooling or a.model.config != b.model.config:
        raise SystemExit("the two embedders differ in architecture or pooling; a soup needs the same model")
    wa, wb = a.state_dict(), b.state_dict()
    mixed = {k: torch.lerp(wa[k], wb[k], alpha) if wa[k].is_floating_point() else wb[k] for k in wb}
    if not all(bool(torch.isfinite(v).all()) for v in mixed.values() if v.is_floating_point()):
        raise SystemExit("the average has NaN or infinite weights; nothing written")
    b.load_state_dict(mixed)
    b.save_pretrained(out)
    print(f"{1 - alpha:g} x {sys.argv[1]} + {alpha:g} x {sys.argv[2]} -> {out}")


if __name__ == "__main__":
    main()
