"""Reusing the memory of large CPU tensors instead of asking the kernel for fresh pages.

glibc's allocator gives every block above 32 MB its own fresh pages from the kernel and returns them
when the block is freed. So each new logits tensor, (V, C) gradient or softmax of a training step pays
a page fault per 4 KB before it holds a single number. Two ways round it:

- :func:`empty_reused`: ``torch.empty`` whose large CPU results reuse the memory of an earlier result
  that nothing refers to any more (a small pool, at most 1 GiB). It touches nothing else in the process.
  The no-autograd logits (:mod:`gptlearn.fast.unembed`) and the (V, C) gradients of the token embedding
  and of the blocked loss use it.
- :func:`keep_freed_memory`: tell glibc to keep freed memory in the heap for the whole process. The
  process then does not give that memory back until it exits. :func:`freed_memory_kept` does the same
  for the length of a ``with`` block and then puts glibc's defaults back (what ``train()`` and
  ``train_embeddings()`` do for CPU runs).

What each costs and saves is measured in ``bench/README.md``.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys
import threading
import weakref
from typing import Iterator, Sequence

import torch

__all__ = ["empty_reused", "reused_blocks", "release_reused", "keep_freed_memory", "freed_memory_kept"]

REUSE_MIN_BYTES = 32 << 20  # smaller blocks glibc reuses by itself (32 MB is its largest mmap threshold)
REUSE_MAX_BYTES = 1 << 30  # the pool never holds more than this
_pool: list[list] = []  # [memory (uint8 ndarray over a torch buffer), weakref to the view last handed out]
_pool_lock = threading.Lock()


def empty_reused(shape: Sequence[int], dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype, device=device)``; on the CPU (the default) a large one reuses the
    memory of an earlier result of this function that nothing refers to any more (no tensor, view or
    NumPy array of it is left).

    Sizes from 32 MB up to 1 GiB are pooled, at most 1 GiB in all, and the pool keeps that memory after
    its tensors are gone (:func:`release_reused` gives it back); smaller or larger ones are plain
    ``torch.empty``. Memory is never handed out twice while in use: the pool hands out a fresh NumPy
    view of it each time and keeps only a weak reference to that view, which dies with the last tensor
    sharing the memory. Each result is a tensor of its own, not a view (so autograd may accumulate a
    gradient into it in place), and cannot be resized in place (``resize_``).
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


def reused_blocks() -> list[int]:
    """The sizes in bytes of the blocks :func:`empty_reused` keeps now, in use or free, oldest first."""
    with _pool_lock:
        return [mem.nbytes for mem, _ in _pool]


def release_reused() -> None:
    """Forget the memory :func:`empty_reused` keeps for reuse (tensors still in use are unaffected)."""
    with _pool_lock:
        _pool.clear()


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
_kept = False


def keep_freed_memory() -> bool:
    """Let this process keep the memory of freed large tensors for reuse (Linux with glibc only).

    After this call large blocks come from the heap and stay there (up to 1 GiB of free space at its
    top is kept) instead of fresh pages for every new tensor. The price: the process does not give that
    memory back to the system until it exits. Process-wide and idempotent (:func:`freed_memory_kept` is
    the same for a ``with`` block). Returns True when the setting took effect.
    """
    global _kept
    if _kept:
        return True
    mallopt = _mallopt()
    if mallopt is None:
        return False
    _kept = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    return _kept


_GLIBC_DEFAULTS = ((_M_MMAP_MAX, 65536), (_M_TRIM_THRESHOLD, 128 * 1024))  # malloc(3)'s documented defaults


def _mallopt():
    """glibc's ``mallopt``, or None (not Linux, or not glibc: musl has none)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def freed_memory_kept() -> Iterator[bool]:
    """:func:`keep_freed_memory` while the block runs (yields whether it took effect); afterwards glibc's
    defaults are back, so the process again returns freed memory to the system. A setting made before the
    block by :func:`keep_freed_memory` stays as it was."""
    global _kept
    was = _kept
    took = keep_freed_memory()
    try:
        yield took
    finally:
        mallopt = _mallopt()
        if took and not was and mallopt is not None:
            for param, value in _GLIBC_DEFAULTS:
                mallopt(param, value)
            _kept = False
