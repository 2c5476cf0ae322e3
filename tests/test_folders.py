"""Malformed model folders: every file a folder holds (config.json, the weights, vocab.json + merges.txt,
char_tokenizer.json, embedder.json) broken in every way we could think of, tried with every command that
loads a folder and with the API. Each must give one clear line that names the file (and the field), exit
status 2 and no traceback; absurd sizes must be refused before anything is allocated.

Legend of the table: a variant is (name, base folder, change, commands that must refuse it, words the
message must hold).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptlearn import GPT, Embedder, GptlearnError, GPTConfig, cli
from gptlearn.tokenizers import GPT2_ASSETS_DIR, BPETokenizer, CharTokenizer, Tokenizer, load_tokenizer

COMMANDS = ("generate", "embed", "similarity", "info", "export-web", "train", "train-embeddings")
ALL = frozenset(COMMANDS)
EMBEDDING = frozenset({"embed", "similarity", "train-embeddings"})
NEEDS_TOKENIZER = ALL - {"info"}  # info says "tokenizer: none"; the others need one
BPE_VOCAB = 280
TEXT = "the cat sat on the mat. a dog ran in the park! " * 8


# ---- no absurd allocation, ever --------------------------------------------------------------------------
def _parameters(c: GPTConfig) -> int:
    """An independent count (not the package's estimator): embeddings + L blocks of 12 C^2."""
    return c.vocab_size * c.n_embd + c.n_positions * c.n_embd + 12 * c.n_layer * c.n_embd ** 2


@pytest.fixture(autouse=True)
def refuse_to_build_huge_models(monkeypatch):
    """Building a model of more than 10^8 parameters here means a size was not checked before allocating."""
    original = GPT.__init__

    def guarded(self, config, *args, **kwargs):
        assert _parameters(config) <= 10 ** 8, f"a {config} was built instead of refused"
        original(self, config, *args, **kwargs)

    monkeypatch.setattr(GPT, "__init__", guarded)


# ---- the good folders ------------------------------------------------------------------------------------
def _save(model: GPT, tokenizer, folder: Path) -> Path:
    model.tokenizer = tokenizer
    Embedder(model, pooling="mean").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    """A byte-level BPE model (vocabulary BPE_VOCAB) and a character model, each saved with an embedder.json."""
    torch.manual_seed(0)
    bpe = Tokenizer.from_bpe(BPETokenizer.train(TEXT, BPE_VOCAB))
    shape = dict(n_layer=1, n_head=2, n_embd=16, n_positions=32)
    char = CharTokenizer.from_text(TEXT)
    root = tmp_path_factory.mktemp("bases")
    return {"bpe": _save(GPT(GPTConfig(vocab_size=BPE_VOCAB, **shape)), bpe, root / "bpe"),
            "char": _save(GPT(GPTConfig(vocab_size=char.vocab_size, **shape)), char, root / "char")}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    (root / "text.txt").write_text(TEXT)
    (root / "pairs.tsv").write_text("id\tsentence1\tsentence2\tlabel\n" + "".join(
        f"{i}\tthe cat sat\t{'a cat sat' if i % 2 else 'the dog ran'}\t{i % 2}\n" for i in range(6)))
    return root


# ---- the changes -------------------------------------------------------------------------------------------
def write(name: str, content: str | bytes) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return change


def edit_json(name: str, fn: Callable[[Any], Any]) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        path = folder / name
        path.write_text(json.dumps(fn(json.loads(path.read_text()))))
    return change


def set_field(name: str, key: str, value: Any) -> Callable[[Path], None]:
    return edit_json(name, lambda d: {**d, key: value})


def drop_field(name: str, *keys: str) -> Callable[[Path], None]:
    return edit_json(name, lambda d: {k: v for k, v in d.items() if k not in keys})


def raw_field(name: str, key: str, raw: str) -> Callable[[Path], None]:
    """A value JSON itself cannot write but Python's json module reads (NaN, Infinity)."""
    def change(folder: Path) -> None:
        d = json.loads((folder / name).read_text())
        d[key] = "@@"
        (folder / name).write_text(json.dumps(d).replace('"@@"', raw))
    return change


def delete(*names: str) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        for n in names:
            (folder / n).unlink()
    return change


def make_dir(name: str) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        (folder / name).unlink()
        (folder / name).mkdir()
    return change


def vocab_entry(value: Any) -> Callable[[Path], None]:
    """Give the last token of vocab.json the id ``value``."""
    def fn(vocab: dict) -> dict:
        last = list(vocab)[-1]
        return {**vocab, last: value}
    return edit_json("vocab.json", fn)


def append(name: str, line: str) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        with open(folder / name, "a", encoding="utf-8") as f:
            f.write(line)
    return change


def swap_merges(folder: Path) -> None:
    lines = (folder / "merges.txt").read_text().splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n")


def gpt2_tokenizer_files(folder: Path) -> None:
    """GPT-2's 50,257-token vocabulary beside a model of BPE_VOCAB tokens."""
    shutil.copy(GPT2_ASSETS_DIR / "encoder.json", folder / "vocab.json")
    shutil.copy(GPT2_ASSETS_DIR / "vocab.bpe", folder / "merges.txt")


def bad_projection(shape: tuple[int, int]) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        from safetensors.torch import save_file

        save_file({"weight": torch.zeros(shape)}, str(folder / "projection.safetensors"))
        set_field("embedder.json", "has_projection", True)(folder)
    return change


def both(*changes: Callable[[Path], None]) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        for c in changes:
            c(folder)
    return change


@dataclass(frozen=True)
class Variant:
    name: str
    base: str
    change: Callable[[Path], None]
    refused_by: frozenset
    words: tuple[str, ...]

    def __repr__(self) -> str:
        return self.name


def config_variants() -> list[Variant]:
    C = "config.json"
    out = [(n, write(C, content)) for n, content in [
        ("list", "[]"), ("null", "null"), ("string", '"gpt2"'), ("number", "42"), ("empty", ""),
        ("not-utf8", b"\xff\xfe{\x00}"), ("not-json", "{ this is not json"), ("deep", "[" * 100_000),
        ("empty-object", "{}")]]
    out += [("directory", make_dir(C))]
    fields = [("n_layer", "1"), ("n_embd", "16"), ("vocab_size", 280.0), ("vocab_size", 280.5), ("n_head", True),
              ("n_positions", None), ("n_layer", -1), ("n_layer", 0), ("n_inner", "x"), ("n_inner", -4),
              ("activation_function", 5), ("activation_function", "relu"), ("layer_norm_epsilon", "x"),
              ("layer_norm_epsilon", -1), ("resid_pdrop", 2), ("attn_pdrop", "x"), ("embd_pdrop", -0.5),
              ("initializer_range", "x"), ("bos_token_id", "x"), ("eos_token_id", 1.5), ("model_type", ["gpt2"]),
              ("model_type", "bert"), ("scale_attn_weights", False), ("n_layer", [1]), ("n_embd", {"a": 1})]
    out += [(f"{k}={json.dumps(v)}", set_field(C, k, v), k) for k, v in fields]
    out += [(f"{k}={raw}", raw_field(C, k, raw), k) for k, raw in
            [("layer_norm_epsilon", "NaN"), ("resid_pdrop", "Infinity"), ("initializer_range", "NaN")]]
    out += [("n_ctx=x", both(drop_field(C, "n_positions"), set_field(C, "n_ctx", "x")), "n_ctx"),
            ("no-n_embd", drop_field(C, "n_embd"))]
    # absurd sizes: refused before allocating (the guard above fails the test otherwise)
    out += [(f"huge-{k}", set_field(C, k, v), k) for k, v in
            [("n_layer", 200_000), ("n_embd", 2 ** 30), ("vocab_size", 10 ** 12), ("n_positions", 10 ** 12),
             ("n_inner", 10 ** 12), ("n_layer", 10 ** 30), ("n_layer", 10 ** 400)]]
    return [Variant(f"config:{o[0]}", "bpe", o[1], ALL, (C, *o[2:])) for o in out]


def weights_variants() -> list[Variant]:
    W = "model.safetensors"
    return [Variant("weights:missing", "bpe", delete(W), ALL, (W,)),
            Variant("weights:garbage", "bpe", write(W, b"\x00" * 64), ALL, (W,)),
            Variant("weights:json", "bpe", write(W, "{}"), ALL, (W,))]


def tokenizer_variants() -> list[Variant]:
    V, M = "vocab.json", "merges.txt"
    out = [(f"vocab:{n}", write(V, c), V) for n, c in [
        ("list", "[]"), ("null", "null"), ("string", '"x"'), ("number", "7"), ("empty-object", "{}"),
        ("not-utf8", b"\xff\xfe"), ("not-json", "{ not json")]]
    out += [(f"vocab:id={json.dumps(v)}", vocab_entry(v), V) for v in ("x", 1.5, True, None, -1, 10 ** 6, 0)]
    out += [("vocab:missing", delete(V), V), ("merges:missing", delete(M), M),
            ("merges:three-tokens", append(M, "a b c\n"), M), ("merges:unknown-piece", append(M, "Q Z\n"), M),
            ("merges:not-utf8", write(M, b"#version: 0.2\n\xff \xfe\n"), M), ("merges:reordered", swap_merges, M),
            ("vocab:gpt2-beside-small", gpt2_tokenizer_files, V, "vocab_size")]
    variants = [Variant(o[0], "bpe", o[1], ALL, o[2:]) for o in out]
    variants.append(Variant("no-tokenizer", "bpe", delete(V, M), NEEDS_TOKENIZER, ("tokenizer", str(BPE_VOCAB))))
    return variants


def char_variants() -> list[Variant]:
    F = "char_tokenizer.json"
    out = [(n, write(F, c)) for n, c in [
        ("list", "[]"), ("null", "null"), ("string", '"abc"'), ("number", "1"), ("empty-object", "{}"),
        ("not-utf8", b"\xff\xfe"), ("not-json", "{ not json")]]
    out += [(f"chars={json.dumps(v)}", set_field(F, "chars", v), "chars") for v in
            (None, 5, "abc", [1, 2], ["ab", "c"], ["a", "a"], [], {"a": 1})]
    out += [("chars=too-many", set_field(F, "chars", [chr(0x4E00 + i) for i in range(200)]), "vocab_size")]
    return [Variant(f"char:{o[0]}", "char", o[1], ALL, (F, *o[2:])) for o in out]


def embedder_variants() -> list[Variant]:
    E = "embedder.json"
    out = [(n, write(E, c)) for n, c in [
        ("list", "[]"), ("null", "null"), ("string", '"mean"'), ("not-utf8", b"\xff\xfe"), ("not-json", "{ x")]]
    fields = [("pooling", 5), ("pooling", "avg"), ("layer", "x"), ("layer", [1]), ("layer", 0.5), ("layer", True),
              ("layer", 99), ("layer", -2), ("max_length", "x"), ("max_length", 0), ("max_length", 10 ** 9),
              ("max_length", 1.5), ("has_projection", "yes"), ("has_projection", True)]
    out += [(f"{k}={json.dumps(v)}", set_field(E, k, v), k) for k, v in fields]
    out += [("projection-garbage", both(write("projection.safetensors", b"\x00" * 32),
                                        set_field(E, "has_projection", True)), "projection.safetensors"),
            ("projection-width", bad_projection((4, 7)), "projection.safetensors"),
            ("projection-vector", bad_projection((4,)), "projection.safetensors")]
    variants = []
    for name, change, *named in out:
        words = tuple(named) if named and named[0].endswith(".safetensors") else (E, *named)
        variants.append(Variant(f"embedder:{name}", "bpe", change, EMBEDDING, words))
    return variants


VARIANTS = config_variants() + weights_variants() + tokenizer_variants() + char_variants() + embedder_variants()


def broken(bases, tmp_path: Path, v: Variant) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(bases[v.base], folder)
    v.change(folder)
    return folder


def argv(command: str, folder: Path, inputs: Path, tmp_path: Path) -> list[str]:
    out = str(tmp_path / "out")
    return {
        "generate": ["generate", "--prompt", "the cat", "--max-new-tokens", "2", "--seed", "0"],
        "embed": ["embed", "--sentence", "the cat"],
        "similarity": ["similarity", "--sentence1", "the cat", "--sentence2", "a dog"],
        "info": ["info"],
        "export-web": ["export-web", "--out", out],
        "train": ["train", "--data", str(inputs / "text.txt"), "--out", out, "--steps", "1", "--batch-size", "2",
                  "--block-size", "8", "--eval-iters", "1", "--no-progress"],
        "train-embeddings": ["train-embeddings", "--pairs", str(inputs / "pairs.tsv"), "--out", out,
                             "--batch-size", "2"],
    }[command] + (["--init", str(folder)] if command == "train" else ["--model", str(folder)])


def run(capsys, args: list[str]) -> tuple[int, str, str]:
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(code: int, err: str, words: tuple[str, ...]) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if not line.startswith("gptlearn: warning:")]
    assert len(lines) == 1 and lines[0].startswith("gptlearn: error: "), err
    for w in words:
        assert w in lines[0], f"{w!r} is not named in: {lines[0]}"


# ---- the table: every variant x every command that reads what it breaks ------------------------------------
CASES = [pytest.param(v, c, id=f"{v.name}-{c}") for v in VARIANTS for c in COMMANDS if c in v.refused_by]


@pytest.mark.parametrize("variant, command", CASES)
def test_cli_refuses_a_malformed_folder_in_one_line(capsys, bases, inputs, tmp_path, variant, command):
    folder = broken(bases, tmp_path, variant)
    code, out, err = run(capsys, argv(command, folder, inputs, tmp_path))
    assert_one_line(code, err, variant.words)
    assert not (tmp_path / "out" / "config.json").exists()  # nothing was written


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("base", ["bpe", "char"])
def test_every_command_accepts_the_good_folders(capsys, bases, inputs, tmp_path, base, command):
    code, out, err = run(capsys, argv(command, bases[base], inputs, tmp_path))
    assert code == 0, err


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.refused_by != ALL], ids=repr)
def test_commands_that_do_not_read_the_broken_file_still_work(capsys, bases, inputs, tmp_path, variant):
    folder = broken(bases, tmp_path, variant)
    for command in ("info", "generate"):
        if command not in variant.refused_by:
            code, out, err = run(capsys, argv(command, folder, inputs, tmp_path))
            assert code == 0, err


# ---- the same folders through the API --------------------------------------------------------------------
def _fails_with_words(fn, words: tuple[str, ...]) -> None:
    with pytest.raises(GptlearnError) as info:
        fn()
    for w in words:
        assert w in str(info.value), f"{w!r} is not named in: {info.value}"


@pytest.mark.parametrize("variant", VARIANTS, ids=repr)
def test_api_refuses_a_malformed_folder_with_a_gptlearn_error(bases, tmp_path, variant):
    folder = broken(bases, tmp_path, variant)
    if variant.refused_by == ALL:
        _fails_with_words(lambda: GPT.from_pretrained(folder), variant.words)
    elif variant.refused_by == NEEDS_TOKENIZER:
        model = GPT.from_pretrained(folder)
        _fails_with_words(lambda: model.tokenizer, variant.words)
    else:
        GPT.from_pretrained(folder).tokenizer.encode("the cat")
    _fails_with_words(lambda: Embedder.from_pretrained(folder), variant.words)
    if variant.name.startswith(("vocab:", "merges:", "char:")) and "vocab_size" not in variant.words:
        _fails_with_words(lambda: load_tokenizer(folder), variant.words[:1])


# ---- properties: any JSON value in any field is loaded or refused with a GptlearnError ----------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CONFIG_KEYS = [*GPTConfig.__dataclass_fields__, "n_ctx", "model_type"]


def _loads_or_refuses(fn, file: str) -> Any:
    try:
        return fn()
    except GptlearnError as e:
        assert file in str(e) and "\n" not in str(e), str(e)
        return None


@PROPERTY
@given(key=st.sampled_from(CONFIG_KEYS), value=JSON)
def test_any_config_value_is_loaded_or_refused(bases, tmp_path_factory, key, value):
    folder = tmp_path_factory.mktemp("p")
    shutil.copytree(bases["bpe"], folder, dirs_exist_ok=True)
    set_field("config.json", key, value)(folder)
    model = _loads_or_refuses(lambda: GPT.from_pretrained(folder), "config.json")
    if model is not None:  # what loads, runs
        assert model(torch.tensor([[1, 2, 3]])).shape == (1, 3, BPE_VOCAB)


@PROPERTY
@given(key=st.sampled_from(["pooling", "layer", "max_length", "has_projection"]), value=JSON)
def test_any_embedder_value_is_loaded_or_refused(bases, tmp_path_factory, key, value):
    folder = tmp_path_factory.mktemp("p")
    shutil.copytree(bases["bpe"], folder, dirs_exist_ok=True)
    set_field("embedder.json", key, value)(folder)
    embedder = _loads_or_refuses(lambda: Embedder.from_pretrained(folder), "embedder.json")
    if embedder is not None:
        assert embedder.encode(["the cat"]).shape == (1, embedder.dimensions)


@PROPERTY
@given(value=JSON, whole=st.booleans())
def test_any_char_tokenizer_value_is_loaded_or_refused(bases, tmp_path_factory, value, whole):
    folder = tmp_path_factory.mktemp("p")
    shutil.copytree(bases["char"], folder, dirs_exist_ok=True)
    (write("char_tokenizer.json", json.dumps(value)) if whole
     else set_field("char_tokenizer.json", "chars", value))(folder)
    tok = _loads_or_refuses(lambda: load_tokenizer(folder), "char_tokenizer.json")
    if tok is not None:
        assert tok.decode(tok.encode(tok.decode([0]))) == tok.decode([0])


@PROPERTY
@given(value=JSON, whole=st.booleans())
def test_any_vocab_value_is_loaded_or_refused(bases, tmp_path_factory, value, whole):
    folder = tmp_path_factory.mktemp("p")
    shutil.copytree(bases["bpe"], folder, dirs_exist_ok=True)
    (write("vocab.json", json.dumps(value)) if whole else vocab_entry(value))(folder)
    tok = _loads_or_refuses(lambda: load_tokenizer(folder), "vocab.json")
    if tok is not None:
        assert tok.decode(tok.encode("the cat")) == "the cat"


# ---- train --config: the same checks as a config.json ------------------------------------------------------
TRAIN_CONFIGS = [
    ("[]", "JSON object"), ("null", "JSON object"), ('"tiny"', "JSON object"), ("{ no", "JSON"),
    ('{"n_layer": "2"}', "n_layer"), ('{"n_layer": true}', "n_layer"), ('{"n_layer": 1.5}', "n_layer"),
    ('{"n_head": 3}', "n_head"), ('{"n_inner": "x"}', "n_inner"), ('{"resid_pdrop": "x"}', "resid_pdrop"),
    ('{"attn_pdrop": 1.5}', "attn_pdrop"), ('{"embd_pdrop": NaN}', "embd_pdrop"),
    ('{"layer_norm_epsilon": -1}', "layer_norm_epsilon"), ('{"layer_norm_epsilon": "x"}', "layer_norm_epsilon"),
    ('{"initializer_range": "x"}', "initializer_range"), ('{"initializer_range": Infinity}', "initializer_range"),
    ('{"activation_function": 5}', "activation_function"), ('{"bos_token_id": "x"}', "bos_token_id"),
    ('{"n_positions": [64]}', "n_positions"), ('{"no_such_field": 1}', "no_such_field"),
]


@pytest.mark.parametrize("config, word", TRAIN_CONFIGS, ids=[c for c, _ in TRAIN_CONFIGS])
@pytest.mark.parametrize("as_file", [False, True])
def test_train_config_is_checked_in_one_line(capsys, inputs, tmp_path, config, word, as_file):
    if as_file:
        (tmp_path / "config.json").write_text(config)
        config = str(tmp_path / "config.json")
    code, out, err = run(capsys, ["train", "--data", str(inputs / "text.txt"), "--out", str(tmp_path / "out"),
                                  "--preset", "tiny", "--tokenizer", "char", "--config", config, "--steps", "1",
                                  "--block-size", "8", "--batch-size", "2", "--eval-iters", "1", "--no-progress"])
    assert_one_line(code, err, (word,))
