"""Attention: the teaching functions against hand computations and against the module's fused path.

Legend: B batch, T query tokens, S key tokens, C n_embd, H n_head, hs head size.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gptlearn import GPTConfig
from gptlearn.attention import (
    CausalSelfAttention,
    attention_pattern,
    attention_scores,
    causal_mask,
    merge_heads,
    split_heads,
)
from gptlearn.kv_cache import KVCache

ATOL = 1e-5  # fp32: explicit softmax path vs fused SDPA


def test_causal_mask_values():
    assert causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    # with 2 cached keys the 2 new queries are the last rows of a 4x4 mask (bottom-right aligned)
    assert causal_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]
    assert causal_mask(1, 5).tolist() == [[True] * 5]
    assert causal_mask(4).dtype == torch.bool
    full = causal_mask(6)
    for T in range(1, 7):  # a chunk of the last T queries is the bottom slice of the full mask
        torch.testing.assert_close(causal_mask(T, 6), full[6 - T:], rtol=0, atol=0)


def test_split_merge_are_inverse_and_slice_channels():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 12)  # (B, T, C)
    h = split_heads(x, 3)
    assert h.shape == (2, 3, 5, 4)  # (B, H, T, hs)
    torch.testing.assert_close(h[:, 1], x[..., 4:8], rtol=0, atol=0)  # head 1 = channels 4..7
    torch.testing.assert_close(merge_heads(h), x, rtol=0, atol=0)
    y = torch.randn(2, 3, 5, 4)
    torch.testing.assert_close(split_heads(merge_heads(y), 3), y, rtol=0, atol=0)


def test_scores_scaled_by_inverse_sqrt_head_size():
    torch.manual_seed(1)
    B, H, T, hs = 2, 3, 4, 16
    q, k = torch.randn(B, H, T, hs), torch.randn(B, H, T, hs)
    s = attention_scores(q, k)
    assert s.shape == (B, H, T, T)
    for b, h, i, j in [(0, 0, 0, 0), (1, 2, 3, 1), (0, 1, 2, 2), (1, 0, 3, 3)]:
        by_hand = sum(q[b, h, i, d].item() * k[b, h, j, d].item() for d in range(hs)) / math.sqrt(hs)
        assert s[b, h, i, j].item() == pytest.approx(by_hand, abs=1e-5)
    assert torch.isneginf(s[0, 0, 0, 1]) and torch.isneginf(s[1, 2, 1, 3])  # the future is -inf
    unmasked = attention_scores(q, k, causal=False)
    torch.testing.assert_close(unmasked, q @ k.transpose(-2, -1) / 4.0)  # sqrt(16) = 4


def test_pattern_rows_sum_to_one_and_zero_above_diagonal():
    torch.manual_seed(2)
    q, k = torch.randn(2, 4, 7, 8) * 3, torch.randn(2, 4, 7, 8) * 3
    p = attention_pattern(q, k)
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 4, 7), rtol=0, atol=1e-6)
    upper = torch.triu(torch.ones(7, 7, dtype=torch.bool), diagonal=1)
    assert (p[..., upper] == 0).all()
    assert (p[..., ~upper] > 0).all()
    assert torch.allclose(p[..., 0, 0], torch.ones(2, 4))  # the first token can only see itself
    # with a cache: 3 new queries over 7 keys; query i sees keys 0 .. 4 + i
    p2 = attention_pattern(q[:, :, -3:], k)
    torch.testing.assert_close(p2.sum(-1), torch.ones(2, 4, 3), rtol=0, atol=1e-6)
    torch.testing.assert_close(p2, p[:, :, -3:], rtol=0, atol=1e-6)


def test_teaching_functions_match_sdpa():
    torch.manual_seed(3)
    q, k, v = (torch.randn(2, 3, 9, 8) for _ in range(3))
    ours = attention_pattern(q, k) @ v
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True), rtol=0, atol=ATOL)


def _module(n_embd=48, n_head=6, seed=0):
    torch.manual_seed(seed)
    attn = CausalSelfAttention(GPTConfig(n_embd=n_embd, n_head=n_head, n_layer=1, n_positions=32, vocab_size=10))
    with torch.no_grad():  # non-zero biases so they are tested too
        for p in attn.parameters():
            p.normal_(0, 0.3)
    return attn.eval()


def _explicit(attn, x):
    """The module's computation spelled out with the teaching functions."""
    B, T, C = x.shape
    q, k, v = attn.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
    q, k, v = (split_heads(t, attn.n_head) for t in (q, k, v))  # (B, H, T, hs)
    y = attention_pattern(q, k) @ v  # (B, H, T, hs)
    return attn.c_proj(merge_heads(y))  # (B, T, C)


@pytest.mark.parametrize("n_embd, n_head", [(48, 6), (16, 1), (64, 4)])
def test_module_fast_path_equals_explicit_path(n_embd, n_head):
    attn = _module(n_embd, n_head)
    x = torch.randn(3, 11, n_embd)
    with torch.no_grad():
        fast = attn(x)
        by_hand = _explicit(attn, x)
        seen = {}
        h = attn.hook_pattern.add_hook(lambda t, hook: seen.setdefault("pattern", t))  # forces explicit path
        try:
            slow = attn(x)
        finally:
            h.remove()
    assert seen["pattern"].shape == (3, n_head, 11, 11)
    torch.testing.assert_close(fast, by_hand, rtol=0, atol=ATOL)
    torch.testing.assert_close(slow, by_hand, rtol=0, atol=ATOL)
    assert not attn.hook_pattern.active


@pytest.mark.parametrize("prefix, chunk", [(5, 1), (5, 3), (1, 7), (0, 8)])
def test_kv_cache_chunk_equals_full_sequence(prefix, chunk):
    """Feeding a prefix, then a chunk (T < S, bottom-right mask), gives the full-sequence outputs."""
    attn = _module(48, 6, seed=4)
    x = torch.randn(2, prefix + chunk, 48)
    with torch.no_grad():
        full = attn(x)
        for explicit in (False, True):
            cache = KVCache(1, 2, 6, 32, 8, device="cpu", dtype=torch.float32)
            handle = attn.hook_attn_scores.add_hook(lambda t, hook: None) if explicit else None
            try:
                outs = []
                if prefix:
                    outs.append(attn(x[:, :prefix], kv_cache=cache))
                    cache.advance(prefix)
                outs.append(attn(x[:, prefix:], kv_cache=cache))
            finally:
                if handle is not None:
                    handle.remove()
            torch.testing.assert_close(torch.cat(outs, dim=1), full, rtol=0, atol=ATOL)


def test_hook_replacing_pattern_changes_output():
    attn = _module(16, 2, seed=5)
    x = torch.randn(1, 4, 16)
    uniform = torch.tril(torch.ones(4, 4)) / torch.arange(1, 5)[:, None]  # average over the past
    with torch.no_grad():
        h = attn.hook_pattern.add_hook(lambda t, hook: uniform.expand_as(t))
        try:
            out = attn(x)
        finally:
            h.remove()
        q, k, v = attn.c_attn(x).split(16, dim=2)
        expected = attn.c_proj(merge_heads(uniform @ split_heads(v, 2)))
    torch.testing.assert_close(out, expected, rtol=0, atol=ATOL)
