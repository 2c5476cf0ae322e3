"""The speed wing: faster versions of the model's layers, kept apart from the teaching code.

``gptlearn/model.py`` builds GPT-2 from plain PyTorch layers. :func:`enable` (registered as the
implementation ``"fast"``, which ``GPT(config)`` runs unless ``fast=False``) swaps some of them, in place,
for the subclasses below: each keeps its parameters, state dict and hooks and overrides only ``forward``,
and gives the same numbers within float rounding. :func:`disable` swaps them back. Each module says what its
trick does; the timings are in ``bench/README.md``, and the book's chapter "Making it fast" measures them
against the roofline.

================================  ========================  ==============================================
layer (plain)                     becomes                   the trick
================================  ========================  ==============================================
``lm_head`` (``LMHead``)          :class:`Unembedding`      logits and the loss in vocabulary blocks
``nn.Embedding``                  :class:`Embedding`        the (V, C) gradient in reused memory
``nn.Linear``                     :class:`Linear`           row-split mat-vecs while decoding
``nn.GELU``                       :class:`GELU`             tanh GELU as x·σ(2z)
``HookPoint``                     :class:`HookPoint`        no ``nn.Module`` call when nothing listens
================================  ========================  ==============================================

Not a layer: :mod:`gptlearn.fast.memory` (the reused-memory pool, ``keep_freed_memory``) and
:mod:`gptlearn.fast.fused` (one C++ call per decoded token, ``generate(..., fused=True)``; imported only
when asked for).

>>> model = GPT(GPTConfig.from_preset("tiny"))        # doctest: +SKIP
>>> gptlearn.fast.disable(model)                      # the plain layers of model.py  # doctest: +SKIP
"""
from __future__ import annotations

from torch import nn

from ..model import register_implementation
from .embedding import Embedding
from .gelu import GELU
from .hooks import HookPoint
from .linear import Linear, split_matvecs
from .memory import empty_reused, keep_freed_memory, release_reused, reused_blocks
from .unembed import Unembedding

__all__ = ["enable", "disable", "is_enabled", "Unembedding", "Embedding", "Linear", "GELU", "HookPoint",
           "split_matvecs", "empty_reused", "reused_blocks", "release_reused", "keep_freed_memory"]

# the plain class of each layer -> the wing's subclass of it (exact types: a user's own subclass is left alone)
SWAPS: dict[type, type] = {wing.__base__: wing for wing in (Linear, Embedding, GELU, HookPoint)}


def enable(model: nn.Module) -> nn.Module:
    """Swap the model's plain layers (its ``lm_head``, ``nn.Embedding``, ``nn.Linear``, ``nn.GELU`` and
    ``HookPoint`` layers) for the wing's subclasses, in place; returns the model."""
    for name, module in model.named_modules():
        wing = Unembedding if name == "lm_head" else SWAPS.get(type(module))
        if wing is not None and type(module) is not wing:
            module.plain_class = type(module)  # what disable() puts back
            module.__class__ = wing  # the same object, parameters and hooks; only forward changes
    return model


register_implementation("fast", enable)  # GPT(config) runs it unless told "plain"


def disable(model: nn.Module) -> nn.Module:
    """Put the plain layers back, in place; returns the model."""
    for module in model.modules():
        if "plain_class" in vars(module):
            module.__class__ = vars(module).pop("plain_class")
    return model


def is_enabled(model: nn.Module) -> bool:
    """Whether :func:`enable` swapped this model's layers (and :func:`disable` has not undone it)."""
    return any("plain_class" in vars(m) for m in model.modules())
