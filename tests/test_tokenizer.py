"""Tests for gptlearn.tokenizer: parity with tiktoken and Hugging Face, training, saving, bad inputs.

Offline. The reference tiktoken Encoding is built here, independently, from the shipped GPT-2 files
with tiktoken's own loader and regex. Set GPTLEARN_DATA_DIR (e.g. /work/shared/data) to also
compare on the first 20 kB of TinyShakespeare.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptlearn import tokenizer as tokmod
from gptlearn.tokenizer import (
    GPT2_ASSETS_DIR,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    bytes_to_unicode,
    get_stats,
    load_tokenizer,
    merge,
)

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


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def reference():
    """tiktoken's GPT-2 encoding, built from the shipped files with tiktoken's own loader."""
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext import openai_public

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", "")  # no cache files written anywhere
        ranks = data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(GPT2_ASSETS_DIR / "vocab.bpe"),
            encoder_json_file=str(GPT2_ASSETS_DIR / "encoder.json"),
            vocab_bpe_hash="1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
            encoder_json_hash="196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
        )
    return tiktoken.Encoding(
        name="gpt2-reference",
        pat_str=openai_public.r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={EOT: 50256},
        explicit_n_vocab=50257,
    )


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.gpt2()


@pytest.fixture(scope="module")
def fast() -> Tokenizer:
    return Tokenizer.gpt2()


@pytest.fixture(scope="module", params=["bpe", "fast"])
def gpt2_tok(request, bpe, fast):
    return {"bpe": bpe, "fast": fast}[request.param]


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory, bpe):
    transformers = pytest.importorskip("transformers")
    directory = bpe.save(tmp_path_factory.mktemp("gpt2_tok"))
    return transformers.GPT2Tokenizer.from_pretrained(str(directory))


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


@pytest.fixture(scope="module")
def shakespeare_20k() -> str:
    data_dir = os.environ.get("GPTLEARN_DATA_DIR")
    path = Path(data_dir) / "tinyshakespeare.txt" if data_dir else None
    if path is None or not path.is_file():
        pytest.skip("set GPTLEARN_DATA_DIR to a folder holding tinyshakespeare.txt")
    return path.read_text(encoding="utf-8")[:20_000]


# ---------------------------------------------------------------------------------------------
# GPT-2 parity


@pytest.mark.parametrize("name", IDS)
def test_parity_with_tiktoken(gpt2_tok, reference, name):
    text = STRINGS[name]
    ids = gpt2_tok.encode(text)
    assert ids == reference.encode_ordinary(text)
    assert gpt2_tok.decode(ids) == text
    assert gpt2_tok.decode_bytes(ids) == text.encode("utf-8")
    pieces = gpt2_tok.str_tokens(ids)
    assert len(pieces) == len(ids)
    if text.isascii():
        assert "".join(pieces) == text
    special = gpt2_tok.encode(text, allowed_special="all")
    assert special == reference.encode(text, allowed_special="all")
    assert gpt2_tok.decode(special) == text


def test_shakespeare_parity(bpe, fast, reference, shakespeare_20k):
    expected = reference.encode_ordinary(shakespeare_20k)
    assert bpe.encode(shakespeare_20k) == expected
    assert fast.encode(shakespeare_20k) == expected
    assert fast.decode(expected) == shakespeare_20k


@pytest.mark.parametrize(
    "text, ids",
    [
        ("Hello world", [15496, 995]),
        (" The unhappy cat", [383, 19283, 3797]),
        ("I'm they'll", [40, 1101, 484, 1183]),
        (EOT, [27, 91, 437, 1659, 5239, 91, 29]),  # ordinary text unless allowed
        ("   \n\n\t  x", [220, 220, 220, 628, 197, 220, 2124]),
    ],
)
def test_known_gpt2_ids(gpt2_tok, text, ids):
    assert gpt2_tok.encode(text) == ids


def test_endoftext(gpt2_tok):
    assert gpt2_tok.eot_token == 50256
    assert gpt2_tok.vocab_size == len(gpt2_tok) == 50257
    assert gpt2_tok.encode(f"a{EOT}b", allowed_special=[EOT]) == [64, 50256, 65]
    assert gpt2_tok.encode(f"a{EOT}b", allowed_special="all") == [64, 50256, 65]
    assert gpt2_tok.decode([50256]) == EOT
    assert gpt2_tok.str_tokens([15496, 995, 50256]) == ["Hello", " world", EOT]


@pytest.mark.parametrize("name", [n for n in IDS if EOT not in STRINGS[n]])
def test_parity_with_transformers(hf_gpt2, fast, name):
    assert hf_gpt2.encode(STRINGS[name]) == fast.encode(STRINGS[name])


def test_save_gpt2_reproduces_shipped_files(bpe, fast, tmp_path):
    fast.save(tmp_path)
    for saved, shipped in [("vocab.json", "encoder.json"), ("merges.txt", "vocab.bpe")]:
        assert (tmp_path / saved).read_bytes() == (GPT2_ASSETS_DIR / shipped).read_bytes()
    assert (tmp_path / "merges.txt").read_text().startswith("#version: 0.2\n")
    again = Tokenizer.from_directory(tmp_path)
    assert again.encode(STRINGS["code"]) == fast.encode(STRINGS["code"])
    assert BPETokenizer.from_directory(tmp_path).special_tokens == {EOT: 50256}


def test_encode_and_show_work(bpe):
    work = bpe.encode_and_show_work("Hello world!")
    assert work["pre_tokens"] == ["Hello", " world", "!"]
    assert work["bytes"] == [b"Hello", b" world", b"!"]
    assert work["unicode"] == ["Hello", "Ġworld", "!"]
    assert work["tokens"] == [["Hello"], ["Ġworld"], ["!"]]
    assert work["ids"] == bpe.encode("Hello world!") == [15496, 995, 0]
    assert work["str_tokens"] == ["Hello", " world", "!"]
    steps = work["merges"][1]
    assert [s["rank"] for s in steps] == sorted(s["rank"] for s in steps)
    assert steps[-1]["parts"] == ["Ġworld"]
    assert work["merges"][2] == []  # a single byte needs no merge
    work = bpe.encode_and_show_work(f"hi{EOT}", allowed_special="all")
    assert work["ids"] == [5303, 50256] and work["pre_tokens"][-1] == EOT


def test_batch(bpe, fast):
    texts = [STRINGS[n] for n in IDS]
    expected = [fast.encode(t) for t in texts]
    assert fast.encode_batch(texts) == expected
    assert bpe.encode_batch(texts) == expected
    assert fast.encode_batch([EOT], allowed_special="all") == [[50256]]


def test_huge_text(fast):
    text = "To be, or not to be: that is the question. " * 100_000 + "a" * 100_000  # 4.4 MB
    ids = fast.encode(text)
    assert fast.decode(ids) == text


# ---------------------------------------------------------------------------------------------
# hypothesis round trips

# boundary-heavy text: spaces, contractions, digits, scripts, ZWJ, flag halves, specials' pieces
TRICKY_CHARS = " \n\t\r'sdl1234567890.,!?aAzZéß猫ア한😀\u200d\U0001f1ef\U0001f1f5\x00\x85\u00a0<|>"
tricky = st.text(st.sampled_from(list(TRICKY_CHARS)))
any_text = st.text()  # hypothesis' default alphabet has no surrogates


@settings(max_examples=300, deadline=None, database=None)
@given(st.one_of(any_text, tricky))
def test_fast_round_trip(fast, reference, text):
    ids = fast.encode(text)
    assert ids == reference.encode_ordinary(text)
    assert fast.decode(ids) == text


@settings(max_examples=60, deadline=None, database=None)
@given(st.one_of(any_text, tricky))
def test_bpe_round_trip_and_parity(bpe, fast, text):
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert ids == fast.encode(text)


@settings(max_examples=100, deadline=None, database=None)
@given(st.one_of(any_text, tricky, st.text(st.sampled_from(list(SMALL_TEXT)))))
def test_trained_parity(trained, text):
    ids = trained.encode(text)
    assert trained.decode(ids) == text
    assert ids == Tokenizer.from_bpe(trained).encode(text)


# ---------------------------------------------------------------------------------------------
# training


def test_pure_helpers():
    assert get_stats([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert merge([1, 2, 3, 1, 2], (1, 2), 4) == [4, 3, 4]
    assert merge([1, 1, 1], (1, 1), 9) == [9, 1]
    b2u = bytes_to_unicode()
    assert len(b2u) == len(set(b2u.values())) == 256
    assert b2u[32] == "Ġ" and all(not c.isspace() and c.isprintable() for c in b2u.values())


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
    for text in [SMALL_TEXT, "It was the age of 1237 wonders!", STRINGS["emoji_zwj"]]:
        assert hf.encode(text) == trained.encode(text)


# ---------------------------------------------------------------------------------------------
# char-level


def test_char_tokenizer(tmp_path):
    tok = CharTokenizer.from_text("hello world")
    assert tok.vocab_size == len(tok) == 8 and tok.eot_token is None
    ids = tok.encode("hold")
    assert tok.decode(ids) == "hold" and tok.str_tokens(ids) == list("hold")
    assert tok.decode_bytes(ids) == b"hold" and tok.encode("") == []
    with pytest.raises(ValueError, match=r"'z'.*not in this CharTokenizer"):
        tok.encode("hez")
    with pytest.raises(ValueError, match="vocab_size=8"):
        tok.decode([8])
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert isinstance(again, CharTokenizer) and again.chars == tok.chars
    assert CharTokenizer.from_directory(tmp_path).encode("hold") == ids


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


def test_lone_surrogates_become_replacement_char(bpe, fast):
    text = "a\ud800b"  # not encodable as UTF-8; both tokenizers treat it as U+FFFD, like tiktoken
    assert bpe.encode(text) == fast.encode(text) == fast.encode("a\ufffdb")


def test_decode_accepts_arrays(fast):
    np = pytest.importorskip("numpy")
    assert fast.decode(np.array([15496, 995])) == "Hello world"
    assert fast.decode([np.int64(15496), 995]) == "Hello world"


def test_repr(bpe, fast):
    assert "vocab_size=50257" in repr(bpe) and "vocab_size=50257" in repr(fast)


def test_load_tokenizer(tmp_path, bpe, fast):
    assert load_tokenizer() is fast and load_tokenizer("gpt2", fast=False) is bpe
    with pytest.raises(FileNotFoundError, match="no tokenizer files.*load_tokenizer\\('gpt2'\\)"):
        load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither 'gpt2' nor a directory"):
        load_tokenizer(tmp_path / "nope")


def test_corrupt_asset_detected(tmp_path, monkeypatch):
    corrupt, missing = tmp_path / "corrupt", tmp_path / "missing"
    corrupt.mkdir(), missing.mkdir()
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(GPT2_ASSETS_DIR / name, corrupt / name)
    data = bytearray((corrupt / "vocab.bpe").read_bytes())
    data[1000] ^= 1  # flip one bit
    (corrupt / "vocab.bpe").write_bytes(bytes(data))
    monkeypatch.setattr(tokmod, "GPT2_ASSETS_DIR", corrupt)
    with pytest.raises(RuntimeError, match=r"vocab\.bpe is corrupt \(sha256 [0-9a-f]{64}, expected 1ce16"):
        BPETokenizer.gpt2()
    with pytest.raises(RuntimeError, match="corrupt"):
        Tokenizer.gpt2()
    monkeypatch.setattr(tokmod, "GPT2_ASSETS_DIR", missing)
    with pytest.raises(FileNotFoundError, match=r"encoder\.json is missing"):
        BPETokenizer.gpt2()


def test_shipped_assets_match_tiktoken_hashes():
    for name, expected in tokmod.GPT2_ASSET_SHA256.items():
        assert hashlib.sha256((GPT2_ASSETS_DIR / name).read_bytes()).hexdigest() == expected
