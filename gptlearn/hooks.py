"""Hook points, the activation cache and the inspection methods, in TransformerLens' names (book chapter 4).

A :class:`HookPoint` is an identity module placed at every interesting spot of the forward pass
(``blocks.3.attn.hook_pattern``, ``blocks.3.hook_resid_post``, ...). :class:`HookedRootModule` gives a
model TransformerLens' inspection methods: ``run_with_cache`` attaches hooks that copy what flows
through into an :class:`ActivationCache`, and always removes them again; ``run_with_hooks`` and
``hooks`` attach your own for one run; ``add_hook``/``reset_hooks`` keep them until removed;
``to_tokens`` turns text into ids. The cache takes the residual stream apart as TransformerLens' does
(``accumulated_resid``, ``decompose_resid``, ``stack_head_results``, ``apply_ln_to_stack``, ``logit_attrs``;
book chapter "Reading the residual stream").

What follows TransformerLens exactly:

* a hook is called as ``fn(activation, hook=hook_point)`` (``hook.name`` is the full name) and may
  return a tensor that replaces the activation;
* a ``names_filter`` (and the name in ``add_hook``/``hooks``) is one name, a list of names, or a
  predicate ``fn(name) -> bool``;
* cache keys take :func:`get_act_name`'s shorthand: ``cache["pattern", 3]``, ``cache["attn", 3]`` (the
  same), ``cache["pre", 0]``, ``cache["scale", 2, "ln1"]``, ``cache["k6"]``.

Where gptlearn differs: a name that matches no hook point is an error that names the nearest valid
names (TransformerLens caches nothing for it); a per-layer name without a layer (``"pattern"``) in a
``names_filter`` means that activation in every layer; the LayerNorms are ``ln_1``, ``ln_2`` and
``ln_f`` (Hugging Face's names), and TransformerLens' spellings ``ln1``, ``ln2``, ``ln_final`` are read
as those; ``to_tokens`` adds no BOS token unless asked (``prepend_bos=True``), as Hugging Face's
tokenizer does.
"""
from __future__ import annotations

import contextlib
import difflib
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence, Union

import torch
from torch import nn

from .checks import check_bool, check_callable, check_choice, check_device, describe
from .errors import InvalidTypeError, InvalidValueError, UnknownNameError

__all__ = ["HookPoint", "LensHandle", "HookedRootModule", "ActivationCache", "get_act_name", "NamesFilter"]

HookFn = Callable[..., Union[torch.Tensor, None]]  # fn(activation, *, hook) -> replacement or None
NamesFilter = Union[None, str, Sequence[str], Callable[[str], bool]]
Direction = Literal["fwd", "bwd"]

# ---- names ------------------------------------------------------------------------------------------
_ALIASES = {"attn": "pattern", "attn_logits": "attn_scores", "key": "k", "query": "q", "value": "v",
            "mlp_pre": "pre", "mlp_mid": "mid", "mlp_post": "post"}
_IN_ATTN = {"q", "k", "v", "z", "pattern", "attn_scores", "result", "rot_q", "rot_k"}
_IN_MLP = {"pre", "post", "mid", "pre_linear"}
_SUBLAYERS = {"a": "attn", "attention": "attn", "m": "mlp", "b": "", "block": "", "blocks": ""}
_TL_SPELLINGS = [(re.compile(r"(^|\.)ln1\."), r"\1ln_1."), (re.compile(r"(^|\.)ln2\."), r"\1ln_2."),
                 (re.compile(r"^ln_final\."), "ln_f.")]


def get_act_name(name: str, layer: int | str | None = None, layer_type: str | None = None) -> str:
    """TransformerLens' shorthand -> the full hook name, in gptlearn's module names.

    >>> get_act_name("pattern", 3), get_act_name("attn", 3), get_act_name("k6")
    ('blocks.3.attn.hook_pattern', 'blocks.3.attn.hook_pattern', 'blocks.6.attn.hook_k')
    >>> get_act_name("pre", 0), get_act_name("scale", 2, "ln1"), get_act_name("scale4ln2"), get_act_name("embed")
    ('blocks.0.mlp.hook_pre', 'blocks.2.ln_1.hook_scale', 'blocks.4.ln_2.hook_scale', 'hook_embed')

    A full name passes through (TransformerLens' ``ln1``/``ln2``/``ln_final`` become ``ln_1``/``ln_2``/``ln_f``).
    """
    if ("." in name or name.startswith("hook_")) and layer is None and layer_type is None:
        full = name
    else:
        packed = re.match(r"([a-z]+)(\d+)([a-z]?.*)", name)  # "k6" -> ("k", 6, ""), "scale4ln1" -> (.., "ln1")
        if packed is not None:
            name, layer, layer_type = packed.group(1), packed.group(2), packed.group(3)
        name = _ALIASES.get(name, name)
        if name in _IN_ATTN:
            layer_type = "attn"
        elif name in _IN_MLP:
            layer_type = "mlp"
        elif layer_type in _SUBLAYERS:
            layer_type = _SUBLAYERS[layer_type]
        full = (f"blocks.{layer}." if layer is not None else "") + (f"{layer_type}." if layer_type else "")
        full += f"hook_{name}"
        if name in ("scale", "normalized") and layer is None:
            full = "ln_final." + full  # the final LayerNorm's
    for pattern, replacement in _TL_SPELLINGS:
        full = pattern.sub(replacement, full)
    return full


class HookNameError(UnknownNameError):
    """No hook point or cached activation has this name (a KeyError, as in TransformerLens, and a GptlearnError)."""


def _nearest(name: str, names: Iterable[str]) -> str:
    """``name``'s nearest valid names, for an error message."""
    names = list(names)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    if close:
        return "the nearest valid names are " + ", ".join(map(repr, close))
    examples = [n for n in names if n == "hook_embed" or n.endswith(("0.attn.hook_pattern", "0.hook_resid_post"))]
    return "valid names look like " + ", ".join(map(repr, examples or names[:3])) + " (see model.hook_dict)"


# ---- hook points --------------------------------------------------------------------------------------
@dataclass(eq=False)
class LensHandle:
    """A hook attached to a :class:`HookPoint` (TransformerLens' name); ``.remove()`` detaches it."""

    hook: torch.utils.hooks.RemovableHandle
    is_permanent: bool = False

    def remove(self) -> None:
        self.hook.remove()


class HookPoint(nn.Module):
    """An identity function with a name, where hooks can read or replace activations.

    A hook is ``fn(activation, hook=hook_point) -> tensor | None``; returning a tensor replaces the
    activation. A backward hook (``dir="bwd"``) gets the activation's gradient the same way.
    """

    def __init__(self) -> None:
        super().__init__()
        self.name: str | None = None  # filled in by HookedRootModule.name_hook_points
        self.fwd_hooks: list[LensHandle] = []
        self.bwd_hooks: list[LensHandle] = []

    def add_hook(self, hook: HookFn, dir: Direction = "fwd", *, is_permanent: bool = False,
                 prepend: bool = False) -> LensHandle:
        """Attach ``hook(activation, hook=self)``; ``.remove()`` the returned handle to detach it."""
        check_callable(hook, "hook")
        check_choice(dir, "dir", ("fwd", "bwd"))
        check_bool(is_permanent, "is_permanent")
        check_bool(prepend, "prepend")
        if dir == "fwd":
            handle = self.register_forward_hook(lambda module, args, out: hook(out, hook=module), prepend=prepend)
        elif dir == "bwd":
            def backward(module: nn.Module, grad_input: Any, grad_output: tuple) -> tuple | None:
                new = hook(grad_output[0], hook=module)
                return None if new is None else (new,)

            handle = self.register_full_backward_hook(backward, prepend=prepend)
        lens = LensHandle(handle, is_permanent)
        (self.fwd_hooks if dir == "fwd" else self.bwd_hooks).append(lens)
        return lens

    def remove_hooks(self, dir: Literal["fwd", "bwd", "both"] = "fwd", including_permanent: bool = False) -> None:
        """Detach this point's hooks (TransformerLens' defaults: forward ones, not the permanent ones)."""
        for kind in ("fwd", "bwd"):
            if dir in (kind, "both"):
                kept = []
                for lens in getattr(self, f"{kind}_hooks"):
                    if lens.is_permanent and not including_permanent:
                        kept.append(lens)
                    else:
                        lens.remove()
                setattr(self, f"{kind}_hooks", kept)

    @property
    def active(self) -> bool:
        """True when some hook is attached (used to switch attention to its explicit path)."""
        return bool(self._forward_hooks or self._backward_hooks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return f"name={self.name!r}" if self.name else ""


# ---- the model's side ---------------------------------------------------------------------------------
class HookedRootModule(nn.Module):
    """TransformerLens' inspection methods for a model with hook points.

    The subclass calls :meth:`name_hook_points` at the end of ``__init__``, and has ``config.n_layer``,
    ``tokenizer`` and ``device``.
    """

    # ---- the hook points ---------------------------------------------------------------------------
    def name_hook_points(self) -> None:
        """Give every hook point its full name (``blocks.3.attn.hook_pattern``)."""
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name

    @property
    def hook_dict(self) -> dict[str, HookPoint]:
        """Every hook point by its full name (in module order, as TransformerLens' ``hook_dict``)."""
        return {m.name: m for m in self.modules() if isinstance(m, HookPoint)}  # type: ignore[misc]

    def hook_points(self):
        """Every hook point (TransformerLens: ``hook_dict.values()``)."""
        return self.hook_dict.values()

    def _matching(self, names: NamesFilter) -> list[HookPoint]:
        """The hook points a name, a list of names or a predicate picks; an unknown name is an error.

        A name is a full name or :func:`get_act_name` shorthand; a per-layer one without a layer
        (``"pattern"``) picks that activation in every layer.
        """
        points = self.hook_dict
        if names is None:
            return list(points.values())
        if callable(names):
            return [p for n, p in points.items() if names(n)]
        if isinstance(names, str):
            names = [names]
        elif (not isinstance(names, Iterable) or isinstance(names, (bytes, dict))
              or not all(isinstance(n, str) for n in names)):
            raise InvalidTypeError(f"names_filter must be a hook name, a list of names or a function name -> bool, "
                                   f"got {describe(names)}")
        picked: dict[str, HookPoint] = {}
        for name in names:
            full = get_act_name(name)
            hits = {n: p for n, p in points.items() if n == full or re.fullmatch(rf"blocks\.\d+\.{re.escape(full)}", n)}
            if not hits:
                raise HookNameError(f"no hook point named {name!r}; {_nearest(name, points)}")
            picked.update(hits)
        return [p for n, p in points.items() if n in picked]

    def add_hook(self, name: str | Callable[[str], bool], hook: HookFn, dir: Direction = "fwd", *,
                 is_permanent: bool = False, prepend: bool = False) -> None:
        """Attach ``hook`` to the named hook point(s) (a name, shorthand, or ``fn(name) -> bool``) until
        :meth:`reset_hooks` (permanent ones stay until ``reset_hooks(including_permanent=True)``)."""
        for point in self._matching(name):
            point.add_hook(hook, dir, is_permanent=is_permanent, prepend=prepend)

    def reset_hooks(self, including_permanent: bool = False) -> None:
        """Detach every hook added with :meth:`add_hook` (forward and backward; permanent ones only
        with ``including_permanent=True``)."""
        for point in self.hook_points():
            point.remove_hooks("both", including_permanent=including_permanent)

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Iterable[tuple[str | Callable[[str], bool], HookFn]] = (),
              bwd_hooks: Iterable[tuple[str | Callable[[str], bool], HookFn]] = (), *,
              reset_hooks_end: bool = True) -> Iterator["HookedRootModule"]:
        """Attach ``(name_or_filter, fn)`` hooks for a ``with`` block; removed at its end, even on an error
        (``reset_hooks_end=False`` leaves them, e.g. for a backward pass after the block)."""
        added: list[LensHandle] = []
        try:
            for direction, pairs in (("fwd", fwd_hooks), ("bwd", bwd_hooks)):
                for pair in _pairs(pairs, f"{direction}_hooks"):
                    name, fn = pair
                    added += [p.add_hook(fn, direction) for p in self._matching(name)]  # type: ignore[arg-type]
            yield self
        finally:
            if reset_hooks_end:
                for lens in added:
                    lens.remove()
                gone = set(map(id, added))
                for point in self.hook_points():
                    point.fwd_hooks = [h for h in point.fwd_hooks if id(h) not in gone]
                    point.bwd_hooks = [h for h in point.bwd_hooks if id(h) not in gone]

    def run_with_hooks(self, idx: torch.Tensor | str | Sequence[str], fwd_hooks: Iterable = (), *,
                       bwd_hooks: Iterable = (), reset_hooks_end: bool = True) -> torch.Tensor:
        """``self(idx)`` with the hooks attached (as :meth:`hooks`); text is tokenized first."""
        with self.hooks(fwd_hooks, bwd_hooks, reset_hooks_end=reset_hooks_end):
            return self(self._as_ids(idx, "run_with_hooks"))

    def run_with_cache(self, idx: torch.Tensor | str | Sequence[str], *, names_filter: NamesFilter = None,
                       device: str | torch.device | None = None,
                       remove_batch_dim: bool = False) -> tuple[torch.Tensor, "ActivationCache"]:
        """Run the model and keep the intermediate activations.

        >>> logits, cache = model.run_with_cache(tokens)                  # doctest: +SKIP
        >>> cache["pattern", 0]      # (B, H, T, T) attention probabilities of layer 0  # doctest: +SKIP
        >>> cache["z", 0]            # (B, T, H, hs) per-head outputs before concatenation  # doctest: +SKIP

        ``names_filter`` keeps only some: one name, a list of names (full or shorthand), or a predicate.
        Asking for patterns switches attention to its explicit path for this call only. Activations
        are detached and live on ``device`` (default: where they were computed);
        ``remove_batch_dim=True`` drops the batch dimension of a batch of one.
        """
        check_bool(remove_batch_dim, "remove_batch_dim")
        check_device(device, "device")
        idx = self._as_ids(idx, "run_with_cache")
        if remove_batch_dim and idx.size(0) != 1:
            raise InvalidValueError(f"remove_batch_dim needs a batch of one, got {idx.size(0)} rows")
        wanted = {p.name for p in self._matching(names_filter)}
        store: dict[str, torch.Tensor] = {}

        def save(t: torch.Tensor, hook: HookPoint) -> None:
            t = t.detach() if device is None else t.detach().to(device)
            store[hook.name] = t[0] if remove_batch_dim else t  # type: ignore[index]

        with torch.no_grad(), self.hooks([(lambda name: name in wanted, save)]):
            logits = self(idx)
        if remove_batch_dim:
            logits = logits[0]
        return logits, ActivationCache(store, self.config.n_layer, names=list(self.hook_dict),
                                       has_batch_dim=not remove_batch_dim, model=self)

    # ---- text in ----------------------------------------------------------------------------------
    def _as_ids(self, idx: Any, what: str) -> torch.Tensor:
        if isinstance(idx, str) or (isinstance(idx, (list, tuple)) and idx and all(isinstance(t, str) for t in idx)):
            return self.to_tokens(idx)
        if not isinstance(idx, torch.Tensor):
            raise InvalidTypeError(f"{what} takes token ids (a (B, T) tensor) or text, got {describe(idx)}")
        return idx


def _apply_slice(t: torch.Tensor, index: Any, dim: int) -> torch.Tensor:
    """TransformerLens' ``Slice`` on dimension ``dim``: ``None`` keeps all, an int picks one (the dimension
    goes), a ``slice`` or ``(start, stop[, step])`` tuple cuts, a list or tensor of ints gathers."""
    if index is None:
        return t
    if isinstance(index, bool):
        raise InvalidTypeError(f"a position/batch slice is an int, a slice, a tuple or a list of ints, got {index!r}")
    if isinstance(index, int):
        if not -t.shape[dim] <= index < t.shape[dim]:
            raise InvalidValueError(f"index {index} is out of range for a dimension of {t.shape[dim]}")
        return t.select(dim, index)
    if isinstance(index, tuple):
        index = slice(*index)
    if isinstance(index, slice):
        where = [slice(None)] * t.dim()
        where[dim] = index
        return t[tuple(where)]
    if isinstance(index, (list, torch.Tensor)):
        ids = torch.as_tensor(index, device=t.device)
        if ids.dtype in (torch.bool, torch.float16, torch.float32, torch.float64) or ids.dim() != 1:
            raise InvalidTypeError("a list of positions must hold ints, e.g. [0, 3]")
        if ids.numel() and not (-t.shape[dim] <= int(ids.min()) and int(ids.max()) < t.shape[dim]):
            raise InvalidValueError(f"positions {ids.tolist()} are out of range for a dimension of {t.shape[dim]}")
        return t.index_select(dim, ids % t.shape[dim])
    raise InvalidTypeError(f"a position/batch slice is an int, a slice, a tuple or a list of ints, got "
                           f"{type(index).__name__}")


def _pairs(pairs: Any, name: str) -> list:
    """``pairs`` as a list of (name or filter, function) pairs, or an InvalidTypeError naming ``name``."""
    rule = f"{name} must be a list of (hook name, function) pairs"
    if isinstance(pairs, (str, bytes, dict)) or not isinstance(pairs, Iterable):
        raise InvalidTypeError(f"{rule}, got {describe(pairs)}")
    pairs = list(pairs)
    for pair in pairs:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InvalidTypeError(f"{rule}, but it holds {describe(pair)}")
        check_callable(pair[1], f"the function of the {name} pair for {pair[0]!r}")
    return pairs


# ---- the cache ----------------------------------------------------------------------------------------
class ActivationCache:
    """The activations of one run, by full hook name, with TransformerLens' shorthand keys.

    >>> logits, cache = model.run_with_cache(tokens)              # doctest: +SKIP
    >>> cache["pattern", 0].shape, cache["attn", 0].shape   # (B, H, T, T), the same tensor  # doctest: +SKIP
    >>> cache.stack_activation("resid_post").shape          # (L, B, T, C)  # doctest: +SKIP
    """

    def __init__(self, cache_dict: dict[str, torch.Tensor], n_layer: int, *, names: Sequence[str] | None = None,
                 has_batch_dim: bool = True, model: nn.Module | None = None) -> None:
        self.cache_dict = cache_dict
        self.n_layer = n_layer
        self.has_batch_dim = has_batch_dim
        self.model = model  # the model that ran: its weights turn cached activations into head results and logits
        self._names = list(names) if names is not None else list(cache_dict)  # every hook point of the model

    def _key(self, key: str | tuple) -> str:
        if isinstance(key, str):
            return key if key in self.cache_dict else get_act_name(key)
        if not isinstance(key, tuple) or not 1 <= len(key) <= 3:
            raise TypeError(f"cache keys are a name or (name, layer[, layer_type]), got {key!r}")
        name, *rest = key
        if rest and rest[0] is not None and int(rest[0]) < 0:
            rest[0] = int(rest[0]) + self.n_layer  # negative layers count from the end
        return get_act_name(name, *rest)

    def __getitem__(self, key: str | tuple) -> torch.Tensor:
        full = self._key(key)
        if full in self.cache_dict:
            return self.cache_dict[full]
        if full in self._names:
            raise HookNameError(f"{full!r} was not cached; run_with_cache kept {len(self)} activations "
                                "(names_filter left this one out)")
        if any(n.endswith("." + full) for n in self._names):
            raise HookNameError(f"{key!r} lives in every block: ask for it with a layer, e.g. cache[{key!r}, 0]")
        raise HookNameError(f"no activation named {full!r}; {_nearest(full, self._names)}")

    def __contains__(self, key: object) -> bool:
        try:
            return self._key(key) in self.cache_dict  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.cache_dict)

    def __len__(self) -> int:
        return len(self.cache_dict)

    def keys(self):
        return self.cache_dict.keys()

    def values(self):
        return self.cache_dict.values()

    def items(self):
        return self.cache_dict.items()

    def stack_activation(self, activation_name: str, layer: int = -1, sublayer_type: str | None = None) -> torch.Tensor:
        """One activation from the layers before ``layer`` (``-1``: every layer), stacked on a new first
        dimension: ``cache.stack_activation("pattern")`` is (L, B, H, T, T)."""
        stop = self.n_layer if layer in (-1, None) else layer
        return torch.stack([self[activation_name, l, sublayer_type] for l in range(stop)])

    def stack(self, name: str) -> torch.Tensor:
        """``stack_activation(name)``: the activation from every layer, (L, ...)."""
        return self.stack_activation(name)

    # ---- the residual stream, taken apart (book chapter "Reading the residual stream") ----------------
    # Legend: N components stacked on the first dimension; the rest is (B, T, C), less what pos_slice takes.
    # LayerNorm here: ln(x) = (x - mean(x)) / scale * gamma + beta with scale = sqrt(var(x) + eps). The
    # stack methods apply only the first part, centring then dividing by a scale; gamma is folded into
    # the unembedding direction by ``model.tokens_to_residual_directions`` and beta's logit is the
    # constant ``model.ln_final_bias_logits(tokens)``. So, with the cached scale,
    #     logits[..., t] == logit_attrs(decompose_resid(), t).sum(0) + model.ln_final_bias_logits(t)
    # exactly (to float rounding), as TransformerLens' identity holds on a model with folded LayerNorms.

    def _need_model(self, what: str) -> nn.Module:
        if self.model is None:
            raise InvalidValueError(f"{what} needs the model's weights: use the cache that model.run_with_cache "
                                    "returned (this one was built without a model)")
        return self.model

    def _layer(self, layer: int | None, what: str, *, allow_end: bool = True) -> int:
        """``None`` or ``-1`` -> n_layer (the stream before the unembedding); else 0..n_layer."""
        if layer is None or (isinstance(layer, int) and not isinstance(layer, bool) and layer == -1):
            return self.n_layer
        if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer <= self.n_layer:
            raise InvalidValueError(f"{what}: layer must be 0..{self.n_layer} (or -1/None for the final stream), "
                                    f"got {layer!r}")
        return layer

    def _check_tokens(self, what: str) -> None:
        """An empty text runs (to zero positions); reading its stream is refused with one clear error."""
        name = "hook_embed" if "hook_embed" in self.cache_dict else "blocks.0.hook_resid_pre"
        if name in self.cache_dict and self.cache_dict[name].shape[-2] == 0:
            raise InvalidValueError(f"{what}: the cached run has no tokens (an empty text?); run the model on at "
                                    "least one token first")

    def _resid_at(self, layer: int, mlp_input: bool = False) -> torch.Tensor:
        """The stream that layer ``layer`` reads (its attention's input; with ``mlp_input`` its MLP's);
        ``layer == n_layer``: the final stream, before ``ln_f``."""
        if layer == self.n_layer:
            return self["resid_post", self.n_layer - 1]
        return self["resid_mid", layer] if mlp_input else self["resid_pre", layer]

    def accumulated_resid(self, layer: int | None = None, incl_mid: bool = False, apply_ln: bool = False,
                          pos_slice: Any = None, mlp_input: bool = False,
                          return_labels: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
        """The residual stream as it stood before each layer up to ``layer``: (N, B, T, C).

        Labels ``0_pre, (0_mid,) 1_pre, ..., final_post`` (``final_post`` only when ``layer`` is
        ``None``/``-1``/``n_layer``). ``apply_ln`` normalises each state: before the unembedding each by its
        own mean and scale (the logit lens: ``logits = stack @ tokens_to_residual_directions + ln_final_bias_logits``),
        before a layer by that layer's cached ``ln_1`` scale (``ln_2`` with ``mlp_input``).
        """
        layer = self._layer(layer, "accumulated_resid")
        self._check_tokens("accumulated_resid")
        components, labels = [], []
        for l in range(layer + 1):
            if l == self.n_layer:
                components.append(self["resid_post", l - 1])
                labels.append("final_post")
                continue
            components.append(self["resid_pre", l])
            labels.append(f"{l}_pre")
            if (incl_mid and l < layer) or (mlp_input and l == layer):
                components.append(self["resid_mid", l])
                labels.append(f"{l}_mid")
        stack = torch.stack([_apply_slice(c, pos_slice, -2) for c in components])  # (N, B, T, C)
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos_slice,
                                           has_batch_dim=self.has_batch_dim, recompute_ln=layer == self.n_layer)
        return (stack, labels) if return_labels else stack

    def decompose_resid(self, layer: int | None = None, mlp_input: bool = False, mode: str = "all",
                        apply_ln: bool = False, pos_slice: Any = None, incl_embeds: bool = True,
                        return_labels: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
        """What each part wrote into the stream that ``layer`` reads: (N, B, T, C), summing to that stream.

        Labels ``embed, pos_embed, 0_attn_out, 0_mlp_out, 1_attn_out, ...`` (``mode="attn"`` or ``"mlp"``
        keeps one kind; ``mlp_input`` adds ``layer``'s own ``attn_out``, the MLP's input). The sum over the
        first dimension is ``resid_pre[layer]`` (the final stream for ``layer=None``) exactly: each
        block only adds.
        """
        layer = self._layer(layer, "decompose_resid")
        self._check_tokens("decompose_resid")
        if mode not in ("all", "attn", "mlp"):
            raise InvalidValueError(f"decompose_resid: mode must be 'all', 'attn' or 'mlp', got {mode!r}")
        if mlp_input and layer == self.n_layer:
            raise InvalidValueError("decompose_resid: mlp_input needs a layer below n_layer (the final stream has no "
                                    "MLP)")
        components, labels = [], []
        if incl_embeds:
            components += [self["hook_embed"], self["hook_pos_embed"]]
            labels += ["embed", "pos_embed"]
        for l in range(layer):
            if mode != "mlp":
                components.append(self["attn_out", l])
                labels.append(f"{l}_attn_out")
            if mode != "attn":
                components.append(self["mlp_out", l])
                labels.append(f"{l}_mlp_out")
        if mlp_input and mode != "mlp":
            components.append(self["attn_out", layer])
            labels.append(f"{layer}_attn_out")
        if not components:
            raise InvalidValueError("decompose_resid: nothing to stack (layer 0 without embeddings)")
        stack = torch.stack([_apply_slice(c, pos_slice, -2) for c in components])  # (N, B, T, C)
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input=mlp_input, pos_slice=pos_slice,
                                           has_batch_dim=self.has_batch_dim)
        return (stack, labels) if return_labels else stack

    def head_results(self, layer: int) -> torch.Tensor:
        """What each head of ``layer`` adds to the stream, (B, T, H, C): head h's z times its rows of W_O.

        Summed over the heads and plus the output bias ``b_O`` (``attn.c_proj.bias``), this is ``attn_out``.
        """
        model = self._need_model("head_results")
        if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < self.n_layer:
            raise InvalidValueError(f"head_results: layer must be 0..{self.n_layer - 1}, got {layer!r}")
        z = self["z", layer]  # (B, T, H, hs)
        H, hs = z.shape[-2], z.shape[-1]
        W_O = model.blocks[layer].attn.c_proj.weight.detach().T.reshape(H, hs, -1)  # (C, C) -> (H, hs, C)
        return torch.einsum("...hd,hdc->...hc", z, W_O.to(z.dtype))  # (B, T, H, hs) -> (B, T, H, C)

    def compute_head_results(self) -> None:
        """Store every layer's :meth:`head_results` as ``blocks.{l}.attn.hook_result`` (``cache["result", l]``)."""
        for l in range(self.n_layer):
            self.cache_dict[f"blocks.{l}.attn.hook_result"] = self.head_results(l)

    def stack_head_results(self, layer: int | None = -1, return_labels: bool = False, incl_remainder: bool = False,
                           pos_slice: Any = None,
                           apply_ln: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
        """Every head's output in the layers before ``layer``, one row each: (layer * H, B, T, C).

        Labels ``L0H0, L0H1, ...``. Heads leave out the output biases; ``incl_remainder`` adds one last row,
        ``remainder``: the stream at ``layer`` minus the heads (embeddings, MLPs and the b_O's), so the rows
        sum to that stream.
        """
        layer = self._layer(layer, "stack_head_results")
        self._check_tokens("stack_head_results")
        parts, labels = [], []
        for l in range(layer):
            result = _apply_slice(self.head_results(l), pos_slice, -3)  # (B, T, H, C)
            parts.append(result.movedim(-2, 0))  # (B, T, H, C) -> (H, B, T, C)
            labels += [f"L{l}H{h}" for h in range(result.shape[-2])]
        stream = _apply_slice(self._resid_at(layer), pos_slice, -2)
        stack = torch.cat(parts) if parts else stream.new_zeros(0, *stream.shape)  # (layer * H, B, T, C)
        if incl_remainder:
            stack = torch.cat([stack, (stream - stack.sum(0))[None]])
            labels.append("remainder")
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, pos_slice=pos_slice, has_batch_dim=self.has_batch_dim)
        return (stack, labels) if return_labels else stack

    def apply_ln_to_stack(self, residual_stack: torch.Tensor, layer: int | None = None, mlp_input: bool = False,
                          pos_slice: Any = None, batch_slice: Any = None, has_batch_dim: bool = True,
                          recompute_ln: bool = False) -> torch.Tensor:
        """Each component as the LayerNorm before ``layer`` sees it: centred, then divided by the cached scale.

        ``layer``: 0..n_layer-1 uses that block's ``ln_1`` scale (``ln_2`` with ``mlp_input``);
        ``None``/``-1``/``n_layer`` the final ``ln_f``'s. The scale is the whole stream's, cached, so the
        map is linear and the components still sum to the normalised stream. LayerNorm's weight gamma and
        bias beta are *not* applied (gptlearn does not fold them into the weights, as TransformerLens'
        ``fold_ln`` does): gamma belongs to the unembedding direction (``model.tokens_to_residual_directions``),
        beta to a constant logit (``model.ln_final_bias_logits``). ``recompute_ln=True`` before the unembedding
        normalises each component by its own mean and scale instead (the logit lens).
        ``pos_slice``/``batch_slice`` say which positions/rows the stack holds (applied to the scale only).
        """
        layer = self._layer(layer, "apply_ln_to_stack")
        if not isinstance(residual_stack, torch.Tensor) or residual_stack.dim() < 2:
            raise InvalidTypeError("apply_ln_to_stack takes a stack of residual vectors, a tensor (N, ..., C)")
        if mlp_input and layer == self.n_layer:
            raise InvalidValueError("apply_ln_to_stack: mlp_input needs a layer below n_layer (ln_f has no MLP)")
        if has_batch_dim and batch_slice is not None:
            residual_stack = _apply_slice(residual_stack, batch_slice, 1)
        centred = residual_stack - residual_stack.mean(dim=-1, keepdim=True)  # (N, ..., C)
        if recompute_ln and layer == self.n_layer:
            eps = self._need_model("apply_ln_to_stack").ln_f.eps
            return centred / (centred.pow(2).mean(dim=-1, keepdim=True) + eps).sqrt()
        name = "ln_f.hook_scale" if layer == self.n_layer else f"blocks.{layer}.ln_{2 if mlp_input else 1}.hook_scale"
        scale = _apply_slice(self[name], pos_slice, -2)  # (B, T, 1)
        if batch_slice is not None and self.has_batch_dim:
            scale = _apply_slice(scale, batch_slice, 0)
        try:
            return centred / scale
        except RuntimeError:
            raise InvalidValueError(
                f"apply_ln_to_stack: a stack of shape {tuple(residual_stack.shape)} does not match the cached scale "
                f"{tuple(scale.shape)}; pass the pos_slice/batch_slice the stack was taken with") from None

    def logit_attrs(self, residual_stack: torch.Tensor, tokens: Any, incorrect_tokens: Any = None,
                    pos_slice: Any = None, batch_slice: Any = None, has_batch_dim: bool = True) -> torch.Tensor:
        """How much each component of ``residual_stack`` adds to the logit of ``tokens`` (minus that of
        ``incorrect_tokens``: a logit difference), through the final LayerNorm with its cached scale.

        ``tokens``: a string (one token), an id, or a tensor of ids, (B,) for one per row or (B, T).
        Returns (N, ...) without the last dimension. Add ``model.ln_final_bias_logits(tokens)`` (minus the
        incorrect tokens') and the sum over components is the model's logit (difference).
        """
        model = self._need_model("logit_attrs")
        self._check_tokens("logit_attrs")
        directions = model.tokens_to_residual_directions(tokens)  # (..., C)
        if incorrect_tokens is not None:
            wrong = model.tokens_to_residual_directions(incorrect_tokens)
            if wrong.shape != directions.shape:
                raise InvalidValueError(f"logit_attrs: tokens and incorrect_tokens must have the same shape, got "
                                        f"{tuple(directions.shape[:-1])} and {tuple(wrong.shape[:-1])}")
            directions = directions - wrong
        scaled = self.apply_ln_to_stack(residual_stack, None, pos_slice=pos_slice, batch_slice=batch_slice,
                                        has_batch_dim=has_batch_dim)  # (N, B, T, C)
        if (has_batch_dim and scaled.dim() == 4 and directions.dim() == 2
                and directions.shape[0] == scaled.shape[1] and not isinstance(batch_slice, int)):
            directions = directions.unsqueeze(-2)  # one token per row: (B, C) -> (B, 1, C), for every position
        try:
            return (scaled * directions.to(scaled.dtype)).sum(dim=-1)
        except RuntimeError:
            raise InvalidValueError(f"logit_attrs: tokens of shape {tuple(directions.shape[:-1])} do not fit a stack "
                                    f"of shape {tuple(scaled.shape[:-1])}") from None

    def to(self, device: str | torch.device) -> "ActivationCache":
        return ActivationCache({k: v.to(device) for k, v in self.cache_dict.items()}, self.n_layer,
                               names=self._names, has_batch_dim=self.has_batch_dim, model=self.model)

    def __repr__(self) -> str:
        return f"ActivationCache({len(self)} activations, e.g. {list(self.cache_dict)[:3]})"
