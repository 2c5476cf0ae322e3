"""The bundled gptlearn-english, the book's offline default: loads offline, its words are tokens, it
predicts held-out modern English better than a unigram model, it copies with induction heads, and the page
runs it as PyTorch does (numbers in docs/gptlearn-english.md; each threshold sits below the shipped model's
measure and far above what a model without the property gets)."""
from __future__ import annotations

import collections
from importlib import resources
from pathlib import Path

import pytest
import torch
from data_kit import shared_data

import gptlearn
from gptlearn.analysis import (bits_per_byte, induction_scores, neighbour_accuracy, one_token_share,
                               unigram_bits_per_byte, word_groups, word_vectors)
from gptlearn.data import read_pairs
from gptlearn.names import OFFLINE_MODEL

ASSET = Path(gptlearn.__file__).parent / "assets" / "gptlearn-english"
MODERN = resources.files("gptlearn").joinpath("assets", "data", "modern_english.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def english():
    return gptlearn.GPT.from_pretrained("gptlearn-english")


def test_is_the_offline_default_and_loads_in_float32(english, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert OFFLINE_MODEL == "gptlearn-english"
    assert english.wte.weight.dtype == torch.float32 and not english.training
    assert sum(p.stat().st_size for p in ASSET.iterdir()) <= 25 * 2**20  # float16 on disk
    c = english.config
    assert c.vocab_size == english.tokenizer.vocab_size and c.bos_token_id == english.tokenizer.eot_token


@pytest.mark.parametrize("text", ["", "The big red car drove quickly.", "ROMEO:\nO, she doth teach",
                                  "naïve café 🤖 한국어", "a<|endoftext|>b"])
def test_tokenizer_round_trips(english, text):
    ids = english.tokenizer.encode_ordinary(text)
    assert english.tokenizer.decode(ids) == text
    assert all(0 <= i < english.config.vocab_size for i in ids)


def test_common_words_are_tokens_and_their_vectors_group(english):
    """Issue 24's targets: >= 90% of 144 common words are one token after a space (shipped: 95.8%;
    gptlearn-mini 8.3%). A word's nearest word shares its group far above chance (11/143 = 0.077)."""
    groups = word_groups()
    words = [w for ws in groups.values() for w in ws]
    assert one_token_share(english.tokenizer, words) >= 0.9
    labels = [g for g, ws in groups.items() for _ in ws]
    assert neighbour_accuracy(word_vectors(english, words), labels) >= 0.2


def test_beats_unigram_on_unseen_modern_prose(english):
    """Modern prose written for this check (never trained on) against a unigram model fit on STS-B train
    in the same tokenizer. Measured 0.755 of it (stage 12); 0.784 before running prose joined the text."""
    shared_data("stsb/sts-train.csv")  # skips the test when the shared data folder is not there
    pairs = read_pairs("stsb")
    train = pairs.sentences1 + pairs.sentences2
    bpb = bits_per_byte(english, MODERN)
    unigram = unigram_bits_per_byte("\n".join(train), MODERN, english.tokenizer)
    assert bpb < 0.77 * unigram, (bpb, unigram)


def test_was_trained_with_its_bos(english):
    """Documents were joined by <|endoftext|>, so the model predicts it where a text ends (chapter 4 measures
    the first-token sink with it); a model that never met it gives it about 1/vocab or less."""
    ids = english.to_tokens("Thank you for reading.")  # (1, T)
    with torch.no_grad():
        p_end = english(ids)[0, -1].softmax(-1)[english.tokenizer.eot_token].item()
    assert p_end > 100 / english.config.vocab_size


def test_has_induction_heads(english):
    """Random tokens written twice, 50 apart (TransformerLens' score; uniform attention ~0.01): the
    copying curriculum's heads sit above layer 0."""
    scores = induction_scores(english, seq_len=50, batch=8)  # (L, H)
    assert scores[1:].max().item() >= 0.45 and scores[0].max().item() < 0.1


def test_held_out_prose_is_read_in_whole_words(english):
    """The 20 commonest tokens of the held-out prose are whole words after a space, or punctuation and
    whitespace: no word fragments (gptlearn-mini's fifth commonest there is 's')."""
    counts = collections.Counter(english.tokenizer.encode_ordinary(MODERN))
    top = [english.tokenizer.decode([i]) for i, _ in counts.most_common(20)]
    fragments = [t for t in top if not (t[:1] == " " and t[1:].isalpha()) and any(c.isalnum() for c in t)]
    assert not fragments, top


def test_the_page_runs_it_as_pytorch_does(english):
    """The live book's parity on the default: same ids, logits within 1e-3, attention within 1e-4."""
    pytest.importorskip("py_mini_racer", reason="mini-racer runs the page's JavaScript")
    from gptlearn.web.js import LiveJS

    live = LiveJS(english)
    for text in ["The big red car drove quickly", "My mother said that the cat sat on the mat."]:
        out = live.forward(text)
        ids = english.tokenizer.encode_ordinary(text)
        assert out["ids"] == ids
        with torch.no_grad():
            logits, cache = english.run_with_cache(torch.tensor([ids]))
        torch.testing.assert_close(torch.tensor(out["logits"]), logits[0, -1], atol=1e-3, rtol=0)
        torch.testing.assert_close(torch.tensor(out["attention"]), cache.stack("pattern")[:, 0], atol=1e-4, rtol=0)


def test_a_damaged_copy_is_refused_in_one_line(tmp_path, capsys):
    """A copy of the bundled folder with its weights cut short: loading raises gptlearn's error, and the
    CLI's export-web says so in one line, exits 2 and writes nothing."""
    import shutil

    from gptlearn import cli
    from gptlearn.errors import GptlearnError

    copy = tmp_path / "english"
    shutil.copytree(ASSET, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(GptlearnError, match="model.safetensors"):
        gptlearn.GPT.from_pretrained(copy)
    assert cli.main(["export-web", "--model", str(copy), "--out", str(tmp_path / "page")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gptlearn: error:") and len(err.strip().splitlines()) == 1 and "model.safetensors" in err
    assert not (tmp_path / "page").exists()
