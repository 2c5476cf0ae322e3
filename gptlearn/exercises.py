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
    from .tokenizers import merge

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
    from .config import GPTConfig
    from .model import GPT

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
                raise _Fail(f"{label}: {got:,} counts the unembedding separately; lm_head IS wte (tied), count it once.")
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
    from .embeddings import pool

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
            ((hidden * m).sum(1) / T, "you divided by T (every position); divide by the number of REAL tokens, mask.sum(1)."),
            ((hidden * m).sum(1), "that is the sum; divide by the number of real tokens."),
        ])
        if not _close(got, want):
            raise _mismatch(got, want, 'gptlearn.embeddings.pool(hidden, mask, "mean")')
        return "the average of the real tokens only; padding never changes the result."

    return _finish("check_mean_pooling", check, quiet)


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
