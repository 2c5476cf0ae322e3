"""gptlearn.analysis: 2-D maps of embeddings (PCA against the SVD, UMAP repeatable). The head scores and
bits per byte are measured on the bundled model in test_mini.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gptlearn import analysis


def test_pca_2d_matches_the_top_two_principal_directions(blobs):
    x, _ = blobs
    out = analysis.pca_2d(x)
    assert out.shape == (18, 2) and np.isfinite(out).all()
    xc = x - x.mean(0)
    var = xc.var(0).sum()
    # the first two components keep the variance the top two singular values say they do (tol 1e-8)
    s = np.linalg.svd(xc, compute_uv=False)
    np.testing.assert_allclose(out.var(0) * len(x), s[:2] ** 2, rtol=1e-8)
    assert out.var(0).sum() <= var + 1e-9
    np.testing.assert_array_equal(out, analysis.pca_2d(x))  # deterministic, signs fixed
    np.testing.assert_allclose(analysis.pca_2d(-x), out, atol=1e-9)  # flipping the data does not flip the map


def test_pca_2d_rejects_a_single_row():
    with pytest.raises(ValueError, match="at least two rows"):
        analysis.pca_2d(np.ones((1, 4)))


@pytest.mark.slow
def test_umap_2d_is_repeatable_and_handles_tiny_inputs(blobs):
    pytest.importorskip("umap")
    x = blobs[0][::2]  # 9 points, 3 a group
    a, b = analysis.umap_2d(x, seed=3), analysis.umap_2d(x, seed=3)
    assert a.shape == (9, 2) and np.isfinite(a).all()
    np.testing.assert_allclose(a, b)
    assert analysis.umap_2d(x[:4]).shape == (4, 2)  # n=4: n_neighbors capped, random init


@pytest.mark.slow
def test_umap_2d_leaves_pytorchs_thread_count_as_it_was(blobs, monkeypatch):
    """numba's start-up inside UMAP can change PyTorch's thread count (seen: 1 -> 2, and every later
    encode 3-6x slower on two cores); umap_2d puts it back."""
    pytest.importorskip("umap")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        analysis.umap_2d(blobs[0][::2], seed=0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_pca_2d_takes_tensors(blobs):
    x, _ = blobs
    np.testing.assert_allclose(analysis.pca_2d(torch.tensor(x, dtype=torch.float32)),
                               analysis.pca_2d(x.astype(np.float32)), atol=1e-12)


@pytest.mark.parametrize("vocab, want", [(50257, [50256]), (300, [])])
def test_induction_scores_leave_out_the_tokenizers_special_tokens(monkeypatch, random_gpt, vocab, want):
    """GPT-2's vocabulary: <|endoftext|> never appears among the random tokens; another vocabulary with no
    tokenizer attached has no special token to leave out."""
    seen = []
    real = analysis.repeated_random_tokens
    monkeypatch.setattr(analysis, "repeated_random_tokens", lambda *a,
                        **kw: seen.append(kw["exclude"]) or real(*a, **kw))
    model = random_gpt(n_layer=1, n_head=2, n_embd=16, n_positions=32, vocab_size=vocab)
    assert analysis.induction_scores(model, seq_len=8, batch=2).shape == (1, 2)
    assert seen == [want]


@pytest.mark.parametrize("T", [2, 3, 17, 32])
def test_a_head_that_attends_evenly_scores_the_uniform_baseline(random_gpt, T):
    """With zero queries and keys every score is equal, so each head spreads its attention evenly over what
    it may see: its previous-token score is uniform_attention_score(T), far above 1/T for long texts."""
    model = random_gpt(n_layer=2, n_head=4, n_embd=32, n_positions=32, vocab_size=1000)
    C = model.config.n_embd
    with torch.no_grad():
        for block in model.blocks:
            block.attn.c_attn.weight[: 2 * C] = 0  # W_Q and W_K: every score becomes 0
            block.attn.c_attn.bias[: 2 * C] = 0
    tokens = torch.randint(0, 1000, (2, T), generator=torch.Generator().manual_seed(T))
    scores = analysis.previous_token_scores(model, tokens)  # (L, H)
    want = analysis.uniform_attention_score(T)
    torch.testing.assert_close(scores, torch.full((2, 4), want), atol=1e-6, rtol=0)
    if T == 32:
        assert want > 2.5 / T  # the ln T / T baseline, not 1 / T


def test_uniform_attention_score_rejects_too_few_tokens():
    from gptlearn.errors import InvalidTypeError, InvalidValueError

    with pytest.raises(InvalidValueError, match="at least 2"):
        analysis.uniform_attention_score(1)
    with pytest.raises(InvalidTypeError):
        analysis.uniform_attention_score(2.0)


def test_random_neighbours_score_the_neighbour_chance():
    """Random directions in many dimensions make random nearest neighbours: averaged over 400 draws, the
    same-group share of five groups of eight comes to 7/39 (not 1/5), and to the formula for unequal groups."""
    for groups in (["a"] * 8 + ["b"] * 8 + ["c"] * 8 + ["d"] * 8 + ["e"] * 8, ["x"] * 3 + ["y"] * 12):
        g = torch.Generator().manual_seed(len(groups))
        draws = [analysis.neighbour_accuracy(torch.randn(len(groups), 64, generator=g), groups) for _ in range(400)]
        assert abs(np.mean(draws) - analysis.neighbour_chance(groups)) < 0.015
    assert analysis.neighbour_chance(["a"] * 8 + ["b"] * 8 + ["c"] * 8 + ["d"] * 8 + ["e"] * 8) == pytest.approx(7 / 39)
    assert analysis.neighbour_chance(["x"] * 3 + ["y"] * 12) == pytest.approx((3 * 2 + 12 * 11) / 14 / 15)
