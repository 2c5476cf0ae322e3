"""The key/value cache that makes generation fast (book chapters 6 and "Making it fast").

Legend: L layers, B batch, H n_head, S cached positions, hs head size.

Without a cache every new token reruns the whole sequence; with one, each step feeds only the newest
token and attends to the keys and values stored from earlier steps. Attention writes into it
(:meth:`KVCache.update`); the model advances it once every layer has written.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # pragma: no cover
    from .model import GPT

__all__ = ["KVCache"]


class KVCache:
    """Preallocated keys and values for every layer: (L, B, H, max_len, hs) each."""

    def __init__(self, n_layer: int, batch: int, n_head: int, max_len: int, head_size: int, *,
                 device: torch.device | str, dtype: torch.dtype) -> None:
        shape = (n_layer, batch, n_head, max_len, head_size)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0  # how many positions are filled

    @classmethod
    def for_model(cls, model: "GPT", batch: int, max_len: int | None = None) -> "KVCache":
        """An empty cache shaped for ``model``, ``batch`` sequences and ``max_len`` positions (its context)."""
        c = model.config
        return cls(c.n_layer, batch, c.n_head, max_len or c.n_positions, c.d_head,
                   device=model.device, dtype=model.wte.weight.dtype)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's k, v (B, H, T, hs); return all keys/values so far (B, H, S, hs)."""
        T = k.size(2)
        end = self.pos + T
        if end > self.max_len:
            raise ValueError(f"KV cache is full ({self.max_len} positions)")
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, T: int) -> None:
        """Called by the model once every layer has stored its T new positions."""
        self.pos += T

    def reset(self) -> None:
        """Forget every stored position (the tensors are kept and overwritten)."""
        self.pos = 0
