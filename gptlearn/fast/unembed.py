"""The unembedding and its loss in vocabulary blocks.

Legend: N rows (tokens), C n_embd, V vocab, b rows of the weight in one block.

Logits are ``x @ W.T`` with W the (V, C) token embedding. On the CPU a wide vocabulary is faster in
blocks of a few thousand rows of W (MKL writes one (N, 50257) output slowly), and the loss is much
faster and smaller when the (N, V) logits, their softmax and its gradient are never separate tensors:

- :func:`unembed` multiplies W in blocks; without autograd it fills one output, which reuses the memory
  of earlier logits nobody holds any more (:func:`gptlearn.fast.memory.empty_reused`). A few rows (a
  decoding step) take :func:`gptlearn.fast.linear.linear`, the row-split product while decoding.
- :func:`unembed_loss` is ``F.cross_entropy(unembed(x, W), targets)`` computed block by block (see
  ``_UnembedCrossEntropy``): each block of logits becomes its share of softmax - one-hot in place and
  goes straight into the gradients of x and W while it is still in the cache.

:class:`Unembedding` is the model's ``lm_head`` with both. Same numbers as the plain head within
float rounding; ``bench/README.md`` has the timings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..devices import autocast_enabled
from .linear import linear
from .memory import empty_reused

__all__ = ["unembed", "unembed_loss", "Unembedding"]

CHUNK = 4096  # rows of W per block of logits


def unembed(x: torch.Tensor, weight: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """Logits ``x @ weight.T``: (..., C) with weight (V, C) -> (..., V), the same numbers as ``F.linear``."""
    V, C = weight.shape
    if x.numel() < 8 * C:  # a decoding step's few rows
        return linear(x, weight)
    if x.device.type != "cpu" or V <= chunk:
        return F.linear(x, weight)
    blocks = weight.split(chunk)  # views, V/chunk x (chunk, C)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return torch.cat([F.linear(x, w) for w in blocks], dim=-1)  # V/chunk x (..., chunk) -> (..., V)
    out = empty_reused((*x.shape[:-1], V), x.dtype)  # no autograd: fill one output, one block at a time
    start = 0
    for w in blocks:
        out[..., start:start + w.size(0)] = F.linear(x, w)  # (..., chunk)
        start += w.size(0)
    return out


class _UnembedCrossEntropy(torch.autograd.Function):
    """``F.cross_entropy(x @ weight.T, targets)`` for x (N, C), weight (V, C), targets (N,), in blocks.

    Pass 1 makes each block of logits (N, b), keeps its row maxima and the target logits, and turns it
    into exp(logit - block max) in place; the blocks' sums give log-sum-exp, hence the loss. When a
    gradient is wanted, pass 2 scales each block in place into its share of softmax - one-hot (the
    gradient of the loss with respect to the logits) and immediately multiplies it into the gradients
    of x (N, C) and of weight's rows (b, C). So the logits, the softmax and its gradient share one
    allocation made of ~8 MB blocks. The gradients are made in the forward pass and handed over
    (scaled) in backward: call backward once.
    """

    @staticmethod
    def forward(ctx, x, weight, targets, ignore_index: int):
        N = x.size(0)
        block = max(1024, min(8192, (1 << 21) // max(N, 1)))  # ~8 MB of fp32 logits per block
        valid = targets != ignore_index  # (N,)
        n_valid = valid.sum()
        t = torch.where(valid, targets, 0)  # (N,) ignored rows point at token 0; their loss is masked
        t_block, t_col = t // block, t % block  # (N,) which block holds each target, and where in it
        rows = torch.arange(N, device=x.device)
        blocks = weight.split(block)  # views, (b, C) each
        want = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        exps, maxes, sums = [], [], []
        t_logit = x.new_zeros(N)  # (N,) the logit of each target
        for i, w in enumerate(blocks):
            logits = F.linear(x, w)  # (N, b)
            t_logit = torch.where(t_block == i, logits[rows, t_col.clamp(max=w.size(0) - 1)], t_logit)
            m = logits.amax(1)  # (N,)
            logits.sub_(m[:, None]).exp_()  # now exp(logit - m), in place
            maxes.append(m)
            sums.append(logits.sum(1))
            if want:
                exps.append(logits)
        M = torch.stack(maxes, 1)  # (N, blocks)
        m = M.amax(1)  # (N,)
        lse = m + torch.log((torch.stack(sums, 1) * torch.exp(M - m[:, None])).sum(1))  # (N,)
        loss = ((lse - t_logit) * valid).sum() / n_valid
        if want:
            grad_x = torch.zeros_like(x) if ctx.needs_input_grad[0] else None  # (N, C)
            grad_w = empty_reused(weight.shape, weight.dtype, weight.device) \
                if ctx.needs_input_grad[1] else None  # (V, C), in reused memory on the CPU
            row_weight = valid / n_valid  # (N,) d loss / d (per-row loss)
            for i, w in enumerate(blocks):
                p, exps[i] = exps[i], None  # (N, b); dropped from the list as soon as it is used
                p.mul_((torch.exp(M[:, i] - lse) * row_weight)[:, None])  # softmax * row weight
                here = valid & (t_block == i)  # (N,) rows whose target is in this block
                p[rows[here], t_col[here]] -= 1.0 / n_valid  # minus the one-hot
                if grad_x is not None:
                    grad_x.addmm_(p, w)  # (N, b) @ (b, C)
                if grad_w is not None:
                    torch.mm(p.T, x, out=grad_w[i * block:i * block + w.size(0)])  # (b, N) @ (N, C)
            ctx.save_for_backward(grad_x, grad_w)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_w = ctx.saved_tensors
        if not (grad_loss.device.type == "cpu" and float(grad_loss) == 1.0):  # e.g. loss / grad_accum
            grad_x = grad_x * grad_loss if grad_x is not None else None
            if grad_w is not None:  # into reused memory again, not a fresh (V, C) tensor
                grad_w = torch.mul(grad_w, grad_loss, out=empty_reused(grad_w.shape, grad_w.dtype, grad_w.device))
        return grad_x, grad_w, None, None


def unembed_loss(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                 ignore_index: int = -100) -> torch.Tensor:
    """``F.cross_entropy(unembed(x, weight), targets)`` without the (N, V) logits, log-softmax and their
    gradient as separate tensors: x (..., C), weight (V, C), targets (...) -> scalar.

    fp32 without autocast takes the blocked path; other dtypes and autocast the plain one. Without
    autograd it keeps no logits at all, only one block at a time.
    """
    if x.dtype != torch.float32 or weight.dtype != torch.float32 or autocast_enabled(x.device.type):
        logits = unembed(x, weight).reshape(-1, weight.size(0))  # (..., V) -> (N, V)
        return F.cross_entropy(logits.float(), targets.reshape(-1), ignore_index=ignore_index)
    return _UnembedCrossEntropy.apply(x.reshape(-1, x.size(-1)), weight, targets.reshape(-1), ignore_index)


class Unembedding(nn.Linear):
    """The model's ``lm_head`` (same weight, state dict, hooks) with :func:`unembed` as its forward and
    :func:`unembed_loss` as its ``loss``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return unembed(x, self.weight)  # (..., C) -> (..., V)

    def loss(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy (nats) of ``targets`` (B, T) given the final stream x (B, T, C)."""
        return unembed_loss(x, self.weight, targets)
