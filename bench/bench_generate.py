"""Greedy decoding, batch 1, 16-token prompt + 128 new tokens: gptlearn (KV cache, and without) vs
transformers ``generate``, and vs this machine's memory-bandwidth bound.

    python bench/bench_generate.py [--device cuda] [--bf16] [--memory] [--smoke]

Roofline: at batch 1 every new token reads every weight once (the tied unembedding included, one row
of the position table), so tokens/s can be at most bandwidth / bytes of weights. The bandwidth is a
STREAM-like read of a 1 GiB buffer (4 GiB on a GPU) on all threads (the faster of ``torch.sum`` and ``torch.amax``,
``common.stream_probes``), timed in the same rounds: a bound no decoder can beat, since it does nothing
but read. Every decode row (the eager step, the fused step, transformers) is reported against it. Three
mat-vec probes over 256 MB (``W @ x``, ``x @ W``, and ``W @ x`` with W's rows cut into one block per
thread) are timed beside it, to show how much of the bound one library call reaches. ``use_cache=False``
is compared with the cache on a shorter run (24 new tokens), since without a cache every token reruns
the whole window. On the CPU in fp32 the fused decoding step (``generate(fused=True)``, one C++ call a
token: ``gptlearn.fast.fused``) runs in the same rounds and gets its own row, ``generate-fused``.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def shapes(args):
    # preset, prompt length, new tokens, mat-vec probe (rows, cols), stream probe bytes
    if args.device.startswith("cuda") and not args.smoke:  # 4 GiB: ~1 ms a read on a GPU, far past its L2
        return ("gpt2", 16, 128, (65536, 16384), 4 << 30)
    return ("tiny", 8, 16, (2048, 1024), 16 << 20) if args.smoke else ("gpt2", 16, 128, (16384, 4096), 1 << 30)


NOCACHE_NEW = 24  # without a cache each token reruns the whole window: compare on a shorter run


def prepare(side: str, model_dir: Path, args, device, new_tokens: int | None = None):
    preset, P, N, _, _ = shapes(args)
    N = new_tokens or N
    prompt = torch.randint(0, 50257, (1, P), device=device, generator=torch.Generator(device).manual_seed(1))
    if side.startswith("gptlearn"):
        model = common.load_gptlearn(model_dir, device)
        use_cache, fused = side != "gptlearn_nocache", side == "gptlearn_fused"

        def run():
            with common.autocast(device, args.bf16):
                return model.generate(prompt, N, do_sample=False, use_cache=use_cache, fused=fused)
    else:
        model = common.load_hf(model_dir, device)
        model.generation_config.pad_token_id = model.config.eos_token_id

        def run():
            with torch.inference_mode(), common.autocast(device, args.bf16):
                return model.generate(prompt, max_new_tokens=N, min_new_tokens=N, do_sample=False)
    return model, run


def main(argv=None) -> list[dict]:
    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    device = common.setup(args)
    preset, P, N, (rows, cols), stream_bytes = shapes(args)
    if args.side:
        common.measure_memory_side(args, lambda: prepare(args.side, Path(args.model_dir), args, device)[1])
        return []
    with tempfile.TemporaryDirectory() as d:
        model_dir = common.random_model_dir(preset, Path(d))
        g_model, g_run = prepare("gptlearn", model_dir, args, device)
        n_new = min(N, NOCACHE_NEW)
        _, n_run = prepare("gptlearn_nocache", model_dir, args, device, n_new)
        _, c_run = prepare("gptlearn", model_dir, args, device, n_new)
        _, h_run = prepare("transformers", model_dir, args, device)
        runs = {"gptlearn": g_run, "transformers": h_run}
        if fused_available(device, args):
            runs["gptlearn_fused"] = prepare("gptlearn_fused", model_dir, args, device)[1]
        probe_dtype = torch.bfloat16 if args.bf16 else torch.float32
        mv, mv_bytes = common.matvec_probe(device, rows, cols, probe_dtype)
        vm, _ = common.vecmat_probe(device, rows, cols, probe_dtype)
        sm, sm_bytes = common.split_matvec_probe(device, rows, cols, probe_dtype)
        streams, st_bytes = common.stream_probes(device, stream_bytes)

        def same_tokens(outs):  # -> {side: share of its new tokens equal to transformers'}
            return {k: (outs[k][0, P:] == outs["transformers"][0, P:]).float().mean().item() for k in outs}

        c = common.contest(args, device, runs, check=same_tokens,
                           probes={"matvec": mv, "vecmat": vm, "split_matvec": sm, **streams},
                           script=__file__, model_dir=model_dir)
        nc = common.Contest(common.interleaved({"gptlearn": c_run, "gptlearn_nocache": n_run},
                                               reps=max(2, args.reps // 2), warmup=1, device=device))
    bytes_per_el = g_model.wte.weight.element_size()  # autocast keeps the weights in fp32 and reads them
    weight_bytes = (g_model.num_parameters() - g_model.wpe.weight.numel()) * bytes_per_el
    bandwidth = max(c.rate(k, st_bytes) for k in streams)  # what this machine can read at all
    bound = bandwidth / weight_bytes  # tokens/s if only weight reads cost anything
    tok_s = {k: c.rate(k, N) for k in runs}
    row = {
        "row": "generate",
        "shape": f"{preset} prompt={P} new={N} batch=1 greedy", **common.settings(args, device),
        "gptlearn_tok_s": tok_s["gptlearn"], "transformers_tok_s": tok_s["transformers"],
        "gptlearn_nocache_tok_s": nc.rate("gptlearn_nocache", n_new),
        "speedup": tok_s["gptlearn"] / tok_s["transformers"],
        "cache_speedup_at": n_new,
        "cache_speedup": nc.speedup("gptlearn", "gptlearn_nocache"),
        "bandwidth_gb_s": bandwidth / 1e9, "bound_tok_s": bound,
        "matvec_gb_s": c.rate("matvec", mv_bytes) / 1e9, "vecmat_gb_s": c.rate("vecmat", mv_bytes) / 1e9,
        "split_matvec_gb_s": c.rate("split_matvec", sm_bytes) / 1e9,
        "stream_sum_gb_s": c.rate("stream_sum", st_bytes) / 1e9,
        "stream_max_gb_s": c.rate("stream_max", st_bytes) / 1e9,
        "stream_bytes": st_bytes,
        "gptlearn_roofline": c.roofline("gptlearn", N, bound),
        "transformers_roofline": c.roofline("transformers", N, bound),
        "same_tokens": c.checked["gptlearn"],
    }
    rows = [c.emit(row, sides={"gptlearn": "gptlearn", "transformers": "transformers"})]
    if "gptlearn_fused" in runs:
        fused = {
            "row": "generate-fused", "shape": row["shape"], "device": row["device"], "dtype": row["dtype"],
            "threads": row["threads"], "gptlearn_tok_s": tok_s["gptlearn_fused"],
            "eager_tok_s": tok_s["gptlearn"], "transformers_tok_s": tok_s["transformers"],
            "speedup": tok_s["gptlearn_fused"] / tok_s["transformers"],
            "fused_vs_eager": tok_s["gptlearn_fused"] / tok_s["gptlearn"],
            "bandwidth_gb_s": bandwidth / 1e9, "bound_tok_s": bound,
            "gptlearn_roofline": c.roofline("gptlearn_fused", N, bound),
            "transformers_roofline": row["transformers_roofline"],
            "same_tokens": c.checked["gptlearn_fused"],
        }
        # this row's gptlearn is the fused step
        rows.append(c.emit(fused, sides={"gptlearn": "gptlearn_fused", "transformers": "transformers"}))
    return rows


def fused_available(device, args) -> bool:
    """The fused step runs on the CPU in fp32 and needs its C++ build; say so when it cannot run."""
    if device.type != "cpu" or args.bf16:
        return False
    from gptlearn.fast.fused import FusedUnavailable, load_kernel

    try:
        load_kernel()
        return True
    except FusedUnavailable as e:
        print(f"skipping generate-fused: {e}", flush=True)
        return False


if __name__ == "__main__":
    main()
