"""GPT-2's tanh GELU as x·σ(2z): the same curve, computed with one cheap exponential.

GELU's tanh form is ½x(1 + tanh z) with z = √(2/π)(x + 0.044715x³), and ½(1 + tanh z) = σ(2z), so
it equals x·σ(2z) (within 5e-7). ``torch.tanh`` is slow in some CPU builds; ``sigmoid`` in place is
not. The rewrite is taken only where it pays: fp32 on the CPU, no autograd, and enough values that
one call's fixed cost is small (a decoding step's few rows keep ``F.gelu``'s single call).
``bench/README.md`` has the timings.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["gelu", "GELU"]

MIN_NUMEL = 16384  # fewer values: F.gelu's one call is the faster


def gelu(x: torch.Tensor, approximate: str = "tanh") -> torch.Tensor:
    """``F.gelu(x, approximate=approximate)``, through x·σ(2z) where that is faster."""
    if (approximate != "tanh" or x.device.type != "cpu" or x.dtype != torch.float32 or x.numel() < MIN_NUMEL
            or (torch.is_grad_enabled() and x.requires_grad)):
        return F.gelu(x, approximate=approximate)
    c = 2 * math.sqrt(2 / math.pi)
    s = torch.addcmul(x.new_tensor(c), x, x, value=c * 0.044715)  # 2√(2/π)(1 + 0.044715x²)
    return s.mul_(x).sigmoid_().mul_(x)  # σ(2z) · x, in place


class GELU(nn.GELU):
    """``nn.GELU`` whose forward is :func:`gelu`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gelu(x, self.approximate)
