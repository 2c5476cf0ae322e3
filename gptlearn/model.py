"""GPT-2: embeddings, a stack of pre-LayerNorm blocks, a final LayerNorm and a tied unembedding
(book chapters 2 and 6).

Legend: B batch, T tokens, C n_embd, V vocab, L layers.
Parameter and module names are Hugging Face's (``wte wpe ln_1 attn.c_attn attn.c_proj ln_2 mlp.c_fc
mlp.c_proj ln_f lm_head``), with ``blocks`` for HF's ``transformer.h``, so loading GPT-2's weights is a
few renames and transposes (see :mod:`gptlearn.pretrained`).

Every layer here is a plain PyTorch one, and this file imports nothing above it. Faster layers come from
outside, by name, as Hugging Face's ``attn_implementation`` does: ``GPT(config)`` runs the implementation
``"fast"`` that the speed wing, :mod:`gptlearn.fast`, registers (it swaps in faster versions of some layers:
same parameters, same numbers within float rounding), ``GPT(config, fast=False)`` runs ``"plain"``, and
``model.implementation`` says which one runs. ``generate`` runs the decoding loop that
:mod:`gptlearn.generate` registers (:func:`register_decoder`).
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .attention import CausalSelfAttention, Packing
from .config import GPTConfig
from .devices import resolve_device
from .checks import check_bool, check_int, check_texts, describe
from .errors import InvalidTypeError, InvalidValueError, NoTokenizerError, TokenIdError
from .hooks import HookedRootModule, HookPoint
from .kv_cache import KVCache
from .names import OFFLINE_MODEL
from .pretrained import PretrainedMixin, PretrainedNotAvailableError
from .tokenizers import Tokenizer

__all__ = ["LayerNorm", "MLP", "Block", "LMHead", "GPT", "sinusoidal_positions", "from_pretrained", "load_model",
           "check_token_ids", "check_targets", "IMPLEMENTATIONS", "register_implementation", "register_decoder"]

# What the package plugs in from outside this file. IMPLEMENTATIONS: name -> a function that makes a built
# model run that way, in place ("fast" is gptlearn.fast's; "plain" changes nothing). _DECODERS: the loop behind
# generate() and generate_stream() (gptlearn.generate's).
IMPLEMENTATIONS: dict[str, Callable[[nn.Module], nn.Module]] = {"plain": lambda model: model}
_DECODERS: dict[str, Callable[..., Any]] = {}


def register_implementation(name: str, apply: Callable[[nn.Module], nn.Module]) -> None:
    """Let ``GPT(config, implementation=name)`` run ``apply(model)`` on the built model (in place)."""
    IMPLEMENTATIONS[name] = apply


def register_decoder(generate: Callable[..., Any], generate_stream: Callable[..., Any]) -> None:
    """The functions ``model.generate(...)`` and ``model.generate_stream(...)`` call, with the model first."""
    _DECODERS.update(generate=generate, generate_stream=generate_stream)


def check_token_ids(idx: torch.Tensor, vocab_size: int, name: str = "idx") -> None:
    """Refuse what is not a (B, T) tensor of ids in 0..V-1 with an error that names it, instead of an
    IndexError from deep inside the embedding. On a GPU the range is not checked: that would wait for
    the GPU at every step (the prompt is checked where it enters, in generate and to_tokens)."""
    if (not isinstance(idx, torch.Tensor) or idx.dtype.is_floating_point or idx.dtype.is_complex
            or idx.dtype == torch.bool or idx.dim() != 2):
        what = (f"a {type(idx).__name__}" if not isinstance(idx, torch.Tensor)
                else f"a {idx.dtype} tensor of shape {tuple(idx.shape)}")
        raise InvalidTypeError(f"{name} must be token ids: the model takes token ids, a (B, T) or (T,) integer "
                               f"tensor, got {what}; turn text into ids with model.to_tokens(text)")
    if idx.device.type == "cpu" and idx.numel():
        lo, hi = torch.aminmax(idx)
        if lo < 0 or hi >= vocab_size:
            bad = int(hi) if hi >= vocab_size else int(lo)
            raise TokenIdError(f"{name} holds token id {bad}, outside this model's vocabulary of {vocab_size} (ids "
                               f"0..{vocab_size - 1}); "
                               "were the ids made by another tokenizer?")


def check_targets(targets: torch.Tensor, shape: torch.Size, vocab_size: int) -> None:
    """Refuse loss targets that are not an integer tensor of ``shape``'s size holding ids in 0..V-1 or
    -100 (the ignored position, as in ``F.cross_entropy``); checked on the CPU only, as the ids are."""
    if (not isinstance(targets, torch.Tensor) or targets.dtype.is_floating_point or targets.dtype.is_complex
            or targets.dtype == torch.bool):
        what = f"a {targets.dtype} tensor" if isinstance(targets, torch.Tensor) else describe(targets)
        raise InvalidTypeError(f"targets must be an integer tensor of token ids, got {what}")
    if targets.numel() != math.prod(shape):
        raise InvalidValueError(f"targets must have the shape of the ids {tuple(shape)}, got {tuple(targets.shape)}")
    if targets.device.type == "cpu" and targets.numel():
        bad = targets[(targets != -100) & ((targets < 0) | (targets >= vocab_size))]
        if bad.numel():
            raise TokenIdError(f"targets holds {int(bad[0])}; targets must be token ids in 0..{vocab_size - 1}, "
                               "or -100 for a position to ignore")


def sinusoidal_positions(n_positions: int, n_embd: int) -> torch.Tensor:
    """The Transformer paper's sine/cosine position codes, (n_positions, C), each entry in [-1, 1].

    Used (scaled) as a starting point for GPT-2's *learned* position embeddings (``wpe``): position
    p + k is a fixed rotation of position p, so a head can learn "attend to the previous token" quickly.
    """
    pos = torch.arange(n_positions, dtype=torch.float32).unsqueeze(1)  # (n_positions, 1)
    freq = torch.exp(torch.arange(0, n_embd, 2, dtype=torch.float32) * (-math.log(10000.0) / n_embd))  # (C/2,)
    pe = torch.zeros(n_positions, n_embd)
    pe[:, 0::2] = torch.sin(pos * freq)  # (n_positions, C/2)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : n_embd // 2]  # (n_positions, C/2)
    return pe


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` with TransformerLens' ``hook_scale``: each token's spread, sqrt(var + eps), before
    the division. Written out only while a hook listens to it; otherwise the fused ``F.layer_norm``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config.n_embd, eps=config.layer_norm_epsilon)
        self.hook_scale = HookPoint()  # (B, T, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.hook_scale.active:
            return super().forward(x)
        x = x - x.mean(dim=-1, keepdim=True)  # (B, T, C), centred
        scale = self.hook_scale((x.pow(2).mean(dim=-1, keepdim=True) + self.eps).sqrt())  # (B, T, 1)
        return x / scale * self.weight + self.bias


class MLP(nn.Module):
    """Position-wise feed-forward: (B, T, C) -> (B, T, 4C) -> GELU -> (B, T, C)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.d_mlp)
        self.gelu = nn.GELU(approximate="none" if config.activation_function == "gelu" else "tanh")
        self.c_proj = nn.Linear(config.d_mlp, config.n_embd)
        self.dropout = nn.Dropout(config.resid_pdrop)
        self.hook_pre = HookPoint()  # (B, T, 4C)
        self.hook_post = HookPoint()  # (B, T, 4C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hook_pre(self.c_fc(x))  # (B, T, C) -> (B, T, 4C)
        h = self.hook_post(self.gelu(h))
        return self.dropout(self.c_proj(h))  # (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    """x + attn(ln_1(x)), then + mlp(ln_2(x)): each sublayer reads the residual stream and adds to it."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config)
        self.mlp = MLP(config)
        self.hook_resid_pre = HookPoint()  # (B, T, C)
        self.hook_attn_out = HookPoint()  # (B, T, C)
        self.hook_resid_mid = HookPoint()  # (B, T, C)
        self.hook_mlp_out = HookPoint()  # (B, T, C)
        self.hook_resid_post = HookPoint()  # (B, T, C)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None, layer: int = 0,
                packing: Packing | None = None) -> torch.Tensor:
        """(B, T, C) -> (B, T, C); with ``packing`` the real tokens only, (N, C) -> (N, C)."""
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(self.ln_1(x), kv_cache, layer, packing)))
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(self.ln_2(x))))


class LMHead(nn.Linear):
    """The unembedding, (..., C) -> next-token logits (..., V), and the loss on top of it."""

    def loss(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy (nats) of ``targets`` (B, T) given the final stream x (B, T, C);
        -100 marks a target to ignore."""
        logits = self(x)  # (B, T, C) -> (B, T, V)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-100)


class GPT(HookedRootModule, PretrainedMixin):
    """GPT-2.

    ``implementation`` names how the built model runs: ``"fast"`` (the default; :func:`gptlearn.fast.enable`)
    or ``"plain"`` (the layers below, also ``fast=False``); ``model.implementation`` says which one it runs.
    ``run_with_cache`` and the hooks come from :class:`~gptlearn.hooks.HookedRootModule`,
    ``from_pretrained``/``save_pretrained`` from :class:`~gptlearn.pretrained.PretrainedMixin`; text enters
    through ``to_tokens`` and ``generate`` samples (:mod:`gptlearn.generate`).

    >>> model = GPT(GPTConfig.from_preset("tiny"))
    >>> model(torch.zeros(2, 5, dtype=torch.long)).shape   # (B, T, V)
    torch.Size([2, 5, 50257])
    """

    def __init__(self, config: GPTConfig, *, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, fast: bool = True, implementation: str | None = None) -> None:
        super().__init__()
        implementation = implementation or ("fast" if fast else "plain")
        if implementation not in IMPLEMENTATIONS:
            raise InvalidValueError(f"implementation must be one of {', '.join(map(repr, IMPLEMENTATIONS))}, got "
                                    f"{implementation!r}")
        config.check_fits()  # an absurd size is refused here, not after minutes of allocation
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embeddings (V, C)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)  # learned positions (n_positions, C)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = LayerNorm(config)
        self.lm_head = LMHead(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: the unembedding is the embedding, transposed
        self.hook_embed = HookPoint()  # (B, T, C)
        self.hook_pos_embed = HookPoint()  # (B, T, C)
        self.hook_ln_final = HookPoint()  # (B, T, C)
        self.name_hook_points()
        self._tokenizer = None
        self.name_or_path: str | None = None
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/sqrt(2L)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=config.initializer_range / math.sqrt(2 * config.n_layer))
        if device is not None or dtype is not None:
            self.to(device=resolve_device(device) if device is not None else None, dtype=dtype)
        self.implementation = implementation
        IMPLEMENTATIONS[implementation](self)  # "fast": the speed wing swaps in faster layers (gptlearn/fast)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    # ---- the forward pass --------------------------------------------------------------------
    def hidden_states(self, idx: torch.Tensor, *, layer: int = -1, kv_cache: KVCache | None = None,
                      lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The residual stream after block ``layer`` (B, T, C); ``layer=-1`` is after ``ln_f``,
        i.e. Hugging Face's ``last_hidden_state``. Stops early, never computes logits.

        ``lengths`` (B,) says that row b holds ``lengths[b]`` real tokens followed by padding (as
        :class:`~gptlearn.Embedder` batches sentences). The position-wise layers then run on the real
        tokens only, packed into one (N, C) matrix; attention unpacks them to (B, T, ...) around its
        own step. Real tokens get the same values as without ``lengths`` (a causal model's tokens
        never read the padding after them); the padding positions come back as zeros. Hooks on the
        position-wise points (``resid_*``, ``attn_out``, ``mlp_*``, ``ln_final``) then see (N, ...)
        tensors; the attention hooks keep their (B, ...) shapes.
        """
        check_token_ids(idx, self.config.vocab_size)
        check_int(layer, "layer", low=-1, high=self.config.n_layer - 1)
        if kv_cache is not None and not isinstance(kv_cache, KVCache):
            raise InvalidTypeError(f"kv_cache must be a KVCache (KVCache.for_model(model, B)) or None, got "
                                   f"{describe(kv_cache)}")
        B, T = idx.shape
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > self.config.n_positions:
            raise InvalidValueError(
                f"sequence of {start + T} tokens is longer than the context ({self.config.n_positions}); "
                "crop it (generate() does this for you)"
            )
        packing = None
        if lengths is not None:
            if kv_cache is not None:
                raise InvalidValueError("lengths (padded rows) and a KV cache cannot be combined")
            packing = Packing(lengths, T, device=idx.device)
            if packing.B != B:
                raise InvalidValueError(f"lengths has {packing.B} entries for a batch of {B} rows")
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        pos_emb = self.wpe(pos).expand(B, T, -1)  # (T, C) -> (B, T, C), a view: no copy
        x = self.drop(self.hook_embed(self.wte(idx)) + self.hook_pos_embed(pos_emb))  # (B, T, C)
        if packing is not None:
            x = packing.pack(x)  # (B, T, C) -> (N, C)
        last = self.config.n_layer - 1 if layer == -1 else layer
        for i, block in enumerate(self.blocks[: last + 1]):
            x = block(x, kv_cache, i, packing)
        if kv_cache is not None:
            kv_cache.advance(T)
        if layer == -1:
            x = self.hook_ln_final(self.ln_f(x))
        return packing.unpack(x) if packing is not None else x  # (N, C) -> (B, T, C)

    def forward(self, idx: torch.Tensor, kv_cache: KVCache | None = None, *,
                targets: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids (B, T) -> next-token logits (B, T, V) for every position; with ``targets`` (B, T)
        the mean cross-entropy instead (as :meth:`loss`; -100 marks targets to ignore)."""
        if isinstance(idx, torch.Tensor) and idx.dim() == 1:
            idx = idx.unsqueeze(0)
        x = self.hidden_states(idx, kv_cache=kv_cache)  # (B, T, C)
        if targets is not None:
            check_targets(targets, idx.shape, self.config.vocab_size)
            return self.lm_head.loss(x, targets.reshape(idx.shape))
        return self.lm_head(x)  # (B, T, C) -> (B, T, V)

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy (nats) of ``targets`` (B, T) given ``idx`` (B, T)."""
        return self(idx, targets=targets)

    # ---- directions in the residual stream (book chapter "Reading the residual stream") ---------
    def _token_ids(self, tokens, what: str) -> torch.Tensor:
        """A string (one token), an id, or a tensor/list of ids -> a long tensor of ids on the model's device."""
        if isinstance(tokens, str):
            ids = self.to_tokens(tokens)[0]
            if ids.numel() != 1:
                raise InvalidValueError(f"{what}: {tokens!r} is {ids.numel()} tokens, not one; pass one token "
                                        f"(see model.to_str_tokens({tokens!r}))")
            tokens = ids[0]
        ids = torch.as_tensor(tokens, device=self.device)
        if ids.is_floating_point() or ids.dtype == torch.bool:
            raise InvalidTypeError(f"{what} takes token ids (ints) or one token as a string, got {ids.dtype}")
        check_token_ids(ids.reshape(1, -1), self.config.vocab_size)
        return ids.long()

    def tokens_to_residual_directions(self, tokens) -> torch.Tensor:
        """The direction in the final residual stream that reads out each token's logit: (..., C).

        With ``x`` the stream centred and divided by ``ln_f``'s scale, ``logit[t] = x @ (gamma * W_U[:, t])
        + beta @ W_U[:, t]``: this returns ``gamma * W_U[:, t]`` (``ln_f``'s weight folded in, as
        TransformerLens' ``W_U`` is after ``fold_ln``); :meth:`ln_final_bias_logits` is the second term.
        ``tokens``: one token as a string, an id (-> (C,)), or a tensor of ids (-> (..., C)).
        """
        ids = self._token_ids(tokens, "tokens_to_residual_directions")
        W_U = self.lm_head.weight.detach()  # (V, C): row t unembeds token t
        return W_U[ids] * self.ln_f.weight.detach()  # (..., C)

    def ln_final_bias_logits(self, tokens) -> torch.Tensor:
        """What ``ln_f``'s bias adds to each token's logit, ``beta @ W_U[:, t]``: the same for every input. (...)"""
        ids = self._token_ids(tokens, "ln_final_bias_logits")
        return self.lm_head.weight.detach()[ids] @ self.ln_f.bias.detach()  # (..., C) @ (C,) -> (...)

    # ---- sizes, device, tokenizer -------------------------------------------------------------
    def num_parameters(self, *, exclude_embeddings: bool = False) -> int:
        """Parameters counted once (the tied lm_head is the token embedding). gpt2: 124,439,808."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.wte.weight.numel() + self.wpe.weight.numel()
        return n

    @property
    def device(self) -> torch.device:
        """Where the weights live."""
        return self.wte.weight.device

    @property
    def tokenizer(self):
        """The tokenizer this model was trained with (GPT-2's BPE unless its folder carried another)."""
        if self._tokenizer is None:
            if self.config.vocab_size != 50257:
                raise NoTokenizerError(
                    f"this model has a vocabulary of {self.config.vocab_size} tokens and no tokenizer attached (its "
                    "folder has no tokenizer files); set model.tokenizer = ... (GPT-2's BPE only fits vocab_size 50257)"
                )

            self._tokenizer = Tokenizer.gpt2()
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tok) -> None:
        if isinstance(getattr(tok, "vocab_size", None), int) and tok.vocab_size > self.config.vocab_size:
            raise InvalidValueError(f"the tokenizer has {tok.vocab_size} tokens but this model's vocabulary has "
                                    f"{self.config.vocab_size}: its ids would not fit; use the model's own tokenizer")
        self._tokenizer = tok

    def extra_repr(self) -> str:
        c = self.config
        return (f"n_layer={c.n_layer}, n_head={c.n_head}, n_embd={c.n_embd}, params={self.num_parameters():,}, "
                f"implementation={self.implementation!r}")

    # ---- text in and out --------------------------------------------------------------------------
    def to_tokens(self, text: str | Sequence[str], *, prepend_bos: bool = False,
                  return_attention_mask: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Text -> token ids (B, T) on the model's device; one text gives (1, T). No BOS token unless
        ``prepend_bos=True`` (Hugging Face's default; TransformerLens prepends one by default).

        ``prepend_bos=True`` starts every row with ``<|endoftext|>``, as TransformerLens does; the
        default (no BOS) matches Hugging Face's GPT-2 tokenizer and ``generate``.
        ``<|endoftext|>`` written in the text becomes that token, as in TransformerLens and Hugging Face.
        Texts of different lengths are padded on the right with ``<|endoftext|>`` (id 0 for a tokenizer
        without it); ``return_attention_mask=True`` also returns the (B, T) mask, 1 on real tokens and
        0 on padding. Real tokens never see the padding after them (attention is causal), so their
        logits and activations are those of the text alone.
        """
        texts = check_texts(text, "text")
        check_bool(prepend_bos, "prepend_bos")
        check_bool(return_attention_mask, "return_attention_mask")
        if not texts:
            raise InvalidValueError("text must be a str or a non-empty list of str, got an empty list")
        tok = self.tokenizer
        encode = tok.encode
        rows = [encode(t, allowed_special="all") if hasattr(tok, "special_tokens") else encode(t) for t in texts]
        bos = getattr(tok, "eot_token", None)
        if prepend_bos:
            if bos is None:
                raise InvalidValueError("prepend_bos needs an <|endoftext|> token, and this tokenizer has none")
            rows = [[bos, *r] for r in rows]
        T = max(len(r) for r in rows)
        pad = bos if bos is not None else 0
        ids = torch.tensor([r + [pad] * (T - len(r)) for r in rows], dtype=torch.long, device=self.device)
        if not return_attention_mask:
            return ids
        mask = (torch.arange(T) < torch.tensor([len(r) for r in rows])[:, None]).long()  # (B, T)
        return ids, mask.to(self.device)

    def to_str_tokens(self, text: str | torch.Tensor | Sequence[int] | Sequence[str], *,
                      prepend_bos: bool = False) -> list[str] | list[list[str]]:
        """Each token of ``text`` (or of a list/tensor of ids) as its own string; a list of texts gives
        one list per text."""
        if isinstance(text, (list, tuple)) and text and all(isinstance(t, str) for t in text):
            return [self.to_str_tokens(t, prepend_bos=prepend_bos) for t in text]  # type: ignore[misc]
        if isinstance(text, str):
            ids = self.to_tokens(text, prepend_bos=prepend_bos)[0].tolist()
        elif isinstance(text, torch.Tensor):
            ids = text.flatten().tolist()
        else:
            ids = list(text)
        return self.tokenizer.str_tokens(ids)

    def to_string(self, ids: torch.Tensor | Sequence[int]) -> str:
        """Token ids -> text."""
        ids = ids.flatten().tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return self.tokenizer.decode(ids)


# ---- the cache ----------------------------------------------------------------------------------------

    # ---- sampling (the loop is gptlearn.generate's) -----------------------------------------------
    def generate(self, idx, max_new_tokens: int = 32, **kwargs):
        """Sample a continuation; see :func:`gptlearn.generate.generate` for the options."""
        return _DECODERS["generate"](self, idx, max_new_tokens, **kwargs)

    def generate_stream(self, idx, max_new_tokens: int = 32, **kwargs):
        """Yield new tokens one at a time; see :func:`gptlearn.generate.generate_stream`."""
        return _DECODERS["generate_stream"](self, idx, max_new_tokens, **kwargs)


def from_pretrained(name_or_path: str = "gpt2", **kwargs) -> GPT:
    """``GPT.from_pretrained(name_or_path, **kwargs)``: a Hub name, a bundled model (``gptlearn-english``,
    ``gptlearn-mini``) or a local folder."""
    return GPT.from_pretrained(name_or_path, **kwargs)


def load_model(name: str | None = None, *, device: str | torch.device | None = None, verbose: bool = True) -> GPT:
    """The book's entry point: pretrained GPT-2 when its weights are cached or downloadable, else the
    bundled ``gptlearn-english`` (docs/gptlearn-english.md). ``GPTLEARN_MODEL=gpt2|gptlearn-mini|PATH`` (or
    ``name``) forces a choice.
    Prints one line saying which model it chose."""
    choice = name or os.environ.get("GPTLEARN_MODEL")
    if choice:
        model = GPT.from_pretrained(choice, device=device)
        reason = "as requested"
    else:
        try:
            model = GPT.from_pretrained("gpt2", device=device)
            reason = "pretrained GPT-2 weights were found"
        except PretrainedNotAvailableError:
            model = GPT.from_pretrained(OFFLINE_MODEL, device=device)
            reason = "GPT-2's weights are not reachable (offline), so the bundled model is used"
    if verbose:
        c = model.config
        print(f"Using {model.name_or_path} ({model.num_parameters() / 1e6:.1f}M parameters, {c.n_layer} layers x "
              f"{c.n_head} heads, {c.n_embd} wide) on {model.device}: {reason}.")
    return model
