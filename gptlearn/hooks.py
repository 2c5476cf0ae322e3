"""Hook points, the activation cache and the methods that use them (book chapter 4, "Many heads").

A :class:`HookPoint` is an identity module placed at every interesting spot of the forward pass
(``blocks.3.attn.hook_pattern``, ``blocks.3.hook_resid_post``, ...). :class:`HookedRootModule` gives a
model TransformerLens' inspection methods: ``run_with_cache`` attaches hooks that copy what flows
through into an :class:`ActivationCache`, and always removes them again.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from .errors import UnknownNameError

__all__ = ["HookPoint", "HookedRootModule", "ActivationCache", "hook_name", "short_name"]

HookFn = Callable[[torch.Tensor, "HookPoint"], "torch.Tensor | None"]

# short names -> full hook names (TransformerLens conventions); {l} is the layer
_SHORT_NAMES = {
    "resid_pre": "blocks.{l}.hook_resid_pre",
    "resid_mid": "blocks.{l}.hook_resid_mid",
    "resid_post": "blocks.{l}.hook_resid_post",
    "attn_out": "blocks.{l}.hook_attn_out",
    "mlp_out": "blocks.{l}.hook_mlp_out",
    "q": "blocks.{l}.attn.hook_q",
    "k": "blocks.{l}.attn.hook_k",
    "v": "blocks.{l}.attn.hook_v",
    "attn_scores": "blocks.{l}.attn.hook_attn_scores",
    "pattern": "blocks.{l}.attn.hook_pattern",
    "z": "blocks.{l}.attn.hook_z",
    "mlp_pre": "blocks.{l}.mlp.hook_pre",
    "mlp_post": "blocks.{l}.mlp.hook_post",
    "embed": "hook_embed",
    "pos_embed": "hook_pos_embed",
    "ln_final": "hook_ln_final",
}


_TEMPLATE_TO_SHORT = {t.replace("blocks.{l}.", ""): short for short, t in _SHORT_NAMES.items()}


def short_name(full: str) -> str:
    """Inverse of :func:`hook_name` without the layer: ``"blocks.3.attn.hook_z" -> "z"``."""
    rest = full.split(".", 2)[2] if full.startswith("blocks.") else full
    return _TEMPLATE_TO_SHORT.get(rest, full)


def hook_name(name: str, layer: int | None = None, n_layer: int | None = None) -> str:
    """Expand a short name: ``hook_name("pattern", 3) == "blocks.3.attn.hook_pattern"``.

    Negative layers count from the end when ``n_layer`` is given. Full names pass through.
    """
    if name not in _SHORT_NAMES:
        return name if layer is None else f"blocks.{layer}.{name}"
    template = _SHORT_NAMES[name]
    if "{l}" in template:
        if layer is None:
            raise UnknownNameError(f"{name!r} lives in every block: ask for it with a layer, e.g. cache[{name!r}, 0]")
        if layer < 0:
            if n_layer is None:
                raise UnknownNameError("negative layer index needs the number of layers")
            layer += n_layer
        return template.format(l=layer)
    return template


class HookPoint(nn.Module):
    """An identity function with a name, where hooks can read or replace activations.

    A hook is ``fn(tensor, hook) -> tensor | None``; returning a tensor replaces the activation.
    """

    def __init__(self) -> None:
        super().__init__()
        self.name: str | None = None  # filled in by HookedRootModule.name_hook_points

    def add_hook(self, fn: HookFn) -> torch.utils.hooks.RemovableHandle:
        """Attach ``fn(tensor, hook)``; ``.remove()`` the returned handle to detach it."""
        return self.register_forward_hook(lambda module, args, output: fn(output, module))

    @property
    def active(self) -> bool:
        """True when some hook is attached (used to switch attention to its explicit path)."""
        return bool(self._forward_hooks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class HookedRootModule(nn.Module):
    """A model with hook points: TransformerLens' ``hooks``, ``run_with_hooks`` and ``run_with_cache``.

    The subclass calls :meth:`name_hook_points` at the end of ``__init__``, and has ``config.n_layer``
    and ``to_tokens`` (for text input).
    """

    def name_hook_points(self) -> None:
        """Give every hook point its full name (``blocks.3.attn.hook_pattern``)."""
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name

    def hook_points(self) -> dict[str, HookPoint]:
        """Every hook point by its full name."""
        return {m.name: m for m in self.modules() if isinstance(m, HookPoint)}  # type: ignore[misc]

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Iterable[tuple[str | Callable[[str], bool], HookFn]]) -> Iterator["HookedRootModule"]:
        """Attach ``(name_or_filter, fn)`` hooks for the duration of a ``with`` block; always removed."""
        points = self.hook_points()
        handles = []
        try:
            for name, fn in fwd_hooks:
                matched = [p for n, p in points.items() if (name(n) if callable(name) else n == name)]
                if not matched:
                    raise UnknownNameError(f"no hook point named {name!r}; see model.hook_points()")
                handles += [p.add_hook(fn) for p in matched]
            yield self
        finally:
            for h in handles:
                h.remove()

    def run_with_hooks(self, idx: torch.Tensor, fwd_hooks: Iterable) -> torch.Tensor:
        """``self(idx)`` with ``fwd_hooks`` attached (as :meth:`hooks`)."""
        with self.hooks(fwd_hooks):
            return self(idx)

    def run_with_cache(self, idx: torch.Tensor | str, *,
                       names_filter: Callable[[str], bool] | Sequence[str] | None = None,
                       device: str | torch.device | None = None) -> tuple[torch.Tensor, "ActivationCache"]:
        """Run the model and keep every intermediate activation.

        >>> logits, cache = model.run_with_cache(tokens)                  # doctest: +SKIP
        >>> cache["pattern", 0]      # (B, H, T, T) attention probabilities of layer 0  # doctest: +SKIP
        >>> cache["z", 0]            # (B, T, H, hs) per-head outputs before concatenation  # doctest: +SKIP

        Asking for patterns switches attention to its explicit path for this call only.
        ``names_filter`` keeps only some activations (a list of full or short names, or a predicate).
        Activations are detached; they live on ``device`` (default: where they were computed).
        """
        if isinstance(idx, str):
            idx = self.to_tokens(idx)
        if names_filter is None:
            keep: Callable[[str], bool] = lambda name: True
        elif callable(names_filter):
            keep = names_filter
        else:
            wanted = {names_filter} if isinstance(names_filter, str) else set(names_filter)
            known = {n for full in self.hook_points() for n in (full, short_name(full))}
            unknown = sorted(map(str, wanted - known))
            if unknown:
                raise UnknownNameError(f"names_filter asks for {unknown}, which are not hook points; use full names "
                                       "such as 'blocks.0.attn.hook_pattern' or short ones such as 'pattern' "
                                       "(see model.hook_points())")
            keep = lambda name: name in wanted or short_name(name) in wanted
        store: dict[str, torch.Tensor] = {}

        def save(t: torch.Tensor, hook: HookPoint) -> None:
            store[hook.name] = t.detach() if device is None else t.detach().to(device)

        with torch.no_grad(), self.hooks([(keep, save)]):
            logits = self(idx)
        return logits, ActivationCache(store, self.config.n_layer)


class ActivationCache:
    """A dict of activations with TransformerLens-style shorthand keys.

    >>> logits, cache = model.run_with_cache(tokens)              # doctest: +SKIP
    >>> cache["pattern", 0].shape   # (B, H, T, T)                 # doctest: +SKIP
    """

    def __init__(self, store: dict[str, torch.Tensor], n_layer: int) -> None:
        self._store = store
        self.n_layer = n_layer

    def _key(self, key: str | tuple[str, int]) -> str:
        if isinstance(key, tuple):
            name, layer = key
            return hook_name(name, layer, self.n_layer)
        return hook_name(key) if key in _SHORT_NAMES else key

    def __getitem__(self, key: str | tuple[str, int]) -> torch.Tensor:
        full = self._key(key)
        try:
            return self._store[full]
        except KeyError:
            raise UnknownNameError(f"{full!r} was not cached; cached names look like {next(iter(self._store), None)!r}") from None

    def __contains__(self, key: object) -> bool:
        try:
            return self._key(key) in self._store  # type: ignore[arg-type]
        except KeyError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._store)

    def __len__(self) -> int:
        return len(self._store)

    def keys(self):
        return self._store.keys()

    def items(self):
        return self._store.items()

    def stack(self, name: str) -> torch.Tensor:
        """One activation from every layer, stacked: ``cache.stack("pattern")`` is (L, B, H, T, T)."""
        return torch.stack([self[name, layer] for layer in range(self.n_layer)])

    def to(self, device: str | torch.device) -> "ActivationCache":
        return ActivationCache({k: v.to(device) for k, v in self._store.items()}, self.n_layer)

    def __repr__(self) -> str:
        return f"ActivationCache({len(self)} activations, e.g. {list(self._store)[:3]})"
