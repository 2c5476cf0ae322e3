"""Checkers for chapters 6-10: a right answer passes, each known mistake gets its own hint."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from gptlearn import exercises as ex


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
