"""Device and precision choices that work the same on a laptop CPU, Apple GPUs and CUDA."""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from typing import ContextManager

import torch

__all__ = ["device", "resolve_device", "autocast", "autocast_enabled", "keep_freed_memory"]


def device() -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(requested: str | torch.device | None) -> torch.device:
    """``None``/"auto" picks :func:`device`; an explicit request is honoured or refused, never
    silently replaced by the CPU."""
    if requested is None or requested == "auto":
        return device()
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {str(requested)!r} was requested but CUDA is not available; "
            "use device='cpu' or install a CUDA build of PyTorch"
        )
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError(f"device {str(requested)!r} was requested but MPS is not available; use device='cpu'")
    return dev


def autocast(dev: str | torch.device, dtype: torch.dtype | None = None) -> ContextManager:
    """Mixed precision on CUDA (bf16 where supported, else fp16); a no-op elsewhere.

    Pass ``dtype=torch.float32`` to switch it off explicitly.
    """
    dev = torch.device(dev)
    if dev.type != "cuda" or dtype == torch.float32:
        return contextlib.nullcontext()
    if dtype is None:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for this device type (CPU autocast too, not only CUDA's)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_enabled() or (device_type == "cpu" and torch.is_autocast_cpu_enabled())


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
_kept = False


def keep_freed_memory() -> bool:
    """Let this process keep the memory of freed large tensors for reuse (Linux with glibc only).

    By default glibc gives every allocation above 32 MB its own fresh pages from the kernel and hands
    them back on free, so each new logits, gradient or softmax tensor is paid again in page faults:
    a (512, 50257) log-softmax measured 0.5 GB/s instead of memory speed. After this call large
    blocks come from the heap and stay there (up to 1 GiB of free space at its top is kept). A
    training step measured 1.6x faster for the mini preset (0.39 -> 0.24 s) and 1.19x for GPT-2 124M
    (3.51 -> 2.94 s), 2 CPU threads, batch 4 x 128. The price: the process does not give that memory
    back to the system until it exits. Process-wide and idempotent; ``train()`` and
    ``train_embeddings()`` call it for CPU runs. Returns True when the setting took effect.
    """
    global _kept
    if _kept:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    _kept = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    return _kept
