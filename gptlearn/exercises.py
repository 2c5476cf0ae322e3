"""Auto-checkers for the book's exercises: run your function against gptlearn's reference and say
exactly what is off (works in any notebook after ``pip install gptlearn``).

>>> from gptlearn.exercises import check_softmax
>>> check_softmax(lambda x: x.exp() / x.exp().sum(dim=-2, keepdim=True))   # doctest: +SKIP
❌ check_softmax: softmax over the wrong axis: the columns sum to 1 instead of the rows; use dim=-1.

Every checker calls your function on a few random inputs, compares it with the reference (the
teaching functions in :mod:`gptlearn.attention`, chapters 3-5; :mod:`gptlearn.tokenizers`, chapter 1),
prints one friendly line and returns a :class:`CheckResult` (``passed``, ``message``; truthy when passed).
Each known mistake (wrong shape, missing mask, missing 1/√d, wrong softmax axis, NaNs, ...) has its own hint.

Legend for shape comments: B batch, T tokens, C n_embd, H n_head, hs head size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from . import attention as ref
from .tokenizers import Tokenizer, merge
from .config import GPTConfig
from .model import GPT
from .embeddings import pool
from .patching import ablate_heads
from .embed_train import cosent_loss, mnrl_loss

__all__ = [
    "CheckResult",
    # tokens and vectors (chapters 1-2)
    "check_merge", "check_cosine",
    # attention (chapter 3)
    "check_softmax", "check_causal_mask", "check_attention_scores", "check_attention_pattern", "check_attention",
    # heads (chapters 4-5)
    "check_split_heads", "check_merge_heads",
    # the block and the whole model (chapter 6)
    "check_layer_norm", "check_param_count",
    # sentence embeddings (chapter 8)
    "check_mean_pooling",
    # reading the residual stream; the induction circuit, tested
    "check_logit_lens", "check_logit_diff", "check_attn_out_from_heads", "check_residual_direction",
    "check_direct_logit_attribution", "check_patch_resid_pre", "check_ablate_head", "check_mean_ablation",
    "check_induction_score",
    # checkers for the chapters' earlier exercises
    "check_bytes_per_token", "check_previous_token_score", "check_normalize_rows", "check_whitening",
    "check_cosent", "check_in_batch_negatives",
    # LoRA (chapter "Adapting a model")
    "check_lora_linear",
]

_RTOL, _ATOL = 1e-4, 1e-5  # float32 tolerances for every comparison


@dataclass(frozen=True)
class CheckResult:
    """What a checker found: ``passed`` and a one-sentence ``message`` (a hint when it failed)."""

    passed: bool
    message: str
    name: str = "check"

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return f"{'✅' if self.passed else '❌'} {self.name}: {self.message}"


class _Fail(Exception):
    """Raised inside a checker to stop at the first specific hint."""


def _finish(name: str, check: Callable[[], str], quiet: bool) -> CheckResult:
    try:
        result = CheckResult(True, check(), name)
    except _Fail as e:
        result = CheckResult(False, str(e), name)
    if not quiet:
        print(result)
    return result


def _call(fn: Callable, *args: Any) -> Any:
    """Call the learner's function, turning any exception into a hint."""
    try:
        out = fn(*args)
    except NotImplementedError:
        raise _Fail("not implemented yet: replace the `raise NotImplementedError` with your code.") from None
    except Exception as e:  # the learner's bug, reported in one line
        raise _Fail(f"your function raised {type(e).__name__}: {e}") from None
    if out is None:
        raise _Fail("your function returned None: did you forget `return`?")
    return out


def _as_tensor(x: Any, what: str = "your function") -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(x)
    except Exception:
        raise _Fail(f"{what} returned a {type(x).__name__}; return a torch.Tensor") from None


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape and allclose, with -inf matching -inf (masked scores)."""
    if a.shape != b.shape:
        return False
    a, b = a.double(), b.double()
    inf_a, inf_b = torch.isinf(a), torch.isinf(b)
    if not torch.equal(inf_a, inf_b) or not torch.equal(a[inf_a], b[inf_b]):
        return False
    return torch.allclose(a[~inf_a], b[~inf_b], rtol=_RTOL, atol=_ATOL)


def _check_shape(got: torch.Tensor, want: torch.Tensor, legend: str, extra: dict[tuple, str] | None = None) -> None:
    if tuple(got.shape) == tuple(want.shape):
        return
    for shape, hint in (extra or {}).items():
        if tuple(got.shape) == shape:
            raise _Fail(f"wrong shape: expected {tuple(want.shape)} = {legend}, got {tuple(got.shape)}: {hint}")
    raise _Fail(f"wrong shape: expected {tuple(want.shape)} = {legend}, got {tuple(got.shape)}.")


def _check_nan(got: torch.Tensor, hint: str = "") -> None:
    if got.is_floating_point() and torch.isnan(got).any():
        n = int(torch.isnan(got).sum())
        raise _Fail(f"the result contains {n} NaN value(s){': ' + hint if hint else '.'}")


def _match_variants(got: torch.Tensor, variants: Sequence[tuple[torch.Tensor, str]]) -> None:
    """If ``got`` equals a known wrong answer, fail with that mistake's hint."""
    for wrong, hint in variants:
        if _close(got, wrong):
            raise _Fail(hint)


def _mismatch(got: torch.Tensor, want: torch.Tensor, what: str) -> _Fail:
    finite = torch.isfinite(got) & torch.isfinite(want)
    diff = (got.double() - want.double())[finite].abs().max().item() if finite.any() else float("nan")
    return _Fail(f"right shape, but the values differ from {what} (largest difference {diff:.3g}).")


def _qkv(seed: int, B: int = 2, H: int = 3, T: int = 7, hs: int = 16) -> tuple[torch.Tensor, ...]:
    """Random q, k, v of shape (B, H, T, hs); T != hs and T != H so mixed-up axes show in shapes."""
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, T, hs, generator=g) for _ in range(3))


# ----------------------------------------------------------------------------------------------
# softmax and the causal mask (chapter 3)


def check_softmax(fn: Callable[[torch.Tensor], torch.Tensor], *, quiet: bool = False) -> CheckResult:
    """``fn(x)`` must be the softmax over the LAST axis: every row of the result sums to 1."""

    def check() -> str:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 3, 5, 5, generator=g) * 3
        got = _as_tensor(_call(fn, x.clone()))
        want = torch.softmax(x, dim=-1)
        _check_shape(got, want, "the input's shape")
        _check_nan(got, "check for a division by zero or exp of a huge number")
        if _close(got, torch.softmax(x, dim=-2)):
            raise _Fail("softmax over the wrong axis: the columns sum to 1 instead of the rows; use dim=-1.")
        if _close(got, torch.exp(x)):
            raise _Fail("you exponentiated but did not divide by the row sums (normalise with dim=-1, keepdim=True).")
        if not _close(got, want):
            raise _mismatch(got, want, "torch.softmax(x, dim=-1)")
        masked = x.masked_fill(~ref.causal_mask(5), float("-inf"))  # the causal case: -inf above the diagonal
        got = _as_tensor(_call(fn, masked.clone()))
        _check_nan(got, "rows with -inf entries (masked scores) must still work; exp(-inf) is 0.")
        if not _close(got, torch.softmax(masked, dim=-1)):
            raise _mismatch(got, torch.softmax(masked, dim=-1), "torch.softmax on masked scores")
        big = x + 1000.0
        got = _as_tensor(_call(fn, big.clone()))
        if not torch.isfinite(got).all():
            raise _Fail("correct on small inputs, but exp overflows on large scores (x + 1000 gives inf/NaN): "
                        "subtract each row's max before exp; softmax does not change.")
        if not _close(got, torch.softmax(big, dim=-1)):
            raise _mismatch(got, torch.softmax(big, dim=-1), "torch.softmax on large inputs")
        return "rows sum to 1, masked entries get 0, and large scores do not overflow."

    return _finish("check_softmax", check, quiet)


def _mask_to_bool(m: torch.Tensor) -> torch.Tensor:
    """A boolean "may attend" mask from a bool, 0/1 or additive (0 / -inf) mask."""
    if m.dtype == torch.bool:
        return m
    if m.is_floating_point() and bool(((m == 0) | (m == float("-inf"))).all()) and not bool((m == 1).any()):
        return m == 0  # additive mask: 0 where allowed, -inf where blocked
    return m != 0


def check_causal_mask(fn: Callable[[int], torch.Tensor], *, quiet: bool = False) -> CheckResult:
    """``fn(T)`` must return a (T, T) mask that is True (or 1, or 0 in an additive mask) where query i
    may attend to key j, i.e. j <= i."""

    def check() -> str:
        for T in (4, 9, 1):
            got = _mask_to_bool(_as_tensor(_call(fn, T)))
            want = ref.causal_mask(T)
            _check_shape(got, want, "(T, T)")
            if torch.equal(got, want):
                continue
            if got.all():
                raise _Fail("nothing is masked: every query can see every key, including future tokens.")
            if torch.equal(got, want.T):
                raise _Fail("the mask is transposed: queries see the FUTURE instead of the past; use tril, not triu.")
            if torch.equal(got, ~want):
                raise _Fail("the mask is inverted: True must mean 'may attend' (the lower triangle, j <= i).")
            if torch.equal(got, want & ~torch.eye(T, dtype=torch.bool)):
                raise _Fail("the diagonal is masked: a token must be able to attend to itself (use tril(diagonal=0)).")
            future = (got & ~want).nonzero()
            if len(future):
                i, j = future[0].tolist()
                raise _Fail(f"future positions are allowed: query {i} may see key {j} > {i}.")
            raise _Fail("some past positions are blocked: query i must see every key j <= i.")
        return "True exactly where key j <= query i (the lower triangle, diagonal included)."

    return _finish("check_causal_mask", check, quiet)


# ----------------------------------------------------------------------------------------------
# heads (chapters 3-5)


def check_split_heads(fn: Callable[[torch.Tensor, int], torch.Tensor], *, quiet: bool = False) -> CheckResult:
    """``fn(x, n_head)``: (B, T, C) -> (B, H, T, hs), as :func:`gptlearn.attention.split_heads`."""

    def check() -> str:
        B, T, H, hs = 2, 5, 3, 4
        x = torch.randn(B, T, H * hs, generator=torch.Generator().manual_seed(1))
        got = _as_tensor(_call(fn, x.clone(), H))
        want = ref.split_heads(x, H)
        _check_shape(got, want, "(B, H, T, hs)", {
            (B, T, H, hs): "that is (B, T, H, hs): now transpose(1, 2) to bring the head axis before T.",
            (B, H, hs, T): "T and hs are swapped: view as (B, T, H, hs), then transpose(1, 2).",
        })
        _match_variants(got, [
            (x.reshape(B, H, T, hs), "you reshaped straight to (B, H, T, hs), which mixes different tokens "
                                     "into one head: view as (B, T, H, hs) first, then transpose(1, 2)."),
        ])
        if not _close(got, want):
            raise _mismatch(got, want, "gptlearn.attention.split_heads")
        return "head h gets channels h*hs .. (h+1)*hs - 1 of every token."

    return _finish("check_split_heads", check, quiet)


def check_merge_heads(fn: Callable[[torch.Tensor], torch.Tensor], *, quiet: bool = False) -> CheckResult:
    """``fn(y)``: (B, H, T, hs) -> (B, T, C), the heads' outputs side by side, as
    :func:`gptlearn.attention.merge_heads` (chapter 5)."""

    def check() -> str:
        B, H, T, hs = 2, 3, 5, 4
        y = torch.randn(B, H, T, hs, generator=torch.Generator().manual_seed(2))
        got = _as_tensor(_call(fn, y.clone()))
        want = ref.merge_heads(y)
        _check_shape(got, want, "(B, T, C) with C = H * hs", {
            (B, T, H, hs): "that is (B, T, H, hs): now reshape to (B, T, H * hs) to put the heads side by side.",
            (B, H * T, hs): "you stacked the heads along the tokens; transpose(1, 2) and reshape to (B, T, H * hs).",
        })
        _match_variants(got, [
            (y.reshape(B, T, H * hs), "you reshaped without transpose(1, 2) first, which mixes different tokens "
                                      "into one row: transpose to (B, T, H, hs), then reshape."),
        ])
        if not _close(got, want):
            raise _mismatch(got, want, "gptlearn.attention.merge_heads")
        return "token t's row is [head 0's output | head 1's output | ...]."

    return _finish("check_merge_heads", check, quiet)


# ----------------------------------------------------------------------------------------------
# attention (chapter 3)


def _unscaled(q: torch.Tensor, k: torch.Tensor, causal: bool, scale: float = 1.0) -> torch.Tensor:
    """Scores with another scale than 1/√hs (the usual mistakes), masked like the reference."""
    return ref.attention_scores(q, k, causal=causal) * math.sqrt(q.size(-1)) * scale


def check_attention_scores(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, causal: bool = True,
                           quiet: bool = False) -> CheckResult:
    """``fn(q, k)``: (B, H, T, hs) x2 -> scores (B, H, T, T) = q·k/√hs, with -inf above the diagonal when
    ``causal`` (as :func:`gptlearn.attention.attention_scores`)."""

    def check() -> str:
        q, k, _ = _qkv(3)
        hs, T = q.size(-1), q.size(-2)
        got = _as_tensor(_call(fn, q.clone(), k.clone()))
        want = ref.attention_scores(q, k, causal=causal)
        _check_shape(got, want, "(B, H, T, T)", {
            tuple(q.shape[:2]) + (hs, hs): "you multiplied q^T @ k; the scores are q @ k.transpose(-2, -1).",
        })
        _check_nan(got)
        future = ~ref.causal_mask(T)
        if causal and torch.isfinite(got[..., future]).any():
            plain = ref.attention_scores(q, k, causal=False)
            if _close(got, plain) or _close(got, plain * math.sqrt(hs)):
                hint = " (and the 1/√hs scaling is missing)" if _close(got, plain * math.sqrt(hs)) else ""
                raise _Fail("the causal mask is missing: scores for future keys (j > i) must be -inf" + hint + ".")
            if (got[..., future] == 0).all():
                raise _Fail("future scores are 0, not -inf: softmax would still give them weight; "
                            "use masked_fill(~mask, float('-inf')).")
            raise _Fail("some future scores (key j > query i) are finite; they must be -inf.")
        _match_variants(got, [
            (_unscaled(q, k, causal), f"the values are √hs = {math.sqrt(hs):g} times too large: you forgot to divide "
                                      "by √hs (the 1/√d scaling)."),
            (_unscaled(q, k, causal, 1 / hs), f"the values are √hs = {math.sqrt(hs):g} times too small: divide by √hs, "
                                              "not by hs."),
        ])
        if not _close(got, want):
            ratio = (got[..., ~future] / want[..., ~future]).median().item() if causal else float("nan")
            if causal and math.isfinite(ratio) and abs(ratio - math.sqrt(hs)) < 1e-3:
                raise _Fail(f"ratio √hs = {ratio:.3g} detected: you forgot to divide by √hs.")
            raise _mismatch(got, want, "gptlearn.attention.attention_scores")
        return "q·k/√hs" + (", with -inf for every future key." if causal else ".")

    return _finish("check_attention_scores", check, quiet)


def _pattern_variants(q: torch.Tensor, k: torch.Tensor) -> list[tuple[torch.Tensor, str]]:
    hs = q.size(-1)
    return [
        (ref.attention_scores(q, k, causal=False).softmax(-1),
         "the causal mask is missing: future positions (key j > query i) get non-zero weight."),
        (_unscaled(q, k, True).softmax(-1),
         f"forgot the 1/√hs scaling: the scores were √hs = {math.sqrt(hs):g} times too large before the softmax."),
        (_unscaled(q, k, False).softmax(-1),
         "both the causal mask and the 1/√hs scaling are missing."),
        (ref.attention_scores(q, k).softmax(-2),
         "softmax over the wrong axis: the columns sum to 1 instead of the rows; use softmax(dim=-1)."),
        (_unscaled(q, k, True, 1 / hs).softmax(-1), "you divided by hs; divide the scores by √hs."),
    ]


def check_attention_pattern(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *,
                            quiet: bool = False) -> CheckResult:
    """``fn(q, k)``: (B, H, T, hs) x2 -> causal attention weights (B, H, T, T), each row summing to 1
    (as :func:`gptlearn.attention.attention_pattern`)."""

    def check() -> str:
        q, k, _ = _qkv(4)
        got = _as_tensor(_call(fn, q.clone(), k.clone()))
        want = ref.attention_pattern(q, k)
        _check_shape(got, want, "(B, H, T, T)")
        _check_nan(got, "a row that is all -inf gives NaN; mask only keys j > i, never the diagonal.")
        _match_variants(got, _pattern_variants(q, k))
        T = q.size(-2)
        if (got[..., ~ref.causal_mask(T)].abs() > 1e-6).any():
            raise _Fail("future positions are non-zero: the causal mask is missing or wrong.")
        if not torch.allclose(got.sum(-1), torch.ones(()), atol=1e-4):
            raise _Fail("the rows do not sum to 1: apply softmax over the last axis (dim=-1).")
        if not _close(got, want):
            raise _mismatch(got, want, "gptlearn.attention.attention_pattern")
        return "causal, scaled by 1/√hs, rows sum to 1."

    return _finish("check_attention_pattern", check, quiet)


def check_attention(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], *,
                    quiet: bool = False) -> CheckResult:
    """``fn(q, k, v)``: (B, H, T, hs) x3 -> causal attention output (B, H, T, hs) =
    softmax(mask(q·kᵀ/√hs)) @ v, as ``attention_pattern(q, k) @ v`` in :mod:`gptlearn.attention`."""

    def check() -> str:
        for seed in (5, 6):
            q, k, v = _qkv(seed)
            got = _as_tensor(_call(fn, q.clone(), k.clone(), v.clone()))
            want = ref.attention_pattern(q, k) @ v  # (B, H, T, T) @ (B, H, T, hs) -> (B, H, T, hs)
            T = q.size(-2)
            _check_shape(got, want, "(B, H, T, hs)", {
                tuple(q.shape[:2]) + (T, T): "that is the attention pattern (B, H, T, T): multiply it by v.",
            })
            _check_nan(got, "a row that is all -inf gives NaN; mask only keys j > i, never the diagonal.")
            _match_variants(got, [(p @ v, hint) for p, hint in _pattern_variants(q, k)] + [
                (ref.attention_pattern(q, k).transpose(-2, -1) @ v,
                 "you multiplied by the transposed pattern: the output is pattern @ v with rows = queries."),
            ])
            if not _close(got, want):
                raise _mismatch(got, want, "attention_pattern(q, k) @ v")
        return "causal, scaled by 1/√hs, softmax over the keys, weighted sum of v."

    return _finish("check_attention", check, quiet)


# ----------------------------------------------------------------------------------------------
# BPE (chapter 1) and vectors (chapter 2)


def check_merge(fn: Callable[[list, tuple, Any], list], *, quiet: bool = False) -> CheckResult:
    """``fn(ids, pair, new)``: replace every non-overlapping occurrence of ``pair``, left to right, by
    ``new`` (as :func:`gptlearn.tokenizers.merge`) and return a new list."""
    cases = [
        ([1, 2, 3, 1, 2], (1, 2), 9),
        ([5, 5, 5], (5, 5), 7),  # overlapping: [7, 5], not [7, 7]
        ([1, 2], (1, 2), 9),
        ([3, 1], (1, 2), 9),  # the last element must survive
        ([], (1, 2), 9),
    ]

    def check() -> str:
        for ids, pair, new in cases:
            before = list(ids)
            got = _call(fn, list(ids), pair, new)
            want = merge(ids, pair, new)
            if list(got) != want:
                if list(got) == want[:-1]:
                    raise _Fail(f"merge({before}, {pair}, {new}) gave {list(got)}, expected {want}: the last item "
                                "was dropped; copy it when no pair starts there.")
                if ids == [5, 5, 5]:
                    raise _Fail(f"merge({before}, {pair}, {new}) gave {list(got)}, expected {want}: after a merge, "
                                "skip BOTH merged items (the pairs overlap).")
                if ids == [3, 1]:
                    raise _Fail(f"merge({before}, {pair}, {new}) gave {list(got)}, expected {want}: the last item "
                                "was dropped; copy it when no pair starts there.")
                raise _Fail(f"merge({before}, {pair}, {new}) gave {list(got)}, expected {want}.")
        return "every pair replaced left to right, overlaps handled, last item kept."

    return _finish("check_merge", check, quiet)


def check_cosine(fn: Callable[[torch.Tensor, torch.Tensor], Any], *, quiet: bool = False) -> CheckResult:
    """``fn(a, b)`` for two 1-D vectors -> their cosine similarity a·b / (|a| |b|), a number in [-1, 1]."""

    def check() -> str:
        g = torch.Generator().manual_seed(7)
        for _ in range(3):
            a, b = torch.randn(32, generator=g) * 3, torch.randn(32, generator=g)
            got = _call(fn, a.clone(), b.clone())
            got_t = _as_tensor(got).double()
            if got_t.numel() != 1:
                raise _Fail(f"expected one number, got shape {tuple(got_t.shape)}: sum over the vector's entries.")
            val = got_t.item()
            want = (a @ b / (a.norm() * b.norm())).item()
            if math.isnan(val):
                raise _Fail("the result is NaN: check the division by the norms.")
            if abs(val - (a @ b).item()) < 1e-4 and abs(val - want) > 1e-4:
                raise _Fail("that is the plain dot product a·b: divide by |a| |b| (the norms).")
            if abs(val - (a @ b / a.norm()).item()) < 1e-4 or abs(val - (a @ b / b.norm()).item()) < 1e-4:
                raise _Fail("only one vector was normalised: divide by BOTH norms.")
            if abs(val - want) > 1e-4:
                raise _Fail(f"expected {want:.4f}, got {val:.4f}.")
        got = _as_tensor(_call(fn, a.clone(), a.clone() * 5)).double().item()
        if abs(got - 1.0) > 1e-4:
            raise _Fail(f"a vector and 5 times itself must have cosine 1, got {got:.4f}.")
        return "a·b / (|a| |b|), independent of the vectors' lengths."

    return _finish("check_cosine", check, quiet)


# ----------------------------------------------------------------------------------------------
# LayerNorm and counting parameters (chapter 6)


def check_layer_norm(fn: Callable[..., torch.Tensor], *, quiet: bool = False) -> CheckResult:
    """``fn(x, weight, bias, eps)``: (B, T, C) -> (B, T, C), each token normalised over its C channels
    with the biased variance, then scaled by ``weight`` and shifted by ``bias`` (chapter 6), as
    ``torch.nn.functional.layer_norm``."""
    import torch.nn.functional as F

    def check() -> str:
        g = torch.Generator().manual_seed(11)
        B, T, C = 2, 3, 8
        x = torch.randn(B, T, C, generator=g) * 3 + 1
        w, b = torch.randn(C, generator=g), torch.randn(C, generator=g)
        eps = 1e-5
        got = _as_tensor(_call(fn, x.clone(), w.clone(), b.clone(), eps))
        want = F.layer_norm(x, (C,), w, b, eps)
        _check_shape(got, want, "(B, T, C)")
        _check_nan(got)
        mean, var_b = x.mean(-1, keepdim=True), x.var(-1, keepdim=True, unbiased=False)
        var_u = x.var(-1, keepdim=True, unbiased=True)
        _match_variants(got, [
            (w * (x - mean) / torch.sqrt(var_u + eps) + b,
             "you used the unbiased variance (divide by C - 1); LayerNorm divides by C (unbiased=False)."),
            ((x - mean) / torch.sqrt(var_b + eps),
             "weight and bias are missing: multiply by weight, then add bias."),
            (w * (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, keepdim=True, unbiased=False) + eps) + b,
             "you normalised over the tokens (dim=1); normalise each token over its channels (dim=-1)."),
        ])
        tiny = torch.full((1, 1, C), 2.0)  # a constant vector: var = 0, only eps prevents 0/0
        out = _as_tensor(_call(fn, tiny, torch.ones(C), torch.zeros(C), eps))
        if torch.isnan(out).any() or torch.isinf(out).any():
            raise _Fail("a constant vector gives NaN or inf: add eps inside the square root, sqrt(var + eps).")
        if not _close(got, want):
            raise _mismatch(got, want, "torch.nn.functional.layer_norm")
        return "mean 0 and variance 1 over each token's channels, then weight * x + bias."

    return _finish("check_layer_norm", check, quiet)


def check_param_count(fn: Callable[[Any], int], *, quiet: bool = False) -> CheckResult:
    """``fn(config)`` -> the number of parameters of ``GPT(config)`` (the tied lm_head counted once),
    checked on the meta device for the GPT-2 sizes and a few odd shapes (chapter 6)."""

    configs = [GPTConfig.from_preset(p) for p in ("gpt2", "gpt2-medium", "gpt2-xl")] + [
        GPTConfig(n_layer=3, n_head=2, n_embd=10, n_positions=7, vocab_size=11),
        GPTConfig(n_layer=1, n_head=1, n_embd=6, n_positions=5, vocab_size=13, n_inner=9),
    ]

    def check() -> str:
        for cfg in configs:
            with torch.device("meta"):
                want = GPT(cfg).num_parameters()
            got = _call(fn, cfg)
            try:
                got = int(got)
            except (TypeError, ValueError):
                raise _Fail(f"expected an int, got {type(got).__name__}.") from None
            if got == want:
                continue
            C, V = cfg.n_embd, cfg.vocab_size
            label = f"n_layer={cfg.n_layer}, n_embd={C}, vocab_size={V}, n_positions={cfg.n_positions}"
            if got - want == V * C:
                raise _Fail(f"{label}: {got:,} counts the unembedding separately; lm_head IS wte (tied), count it "
                            "once.")
            if got - want == -2 * C:
                raise _Fail(f"{label}: {got:,} is 2C short: the final LayerNorm ln_f has a weight and a bias.")
            if want - got == cfg.n_positions * C:
                raise _Fail(f"{label}: {got:,} misses the position embedding wpe (n_positions x n_embd).")
            if (want - got) % cfg.n_layer == 0 and cfg.n_layer > 1:
                raise _Fail(f"{label}: {got:,} is {want - got:,} off, {(want - got) // cfg.n_layer:,} per block: "
                            "recount one block (biases? both LayerNorms? the MLP width d_mlp?).")
            raise _Fail(f"{label}: expected {want:,}, got {got:,}.")
        return "every size right, GPT-2 small included (124,439,808)."

    return _finish("check_param_count", check, quiet)


# ----------------------------------------------------------------------------------------------
# pooling token vectors into a sentence vector (chapter 8)


def check_mean_pooling(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, quiet: bool = False) -> CheckResult:
    """``fn(hidden, mask)``: hidden (B, T, C), mask (B, T) bool (True = real token) -> (B, C), the mean
    of each row's real token vectors, as ``gptlearn.embeddings.pool(hidden, mask, "mean")`` (chapter 8)."""
    def check() -> str:
        g = torch.Generator().manual_seed(13)
        B, T, C = 3, 6, 5
        hidden = torch.randn(B, T, C, generator=g)
        hidden[:, -2:] += 50.0  # padding far from the real tokens, so a leak shows
        mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 2 + [False] * 4, [True] * 4 + [False] * 2])
        got = _as_tensor(_call(fn, hidden.clone(), mask.clone()))
        want = pool(hidden, mask, "mean")
        _check_shape(got, want, "(B, C)", {
            (B, T): "you averaged over the channels (dim=-1); average over the tokens (dim=1).",
            (B, T, C): "nothing was pooled: sum over the tokens (dim=1) and divide by the count.",
        })
        _check_nan(got, "divide by the number of real tokens, clamped so an all-padding row gives 0, not 0/0.")
        m = mask.unsqueeze(-1).float()
        _match_variants(got, [
            (hidden.mean(1), "the padding was averaged in: multiply by the mask before summing."),
            ((hidden * m).sum(1) / T, "you divided by T (every position); divide by the number of REAL tokens, "
                                      "mask.sum(1)."),
            ((hidden * m).sum(1), "that is the sum; divide by the number of real tokens."),
        ])
        if not _close(got, want):
            raise _mismatch(got, want, 'gptlearn.embeddings.pool(hidden, mask, "mean")')
        return "the average of the real tokens only; padding never changes the result."

    return _finish("check_mean_pooling", check, quiet)


# ----------------------------------------------------------------------------------------------
# reading the residual stream and testing circuits (chapters "Reading the residual stream" and
# "The induction circuit, tested"). Each checker runs your function on a small random model whose
# biases and LayerNorms are all moved off their initial values, so a forgotten b_O, gamma or beta shows.

def _interp_model(seed: int = 0):

    torch.manual_seed(seed)
    model = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=32, n_positions=32, vocab_size=50), fast=False).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def _interp_tokens(seed: int = 1, B: int = 2, T: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 50, (B, T), generator=g)


def check_logit_lens(fn: Callable[[Any, torch.Tensor], torch.Tensor], *, quiet: bool = False) -> CheckResult:
    """``fn(model, resid)``: a residual stream (B, T, C) -> the logits (B, T, V) it would give if the model
    stopped there: the final LayerNorm, then the unembedding, ``model.lm_head(model.ln_f(resid))``."""

    def check() -> str:
        model = _interp_model()
        _, cache = model.run_with_cache(_interp_tokens())
        resid = cache["resid_pre", 1]
        with torch.no_grad():
            got = _as_tensor(_call(fn, model, resid.clone()))
            want = model.lm_head(model.ln_f(resid))
            centred = resid - resid.mean(-1, keepdim=True)
            bare = centred / (centred.pow(2).mean(-1, keepdim=True) + model.ln_f.eps).sqrt()
            _check_shape(got, want, "(B, T, V)")
            _match_variants(got, [
                (model.lm_head(resid), "you unembedded the raw stream: apply the final LayerNorm (model.ln_f) "
                                       "before the unembedding, as the model does after its last block."),
                (model.lm_head(model.ln_f(model.ln_f(resid))), "the final LayerNorm was applied twice."),
                (model.lm_head(bare), "you normalised but left out ln_f's weight and bias (gamma, beta): call "
                                      "model.ln_f."),
                (model.lm_head(model.blocks[1].ln_1(resid)),
                 "that is block 1's ln_1; the unembedding reads ln_f's output."),
            ])
            if not _close(got, want):
                raise _mismatch(got, want, "model.lm_head(model.ln_f(resid))")
        return "ln_f, then the unembedding: the logit lens."

    return _finish("check_logit_lens", check, quiet)


def check_logit_diff(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], *,
                     quiet: bool = False) -> CheckResult:
    """``fn(logits, correct, wrong)``: logits (B, T, V), token ids (B,) -> (B,): at the LAST position, the
    logit of the correct token minus the logit of the wrong one."""

    def check() -> str:
        g = torch.Generator().manual_seed(4)
        logits = torch.randn(3, 5, 11, generator=g)
        correct, wrong = torch.tensor([1, 4, 7]), torch.tensor([2, 3, 9])
        rows = torch.arange(3)
        got = _as_tensor(_call(fn, logits.clone(), correct, wrong))
        want = logits[rows, -1, correct] - logits[rows, -1, wrong]
        _check_shape(got, want, "(B,)", {
            (): "you averaged over the batch: return one difference per row (B,).",
            (3, 3): "logits[:, -1, correct] with a (B,) tensor picks a (B, B) block; pair row b with correct[b]: "
                    "logits[torch.arange(B), -1, correct]."})
        probs = logits.softmax(-1)
        _match_variants(got, [
            (-want, "wrong sign: it is logit(correct) - logit(wrong), positive when the model prefers the right "
                    "answer."),
            (logits[rows, 0, correct] - logits[rows, 0, wrong], "that is the first position; the prediction is read "
                                                                 "at the last one, logits[:, -1]."),
            (logits[rows, -2, correct] - logits[rows, -2, wrong],
             "that is the second-to-last position; use logits[:, -1]."),
            (probs[rows, -1, correct] - probs[rows, -1, wrong], "that is a difference of probabilities; use the raw "
                                                                 "logits (the softmax would add every other token)."),
        ])
        if not _close(got, want):
            raise _mismatch(got, want, "logits[b, -1, correct[b]] - logits[b, -1, wrong[b]]")
        return "the correct token's logit minus the wrong one's, at the last position, one per row."

    return _finish("check_logit_diff", check, quiet)


def check_attn_out_from_heads(fn: Callable[[Any, Any, int], torch.Tensor], *, quiet: bool = False) -> CheckResult:
    """``fn(model, cache, layer)`` -> that layer's ``attn_out`` (B, T, C) rebuilt from the heads: each head's
    z through its rows of W_O, summed over the heads, plus the output bias b_O."""

    def check() -> str:
        model = _interp_model(1)
        _, cache = model.run_with_cache(_interp_tokens(2))
        got = _as_tensor(_call(fn, model, cache, 1))
        want = cache["attn_out", 1]
        b_O = model.blocks[1].attn.c_proj.bias.detach()
        _check_shape(got, want, "(B, T, C)", {
            tuple(cache.head_results(1).shape): "you returned every head's result; sum over the head axis (dim=2) "
                                                "and add b_O."})
        _match_variants(got, [
            (want - b_O, "you forgot b_O (attn.c_proj.bias): the heads' results sum to attn_out only with the "
                         "output bias added once."),
            (want + (model.config.n_head - 1) * b_O, "b_O was added once per head; it is added once per layer."),
            (cache.head_results(1)[:, :, 0] + b_O, "only head 0: sum over all the heads."),
        ])
        if not _close(got, want):
            raise _mismatch(got, want, 'cache["attn_out", layer]')
        return "the heads' results plus b_O are exactly attn_out."

    return _finish("check_attn_out_from_heads", check, quiet)


def check_residual_direction(fn: Callable[[Any, int], torch.Tensor], *, quiet: bool = False) -> CheckResult:
    """``fn(model, token)`` -> (C,): the direction that reads the token's logit out of the *normalised* final
    stream (centred and divided by ln_f's scale): the unembedding row of the token times ln_f's weight."""

    def check() -> str:
        model = _interp_model(2)
        got = _as_tensor(_call(fn, model, 7))
        want = model.tokens_to_residual_directions(7)
        W_U = model.lm_head.weight.detach()
        _check_shape(got, want, "(C,)", {(model.config.vocab_size,): "that is a column over the vocabulary; take "
                                                                     "the token's ROW of lm_head.weight (V, C)."})
        _match_variants(got, [
            (W_U[7], "you left out ln_f's weight gamma: the normalised stream is multiplied by gamma before the "
                     "unembedding, so fold it into the direction (W_U[t] * model.ln_f.weight)."),
            (W_U[7] * model.ln_f.weight.detach() + model.ln_f.bias.detach(), "ln_f's bias is not part of the "
                     "direction: it adds a constant logit (model.ln_final_bias_logits), the same for every input."),
        ])
        if not _close(got, want):
            raise _mismatch(got, want, "model.tokens_to_residual_directions(token)")
        return ("gamma times the unembedding row: dotting it with the normalised stream gives the logit, "
                "less a constant.")

    return _finish("check_residual_direction", check, quiet)


def check_direct_logit_attribution(fn: Callable[[Any, Any, int], torch.Tensor], *, quiet: bool = False) -> CheckResult:
    """``fn(model, cache, token)`` -> (N,): for the first row's last position, what each component of
    ``cache.decompose_resid()`` adds to the token's logit through the final LayerNorm with its cached scale.
    The check: the attributions plus ``model.ln_final_bias_logits(token)`` sum to the model's logit."""

    def check() -> str:
        model = _interp_model(3)
        tokens = _interp_tokens(3)
        logits, cache = model.run_with_cache(tokens)
        token = int(tokens[0, -1])
        got = _as_tensor(_call(fn, model, cache, token))
        stack = cache.decompose_resid()[:, 0, -1]  # (N, C)
        want = cache.logit_attrs(stack, token, pos_slice=-1, batch_slice=0, has_batch_dim=False)
        _check_shape(got, want, f"(N,) = one number per component of decompose_resid ({want.shape[0]})")
        W_U, gamma, beta = model.lm_head.weight.detach()[token], model.ln_f.weight.detach(), model.ln_f.bias.detach()
        scale = cache["ln_f.hook_scale"][0, -1]
        centred = stack - stack.mean(-1, keepdim=True)
        _match_variants(got, [
            (stack @ W_U, "the raw components through the unembedding skip the final LayerNorm: centre each, divide "
                          "by the cached ln_f scale (cache['ln_f.hook_scale']) and use gamma * W_U[t]."),
            (centred @ (W_U * gamma), "not divided by the LayerNorm's scale: divide by cache['ln_f.hook_scale'] at "
                                      "that position (the whole stream's, so the parts still add up)."),
            (centred / scale @ W_U, "ln_f's weight gamma is missing from the direction: use W_U[t] * "
                                    "model.ln_f.weight."),
            (model.lm_head(model.ln_f(stack))[:, token], "you ran ln_f on each component alone: each gets its own "
                                                         "scale and its own copy of beta, so the parts no longer sum "
                                                         "to the logit; use the whole stream's cached scale."),
            ((centred / scale * gamma + beta) @ W_U, "beta was added to every component: it is one constant "
                                                     "(model.ln_final_bias_logits), not part of any component."),
        ])
        if not _close(got, want):
            raise _mismatch(got, want, "cache.logit_attrs(stack, token)")
        total = float(got.detach().sum() + model.ln_final_bias_logits(token))
        if abs(total - float(logits[0, -1, token])) > 1e-3:
            raise _Fail(f"the attributions plus the constant give {total:.4f}, not the logit "
                        f"{float(logits[0, -1, token]):.4f}.")
        return "each component's share of the logit; with the constant they sum to it exactly."

    return _finish("check_direct_logit_attribution", check, quiet)


def check_patch_resid_pre(fn: Callable[[Any, torch.Tensor, Any, int, int], torch.Tensor], *,
                          quiet: bool = False) -> CheckResult:
    """``fn(model, corrupted_tokens, clean_cache, layer, pos)`` -> logits (B, T, V) of the corrupted run with
    the clean ``resid_pre`` of ``layer`` copied in at position ``pos`` only."""

    def check() -> str:
        model = _interp_model(4)
        clean = _interp_tokens(5)
        corrupted = clean.clone()
        corrupted[:, 2] = (clean[:, 2] + 5) % 50
        _, cache = model.run_with_cache(clean)

        def patched(layer: int, positions: Any, act: str = "resid_pre") -> torch.Tensor:
            def hook(x: torch.Tensor, hook: Any) -> torch.Tensor:
                x = x.clone()
                x[:, positions] = cache[act, layer][:, positions]
                return x
            with torch.no_grad():
                return model.run_with_hooks(corrupted, fwd_hooks=[(f"blocks.{layer}.hook_{act}", hook)])

        got = _as_tensor(_call(fn, model, corrupted.clone(), cache, 1, 2))
        want = patched(1, 2)
        _check_shape(got, want, "(B, T, V)")
        _match_variants(got, [
            (patched(1, 3), "you patched position pos + 1; patch exactly the position you were given."),
            (patched(1, 1), "you patched position pos - 1; patch exactly the position you were given."),
            (patched(1, slice(None)), "you patched every position: that just replays the clean run from that layer."),
            (patched(0, 2), "you patched layer - 1's resid_pre (or layer 0's)."),
            (patched(1, 2, "resid_post"), "you patched resid_post (the stream AFTER the block): resid_pre is the "
                                          "stream entering it."),
        ])
        if not _close(got, want):
            raise _mismatch(got, want, "the corrupted run with the clean resid_pre at (layer, pos)")
        return "the clean stream at one layer and one position, everything else corrupted."

    return _finish("check_patch_resid_pre", check, quiet)


def check_ablate_head(fn: Callable[[Any, torch.Tensor, int, int], torch.Tensor], *, quiet: bool = False) -> CheckResult:
    """``fn(model, tokens, layer, head)`` -> logits (B, T, V) with that one head's z set to zero (its output
    is gone; everything else, b_O included, stays)."""

    def check() -> str:
        model = _interp_model(5)
        tokens = _interp_tokens(6)
        got = _as_tensor(_call(fn, model, tokens.clone(), 1, 2))
        with torch.no_grad():
            with ablate_heads(model, [(1, 2)]):
                want = model(tokens)
            wrong = {}
            for label, pair in (("next", (1, 3)), ("prev", (1, 1)), ("other layer", (0, 2))):
                with ablate_heads(model, [pair]):
                    wrong[label] = model(tokens)
            with ablate_heads(model, [(1, h) for h in range(model.config.n_head)]):
                wrong["layer"] = model(tokens)

            def no_attn(x: torch.Tensor, hook: Any) -> torch.Tensor:
                return torch.zeros_like(x)
            wrong["attn_out"] = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_attn_out", no_attn)])
        _check_shape(got, want, "(B, T, V)")
        _match_variants(got, [
            (wrong["next"], "you knocked out head + 1: heads count from 0."),
            (wrong["prev"], "you knocked out head - 1."),
            (wrong["other layer"], "right head, wrong layer."),
            (wrong["layer"], "every head of the layer was zeroed: set only z[:, :, head] to 0."),
            (wrong["attn_out"], "you zeroed attn_out, which also removes b_O and the other heads; zero the head's "
                                "z (hook_z) before the output projection."),
        ])
        if not _close(got, want):
            raise _mismatch(got, want, "the run with z[:, :, head] = 0 in that layer")
        return "one head's z set to zero before W_O; the other heads and b_O untouched."

    return _finish("check_ablate_head", check, quiet)


def check_mean_ablation(fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor], *,
                        quiet: bool = False) -> CheckResult:
    """``fn(z, reference_z, head)``: z and reference_z (B, T, H, hs) -> z with head ``head`` replaced by its
    mean over the reference's batch AND positions (one hs-vector), the other heads untouched."""

    def check() -> str:
        g = torch.Generator().manual_seed(8)
        z, ref_z = torch.randn(2, 5, 3, 4, generator=g), torch.randn(4, 5, 3, 4, generator=g) + 1.0
        got = _as_tensor(_call(fn, z.clone(), ref_z.clone(), 1))
        _check_shape(got, z, "(B, T, H, hs), z's shape")

        def with_head(value: torch.Tensor) -> torch.Tensor:
            out = z.clone()
            out[:, :, 1] = value
            return out
        want = with_head(ref_z[:, :, 1].mean(dim=(0, 1)))
        _match_variants(got, [
            (with_head(torch.zeros(4)), "that is zero-ablation; mean-ablation puts the head's average output there."),
            (with_head(ref_z[:, :, 1].mean(dim=0)),
             "you averaged over the batch only: average over the positions too, dim=(0, 1)."),
            (with_head(z[:, :, 1].mean(dim=(0, 1))), "you averaged this input's z; the mean comes from the reference "
                                                     "inputs."),
            (z, "nothing changed: write the mean into z[:, :, head]."),
        ])
        if not _close(got, want):
            raise _mismatch(got, want, "z with z[:, :, head] = reference_z[:, :, head].mean(dim=(0, 1))")
        return "the head's own average output over the reference inputs, at every position."

    return _finish("check_mean_ablation", check, quiet)


def check_induction_score(fn: Callable[[torch.Tensor, int], torch.Tensor], *, quiet: bool = False) -> CheckResult:
    """``fn(pattern, seq_len)``: one layer's patterns (B, H, 2S, 2S) on random tokens written twice (S each)
    -> (H,): the mean attention, over the second copy's queries and the batch, to the token after the
    query token's first occurrence (``seq_len - 1`` positions back), as ``gptlearn.analysis.induction_scores``."""

    def check() -> str:
        g = torch.Generator().manual_seed(9)
        S, H = 6, 3
        pattern = torch.rand(2, H, 2 * S, 2 * S, generator=g).tril()
        pattern = pattern / pattern.sum(-1, keepdim=True)
        got = _as_tensor(_call(fn, pattern.clone(), S))

        def stripe(offset: int, first: int) -> torch.Tensor:
            d = pattern.diagonal(offset=-offset, dim1=-2, dim2=-1)  # (B, H, 2S - offset): pattern[q, q - offset]
            queries = torch.arange(offset, 2 * S)
            return d[..., queries >= first].mean(dim=(0, 2))
        want = stripe(S - 1, S)
        _check_shape(got, want, "(H,)")
        _match_variants(got, [
            (stripe(S, S), "that is the token's first occurrence itself (S back); an induction head attends to the "
                           "token AFTER it, S - 1 back."),
            (stripe(S - 1, S - 1), "you included query S - 1, the last token of the first copy: its 'next token' "
                                   "is the start of the repeat. Average over queries S .. 2S - 1."),
            (stripe(1, 1), "that is the previous-token score (one back)."),
        ])
        if not _close(got, want):
            raise _mismatch(got, want, "the mean of pattern[:, :, q, q - S + 1] over q = S .. 2S - 1")
        return "attention to the token after the first occurrence, over the second copy."

    return _finish("check_induction_score", check, quiet)

# =======================================================================================
# review: more of the book's exercises checked (chapters 1, 4, 8, 9, 10)
# ==============================================================================================


def check_bytes_per_token(fn: Callable[[Any, str], float], *, quiet: bool = False) -> CheckResult:
    """``fn(tokenizer, text)`` -> UTF-8 bytes of ``text`` per token the tokenizer makes of it (chapter 1)."""
    def check() -> str:
        tok = Tokenizer.gpt2()
        for text in ("The quick brown fox jumps over the lazy dog.", "吾輩は猫である。", "    return x  # four spaces"):
            got = _call(fn, tok, text)
            try:
                got = float(got)
            except (TypeError, ValueError):
                raise _Fail(f"expected a number, got {type(got).__name__}.") from None
            n_bytes, n_chars, n_tokens = len(text.encode("utf-8")), len(text), len(tok.encode(text))
            want = n_bytes / n_tokens
            if abs(got - want) < 1e-9:
                continue
            if abs(got - n_chars / n_tokens) < 1e-9:
                raise _Fail(f"on {text!r} you counted characters ({n_chars}), not bytes ({n_bytes}): use "
                            "len(text.encode()).")
            if abs(got - n_tokens / n_bytes) < 1e-9:
                raise _Fail("that is tokens per byte: divide the bytes by the tokens.")
            raise _Fail(f"on {text!r}: expected {want:.3f} bytes per token, got {got:.3f}.")
        return "bytes per token, counted in UTF-8 bytes (a Japanese character is 3)."

    return _finish("check_bytes_per_token", check, quiet)


def check_previous_token_score(fn: Callable[[torch.Tensor], Any], *, quiet: bool = False) -> CheckResult:
    """``fn(pattern)``: one head's attention pattern (T, T) -> the mean of ``pattern[i, i - 1]`` over the
    queries ``i = 1 .. T - 1``, as ``gptlearn.analysis.previous_token_scores`` computes it (chapter 4)."""

    def check() -> str:
        g = torch.Generator().manual_seed(4)
        T = 9
        scores = torch.randn(T, T, generator=g).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        pattern = scores.softmax(-1)  # (T, T), causal, rows sum to 1
        got = _as_tensor(_call(fn, pattern.clone())).double()
        if got.numel() != 1:
            raise _Fail(f"expected one number for the head, got shape {tuple(got.shape)}: average the stripe.")
        got = got.item()
        stripe = pattern.diagonal(offset=-1).double()  # (T - 1,): pattern[i, i - 1]
        want = stripe.mean().item()
        if abs(got - want) < 1e-6:
            return "the mean of pattern[i, i-1] over the T-1 queries that have a previous token."
        if abs(got - stripe.sum().item() / T) < 1e-6:
            raise _Fail("you divided by T: only the T-1 queries i >= 1 have a previous token.")
        if abs(got - pattern.diagonal().double().mean().item()) < 1e-6:
            raise _Fail("that is the attention to the token itself (the main diagonal); the previous token is "
                        "offset=-1.")
        if abs(got - pattern.diagonal(offset=1).double().mean().item()) < 1e-6:
            raise _Fail("offset=+1 is above the diagonal, the masked future (all zeros); use offset=-1.")
        raise _Fail(f"expected {want:.4f}, got {got:.4f}.")

    return _finish("check_previous_token_score", check, quiet)


def check_normalize_rows(fn: Callable[[Any], Any], *, quiet: bool = False) -> CheckResult:
    """``fn(E)``: (N, C) embeddings -> the same rows scaled to length 1 (chapter 8)."""
    import numpy as np

    def check() -> str:
        rng = np.random.default_rng(8)
        E = rng.normal(size=(5, 7)) * rng.uniform(0.5, 20, size=(5, 1))
        got = np.asarray(_call(fn, E.copy()), dtype=float)
        want = E / np.linalg.norm(E, axis=1, keepdims=True)
        if got.shape != want.shape:
            raise _Fail(f"wrong shape: expected {want.shape} = (N, C), got {got.shape}: keepdims=True keeps the "
                        "division row-wise.")
        if np.allclose(got, E / np.linalg.norm(E, axis=0, keepdims=True)):
            raise _Fail("you scaled the columns (axis=0); each ROW (one sentence) must get length 1: axis=1.")
        if np.allclose(got, E / (np.linalg.norm(E, axis=1, keepdims=True) ** 2)):
            raise _Fail("you divided by the squared length; divide by the length itself.")
        if not np.allclose(got, want, rtol=_RTOL, atol=_ATOL):
            raise _Fail("the rows are not E's rows scaled to length 1.")
        return "every row has length 1 and keeps its direction."

    return _finish("check_normalize_rows", check, quiet)


def check_whitening(fn: Callable[[Any, int], Any], *, quiet: bool = False) -> CheckResult:
    """``fn(X, k)``: (N, C) vectors -> (N, k) whitened: centred, projected on the top ``k`` principal
    directions and each divided by its spread, so the k columns are uncorrelated with variance 1 (chapter 9)."""
    import numpy as np

    def check() -> str:
        rng = np.random.default_rng(9)
        N, C, k = 60, 12, 4
        X = rng.normal(size=(N, C)) @ rng.normal(size=(C, C)) + 5.0  # correlated, far from the origin
        got = np.asarray(_call(fn, X.copy(), k), dtype=float)
        if got.shape != (N, k):
            raise _Fail(f"wrong shape: expected {(N, k)} = (N, k), got {got.shape}: keep the top k directions only.")
        if not np.allclose(got.mean(0), 0, atol=1e-6):
            raise _Fail("the columns do not have mean 0: subtract the mean vector before the SVD.")
        cov = got.T @ got / N  # (k, k)
        scale = float(np.mean(np.diag(cov)))
        if not np.allclose(cov / scale, np.eye(k), atol=1e-6):
            raise _Fail("the columns are correlated or of unequal variance: divide EACH direction by its own spread.")
        if not (np.allclose(scale, 1, rtol=0.05) or np.allclose(scale, N / (N - 1), rtol=0.05)):
            raise _Fail(f"the columns have variance {scale:.3g}, not 1: divide each direction by its spread "
                        "(the singular value over sqrt(N)).")
        Xc = X - X.mean(0)
        top = np.linalg.svd(Xc, full_matrices=False)[2][:k]  # (k, C) the top principal directions
        coef, *_ = np.linalg.lstsq(Xc @ top.T, got, rcond=None)  # got must be a mixing of those projections
        if not np.allclose(Xc @ top.T @ coef, got, atol=1e-6):
            raise _Fail("the result is not built from the TOP k principal directions (the first k rows of Vt).")
        return "centred, the top k directions, each of variance 1: a round cloud."

    return _finish("check_whitening", check, quiet)


def check_cosent(fn: Callable[..., torch.Tensor], *, quiet: bool = False) -> CheckResult:
    """``fn(e1, e2, scores, scale=20.0)`` -> the CoSENT loss, as ``gptlearn.embed_train.cosent_loss`` (chapter 10)."""
    def check() -> str:
        g = torch.Generator().manual_seed(10)
        e1 = torch.randn(6, 16, generator=g)  # (N, C)
        e2 = e1 + 0.3 * torch.randn(6, 16, generator=g)  # close pairs: cosines near each other, so every term counts
        scores = torch.tensor([0.9, 0.1, 0.5, 0.5, 1.0, 0.0])  # a tie: pairs 2 and 3
        got = _as_tensor(_call(fn, e1.clone(), e2.clone(), scores.clone())).double()
        if got.numel() != 1:
            raise _Fail(f"expected one number (the loss), got shape {tuple(got.shape)}.")
        want = cosent_loss(e1, e2, scores).double()
        cos = torch.nn.functional.cosine_similarity(e1, e2, dim=-1).double() * 20
        diff = cos[None, :] - cos[:, None]  # (N, N): [i, j] = cos_j - cos_i
        above = scores[:, None] > scores[None, :]
        if torch.allclose(got.reshape(()), want, atol=1e-5):
            return "the same loss as cosent_loss, ties included."
        if torch.allclose(got.reshape(()), torch.logsumexp(diff[above], 0), atol=1e-5):
            raise _Fail("the extra 0 is missing: CoSENT is log(1 + sum e^...), so logsumexp over [0, terms...].")
        if torch.allclose(got.reshape(()),
                          torch.logsumexp(torch.cat([torch.zeros(1, dtype=diff.dtype), (-diff)[above]]), 0), atol=1e-5):
            raise _Fail("the sign is flipped: a violation is cos_j > cos_i when pair i scored higher, e^(scale (cos_j "
                        "- cos_i)).")
        ge = scores[:, None] >= scores[None, :]
        if torch.allclose(got.reshape(()), torch.logsumexp(torch.cat([torch.zeros(1, dtype=diff.dtype), diff[ge]]), 0),
                          atol=1e-5):
            raise _Fail("ties (and each pair with itself) were counted: keep only scores[i] > scores[j], strictly.")
        raise _Fail(f"expected {want.item():.4f}, got {got.reshape(-1)[0].item():.4f}.")

    return _finish("check_cosent", check, quiet)


def check_in_batch_negatives(fn: Callable[..., torch.Tensor], *, quiet: bool = False) -> CheckResult:
    """``fn(a, p, scale=20.0)`` -> the in-batch-negatives loss of N pairs, as
    ``gptlearn.embed_train.mnrl_loss`` (chapter 10)."""
    def check() -> str:
        g = torch.Generator().manual_seed(11)
        a, p = torch.randn(5, 8, generator=g) * 3, torch.randn(5, 8, generator=g)  # (N, C) each
        got = _as_tensor(_call(fn, a.clone(), p.clone())).double()
        if got.numel() != 1:
            raise _Fail(f"expected one number (the mean loss), got shape {tuple(got.shape)}.")
        want = mnrl_loss(a, p).double()
        raw = 20 * a @ p.T  # not normalised
        if torch.allclose(got.reshape(()), torch.nn.functional.cross_entropy(raw, torch.arange(5)).double(), atol=1e-4):
            raise _Fail("those are dot products: normalise a and p first, the logits are scale * cosines.")
        cos = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(p, dim=-1).T
        if torch.allclose(got.reshape(()), torch.nn.functional.cross_entropy(cos, torch.arange(5)).double(), atol=1e-4):
            raise _Fail("the cosines were not multiplied by scale (20): small logits make a nearly uniform softmax.")
        if not torch.allclose(got.reshape(()), want, atol=1e-4):
            raise _Fail(f"expected {want.item():.4f}, got {got.reshape(-1)[0].item():.4f}: row i's right answer is "
                        "column i.")
        return "cross-entropy over the batch's scaled cosines, the right partner on the diagonal."

    return _finish("check_in_batch_negatives", check, quiet)

# ----------------------------------------------------------------------------------------------
# LoRA (chapter "Adapting a model"); the finetune helper's block


def check_lora_linear(cls: Callable[..., Any], *, quiet: bool = False) -> CheckResult:
    """``cls(base, rank, alpha)``: an ``nn.Module`` that adapts the ``nn.Linear`` ``base`` with parameters
    ``lora_A`` (rank, in) and ``lora_B`` (out, rank), and returns ``base(x) + (alpha / rank) · x Aᵀ Bᵀ``,
    as :class:`gptlearn.lora.LoRALinear` (chapter "Adapting a model")."""
    from torch import nn

    def check() -> str:
        g = torch.Generator().manual_seed(21)
        base = nn.Linear(12, 20)
        with torch.no_grad():
            base.weight.copy_(torch.randn(20, 12, generator=g) * 0.3)
            base.bias.copy_(torch.randn(20, generator=g))
        rank, alpha = 4, 12.0  # alpha / rank = 3: a forgotten or inverted scale shows
        try:
            layer = cls(base, rank, alpha)
        except NotImplementedError:
            raise _Fail("not implemented yet: replace the `raise NotImplementedError` with your code.") from None
        except Exception as e:
            raise _Fail(f"building cls(base, rank=4, alpha=12) raised {type(e).__name__}: {e}") from None
        A, B = getattr(layer, "lora_A", None), getattr(layer, "lora_B", None)
        if not isinstance(A, torch.Tensor) or not isinstance(B, torch.Tensor):
            raise _Fail("name the two matrices lora_A and lora_B (nn.Parameter), as PEFT does.")
        if tuple(A.shape) != (rank, 12) or tuple(B.shape) != (20, rank):
            raise _Fail(f"lora_A must be (rank, in) = (4, 12) and lora_B (out, rank) = (20, 4); got "
                        f"{tuple(A.shape)} and {tuple(B.shape)}.")
        if base.weight.requires_grad:
            raise _Fail("the base layer still trains: freeze it with base.requires_grad_(False).")
        if not (A.requires_grad and B.requires_grad):
            raise _Fail("lora_A and lora_B must train: make them nn.Parameter.")
        x = torch.randn(3, 5, 12, generator=g)
        with torch.no_grad():
            start = _as_tensor(_call(layer, x))
            _check_shape(start, base(x), "(3, 5, out)")
            if torch.count_nonzero(B) or not _close(start, base(x)):
                raise _Fail("at the start the layer must equal the base layer: initialise lora_B to zeros (A random), "
                            "so training begins from the pretrained model.")
            if torch.count_nonzero(A) == 0:
                raise _Fail("lora_A is all zeros too: with A = B = 0 neither gets a gradient; initialise A randomly.")
            A.copy_(torch.randn(rank, 12, generator=g))
            B.copy_(torch.randn(20, rank, generator=g))
            got = _as_tensor(_call(layer, x))
            update = x @ A.t() @ B.t()  # (3, 5, 12) -> (3, 5, 4) -> (3, 5, 20)
            want = base(x) + (alpha / rank) * update
            _match_variants(got, [
                (base(x) + update, "the update is not scaled: multiply x Aᵀ Bᵀ by alpha / rank."),
                (base(x) + alpha * update, "the scale is alpha; it should be alpha / rank."),
                (base(x) + (rank / alpha) * update, "the scale is upside down: alpha / rank, not rank / alpha."),
                (base(x), "the low-rank path is missing: add (alpha / rank) · x Aᵀ Bᵀ to base(x)."),
            ])
            if not _close(got, want):
                raise _mismatch(got, want, "base(x) + (alpha / rank) · x Aᵀ Bᵀ")
        return "zero B, random A, alpha / rank: the same outputs as gptlearn.lora.LoRALinear."

    return _finish("check_lora_linear", check, quiet)
