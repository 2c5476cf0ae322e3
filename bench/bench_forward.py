"""Forward pass, GPT-2 124M shape, batch 8x128: gptlearn vs transformers, and vs this machine's GEMM rate.

    python bench/bench_forward.py [--device cuda] [--bf16] [--memory] [--smoke]

Roofline: a forward pass costs about 2 * params * tokens FLOPs (every weight is one multiply-add per
token, the tied unembedding included); divided by the time that is a FLOP rate, compared with a large
square torch.mm timed in the same rounds.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def shapes(args):
    return ("tiny", 2, 16, 256) if args.smoke else ("gpt2", 8, 128, 2048)  # preset, B, T, GEMM n


def prepare(side: str, model_dir: Path, args, device):
    preset, B, T, _ = shapes(args)
    idx = torch.randint(0, 50257, (B, T), device=device, generator=torch.Generator(device).manual_seed(1))
    model = common.load_gptlearn(model_dir, device) if side == "gptlearn" else common.load_hf(model_dir, device)

    def run():
        with torch.inference_mode(), common.autocast(device, args.bf16):
            out = model(idx)
            return out if side == "gptlearn" else out.logits

    return model, run


def main(argv=None) -> list[dict]:
    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    device = common.setup(args)
    preset, B, T, n = shapes(args)
    if args.side:
        common.measure_memory_side(args, lambda: prepare(args.side, Path(args.model_dir), args, device)[1])
        return []
    with tempfile.TemporaryDirectory() as d:
        model_dir = common.random_model_dir(preset, Path(d))
        g_model, g_run = prepare("gptlearn", model_dir, args, device)
        _, h_run = prepare("transformers", model_dir, args, device)
        gemm, gemm_flops = common.gemm_probe(device, n, torch.bfloat16 if args.bf16 else torch.float32)
        c = common.contest(args, device, {"gptlearn": g_run, "transformers": h_run}, probes={"gemm": gemm},
                           check=lambda out: (out["gptlearn"].float() - out["transformers"].float()).abs().max().item(),
                           script=__file__, model_dir=model_dir)
    flops = 2.0 * g_model.num_parameters() * B * T
    gemm_rate = c.rate("gemm", gemm_flops)
    row = {
        "row": "forward",
        "shape": f"{preset} B={B} T={T}", **common.settings(args, device),
        "gptlearn_s": c.med("gptlearn"), "transformers_s": c.med("transformers"),
        "speedup": c.speedup("gptlearn", "transformers"),
        "gemm_gflops": gemm_rate / 1e9,
        "gptlearn_roofline": c.roofline("gptlearn", flops, gemm_rate),
        "transformers_roofline": c.roofline("transformers", flops, gemm_rate),
        "max_abs_logit_diff": c.checked,
    }
    return [c.emit(row)]


if __name__ == "__main__":
    main()
