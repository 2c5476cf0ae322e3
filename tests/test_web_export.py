"""gptlearn.web's exporter, without a browser or a JavaScript engine: what the page receives is the model.

A golden round trip: export -> read_export gives back every tensor bit for bit, a tokenizer with the same
ids, and the PyTorch check logits the page compares itself with. Bad models are refused before anything
is written.
"""
from __future__ import annotations

import json

import pytest
import torch

from gptlearn import GPT, GPTConfig
from gptlearn.tokenizers import BPETokenizer, CharTokenizer, Tokenizer
from gptlearn.folders import MANIFEST
from gptlearn.web import (BOOK_MAX_PARAMETERS, CHECK_TEXT, DATA_FILE, FORMAT, STATIC_FILES, export, page_model, payload,
                          read_export, static_dir)
import gptlearn.web.exporter as web_export
from gptlearn.names import OFFLINE_MODEL

TEXTS = ["The big red car drove quickly", "日本語のテキスト", "emoji 🙂👍🏽", "  runs   of\n\n\tspace ", "x", ""]


@pytest.fixture(scope="module")
def bpe_model():
    """A tiny random GPT with its own byte-level BPE (300 tokens), as a reader's trained model would be."""
    corpus = ("the cat sat on the mat; the dog ate the hat. A quick brown fox jumps over lazy dogs, "
              "then sleeps. Numbers 12345 and words: running, jumping, eating. 日本語のテキスト 🙂 ") * 20
    tok = Tokenizer.from_bpe(BPETokenizer.train(corpus, vocab_size=300))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=300, n_positions=32, n_embd=16, n_layer=2, n_head=2)).eval()
    model.tokenizer = tok
    model.name_or_path = "tiny-bpe"
    return model


def test_round_trip_is_exact(bpe_model, tmp_path):
    path = export(bpe_model, tmp_path / "site")
    assert path == tmp_path / "site" / DATA_FILE
    assert sorted(p.name for p in path.parent.iterdir() if p.name != MANIFEST) \
        == sorted([DATA_FILE, "index.html", *STATIC_FILES])
    back = read_export(path.parent)
    assert back["format"] == FORMAT and back["name"] == "tiny-bpe" and back["book_model"] is None
    assert back["num_parameters"] == bpe_model.num_parameters()
    state = bpe_model.state_dict()
    assert list(back["state_dict"]) == [*[k for k in state if k != "lm_head.weight"], "lm_head.weight"]
    for name, tensor in state.items():
        assert torch.equal(back["state_dict"][name], tensor), name  # bit for bit
    assert GPTConfig.from_hf_dict(back["config"]) == bpe_model.config
    rebuilt = GPT(GPTConfig.from_hf_dict(back["config"])).eval()
    rebuilt.load_state_dict(back["state_dict"])  # strict: every tensor there, no extra
    tok = back["tokenizer_object"]
    for text in TEXTS:
        assert tok.encode(text) == bpe_model.tokenizer.encode(text), text
    ids = bpe_model.tokenizer.encode(CHECK_TEXT)
    assert back["check"]["ids"] == ids
    with torch.no_grad():
        torch.testing.assert_close(back["check_logits"], bpe_model(torch.tensor([ids]))[0, -1], atol=0, rtol=0)


def test_the_data_is_a_classic_script_and_the_static_files_are_copied(bpe_model, tmp_path):
    path = export(bpe_model, tmp_path, name="my <model>", book_model="gpt2")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("// Written by gptlearn.web.export") and "window.gptlearnLiveData = {" in text
    assert "fetch(" not in text and "import " not in text  # nothing a file:// page may not do
    for name in STATIC_FILES:
        assert (tmp_path / name).read_bytes() == (static_dir() / name).read_bytes()
    index = (tmp_path / "index.html").read_text(encoding="utf-8")
    for name in (DATA_FILE, "live_model.js", "live_explorer.js", "live_explorer.css"):
        assert name in index
    assert "my &lt;model&gt;" in index and "<model>" not in index  # the label is escaped
    back = read_export(path)
    assert back["name"] == "my <model>" and back["book_model"] == "gpt2"


def test_char_tokenizer_models_export(tmp_path):
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=5, n_positions=8, n_embd=8, n_layer=1, n_head=2)).eval()
    model.tokenizer = CharTokenizer.from_text("abcde")
    back = read_export(export(model, tmp_path))
    assert back["tokenizer"] == {"kind": "char", "chars": list("abcde")}
    assert back["tokenizer_object"].encode("bead") == [1, 4, 0, 3]


def test_mini_exports_its_bundled_tokenizer(tmp_path):
    mini = GPT.from_pretrained("gptlearn-mini")
    data = payload(mini)
    spec = data["tokenizer"]
    assert spec["kind"] == "bpe" and len(spec["vocab"]) == 1024 and spec["special"] == ["<|endoftext|>"]
    assert len(spec["merges"]) == len(mini.tokenizer.bpe.merges)
    assert data["config"]["n_positions"] == 256 and data["label"] == "gptlearn-mini (957,184 parameters)"


@pytest.mark.parametrize("break_it, message", [
    (lambda m: m.blocks[0].mlp.c_fc.bias.data.__setitem__(0, float("nan")), "NaN or infinity"),
    (lambda m: setattr(m, "lm_head", torch.nn.Linear(16, 300, bias=False)), "lm_head differs"),
    (lambda m: setattr(m, "tokenizer", object()), "cannot export a object"),
])
def test_bad_models_are_refused_before_anything_is_written(bpe_model, tmp_path, break_it, message):
    import copy

    model = copy.deepcopy(bpe_model)
    break_it(model)
    site = tmp_path / "site"
    export(bpe_model, site)
    before = {p.name: p.read_bytes() for p in site.iterdir()}
    with pytest.raises(ValueError, match=message):
        export(model, site)
    assert {p.name: p.read_bytes() for p in site.iterdir()} == before  # the good export is untouched


def test_too_large_a_model_is_refused(bpe_model, tmp_path, monkeypatch):
    monkeypatch.setattr(web_export, "MAX_PARAMETERS", 100)
    with pytest.raises(ValueError, match="a page carries at most 100"):
        export(bpe_model, tmp_path)
    assert not list(tmp_path.iterdir())


def test_export_into_a_file_is_an_error(bpe_model, tmp_path):
    f = tmp_path / "taken"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        export(bpe_model, f)


def test_read_export_refuses_other_files(tmp_path):
    (tmp_path / DATA_FILE).write_text("window.x = 1;\n")
    with pytest.raises(ValueError, match="not written by gptlearn.web.export"):
        read_export(tmp_path)
    good = web_export._PREFIX + json.dumps({"format": "gptlearn-live/0"}) + web_export._SUFFIX
    (tmp_path / DATA_FILE).write_text(good)
    with pytest.raises(ValueError, match="this gptlearn reads"):
        read_export(tmp_path)


def test_page_model_falls_back_to_the_bundled_model_when_the_books_model_is_too_big(monkeypatch):
    monkeypatch.setenv("GPTLEARN_MODEL", "gptlearn-mini")
    model, book_model = page_model()
    assert model.name_or_path == "gptlearn-mini" and book_model is None
    model, book_model = page_model(max_parameters=1000)  # pretend the book's model is too big for a page
    assert model.name_or_path == OFFLINE_MODEL and book_model == "gptlearn-mini"


def test_the_bundled_model_fits_the_books_pages(monkeypatch):
    monkeypatch.setenv("GPTLEARN_MODEL", OFFLINE_MODEL)
    model, book_model = page_model()
    assert book_model is None and model.num_parameters() <= BOOK_MAX_PARAMETERS


def test_cli_export_web(tmp_path, capsys):
    from gptlearn.cli import main

    assert main(["export-web", "--out", str(tmp_path / "page")]) == 0
    assert "index.html" in capsys.readouterr().out
    assert read_export(tmp_path / "page")["name"] == OFFLINE_MODEL
    assert main(["export-web", "--model", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gptlearn: error:") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
