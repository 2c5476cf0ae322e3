"""Hook points that skip ``nn.Module``'s call machinery when nothing listens.

A forward pass goes through 13 hook points a block. Each is an identity function, but calling it as a
module still runs ``nn.Module.__call__``'s checks for hooks. :class:`HookPoint` returns its input at
once when no hook is attached to it and none is registered for every module
(``torch.nn.modules.module.register_module_forward_hook`` and friends, which torch keeps in private
globals that this module reads); otherwise it takes the full call path, so every hook still runs.
This matters only where a step is mostly overhead (decoding one token); ``bench/README.md`` has the
numbers.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import hooks

__all__ = ["HookPoint", "global_hooks_active", "hooks_attached"]


def global_hooks_active() -> bool:
    """True when a hook was registered for every module (``register_module_forward_hook`` and friends)."""
    m = nn.modules.module
    return bool(m._global_forward_hooks or m._global_forward_pre_hooks
                or m._global_backward_hooks or m._global_backward_pre_hooks)


def hooks_attached(model: nn.Module) -> bool:
    """Whether any forward hook could see this model's activations (its modules' own or global ones)."""
    return global_hooks_active() or any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


class HookPoint(hooks.HookPoint):
    """:class:`gptlearn.hooks.HookPoint` that returns its input at once when nothing could listen."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._forward_hooks or self._forward_pre_hooks or self._backward_hooks or global_hooks_active():
            return super().__call__(x)
        return x
