"""Causal multi-head self-attention (book chapters 3-5).

Legend for shape comments: B batch, T query tokens, S key tokens (T, or more with a KV cache),
C n_embd, H n_head, hs head size (C // H).

The teaching functions (:func:`split_heads`, :func:`attention_scores`, :func:`attention_pattern`,
:func:`merge_heads`) are what the chapters build by hand; :class:`CausalSelfAttention` uses them on its
explicit path and PyTorch's fused ``scaled_dot_product_attention`` on its fast path.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import GPTConfig
from .hooks import HookPoint
from .kv_cache import KVCache

__all__ = [
    "split_heads",
    "merge_heads",
    "causal_mask",
    "attention_scores",
    "attention_pattern",
    "CausalSelfAttention",
    "Packing",
]


def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, C) -> (B, H, T, hs): give every head its own slice of the channels.

    >>> split_heads(torch.arange(8.).view(1, 2, 4), 2)[0, 1]   # head 1 sees channels 2..3
    tensor([[2., 3.],
            [6., 7.]])
    """
    B, T, C = x.shape
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)  # (B, T, H, hs) -> (B, H, T, hs)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, hs) -> (B, T, C): concatenate the heads' outputs side by side (inverse of split)."""
    B, H, T, hs = x.shape
    return x.transpose(1, 2).reshape(B, T, H * hs)  # (B, T, H, hs) -> (B, T, C)


def causal_mask(T: int, S: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean (T, S) mask, True where query i may look at key j.

    Queries are the last T of S positions, so with a KV cache (S > T) the mask is bottom-right aligned.

    >>> causal_mask(3).int()
    tensor([[1, 0, 0],
            [1, 1, 0],
            [1, 1, 1]], dtype=torch.int32)
    """
    S = T if S is None else S
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)


def attention_scores(q: torch.Tensor, k: torch.Tensor, *, causal: bool = True) -> torch.Tensor:
    """Scaled dot products q·k/√hs, with future keys set to -inf.

    q: (B, H, T, hs), k: (B, H, S, hs) -> (B, H, T, S)
    """
    T, S = q.size(-2), k.size(-2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, T, hs) @ (B, H, hs, S) -> (B, H, T, S)
    if causal:
        scores = scores.masked_fill(~causal_mask(T, S, device=q.device), float("-inf"))
    return scores


def attention_pattern(q: torch.Tensor, k: torch.Tensor, *, causal: bool = True) -> torch.Tensor:
    """Attention probabilities: softmax of :func:`attention_scores` over the keys. (B, H, T, S)"""
    return attention_scores(q, k, causal=causal).softmax(dim=-1)


class Packing:
    """Where the real tokens of right-padded rows sit: row b holds ``lengths[b]`` tokens, then padding.

    Legend: N real tokens (``lengths.sum()``). ``pack`` keeps the real tokens of a (B, T, ...) tensor
    as one (N, ...) matrix, so position-wise layers (LayerNorm, the projections, the MLP) do no work on
    padding; ``unpack`` puts them back in place, with zeros at the padding, for attention.

    >>> p = Packing(torch.tensor([2, 1]), T=3)
    >>> p.pack(torch.arange(6.).view(2, 3, 1)).flatten()        # rows [0 1 2], [3 4 5]
    tensor([0., 1., 3.])
    >>> p.unpack(torch.tensor([[0.], [1.], [3.]])).flatten()
    tensor([0., 1., 0., 3., 0., 0.])
    """

    def __init__(self, lengths: torch.Tensor, T: int, device: torch.device | str | None = None) -> None:
        lengths = torch.as_tensor(lengths, device=device)  # on the device of the tensors to pack
        if lengths.dim() != 1 or bool((lengths < 1).any()) or bool((lengths > T).any()):
            raise ValueError(f"lengths must be a (B,) tensor of values in 1..{T} (the padded row length)")
        self.B, self.T = lengths.numel(), T
        real = torch.arange(T, device=lengths.device) < lengths[:, None]  # (B, T) True on real tokens
        self.index = real.flatten().nonzero().squeeze(1)  # (N,) positions of real tokens in B*T

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (N, ...)"""
        return x.flatten(0, 1).index_select(0, self.index)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, T, ...), zeros at the padding."""
        out = x.new_zeros(self.B * self.T, *x.shape[1:])
        return out.index_copy_(0, self.index, x).view(self.B, self.T, *x.shape[1:])


class CausalSelfAttention(nn.Module):
    """GPT-2's attention: one fused Q/K/V projection, H heads, concatenation, output projection.

    The forward pass uses ``F.scaled_dot_product_attention`` unless a hook is attached to
    ``hook_attn_scores`` or ``hook_pattern`` (``run_with_cache`` does that); then this layer computes
    the attention pattern explicitly so it can be read. Both paths give the same output.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # W_Q, W_K, W_V side by side
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)  # W_O
        self.attn_pdrop = config.attn_pdrop
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)
        self.hook_q = HookPoint()  # (B, T, H, hs)
        self.hook_k = HookPoint()  # (B, S, H, hs)
        self.hook_v = HookPoint()  # (B, S, H, hs)
        self.hook_attn_scores = HookPoint()  # (B, H, T, S), before softmax
        self.hook_pattern = HookPoint()  # (B, H, T, S), after softmax
        self.hook_z = HookPoint()  # (B, T, H, hs), per-head outputs before concatenation

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None, layer: int = 0,
                packing: Packing | None = None) -> torch.Tensor:
        """(B, T, C) -> (B, T, C); with ``packing``, real tokens only: (N, C) -> (N, C)."""
        qkv = self.c_attn(x)  # (B, T, C) -> (B, T, 3C)
        if packing is not None:
            qkv = packing.unpack(qkv)  # (N, 3C) -> (B, T, 3C); padding is zeros, read by no real token
        B, T, _ = qkv.shape
        C = self.n_embd
        H, hs = self.n_head, C // self.n_head
        q, k, v = qkv.split(C, dim=2)  # (B, T, 3C) -> 3 x (B, T, C)
        q = self.hook_q(q.view(B, T, H, hs)).transpose(1, 2)  # (B, T, C) -> (B, H, T, hs)
        k = self.hook_k(k.view(B, T, H, hs)).transpose(1, 2)  # (B, T, C) -> (B, H, T, hs)
        v = self.hook_v(v.view(B, T, H, hs)).transpose(1, 2)  # (B, T, C) -> (B, H, T, hs)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)  # (B, H, S, hs) with S = cached + T
        S = k.size(2)

        if self.hook_pattern.active or self.hook_attn_scores.active:
            scores = self.hook_attn_scores(attention_scores(q, k))  # (B, H, T, S)
            pattern = self.hook_pattern(scores.softmax(dim=-1))  # (B, H, T, S)
            y = self.attn_dropout(pattern) @ v  # (B, H, T, S) @ (B, H, S, hs) -> (B, H, T, hs)
        else:
            dropout_p = self.attn_pdrop if self.training else 0.0
            if S == T:
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
            elif T == 1:  # one new token sees every cached key
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
            else:  # a chunk after a cached prefix: bottom-right aligned mask
                mask = causal_mask(T, S, device=q.device)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)

        z = self.hook_z(y.transpose(1, 2))  # (B, H, T, hs) -> (B, T, H, hs)
        z = z.reshape(B, T, C)  # concatenate the heads: (B, T, H, hs) -> (B, T, C)
        if packing is not None:
            z = packing.pack(z)  # (B, T, C) -> (N, C)
        return self.resid_dropout(self.c_proj(z))  # W_O
