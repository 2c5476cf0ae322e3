"""LoRALinear and add_lora: the update it adds, its zero start, merging, and parity with Hugging Face PEFT
(skipped when peft is not installed). Tolerances: 1e-5 in float32."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from gptlearn import GptlearnError
from gptlearn.fast import Linear as FastLinear
from gptlearn.lora import LoRALinear, add_lora, lora_layers, merge_lora


def _randomised(layer: LoRALinear, seed: int = 1) -> LoRALinear:
    """B moved off zero, so the update is not zero."""
    torch.manual_seed(seed)
    with torch.no_grad():
        layer.lora_B.normal_(std=0.1)
    return layer


def test_starts_as_the_base_layer_and_adds_scaled_low_rank_update():
    torch.manual_seed(0)
    base = nn.Linear(16, 24)
    layer = LoRALinear(base, rank=4, alpha=12)
    x = torch.randn(3, 5, 16)
    assert torch.equal(layer(x), base(x))  # B = 0: exactly the base layer
    _randomised(layer)
    want = x @ base.weight.t() + base.bias + 3.0 * (x @ layer.lora_A.t() @ layer.lora_B.t())  # alpha / r = 3
    torch.testing.assert_close(layer(x), want, rtol=0, atol=1e-5)
    assert not base.weight.requires_grad and not base.bias.requires_grad
    assert layer.lora_A.requires_grad and layer.lora_B.requires_grad


def test_at_the_start_only_b_gets_a_gradient():
    """B = 0 makes A's gradient zero at first; A random makes B's gradient non-zero (else nothing would learn)."""
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(8, 8), rank=2)
    layer(torch.randn(4, 8)).pow(2).sum().backward()
    assert torch.count_nonzero(layer.lora_A.grad) == 0
    assert torch.count_nonzero(layer.lora_B.grad) > 0


def test_merge_gives_the_same_outputs_and_keeps_the_layer_class(random_gpt):
    model = random_gpt()
    base = model.blocks[0].attn.c_attn
    assert type(base) is FastLinear
    layer = _randomised(LoRALinear(base, rank=3, alpha=6))
    x = torch.randn(2, 7, base.in_features)
    merged = layer.merge()
    assert type(merged) is FastLinear
    torch.testing.assert_close(merged(x), layer(x), rtol=0, atol=1e-5)
    torch.testing.assert_close(merged.weight - base.weight, layer.delta_weight(), rtol=0, atol=1e-6)


def test_add_lora_freezes_the_model_and_merge_lora_restores_plain_layers(random_gpt):
    model = random_gpt()
    idx = torch.randint(0, 1000, (2, 9))
    adapters = add_lora(model, rank=4, targets=("c_attn", "c_fc"))
    assert sorted(adapters) == [f"blocks.{i}.{m}" for i in range(2) for m in ("attn.c_attn", "mlp.c_fc")]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    C = model.config.n_embd
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 2 * 4 * ((C + 3 * C) + (C + 4 * C))
    for a in adapters.values():
        _randomised(a)
    with torch.no_grad():
        adapted = model(idx)
        merge_lora(model)
        assert lora_layers(model) == {}
        torch.testing.assert_close(model(idx), adapted, rtol=0, atol=1e-5)


@pytest.mark.parametrize("rank", [0, -1, 33, True, 2.5])
def test_a_rank_that_does_not_fit_is_refused(rank):
    with pytest.raises(GptlearnError, match="rank"):
        LoRALinear(nn.Linear(32, 96), rank=rank)


def test_unknown_targets_are_refused(random_gpt):
    with pytest.raises(GptlearnError, match="no nn.Linear"):
        add_lora(random_gpt(), rank=2, targets=("q_proj",))


def test_equal_to_peft_lora_with_the_same_a_and_b(random_gpt):
    peft = pytest.importorskip("peft")
    ours, theirs = random_gpt(), random_gpt()
    idx = torch.randint(0, 1000, (2, 11))
    adapters = add_lora(ours, rank=4, alpha=8, targets=("c_attn",))
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], lora_dropout=0.0)
    wrapped = peft.get_peft_model(theirs, config)
    with torch.no_grad():
        for i, (name, adapter) in enumerate(adapters.items()):
            _randomised(adapter, seed=i)
            module = wrapped.base_model.model.get_submodule(name)
            assert module.scaling["default"] == adapter.scaling
            module.lora_A["default"].weight.copy_(adapter.lora_A)  # (r, in), PEFT's nn.Linear(in, r)
            module.lora_B["default"].weight.copy_(adapter.lora_B)  # (out, r)
        torch.testing.assert_close(ours(idx), wrapped(idx), rtol=0, atol=1e-5)
        merge_lora(ours)
        merged = wrapped.merge_and_unload()
        torch.testing.assert_close(ours(idx), merged(idx), rtol=0, atol=1e-5)
