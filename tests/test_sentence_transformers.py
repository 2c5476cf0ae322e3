"""sentence-transformers' conventions in the Embedder: ``encode``'s names, defaults and return types,
``similarity``/``similarity_pairwise`` with ``similarity_fn_name``, and a saved embedder that loads as
``SentenceTransformer(folder)`` with the same embeddings.

sentence-transformers (6.2 here) runs beside gptlearn on a tiny random GPT-2 (weights moved off their
initial values). Tolerance: 1e-5 absolute on embeddings (they agree to ~1e-6).
"""
from __future__ import annotations

import inspect
import json
import logging
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from gptlearn import GPT, CharTokenizer, Embedder, GPTConfig, similarity
from gptlearn.embeddings import POOLING

ATOL = 1e-5
SENTENCES = ["Hi", "The quick brown fox jumps over the lazy dog.", "A cat sat on the mat.", "猫がマットの上に座った。",
             "ok 🙂", "Padding never changes a sentence's vector, whatever its length in tokens."]
ST_POOLING = {"mean": "mean", "max": "max", "last": "lasttoken", "first": "cls", "weighted_mean": "weightedmean"}


@pytest.fixture(scope="module")
def model(random_gpt) -> GPT:
    return random_gpt(n_positions=64, vocab_size=50257)


@pytest.fixture(scope="module")
def st():
    return pytest.importorskip("sentence_transformers")


def load_st(st, folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # our folder must load cleanly, without deprecation warnings
        return st.SentenceTransformer(str(folder), device="cpu")


# ---- encode: names, defaults, return types --------------------------------------------------------------
ENCODE_OPTIONS = ["batch_size", "show_progress_bar", "convert_to_numpy", "convert_to_tensor", "normalize_embeddings",
                  "device"]


def test_encode_has_sentence_transformers_names_and_defaults(st):
    ours = inspect.signature(Embedder.encode).parameters
    theirs = inspect.signature(st.SentenceTransformer.encode).parameters
    for name in ENCODE_OPTIONS:
        assert ours[name].default == theirs[name].default, name


@pytest.mark.parametrize("kwargs", [{}, {"convert_to_tensor": True}, {"convert_to_numpy": False},
                                    {"normalize_embeddings": True},
                                    {"convert_to_tensor": True, "convert_to_numpy": False},
                                    {"batch_size": 1, "device": "cpu"}], ids=str)
@pytest.mark.parametrize("single", [False, True], ids=["list", "str"])
def test_encode_returns_what_sentence_transformers_returns(model, st, tmp_path_factory, kwargs, single):
    embedder = Embedder(model)
    folder = embedder.save_pretrained(tmp_path_factory.mktemp("st"))
    theirs_model = load_st(st, folder)
    inputs = SENTENCES[1] if single else SENTENCES
    ours, theirs = embedder.encode(inputs, **kwargs), theirs_model.encode(inputs, **kwargs)
    assert type(ours) is type(theirs)
    if isinstance(ours, list):
        assert len(ours) == len(theirs) and all(isinstance(v, torch.Tensor) for v in ours)
        ours, theirs = torch.stack(ours), torch.stack(theirs)
    assert tuple(ours.shape) == tuple(theirs.shape) == ((32,) if single else (len(SENTENCES), 32))
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=0, atol=ATOL)


def test_show_progress_bar_none_follows_the_logger(model, capsys):
    embedder = Embedder(model)
    embedder.encode(SENTENCES)
    assert "Embedding" not in capsys.readouterr().err  # WARNING level by default: no bar
    logger = logging.getLogger("gptlearn.embeddings")
    logger.setLevel(logging.INFO)
    try:
        embedder.encode(SENTENCES)
    finally:
        logger.setLevel(logging.NOTSET)
    assert "Embedding" in capsys.readouterr().err
    embedder.encode(SENTENCES, show_progress_bar=False)
    assert "Embedding" not in capsys.readouterr().err


def test_encode_options_are_keywords(model):
    with pytest.raises(TypeError):
        Embedder(model).encode(SENTENCES, 8)  # sentence-transformers' 2nd positional is prompt_name, not batch_size


# ---- similarity: similarity_fn_name, (N, M), negative distances -----------------------------------------------
@pytest.mark.parametrize("name", ["cosine", "dot", "euclidean", "manhattan"])
def test_similarity_equals_sentence_transformers(model, st, name):
    embedder = Embedder(model, similarity_fn_name=name)
    a, b = embedder.encode(SENTENCES[:4]), embedder.encode(SENTENCES[2:])
    theirs = st.SentenceTransformer(modules=[nn.Identity()], device="cpu", similarity_fn_name=name)
    got = embedder.similarity(a, b)
    assert isinstance(got, torch.Tensor) and got.shape == (4, 4)
    torch.testing.assert_close(got, theirs.similarity(a, b), rtol=0, atol=ATOL)
    torch.testing.assert_close(embedder.similarity_pairwise(a, b), theirs.similarity_pairwise(a, b), rtol=0, atol=ATOL)
    torch.testing.assert_close(embedder.similarity(a[0], b), theirs.similarity(a[0], b), rtol=0, atol=ATOL)  # (1, M)
    torch.testing.assert_close(embedder.similarity(list(torch.as_tensor(a)), b), got, rtol=0, atol=0)
    if name in ("euclidean", "manhattan"):  # larger = more similar: minus gptlearn.similarity's distance
        distance = getattr(similarity, name)(a, b)
        np.testing.assert_allclose(got.numpy(), -distance, rtol=0, atol=1e-4)
        assert (got <= 0).all()


def test_similarity_fn_name_is_checked_and_saved(model, tmp_path):
    with pytest.raises(ValueError, match="unknown similarity_fn_name 'l2'; choose one of cosine, dot"):
        Embedder(model, similarity_fn_name="l2")
    embedder = Embedder(model)
    assert embedder.similarity_fn_name == "cosine"
    embedder.similarity_fn_name = "dot"
    folder = embedder.save_pretrained(tmp_path / "e")
    assert json.loads((folder / "embedder.json").read_text())["similarity_fn_name"] == "dot"
    assert Embedder.from_pretrained(folder).similarity_fn_name == "dot"


# ---- saved by gptlearn, loaded by sentence-transformers -------------------------------------------------------
@pytest.mark.parametrize("with_projection", [False, True], ids=["plain", "projection"])
@pytest.mark.parametrize("pooling", POOLING)
def test_saved_embedder_loads_in_sentence_transformers(model, st, tmp_path, pooling, with_projection):
    torch.manual_seed(1)
    projection = nn.Linear(32, 12) if with_projection else None
    embedder = Embedder(model, pooling=pooling, max_length=40, projection=projection, similarity_fn_name="manhattan")
    folder = embedder.save_pretrained(tmp_path / "embedder")
    theirs = load_st(st, folder)
    pools = [m for m in theirs if type(m).__name__ == "Pooling"]
    assert len(pools) == 1 and pools[0].pooling_mode == ST_POOLING[pooling]
    assert [type(m).__name__ for m in theirs] == ["Transformer", "Pooling", *(["Dense"] if with_projection else [])]
    assert theirs.max_seq_length == 40 and theirs.similarity_fn_name == "manhattan"
    tokenizer = theirs[0].tokenizer
    assert tokenizer.padding_side == "right" and tokenizer.pad_token == "<|endoftext|>"
    want = theirs.encode(SENTENCES, batch_size=3)
    got = embedder.encode(SENTENCES, batch_size=3)
    assert got.shape == want.shape == (len(SENTENCES), 12 if with_projection else 32)
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    # and back: gptlearn reads its own folder as it wrote it
    np.testing.assert_allclose(Embedder.from_pretrained(folder).encode(SENTENCES), got, rtol=0, atol=ATOL)


def test_saved_folder_is_loadable_by_hugging_face(model, tmp_path):
    transformers = pytest.importorskip("transformers")
    folder = Embedder(model).save_pretrained(tmp_path / "e")
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert tok(SENTENCES[1])["input_ids"] == model.tokenizer.encode(SENTENCES[1])
    assert tok.pad_token_id == 50256 and tok.padding_side == "right"
    hf = transformers.AutoModel.from_pretrained(str(folder)).eval()
    ids = model.to_tokens(SENTENCES[1])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).last_hidden_state, model.hidden_states(ids), rtol=0, atol=ATOL)


def test_what_cannot_be_exported_says_why(model, tmp_path):
    folder = tmp_path / "e"
    Embedder(model).save_pretrained(folder)
    assert (folder / "modules.json").is_file()
    middle = Embedder(model, layer=0)
    with pytest.raises(ValueError, match="pools layer 0, and sentence-transformers pools the last hidden state"):
        middle.save_pretrained(folder, sentence_transformers=True)
    middle.save_pretrained(folder)  # by default: the gptlearn folder only, and no stale sentence-transformers files
    assert not (folder / "modules.json").exists() and not (folder / "1_Pooling").exists()
    assert Embedder.from_pretrained(folder).layer == 0

    torch.manual_seed(0)
    chars = CharTokenizer.from_text("abcdefgh ")
    char_model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, n_positions=32, vocab_size=chars.vocab_size))
    char_embedder = Embedder(char_model, tokenizer=chars)
    with pytest.raises(ValueError, match="its tokenizer is a CharTokenizer.*byte-level BPE"):
        char_embedder.save_pretrained(tmp_path / "c", sentence_transformers=True)
    char_embedder.save_pretrained(tmp_path / "c")
    assert not (tmp_path / "c" / "modules.json").exists()
    Embedder(model).save_pretrained(tmp_path / "n", sentence_transformers=False)
    assert not (tmp_path / "n" / "modules.json").exists()
