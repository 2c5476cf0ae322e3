"""GPTConfig: presets, validation, and the round trip through Hugging Face's GPT2Config."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from gptlearn import GPT, PRESETS, GPTConfig

# Parameter counts of the four released GPT-2 sizes (tied unembedding counted once), as reported by
# transformers' GPT2LMHeadModel(...).num_parameters().
RELEASED = {
    "gpt2": (124_439_808, 12, 12, 768),
    "gpt2-medium": (354_823_168, 24, 16, 1024),
    "gpt2-large": (774_030_080, 36, 20, 1280),
    "gpt2-xl": (1_557_611_200, 48, 25, 1600),
}


@pytest.mark.parametrize("name", RELEASED)
def test_preset_parameter_count_exact(name):
    n_params, n_layer, n_head, n_embd = RELEASED[name]
    cfg = GPTConfig.from_preset(name)
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.vocab_size, cfg.n_positions) == (
        n_layer, n_head, n_embd, 50257, 1024)
    with torch.device("meta"):  # shapes only, nothing allocated
        model = GPT(cfg)
    assert model.num_parameters() == n_params
    assert model.lm_head.weight is model.wte.weight  # tied, so counted once
    wte_wpe = cfg.vocab_size * n_embd + cfg.n_positions * n_embd
    assert model.num_parameters(exclude_embeddings=True) == n_params - wte_wpe


def test_every_preset_builds_and_derived_sizes():
    for name, cfg in PRESETS.items():
        assert cfg.d_head * cfg.n_head == cfg.n_embd, name
        assert cfg.d_mlp == 4 * cfg.n_embd, name
    assert GPTConfig.from_preset("gpt2").d_head == 64
    assert GPTConfig(n_embd=64, n_head=4, n_inner=100).d_mlp == 100


def test_from_preset_overrides_and_unknown_name():
    cfg = GPTConfig.from_preset("tiny", vocab_size=65, n_positions=32)
    assert (cfg.vocab_size, cfg.n_positions, cfg.n_layer) == (65, 32, PRESETS["tiny"].n_layer)
    assert PRESETS["tiny"].vocab_size == 50257  # the preset itself is unchanged
    with pytest.raises(ValueError, match="unknown preset 'gpt3'.*choose one of"):
        GPTConfig.from_preset("gpt3")


def test_config_is_frozen():
    cfg = GPTConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_layer = 3  # type: ignore[misc]
    assert cfg.replace(n_layer=3).n_layer == 3


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(n_embd=30, n_head=4), r"divisible by n_head"),
        (dict(n_layer=0), r"n_layer must be a positive integer"),
        (dict(n_head=0), r"n_head must be a positive integer"),
        (dict(n_embd=-8), r"n_embd must be a positive integer"),
        (dict(vocab_size=0), r"vocab_size"),
        (dict(n_positions=2.5), r"n_positions"),
        (dict(activation_function="relu"), r"activation_function"),
    ],
)
def test_bad_config_raises_value_error(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        GPTConfig(**kwargs)


def test_from_hf_dict_round_trip():
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2Config(n_layer=3, n_head=6, n_embd=96, n_positions=48, vocab_size=1000,
                                 layer_norm_epsilon=1e-6, activation_function="gelu", resid_pdrop=0.05,
                                 embd_pdrop=0.0, attn_pdrop=0.2, initializer_range=0.03,
                                 bos_token_id=1, eos_token_id=2)
    cfg = GPTConfig.from_hf_dict(hf.to_dict())
    assert cfg == GPTConfig(n_layer=3, n_head=6, n_embd=96, n_positions=48, vocab_size=1000, n_inner=None,
                            layer_norm_epsilon=1e-6, activation_function="gelu", resid_pdrop=0.05,
                            embd_pdrop=0.0, attn_pdrop=0.2, initializer_range=0.03,
                            bos_token_id=1, eos_token_id=2)
    # and back: transformers reads our dict into the same config
    back = transformers.GPT2Config(**cfg.to_hf_dict())
    for f in dataclasses.fields(GPTConfig):
        assert getattr(back, f.name) == getattr(hf, f.name), f.name
    assert GPTConfig.from_hf_dict(back.to_dict()) == cfg


def test_to_hf_dict_loads_into_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = GPTConfig.from_preset("gpt2-medium")
    d = cfg.to_hf_dict()
    assert d["model_type"] == "gpt2" and d["n_ctx"] == d["n_positions"] == 1024
    hf = transformers.GPT2Config.from_dict(d)
    assert (hf.n_layer, hf.n_head, hf.n_embd, hf.vocab_size, hf.n_positions) == (24, 16, 1024, 50257, 1024)
    assert hf.tie_word_embeddings and hf.scale_attn_weights
    # via a config.json on disk, the way save_pretrained writes it
    import json

    (tmp_path / "config.json").write_text(json.dumps(d))
    hf2 = transformers.AutoConfig.from_pretrained(tmp_path)
    assert type(hf2).__name__ == "GPT2Config" and hf2.n_layer == 24


def test_from_hf_dict_old_n_ctx_and_unknown_keys():
    cfg = GPTConfig.from_hf_dict({"n_ctx": 256, "n_embd": 64, "n_head": 4, "n_layer": 2, "foo": 1})
    assert cfg.n_positions == 256 and cfg.n_layer == 2


def test_from_hf_dict_refuses_other_architectures():
    with pytest.raises(ValueError, match="not a GPT-2 config"):
        GPTConfig.from_hf_dict({"model_type": "llama", "n_embd": 64})


@pytest.mark.parametrize("option", [{"scale_attn_by_inverse_layer_idx": True}, {"scale_attn_weights": False},
                                    {"add_cross_attention": True}, {"tie_word_embeddings": False}])
def test_from_hf_dict_refuses_gpt2_variants_it_would_compute_wrongly(option):
    # these GPT2Config switches change the computation; silently ignoring them would give wrong logits
    d = {"model_type": "gpt2", "n_embd": 64, "n_head": 4, "n_layer": 2, **option}
    with pytest.raises(ValueError, match=next(iter(option))):
        GPTConfig.from_hf_dict(d)


# ---- sizes: estimated from the numbers, refused before allocating ---------------------------------------------
@pytest.mark.parametrize("shape", [dict(n_layer=1, n_head=2, n_embd=16, n_positions=32, vocab_size=300),
                                   dict(n_layer=3, n_head=4, n_embd=32, n_inner=40, vocab_size=97)])
def test_num_parameters_counts_the_built_model(shape):
    config = GPTConfig(**shape)
    assert config.num_parameters() == GPT(config).num_parameters()
    assert config.estimate_bytes() == 4 * config.num_parameters()  # fp32 weights, no batch


@pytest.mark.parametrize("changes, words", [
    (dict(n_layer=1000, n_embd=4096), ["n_layer=1000", "its weights"]),  # within LIMITS, beyond 8 GiB
    (dict(vocab_size=2_000_000, n_embd=4096), ["vocab_size=2000000"]),
    (dict(n_layer=1024, n_embd=65536), ["n_layer=1024", "n_embd=65536"]),  # the largest shape LIMITS allow
])
def test_a_model_too_large_for_the_machine_is_refused_before_allocating(monkeypatch, changes, words):
    import gptlearn.config as config_module
    from gptlearn import GptlearnError

    monkeypatch.setattr(config_module, "physical_memory", lambda: 8 * 2 ** 30)
    config = GPTConfig.from_preset("tiny", **changes)
    with pytest.raises(GptlearnError, match="this machine has 8.0 GiB") as info:
        GPT(config)  # would take minutes or a MemoryError without the estimate
    assert all(w in str(info.value) for w in words), str(info.value)


def test_a_batch_too_large_for_the_machine_is_refused(monkeypatch):
    import gptlearn.config as config_module
    from gptlearn import GptlearnError

    monkeypatch.setattr(config_module, "physical_memory", lambda: 8 * 2 ** 30)
    config = GPTConfig.from_preset("tiny")
    config.check_fits(batch_size=64, block_size=128, training=True)  # a sensible batch passes
    with pytest.raises(GptlearnError, match="batches of 100000000 x 128 tokens"):
        config.check_fits(batch_size=100_000_000, block_size=128, training=True)
