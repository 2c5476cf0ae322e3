"""scripts/embedder_grow.py, the step that grew gptlearn-embed from 4 blocks to 5 (docs/gptlearn-embed.md):
the grown embedder computes the same vectors, and its new block learns."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from gptlearn import GPT, Embedder, GPTConfig
from gptlearn.tokenizers import load_tokenizer

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def grow():
    spec = importlib.util.spec_from_file_location("embedder_grow", SCRIPTS / "embedder_grow.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.grow


@pytest.fixture
def embedder():
    torch.manual_seed(0)
    config = GPTConfig(n_layer=2, n_head=4, n_embd=32, n_positions=64, vocab_size=50257)
    model = GPT(config)
    for p in model.parameters():  # well away from zero, so a wrong copy would show in the vectors
        p.data.normal_(0, 0.2)
    return Embedder(model, load_tokenizer("gpt2"), pooling="mean").eval()


SENTENCES = ["The cat is sleeping.", "Ducks.", "The stock market fell sharply today"]


def test_grown_embedder_computes_the_same_vectors(grow, embedder):
    grown = grow(embedder).eval()
    assert grown.model.config.n_layer == 3 and grown.pooling == "mean"
    new = grown.model.blocks[2]
    assert torch.equal(new.attn.c_attn.weight, embedder.model.blocks[1].attn.c_attn.weight)  # a copy of the last
    assert not new.attn.c_proj.weight.any() and not new.mlp.c_proj.bias.any()                 # that adds nothing
    torch.testing.assert_close(torch.as_tensor(grown.encode(SENTENCES)),
                               torch.as_tensor(embedder.encode(SENTENCES)), rtol=0, atol=1e-6)


def test_grown_block_learns(grow, embedder):
    """Its output projections get gradients at once, so distillation can start using the new block."""
    grown = grow(embedder).train()
    grown(SENTENCES).pow(2).sum().backward()  # (3, 32) vectors, with gradients
    new = grown.model.blocks[2]
    assert new.attn.c_proj.weight.grad.abs().sum() > 0 and new.mlp.c_proj.weight.grad.abs().sum() > 0
