"""Give a trained embedder one more block without changing what it computes ("growing" a student).

Usage: python scripts/embedder_grow.py IN_DIR OUT_DIR

The new block goes after the last one and starts as a copy of it with both output projections (the
attention's and the MLP's ``c_proj``, weights and biases) set to zero: it adds nothing to the residual
stream, so OUT_DIR's vectors equal IN_DIR's (checked before anything is written). Further distillation
then has the extra capacity to use. Used for gptlearn-embed's growth from 4 to 5 blocks
(docs/gptlearn-embed.md); the tokenizer, pooling and context are IN_DIR's.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from gptlearn import GPT, Embedder


def grow(embedder: Embedder) -> Embedder:
    old = embedder.model
    n = old.config.n_layer
    model = GPT(old.config.replace(n_layer=n + 1))
    state = old.state_dict()
    for key, value in list(state.items()):
        if key.startswith(f"blocks.{n - 1}."):
            new = value.clone()
            if ".c_proj." in key:
                new.zero_()  # (n_embd, n_embd) / (4 n_embd, n_embd) and biases: the block adds nothing yet
            state[key.replace(f"blocks.{n - 1}.", f"blocks.{n}.", 1)] = new
    model.load_state_dict(state)
    return Embedder(model, embedder.tokenizer, pooling=embedder.pooling, max_length=embedder.max_length)


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__.split("\n\n")[1])
    src, out = Embedder.from_pretrained(sys.argv[1]), Path(sys.argv[2])
    grown = grow(src).eval()
    probe = ["The cat is sleeping.", "Ducks.", "The stock market fell sharply today"]
    gap = float(torch.as_tensor(abs(grown.encode(probe) - src.encode(probe))).max())
    if gap > 1e-5:
        raise SystemExit(f"the grown model's vectors differ from the original's by {gap:.2e}; nothing written")
    grown.save_pretrained(out)
    print(f"{sys.argv[1]} ({src.model.config.n_layer} blocks) -> {out} ({grown.model.config.n_layer} blocks); "
          f"vectors equal to {gap:.1e}")


if __name__ == "__main__":
    main()
