"""LoRA: adapt a frozen linear layer by adding a trainable low-rank product (book chapter "Adapting a model").

A linear layer computes ``y = x Wᵀ + b`` with W of shape (out, in). LoRA (Hu et al., 2021) freezes W and
learns ``ΔW = (α / r) · B A`` instead, with A (r, in) and B (out, r) and a rank r far below in and out:

    y = x Wᵀ + b + (α / r) · x Aᵀ Bᵀ

B starts at zero, so the adapted model starts as the original one; A starts random (Kaiming-uniform, as
Hugging Face PEFT), so the gradient of B is not zero. After training, :meth:`LoRALinear.merge` folds
``(α / r) B A`` into W: one plain ``nn.Linear`` again, as fast as before. A (r, in) and B (out, r) hold
``r · (in + out)`` numbers where W holds ``in · out``.

Names follow PEFT (``lora_A``, ``lora_B``, ``scaling``), so its adapters and ours compare one to one.

>>> layer = LoRALinear(nn.Linear(64, 192), rank=4, alpha=8)
>>> layer.scaling, layer.lora_A.shape, layer.lora_B.shape
(2.0, torch.Size([4, 64]), torch.Size([192, 4]))
"""
from __future__ import annotations

import math
import operator
from typing import Any, Sequence

import torch
from torch import nn

from .errors import InvalidTypeError, InvalidValueError

__all__ = ["LoRALinear", "add_lora", "merge_lora", "lora_layers", "check_rank"]


def check_rank(rank: Any, layer: nn.Linear, name: str = "the layer", *, flag: str = "rank") -> int:
    """``rank`` as an int if a LoRA of that rank fits ``layer`` (1 up to ``min(in, out)``); else an
    :class:`~gptlearn.errors.InvalidValueError` that names the layer's shape."""
    try:
        r = operator.index(rank) if not isinstance(rank, bool) else None
    except TypeError:
        r = None
    if r is None:
        raise InvalidTypeError(f"{flag} must be a positive integer, got {rank!r}")
    most = min(layer.in_features, layer.out_features)
    if not 1 <= r <= most:
        raise InvalidValueError(f"{flag} must be from 1 to {most} for {name} ({layer.in_features} -> "
                                f"{layer.out_features} features: a larger rank is no longer low-rank), got {r}")
    return r


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: ``base(x) + (alpha / rank) · x Aᵀ Bᵀ``.

    Args:
        base: the layer to adapt; its weight and bias are frozen (``requires_grad=False``).
        rank: r, from 1 to ``min(in_features, out_features)``.
        alpha: the update's scale is ``alpha / rank`` (default ``alpha = rank``: a scale of 1).
        dropout: dropout on the input of the low-rank path only (PEFT's ``lora_dropout``).
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise InvalidTypeError(f"LoRALinear adapts an nn.Linear, got {type(base).__name__}")
        rank = check_rank(rank, base)
        alpha = float(rank if alpha is None else alpha)
        if not math.isfinite(alpha) or alpha <= 0:
            raise InvalidValueError(f"alpha must be a positive number, got {alpha!r}")
        self.base = base.requires_grad_(False)
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=w.device, dtype=w.dtype))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=w.device, dtype=w.dtype))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear and PEFT initialise A
        self.dropout = nn.Dropout(dropout)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> torch.Tensor:
        """The update this adapter adds to the weight, ``(alpha / rank) · B A``, (out, in)."""
        return self.scaling * (self.lora_B @ self.lora_A)  # (out, r) @ (r, in) -> (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low_rank = self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()  # (..., in) -> (..., r) -> (..., out)
        return self.base(x) + self.scaling * low_rank

    def merge(self) -> nn.Linear:
        """A plain ``nn.Linear`` (of the base layer's class) whose weight is ``W + (alpha / rank) · B A``: the
        same outputs, without the extra matrix products. The base layer itself is left unchanged."""
        merged = nn.Linear(self.in_features, self.out_features, bias=self.base.bias is not None,
                           device=self.base.weight.device, dtype=self.base.weight.dtype)
        merged.__class__ = type(self.base)  # e.g. gptlearn.fast's Linear: only its forward differs
        if "plain_class" in vars(self.base):  # what gptlearn.fast.disable() puts back
            merged.plain_class = self.base.plain_class
        with torch.no_grad():
            merged.weight.copy_(self.base.weight + self.delta_weight())
            if self.base.bias is not None:
                merged.bias.copy_(self.base.bias)
        return merged

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}, scaling={self.scaling:g}"


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The model's LoRA adapters by module name (``blocks.0.attn.c_attn``, ...)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def add_lora(model: nn.Module, rank: int, alpha: float | None = None, *, targets: Sequence[str] = ("c_attn",),
             dropout: float = 0.0) -> dict[str, LoRALinear]:
    """Freeze every parameter of ``model`` and wrap each ``nn.Linear`` whose name ends in one of ``targets``
    (PEFT's ``target_modules``; GPT-2's default is the attention's ``c_attn``) in a :class:`LoRALinear`,
    in place. Returns the adapters by module name; only their A and B then train."""
    model.requires_grad_(False)
    found: dict[str, LoRALinear] = {}
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            found[name] = LoRALinear(module, check_rank(rank, module, name, flag="rank"), alpha, dropout)
            setattr(parent, attr, found[name])
    if not found:
        raise InvalidValueError(f"no nn.Linear layer of the model is named {' or '.join(targets)}; name the layers "
                                "to adapt by the last part of their names, e.g. c_attn, c_proj, c_fc")
    return found


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` in ``model`` with its merged ``nn.Linear``, in place; returns the model."""
    for name, module in list(lora_layers(model).items()):
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, module.merge())
    return model
