"""gptlearn.tokenizers.char: one token per character."""
from __future__ import annotations

import json

import pytest

from gptlearn.tokenizers import CharTokenizer, load_tokenizer


def test_char_tokenizer(tmp_path):
    tok = CharTokenizer.from_text("hello world")
    assert tok.vocab_size == len(tok) == 8 and tok.eot_token is None and tok.special_tokens == {}
    assert tok.chars == sorted(set("hello world"))
    ids = tok.encode("hold")
    assert ids == [tok.chars.index(c) for c in "hold"]
    assert tok.decode(ids) == "hold" and tok.str_tokens(ids) == list("hold")
    assert tok.decode_bytes(ids) == b"hold" and tok.encode("") == []
    with pytest.raises(ValueError, match=r"'z'.*not in this CharTokenizer"):
        tok.encode("hez")
    with pytest.raises(ValueError, match="vocab_size=8"):
        tok.decode([8])
    tok.save(tmp_path)
    assert json.loads((tmp_path / "char_tokenizer.json").read_text(encoding="utf-8")) == {"type": "char",
                                                                                            "chars": tok.chars}
    again = load_tokenizer(tmp_path)
    assert isinstance(again, CharTokenizer) and again.chars == tok.chars
    assert CharTokenizer.from_directory(tmp_path).encode("hold") == ids
    assert load_tokenizer(tmp_path / "char_tokenizer.json").chars == tok.chars


def test_non_ascii_characters_round_trip(tmp_path):
    text = "naïve 猫 🙂"
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text and tok.decode_bytes(tok.encode(text)) == text.encode("utf-8")
    assert CharTokenizer.from_directory(tok.save(tmp_path)).encode(text) == tok.encode(text)


def test_bad_vocabularies():
    with pytest.raises(ValueError, match="distinct single characters"):
        CharTokenizer(["a", "a"])
    with pytest.raises(ValueError, match="distinct single characters"):
        CharTokenizer(["ab"])
    with pytest.raises(TypeError, match="from_text expects a str"):
        CharTokenizer.from_text(b"abc")
