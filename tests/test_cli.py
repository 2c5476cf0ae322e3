"""The ``gptlearn`` command, through ``main([...])`` and as ``python -m gptlearn`` in a subprocess.

Every test uses a tiny random GPT-2 saved to a temporary folder (passed as ``--model DIR``); one test
checks the bundled ``gptlearn-mini`` and is skipped while it is absent. Numbers printed with four
decimals are compared to 5e-5; JSON numbers to 1e-6.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gptlearn import GPT, Embedder, GPTConfig, cli, similarity

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=4, n_embd=32, n_positions=64))
    return model.save_pretrained(tmp_path_factory.mktemp("cli-model"))


@pytest.fixture(scope="module")
def model(model_dir) -> GPT:
    return GPT.from_pretrained(model_dir)


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_module(*argv: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUTF8": "1", **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "gptlearn", *argv], input=stdin, capture_output=True,
                          text=True, encoding="utf-8", env=env, timeout=300)


# ---- embed ------------------------------------------------------------------------------------------
def test_embed_one_sentence_prints_one_json_object(capsys, model_dir, model):
    code, out, err = run_main(capsys, "embed", "--sentence", "A cat sat.", "--model", str(model_dir), "--device", "cpu")
    assert code == 0 and err == ""
    item = json.loads(out)
    assert set(item) == {"sentence", "embedding", "dimensions"}
    assert item["sentence"] == "A cat sat." and item["dimensions"] == 32 == len(item["embedding"])
    np.testing.assert_allclose(item["embedding"], Embedder(model).encode("A cat sat."), rtol=0, atol=1e-6)


def test_embed_several_sentences_with_options(capsys, model_dir, model):
    sentences = ["A cat sat.", "猫が座った。", "The quick brown fox jumps over the lazy dog."]
    argv = ["embed", "--model", str(model_dir), "--pooling", "last", "--layer", "0", "--normalize"]
    for s in sentences:
        argv += ["--sentence", s]
    code, out, _ = run_main(capsys, *argv)
    items = json.loads(out)
    assert code == 0 and isinstance(items, list) and [i["sentence"] for i in items] == sentences
    got = np.array([i["embedding"] for i in items])
    want = Embedder(model, pooling="last", layer=0).encode(sentences, normalize_embeddings=True)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_embed_warns_in_one_line_when_a_sentence_is_cut(capsys, model_dir):
    code, out, err = run_main(capsys, "embed", "--model", str(model_dir), "--sentence", "word " * 100)
    assert code == 0 and json.loads(out)["dimensions"] == 32
    assert err.splitlines() == ["gptlearn: warning: 1 of 1 sentences were longer than 64 tokens and were "
                                "truncated to their first 64 tokens"]


# ---- similarity -------------------------------------------------------------------------------------
def test_similarity_all_metrics_match_the_library(capsys, model_dir, model):
    s1, s2 = "A man is playing a guitar.", "Someone plays an instrument."
    a, b = Embedder(model).encode([s1, s2])
    want = {name: float(fn(a, b)) for name, (fn, _) in similarity.METRICS.items()}

    code, out, _ = run_main(capsys, "similarity", "--sentence1", s1, "--sentence2", s2, "--model", str(model_dir))
    assert code == 0 and len(out.splitlines()) == 1 and out.startswith("cosine similarity:")
    assert float(out.split()[2]) == pytest.approx(want["cosine"], abs=5e-5)

    code, out, _ = run_main(capsys, "similarity", "--sentence1", s1, "--sentence2", s2, "--model", str(model_dir),
                            "--all-metrics")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 4
    for line, (label, name) in zip(lines, [("cosine similarity", "cosine"), ("euclidean distance", "euclidean"),
                                           ("manhattan distance", "manhattan"), ("dot product", "dot")]):
        assert line.startswith(label + ":")
        assert float(line[len(label) + 1:].split()[0]) == pytest.approx(want[name], abs=5e-5)
        assert f"({similarity.METRICS[name][1]})" in line  # the reading guide

    code, out, _ = run_main(capsys, "similarity", "--sentence1", s1, "--sentence2", s2, "--model", str(model_dir),
                            "--all-metrics", "--json")
    got = json.loads(out)
    assert code == 0 and got["sentence1"] == s1 and got["sentence2"] == s2
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-6)


# ---- generate ---------------------------------------------------------------------------------------
def test_generate_seeded_is_reproducible_and_equals_model_generate(capsys, model_dir, model):
    argv = ["generate", "--model", str(model_dir), "--prompt", "Once upon a time", "--max-new-tokens", "12"]
    code, first, _ = run_main(capsys, *argv, "--seed", "7")
    _, again, _ = run_main(capsys, *argv, "--seed", "7")
    _, other, _ = run_main(capsys, *argv, "--seed", "8")
    assert code == 0 and first == again and first != other
    assert first == model.generate("Once upon a time", 12, temperature=0.8, seed=7) + "\n"


def test_generate_greedy_is_deterministic_and_handles_japanese(capsys, model_dir, model):
    prompt = "吾輩は猫である。"
    argv = ["generate", "--model", str(model_dir), "--prompt", prompt, "--max-new-tokens", "10", "--greedy"]
    code, out, _ = run_main(capsys, *argv)
    assert code == 0 and run_main(capsys, *argv)[1] == out
    assert out == model.generate(prompt, 10, do_sample=False) + "\n"


def test_generate_fused_prints_the_eager_text_or_one_clear_error(capsys, model_dir, model, monkeypatch):
    from gptlearn.fast import fused

    argv = ["generate", "--model", str(model_dir), "--prompt", "Once upon a time", "--max-new-tokens", "10",
            "--greedy", "--fused"]
    code, out, _ = run_main(capsys, *argv)
    assert code == 0 and out == model.generate("Once upon a time", 10, do_sample=False) + "\n"

    def unavailable():
        raise fused.FusedUnavailable("the fused CPU decoding step could not be built (...): no compiler")

    monkeypatch.setattr(fused, "load_kernel", unavailable)
    code, out, err = run_main(capsys, *argv)
    assert code != 0 and err.count("\n") == 1 and "could not be built" in err and "Traceback" not in err


def test_stream_never_prints_half_a_character():
    """Feed the tokens of '猫が' (each kanji is split across byte-level tokens) one at a time."""
    from gptlearn import Tokenizer

    tok = Tokenizer.gpt2()
    ids = tok.encode("猫が🙂")
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # some tokens are partial characters
    fake = SimpleNamespace(tokenizer=tok, generate_stream=lambda *a, **k: iter(torch.tensor([i]) for i in ids))
    chunks: list[str] = []
    out = SimpleNamespace(write=chunks.append, flush=lambda: None)
    args = SimpleNamespace(max_new_tokens=len(ids), temperature=1.0, top_k=None, top_p=None, greedy=True)
    cli._stream(fake, "x", args, None, out=out)
    assert "".join(chunks) == "猫が🙂"
    assert all("\ufffd" not in c for c in chunks)


@pytest.mark.slow  # a subprocess: imports torch afresh
def test_interactive_loop_through_stdin(model_dir, model):
    stdin = "Hello there\n\nこんにちは\nquit\nnever read\n"
    proc = run_module("generate", "--interactive", "--model", str(model_dir), "--greedy", "--max-new-tokens", "6",
                      stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("> ") == 4  # 4 lines read, 2 prompts run
    want = [model.generate(p, 6, do_sample=False)[len(p):] for p in ("Hello there", "こんにちは")]
    assert proc.stdout.splitlines() == want


def test_interactive_ends_at_eof_and_exit(capsys, model_dir, monkeypatch):
    for text in ("Hi\n", "exit\n", ""):
        monkeypatch.setattr(sys, "stdin", io.StringIO(text))
        code, out, err = run_main(capsys, "generate", "--interactive", "--model", str(model_dir),
                                  "--max-new-tokens", "3", "--seed", "0")
        assert code == 0 and len(out.splitlines()) == (1 if text == "Hi\n" else 0)


# ---- info -------------------------------------------------------------------------------------------
def test_info(capsys, model_dir, model):
    code, out, _ = run_main(capsys, "info", "--model", str(model_dir), "--device", "cpu")
    assert code == 0
    assert f"parameters: {model.num_parameters():,}" in out and "device:     cpu" in out
    assert "  n_layer: 2" in out and "  n_embd: 32" in out and "  n_positions: 64" in out


def test_default_model_is_the_bundled_gptlearn_english(capsys):
    code, out, _ = run_main(capsys, "info", "--device", "cpu")
    assert code == 0 and "model:      gptlearn-english" in out and "vocab_size: 12288" in out
    code, out, _ = run_main(capsys, "embed", "--sentence", "Hello", "--device", "cpu")
    assert code == 0 and json.loads(out)["dimensions"] > 0


# ---- errors: one line on stderr, status 2, no traceback ---------------------------------------------
@pytest.fixture(scope="module")
def corrupt_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("corrupt")
    (d / "config.json").write_text("{ this is not json")
    (d / "model.safetensors").write_bytes(b"\x00" * 10)
    return d


@pytest.mark.parametrize("argv, message", [
    (["embed", "--sentence", "ok", "--sentence", "", "--model", "{model}"], "sentence 2 (index 1) is empty"),
    (["similarity", "--sentence1", "", "--sentence2", "x", "--model", "{model}"], "sentence 1 (index 0) is empty"),
    (["info", "--model", "{missing}"], "unknown model"),
    (["info", "--model", "{corrupt}"], "not a valid GPT-2 config"),
    (["embed", "--sentence", "x", "--model", "no-such-model"], "unknown model 'no-such-model'"),
    (["generate", "--model", "{model}"], "give either --prompt TEXT or --interactive"),
    (["generate", "--model", "{model}", "--prompt", ""], "the prompt is empty"),
    (["generate", "--model", "{model}", "--prompt", "x", "--max-new-tokens", "-1"], "--max-new-tokens must be >= 0"),
    (["generate", "--model", "{model}", "--prompt", "x", "--top-p", "2"],
     "--top-p must be a finite number > 0 and <= 1"),
    (["embed", "--sentence", "x", "--model", "{model}", "--layer", "5"], "layer must be an integer in -1..1"),
])
def test_user_errors_are_one_line(capsys, model_dir, corrupt_dir, tmp_path, argv, message):
    argv = [a.format(model=model_dir, missing=tmp_path / "nowhere", corrupt=corrupt_dir) for a in argv]
    code, _, err = run_main(capsys, *argv)
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("gptlearn: error: ") and message in err
    assert "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_is_a_user_error(capsys, model_dir):
    code, _, err = run_main(capsys, "info", "--model", str(model_dir), "--device", "cuda")
    assert code == 2 and err.startswith("gptlearn: error: device 'cuda' was requested") and len(err.splitlines()) == 1


def test_usage_errors_exit_2(capsys):
    code, _, err = run_main(capsys, "embed")
    assert code == 2 and "--sentence" in err and "Traceback" not in err
    code, _, err = run_main(capsys, "similarity", "--sentence1", "x", "--pooling", "avg")
    assert code == 2 and "invalid choice" in err
    assert run_main(capsys)[0] == 2  # no subcommand
    assert run_main(capsys, "--help")[0] == 0


@pytest.mark.slow  # three subprocesses
def test_python_dash_m_end_to_end(model_dir, corrupt_dir, tmp_path):
    proc = run_module("embed", "--sentence", "A cat sat.", "--sentence", "猫", "--model", str(model_dir))
    assert proc.returncode == 0, proc.stderr
    assert [i["dimensions"] for i in json.loads(proc.stdout)] == [32, 32]
    # a Hub name is never fetched while offline: an empty cache gives a clear error, not a download
    proc = run_module("info", "--model", "gpt2", env={"HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 2 and proc.stderr.startswith("gptlearn: error: 'gpt2' is not in the Hugging Face cache")
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    proc = run_module("embed", "--sentence", "x", "--model", str(corrupt_dir))
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr


# ---- subcommands from other modules -----------------------------------------------------------------
def test_plugins_add_subcommands_and_missing_ones_are_skipped(capsys, monkeypatch, tmp_path):
    (tmp_path / "gl_fake_plugin.py").write_text(
        "def register_cli(sub):\n"
        "    p = sub.add_parser('hello')\n"
        "    p.add_argument('--name', default='world')\n"
        "    p.set_defaults(func=lambda args: print('hello', args.name) or 3)\n")
    (tmp_path / "gl_broken_plugin.py").write_text("import gl_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "_PLUGINS", ("gl_fake_plugin", "gl_no_such_module"))
    code, out, _ = run_main(capsys, "hello", "--name", "you")
    assert code == 3 and out == "hello you\n"
    monkeypatch.setattr(cli, "_PLUGINS", ("gl_broken_plugin",))
    with pytest.raises(ModuleNotFoundError, match="gl_no_such_dependency"):  # a real bug is not hidden
        cli.build_parser()


def _commands(parser) -> set[str]:
    return set(next(a for a in parser._actions if a.dest == "command").choices)


def test_train_subcommands_are_registered_when_present(monkeypatch):
    import importlib

    full = _commands(cli.build_parser())
    monkeypatch.setattr(cli, "_PLUGINS", ())
    base = _commands(cli.build_parser())
    assert base == {"embed", "similarity", "generate", "info"}
    present = [m for m in ("train", "embed_train") if (REPO / "gptlearn" / f"{m}.py").is_file()
               and hasattr(importlib.import_module(f"gptlearn.{m}"), "register_cli")]
    assert len(full - base) >= len(present)
