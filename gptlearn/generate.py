"""Text generation: sampling rules and a key/value cache (book chapter 6).

Legend: B batch, T tokens, S cached tokens, H n_head, hs head size, V vocab, L layers.

Without a cache every new token reruns the whole sequence, O(T^2) work per token; with one, each
step feeds only the newest token and attends to the keys and values stored from earlier steps.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Sequence

import torch

from .fused import FusedDecoder
from .linear import split_matvecs
from .model import unembed

if TYPE_CHECKING:  # pragma: no cover
    from .model import GPT

__all__ = ["KVCache", "sample_next", "generate", "generate_stream"]


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
        c = model.config
        dtype = model.wte.weight.dtype
        return cls(c.n_layer, batch, c.n_head, max_len or c.n_positions, c.d_head,
                   device=model.device, dtype=dtype)

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
        self.pos = 0


def sample_next(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, do_sample: bool = True,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick the next token from last-position logits (B, V) -> ids (B,).

    ``do_sample=False`` or ``temperature=0`` is greedy (argmax). Otherwise logits are divided by
    ``temperature``, cut to the ``top_k`` most likely tokens and/or the smallest set whose probability
    reaches ``top_p`` (nucleus), and one token is drawn.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if not do_sample or temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cum - sorted_logits.softmax(dim=-1) >= top_p  # tokens after the set already reached top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _prepare(model: "GPT", idx, seed: int | None, generator: torch.Generator | None):
    as_text = isinstance(idx, str)
    if as_text:
        idx = model.to_tokens(idx)
    elif not isinstance(idx, torch.Tensor):
        idx = torch.tensor([list(idx)] if idx and isinstance(idx[0], int) else idx, dtype=torch.long)
    if idx.dim() == 1:
        idx = idx.unsqueeze(0)
    if idx.numel() == 0:
        raise ValueError("generation needs a prompt of at least one token")
    idx = idx.to(model.device)
    if generator is None and seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(seed)
    return as_text, idx, generator


def _last_logits(model: "GPT", idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
    """Next-token logits of the last position only, (B, T) -> (B, V): the same as
    ``model(idx, kv_cache=cache)[:, -1]`` without unembedding the T - 1 positions nobody samples from.
    A step of a few tokens multiplies each weight by a few vectors: the CPU's row-split mat-vecs
    (:func:`gptlearn.linear.split_matvecs`) made those 1.3-1.9x faster on 2 cores."""
    with split_matvecs():
        h = model.hidden_states(idx, kv_cache=cache)[:, -1]  # (B, T, C) -> (B, C)
        return unembed(h, model.lm_head.weight)  # (B, C) -> (B, V)


@torch.inference_mode()
def generate_stream(model: "GPT", idx: torch.Tensor | str | Sequence[int], max_new_tokens: int = 32, *,
                    temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                    do_sample: bool = True, use_cache: bool = True, eos_token_id: int | None = None,
                    generator: torch.Generator | None = None, seed: int | None = None,
                    fused: bool = False) -> Iterator[torch.Tensor]:
    """Yield each new token as a (B,) tensor as soon as it is chosen (for interactive use).

    Prompts longer than the context keep only their last ``n_positions`` tokens, as GPT-2 would.
    Sequences that produced ``eos_token_id`` keep emitting it; the stream ends when all have.
    ``fused=True`` decodes each token after the prompt with one C++ call on the CPU
    (:mod:`gptlearn.fused`: one fp32 sequence, no hooks; built on first use).
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if fused and not use_cache:
        raise ValueError("fused decoding works on the KV cache: use_cache must be True")
    _, idx, generator = _prepare(model, idx, seed, generator)
    was_training = model.training
    model.eval()
    n_ctx = model.config.n_positions
    B = idx.size(0)
    cache = KVCache.for_model(model, B) if use_cache else None
    finished = torch.zeros(B, dtype=torch.bool, device=idx.device)
    window = idx[:, -n_ctx:]  # (B, T) the tokens the model sees
    try:
        decoder = FusedDecoder(model, cache) if fused else None  # checks the model, builds the kernel once
        for step in range(max_new_tokens):
            if cache is None:
                logits = _last_logits(model, window)  # (B, V)
            elif step == 0 or cache.pos + 1 > n_ctx:  # (re)fill the cache from the visible window
                cache.reset()
                logits = _last_logits(model, window, cache)
            elif decoder is not None:
                logits = decoder.step(window[0, -1])  # the newest token, in one C++ call
            else:
                logits = _last_logits(model, window[:, -1:], cache)  # only the newest token
            nxt = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                              do_sample=do_sample, generator=generator)  # (B,)
            if eos_token_id is not None:
                nxt = torch.where(finished, torch.full_like(nxt, eos_token_id), nxt)
                finished |= nxt == eos_token_id
            window = torch.cat([window, nxt[:, None]], dim=1)[:, -n_ctx:]
            yield nxt
            if eos_token_id is not None and bool(finished.all()):
                break
    finally:
        model.train(was_training)


def generate(model: "GPT", idx: torch.Tensor | str | Sequence[int], max_new_tokens: int = 32, **kwargs):
    """Continue ``idx`` (B, T) by up to ``max_new_tokens`` tokens -> (B, T + new).

    Options (keyword-only): ``temperature=1.0, top_k=None, top_p=None, do_sample=True,
    use_cache=True, eos_token_id=None, generator=None, seed=None, fused=False``. A string prompt returns a string.

    >>> model.generate("The cat", 5, do_sample=False)       # doctest: +SKIP
    """
    as_text, prompt, generator = _prepare(model, idx, kwargs.pop("seed", None), kwargs.pop("generator", None))
    new = list(generate_stream(model, prompt, max_new_tokens, generator=generator, **kwargs))
    out = torch.cat([prompt, torch.stack(new, dim=1)], dim=1) if new else prompt  # (B, T + new)
    return model.to_string(out[0]) if as_text else out
