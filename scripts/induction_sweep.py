"""How fragile is the induction circuit's formation? Chapter 5c's toy (gptlearn.analysis.toy_config: 2 layers x 4
heads x 64 wide, a 64-token vocabulary, rows of 32) forms an induction head in about 1,000 AdamW steps on
repeated random blocks. This script changes one setting at a time toward the English teaching model's shape and
reports the step at which the best induction score of layers >= 1 first exceeds 0.5, or that it did not
within --steps (docs/gptlearn-english.md). Not part of the package; each run uses one thread.

    python scripts/induction_sweep.py                 # every variant (~25 min on one core)
    python scripts/induction_sweep.py toy width192    # some of them
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import gptlearn
from gptlearn.analysis import _patterns
from gptlearn.config import GPTConfig
from gptlearn.model import sinusoidal_positions

BASE = dict(L=2, H=4, C=64, T=32, V=64, lr=1e-3, wd=0.0, B=32)
VARIANTS = {
    "toy": {},
    "width192": dict(C=192, H=6),
    "width192_hs16": dict(C=192, H=12),
    "width128_hs16": dict(C=128, H=8),
    "width64_hs32": dict(H=2),
    "layers4": dict(L=4),
    "T128": dict(T=128, B=8),
    "vocab12288": dict(V=12288),
    "lr3e-3_wd0.1": dict(lr=3e-3, wd=0.1),
    "width192_lr3e-4": dict(C=192, H=6, lr=3e-4),
    "layers4_lr3e-4": dict(L=4, lr=3e-4),
    "T128_lr3e-4": dict(T=128, B=8, lr=3e-4),
    "T64_lr3e-4": dict(T=64, B=16, lr=3e-4),
    "english_body_T32_lr3e-4": dict(L=4, C=192, H=6, lr=3e-4),
}


@torch.no_grad()
def induction(model: gptlearn.GPT, T: int, alphabet: int) -> float:
    """Best induction score over layers >= 1 on 8 rows of T/2 random tokens (from the rows' alphabet) twice."""
    S = T // 2
    half = torch.randint(alphabet, (8, S), generator=torch.Generator().manual_seed(0))
    pattern = _patterns(model, torch.cat([half, half], 1))  # (L, B, H, T, T)
    stripe = pattern.diagonal(offset=1 - S, dim1=-2, dim2=-1)[..., 1:]  # query q -> key q - S + 1
    return float(stripe.mean(dim=(1, 3))[1:].max())


def run(name: str, steps: int, **change) -> int | None:
    a = {**BASE, **change}
    T = a["T"]
    cfg = GPTConfig(n_layer=a["L"], n_head=a["H"], n_embd=a["C"], n_positions=T, vocab_size=a["V"],
                    embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    model = gptlearn.GPT(cfg)
    with torch.no_grad():
        model.wpe.weight.copy_(sinusoidal_positions(T, a["C"]) * 0.3)  # as the toy and gptlearn-mini
    opt = torch.optim.AdamW(model.parameters(), lr=a["lr"], weight_decay=a["wd"])
    g, t0 = torch.Generator().manual_seed(1), time.time()
    for step in range(1, steps + 1):
        p = int(torch.randint(4, T // 2 + 1, (1,), generator=g))  # the block length, new each batch
        block = torch.randint(64, (a["B"], p), generator=g)  # tokens from a 64-token alphabet, as the toy's
        x = block.repeat(1, T // p + 1)[:, :T]  # (B, T)
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits[:, p - 1:].reshape(-1, a["V"]), x[:, p:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            model.eval()
            score = induction(model, T, 64)
            model.train()
            if score > 0.5:
                print(f"{name}: induction > 0.5 at step {step} ({time.time() - t0:.0f} s) {change}", flush=True)
                return step
    print(f"{name}: no induction head in {steps} steps (last loss {loss.item():.2f}, best score {score:.3f}; "
          f"{time.time() - t0:.0f} s) {change}", flush=True)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="*", metavar="VARIANT", help=f"which (default: all): {', '.join(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    torch.set_num_threads(1)
    for name in args.variants or VARIANTS:
        run(name, args.steps, **VARIANTS[name])


if __name__ == "__main__":
    main()
