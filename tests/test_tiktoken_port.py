"""tiktoken's own test suite, every case that applies to the GPT-2 encoding, as one table.

Read from tiktoken 0.14.0's ``tests/`` (test_encoding.py, test_offsets.py, test_simple_public.py,
test_misc.py, test_pickle.py) and written again here. Each row runs against three encoders:
``tiktoken`` (tiktoken's own Encoding, built offline from the shipped files in conftest.py, which checks
that the port itself is right), ``bpe`` (gptlearn's readable BPETokenizer) and ``fast`` (gptlearn's
tiktoken-backed Tokenizer). So both gptlearn tokenizers are held to tiktoken's interface and numbers.

What was left out, and why:

* cases with cl100k/o200k ids (test_simple_regex, the cl100k lines of test_simple and
  test_basic_encode, test_special_token's <|fim_*|> tokens, test_basic_offsets' cl100k offsets):
  GPT-2 has other ids and no FIM tokens. Their *inputs* are kept below, compared with tiktoken's
  GPT-2 encoding instead of hard-coded ids;
* ``_encode_bytes`` (test_encode_bytes, test_hyp_encode_bytes): a private tiktoken method, not part of
  the ``Encoding`` surface;
* model-name lookup and the optional blobfile dependency (test_encoding_for_model,
  test_optional_blobfile_dependency): tiktoken's registry and packaging, not an encoding;
* the custom ``<|pickle|>`` special token of test_pickle: not GPT-2's vocabulary.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

EOT = "<|endoftext|>"
EOT_ID = 50256


@pytest.fixture(scope="module", params=["tiktoken", "bpe", "fast"])
def enc(request, tiktoken_gpt2, gpt2_bpe, gpt2_fast):
    """tiktoken's Encoding (the reference), then gptlearn's two GPT-2 tokenizers."""
    return {"tiktoken": tiktoken_gpt2, "bpe": gpt2_bpe, "fast": gpt2_fast}[request.param]


@dataclass(frozen=True)
class Case:
    source: str  # tiktoken's test it comes from
    check: Callable  # check(enc, ref) asserts; ref is tiktoken's own GPT-2 Encoding


CASES: dict[str, Case] = {}


def case(name: str, source: str):
    def add(fn):
        assert name not in CASES
        CASES[name] = Case(source, fn)
        return fn
    return add


def _encodes_to(text: str, expected: list[int]) -> Callable:
    def check(enc, ref):
        assert enc.encode(text) == expected
    return check


# ---- test_encoding.py::test_simple (and test_simple_public.py::test_simple), GPT-2 lines ---------------
@case("simple/encode", "test_simple")
def _(enc, ref):
    assert enc.encode("hello world") == [31373, 995]


@case("simple/decode", "test_simple")
def _(enc, ref):
    assert enc.decode([31373, 995]) == "hello world"


@case("simple/endoftext-allowed", "test_simple")
def _(enc, ref):
    assert enc.encode("hello " + EOT, allowed_special="all") == [31373, 220, EOT_ID]


@case("simple/single-token-roundtrip-first-10000", "test_simple")
def _(enc, ref):
    for token in range(min(10_000, enc.max_token_value - 1)):
        assert enc.encode_single_token(enc.decode_single_token_bytes(token)) == token


# ---- test_simple_repeated: runs of zeros and how GPT-2 splits them ------------------------------------
ZEROS = {1: [15], 2: [405], 3: [830], 4: [2388], 5: [20483], 6: [10535], 7: [24598], 8: [8269],
         9: [10535, 830], 10: [8269, 405], 11: [8269, 830], 12: [8269, 2388], 13: [8269, 20483],
         14: [8269, 10535], 15: [8269, 24598], 16: [25645], 17: [8269, 10535, 830]}
for _n, _ids in ZEROS.items():
    case(f"repeated/{_n}-zeros", "test_simple_repeated")(_encodes_to("0" * _n, _ids))


# ---- test_large_repeated (written for o200k; the property holds for any encoding) ---------------------
@case("large-repeated/x-million", "test_large_repeated")
def _(enc, ref):
    tokens = enc.encode("x" * 1_000_000)
    assert tokens and tokens == ref.encode("x" * 1_000_000)


# ---- test_basic_encode and test_encode_empty (r50k_base == GPT-2) -----------------------------------
@case("basic-encode/hello-world", "test_basic_encode")
def _(enc, ref):
    assert enc.encode("hello world") == [31373, 995]


@case("encode-empty", "test_encode_empty")
def _(enc, ref):
    assert enc.encode("") == []


# ---- test_encode_surrogate_pairs: the properties, with GPT-2's own ids ----------------------------------
@case("surrogates/pair-is-the-code-point", "test_encode_surrogate_pairs")
def _(enc, ref):
    thumbs = enc.encode("👍")
    assert thumbs == ref.encode("👍") and len(thumbs) > 1  # GPT-2 spells the emoji in byte tokens
    assert enc.encode("\ud83d\udc4d") == thumbs  # a UTF-16 surrogate pair is read as the code point


@case("surrogates/lone-becomes-replacement-char", "test_encode_surrogate_pairs")
def _(enc, ref):
    assert enc.encode("\ud83d") == enc.encode("\ufffd")


# ---- test_catastrophically_repetitive (r50k_base) -------------------------------------------------------
for _c in ["^", "0", "a", "'s", " ", "\n"]:
    for _form, _make in [("bare", lambda c: c * 10_000), ("space-first", lambda c: " " + c * 10_000),
                         ("space-first-newline-last", lambda c: " " + c * 10_000 + "\n")]:
        def _check(enc, ref, text=_make(_c)):
            assert enc.decode(enc.encode(text)) == text
        case(f"repetitive/{_c!r}x10000/{_form}", "test_catastrophically_repetitive")(_check)


# ---- test_basic_roundtrip (r50k_base) -------------------------------------------------------------------
for _text in ["hello", "hello ", "hello  ", " hello", " hello ", " hello  ", "hello world", "请考试我的软件！12345"]:
    def _check(enc, ref, text=_text):
        assert enc.decode(enc.encode(text)) == text
        assert enc.decode(enc.encode_ordinary(text)) == text
    case(f"roundtrip/{_text!r}", "test_basic_roundtrip")(_check)


# ---- test_single_token_roundtrip (r50k_base): every token ------------------------------------------------
@case("single-token-roundtrip/all", "test_single_token_roundtrip")
def _(enc, ref):
    for token in range(enc.n_vocab):
        try:
            token_bytes = enc.decode_single_token_bytes(token)
        except KeyError:  # tiktoken's gaps in a vocabulary; GPT-2 has none
            continue
        assert enc.encode_single_token(token_bytes) == token


# ---- test_special_token: the <|endoftext|> part (GPT-2 has no <|fim_*|> tokens) -------------------------
@case("special/eot-is-a-single-token", "test_special_token")
def _(enc, ref):
    assert enc.encode_single_token(EOT) == enc.eot_token == EOT_ID


@case("special/disallowed-empty-reads-text", "test_special_token")
def _(enc, ref):
    assert EOT_ID not in enc.encode(EOT + " hello", disallowed_special=())


@pytest.mark.parametrize("kwargs", [{}, {"disallowed_special": "all"}, {"disallowed_special": {EOT}}],
                         ids=["default", "all", "set"])
def test_special_token_refused(enc, kwargs):
    """test_special_token: ``encode`` raises ValueError on special-token text unless told otherwise."""
    with pytest.raises(ValueError):
        enc.encode(EOT + " hello", **kwargs)


@case("special/allowed-all-disallowed-empty", "test_special_token")
def _(enc, ref):
    assert EOT_ID in enc.encode(EOT + " hello there", allowed_special="all", disallowed_special=())


@case("special/allowed-all-disallowed-all", "test_special_token")
def _(enc, ref):
    assert EOT_ID in enc.encode(EOT + " hello there", allowed_special="all", disallowed_special="all")


@case("special/allowed-set", "test_special_token")
def _(enc, ref):
    assert EOT_ID in enc.encode(EOT + " hello there", allowed_special={EOT}, disallowed_special=())


# ---- test_batch_encode (r50k_base) ----------------------------------------------------------------------
@case("batch/encode", "test_batch_encode")
def _(enc, ref):
    one, two = "hello world", "goodbye world"
    assert enc.encode_batch([one]) == [enc.encode(one)]
    assert enc.encode_batch([one, two]) == [enc.encode(one), enc.encode(two)]


@case("batch/encode-ordinary", "test_batch_encode")
def _(enc, ref):
    one, two = "hello world", "goodbye world"
    assert enc.encode_ordinary_batch([one]) == [enc.encode_ordinary(one)]
    assert enc.encode_ordinary_batch([one, two]) == [enc.encode_ordinary(one), enc.encode_ordinary(two)]


# ---- test_basic_offsets: the prompts, with GPT-2's offsets from tiktoken and from prefix decoding ----------
def _offsets_by_prefixes(enc, tokens):
    """Where each token starts, found the slow way: the common prefix of the text and the decoded prefix."""
    text = enc.decode(tokens, errors="strict")
    out = []
    for i in range(len(tokens)):
        prefix = enc.decode(tokens[:i], errors="ignore")
        n = 0
        while n < min(len(text), len(prefix)) and text[n] == prefix[n]:
            n += 1
        out.append(n)
    return out


OFFSET_PROMPTS = {"hello world": [0, 5], f"hello world{EOT} green cow": [0, 5, 11, 24, 30],
                  "我非常渴望与人工智能一起工作": None, "நடிகர் சூர்யா": None, " Ġ除": None}
for _prompt, _known in OFFSET_PROMPTS.items():
    def _check(enc, ref, prompt=_prompt, known=_known):
        tokens = enc.encode(prompt, allowed_special="all")
        text, offsets = enc.decode_with_offsets(tokens)
        assert text == prompt
        assert offsets == ref.decode_with_offsets(tokens)[1] == _offsets_by_prefixes(enc, tokens)
        if known is not None:  # these two have the same offsets in GPT-2 as in cl100k
            assert offsets == known
    case(f"offsets/{_prompt!r}", "test_basic_offsets")(_check)


# ---- inputs of cl100k-only cases, compared with tiktoken's GPT-2 encoding --------------------------------
for _text in ["rer", "'rer", "today\n ", "today\n \n", "today\n  \n", " \x850"]:
    def _check(enc, ref, text=_text):
        assert enc.encode(text) == ref.encode(text)
        assert enc.decode(enc.encode(text)) == text
    case(f"cl100k-inputs/{_text!r}", "test_simple_regex / test_basic_encode")(_check)


# ---- test_pickle: the GPT-2 half --------------------------------------------------------------------------
@case("pickle/roundtrip", "test_pickle")
def _(enc, ref):
    again = pickle.loads(pickle.dumps(enc))
    assert again.encode("hello world") == enc.encode("hello world")
    assert again.encode(EOT, allowed_special="all") == [EOT_ID]


# ---- the table --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_case(enc, tiktoken_gpt2, name):
    CASES[name].check(enc, tiktoken_gpt2)


def test_the_table_covers_every_ported_test():
    ported = {c.source for c in CASES.values()}
    assert ported == {"test_simple", "test_simple_repeated", "test_large_repeated", "test_basic_encode",
                      "test_encode_empty", "test_encode_surrogate_pairs", "test_catastrophically_repetitive",
                      "test_basic_roundtrip", "test_single_token_roundtrip", "test_special_token",
                      "test_batch_encode", "test_basic_offsets", "test_simple_regex / test_basic_encode",
                      "test_pickle"}


# ---- the property-based tests (hypothesis), as tiktoken writes them ----------------------------------------
@settings(deadline=None, max_examples=100, database=None, derandomize=True)  # the same cases every run
@given(text=st.text())
def test_hyp_roundtrip(enc, text):
    """test_hyp_roundtrip (hypothesis also draws this file's string constants, such as "<|endoftext|>", which
    encode() refuses by default: the round trip is of text read as ordinary text)"""
    assert enc.decode(enc.encode(text, disallowed_special=())) == text


@settings(deadline=None, max_examples=100, database=None, derandomize=True)  # the same cases every run
@given(text=st.text())
def test_hyp_special_ordinary(enc, text):
    """test_hyp_special_ordinary"""
    assert enc.encode_ordinary(text) == enc.encode(text, disallowed_special=())


@settings(deadline=None, max_examples=100, database=None, derandomize=True)  # the same cases every run
@given(batch=st.lists(st.text()))
def test_hyp_batch_roundtrip(enc, batch):
    """test_hyp_batch_roundtrip"""
    encoded = enc.encode_batch(batch, allowed_special="all")
    assert encoded == [enc.encode(t, allowed_special="all") for t in batch]
    assert enc.decode_batch(encoded) == batch


@settings(deadline=None, max_examples=100, database=None, derandomize=True)  # the same cases every run
@given(data=st.data())
def test_hyp_offsets(enc, tiktoken_gpt2, data):
    """test_hyp_offsets (written for cl100k; the property holds for any encoding)"""
    ids = data.draw(st.lists(st.integers(0, enc.n_vocab - 1), min_size=1, max_size=20))
    # as tiktoken does: re-encode the decoded text, so the tokens decode to valid UTF-8
    tokens = enc.encode(enc.decode(ids, errors="ignore"), allowed_special="all")
    assert enc.decode_with_offsets(tokens)[1] == _offsets_by_prefixes(enc, tokens)
    assert tokens == tiktoken_gpt2.encode(tiktoken_gpt2.decode(ids, errors="ignore"), allowed_special="all")
