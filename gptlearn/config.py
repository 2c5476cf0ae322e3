"""GPTConfig: the handful of numbers that define a GPT-2 (book chapter 6, "The full GPT-2").

Field names follow Hugging Face's ``GPT2Config`` so a ``config.json`` from the Hub maps onto this
dataclass one to one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["GPTConfig", "PRESETS"]


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
        for name in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}) so each head gets "
                "an equal slice"
            )
        if self.activation_function not in ("gelu_new", "gelu_pytorch_tanh", "gelu"):
            raise ValueError(f"unsupported activation_function {self.activation_function!r}")

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

    # ---- presets and conversion -------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "GPTConfig":
        """One of ``PRESETS`` (``"gpt2"``, ``"gpt2-medium"``, ..., ``"tiny"``), optionally changed."""
        try:
            base = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
        return dataclasses.replace(base, **overrides)

    def replace(self, **changes: Any) -> "GPTConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> "GPTConfig":
        """Build from a Hugging Face ``config.json`` dict; unknown keys are ignored."""
        if d.get("model_type", "gpt2") != "gpt2":
            raise ValueError(f"not a GPT-2 config (model_type={d.get('model_type')!r})")
        for key, supported in _HF_ASSUMED.items():
            if key in d and d[key] != supported:
                raise ValueError(
                    f"this GPT-2 config sets {key}={d[key]!r}, which gptlearn does not implement (it assumes "
                    f"{supported!r}); use transformers.GPT2LMHeadModel for this checkpoint"
                )
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        # older configs name the context n_ctx
        if "n_positions" not in kwargs and "n_ctx" in d:
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
