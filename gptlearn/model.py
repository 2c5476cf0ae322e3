"""GPT-2: embeddings, a stack of pre-LayerNorm blocks, a final LayerNorm and a tied unembedding
(book chapters 2 and 6).

Legend: B batch, T tokens, C n_embd, H n_head, hs head size, V vocab, L layers.
Parameter and module names are Hugging Face's (``wte wpe ln_1 attn.c_attn attn.c_proj ln_2 mlp.c_fc
mlp.c_proj ln_f lm_head``), with ``blocks`` for HF's ``transformer.h``, so loading GPT-2's weights is a
few renames and transposes (see :mod:`gptlearn.pretrained`).
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .attention import CausalSelfAttention, Packing
from .config import GPTConfig
from .device import autocast_enabled, empty_reused
from .hooks import ActivationCache, HookPoint, short_name
from .linear import Linear, linear

if TYPE_CHECKING:  # pragma: no cover
    from .generate import KVCache

__all__ = ["MLP", "Block", "GPT", "Embedding", "gelu", "lm_loss", "unembed", "unembed_loss"]


def gelu(x: torch.Tensor, approximate: str = "tanh") -> torch.Tensor:
    """``F.gelu(x, approximate=approximate)``. GPT-2's tanh form, on the CPU without autograd, is computed
    as x·σ(2z) with z = √(2/π)(x + 0.044715x³), the same curve since ½(1 + tanh z) = σ(2z) (within 5e-7):
    ``torch.tanh`` is slow in some CPU builds, and this took 2.9 ms instead of 5.7 for (1024, 3072).
    Below 16,384 values (a decoding step's few rows) ``F.gelu``'s one call is the faster (13 vs 18 us)."""
    if (approximate != "tanh" or x.device.type != "cpu" or x.dtype != torch.float32 or x.numel() < 16384
            or (torch.is_grad_enabled() and x.requires_grad)):
        return F.gelu(x, approximate=approximate)
    c = 2 * math.sqrt(2 / math.pi)
    s = torch.addcmul(x.new_tensor(c), x, x, value=c * 0.044715)  # 2√(2/π)(1 + 0.044715x²)
    return s.mul_(x).sigmoid_().mul_(x)  # σ(2z) · x, in place


class MLP(nn.Module):
    """Position-wise feed-forward: (B, T, C) -> (B, T, 4C) -> GELU -> (B, T, C)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = Linear(config.n_embd, config.d_mlp)
        self.c_proj = Linear(config.d_mlp, config.n_embd)
        self.dropout = nn.Dropout(config.resid_pdrop)
        self.approximate = "none" if config.activation_function == "gelu" else "tanh"
        self.hook_pre = HookPoint()  # (B, T, 4C)
        self.hook_post = HookPoint()  # (B, T, 4C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hook_pre(self.c_fc(x))  # (B, T, C) -> (B, T, 4C)
        h = self.hook_post(gelu(h, self.approximate))
        return self.dropout(self.c_proj(h))  # (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    """x + attn(ln_1(x)), then + mlp(ln_2(x)): each sublayer reads the residual stream and adds to it."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)
        self.hook_resid_pre = HookPoint()  # (B, T, C)
        self.hook_attn_out = HookPoint()  # (B, T, C)
        self.hook_resid_mid = HookPoint()  # (B, T, C)
        self.hook_mlp_out = HookPoint()  # (B, T, C)
        self.hook_resid_post = HookPoint()  # (B, T, C)

    def forward(self, x: torch.Tensor, kv_cache: "KVCache | None" = None, layer: int = 0,
                packing: "Packing | None" = None) -> torch.Tensor:
        """(B, T, C) -> (B, T, C); with ``packing`` the real tokens only, (N, C) -> (N, C)."""
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(self.ln_1(x), kv_cache, layer, packing)))
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(self.ln_2(x))))


def unembed(x: torch.Tensor, weight: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Logits ``x @ weight.T``: (..., C) with weight (V, C) -> (..., V), the same numbers as ``F.linear``.

    On the CPU a wide vocabulary is multiplied in blocks of ``chunk`` rows of ``weight`` and the blocks
    concatenated: MKL writes one (rows, 50257) output slowly, and blocks of 4,096 measured 1.16-1.27x
    faster at 512-1,024 rows (1.3x at 8 rows; backward unchanged; see bench/README.md). Without
    autograd the blocks are copied into one preallocated output, so memory peaks at the logits plus
    one block; that output reuses the memory of earlier logits nobody holds any more
    (:func:`gptlearn.device.empty_reused`: fresh pages for 206 MB cost 55-90 ms). Fewer than 8 rows
    take :func:`gptlearn.linear.linear` (the plain product, or while decoding the row-split one); a
    small vocabulary or a GPU the plain product.
    """
    V, C = weight.shape
    if x.numel() < 8 * C:
        return linear(x, weight)
    if x.device.type != "cpu" or V <= chunk:
        return F.linear(x, weight)
    blocks = weight.split(chunk)  # views, V/chunk x (chunk, C)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return torch.cat([F.linear(x, w) for w in blocks], dim=-1)  # V/chunk x (..., chunk) -> (..., V)
    out = empty_reused((*x.shape[:-1], V), x.dtype)  # no autograd: fill one output, one block at a time
    start = 0
    for w in blocks:
        out[..., start:start + w.size(0)] = F.linear(x, w)  # (..., chunk)
        start += w.size(0)
    return out


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean next-token cross-entropy in nats. logits (B, T, V), targets (B, T) -> scalar."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=ignore_index)


class _EmbeddingLookup(torch.autograd.Function):
    """``F.embedding(idx, weight)`` whose weight gradient (V, C) is made in reused CPU memory."""

    @staticmethod
    def forward(ctx, idx, weight):
        ctx.save_for_backward(idx)
        ctx.weight_shape = weight.shape
        return F.embedding(idx, weight)  # (...) -> (..., C)

    @staticmethod
    def backward(ctx, grad):
        idx, = ctx.saved_tensors
        grad_w = empty_reused(ctx.weight_shape, grad.dtype).zero_()  # (V, C)
        grad_w.index_add_(0, idx.reshape(-1), grad.reshape(-1, grad.size(-1)))  # each row: the sum over its uses
        return None, grad_w


class Embedding(nn.Embedding):
    """``nn.Embedding`` (same parameters, state dict, hooks) whose weight gradient on the CPU reuses memory.

    The gradient of a lookup is a (V, C) matrix, zero except the rows of the ids used. ``nn.Embedding``
    makes a new one each backward pass; GPT-2's is 154 MB, and glibc gives every block over 32 MB fresh
    pages from the kernel, so each training step paid ~38,000 page faults to zero it (218 ms of a 2.7 s
    GPT-2 step, profiled on this project's 2-core CPU) and as many again for a new tensor holding its
    sum with the tied unembedding's gradient (106 ms). Here it comes from
    :func:`gptlearn.device.empty_reused`, and as that is a tensor of its own (not a view), autograd
    adds the two gradients in place. Same numbers (sums of the same rows), only the memory differs.
    Only the plain lookup (no ``padding_idx``, ``max_norm`` or sparse gradients) on the CPU with
    autograd takes this path; everything else is ``nn.Embedding``'s.
    """

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if (w.device.type != "cpu" or not (torch.is_grad_enabled() and w.requires_grad) or self.sparse
                or self.padding_idx is not None or self.max_norm is not None or self.scale_grad_by_freq):
            return super().forward(idx)
        return _EmbeddingLookup.apply(idx, w)


class _UnembedCrossEntropy(torch.autograd.Function):
    """``lm_loss(x @ weight.T, targets)`` for x (N, C), weight (V, C), targets (N,), in vocabulary blocks.

    Pass 1 makes each block of logits (N, b), keeps its row maxima and the target logits, and turns it
    into exp(logit - block max) in place; the blocks' sums give log-sum-exp, hence the loss. When a
    gradient is wanted, pass 2 scales each block in place into its share of softmax - one-hot (the
    gradient of the loss with respect to the logits) and immediately multiplies it into the gradients
    of x (N, C) and of weight's rows (b, C). So the logits, the softmax and its gradient share one
    (N, V) allocation made of ~8 MB blocks, each worked on while it is close to the cache, instead of
    the ~7 passes over fresh (N, V) tensors of logits + F.cross_entropy + backward. The gradients are
    made in the forward pass and handed over (scaled) in backward: call backward once.
    """

    @staticmethod
    def forward(ctx, x, weight, targets, ignore_index: int):
        N = x.size(0)
        block = max(1024, min(8192, (1 << 21) // max(N, 1)))  # ~8 MB of fp32 logits per block
        valid = targets != ignore_index  # (N,)
        n_valid = valid.sum()
        t = torch.where(valid, targets, 0)  # (N,) ignored rows point at token 0; their loss is masked
        t_block, t_col = t // block, t % block  # (N,) which block holds each target, and where in it
        rows = torch.arange(N, device=x.device)
        blocks = weight.split(block)  # views, (b, C) each
        want = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        exps, maxes, sums = [], [], []
        t_logit = x.new_zeros(N)  # (N,) the logit of each target
        for i, w in enumerate(blocks):
            logits = F.linear(x, w)  # (N, b)
            t_logit = torch.where(t_block == i, logits[rows, t_col.clamp(max=w.size(0) - 1)], t_logit)
            m = logits.amax(1)  # (N,)
            logits.sub_(m[:, None]).exp_()  # now exp(logit - m), in place
            maxes.append(m)
            sums.append(logits.sum(1))
            if want:
                exps.append(logits)
        M = torch.stack(maxes, 1)  # (N, blocks)
        m = M.amax(1)  # (N,)
        lse = m + torch.log((torch.stack(sums, 1) * torch.exp(M - m[:, None])).sum(1))  # (N,)
        loss = ((lse - t_logit) * valid).sum() / n_valid
        if want:
            grad_x = torch.zeros_like(x) if ctx.needs_input_grad[0] else None  # (N, C)
            grad_w = empty_reused(weight.shape, weight.dtype, weight.device) \
                if ctx.needs_input_grad[1] else None  # (V, C), in reused memory on the CPU (see Embedding)
            row_weight = valid / n_valid  # (N,) d loss / d (per-row loss)
            for i, w in enumerate(blocks):
                p, exps[i] = exps[i], None  # (N, b); dropped from the list as soon as it is used
                p.mul_((torch.exp(M[:, i] - lse) * row_weight)[:, None])  # softmax * row weight
                here = valid & (t_block == i)  # (N,) rows whose target is in this block
                p[rows[here], t_col[here]] -= 1.0 / n_valid  # minus the one-hot
                if grad_x is not None:
                    grad_x.addmm_(p, w)  # (N, b) @ (b, C)
                if grad_w is not None:
                    torch.mm(p.T, x, out=grad_w[i * block:i * block + w.size(0)])  # (b, N) @ (N, C)
            ctx.save_for_backward(grad_x, grad_w)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_w = ctx.saved_tensors
        if not (grad_loss.device.type == "cpu" and float(grad_loss) == 1.0):  # e.g. loss / grad_accum
            grad_x = grad_x * grad_loss if grad_x is not None else None
            if grad_w is not None:  # into reused memory again: a fresh (V, C) costs ~38,000 page faults
                grad_w = torch.mul(grad_w, grad_loss, out=empty_reused(grad_w.shape, grad_w.dtype, grad_w.device))
        return grad_x, grad_w, None, None


def unembed_loss(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                 ignore_index: int = -100) -> torch.Tensor:
    """``lm_loss(unembed(x, weight), targets)`` without holding the logits, the log-softmax and their
    gradient as separate (N, V) tensors: x (..., C), weight (V, C), targets (...) -> scalar.

    fp32 without autocast takes the blocked path of ``_UnembedCrossEntropy``: loss + backward at 512
    rows measured 1.17-1.23x faster than the plain path for GPT-2 124M's head (C=768) and 1.95-2.06x
    for C=128 (1-2 CPU threads; bench/README.md). Other dtypes and autocast take the plain path.
    Without autograd it keeps no logits at all, only one block at a time.
    """
    if x.dtype != torch.float32 or weight.dtype != torch.float32 or autocast_enabled(x.device.type):
        logits = unembed(x, weight).reshape(1, -1, weight.size(0))  # (..., V) -> (1, N, V): any leading shape
        return lm_loss(logits, targets.reshape(1, -1), ignore_index)
    return _UnembedCrossEntropy.apply(x.reshape(-1, x.size(-1)), weight, targets.reshape(-1), ignore_index)


class GPT(nn.Module):
    """GPT-2.

    >>> model = GPT(GPTConfig.from_preset("tiny"))
    >>> model(torch.zeros(2, 5, dtype=torch.long)).shape   # (B, T, V)
    torch.Size([2, 5, 50257])
    """

    def __init__(self, config: GPTConfig, *, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.config = config
        self.wte = Embedding(config.vocab_size, config.n_embd)  # token embeddings (V, C)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)  # learned positions (n_positions, C)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: the unembedding is the embedding, transposed
        self.hook_embed = HookPoint()  # (B, T, C)
        self.hook_pos_embed = HookPoint()  # (B, T, C)
        self.hook_ln_final = HookPoint()  # (B, T, C)
        self._tokenizer = None
        self.name_or_path: str | None = None
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/sqrt(2L)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=config.initializer_range / math.sqrt(2 * config.n_layer))
        if device is not None or dtype is not None:
            from .device import resolve_device

            self.to(device=resolve_device(device) if device is not None else None, dtype=dtype)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    # ---- the forward pass --------------------------------------------------------------------
    def hidden_states(self, idx: torch.Tensor, *, layer: int = -1, kv_cache: "KVCache | None" = None,
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
        B, T = idx.shape
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > self.config.n_positions:
            raise ValueError(
                f"sequence of {start + T} tokens is longer than the context ({self.config.n_positions}); "
                "crop it (generate() does this for you)"
            )
        if layer < -1 or layer >= self.config.n_layer:
            raise ValueError(f"layer must be in -1..{self.config.n_layer - 1}, got {layer}")
        packing = None
        if lengths is not None:
            if kv_cache is not None:
                raise ValueError("lengths (padded rows) and a KV cache cannot be combined")
            packing = Packing(lengths, T, device=idx.device)
            if packing.B != B:
                raise ValueError(f"lengths has {packing.B} entries for a batch of {B} rows")
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

    def forward(self, idx: torch.Tensor, kv_cache: "KVCache | None" = None, *,
                targets: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids (B, T) -> next-token logits (B, T, V) for every position; with ``targets`` (B, T)
        the mean cross-entropy instead (as :meth:`loss`; -100 marks targets to ignore)."""
        if idx.dim() == 1:
            idx = idx.unsqueeze(0)
        x = self.hidden_states(idx, kv_cache=kv_cache)  # (B, T, C)
        if targets is not None:  # the training path: the logits are never materialised whole
            return unembed_loss(x, self.lm_head.weight, targets.view(idx.shape))
        return unembed(x, self.lm_head.weight)  # (B, T, C) -> (B, T, V)

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy (nats) of ``targets`` (B, T) given ``idx`` (B, T): the same
        number as ``lm_loss(model(idx), targets)``, faster and in less memory."""
        return self(idx, targets=targets)

    # ---- inspection ---------------------------------------------------------------------------
    def hook_points(self) -> dict[str, HookPoint]:
        return {m.name: m for m in self.modules() if isinstance(m, HookPoint)}  # type: ignore[misc]

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Iterable[tuple[str | Callable[[str], bool], Callable]]) -> Iterator["GPT"]:
        """Attach ``(name_or_filter, fn)`` hooks for the duration of a ``with`` block; always removed."""
        points = self.hook_points()
        handles = []
        try:
            for name, fn in fwd_hooks:
                matched = [p for n, p in points.items() if (name(n) if callable(name) else n == name)]
                if not matched:
                    raise KeyError(f"no hook point named {name!r}; see model.hook_points()")
                handles += [p.add_hook(fn) for p in matched]
            yield self
        finally:
            for h in handles:
                h.remove()

    def run_with_hooks(self, idx: torch.Tensor, fwd_hooks: Iterable) -> torch.Tensor:
        with self.hooks(fwd_hooks):
            return self(idx)

    def run_with_cache(self, idx: torch.Tensor | str, *,
                       names_filter: Callable[[str], bool] | Sequence[str] | None = None,
                       device: str | torch.device | None = None) -> tuple[torch.Tensor, ActivationCache]:
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
            wanted = set(names_filter)
            keep = lambda name: name in wanted or short_name(name) in wanted
        store: dict[str, torch.Tensor] = {}

        def save(t: torch.Tensor, hook: HookPoint) -> None:
            store[hook.name] = t.detach() if device is None else t.detach().to(device)

        with torch.no_grad(), self.hooks([(keep, save)]):
            logits = self(idx)
        return logits, ActivationCache(store, self.config.n_layer)

    def num_parameters(self, *, exclude_embeddings: bool = False) -> int:
        """Parameters counted once (the tied lm_head is the token embedding). gpt2: 124,439,808."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.wte.weight.numel() + self.wpe.weight.numel()
        return n

    @property
    def device(self) -> torch.device:
        return self.wte.weight.device

    # ---- tokenizer ----------------------------------------------------------------------------
    @property
    def tokenizer(self):
        """The tokenizer this model was trained with (GPT-2's BPE unless its folder carried another)."""
        if self._tokenizer is None:
            if self.config.vocab_size != 50257:
                raise AttributeError(
                    f"this model has a vocabulary of {self.config.vocab_size} tokens and no tokenizer attached; "
                    "set model.tokenizer = ... (GPT-2's BPE only fits vocab_size 50257)"
                )
            from .tokenizers import Tokenizer

            self._tokenizer = Tokenizer.gpt2()
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tok) -> None:
        self._tokenizer = tok

    def to_tokens(self, text: str | Sequence[str], *, prepend_bos: bool = False) -> torch.Tensor:
        """Text -> token ids (1, T) on the model's device (several texts must tokenize to equal lengths)."""
        texts = [text] if isinstance(text, str) else list(text)
        rows = [self.tokenizer.encode(t) for t in texts]
        if prepend_bos:
            rows = [[self.tokenizer.eot_token, *r] for r in rows]
        if len({len(r) for r in rows}) > 1:
            raise ValueError("texts tokenize to different lengths; pass them one at a time or pad them yourself")
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    def to_str_tokens(self, text: str | torch.Tensor | Sequence[int], *, prepend_bos: bool = False) -> list[str]:
        """Each token of ``text`` (or of a list/tensor of ids) as its own string."""
        ids = self.to_tokens(text, prepend_bos=prepend_bos)[0].tolist() if isinstance(text, str) else (
            text.flatten().tolist() if isinstance(text, torch.Tensor) else list(text))
        return self.tokenizer.str_tokens(ids)

    def to_string(self, ids: torch.Tensor | Sequence[int]) -> str:
        ids = ids.flatten().tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return self.tokenizer.decode(ids)

    # ---- generation and weights (implemented in generate.py / pretrained.py) -------------------
    def generate(self, idx, max_new_tokens: int = 32, **kwargs):
        """Sample a continuation; see :func:`gptlearn.generate.generate` for the options."""
        from .generate import generate

        return generate(self, idx, max_new_tokens, **kwargs)

    def generate_stream(self, idx, max_new_tokens: int = 32, **kwargs):
        """Yield new tokens one at a time; see :func:`gptlearn.generate.generate_stream`."""
        from .generate import generate_stream

        return generate_stream(self, idx, max_new_tokens, **kwargs)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "gpt2", **kwargs) -> "GPT":
        """Load GPT-2 weights: a Hub name (``gpt2`` ... ``gpt2-xl``), ``gptlearn-mini`` or a local folder.
        See :func:`gptlearn.pretrained.from_pretrained`."""
        from .pretrained import from_pretrained

        return from_pretrained(name_or_path, **kwargs)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write a folder ``transformers.GPT2LMHeadModel.from_pretrained`` loads unchanged."""
        from .pretrained import save_pretrained

        return save_pretrained(self, directory)

    def extra_repr(self) -> str:
        c = self.config
        return f"n_layer={c.n_layer}, n_head={c.n_head}, n_embd={c.n_embd}, params={self.num_parameters():,}"
