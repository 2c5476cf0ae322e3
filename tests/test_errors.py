"""One error family, and the inputs that used to escape it.

- Everything a user can cause is a :class:`gptlearn.GptlearnError`; the command prints exactly that family
  (and OSError from the user's paths) as one line with status 2, and lets real bugs show their traceback.
- Invalid values for generation and embedding (an infinite temperature, top_p out of range, a seed beyond
  64 bits, ...) are refused in one line naming the flag.
- Output is what it claims: JSON is valid JSON (no NaN) in valid UTF-8; an interactive session answers a
  line it cannot read or encode with an error and goes on.
- API errors name the mistake: token ids outside the vocabulary, ``run_with_cache(None)``, a tokenizer larger
  than the model's vocabulary; ``cosine`` survives huge and tiny vectors; a pair file may start with a BOM.
"""
from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gptlearn import GPT, Embedder, GptlearnError, GPTConfig, cli
from gptlearn.data import read_pairs
from gptlearn.generate import sample_next
from gptlearn.similarity import cosine, euclidean, pairwise
from gptlearn.tokenizers import CharTokenizer, Tokenizer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=4, n_embd=32, n_positions=64)).save_pretrained(
        tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def nan_dir(tmp_path_factory) -> Path:
    """A model whose weights hold NaN (as a diverged run leaves them)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=32, n_positions=64))
    with torch.no_grad():
        model.blocks[0].attn.c_attn.weight[0, 0] = float("nan")
    return model.save_pretrained(tmp_path_factory.mktemp("nan"))


@pytest.fixture(scope="module")
def char_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    tok = CharTokenizer.from_text("abcdefgh ")
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, n_positions=32, vocab_size=tok.vocab_size))
    model.tokenizer = tok
    return model.save_pretrained(tmp_path_factory.mktemp("char"))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code: int, err: str, *words: str) -> str:
    assert code == 2 and "Traceback" not in err, err
    assert len(err.splitlines()) == 1 and err.startswith("gptlearn: error: "), err
    for w in words:
        assert w in err, f"{w!r} is not named in: {err}"
    return err


def strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as every other JSON reader does."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


# ---- the family ----------------------------------------------------------------------------------------------
def test_every_user_facing_error_type_is_a_gptlearn_error():
    from gptlearn.fast.fused import FusedUnavailable
    from gptlearn.pretrained import PretrainedNotAvailableError

    for cls in (PretrainedNotAvailableError, FusedUnavailable):
        assert issubclass(cls, GptlearnError) and issubclass(cls, RuntimeError)  # old callers still catch them


@pytest.mark.parametrize("bug", [KeyError("layer"), RuntimeError("shape mismatch"), ValueError("bad"),
                                 TypeError("x"), AttributeError("y"), IndexError("z"), ZeroDivisionError()])
def test_a_real_bug_shows_its_traceback(capsys, monkeypatch, model_dir, bug):
    def broken(args):
        raise bug

    monkeypatch.setattr(cli, "_info", broken)
    with pytest.raises(type(bug)):
        cli.main(["info", "--model", str(model_dir)])


@pytest.mark.parametrize("error", [GptlearnError("you did X; do Y"), PermissionError(13, "Permission denied", "/x"),
                                   FileNotFoundError(2, "No such file or directory", "/nowhere")])
def test_user_errors_and_path_errors_are_one_line(capsys, monkeypatch, model_dir, error):
    def fails(args):
        raise error

    monkeypatch.setattr(cli, "_info", fails)
    code, _, err = run(capsys, "info", "--model", str(model_dir))
    one_line(code, err)


def test_an_output_folder_under_a_file_is_one_line(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    code, _, err = run(capsys, "export-web", "--out", str(tmp_path / "file" / "page"))
    one_line(code, err, "file")


@pytest.mark.parametrize("flags, words", [(["--batch-size", "100000000"], ["GiB", "100,000,000 × "]),
                                          (["--config", '{"n_layer": 1000, "n_embd": 4096, "n_head": 16}'],
                                           ["GiB", "n_layer=1000"]),
                                          (["--config", '{"n_layer": 10000000}'], ["n_layer", "at most 1,024"])])
def test_train_refuses_absurd_sizes_before_allocating(capsys, tmp_path, flags, words):
    (tmp_path / "text.txt").write_text("the cat sat on the mat. " * 40)
    code, out, err = run(capsys, "train", "--data", str(tmp_path / "text.txt"), "--out", str(tmp_path / "run"),
                         "--preset", "tiny", "--tokenizer", "char", "--block-size", "8", "--steps", "1",
                         "--no-progress", *flags)
    one_line(code, err, *words)


# ---- class 9: values for generation and embedding ------------------------------------------------------------
GENERATE_BAD = [
    (["--temperature", "inf"], "temperature"), (["--temperature", "nan"], "temperature"),
    (["--temperature", "-1"], "temperature"), (["--temperature=-inf"], "temperature"),
    (["--top-k", "0"], "top_k"), (["--top-k", "-3"], "top_k"),
    (["--top-p", "0"], "top_p"), (["--top-p", "1.5"], "top_p"), (["--top-p", "nan"], "top_p"),
    (["--top-p", "-0.1"], "top_p"), (["--top-p", "inf"], "top_p"),
    (["--max-new-tokens", "-1"], "max-new-tokens"),
    (["--seed", str(2 ** 64)], "--seed"), (["--seed", str(10 ** 30)], "--seed"), (["--seed", "-1"], "--seed"),
]


@pytest.mark.parametrize("flags, word", GENERATE_BAD, ids=lambda x: " ".join(x) if isinstance(x, list) else None)
def test_generate_refuses_invalid_values_in_one_line(capsys, model_dir, flags, word):
    code, out, err = run(capsys, "generate", "--model", str(model_dir), "--prompt", "Hello", "--max-new-tokens", "3",
                         *flags)
    one_line(code, err, word.replace("_", "-") if word.startswith("top") else word)
    assert out == ""  # refused before anything was printed


@pytest.mark.parametrize("flags, word", [
    (["--layer", "99"], "layer"), (["--layer", "-2"], "layer"), (["--sentence", ""], "empty")])
def test_embed_refuses_invalid_values_in_one_line(capsys, model_dir, flags, word):
    code, out, err = run(capsys, "embed", "--sentence", "x", "--model", str(model_dir), *flags)
    one_line(code, err, word)


@pytest.mark.parametrize("option, value", [("temperature", math.inf), ("temperature", math.nan),
                                           ("temperature", -1.0), ("top_k", 0), ("top_k", 2.5), ("top_p", math.nan),
                                           ("top_p", 0.0), ("top_p", 1.01)])
def test_sampling_options_are_checked(option, value):
    logits = torch.randn(2, 10)
    with pytest.raises(GptlearnError, match=option):
        sample_next(logits, **{option: value})


# ---- class 10: output that is what it claims ------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["embed", "--sentence", "A cat."], ["embed", "--sentence", "a", "--sentence", "b"],
                                  ["similarity", "--sentence1", "a", "--sentence2", "b", "--json"],
                                  ["similarity", "--sentence1", "a", "--sentence2", "b", "--all-metrics"]])
def test_non_finite_weights_never_print_nan(capsys, nan_dir, argv):
    code, out, err = run(capsys, *argv, "--model", str(nan_dir))
    one_line(code, err, "NaN")
    if out:
        strict_json(out)


@pytest.mark.parametrize("greedy", [True, False])
def test_generate_with_non_finite_weights_is_refused(capsys, nan_dir, greedy):
    code, out, err = run(capsys, "generate", "--model", str(nan_dir), "--prompt", "Hello", "--max-new-tokens", "3",
                         *(["--greedy"] if greedy else []))
    one_line(code, err, "NaN")


@pytest.mark.parametrize("argv, flag", [
    (["embed", "--sentence", "caf\udce9"], "--sentence"),
    (["embed", "--sentence", "ok", "--sentence", "\udcff\udcfe"], "--sentence"),
    (["similarity", "--sentence1", "ok", "--sentence2", "caf\udce9", "--json"], "--sentence2"),
    (["generate", "--prompt", "caf\udce9", "--max-new-tokens", "2"], "--prompt"),
])
def test_arguments_that_are_not_utf8_are_refused(capsys, model_dir, argv, flag):
    """Python hands bytes that are not UTF-8 in argv over as lone surrogates (U+DC80..U+DCFF)."""
    code, out, err = run(capsys, *argv, "--model", str(model_dir))
    one_line(code, err, flag, "UTF-8")
    assert out == ""


@pytest.mark.slow  # a subprocess: real bytes in argv, real bytes out
def test_bytes_in_argv_never_make_invalid_utf8_output(model_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for locale in ("C.UTF-8", "C"):
        proc = subprocess.run([sys.executable, "-m", "gptlearn", "embed", "--sentence", b"caf\xe9",
                               "--model", str(model_dir)], capture_output=True, env={**env, "LC_ALL": locale},
                              timeout=300)
        proc.stdout.decode("utf-8")  # valid UTF-8, whatever was printed
        proc.stderr.decode("utf-8")
        assert proc.returncode == 2 and proc.stdout == b"" and b"Traceback" not in proc.stderr, proc.stderr


def interactive(capsys, monkeypatch, folder: Path, stdin: bytes) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    return run(capsys, "generate", "--interactive", "--model", str(folder), "--greedy", "--max-new-tokens", "3")


def test_interactive_answers_a_line_that_is_not_utf8_and_goes_on(capsys, monkeypatch, model_dir):
    code, out, err = interactive(capsys, monkeypatch, model_dir, b"Hello\n\xff\xfe bad\nworld\nquit\n")
    assert code == 0 and "Traceback" not in err, err
    assert len(out.splitlines()) == 2  # "Hello" and "world" were continued
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "UTF-8" in errors[0], err


def test_a_prompt_it_cannot_encode_is_refused_before_printing(capsys, char_dir):
    code, out, err = run(capsys, "generate", "--model", str(char_dir), "--prompt", "abz", "--max-new-tokens", "2")
    one_line(code, err, "'z'")
    assert out == ""


def test_interactive_answers_a_prompt_it_cannot_encode_and_goes_on(capsys, monkeypatch, char_dir):
    code, out, err = interactive(capsys, monkeypatch, char_dir, "abc\nxyz\nbad\nquit\n".encode())
    assert code == 0 and "Traceback" not in err, err
    assert len(out.splitlines()) == 2  # "abc" and "bad" use the model's characters; "xyz" does not
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "'x'" in errors[0], err


# ---- class 11: API errors that name the mistake ----------------------------------------------------------------
@pytest.fixture(scope="module")
def small() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, n_positions=16, vocab_size=100)).eval()


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("ids", [[[1, 2, 100]], [[5, 50257]], [[-1, 3]], [7, 200]])
def test_token_ids_outside_the_vocabulary_are_named(ids, fast):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, n_positions=16, vocab_size=100), fast=fast).eval()
    flat = [v for row in ([ids] if isinstance(ids[0], int) else ids) for v in row]
    bad = max(flat) if max(flat) >= 100 else min(flat)
    for call in (lambda: model(torch.tensor(ids)), lambda: model.run_with_cache(torch.tensor(ids)),
                 lambda: model.generate(torch.tensor(ids), 2),
                 lambda: model.hidden_states(torch.tensor(ids).view(1, -1))):
        with pytest.raises(GptlearnError, match=rf"{bad}\b.*100") as info:
            call()
        assert isinstance(info.value, IndexError)  # what it raised before, for old callers


def test_a_gpt2_tokenizer_on_a_smaller_model_is_named():
    mini = GPT.from_pretrained("gptlearn-mini")
    with pytest.raises(GptlearnError, match="1024"):
        mini.tokenizer = Tokenizer.gpt2()
        mini.run_with_cache("Hello world, said the zebra")
    with pytest.raises(GptlearnError, match="1024"):
        Embedder(GPT.from_pretrained("gptlearn-mini"), tokenizer=Tokenizer.gpt2()).encode(["the zebra"])


@pytest.mark.parametrize("value", [None, 3.5, [[1, 2]], torch.tensor([[0.5, 1.5]])])
def test_the_model_names_what_it_was_given_instead_of_token_ids(small, value):
    with pytest.raises(GptlearnError) as info:
        small.run_with_cache(value)
    assert isinstance(info.value, TypeError) and "token ids" in str(info.value)


@settings(max_examples=200, deadline=None)
@given(x=st.lists(st.floats(-1, 1, allow_subnormal=False), min_size=2, max_size=8),
       y_seed=st.integers(0, 2 ** 32 - 1), exponent=st.integers(-35, 35))
def test_cosine_does_not_depend_on_the_scale(x, y_seed, exponent):
    x = np.array(x, dtype=np.float32)
    if np.abs(x).max() < 1e-3:
        x[0] = 1.0
    y = np.random.default_rng(y_seed).uniform(-1, 1, size=x.shape).astype(np.float32)
    scale = np.float32(10.0 ** exponent)
    want = float(np.dot(x.astype(np.float64),
                        y) / np.linalg.norm(x.astype(np.float64)) / np.linalg.norm(y.astype(np.float64)))
    for a, b in ((x * scale, y * scale), (torch.from_numpy(x * scale), torch.from_numpy(y * scale))):
        assert float(cosine(a, a)) == pytest.approx(1.0, abs=1e-5)
        assert float(cosine(a, b)) == pytest.approx(want, abs=1e-4)
        assert float(pairwise(a[None], b[None])[0]) == pytest.approx(want, abs=1e-4)
        assert float(euclidean(a, a)) == 0.0


@pytest.mark.parametrize("value", [1e30, 3e38, 1e-30, 1e-44])
def test_cosine_of_equal_extreme_vectors_is_one(value):
    v = np.full(8, value, dtype=np.float32)
    assert cosine(v, v) == pytest.approx(1.0, abs=1e-6)
    assert float(cosine(torch.from_numpy(v), torch.from_numpy(v))) == pytest.approx(1.0, abs=1e-6)
    v64 = np.full(8, 1e200 if value > 1 else 1e-200)
    assert cosine(v64, v64) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("rows", [
    "id\tsentence1\tsentence2\tlabel\n1\tA cat.\tA feline.\t1\n",
    "main-captions\tMSRvid\t2012test\t0001\t5.000\tA plane.\tAn air plane.\n",
])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_pair_file_may_start_with_a_bom(tmp_path, rows, newline):
    path = tmp_path / "pairs.tsv"
    path.write_bytes(b"\xef\xbb\xbf" + rows.replace("\n", newline).encode())
    pairs = read_pairs(path)
    assert len(pairs) == 1 and pairs.skipped == [] and "\ufeff" not in pairs.sentences1[0]
