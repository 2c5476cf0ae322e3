"""The GPU's own ceilings: dense GEMM rate (bf16, fp16, fp32, TF32) and HBM streaming-read bandwidth.

    python bench/gpu_roofline.py [--device cuda] [--smoke]

A CUDA row reads as a share of these, as a CPU row reads as a share of the CPU's: forward and training
rows against the GEMM rate of their dtype, the decoding row against the streaming-read bound. The bench
scripts time the probes below in the same rounds as their contenders (``common.gemm_probe`` hands a
GPU to :func:`gemm_probe`; ``bench_generate`` adds :func:`read_probe`); run alone, this file times every
probe once with CUDA events and prints one ``RESULT`` row, ``gpu-roofline`` (``scripts/gpu_check.py``
puts it at the top of its report).

Sizes: one 8192^3 product is 1.1 TFLOP, about 1.4 ms of bf16 on an H200, so a bf16 call runs eight of
them (~10 ms, far above launch and timer overheads); the read probe sums 4 GiB, about 70 times an
H200's 60 MB L2, so every byte comes from HBM. fp32 products run without TF32, as PyTorch's default
(``torch.backends.cuda.matmul.allow_tf32 = False``) runs the fp32 rows; the TF32 rate is reported beside.
On the CPU (``--smoke``, tests) the same code runs with small sizes.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from typing import Callable

import torch

GIB = 1 << 30


def _cuda(device: torch.device | str) -> bool:
    return torch.device(device).type == "cuda"


def gemm_probe(device: torch.device | str, dtype: torch.dtype = torch.float32, n: int | None = None):
    """Square products of random (n, n) matrices; returns (fn, flops per call).

    On a GPU n is 8192 and a 16-bit call runs eight products (one fp32 product already takes ~20 ms)."""
    device = torch.device(device)
    n = n or (8192 if _cuda(device) else 256)
    k = 8 if _cuda(device) and dtype in (torch.bfloat16, torch.float16) else 1
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)

    def run():
        for _ in range(k):
            torch.mm(a, b, out=out)

    return run, 2.0 * n**3 * k


def read_probe(device: torch.device | str, nbytes: int | None = None):
    """A sum over one large fp32 tensor: every byte read once, almost nothing written;
    returns (fn, bytes read per call). 4 GiB on a GPU, 64 MiB on the CPU."""
    device = torch.device(device)
    nbytes = nbytes or (4 * GIB if _cuda(device) else 64 << 20)
    x = torch.randn(nbytes // 4, device=device)
    out = torch.empty((), device=device)
    return (lambda: torch.sum(x, dim=0, out=out)), float(x.numel() * 4)


def matvec_probe(device: torch.device | str, nbytes: int | None = None):
    """``W @ x`` over a (rows, 16384) fp32 matrix of ``nbytes``: the read that batch-1 decoding does;
    returns (fn, bytes read per call)."""
    device = torch.device(device)
    nbytes = nbytes or (4 * GIB if _cuda(device) else 64 << 20)
    cols = 16384 if _cuda(device) else 4096
    w = torch.randn(nbytes // (4 * cols), cols, device=device)
    x = torch.randn(cols, device=device)
    out = torch.empty(w.size(0), device=device)
    return (lambda: torch.mv(w, x, out=out)), float(w.numel() * 4)


def copy_probe(device: torch.device | str, nbytes: int | None = None):
    """A device-to-device copy; returns (fn, bytes read + written per call), to set beside the
    copy rate measured before on such machines (``/work/.library/device/KINDS.md``: ~4.3 TB/s on an H200)."""
    device = torch.device(device)
    nbytes = nbytes or (2 * GIB if _cuda(device) else 32 << 20)
    x = torch.randn(nbytes // 4, device=device)
    y = torch.empty_like(x)
    return (lambda: y.copy_(x)), 2.0 * x.numel() * 4


def time_each(fn: Callable[[], object], device: torch.device | str, *, reps: int, warmup: int) -> float:
    """Median seconds per call: CUDA events around each call on a GPU, the wall clock elsewhere."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if _cuda(device):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


@contextlib.contextmanager
def tf32(enabled: bool):
    """Let fp32 products use TF32 tensor cores inside the block (restored afterwards)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def measure(device: torch.device | str, *, smoke: bool = False) -> dict:
    """Every ceiling once -> {gemm_<dtype>_tflops, read_gb_s (the faster read probe), ...}."""
    device = torch.device(device)
    reps, warmup = (3, 1) if smoke else (10, 3)
    small = dict(n=128) if smoke else {}
    nbytes = (8 << 20) if smoke else None
    row: dict = {"row": "gpu-roofline", "device": str(device),
                 "name": torch.cuda.get_device_name(device) if _cuda(device) else "cpu"}
    for name, dtype, allow_tf32 in (("bf16", torch.bfloat16, False), ("fp16", torch.float16, False),
                                    ("fp32", torch.float32, False), ("tf32", torch.float32, True)):
        with tf32(allow_tf32):
            fn, flops = gemm_probe(device, dtype, **small)
            row[f"gemm_{name}_tflops"] = flops / time_each(fn, device, reps=reps, warmup=warmup) / 1e12
        del fn
    for name, probe in (("read_sum", read_probe), ("read_mv", matvec_probe), ("copy", copy_probe)):
        fn, nb = probe(device, nbytes)
        row[f"{name}_gb_s"] = nb / time_each(fn, device, reps=reps, warmup=warmup) / 1e9
        del fn
    row["read_gb_s"] = max(row["read_sum_gb_s"], row["read_mv_gb_s"])  # the streaming-read bound
    if _cuda(device):
        torch.cuda.empty_cache()
    return row


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--smoke", action="store_true", help="small sizes (CPU tests)")
    args = p.parse_args(argv)
    if _cuda(args.device) and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but torch sees no CUDA GPU")
    torch.manual_seed(0)
    row = {"date": time.strftime("%Y-%m-%d %H:%M"), **measure(args.device, smoke=args.smoke)}
    print("RESULT " + json.dumps(row), flush=True)
    return row


if __name__ == "__main__":
    main()
