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
    monkeypatch.setattr(analysis, "repeated_random_tokens", lambda *a, **kw: seen.append(kw["exclude"]) or real(*a, **kw))
    model = random_gpt(n_layer=1, n_head=2, n_embd=16, n_positions=32, vocab_size=vocab)
    assert analysis.induction_scores(model, seq_len=8, batch=2).shape == (1, 2)
    assert seen == [want]
