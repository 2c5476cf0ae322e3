"""Activation patching and head ablation, in TransformerLens' names (book chapter "The induction circuit, tested").

Activation patching asks *where* a difference between two prompts lives. Run the model on a corrupted
prompt, copy one activation over from the clean run (one layer, one position, or one head), and measure
how far a metric moves back towards its clean value. Each ``get_act_patch_*`` function does that for
every place of one kind and returns the grid of metric values:

========================================  ===================  ========================================
function                                  grid                 what is copied from the clean run
========================================  ===================  ========================================
:func:`get_act_patch_resid_pre`           (L, T)               the stream entering a layer, one position
:func:`get_act_patch_attn_out`            (L, T)               a layer's attention output, one position
:func:`get_act_patch_mlp_out`             (L, T)               a layer's MLP output, one position
:func:`get_act_patch_block_every`         (3, L, T)            the three above, stacked
:func:`get_act_patch_attn_head_out_all_pos`  (L, H)            one head's z at every position
:func:`get_act_patch_attn_head_out_by_pos`   (L, T, H)         one head's z at one position
========================================  ===================  ========================================

``patching_metric(logits) -> scalar`` gets the patched run's logits (B, T, V). A head's output is its
``z`` (TransformerLens' ``hook_z``), which the output projection W_O turns into its share of
``attn_out``: patching z patches exactly that share.

:func:`ablate_heads` knocks heads out instead (their z set to zero, or to its mean over reference
inputs) for the runs inside a ``with`` block.

Legend: B batch, T tokens, C n_embd, H n_head, hs head size, V vocab, L layers.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import torch

from .errors import InvalidTypeError, InvalidValueError
from .hooks import ActivationCache, HookPoint

__all__ = ["get_act_patch_resid_pre", "get_act_patch_attn_out", "get_act_patch_mlp_out", "get_act_patch_block_every",
           "get_act_patch_attn_head_out_all_pos", "get_act_patch_attn_head_out_by_pos", "ablate_heads", "check_heads"]

Metric = Callable[[torch.Tensor], torch.Tensor | float]


def _tokens(model, tokens, what: str) -> torch.Tensor:
    if isinstance(tokens, str) or (isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], str)):
        tokens = model.to_tokens(tokens)
    if not isinstance(tokens, torch.Tensor) or tokens.dtype.is_floating_point:
        raise InvalidTypeError(f"{what} takes the corrupted prompt as token ids (B, T) or text, got "
                               f"{type(tokens).__name__}")
    if tokens.dim() == 1:
        tokens = tokens.unsqueeze(0)  # (T,) -> (1, T)
    if tokens.dim() != 2 or tokens.shape[1] == 0:
        raise InvalidValueError(f"{what} needs a non-empty prompt, token ids of shape (B, T) with T >= 1, got shape "
                                f"{tuple(tokens.shape)}")
    return tokens.to(model.device)


def _check_pair(model, corrupted_tokens, clean_cache: ActivationCache, what: str) -> torch.Tensor:
    """The corrupted ids, once they are known to line up with the clean run position by position."""
    tokens = _tokens(model, corrupted_tokens, what)
    if not isinstance(clean_cache, ActivationCache):
        raise InvalidTypeError(f"{what} takes the clean run's ActivationCache (model.run_with_cache(clean_tokens)), "
                               f"got {type(clean_cache).__name__}")
    if not clean_cache.has_batch_dim:
        raise InvalidValueError(f"{what} needs a clean cache with its batch dimension (remove_batch_dim=False)")
    clean = clean_cache["resid_pre", 0]  # (B, T, C)
    if tuple(clean.shape[:2]) != tuple(tokens.shape):
        raise InvalidValueError(
            f"{what}: the clean run has {clean.shape[0]} x {clean.shape[1]} tokens and the corrupted prompt "
            f"{tokens.shape[0]} x {tokens.shape[1]}; patching copies activations position by position, so the "
            "two prompts must have the same number of tokens (choose prompts that tokenize to equal lengths)")
    return tokens


def _value(metric: Metric, logits: torch.Tensor) -> float:
    out = metric(logits)
    out = torch.as_tensor(out)
    if out.numel() != 1:
        raise InvalidValueError(f"patching_metric must return one number, got a tensor of shape {tuple(out.shape)}")
    return float(out)


def _patch_run(model, tokens: torch.Tensor, name: str, fn: Callable, metric: Metric) -> float:
    with torch.no_grad():
        return _value(metric, model.run_with_hooks(tokens, fwd_hooks=[(name, fn)]))


def _by_layer_and_pos(model, corrupted_tokens, clean_cache, patching_metric, act: str, what: str) -> torch.Tensor:
    tokens = _check_pair(model, corrupted_tokens, clean_cache, what)
    L, T = model.config.n_layer, tokens.shape[1]
    grid = torch.zeros(L, T)
    for layer in range(L):
        clean = clean_cache[act, layer]  # (B, T, C)
        for pos in range(T):
            def patch(x: torch.Tensor, hook: HookPoint, pos: int = pos, clean: torch.Tensor = clean) -> torch.Tensor:
                x = x.clone()
                x[:, pos] = clean[:, pos]
                return x

            grid[layer, pos] = _patch_run(model, tokens, f"blocks.{layer}.hook_{act}", patch, patching_metric)
    return grid


def get_act_patch_resid_pre(model, corrupted_tokens, clean_cache: ActivationCache,
                            patching_metric: Metric) -> torch.Tensor:
    """(L, T): the metric after copying the clean ``resid_pre`` of one layer at one position into the corrupted run."""
    return _by_layer_and_pos(model, corrupted_tokens, clean_cache, patching_metric, "resid_pre",
                             "get_act_patch_resid_pre")


def get_act_patch_attn_out(model, corrupted_tokens, clean_cache: ActivationCache,
                           patching_metric: Metric) -> torch.Tensor:
    """(L, T): the same for one layer's attention output at one position."""
    return _by_layer_and_pos(model, corrupted_tokens, clean_cache, patching_metric, "attn_out",
                             "get_act_patch_attn_out")


def get_act_patch_mlp_out(model, corrupted_tokens, clean_cache: ActivationCache,
                          patching_metric: Metric) -> torch.Tensor:
    """(L, T): the same for one layer's MLP output at one position."""
    return _by_layer_and_pos(model, corrupted_tokens, clean_cache, patching_metric, "mlp_out", "get_act_patch_mlp_out")


def get_act_patch_block_every(model, corrupted_tokens, clean_cache: ActivationCache,
                              patching_metric: Metric) -> torch.Tensor:
    """(3, L, T): :func:`get_act_patch_resid_pre`, :func:`get_act_patch_attn_out`, :func:`get_act_patch_mlp_out`."""
    return torch.stack([f(model, corrupted_tokens, clean_cache, patching_metric)
                        for f in (get_act_patch_resid_pre, get_act_patch_attn_out, get_act_patch_mlp_out)])


def get_act_patch_attn_head_out_all_pos(model, corrupted_tokens, clean_cache: ActivationCache,
                                        patching_metric: Metric) -> torch.Tensor:
    """(L, H): the metric after copying one head's clean z (every position) into the corrupted run."""
    tokens = _check_pair(model, corrupted_tokens, clean_cache, "get_act_patch_attn_head_out_all_pos")
    L, H = model.config.n_layer, model.config.n_head
    grid = torch.zeros(L, H)
    for layer in range(L):
        clean = clean_cache["z", layer]  # (B, T, H, hs)
        for head in range(H):
            def patch(z: torch.Tensor, hook: HookPoint, head: int = head, clean: torch.Tensor = clean) -> torch.Tensor:
                z = z.clone()
                z[:, :, head] = clean[:, :, head]
                return z

            grid[layer, head] = _patch_run(model, tokens, f"blocks.{layer}.attn.hook_z", patch, patching_metric)
    return grid


def get_act_patch_attn_head_out_by_pos(model, corrupted_tokens, clean_cache: ActivationCache,
                                       patching_metric: Metric) -> torch.Tensor:
    """(L, T, H): the metric after copying one head's clean z at one position into the corrupted run."""
    tokens = _check_pair(model, corrupted_tokens, clean_cache, "get_act_patch_attn_head_out_by_pos")
    L, H, T = model.config.n_layer, model.config.n_head, tokens.shape[1]
    grid = torch.zeros(L, T, H)
    for layer in range(L):
        clean = clean_cache["z", layer]  # (B, T, H, hs)
        for pos in range(T):
            for head in range(H):
                def patch(z: torch.Tensor, hook: HookPoint, pos: int = pos, head: int = head,
                          clean: torch.Tensor = clean) -> torch.Tensor:
                    z = z.clone()
                    z[:, pos, head] = clean[:, pos, head]
                    return z

                grid[layer, pos, head] = _patch_run(model, tokens, f"blocks.{layer}.attn.hook_z", patch,
                                                    patching_metric)
    return grid


# ---- ablation ---------------------------------------------------------------------------------------------
def check_heads(model, heads) -> list[tuple[int, int]]:
    """``heads`` as a list of (layer, head) pairs, each one that exists in ``model``; else one clear error."""
    L, H = model.config.n_layer, model.config.n_head
    if isinstance(heads, tuple) and len(heads) == 2 and all(isinstance(v, int) for v in heads):
        heads = [heads]  # one head
    if not isinstance(heads, (list, tuple)):
        raise InvalidTypeError(f"heads is a list of (layer, head) pairs, e.g. [(0, 2)], got {type(heads).__name__}")
    out = []
    for pair in heads:
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)):
            raise InvalidTypeError(f"heads is a list of (layer, head) pairs of ints, e.g. [(0, 2)], got {pair!r}")
        layer, head = pair
        if not (0 <= layer < L and 0 <= head < H):
            raise InvalidValueError(f"head ({layer}, {head}) does not exist: this model has layers 0..{L - 1} "
                                    f"and heads 0..{H - 1} in each")
        out.append((layer, head))
    return out


@contextlib.contextmanager
def ablate_heads(model, heads: Sequence[tuple[int, int]], *, mode: str = "zero",
                 reference: torch.Tensor | str | None = None) -> Iterator[None]:
    """Knock ``heads`` ((layer, head) pairs) out of every run of ``model`` inside the ``with`` block.

    ``mode="zero"`` sets the head's z (``hook_z``) to zero, so it adds nothing but nothing else changes
    (the output bias b_O stays); ``mode="mean"`` sets it to its mean over the batch and positions of
    ``reference`` (token ids or text): the head still adds its average output, only what depends on
    this input is gone.

    >>> with ablate_heads(model, [(0, 2)]):          # doctest: +SKIP
    ...     scores = induction_scores(model)
    """
    heads = check_heads(model, heads)
    if mode not in ("zero", "mean"):
        raise InvalidValueError(f"ablate_heads: mode must be 'zero' or 'mean', got {mode!r}")
    means: dict[tuple[int, int], torch.Tensor] = {}
    if mode == "mean":
        if reference is None:
            raise InvalidValueError("ablate_heads(mode='mean') needs reference inputs to average over (reference=...)")
        ref = _tokens(model, reference, "ablate_heads")
        layers = sorted({layer for layer, _ in heads})
        _, cache = model.run_with_cache(ref, names_filter=[f"blocks.{layer}.attn.hook_z" for layer in layers])
        for layer, head in heads:
            means[layer, head] = cache["z", layer][:, :, head].mean(dim=(0, 1))  # (B, T, hs) -> (hs,)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def knock_out(layer: int) -> Callable:
        def hook(z: torch.Tensor, hook: HookPoint) -> torch.Tensor:
            z = z.clone()
            for head in by_layer[layer]:
                z[:, :, head] = means[layer, head] if mode == "mean" else 0.0
            return z
        return hook

    with model.hooks([(f"blocks.{layer}.attn.hook_z", knock_out(layer)) for layer in by_layer]):
        yield
