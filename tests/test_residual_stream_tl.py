"""The residual-stream methods beside TransformerLens itself (``transformer_lens`` 4.x: ``TransformerBridge``
around the same weights), skipped where it is not installed, as tests/test_transformerlens_conventions.py does.
Compared where both mean the same thing: the stacks and their labels, and LayerNorm applied with the cached
scale (neither side applies gamma or beta there). Tolerance 1e-5 in fp32."""
from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("transformer_lens") is None,
                                reason="transformer_lens is not installed (optional: pip install transformer-lens)")
ATOL = 1e-5


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    from transformer_lens.model_bridge import TransformerBridge

    from tests.conftest import _random_gpt

    model = _random_gpt(n_positions=64, vocab_size=50257)
    folder = model.save_pretrained(tmp_path_factory.mktemp("tl-model"))
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder)
    tok = transformers.GPT2TokenizerFast.from_pretrained(folder)
    bridge = TransformerBridge.boot_transformers(str(folder), hf_model=hf, tokenizer=tok, device="cpu")
    ids = model.to_tokens(["The big red car drove quickly", "A cat sat"], prepend_bos=True)
    return model.run_with_cache(ids)[1], bridge.run_with_cache(ids)[1]


@pytest.mark.parametrize("method, kwargs", [
    ("decompose_resid", {}), ("decompose_resid", {"layer": 1, "mlp_input": True}),
    ("decompose_resid", {"mode": "attn"}),
    ("accumulated_resid", {}), ("accumulated_resid", {"layer": 1, "incl_mid": True}),
    ("stack_head_results", {}), ("stack_head_results", {"layer": 1, "incl_remainder": True}),
    ("decompose_resid", {"apply_ln": True, "pos_slice": -1}), ("stack_head_results", {"apply_ln": True}),
])
def test_stacks_equal_transformer_lens(pair, method, kwargs):
    ours, theirs = pair
    a, labels_a = getattr(ours, method)(return_labels=True, **kwargs)
    b, labels_b = getattr(theirs, method)(return_labels=True, **kwargs)
    assert labels_a == labels_b
    torch.testing.assert_close(a, b, rtol=0, atol=ATOL)


def test_apply_ln_to_stack_equals_transformer_lens(pair):
    ours, theirs = pair
    stack = ours.decompose_resid(1)
    torch.testing.assert_close(ours.apply_ln_to_stack(stack, 1), theirs.apply_ln_to_stack(stack, 1), rtol=0, atol=ATOL)
    last = ours.decompose_resid()[:, :, -1]
    torch.testing.assert_close(ours.apply_ln_to_stack(last, None, pos_slice=-1),
                               theirs.apply_ln_to_stack(last, None, pos_slice=-1), rtol=0, atol=ATOL)
