"""The surface every tokenizer shares (gptlearn.tokenizers.base), checked on GPT-2's two tokenizers
against tiktoken and Hugging Face, and on all three kinds for the shared checks and protocol.

Offline: the tiktoken_gpt2 tiktoken Encoding is built from the shipped GPT-2 files (conftest.py). Set
GPTLEARN_DATA_DIR (e.g. /work/shared/data) to also compare on the first 20 kB of TinyShakespeare.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptlearn.tokenizers import BaseTokenizer, CharTokenizer, TokenizerLike, load_tokenizer

EOT = "<|endoftext|>"

STRINGS = {
    "empty": "",
    "hello": "hello world",
    "Hello": "Hello world",
    "single_space": " ",
    "emoji": "I ❤️ 🐍! 🙂🙂",
    "emoji_zwj": "family 👨‍👩‍👧‍👦 and 🏳️‍🌈 and 🧑🏽‍💻",
    "flags": "🇯🇵🇰🇷🇺🇸 flags",
    "japanese": "吾輩は猫である。名前はまだ無い。",
    "korean": "안녕하세요 👋 (hello in Korean!)",
    "mixed_scripts": "Ελληνικά русский עברית العربية हिन्दी ไทย",
    "whitespace_runs": "   \n\n\t  x",
    "trailing_ws": "end with spaces   \n\n",
    "crlf": "line one\r\nline two\r\n\r\n",
    "control_chars": "\x00\x01\x7f",
    "nbsp_and_friends": "a\u00a0b\u2009c\u3000d\u2028e\x85f",
    "eot_in_text": f"Hello {EOT} world{EOT}",
    "numbers": "12345 3.14159 1,000,000 -42 ٣٤٥ ²³",
    "contractions": "I'm they'll we've you'd it's CAN'T don't",
    "code": 'def f(x):\n    return {"a": [x ** 2, x // 3]}  # comment\n\tprint(f"{x!r}")\n',
    "punctuation": "!!!??? ... --- ''' \"\"\" @@## $$%% ^^&&**",
    "latin1": "café naïve résumé Ångström",
    "long_word": "antidisestablishmentarianism" * 5,
    "combining": "e\u0301 n\u0303 Z\u0351\u0359\u0353",
}
IDS = list(STRINGS)




@pytest.fixture(scope="module", params=["bpe", "fast"])
def gpt2_tok(request, gpt2_bpe, gpt2_fast):
    """Each of GPT-2's two tokenizers in turn: every test below must hold for both."""
    return {"bpe": gpt2_bpe, "fast": gpt2_fast}[request.param]


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory, gpt2_bpe):
    transformers = pytest.importorskip("transformers")
    directory = gpt2_bpe.save(tmp_path_factory.mktemp("gpt2_tok"))
    return transformers.GPT2Tokenizer.from_pretrained(str(directory))


# ---------------------------------------------------------------------------------------------
# GPT-2 parity, both tokenizers


@pytest.mark.parametrize("name", IDS)
def test_parity_with_tiktoken(gpt2_tok, tiktoken_gpt2, name):
    text = STRINGS[name]
    ids = gpt2_tok.encode_ordinary(text)
    assert ids == tiktoken_gpt2.encode_ordinary(text)
    if EOT in text:  # refused by default, by both
        with pytest.raises(ValueError):
            tiktoken_gpt2.encode(text)
        with pytest.raises(ValueError, match="refuses by default"):
            gpt2_tok.encode(text)
    else:
        assert gpt2_tok.encode(text) == ids
    assert gpt2_tok.decode(ids) == text
    assert gpt2_tok.decode_bytes(ids) == text.encode("utf-8")
    pieces = gpt2_tok.str_tokens(ids)
    assert len(pieces) == len(ids)
    if text.isascii():
        assert "".join(pieces) == text
    special = gpt2_tok.encode(text, allowed_special="all")
    assert special == tiktoken_gpt2.encode(text, allowed_special="all")
    assert gpt2_tok.decode(special) == text


def test_shakespeare_parity(gpt2_bpe, gpt2_fast, tiktoken_gpt2, shakespeare_20k):
    expected = tiktoken_gpt2.encode_ordinary(shakespeare_20k)
    assert gpt2_bpe.encode(shakespeare_20k) == expected
    assert gpt2_fast.encode(shakespeare_20k) == expected
    assert gpt2_fast.decode(expected) == shakespeare_20k


@pytest.mark.parametrize(
    "text, ids",
    [
        ("Hello world", [15496, 995]),
        (" The unhappy cat", [383, 19283, 3797]),
        ("I'm they'll", [40, 1101, 484, 1183]),
        ("   \n\n\t  x", [220, 220, 220, 628, 197, 220, 2124]),
    ],
)
def test_known_gpt2_ids(gpt2_tok, text, ids):
    assert gpt2_tok.encode(text) == ids


def test_endoftext_text_is_refused_unless_read_as_text(gpt2_tok):
    with pytest.raises(ValueError, match="allowed_special=.*disallowed_special=\\(\\)"):
        gpt2_tok.encode(f"a{EOT}b")
    as_text = [27, 91, 437, 1659, 5239, 91, 29]  # '<', '|', 'end', 'of', 'text', '|', '>'
    assert gpt2_tok.encode(EOT, disallowed_special=()) == gpt2_tok.encode_ordinary(EOT) == as_text
    with pytest.raises(TypeError, match="write allowed_special=\\{'<\\|endoftext\\|>'\\}"):
        gpt2_tok.encode(EOT, allowed_special=EOT)  # a bare str other than "all"


def test_endoftext(gpt2_tok):
    assert gpt2_tok.eot_token == 50256
    assert gpt2_tok.vocab_size == len(gpt2_tok) == 50257
    assert gpt2_tok.encode(f"a{EOT}b", allowed_special=[EOT]) == [64, 50256, 65]
    assert gpt2_tok.encode(f"a{EOT}b", allowed_special="all") == [64, 50256, 65]
    assert gpt2_tok.decode([50256]) == EOT
    assert gpt2_tok.str_tokens([15496, 995, 50256]) == ["Hello", " world", EOT]


@pytest.mark.parametrize("name", [n for n in IDS if EOT not in STRINGS[n]])
def test_parity_with_transformers(hf_gpt2, gpt2_fast, name):
    assert hf_gpt2.encode(STRINGS[name]) == gpt2_fast.encode(STRINGS[name])


def test_batch(gpt2_bpe, gpt2_fast):
    texts = [STRINGS[n] for n in IDS]
    expected = [gpt2_fast.encode_ordinary(t) for t in texts]
    assert gpt2_fast.encode_ordinary_batch(texts) == gpt2_fast.encode_batch(texts, disallowed_special=()) == expected
    assert gpt2_bpe.encode_ordinary_batch(texts) == gpt2_bpe.encode_batch(texts, disallowed_special=()) == expected
    for tok in (gpt2_fast, gpt2_bpe):
        with pytest.raises(ValueError, match="refuses by default"):  # one text with <|endoftext|> in it
            tok.encode_batch(texts)
    assert gpt2_fast.encode_batch([EOT], allowed_special="all") == [[50256]]


def test_huge_text(gpt2_fast):
    text = "To be, or not to be: that is the question. " * 100_000 + "a" * 100_000  # 4.4 MB
    ids = gpt2_fast.encode(text)
    assert gpt2_fast.decode(ids) == text


# ---------------------------------------------------------------------------------------------
# hypothesis round trips

# boundary-heavy text: spaces, contractions, digits, scripts, ZWJ, flag halves, specials' pieces
TRICKY_CHARS = " \n\t\r'sdl1234567890.,!?aAzZéß猫ア한😀\u200d\U0001f1ef\U0001f1f5\x00\x85\u00a0<|>"
tricky = st.text(st.sampled_from(list(TRICKY_CHARS)))
any_text = st.text()  # hypothesis' default alphabet has no surrogates


@settings(max_examples=300, deadline=None, database=None)
@given(st.one_of(any_text, tricky))
def test_fast_round_trip(gpt2_fast, tiktoken_gpt2, text):
    ids = gpt2_fast.encode(text)
    assert ids == tiktoken_gpt2.encode_ordinary(text)
    assert gpt2_fast.decode(ids) == text


@settings(max_examples=60, deadline=None, database=None)
@given(st.one_of(any_text, tricky))
def test_bpe_round_trip_and_parity(gpt2_bpe, gpt2_fast, text):
    ids = gpt2_bpe.encode(text)
    assert gpt2_bpe.decode(ids) == text
    assert ids == gpt2_fast.encode(text)


# ---------------------------------------------------------------------------------------------
# bad inputs and loading


@pytest.mark.parametrize("bad, what", [(b"hi", "bytes"), (None, "NoneType"), (123, "int"), (["a"], "list")])
def test_encode_rejects_non_str(gpt2_tok, bad, what):
    with pytest.raises(TypeError, match=f"encode expects a str, got {what}"):
        gpt2_tok.encode(bad)


def test_decode_errors(gpt2_tok):
    assert gpt2_tok.encode("") == [] and gpt2_tok.decode([]) == ""
    with pytest.raises(ValueError, match=r"token id 50257 .*vocab_size=50257"):
        gpt2_tok.decode([15496, 50257])
    with pytest.raises(ValueError, match=r"token id -1 "):
        gpt2_tok.decode([-1])
    with pytest.raises(TypeError, match="token ids must be ints"):
        gpt2_tok.decode([1.5])
    with pytest.raises(TypeError, match="sequence of token ids"):
        gpt2_tok.decode("hello")
    with pytest.raises(ValueError, match="unknown special token"):
        gpt2_tok.encode("x", allowed_special=["<|im_start|>"])
    # half an emoji decodes with the replacement character
    assert gpt2_tok.decode(gpt2_tok.encode("🙂")[:1]) == "\ufffd"


def test_lone_surrogates_become_replacement_char(gpt2_bpe, gpt2_fast):
    text = "a\ud800b"  # not encodable as UTF-8; both tokenizers treat it as U+FFFD, like tiktoken
    assert gpt2_bpe.encode(text) == gpt2_fast.encode(text) == gpt2_fast.encode("a\ufffdb")


def test_decode_accepts_arrays(gpt2_fast):
    np = pytest.importorskip("numpy")
    assert gpt2_fast.decode(np.array([15496, 995])) == "Hello world"
    assert gpt2_fast.decode([np.int64(15496), 995]) == "Hello world"


def test_repr(gpt2_bpe, gpt2_fast):
    assert "vocab_size=50257" in repr(gpt2_bpe) and "vocab_size=50257" in repr(gpt2_fast)


def test_load_tokenizer(tmp_path, gpt2_bpe, gpt2_fast):
    assert load_tokenizer() is gpt2_fast and load_tokenizer("gpt2", fast=False) is gpt2_bpe
    with pytest.raises(FileNotFoundError, match="no tokenizer files.*load_tokenizer\\('gpt2'\\)"):
        load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither 'gpt2' nor a directory"):
        load_tokenizer(tmp_path / "nope")




# ---------------------------------------------------------------------------------------------
# one surface for all three kinds, written once in BaseTokenizer


@pytest.fixture(scope="module", params=["bpe", "fast", "char"])
def any_tok(request, gpt2_bpe, gpt2_fast):
    return {"bpe": gpt2_bpe, "fast": gpt2_fast, "char": CharTokenizer.from_text("hello world")}[request.param]


def test_every_tokenizer_has_the_shared_surface(any_tok):
    assert isinstance(any_tok, BaseTokenizer) and isinstance(any_tok, TokenizerLike)
    ids = any_tok.encode("hello")
    assert any_tok.decode(ids) == "hello" and "".join(any_tok.str_tokens(ids)) == "hello"
    assert any_tok.encode_batch(["hello", "", "world"]) == [ids, [], any_tok.encode("world")]
    assert len(any_tok) == any_tok.vocab_size
    with pytest.raises(TypeError, match="a single str; use encode"):
        any_tok.encode_batch("hello")
    with pytest.raises(TypeError, match="encode expects a str, got bytes"):
        any_tok.encode(b"hello")
    with pytest.raises(ValueError, match=f"token id {any_tok.vocab_size} is out of range"):
        any_tok.decode([any_tok.vocab_size])
    with pytest.raises(ValueError, match=r"unknown special token\(s\) \['<\|im_start\|>'\]"):
        any_tok.encode("x", allowed_special={"<|im_start|>"})


class _Bytes(BaseTokenizer):
    """A tokenizer written the way the package's are: ids 0-255 are bytes, 256 is <|endoftext|>."""

    special_tokens = {"<|endoftext|>": 256}
    vocab_size = 257

    def _encode_ordinary(self, text):
        return list(text.encode("utf-8"))

    def _token_bytes(self, i):
        return b"<|endoftext|>" if i == 256 else bytes([i])

    def save(self, directory):
        return Path(directory)

    @classmethod
    def from_directory(cls, directory):
        return cls()


def test_a_new_tokenizer_writes_four_things_and_gets_the_rest():  # text -> ids, id -> bytes, size, files
    tok = _Bytes()
    assert tok.eot_token == 256 and len(tok) == 257
    assert tok.encode_ordinary("a<|endoftext|>b") == [97, *b"<|endoftext|>", 98]  # plain text
    with pytest.raises(ValueError, match="refuses by default"):
        tok.encode("a<|endoftext|>b")  # refused unless allowed or read as text
    assert tok.encode("a<|endoftext|>b", allowed_special="all") == [97, 256, 98]
    assert tok.encode_batch(["é", "<|endoftext|>"], allowed_special={"<|endoftext|>"}) == [[195, 169], [256]]
    assert tok.decode([104, 105, 256]) == "hi<|endoftext|>" and tok.decode([195]) == "\ufffd"
    assert tok.str_tokens([104, 256]) == ["h", "<|endoftext|>"]
    assert isinstance(tok, TokenizerLike)
