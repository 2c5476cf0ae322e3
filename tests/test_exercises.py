"""gptlearn.exercises: each checker passes the reference and names each deliberate mistake."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gptlearn import attention as A
from gptlearn import exercises as ex
from gptlearn.tokenizers import merge


def _mask(T):
    return torch.ones(T, T, dtype=torch.bool).tril()


def _scores(q, k, scale=None):
    s = q @ k.transpose(-2, -1)
    return s / math.sqrt(q.shape[-1]) if scale is None else s * scale


def test_result_object_and_printed_line(capsys):
    r = ex.check_softmax(lambda x: x.softmax(-1))
    assert r.passed and bool(r) and r.name == "check_softmax"
    assert capsys.readouterr().out.startswith("✅ check_softmax:")
    r = ex.check_softmax(lambda x: x.softmax(-2), quiet=True)
    assert not r and capsys.readouterr().out == ""
    assert str(r).startswith("❌ check_softmax:")


@pytest.mark.parametrize("fn, hint", [
    (lambda x: x.softmax(-2), "wrong axis: the columns sum to 1 instead of the rows"),
    (lambda x: x.exp(), "did not divide"),
    (lambda x: x.exp() / x.exp().sum(-1, keepdim=True), "subtract each row's max"),
    (lambda x: x[..., :-1].softmax(-1), "wrong shape: expected (2, 3, 5, 5)"),
    (lambda x: x * float("nan"), "NaN"),
    (lambda x: None, "returned None"),
    (lambda x: 1 / 0, "ZeroDivisionError"),
])
def test_softmax_hints(fn, hint):
    r = ex.check_softmax(fn, quiet=True)
    assert not r.passed and hint in r.message


def test_not_implemented_stub_gets_a_friendly_hint():
    def stub(x):
        raise NotImplementedError

    assert "not implemented yet" in ex.check_softmax(stub, quiet=True).message


@pytest.mark.parametrize("fn, passed, hint", [
    (_mask, True, ""),
    (lambda T: _mask(T).int(), True, ""),
    (lambda T: torch.zeros(T, T).masked_fill(~_mask(T), float("-inf")), True, ""),  # additive mask
    (lambda T: _mask(T).T, False, "transposed"),
    (lambda T: torch.ones(T, T, dtype=torch.bool).tril(-1), False, "diagonal"),
    (lambda T: torch.ones(T, T, dtype=torch.bool), False, "nothing is masked"),
    (lambda T: ~_mask(T), False, "inverted"),
    (lambda T: _mask(T + 1), False, "wrong shape"),
])
def test_causal_mask(fn, passed, hint):
    r = ex.check_causal_mask(fn, quiet=True)
    assert r.passed is passed and hint in r.message


@pytest.mark.parametrize("fn, passed, hint", [
    (A.split_heads, True, ""),
    (lambda x, H: x.view(x.shape[0], x.shape[1], H, -1), False, "expected (2, 3, 5, 4)"),
    (lambda x, H: x.view(x.shape[0], x.shape[1], H, -1), False, "transpose(1, 2)"),
    (lambda x, H: x.view(x.shape[0], H, x.shape[1], -1), False, "reshaped straight"),
])
def test_split_heads(fn, passed, hint):
    r = ex.check_split_heads(fn, quiet=True)
    assert r.passed is passed and hint in r.message


@pytest.mark.parametrize("fn, passed, hint", [
    (A.merge_heads, True, ""),
    (lambda y: y.reshape(y.shape[0], y.shape[2], -1), False, "without transpose"),
    (lambda y: y.transpose(1, 2), False, "expected (2, 5, 12)"),
])
def test_merge_heads(fn, passed, hint):
    r = ex.check_merge_heads(fn, quiet=True)
    assert r.passed is passed and hint in r.message


@pytest.mark.parametrize("fn, passed, hint", [
    (lambda q, k: A.attention_scores(q, k), True, ""),
    (lambda q, k: _scores(q, k).masked_fill(~_mask(q.shape[2]), float("-inf")), True, ""),
    (lambda q, k: _scores(q, k, 1.0).masked_fill(~_mask(q.shape[2]), float("-inf")), False,
     "√hs = 4 times too large: you forgot to divide by √hs"),
    (lambda q, k: _scores(q, k, 1 / 16).masked_fill(~_mask(q.shape[2]), float("-inf")), False, "not by hs"),
    (lambda q, k: _scores(q, k), False, "causal mask is missing"),
    (lambda q, k: _scores(q, k).masked_fill(~_mask(q.shape[2]), 0.0), False, "not -inf"),
    (lambda q, k: q.transpose(-2, -1) @ k, False, "q @ k.transpose"),
])
def test_attention_scores(fn, passed, hint):
    r = ex.check_attention_scores(fn, quiet=True)
    assert r.passed is passed and hint in r.message


def _pattern(q, k, *, scale=None, causal=True, dim=-1):
    s = _scores(q, k, scale)
    if causal:
        s = s.masked_fill(~_mask(q.shape[2]), float("-inf"))
    return s.softmax(dim)


@pytest.mark.parametrize("fn, passed, hint", [
    (lambda q, k: A.attention_pattern(q, k), True, ""),
    (lambda q, k: _pattern(q, k, causal=False), False, "future positions"),
    (lambda q, k: _pattern(q, k, scale=1.0), False, "1/√hs scaling"),
    (lambda q, k: _pattern(q, k, dim=-2), False, "columns sum to 1 instead of the rows"),
    (lambda q, k: _scores(q, k).masked_fill(~_mask(q.shape[2]).T, float("-inf")).softmax(-1), False, "non-zero"),
])
def test_attention_pattern(fn, passed, hint):
    r = ex.check_attention_pattern(fn, quiet=True)
    assert r.passed is passed and hint in r.message


@pytest.mark.parametrize("fn, passed, hint", [
    (lambda q, k, v: A.attention_pattern(q, k) @ v, True, ""),
    (lambda q, k, v: _pattern(q, k, causal=False) @ v, False, "causal mask is missing"),
    (lambda q, k, v: _pattern(q, k, scale=1.0) @ v, False, "forgot the 1/√hs scaling"),
    (lambda q, k, v: _pattern(q, k, scale=1.0, causal=False) @ v, False, "both"),
    (lambda q, k, v: _pattern(q, k, dim=-2) @ v, False, "wrong axis"),
    (lambda q, k, v: A.attention_pattern(q, k), False, "multiply it by v"),
    (lambda q, k, v: A.attention_pattern(q, k).transpose(-2, -1) @ v, False, "transposed pattern"),
    (lambda q, k, v: _scores(q, k).masked_fill(~_mask(q.shape[2]), float("-inf")).masked_fill(
        torch.eye(q.shape[2], dtype=torch.bool), float("-inf")).softmax(-1) @ v, False, "NaN"),
])
def test_attention(fn, passed, hint):
    r = ex.check_attention(fn, quiet=True)
    assert r.passed is passed and hint in r.message


def _merge_no_overlap_skip(ids, pair, new):
    out = []
    for i, x in enumerate(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new)
        elif i > 0 and (ids[i - 1], x) == pair:
            continue
        else:
            out.append(x)
    return out


def _merge_drops_last(ids, pair, new):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


@pytest.mark.parametrize("fn, passed, hint", [
    (merge, True, ""),
    (_merge_no_overlap_skip, False, "overlap"),
    (_merge_drops_last, False, "last item"),
])
def test_merge(fn, passed, hint):
    r = ex.check_merge(fn, quiet=True)
    assert r.passed is passed and hint in r.message


@pytest.mark.parametrize("fn, passed, hint", [
    (lambda a, b: a @ b / (a.norm() * b.norm()), True, ""),
    (lambda a, b: torch.nn.functional.cosine_similarity(a, b, dim=0), True, ""),
    (lambda a, b: a @ b, False, "plain dot product"),
    (lambda a, b: a @ b / a.norm(), False, "only one vector"),
    (lambda a, b: a * b / (a.norm() * b.norm()), False, "expected one number"),
])
def test_cosine(fn, passed, hint):
    r = ex.check_cosine(fn, quiet=True)
    assert r.passed is passed and hint in r.message


# ---- LayerNorm and counting parameters (chapter 6), pooling (chapter 8) ----------------------------
def _ln(x, w, b, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    return w * (x - mean) / torch.sqrt(var + eps) + b


def test_layer_norm_right_answers_pass():
    assert ex.check_layer_norm(_ln, quiet=True)
    assert ex.check_layer_norm(lambda x, w, b, eps: F.layer_norm(x, x.shape[-1:], w, b, eps), quiet=True)


def test_layer_norm_mistakes_get_hints():
    unbiased = lambda x, w, b, eps: w * (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + eps) + b
    r = ex.check_layer_norm(unbiased, quiet=True)
    assert not r and "unbiased" in r.message
    no_affine = lambda x, w, b, eps: _ln(x, torch.ones_like(w), torch.zeros_like(b), eps)
    r = ex.check_layer_norm(no_affine, quiet=True)
    assert not r and "weight and bias" in r.message
    no_eps = lambda x, w, b, eps: w * (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True, unbiased=False) + b
    r = ex.check_layer_norm(no_eps, quiet=True)
    assert not r and "eps" in r.message
    r = ex.check_layer_norm(lambda x, w, b, eps: None, quiet=True)
    assert not r and "return" in r.message


def _count(c):
    C, M = c.n_embd, c.d_mlp
    block = 4 * C * C + 4 * C + 2 * C * M + M + C + 4 * C
    return c.vocab_size * C + c.n_positions * C + c.n_layer * block + 2 * C


def test_param_count_right_answer_passes():
    r = ex.check_param_count(_count, quiet=True)
    assert r, r.message


def test_param_count_mistakes_get_hints():
    r = ex.check_param_count(lambda c: _count(c) + c.vocab_size * c.n_embd, quiet=True)
    assert not r and "tied" in r.message
    r = ex.check_param_count(lambda c: _count(c) - 2 * c.n_embd, quiet=True)
    assert not r and "ln_f" in r.message
    r = ex.check_param_count(lambda c: _count(c) - c.n_layer * c.n_embd, quiet=True)  # a bias missing per block
    assert not r and "per block" in r.message


def test_mean_pooling_right_answer_passes_and_mistakes_get_hints():
    def right(h, m):
        w = m.unsqueeze(-1).float()
        return (h * w).sum(1) / w.sum(1).clamp(min=1e-9)

    assert ex.check_mean_pooling(right, quiet=True)
    r = ex.check_mean_pooling(lambda h, m: h.mean(1), quiet=True)
    assert not r and "padding" in r.message
    r = ex.check_mean_pooling(lambda h, m: (h * m.unsqueeze(-1)).sum(1) / h.shape[1], quiet=True)
    assert not r and "REAL" in r.message
    r = ex.check_mean_pooling(lambda h, m: h.mean(-1), quiet=True)
    assert not r and "dim=1" in r.message


# ---- review: the checkers of chapters 1, 4, 8, 9 and 10 ----------------------------------------------


def _whiten(X, k):
    import numpy as np

    Xc = X - X.mean(0)
    U, S, Vt = np.linalg.svd(Xc, full_matrices=False)
    return Xc @ Vt[:k].T / S[:k] * np.sqrt(len(Xc))


def _cosent(e1, e2, scores, scale=20.0, *, zero=True, sign=1, strict=True):
    cos = F.cosine_similarity(e1, e2, dim=-1) * scale
    diff = sign * (cos[None, :] - cos[:, None])
    keep = scores[:, None] > scores[None, :] if strict else scores[:, None] >= scores[None, :]
    terms = diff[keep]
    return torch.logsumexp(torch.cat([torch.zeros(1), terms]) if zero else terms, dim=0)


def _in_batch(a, p, scale=20.0, *, normalise=True):
    sim = F.normalize(a, dim=-1) @ F.normalize(p, dim=-1).T if normalise else a @ p.T
    return F.cross_entropy(scale * sim, torch.arange(len(a)))


@pytest.mark.parametrize("checker, right, wrongs", [
    (ex.check_bytes_per_token, lambda tok, s: len(s.encode()) / len(tok.encode(s)), [
        (lambda tok, s: len(s) / len(tok.encode(s)), "counted characters"),
        (lambda tok, s: len(tok.encode(s)) / len(s.encode()), "tokens per byte"),
    ]),
    (ex.check_previous_token_score, lambda p: p.diagonal(-1).mean(), [
        (lambda p: p.diagonal(-1).sum() / p.shape[0], "divided by T"),
        (lambda p: p.diagonal().mean(), "main diagonal"),
        (lambda p: p.diagonal(1).mean(), "offset=+1"),
        (lambda p: p.diagonal(-1), "expected one number"),
    ]),
    (ex.check_normalize_rows, lambda E: E / __import__("numpy").linalg.norm(E, axis=1, keepdims=True), [
        (lambda E: E / __import__("numpy").linalg.norm(E, axis=0, keepdims=True), "scaled the columns"),
        (lambda E: E / __import__("numpy").linalg.norm(E, axis=1, keepdims=True) ** 2, "squared length"),
    ]),
    (ex.check_whitening, _whiten, [
        (lambda X, k: __import__("numpy").linalg.svd(X, full_matrices=False)[0][:, :k], "mean 0"),
        (lambda X, k: _whiten(X, k) * 3, "variance 9"),
        (lambda X, k: _whiten(X, k) * __import__("numpy").arange(1, k + 1), "unequal variance"),
        (lambda X, k: _whiten(X, k + 1)[:, 1:], "TOP k"),
        (lambda X, k: _whiten(X, k)[:, :-1], "wrong shape"),
    ]),
    (ex.check_cosent, _cosent, [
        (lambda e1, e2, s, scale=20.0: _cosent(e1, e2, s, zero=False), "extra 0"),
        (lambda e1, e2, s, scale=20.0: _cosent(e1, e2, s, sign=-1), "sign is flipped"),
        (lambda e1, e2, s, scale=20.0: _cosent(e1, e2, s, strict=False), "ties"),
    ]),
    (ex.check_in_batch_negatives, _in_batch, [
        (lambda a, p, scale=20.0: _in_batch(a, p, normalise=False), "dot products"),
        (lambda a, p, scale=20.0: _in_batch(a, p, scale=1.0), "not multiplied by scale"),
        (lambda a, p, scale=20.0: F.cross_entropy(scale * F.normalize(a, dim=-1) @ F.normalize(p, dim=-1).T,
                                                   torch.arange(len(a)).flip(0)), "column i"),
    ]),
])
def test_review_checkers_pass_the_reference_and_name_each_mistake(checker, right, wrongs):
    assert checker(right, quiet=True), checker(right, quiet=True).message
    for wrong, hint in wrongs:
        r = checker(wrong, quiet=True)
        assert not r and hint in r.message, (hint, r.message)
    r = checker(lambda *a, **k: (_ for _ in ()).throw(NotImplementedError()), quiet=True)
    assert not r and "not implemented yet" in r.message

# ---- LoRA (chapter "Adapting a model") ------------------------------------------------------------------
def _lora_class(*, b_random: bool = False, scale: str = "alpha/r"):
    from torch import nn

    class MyLoRA(nn.Module):
        def __init__(self, base, rank, alpha):
            super().__init__()
            self.base = base.requires_grad_(False)
            self.lora_A = nn.Parameter(torch.randn(rank, base.in_features) * 0.1)
            self.lora_B = nn.Parameter(torch.randn(base.out_features, rank) if b_random
                                       else torch.zeros(base.out_features, rank))
            self.scaling = {"alpha/r": alpha / rank, "none": 1.0, "alpha": alpha}[scale]

        def forward(self, x):
            return self.base(x) + self.scaling * (x @ self.lora_A.t() @ self.lora_B.t())

    return MyLoRA


def test_check_lora_linear_passes_the_package_and_a_hand_version():
    from gptlearn.lora import LoRALinear

    assert ex.check_lora_linear(LoRALinear, quiet=True)
    assert ex.check_lora_linear(_lora_class(), quiet=True)


@pytest.mark.parametrize("kwargs, hint", [
    ({"b_random": True}, "initialise lora_B to zeros"),
    ({"scale": "none"}, "not scaled: multiply x Aᵀ Bᵀ by alpha / rank"),
    ({"scale": "alpha"}, "the scale is alpha; it should be alpha / rank"),
])
def test_check_lora_linear_names_the_mistake(kwargs, hint):
    r = ex.check_lora_linear(_lora_class(**kwargs), quiet=True)
    assert not r and hint in r.message
