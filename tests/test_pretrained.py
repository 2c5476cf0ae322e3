"""Weights on disk: Hugging Face folders in and out, old checkpoints, clear errors, load_model().

Tolerances: fp32 logits within 1e-4 of transformers; a gptlearn save/load round trip is exact.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from gptlearn import GPT, PretrainedNotAvailableError, load_model
from gptlearn import pretrained
from gptlearn.model import from_pretrained
from gptlearn.folders import MANIFEST
from gptlearn.names import OFFLINE_MODEL
from gptlearn.pretrained import gptlearn_to_hf, hf_to_gptlearn

transformers = pytest.importorskip("transformers")

LOGITS_ATOL = 1e-4

SHAPES = [(1, 1, 16, 32, 1000), (2, 4, 64, 64, 50257), (3, 6, 96, 128, 1000)]


def save_bin(hf, folder: Path, state=None) -> Path:
    """The pre-safetensors layout: config.json + a pickled pytorch_model.bin."""
    folder.mkdir(parents=True, exist_ok=True)
    hf.config.save_pretrained(folder)
    torch.save(hf.state_dict() if state is None else state, folder / "pytorch_model.bin")
    return folder


def assert_same_logits(model, hf, vocab, n_positions):
    torch.manual_seed(1)
    idx = torch.randint(0, vocab, (2, min(n_positions, 24)))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf(idx).logits, rtol=0, atol=LOGITS_ATOL)
        h = hf(idx, output_hidden_states=True).hidden_states
        torch.testing.assert_close(model.hidden_states(idx), h[-1], rtol=0, atol=1e-5)
        if model.config.n_layer > 1:  # HF's last hidden state is after ln_f; earlier ones are raw
            torch.testing.assert_close(model.hidden_states(idx, layer=0), h[1], rtol=0, atol=1e-5)


# ---- Hugging Face -> gptlearn ---------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "L{}H{}C{}P{}V{}".format(*s))
def test_from_pretrained_matches_transformers(tmp_path, shape, fmt, random_hf):
    hf = random_hf(*shape)
    if fmt == "safetensors":
        hf.save_pretrained(tmp_path)
        assert (tmp_path / "model.safetensors").is_file()
    else:
        save_bin(hf, tmp_path)
    model = GPT.from_pretrained(tmp_path)
    assert not model.training and model.config.n_layer == shape[0] and model.name_or_path == str(tmp_path)
    assert model.lm_head.weight is model.wte.weight
    assert_same_logits(model, hf, shape[4], shape[3])


def test_old_checkpoint_without_prefix_and_with_mask_buffers(tmp_path, random_hf):
    """GPT-2 checkpoints from the original release: GPT2Model keys (no ``transformer.``), no lm_head,
    causal-mask buffers ``attn.bias``/``attn.masked_bias``, and ``n_ctx`` instead of ``n_positions``."""
    hf = random_hf(2, 2, 32, 16, 500, seed=3)
    state = dict(hf.transformer.state_dict())
    for i in range(2):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(16, 16, dtype=torch.uint8)).view(1, 1, 16, 16)
        state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    assert not any(k.startswith(("transformer.", "lm_head")) for k in state)
    tmp_path.mkdir(exist_ok=True)
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(
        {"n_ctx": 16, "n_embd": 32, "n_head": 2, "n_layer": 2, "vocab_size": 500, "layer_norm_epsilon": 1e-5}))
    model = GPT.from_pretrained(tmp_path)
    assert model.config.n_positions == 16
    assert_same_logits(model, hf, 500, 16)


def test_conversion_functions_are_inverse(random_hf):
    hf = random_hf(2, 4, 64, 64, 1000)
    hf_state = hf.state_dict()
    ours = hf_to_gptlearn(hf_state)
    assert ours["blocks.1.attn.c_attn.weight"].shape == (192, 64)  # nn.Linear: (out, in)
    assert hf_state["transformer.h.1.attn.c_attn.weight"].shape == (64, 192)  # Conv1D: (in, out)
    back = gptlearn_to_hf(ours)
    assert set(back) == set(hf_state) - {"lm_head.weight"}  # the tied unembedding is not stored
    for k, v in back.items():
        torch.testing.assert_close(v, hf_state[k], rtol=0, atol=0)


# ---- gptlearn -> Hugging Face ---------------------------------------------------------------------
@pytest.mark.parametrize("vocab", [1000, 50257])
def test_save_pretrained_loads_in_transformers(tmp_path, vocab, random_gpt):
    model = random_gpt(vocab_size=vocab)
    out = model.save_pretrained(tmp_path / "m")
    assert Path(out) == tmp_path / "m"
    assert not any(p.name.startswith(".tmp") for p in out.iterdir())  # the atomic-write folder is gone
    hf, info = transformers.GPT2LMHeadModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    hf.eval()
    idx = torch.randint(0, vocab, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, model(idx), rtol=0, atol=LOGITS_ATOL)
    # and back into gptlearn, bit for bit
    again = GPT.from_pretrained(out)
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_save_pretrained_writes_gpt2_tokenizer_files(tmp_path, random_gpt):
    model = random_gpt(vocab_size=50257)
    folder = model.save_pretrained(tmp_path)
    assert (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    hf_tok = transformers.GPT2TokenizerFast.from_pretrained(folder)
    assert hf_tok.encode("Hello world") == [15496, 995]
    again = GPT.from_pretrained(folder)
    assert again.tokenizer.encode("Hello world") == [15496, 995]


def test_save_pretrained_without_tokenizer_for_other_vocab(tmp_path, random_gpt):
    folder = random_gpt(vocab_size=1000).save_pretrained(tmp_path)
    assert sorted(p.name for p in folder.iterdir() if p.name != MANIFEST) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["vocab_size"] == 1000


def test_save_into_existing_folder_overwrites(tmp_path, random_gpt):
    random_gpt(seed=1).save_pretrained(tmp_path)
    second = random_gpt(seed=2)
    second.save_pretrained(tmp_path)
    loaded = GPT.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.wte.weight, second.wte.weight, rtol=0, atol=0)


def test_from_pretrained_dtype(tmp_path, random_gpt):
    random_gpt().save_pretrained(tmp_path)
    model = GPT.from_pretrained(tmp_path, dtype=torch.float64, device="cpu")
    assert model.wte.weight.dtype == torch.float64 and model.lm_head.weight is model.wte.weight


# ---- errors ---------------------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path, random_gpt) -> Path:
    return random_gpt(seed=4).save_pretrained(tmp_path / "model")


def test_wrong_shape_raises(saved):
    config = json.loads((saved / "config.json").read_text())
    config["n_embd"] = 64  # weights are 32 wide
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"do not match its config\.json.*size mismatch.*save_pretrained") as e:
        GPT.from_pretrained(saved)
    assert "Error(s) in loading" not in str(e.value)


def test_missing_and_unknown_tensors_raise(tmp_path, random_hf):
    hf = random_hf(1, 1, 16, 32, 1000)
    state = dict(hf.state_dict())
    del state["transformer.h.0.mlp.c_fc.bias"]
    state["transformer.h.0.extra.weight"] = torch.zeros(3)
    save_bin(hf, tmp_path, state)
    with pytest.raises(ValueError, match=r"do not match its config\.json.*c_fc\.bias"):
        GPT.from_pretrained(tmp_path)


def test_truncated_safetensors_raises(saved):
    weights = saved / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"corrupt.*download or save it again"):
        GPT.from_pretrained(saved)


def test_garbage_safetensors_raises(saved):
    (saved / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="corrupt"):
        GPT.from_pretrained(saved)


def test_missing_config_raises(saved):
    (saved / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"config\.json is missing.*save_pretrained"):
        GPT.from_pretrained(saved)


def test_bad_config_json_raises(saved):
    (saved / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"not a valid GPT-2 config"):
        GPT.from_pretrained(saved)


def test_missing_weights_raises(saved):
    (saved / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors or pytorch_model\.bin.*save_pretrained"):
        GPT.from_pretrained(saved)


def test_file_instead_of_folder_raises(saved):
    with pytest.raises(ValueError, match=r"is a file; pass the model folder that contains it"):
        GPT.from_pretrained(saved / "model.safetensors")


def test_unknown_name_raises():
    with pytest.raises(ValueError, match=r"unknown model 'no-such-model'.*gpt2.*gptlearn-mini"):
        GPT.from_pretrained("no-such-model")


def test_pickle_with_arbitrary_objects_is_refused(tmp_path, random_hf):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    hf = random_hf(1, 1, 16, 32, 1000)
    state = dict(hf.state_dict())
    state["transformer.wte.weight"] = Payload()
    save_bin(hf, tmp_path / "evil", state)
    with pytest.raises(ValueError, match="corrupt or not a weights file"):
        GPT.from_pretrained(tmp_path / "evil")
    assert not marker.exists()  # weights_only=True: nothing was unpickled


class _FakeHub:
    """Stands in for huggingface_hub.snapshot_download: nothing cached, no network."""

    def __init__(self):
        self.calls: list[tuple[str, bool]] = []

    def __call__(self, repo_id, **kwargs):
        self.calls.append((repo_id, bool(kwargs.get("local_files_only"))))
        raise OSError("no network in tests")


@pytest.fixture
def fake_hub(monkeypatch):
    hub = pytest.importorskip("huggingface_hub")
    fake = _FakeHub()
    monkeypatch.setattr(hub, "snapshot_download", fake)
    return fake


@pytest.mark.parametrize("name", ["gpt2", "gptlearn-test/does-not-exist"])
def test_hub_name_offline_raises_clear_error(monkeypatch, fake_hub, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedNotAvailableError, match=rf"HF_HUB_OFFLINE.*local model folder.*{OFFLINE_MODEL}"):
        GPT.from_pretrained(name)
    assert fake_hub.calls == [(pretrained.HUB_MODELS.get(name, name), True)]  # only the local cache was asked


def test_hub_name_without_network_raises_clear_error(monkeypatch, fake_hub):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(PretrainedNotAvailableError, match=rf"could not download 'gpt2'.*{OFFLINE_MODEL}"):
        GPT.from_pretrained("gpt2")
    assert [local for _, local in fake_hub.calls] == [True, False]


# ---- load_model and the bundled model -------------------------------------------------------------
def _one_line(capsys) -> str:
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out
    return out


def test_load_model_env_var_picks_folder(monkeypatch, capsys, saved):
    monkeypatch.setenv("GPTLEARN_MODEL", str(saved))
    model = load_model()
    assert model.name_or_path == str(saved) and model.config.n_embd == 32
    line = _one_line(capsys)
    assert str(saved) in line and "as requested" in line and "2 layers" in line


def test_load_model_falls_back_when_offline(monkeypatch, capsys, fake_hub, saved):
    monkeypatch.delenv("GPTLEARN_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the download itself fails (fake_hub)
    monkeypatch.setitem(pretrained.BUNDLED, OFFLINE_MODEL, saved)
    model = load_model()
    assert model.name_or_path == OFFLINE_MODEL
    torch.testing.assert_close(model.wte.weight, GPT.from_pretrained(saved).wte.weight, rtol=0, atol=0)
    line = _one_line(capsys)
    assert OFFLINE_MODEL in line and "offline" in line
    assert fake_hub.calls[0] == ("openai-community/gpt2", True)


def test_missing_bundled_model_raises(monkeypatch, tmp_path):
    monkeypatch.setitem(pretrained.BUNDLED, "gptlearn-mini", tmp_path / "nothing")
    with pytest.raises(PretrainedNotAvailableError, match="gptlearn-mini.*missing"):
        GPT.from_pretrained("gptlearn-mini")


def test_bundled_mini_loads_and_runs():
    model = GPT.from_pretrained("gptlearn-mini")
    assert model.name_or_path == "gptlearn-mini" and not model.training
    idx = torch.randint(0, model.config.vocab_size, (1, 8))
    with torch.no_grad():
        logits = model(idx)
    assert logits.shape == (1, 8, model.config.vocab_size) and torch.isfinite(logits).all()
    assert model.tokenizer.vocab_size <= model.config.vocab_size


def test_load_model_offline_uses_the_real_bundled_model(monkeypatch, capsys, fake_hub):
    monkeypatch.delenv("GPTLEARN_MODEL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model()
    assert model.name_or_path == OFFLINE_MODEL == "gptlearn-english"
    assert model.config.vocab_size == 12_288 and model.tokenizer.encode(" cat") != model.tokenizer.encode(" car")
    assert OFFLINE_MODEL in _one_line(capsys)


def test_loaded_weights_do_not_depend_on_the_file(tmp_path, tiny_model):
    """Weights are read into memory: overwriting the file (e.g. retraining in place) must not change
    or crash a model that is already loaded (a memory-mapped load would see the new bytes)."""
    tiny_model.save_pretrained(tmp_path)
    loaded = from_pretrained(tmp_path)
    idx = torch.arange(10).unsqueeze(0)
    before = loaded(idx)
    weights = tmp_path / "model.safetensors"
    size = weights.stat().st_size
    header = 8 + int.from_bytes(weights.read_bytes()[:8], "little")
    with open(weights, "r+b") as f:  # scribble over every tensor byte, in place
        f.seek(header)
        f.write(os.urandom(size - header))
    torch.testing.assert_close(loaded(idx), before, rtol=0, atol=0)
