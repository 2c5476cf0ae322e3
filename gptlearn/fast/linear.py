"""Row-split matrix-vector products for decoding on a multi-core CPU.

Legend: M rows of input (tokens being decoded), in / out features, k threads.

Decoding one token multiplies every weight matrix by a single vector, so its speed is how fast the
weights stream from memory. On the CPU, MKL may run such a product (``F.linear`` with one row) on one
core however many threads torch has, while all cores together read memory faster. :func:`linear` cuts
the weight's rows into k blocks, one per thread, and multiplies them in one batched call
(``torch.bmm``), which MKL spreads over the threads. The numbers are the same dot products as
``F.linear``'s, summed by another kernel: equal within float rounding, not bit for bit. So the path is
only taken inside :func:`split_matvecs`, which generation turns on around each step; everywhere else
(``run_with_cache``, the chapters' by-hand comparisons, embeddings, training) :class:`Linear` is exactly
``nn.Linear``. The speed-up is measured in ``bench/README.md``.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..devices import autocast_enabled

__all__ = ["linear", "Linear", "split_matvecs"]

SPLIT_MAX_ROWS = 16  # up to this many rows the row-split product is the faster (bench/README.md)
SPLIT_MIN_NUMEL = 1 << 19  # smaller weights (< 2 MB in fp32) fit in cache: splitting only adds overhead


_SPLIT = contextvars.ContextVar("gptlearn_split_matvecs", default=False)


@contextlib.contextmanager
def split_matvecs(enabled: bool = True) -> Iterator[None]:
    """Within this block (this thread only), :func:`linear` may take the row-split path.

    >>> with split_matvecs():                       # what generate() does around each step
    ...     logits = model(next_token, kv_cache=cache)   # doctest: +SKIP
    """
    token = _SPLIT.set(enabled)
    try:
        yield
    finally:
        _SPLIT.reset(token)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``: (..., in) with weight (out, in) -> (..., out).

    Inside :func:`split_matvecs`, a few rows of x on a CPU with several threads, without autograd or
    autocast, take the row-split path; everything else is ``F.linear``.
    """
    k = torch.get_num_threads()
    out_f, in_f = weight.shape
    if (not _SPLIT.get() or x.numel() > SPLIT_MAX_ROWS * in_f or weight.numel() < SPLIT_MIN_NUMEL
            or k < 2 or out_f < 2 * k or not x.is_cpu or weight.stride(-1) != 1 or x.dtype != weight.dtype
            or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            or autocast_enabled("cpu")):  # outside decoding, training and small weights: F.linear at once
        return F.linear(x, weight, bias)
    step = out_f // k  # block j holds rows j*step ... j*step + size - 1
    size = out_f - (k - 1) * step  # the last block ends at out_f; blocks overlap by out_f % k rows
    lead = x.shape[:-1]
    x2 = x.reshape(1, -1, in_f).expand(k, -1, in_f)  # (M, in) -> (k, M, in), a view
    blocks = weight.as_strided((k, size, in_f), (step * weight.stride(0), weight.stride(0), 1))  # (k, size, in)
    y = torch.bmm(x2, blocks.transpose(1, 2))  # (k, M, in) @ (k, in, size) -> (k, M, size)
    if size == step:
        y = y.transpose(0, 1).reshape(-1, out_f)  # (M, k, size) -> (M, out)
    else:  # drop each block's rows that the next block also computed
        y = torch.cat([y[:-1, :, :step].transpose(0, 1).flatten(1), y[-1]], dim=1)  # (M, out)
    if bias is not None:
        y += bias
    return y.view(*lead, out_f)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, state dict, hooks) whose forward is :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
