"""Text generation: sampling rules and decoding with the KV cache (book chapter 6).

Legend: B batch, T tokens, C n_embd, V vocab.

Generation turns the last position's logits into one token, appends it and repeats. With a
:class:`~gptlearn.kv_cache.KVCache` each step after the prompt feeds only the newest token.
:class:`GenerationMixin` gives the model its ``generate`` and ``generate_stream`` methods (Hugging
Face's pattern: this module never imports the model).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Sequence

import torch

from .checks import check_bool, check_generator, check_int, check_number, describe
from .errors import InvalidTypeError, InvalidValueError
from .fast.linear import split_matvecs
from .kv_cache import KVCache
from .model import check_targets, check_token_ids, register_decoder

if TYPE_CHECKING:  # pragma: no cover
    from .model import GPT

# Temperatures below this are greedy: logits / 1e-7 can overflow float32, and no two tokens whose logits
# differ by more than float rounding are ever close at such a temperature.
GREEDY_BELOW = 1e-6
# The most tokens one call generates: more is no use (a model's context is at most thousands of tokens)
# and would keep the call running for days.
MAX_NEW_TOKENS = 1 << 20

__all__ = ["sample_next", "check_targets", "GREEDY_BELOW", "MAX_NEW_TOKENS", "check_sampling", "check_token_ids",
           "next_token_logits", "generate", "generate_stream", "GenerationMixin"]


def check_sampling(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, *,
                   names: Sequence[str] = ("temperature", "top_k", "top_p")) -> None:
    """Refuse sampling options that mean nothing, naming them as ``names`` (the command passes its flags):
    ``temperature`` a finite number >= 0 (0 is greedy), ``top_k`` an integer >= 1, ``top_p`` in (0, 1].
    Plain numbers only: a tensor is refused (it would be compared element by element)."""
    check_number(temperature, names[0], low=0)
    if top_k is not None:
        check_int(top_k, names[1], low=1)
    if top_p is not None:
        check_number(top_p, names[2], low=0, low_open=True, high=1)




def sample_next(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, do_sample: bool = True,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick the next token from last-position logits (B, V) -> ids (B,).

    ``do_sample=False`` or ``temperature`` below :data:`GREEDY_BELOW` is greedy (argmax): dividing by so
    small a number would overflow, and it leaves only ties to choose between anyway. Otherwise logits are divided by
    ``temperature``, cut to the ``top_k`` most likely tokens and/or the smallest set whose probability
    reaches ``top_p`` (nucleus), and one token is drawn.
    """
    check_sampling(temperature, top_k, top_p)
    check_bool(do_sample, "do_sample")
    check_generator(generator)
    if not isinstance(logits, torch.Tensor) or not logits.dtype.is_floating_point or logits.dim() < 1:
        raise InvalidTypeError(f"logits must be a floating-point (B, V) tensor, got {describe(logits)}")
    if not do_sample or temperature < GREEDY_BELOW:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cum - sorted_logits.softmax(dim=-1) >= top_p  # tokens after the set already reached top_p
        drop[..., 0] = False  # the most likely token always stays (a top_p below float32's range rounds to 0)
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def next_token_logits(model: "GPT", idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
    """Next-token logits of the last position only, (B, T) -> (B, V): ``model(idx, cache)[:, -1]``
    without unembedding the T - 1 positions nobody samples from.

    Inside, :func:`gptlearn.fast.linear.split_matvecs` lets the speed wing's layers use their
    decoding path (plain layers ignore it).
    """
    with split_matvecs():
        h = model.hidden_states(idx, kv_cache=cache)[:, -1]  # (B, T, C) -> (B, C)
        return model.lm_head(h)  # (B, C) -> (B, V)


def _as_id_tensor(idx) -> torch.Tensor:
    """A list of ids, a list of such lists (rows of one length) or a NumPy array -> a long tensor."""
    rule = "idx must be text, a list of token ids, a list of such lists or a (B, T) tensor"
    if hasattr(idx, "__array__") and not isinstance(idx, (list, tuple)):
        import numpy as np

        arr = np.asarray(idx)
        if arr.dtype.kind not in "iu":
            raise InvalidTypeError(f"{rule}, got an array of {arr.dtype}")
        return torch.as_tensor(arr, dtype=torch.long)
    if not isinstance(idx, (list, tuple)):
        raise InvalidTypeError(f"{rule}, got {describe(idx)}")
    rows = list(idx) if idx and isinstance(idx[0], (list, tuple)) else [idx]
    for row in rows:
        if not isinstance(row, (list, tuple)):
            raise InvalidTypeError(f"{rule}, got a list holding {describe(row)}")
        for t in row:
            check_int(t, "each token id in idx")
    if len({len(r) for r in rows}) > 1:
        raise InvalidValueError(f"idx must hold rows of one length, got lengths {sorted({len(r) for r in rows})}")
    return torch.tensor([list(r) for r in rows], dtype=torch.long)


def _prepare(model: "GPT", idx, seed: int | None, generator: torch.Generator | None):
    as_text = isinstance(idx, str)
    if as_text:
        idx = model.to_tokens(idx)
    elif not isinstance(idx, torch.Tensor):
        idx = _as_id_tensor(idx)
    if idx.dim() == 1:
        idx = idx.unsqueeze(0)
    if idx.numel() == 0:
        raise InvalidValueError("generation needs a prompt of at least one token")
    check_token_ids(idx.cpu(), model.config.vocab_size)  # once, wherever the model runs
    idx = idx.to(model.device)
    if seed is not None:
        seed = check_int(seed, "seed", low=0, high=2 ** 64 - 1)
    check_generator(generator)
    if generator is None and seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(seed)
    return as_text, idx, generator


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
    (:mod:`gptlearn.fast.fused`: one fp32 sequence, no hooks; built on first use).
    """
    max_new_tokens = check_int(max_new_tokens, "max_new_tokens", low=0, high=MAX_NEW_TOKENS)
    for flag, name in ((do_sample, "do_sample"), (use_cache, "use_cache"), (fused, "fused")):
        check_bool(flag, name)  # before anything is built: fused="yes" would compile the C++ extension
    if eos_token_id is not None:
        eos_token_id = check_int(eos_token_id, "eos_token_id", low=0, high=model.config.vocab_size - 1)
    if fused and not use_cache:
        raise InvalidValueError("fused decoding works on the KV cache: use_cache must be True")
    check_sampling(temperature, top_k, top_p)
    _, idx, generator = _prepare(model, idx, seed, generator)
    was_training = model.training
    model.eval()
    n_ctx = model.config.n_positions
    B = idx.size(0)
    cache = KVCache.for_model(model, B) if use_cache else None
    finished = torch.zeros(B, dtype=torch.bool, device=idx.device)
    window = idx[:, -n_ctx:]  # (B, T) the tokens the model sees
    try:
        decoder = None
        if fused:
            # here, not at the top: the fused decoder is opt-in (fused=True), and its module is imported only then
            from .fast.fused import FusedDecoder

            decoder = FusedDecoder(model, cache)  # checks the model, builds the kernel once
        for step in range(max_new_tokens):
            if cache is None:
                logits = next_token_logits(model, window)  # (B, V)
            elif step == 0 or cache.pos + 1 > n_ctx:  # (re)fill the cache from the visible window
                cache.reset()
                logits = next_token_logits(model, window, cache)
            elif decoder is not None:
                logits = decoder.step(window[0, -1])  # the newest token, in one C++ call
            else:
                logits = next_token_logits(model, window[:, -1:], cache)  # only the newest token
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


register_decoder(generate, generate_stream)  # what GPT.generate and GPT.generate_stream run


class GenerationMixin:
    """``generate`` and ``generate_stream`` (the functions above) as methods of any model class; ``GPT`` has
    them already (:func:`gptlearn.model.register_decoder`)."""

    def generate(self, idx, max_new_tokens: int = 32, **kwargs):
        """Sample a continuation; see :func:`gptlearn.generate.generate` for the options."""
        return generate(self, idx, max_new_tokens, **kwargs)

    def generate_stream(self, idx, max_new_tokens: int = 32, **kwargs):
        """Yield new tokens one at a time; see :func:`gptlearn.generate.generate_stream`."""
        return generate_stream(self, idx, max_new_tokens, **kwargs)
