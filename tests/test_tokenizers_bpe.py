"""gptlearn.tokenizers.bpe: the pure helpers, the one merge loop and its show-your-work twin, the
trainer (and its fast twin's parity), saving in GPT-2 / Hugging Face format, and the shipped files."""
from __future__ import annotations

import hashlib
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptlearn.tokenizers import bpe as bpe_module
from gptlearn.tokenizers import (GPT2_ASSETS_DIR, BPETokenizer, Tokenizer, bytes_to_unicode, get_stats,
                                 load_tokenizer, merge)

EOT = "<|endoftext|>"
CODE = 'def f(x):\n    return {"a": [x ** 2, x // 3]}  # comment\n\tprint(f"{x!r}")\n'
EMOJI_ZWJ = "family 👨‍👩‍👧‍👦 and 🏳️‍🌈 and 🧑🏽‍💻"
TRICKY_CHARS = " \n\t\r'sdl1234567890.,!?aAzZéß猫ア한😀\u200d\U0001f1ef\U0001f1f5\x00\x85\u00a0<|>"


# ---------------------------------------------------------------------------------------------
# the steps: pure helpers, the merge loop, show your work


def test_pure_helpers():
    assert get_stats([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert merge([1, 2, 3, 1, 2], (1, 2), 4) == [4, 3, 4]
    assert merge([1, 1, 1], (1, 1), 9) == [9, 1]
    b2u = bytes_to_unicode()
    assert len(b2u) == len(set(b2u.values())) == 256
    assert b2u[32] == "Ġ" and all(not c.isspace() and c.isprintable() for c in b2u.values())


def test_apply_merges_is_the_loop_encode_runs(gpt2_bpe):
    steps = []
    assert gpt2_bpe.apply_merges("Ġhello", steps) == ["Ġhello"]
    assert [s["rank"] for s in steps] == [2, 41, 83, 5712, 23492]  # lowest rank first, one merge a step
    assert steps[0] == {"pair": ("h", "e"), "rank": 2, "parts": ["Ġ", "he", "l", "l", "o"]}
    assert gpt2_bpe.apply_merges(list("Ġhello")) == ["Ġhello"]  # a str or a list of pieces
    assert gpt2_bpe.apply_merges([]) == [] and gpt2_bpe.apply_merges(["x"]) == ["x"]
    for word in ["Ġworld", "antidisestablishmentarianism", "ĠðŁĻĤ"]:
        text = bytes(gpt2_bpe.byte_decoder[c] for c in word).decode("utf-8")
        assert [gpt2_bpe.encoder[t] for t in gpt2_bpe.apply_merges(word)] == gpt2_bpe.encode(text)


def test_encode_and_show_work(gpt2_bpe):
    work = gpt2_bpe.encode_and_show_work("Hello world!")
    assert work["pre_tokens"] == ["Hello", " world", "!"]
    assert work["bytes"] == [b"Hello", b" world", b"!"]
    assert work["unicode"] == ["Hello", "Ġworld", "!"]
    assert work["tokens"] == [["Hello"], ["Ġworld"], ["!"]]
    assert work["ids"] == gpt2_bpe.encode("Hello world!") == [15496, 995, 0]
    assert work["str_tokens"] == ["Hello", " world", "!"]
    steps = work["merges"][1]
    assert [s["rank"] for s in steps] == sorted(s["rank"] for s in steps)
    assert steps[-1]["parts"] == ["Ġworld"]
    assert work["merges"][2] == []  # a single byte needs no merge
    work = gpt2_bpe.encode_and_show_work(f"hi{EOT}", allowed_special="all")
    assert work["ids"] == [5303, 50256] and work["pre_tokens"][-1] == EOT


def test_mergeable_ranks_are_tiktokens(gpt2_bpe, tiktoken_gpt2):
    ranks = gpt2_bpe.mergeable_ranks()
    assert len(ranks) == 50256 and EOT.encode() not in ranks
    assert all(tiktoken_gpt2.decode_single_token_bytes(i) == b for b, i in ranks.items())


# ---------------------------------------------------------------------------------------------
# training

SMALL_TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age "
    "of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season "
    "of Light, it was the season of Darkness, it was the spring of hope, it was the winter of "
    "despair. We had everything before us, we had nothing before us; we were all going direct to "
    "Heaven, we were all going direct the other way. 1234 1235 1236! Café, naïve, 猫です 🙂🙂.\n\n"
) * 3
SMALL_VOCAB = 256 + 120 + 1


@pytest.fixture(scope="module")
def trained() -> BPETokenizer:
    return BPETokenizer.train(SMALL_TEXT, SMALL_VOCAB)


def test_train(trained):
    tok = trained
    assert tok.vocab_size == len(tok) == SMALL_VOCAB
    assert len(tok.merges) == SMALL_VOCAB - 257
    assert tok.eot_token == SMALL_VOCAB - 1
    assert tok.encode(EOT, allowed_special="all") == [tok.eot_token]
    assert tok.decode(tok.encode(SMALL_TEXT)) == SMALL_TEXT
    assert len(tok.encode(SMALL_TEXT)) < len(SMALL_TEXT.encode("utf-8")) / 2  # it learned something
    # ids: 0..255 are the bytes, then one per merge in rank order
    assert tok.token_bytes(104) == b"h"
    for rank, (a, b) in enumerate(tok.merges):
        assert tok.encoder[a + b] == 256 + rank
    counts = [count for _, _, count in tok.merge_history]
    assert len(counts) == len(tok.merges)
    assert counts == sorted(counts, reverse=True)
    (left, right), new, count = tok.merge_history[0]
    assert left + right == new and count == counts[0] > 1
    fast = Tokenizer.from_bpe(tok)
    assert fast.encode(SMALL_TEXT) == tok.encode(SMALL_TEXT)
    assert fast.str_tokens(fast.encode("the age")) == tok.str_tokens(tok.encode("the age"))


def test_train_deterministic_and_verbose(capsys):
    a = BPETokenizer.train(SMALL_TEXT, 256 + 5, special_tokens=(), verbose=True)
    b = BPETokenizer.train(SMALL_TEXT, 256 + 5, special_tokens=())
    assert a.merges == b.merges and a.eot_token is None and a.special_tokens == {}
    assert capsys.readouterr().out.count("merge ") == 5


def test_train_errors():
    with pytest.raises(ValueError, match="too small"):
        BPETokenizer.train("abc", 200)
    with pytest.raises(ValueError, match="text too small"):
        BPETokenizer.train("ab ab", 300)
    with pytest.raises(TypeError, match="got bytes"):
        BPETokenizer.train(b"abc", 300)


def test_train_shakespeare(shakespeare_20k):
    tok = BPETokenizer.train(shakespeare_20k, 512)
    assert tok.vocab_size == 512
    assert Tokenizer.from_bpe(tok).encode(shakespeare_20k) == tok.encode(shakespeare_20k)


def test_save_load_trained(trained, tmp_path):
    trained.save(tmp_path)
    assert (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()[0] == "#version: 0.2"
    for loaded in (BPETokenizer.from_directory(tmp_path), Tokenizer.from_directory(tmp_path)):
        assert loaded.vocab_size == trained.vocab_size and loaded.eot_token == trained.eot_token
        assert loaded.encode(SMALL_TEXT) == trained.encode(SMALL_TEXT)
    assert isinstance(load_tokenizer(tmp_path), Tokenizer)
    assert isinstance(load_tokenizer(str(tmp_path), fast=False), BPETokenizer)


def test_transformers_loads_trained(trained, tmp_path):
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2Tokenizer.from_pretrained(str(trained.save(tmp_path)))
    for text in [SMALL_TEXT, "It was the age of 1237 wonders!", EMOJI_ZWJ]:
        assert hf.encode(text) == trained.encode(text)


@settings(max_examples=100, deadline=None, database=None)
@given(st.one_of(st.text(), st.text(st.sampled_from(list(TRICKY_CHARS))), st.text(st.sampled_from(list(SMALL_TEXT)))))
def test_trained_parity(trained, text):
    ids = trained.encode(text)
    assert trained.decode(ids) == text
    assert ids == Tokenizer.from_bpe(trained).encode(text)


# ---------------------------------------------------------------------------------------------
# GPT-2's files


def test_save_gpt2_reproduces_shipped_files(gpt2_fast, tmp_path):
    gpt2_fast.save(tmp_path)
    for saved, shipped in [("vocab.json", "encoder.json"), ("merges.txt", "vocab.bpe")]:
        assert (tmp_path / saved).read_bytes() == (GPT2_ASSETS_DIR / shipped).read_bytes()
    assert (tmp_path / "merges.txt").read_text().startswith("#version: 0.2\n")
    again = Tokenizer.from_directory(tmp_path)
    assert again.encode(CODE) == gpt2_fast.encode(CODE)
    assert BPETokenizer.from_directory(tmp_path).special_tokens == {EOT: 50256}


def test_corrupt_asset_detected(tmp_path, monkeypatch):
    corrupt, missing = tmp_path / "corrupt", tmp_path / "missing"
    corrupt.mkdir(), missing.mkdir()
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(GPT2_ASSETS_DIR / name, corrupt / name)
    data = bytearray((corrupt / "vocab.bpe").read_bytes())
    data[1000] ^= 1  # flip one bit
    (corrupt / "vocab.bpe").write_bytes(bytes(data))
    monkeypatch.setattr(bpe_module, "GPT2_ASSETS_DIR", corrupt)
    with pytest.raises(RuntimeError, match=r"vocab\.bpe is corrupt \(sha256 [0-9a-f]{64}, expected 1ce16"):
        BPETokenizer.gpt2()
    with pytest.raises(RuntimeError, match="corrupt"):
        Tokenizer.gpt2()
    monkeypatch.setattr(bpe_module, "GPT2_ASSETS_DIR", missing)
    with pytest.raises(FileNotFoundError, match=r"encoder\.json is missing"):
        BPETokenizer.gpt2()


def test_shipped_assets_match_tiktoken_hashes():
    for name, expected in bpe_module.GPT2_ASSET_SHA256.items():
        assert hashlib.sha256((GPT2_ASSETS_DIR / name).read_bytes()).hexdigest() == expected
