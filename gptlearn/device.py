"""Device and precision choices that work the same on a laptop CPU, Apple GPUs and CUDA."""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys
import threading
import weakref
from typing import ContextManager, Sequence

import torch

__all__ = ["device", "resolve_device", "autocast", "autocast_enabled", "keep_freed_memory", "empty_reused",
           "release_reused"]


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


REUSE_MIN_BYTES = 32 << 20  # smaller blocks glibc reuses by itself (32 MB is its largest mmap threshold)
REUSE_MAX_BYTES = 1 << 30  # the pool of :func:`empty_reused` never holds more than this
_pool: list[list] = []  # [memory (uint8 ndarray over a torch buffer), weakref to the view last handed out]
_pool_lock = threading.Lock()


def empty_reused(shape: Sequence[int], dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype, device=device)``; on the CPU (the default) a large one reuses the
    memory of an earlier result of this function that nothing refers to any more (no tensor, view or
    NumPy array of it is left).

    Why: glibc hands every block above 32 MB fresh pages from the kernel and returns them on free, so
    each new (8, 128, 50257) logits tensor of GPT-2 (206 MB) first costs ~50,000 page faults: 55-90 ms
    of a 1.6 s forward pass on this project's 2-core CPU (``bench/README.md``). The no-grad logits of
    :func:`gptlearn.model.unembed` use it, and the (V, C) gradients of the token embedding and of the
    fused loss (:class:`gptlearn.model.Embedding`). Unlike :func:`keep_freed_memory` this touches nothing else
    in the process. Sizes from 32 MB up to 1 GiB are pooled, at most 1 GiB in all, and the pool keeps
    that memory after its tensors are gone (:func:`release_reused` gives it back); smaller or larger
    ones are plain ``torch.empty``. Memory is never handed out twice while in use: the pool hands out a
    fresh NumPy view of it each time and keeps only a weak reference to that view, which dies with the
    last tensor sharing the memory. Each is a tensor of its own, not a view (so autograd may accumulate
    a gradient into it in place), and cannot be resized in place (``resize_``).
    """
    shape = tuple(int(n) for n in shape)
    nbytes = torch.Size(shape).numel() * dtype.itemsize
    if not REUSE_MIN_BYTES <= nbytes <= REUSE_MAX_BYTES or (device is not None and torch.device(device).type != "cpu"):
        return torch.empty(shape, dtype=dtype, device=device)
    with _pool_lock:
        free = [i for i, (mem, ref) in enumerate(_pool) if mem.nbytes == nbytes and ref() is None]
        if free:
            entry = _pool.pop(free[0])
        else:
            held = sum(mem.nbytes for mem, _ in _pool)
            while _pool and held + nbytes > REUSE_MAX_BYTES:  # forget the oldest; one in use stays alive
                held -= _pool.pop(0)[0].nbytes  # through its view until its tensors are gone
            entry = [torch.empty(nbytes, dtype=torch.uint8).numpy(), None]  # torch's 64-byte alignment
        try:  # a tensor of its own (not a view of a flat one), so autograd may add into it in place
            view = entry[0].view(_numpy_dtype(dtype)).reshape(shape)  # a new ndarray over the same memory
            out = torch.from_numpy(view)  # its storage keeps the ndarray alive
        except TypeError:  # a dtype NumPy lacks (bfloat16)
            view = entry[0][:]
            out = torch.frombuffer(view, dtype=dtype).view(shape)
        entry[1] = weakref.ref(view)  # dies with the last tensor, view or NumPy array sharing the memory
        _pool.append(entry)  # most recently used last
        return out


@functools.lru_cache(maxsize=None)
def _numpy_dtype(dtype: torch.dtype):
    return torch.empty(0, dtype=dtype).numpy().dtype  # TypeError for dtypes NumPy lacks (bfloat16)


def release_reused() -> None:
    """Forget the memory :func:`empty_reused` keeps for reuse (tensors still in use are unaffected)."""
    with _pool_lock:
        _pool.clear()
