"""Training step (forward + cross-entropy + backward + AdamW step), batch 4x128, for the mini and the
124M configs: gptlearn vs transformers with the same optimizer, and vs this machine's GEMM rate.
gptlearn's step is ``model(x, targets=y)`` (what ``train()`` calls: unembedding and cross-entropy in
vocabulary blocks); transformers' is ``F.cross_entropy(model(x).logits, y)``.

    python bench/bench_train.py [--device cuda] [--bf16] [--memory] [--smoke] [--configs mini,gpt2]

Roofline: a training step costs about 6 * params * tokens FLOPs (2 forward, 4 backward).
The optimizer is ``gptlearn.train.make_optimizer`` (AdamW, nanoGPT's weight-decay groups) on both
sides. Dropout is 0 on both sides by default (``--dropout``), as in nanoGPT pretraining.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def make_optimizer(model):
    try:
        from gptlearn.train import make_optimizer as mk
    except ImportError:  # train.py not there: the same AdamW by hand
        decay = [p for p in model.parameters() if p.dim() >= 2]
        rest = [p for p in model.parameters() if p.dim() < 2]
        return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                                 lr=3e-4, betas=(0.9, 0.95))
    return mk(model, lr=3e-4)


def shapes(args):
    B, T = (2, 16) if args.smoke else (4, 128)
    n = 256 if args.smoke else 2048
    return B, T, n


def configs(args) -> list[str]:
    return ["tiny"] if args.smoke else args.configs.split(",")


def prepare(side: str, model_dir: Path, args, device):
    B, T, _ = shapes(args)
    gen = torch.Generator(device).manual_seed(1)
    idx = torch.randint(0, 50257, (B, T + 1), device=device, generator=gen)
    x, y = idx[:, :-1], idx[:, 1:]
    model = common.load_gptlearn(model_dir, device) if side == "gptlearn" else common.load_hf(model_dir, device)
    model.train()
    opt = make_optimizer(model)

    def run():
        opt.zero_grad(set_to_none=True)
        with common.autocast(device, args.bf16):
            if side == "gptlearn":  # gptlearn's training call, as train() makes it: the loss, no logits kept
                loss = model(x, targets=y)
            else:  # transformers' logits (B, T, V), then the same cross-entropy
                loss = F.cross_entropy(model(x).logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        opt.step()
        return loss

    return model, run


def main(argv=None) -> list[dict]:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--configs", default="mini,gpt2", help="comma-separated gptlearn presets")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout on both sides (default 0)")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="gptlearn.fast.memory.keep_freed_memory() for this whole process (both sides), as train() does")
    args = p.parse_args(argv)
    device = common.setup(args)
    if args.keep_freed_memory:
        from gptlearn.fast.memory import keep_freed_memory

        keep_freed_memory()
    B, T, n = shapes(args)
    drop = dict(resid_pdrop=args.dropout, embd_pdrop=args.dropout, attn_pdrop=args.dropout)
    if args.side:
        common.measure_memory_side(args, lambda: prepare(args.side, Path(args.model_dir), args, device)[1])
        return []
    rows = []
    for preset in configs(args):
        with tempfile.TemporaryDirectory() as d:
            model_dir = common.random_model_dir(preset, Path(d), **drop)
            g_model, g_run = prepare("gptlearn", model_dir, args, device)
            _, h_run = prepare("transformers", model_dir, args, device)
            gemm, gemm_flops = common.gemm_probe(device, n, torch.bfloat16 if args.bf16 else torch.float32)
            c = common.contest(args, device, {"gptlearn": g_run, "transformers": h_run}, probes={"gemm": gemm},
                               check=lambda out: (out["gptlearn"].item(), out["transformers"].item()),
                               script=__file__, model_dir=model_dir)  # same weights, same batch: same first loss
        params = g_model.num_parameters()
        gemm_rate = c.rate("gemm", gemm_flops)
        flops = 6.0 * params * B * T
        rows.append(c.emit({
            "row": f"train-{preset}",
            "shape": f"{preset} ({params / 1e6:.1f}M) B={B} T={T} AdamW dropout={args.dropout}",
            **common.settings(args, device), "keep_freed_memory": args.keep_freed_memory,
            "gptlearn_tok_s": c.rate("gptlearn", B * T), "transformers_tok_s": c.rate("transformers", B * T),
            "speedup": c.speedup("gptlearn", "transformers"),
            "gemm_gflops": gemm_rate / 1e9,
            "gptlearn_roofline": c.roofline("gptlearn", flops, gemm_rate),
            "transformers_roofline": c.roofline("transformers", flops, gemm_rate),
            "first_loss": c.checked,
        }))
    return rows


if __name__ == "__main__":
    main()
