"""W_QK, W_OV and composition scores: the matrices must reproduce the model's own attention scores and
head outputs (biases set to zero, where the bilinear forms are exact). Tolerance 1e-4."""
from __future__ import annotations

import math

import pytest
import torch

from gptlearn.analysis import composition_scores, head_qk_ov
from gptlearn.errors import InvalidValueError


@pytest.fixture(scope="module")
def model():
    from tests.conftest import _random_gpt

    m = _random_gpt(seed=2, noise=0.1, n_layer=3, vocab_size=61)
    with torch.no_grad():
        for block in m.blocks:
            block.ln_1.bias.zero_()
            block.attn.c_attn.bias.zero_()
    return m


def test_qk_and_ov_reproduce_scores_and_head_outputs(model):
    tokens = torch.randint(0, 61, (2, 7), generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(tokens)
    hs = model.config.n_embd // model.config.n_head
    for layer in range(3):
        W_QK, W_OV = head_qk_ov(model, layer)  # (H, C, C)
        x = cache["resid_pre", layer]
        xn = (x - x.mean(-1, keepdim=True)) / cache["scale", layer, "ln1"]  # (B, T, C), before gamma
        scores = torch.einsum("bic,hcd,bjd->bhij", xn, W_QK, xn) / math.sqrt(hs)
        mask = torch.ones(7, 7, dtype=torch.bool).tril()
        torch.testing.assert_close(scores[..., mask], cache["attn_scores", layer][..., mask], atol=1e-4, rtol=1e-4)
        per_head = torch.einsum("bhij,bjc,hcd->bihd", cache["pattern", layer], xn, W_OV)  # (B, T, H, C)
        torch.testing.assert_close(per_head, cache.head_results(layer), atol=1e-4, rtol=1e-4)


def test_composition_score_by_hand(model):
    k = composition_scores(model, "k")
    assert k.shape == (3, 4, 3, 4) and torch.all(k[1, :, 0] == 0) and torch.all(k[2, :, :3] == 0)
    _, ov0 = head_qk_ov(model, 0)
    qk2, ov2 = head_qk_ov(model, 2)
    A, B = ov0[1], qk2[3].T
    assert abs(k[0, 1, 2, 3] - (A @ B).norm() / (A.norm() * B.norm())) < 1e-5
    v = composition_scores(model, "v")
    assert abs(v[0, 1, 2, 3] - (A @ ov2[3]).norm() / (A.norm() * ov2[3].norm())) < 1e-5
    assert ((k > 0) & (k < 1)).sum() == k.count_nonzero()
    with pytest.raises(InvalidValueError, match="kind must be"):
        composition_scores(model, "x")
