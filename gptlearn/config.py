"""GPTConfig: the handful of numbers that define a GPT-2 (book chapter 6, "The full GPT-2").

Field names follow Hugging Face's ``GPT2Config`` so a ``config.json`` from the Hub maps onto this
dataclass one to one.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from .checks import Rule, check_rules, is_int, is_number, optional, shown
from .errors import InvalidTypeError, InvalidValueError

__all__ = ["GPTConfig", "PRESETS", "LIMITS"]

ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu")


@dataclass(frozen=True)
class GPTConfig:
    """Shape and regularisation of a GPT-2 model.

    >>> cfg = GPTConfig.from_preset("gpt2")
    >>> cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.d_head
    (12, 12, 768, 64)
    """

    vocab_size: int = 50257
    n_positions: int = 1024  # context length (nanoGPT's block_size)
    n_embd: int = 768  # C, width of the residual stream
    n_layer: int = 12  # L
    n_head: int = 12  # H
    n_inner: int | None = None  # MLP width; None means 4 * n_embd
    activation_function: str = "gelu_new"  # GELU with the tanh approximation
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    bos_token_id: int = 50256
    eos_token_id: int = 50256

    def __post_init__(self) -> None:
        check_rules(self, _RULES, prefix="GPTConfig.")  # every field: a config.json or --config smuggles in none
        if self.n_embd % self.n_head:
            raise InvalidValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}) so each head gets "
                "an equal slice"
            )

    @property
    def d_head(self) -> int:
        """Width of one attention head (hs)."""
        return self.n_embd // self.n_head

    @property
    def d_mlp(self) -> int:
        """Width of the MLP's hidden layer (4 * n_embd for every GPT-2)."""
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    # ---- sizes, from the numbers alone (nothing is allocated) ---------------------------------
    def num_parameters(self) -> int:
        """The parameters a GPT of this shape has, counted once (lm_head is tied to wte), as
        ``GPT(config).num_parameters()`` would count them without building the model.

        >>> GPTConfig.from_preset("gpt2").num_parameters()
        124439808
        """
        C, F = self.n_embd, self.d_mlp
        block = 2 * 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + (C * F + F) + (F * C + C)  # 2 LayerNorms, attn, MLP
        return self.vocab_size * C + self.n_positions * C + self.n_layer * block + 2 * C  # + wte, wpe, ln_f

    def estimate_bytes(self, *, batch_size: int = 0, seq_len: int | None = None, training: bool = False,
                       bytes_per_value: int = 4, activation_bytes: int | None = None) -> int:
        """About how many bytes a GPT of this shape needs, a lower bound to check before allocating.

        The weights (``bytes_per_value`` each; training adds their gradients and AdamW's two moments: 4
        values a parameter), plus, for a batch of ``batch_size`` rows of ``seq_len`` tokens (default the
        context), the activations: in training the tensors each layer keeps for the backward pass
        (8 C + 2 d_mlp values a token: the inputs and outputs of its LayerNorms, q, k, v, the attention's
        output, the MLP's hidden layer before and after the GELU); in inference the KV cache (2 C a token
        and layer) and one layer's working tensors. ``activation_bytes`` defaults to ``bytes_per_value``
        (2 under bf16 autocast). Python integers: absurd shapes give huge numbers, never an overflow.

        >>> GPTConfig.from_preset("gpt2").estimate_bytes() / 1e6            # fp32 weights
        497.759232
        >>> GPTConfig.from_preset("gpt2").estimate_bytes(training=True, batch_size=8) / 1e9
        6.873206784
        """
        T = self.n_positions if seq_len is None else seq_len
        tokens = batch_size * T
        C, F, L = self.n_embd, self.d_mlp, self.n_layer
        if training:
            values = 8 * C + 2 * F  # a token, a layer: kept for the backward pass
            activations = tokens * (L * values + 2 * C)  # + the embeddings' sum and the final LayerNorm
        else:
            activations = tokens * (2 * C * L + 4 * C + F)  # KV cache + one layer's working set
        weights = self.num_parameters() * bytes_per_value * (4 if training else 1)
        return weights + activations * (bytes_per_value if activation_bytes is None else activation_bytes)

    def estimate_flops(self, *, batch_size: int = 1, seq_len: int | None = None, training: bool = False,
                       logits: bool = True) -> int:
        """The floating-point operations of the matrix products in one pass over ``batch_size`` rows of
        ``seq_len`` tokens (default the context): what a time estimate divides by a device's speed.

        A product of an (m, k) and a (k, n) matrix is 2 m k n operations. A token, a layer: the attention's
        three projections and its output (8 C² in all), the MLP's two layers (4 C d_mlp); a row, a layer:
        the scores q·k and their weighted sum of v over the full T × T square (4 T² C, as the kernels
        compute it, masked half included); a token: the unembedding (2 C V, left out with ``logits=False``,
        as when only hidden states are pooled). Training adds the backward pass, twice the forward's (the
        gradients of each product's input and of its weight): 3 × in all, which is nanoGPT's and PaLM's
        6 N + 12 L T C a token. LayerNorms, GELUs, softmax and AdamW are left out: a lower bound.

        >>> GPTConfig.from_preset("gpt2").estimate_flops(training=True) / 1024 / 1e9   # GFLOP a trained token
        0.8544384
        """
        T = self.n_positions if seq_len is None else seq_len
        C, F, L = self.n_embd, self.d_mlp, self.n_layer
        per_token = L * 2 * (4 * C * C + 2 * C * F) + (2 * C * self.vocab_size if logits else 0)
        per_row = L * 4 * T * T * C  # (B, H, T, hs) @ (B, H, hs, T) and (B, H, T, T) @ (B, H, T, hs)
        forward = batch_size * (T * per_token + per_row)
        return 3 * forward if training else forward

    def check_fits(self, *, batch_size: int = 0, block_size: int | None = None, training: bool = False) -> None:
        """Refuse (:class:`~gptlearn.errors.InvalidValueError`) a model or batch whose :meth:`estimate_bytes`
        exceeds this machine's memory, instead of a MemoryError or minutes of allocation later."""
        need = self.estimate_bytes(batch_size=batch_size, seq_len=block_size, training=training)
        have = physical_memory()
        if have is None or need <= have:
            return
        what = f"training it on batches of {batch_size} x {block_size or self.n_positions} tokens" if batch_size else (
            "its weights")
        raise InvalidValueError(
            f"a GPT with n_layer={self.n_layer}, n_embd={self.n_embd}, vocab_size={self.vocab_size} "
            f"({self.num_parameters():,} parameters) needs at least {gib(need)} for {what}, and this machine "
            f"has {gib(have)}; use a smaller model or batch")

    # ---- presets and conversion -------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "GPTConfig":
        """One of ``PRESETS`` (``"gpt2"``, ``"gpt2-medium"``, ..., ``"tiny"``), optionally changed."""
        try:
            base = PRESETS[name]
        except (KeyError, TypeError):
            raise InvalidValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
        return base.replace(**overrides)

    def replace(self, **changes: Any) -> "GPTConfig":
        """A copy with ``changes``, checked like a new config."""
        unknown = sorted(set(changes) - set(self.__dataclass_fields__))
        if unknown:
            raise InvalidTypeError(f"unknown GPTConfig field(s) {unknown}; the fields are "
                                   f"{', '.join(self.__dataclass_fields__)}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> "GPTConfig":
        """Build from a Hugging Face ``config.json`` dict; unknown keys are ignored, every field is checked."""
        if not isinstance(d, dict):
            raise InvalidValueError(f"a GPT-2 config is a JSON object of fields, got {type(d).__name__}")
        if d.get("model_type", "gpt2") != "gpt2":
            raise InvalidValueError(f"not a GPT-2 config (model_type={shown(d.get('model_type'))})")
        for key, supported in _HF_ASSUMED.items():
            if key in d and d[key] != supported:
                raise InvalidValueError(
                    f"this GPT-2 config sets {key}={shown(d[key])}, which gptlearn does not implement (it assumes "
                    f"{supported!r}); use transformers.GPT2LMHeadModel for this checkpoint"
                )
        kwargs = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        # older configs name the context n_ctx
        if "n_positions" not in kwargs and "n_ctx" in d:
            if not is_int(d["n_ctx"]) or d["n_ctx"] <= 0:
                raise InvalidValueError(f"n_ctx (the context) must be a positive integer, got {shown(d['n_ctx'])}")
            kwargs["n_positions"] = d["n_ctx"]
        return cls(**kwargs)

    def to_hf_dict(self) -> dict[str, Any]:
        """A ``config.json`` dict that ``transformers.GPT2Config`` reads unchanged."""
        d = dataclasses.asdict(self)
        d.update(
            model_type="gpt2",
            architectures=["GPT2LMHeadModel"],
            n_ctx=self.n_positions,
            scale_attn_weights=True,
            tie_word_embeddings=True,
            use_cache=True,
        )
        return d


def physical_memory() -> int | None:
    """Bytes of memory this machine has, or None where the platform does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def gib(n: int) -> str:
    """A byte count as GiB for a message; absurd counts (Python integers past a float's range) as a power of ten."""
    return f"{n / 2**30:,.1f} GiB" if n < 2**30 * 1e6 else f"about 10^{len(str(n // 2**30))} GiB"


# the largest shape gptlearn builds, field by field: far above every released GPT (GPT-2 XL: 1,024 positions,
# 48 layers, 25 heads, 1,600 wide, 50,257 tokens), far below what would take minutes to build before failing
LIMITS: dict[str, tuple[int, str]] = {
    "vocab_size": (1 << 21, "the largest tokenizers in use have about 256k tokens"),
    "n_positions": (1 << 17, "one head's attention scores over the context are n_positions² numbers: 64 GiB at this"),
    "n_embd": (1 << 16, "the widest published transformers are about 25k wide"),
    "n_layer": (1024, "the deepest published GPTs have about 100 layers"),
    "n_head": (1024, "the published GPTs have at most about 128 heads"),
    "n_inner": (1 << 18, "4 × the widest n_embd"),
}

# what each field may hold (JSON can put anything anywhere: a string, null, a list, NaN)
_RULES: tuple[Rule, ...] = (
    *(((name,), lambda v, hi=hi: is_int(v, 1, hi), f"a positive integer, at most {hi:,} ({why})")
      for name, (hi, why) in LIMITS.items() if name != "n_inner"),
    (("n_inner",), optional(lambda v: is_int(v, 1, LIMITS["n_inner"][0])),
     f"None or a positive integer, at most {LIMITS['n_inner'][0]:,} ({LIMITS['n_inner'][1]})"),
    (("activation_function",), lambda v: isinstance(v, str) and v in ACTIVATIONS, f"one of {', '.join(ACTIVATIONS)}"),
    (("resid_pdrop", "embd_pdrop", "attn_pdrop"), lambda v: is_number(v, 0, 1), "a number from 0 to 1"),
    (("layer_norm_epsilon",), lambda v: is_number(v) and v > 0, "a positive number"),
    (("initializer_range",), lambda v: is_number(v, 0), "a number >= 0"),
    (("bos_token_id", "eos_token_id"), optional(lambda v: is_int(v, 0)), "None or an integer >= 0"),
)

# GPT2Config switches that change the computation; every released GPT-2 uses these values
_HF_ASSUMED: dict[str, Any] = {
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "add_cross_attention": False,
    "tie_word_embeddings": True,
}

PRESETS: dict[str, GPTConfig] = {
    # the four released GPT-2 sizes
    "gpt2": GPTConfig(n_layer=12, n_head=12, n_embd=768),  # 124M
    "gpt2-medium": GPTConfig(n_layer=24, n_head=16, n_embd=1024),  # 355M
    "gpt2-large": GPTConfig(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": GPTConfig(n_layer=48, n_head=25, n_embd=1600),  # 1558M
    # teaching sizes: train in seconds to minutes on a laptop CPU
    "tiny": GPTConfig(n_layer=2, n_head=4, n_embd=64, n_positions=128),
    "mini": GPTConfig(n_layer=4, n_head=4, n_embd=128, n_positions=256),
    "small": GPTConfig(n_layer=6, n_head=6, n_embd=384, n_positions=256),
}
