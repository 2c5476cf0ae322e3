"""A token embedding whose weight gradient reuses memory (:func:`gptlearn.fast.memory.empty_reused`).

The gradient of a lookup is a (V, C) matrix, zero except the rows of the ids used. ``nn.Embedding``
makes a new one each backward pass (GPT-2's is 154 MB), and a new tensor above 32 MB is paid in page
faults before it is even zeroed; then the tied unembedding's (V, C) gradient is added to it in one more
new tensor. Here the gradient comes from the reused-memory pool, and as that is a tensor of its own
(not a view), autograd adds the unembedding's gradient into it in place. Same numbers (sums of the same
rows); only the memory differs. ``bench/README.md`` has the profile that found it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .memory import empty_reused

__all__ = ["Embedding"]


class _EmbeddingLookup(torch.autograd.Function):
    """``F.embedding(idx, weight)`` whose weight gradient (V, C) is made in reused CPU memory."""

    @staticmethod
    def forward(ctx, idx, weight):
        ctx.save_for_backward(idx)
        ctx.weight_shape = weight.shape
        return F.embedding(idx, weight)  # (...) -> (..., C)

    @staticmethod
    def backward(ctx, grad):
        idx, = ctx.saved_tensors
        grad_w = empty_reused(ctx.weight_shape, grad.dtype).zero_()  # (V, C)
        grad_w.index_add_(0, idx.reshape(-1), grad.reshape(-1, grad.size(-1)))  # each row: the sum over its uses
        return None, grad_w


class Embedding(nn.Embedding):
    """``nn.Embedding`` (same parameters, state dict, hooks) whose weight gradient on the CPU reuses memory.

    Only the plain lookup (no ``padding_idx``, ``max_norm`` or sparse gradients) on the CPU with autograd
    takes this path; everything else is ``nn.Embedding``'s.
    """

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if (w.device.type != "cpu" or not (torch.is_grad_enabled() and w.requires_grad) or self.sparse
                or self.padding_idx is not None or self.max_norm is not None or self.scale_grad_by_freq):
            return super().forward(idx)
        return _EmbeddingLookup.apply(idx, w)
