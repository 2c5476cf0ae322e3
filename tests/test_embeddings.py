"""Pooling, the Embedder, and parity with sentence-transformers on a tiny random GPT-2.

Tolerances: 1e-5 absolute for float32 paths that differ only in batching; exact where the same
arithmetic runs. Parity with sentence-transformers: cosine > 0.9999 and max abs diff < 1e-5.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from gptlearn import GPT, Embedder, GptlearnError, GPTConfig
from gptlearn.embeddings import POOLING, pool, token_batches

SENTENCES = [
    "Hi",
    "The quick brown fox jumps over the lazy dog.",
    "A cat sat on the mat.",
    "猫がマットの上に座った。",
    "ok 🙂",
]


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=4, n_embd=32, n_positions=64)).eval()


@pytest.fixture(scope="module")
def model_dir(model, tmp_path_factory):
    return model.save_pretrained(tmp_path_factory.mktemp("tiny-gpt2"))


# ---- pool() on hand-computed tensors ---------------------------------------------------------------
def _hand_case():
    hidden = torch.tensor([[[1.0, -2.0], [3.0, 0.0], [50.0, 50.0]],  # row 0: 2 real tokens + 1 pad
                           [[0.0, 4.0], [2.0, -1.0], [-5.0, 7.0]]])  # row 1: 3 real tokens
    mask = torch.tensor([[True, True, False], [True, True, True]])
    return hidden, mask


@pytest.mark.parametrize("strategy, expected", [
    ("mean", [[2.0, -1.0], [-1.0, 10.0 / 3]]),
    ("max", [[3.0, 0.0], [2.0, 7.0]]),
    ("last", [[3.0, 0.0], [-5.0, 7.0]]),
    ("first", [[1.0, -2.0], [0.0, 4.0]]),
    # weights 1, 2 (, 3) on the real tokens: (1*x0 + 2*x1) / 3 and (1*x0 + 2*x1 + 3*x2) / 6
    ("weighted_mean", [[7.0 / 3, -2.0 / 3], [(4.0 - 15.0) / 6, (4.0 - 2.0 + 21.0) / 6]]),
])
def test_pool_hand_computed(strategy, expected):
    hidden, mask = _hand_case()
    torch.testing.assert_close(pool(hidden, mask, strategy), torch.tensor(expected), rtol=0, atol=1e-6)


def test_pool_ignores_whatever_sits_in_the_padding():
    hidden, mask = _hand_case()
    noisy = hidden.clone()
    noisy[0, 2] = torch.tensor([1e6, -1e6])
    for strategy in POOLING:
        torch.testing.assert_close(pool(noisy, mask, strategy), pool(hidden, mask, strategy), rtol=0, atol=0)


def test_pool_handles_left_padding_for_first_and_last():
    hidden, _ = _hand_case()
    left = torch.tensor([[False, True, True], [True, True, True]])
    torch.testing.assert_close(pool(hidden, left, "first")[0], hidden[0, 1])
    torch.testing.assert_close(pool(hidden, left, "last")[0], hidden[0, 2])


def test_pool_rejects_unknown_strategy_and_bad_shapes():
    hidden, mask = _hand_case()
    with pytest.raises(ValueError, match="unknown pooling 'cls'"):
        pool(hidden, mask, "cls")
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        pool(hidden, mask[:, :2], "mean")


# ---- Embedder ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", POOLING)
def test_batched_equals_one_by_one_and_order_is_kept(model, strategy):
    embedder = Embedder(model, pooling=strategy)
    batched = embedder.encode(SENTENCES, batch_size=3)  # length-sorted, padded batches
    alone = np.stack([embedder.encode(s) for s in SENTENCES])  # each on its own: no padding at all
    assert batched.shape == (len(SENTENCES), 32) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, alone, rtol=0, atol=1e-5)
    reversed_ = embedder.encode(SENTENCES[::-1], batch_size=2)
    np.testing.assert_allclose(reversed_[::-1], batched, rtol=0, atol=1e-5)


def test_encode_runs_the_position_wise_layers_on_real_tokens_only(model):
    """The blocks' MLPs (the first one watched) multiply the batch's real tokens, never its padding."""
    embedder = Embedder(model)
    rows_seen = []
    handle = model.blocks[0].mlp.hook_pre.add_hook(lambda x, hook: rows_seen.append(x.shape[:-1]))
    try:
        embedder.encode(SENTENCES, batch_size=len(SENTENCES))  # one batch, padded to the longest
    finally:
        handle.remove()
    real = sum(len(r) for r in embedder.tokenize(SENTENCES))
    longest = max(len(r) for r in embedder.tokenize(SENTENCES))
    assert real < len(SENTENCES) * longest  # the batch has padding
    assert rows_seen == [torch.Size([real])]


def test_token_batches_pack_short_sentences_within_the_first_batchs_tokens():
    assert token_batches([6, 5, 3, 3, 2, 2, 2, 1], 2) == [(0, 2), (2, 6), (6, 8)]
    assert token_batches([], 4) == [] and token_batches([7], 4) == [(0, 1)]
    lengths = sorted(np.random.default_rng(0).integers(1, 40, 500).tolist(), reverse=True)
    batches = token_batches(lengths, 16)
    assert batches[0] == (0, 16)  # the longest sentences: exactly batch_size of them
    assert [b[0] for b in batches[1:]] == [b[1] for b in batches[:-1]] and batches[-1][1] == 500  # all, once
    assert all((stop - start) * lengths[start] <= 16 * lengths[0] for start, stop in batches)  # never bigger
    assert len(batches) < 500 / 16  # and short sentences share bigger batches
    with pytest.raises(ValueError, match="batch_size"):
        token_batches(lengths, 0)


def test_encode_options(model):
    embedder = Embedder(model)
    unit = embedder.encode(SENTENCES, normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)
    t = embedder.encode(SENTENCES[:2], convert_to_tensor=True)
    assert isinstance(t, torch.Tensor) and t.shape == (2, 32) and not t.requires_grad
    assert embedder.encode("Hi").shape == (32,)
    assert embedder.encode([]).shape == (0, 32)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        embedder.encode(SENTENCES, batch_size=0)
    np.testing.assert_allclose(embedder.encode(SENTENCES, show_progress_bar=True), embedder.encode(SENTENCES),
                               atol=1e-6)
    assert embedder.dimensions == 32


def test_encode_uses_eval_mode_and_restores_each_modules_mode(model):
    embedder = Embedder(model)
    assert not embedder.training  # follows the model it wraps
    embedder.encode(SENTENCES)
    assert not any(m.training for m in embedder.modules())
    embedder.train()  # dropout on: forward() would be random, encode() is not
    a = embedder.encode(SENTENCES)
    b = embedder.encode(SENTENCES)
    np.testing.assert_array_equal(a, b)
    assert all(m.training for m in embedder.modules())
    model.eval()


def test_forward_has_gradients_and_matches_encode(model):
    proj = nn.Linear(32, 8)
    embedder = Embedder(model, pooling="weighted_mean", projection=proj)
    out = embedder(SENTENCES[:3])  # (N, D)
    assert out.shape == (3, 8) and out.requires_grad
    out.pow(2).sum().backward()
    assert proj.weight.grad is not None and model.blocks[0].attn.c_attn.weight.grad is not None
    np.testing.assert_allclose(out.detach().numpy(), embedder.encode(SENTENCES[:3]), atol=1e-5)
    model.zero_grad(set_to_none=True)


def test_empty_sentence_is_a_clear_error(model):
    embedder = Embedder(model)
    with pytest.raises(ValueError, match=r"sentence 3 \(index 2\) is empty"):
        embedder.encode(["a", "b", "", "d"])
    with pytest.raises(TypeError, match="must be a str or a list of str"):
        embedder.encode(["a", 3])
    with pytest.raises(TypeError, match="wrap it in a list"):
        embedder("one sentence")


def test_long_sentences_are_truncated_with_a_warning(model):
    embedder = Embedder(model, max_length=5)
    long = "one two three four five six seven eight nine ten"
    with pytest.warns(UserWarning, match="1 of 2 sentences were longer than 5 tokens"):
        got = embedder.encode([long, "short"])
    first5 = model.tokenizer.encode(long)[:5]
    np.testing.assert_allclose(got[0], embedder.encode(model.tokenizer.decode(first5)), atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        embedder.encode(["short"])  # no warning when nothing is cut


def test_bad_settings(model):
    with pytest.raises(ValueError, match="layer must be an integer in -1..1"):
        Embedder(model, layer=2)
    with pytest.raises(ValueError, match="max_length must be an integer in 1..64"):
        Embedder(model, max_length=65)
    with pytest.raises(ValueError, match="unknown pooling"):
        Embedder(model, pooling="avg")
    with pytest.raises(ValueError, match="projection takes 16"):
        Embedder(model, projection=nn.Linear(16, 4))
    for bad in (1.5, "0", True):  # int(1.5) would have passed before
        with pytest.raises(GptlearnError, match="layer must be an integer"):
            Embedder(model, layer=bad)


@pytest.mark.parametrize("layer", [0, 1])
def test_layer_choice_equals_run_with_cache(model, layer):
    text = "The big red car drove quickly"
    _, cache = model.run_with_cache(text)
    want = cache["resid_post", layer][0].mean(dim=0)  # (T, C) -> (C,)
    got = Embedder(model, layer=layer).encode(text)
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-5)
    last = Embedder(model, pooling="last", layer=layer).encode(text)
    np.testing.assert_allclose(last, cache["resid_post", layer][0, -1].numpy(), rtol=0, atol=1e-5)


def test_layer_minus_one_is_after_the_final_layernorm(model):
    text = "The big red car drove quickly"
    _, cache = model.run_with_cache(text)
    want = model.ln_f(cache["resid_post", 1])[0].mean(dim=0)
    np.testing.assert_allclose(Embedder(model).encode(text), want.detach().numpy(), atol=1e-5)


# ---- saving and loading -----------------------------------------------------------------------------
@pytest.mark.parametrize("with_projection", [False, True])
def test_save_and_load_round_trip(model, tmp_path, with_projection):
    torch.manual_seed(1)
    proj = nn.Linear(32, 12, bias=False) if with_projection else None
    embedder = Embedder(model, pooling="max", layer=0, max_length=40, projection=proj)
    embedder.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "embedder.json").read_text())
    assert saved == {"pooling": "max", "layer": 0, "max_length": 40, "similarity_fn_name": "cosine",
                     "has_projection": with_projection}
    assert (tmp_path / "projection.safetensors").is_file() == with_projection
    assert {"config.json", "model.safetensors", "vocab.json", "merges.txt"} <= {p.name for p in tmp_path.iterdir()}
    loaded = Embedder.from_pretrained(tmp_path)
    assert (loaded.pooling, loaded.layer, loaded.max_length) == ("max", 0, 40)
    assert loaded.dimensions == (12 if with_projection else 32)
    np.testing.assert_array_equal(loaded.encode(SENTENCES), embedder.encode(SENTENCES))
    # overrides replace saved settings; None keeps them
    other = Embedder.from_pretrained(tmp_path, pooling="mean", layer=None)
    assert (other.pooling, other.layer) == ("mean", 0)


def test_resaving_without_projection_removes_the_old_one(model, tmp_path):
    Embedder(model, projection=nn.Linear(32, 4)).save_pretrained(tmp_path)
    Embedder(model).save_pretrained(tmp_path)
    assert not (tmp_path / "projection.safetensors").exists()
    assert Embedder.from_pretrained(tmp_path).dimensions == 32


def test_plain_model_folder_defaults_to_mean(model, model_dir):
    loaded = Embedder.from_pretrained(model_dir)
    assert (loaded.pooling, loaded.layer, loaded.max_length) == ("mean", -1, 64)
    np.testing.assert_array_equal(loaded.encode(SENTENCES), Embedder(model).encode(SENTENCES))


def test_broken_folders_say_what_is_wrong(model, tmp_path):
    Embedder(model, projection=nn.Linear(32, 4)).save_pretrained(tmp_path)
    (tmp_path / "projection.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="projection.safetensors is missing"):
        Embedder.from_pretrained(tmp_path)
    (tmp_path / "embedder.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid embedder.json"):
        Embedder.from_pretrained(tmp_path)
    with pytest.raises(TypeError, match="unknown option"):
        Embedder.from_pretrained(tmp_path, pooling_mode="mean")


# ---- parity with sentence-transformers --------------------------------------------------------------
@pytest.mark.slow  # importing sentence-transformers takes several seconds
@pytest.mark.parametrize("ours, theirs", [("mean", "mean"), ("max", "max"), ("last", "lasttoken"),
                                           ("first", "cls"), ("weighted_mean", "weightedmean")])
def test_parity_with_sentence_transformers(model_dir, ours, theirs):
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # older sentence-transformers
        from sentence_transformers.models import Pooling, Transformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformer = Transformer(str(model_dir))  # transformers' GPT2Model + GPT2Tokenizer from our files
        if transformer.tokenizer.pad_token is None:
            transformer.tokenizer.pad_token = transformer.tokenizer.eos_token
        st = SentenceTransformer(modules=[transformer, Pooling(32, theirs)], device="cpu")
        want = st.encode(SENTENCES, batch_size=8)
    got = Embedder.from_pretrained(model_dir, pooling=ours).encode(SENTENCES, batch_size=8)
    cos = (want * got).sum(1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.min() > 0.9999
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
