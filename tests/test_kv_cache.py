"""gptlearn.kv_cache: the cache's bookkeeping, and cached steps equal to the full forward pass."""
from __future__ import annotations

import pytest
import torch

from gptlearn import GPT, GPTConfig, KVCache


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, n_positions=16, vocab_size=1000, initializer_range=0.2)).eval()


def test_kv_cache_bookkeeping(model):
    cache = KVCache.for_model(model, batch=2)
    assert cache.k.shape == (2, 2, 2, 16, 16) and cache.pos == 0  # (L, B, H, max_len, hs)
    p = torch.randint(0, 1000, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(p)
        part = torch.cat([model(p[:, :6], kv_cache=cache), model(p[:, 6:9], kv_cache=cache),
                          model(p[:, 9:], kv_cache=cache)], dim=1)
    assert cache.pos == 10
    torch.testing.assert_close(part, full, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="longer than the context"):
        model(p[:, :7], kv_cache=cache)  # 10 + 7 > 16
    small = KVCache(1, 1, 1, 4, 2, device="cpu", dtype=torch.float32)
    with pytest.raises(ValueError, match="KV cache is full"):
        small.update(0, torch.zeros(1, 1, 5, 2), torch.zeros(1, 1, 5, 2))
    cache.reset()
    assert cache.pos == 0
    with torch.no_grad():
        torch.testing.assert_close(model(p[:, :4], kv_cache=cache), full[:, :4], rtol=0, atol=1e-5)
