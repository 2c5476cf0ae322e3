"""The run folder: checked before any work, locked while a run writes it, never taken over unasked, and
clean after killed checkpoints."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_kit import CLI_MODEL, FAST, REPO, _quiet_and_single_threaded, text_file  # noqa: F401 (fixtures)
from train_kit import one_line as _one_line
from train_kit import run_cli as _cli

import gptlearn.train as gtrain
from gptlearn import GPTConfig
from gptlearn.folders import MANIFEST, read_manifest
from gptlearn.model import from_pretrained
from gptlearn.tokenizers import CharTokenizer
from gptlearn.train import read_trainer_state, train


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---- class 2: --out is checked before any work ----------------------------------------------------------
def _bad_out(kind: str, tmp_path: Path) -> tuple[Path, str]:
    if kind == "a file":
        (tmp_path / "out.txt").write_text("notes")
        return tmp_path / "out.txt", "is a file"
    if kind == "inside a file":
        (tmp_path / "out.txt").write_text("notes")
        return tmp_path / "out.txt" / "run", "cannot write to the output folder"
    if kind == "a folder of other things":
        (tmp_path / "photos").mkdir()
        (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
        return tmp_path / "photos", "is not empty and gptlearn did not write it: it holds 'cat.jpg'"
    if kind == "a model folder":
        from_pretrained("gptlearn-mini").save_pretrained(tmp_path / "model")
        return tmp_path / "model", "already holds a model"
    if kind == "unwritable":
        if os.geteuid() == 0:  # root writes anywhere it may create files; /sys refuses even root
            return Path("/sys/gptlearn-test-run"), "cannot write to the output folder"
        (tmp_path / "ro").mkdir(mode=0o500)
        return tmp_path / "ro" / "run", "cannot write to the output folder"
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["a file", "inside a file", "a folder of other things", "a model folder",
                                  "unwritable"])
def test_a_bad_out_is_one_line_before_any_work(text_file, tmp_path, capsys, monkeypatch, kind):
    out, message = _bad_out(kind, tmp_path)
    before = _entries(tmp_path)

    def no_work(*a, **k):
        raise AssertionError("the data were read before --out was checked")

    monkeypatch.setattr(gtrain, "load_text", no_work)
    code, err = _cli(capsys, "--data", text_file, "--out", out, *CLI_MODEL, "--steps", "2")
    assert code == 2 and message in _one_line(err)
    assert _entries(tmp_path) == before  # nothing written beside it either (no lock file left)


def test_overwrite_keeps_what_gptlearn_did_not_write(text_file, tmp_path, capsys):
    out, _ = _bad_out("a folder of other things", tmp_path)
    code, err = _cli(capsys, "--data", text_file, "--out", out, *CLI_MODEL, "--steps", "2", "--overwrite")
    assert code == 0, err
    assert (out / "cat.jpg").read_bytes() == b"\xff\xd8" and (out / "trainer_state.json").is_file()
    assert "cat.jpg" not in read_manifest(out)["files"]  # the run's files are listed, the photo is not


def test_overwrite_never_replaces_a_file_gptlearn_did_not_write(text_file, tmp_path, capsys, monkeypatch):
    """An unrelated project that happens to hold a config.json: refused before any work, nothing touched."""
    out = tmp_path / "project"
    out.mkdir()
    (out / "config.json").write_text('{"name": "my project"}')
    (out / "main.py").write_text("print(1)")
    monkeypatch.setattr(gtrain, "load_text", lambda *a, **k: pytest.fail("the data were read before --out was checked"))
    code, err = _cli(capsys, "--data", text_file, "--out", out, *CLI_MODEL, "--steps", "2", "--overwrite")
    assert code == 2 and "'config.json', which gptlearn did not write" in _one_line(err)
    assert _entries(out) == ["config.json", "main.py"] and (out / "config.json").read_text() == '{"name": "my project"}'


# ---- class 7: a finished run is not taken over unasked --------------------------------------------------
def test_a_finished_run_is_kept_until_resume_or_overwrite(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert _cli(capsys, "--data", text_file, "--out", out, *CLI_MODEL, "--steps", "4", "--eval-every", "2")[0] == 0
    finished = {p.name: p.read_bytes() for p in out.iterdir()}
    code, err = _cli(capsys, "--data", text_file, "--out", out, *CLI_MODEL, "--steps", "4")
    assert code == 2 and "already holds a training run (4 of 4 steps, finished); continue it with --resume, or " \
                         "replace it with --overwrite" in _one_line(err)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == finished
    # --overwrite: a new run, with another tokenizer; nothing of the old one is carried over
    code, err = _cli(capsys, "--data", text_file, "--out", out, "--preset", "tiny", "--config",
                     '{"n_embd": 16, "n_layer": 1, "n_head": 2}', "--tokenizer", "bpe:300", "--batch-size", "2",
                     "--block-size", "16", "--eval-iters", "1", "--no-progress", "--steps", "2", "--eval-every", "2",
                     "--overwrite")
    assert code == 0, err
    assert "char_tokenizer.json" in finished and not (out / "char_tokenizer.json").exists()
    model = from_pretrained(out)
    assert model.config.vocab_size == 300 == model.tokenizer.vocab_size
    assert read_trainer_state(out)["step"] == 2


def test_a_second_run_into_a_locked_folder_is_refused(text_file, tmp_path, capsys):
    """While one run trains into a folder, a second `gptlearn train --out` the same folder (here started
    from inside the first one's callback) is one line; the first run goes on and finishes."""
    tok = CharTokenizer.from_text(text_file.read_text())
    config = GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16, n_positions=16)
    out, seen = tmp_path / "run", []

    def second_run(event, history):
        if event == "step" and history.step[-1] == 3:
            seen.append(_cli(capsys, "--data", text_file, "--out", out, *CLI_MODEL, "--steps", "2"))
            seen.append(_cli(capsys, "--data", text_file, "--out", out, "--resume", "--steps", "9"))
            seen.append(_cli(capsys, "--data", text_file, "--out", str(out) + "/../run", *CLI_MODEL, "--steps", "2",
                             "--overwrite"))

    train(config, text_file, tokenizer=tok, out_dir=out, steps=4, eval_every=2, callback=second_run, **FAST)
    assert len(seen) == 3
    for code, err in seen:
        assert code == 2 and f"another training run (process {os.getpid()}) is writing to" in _one_line(err)
    assert read_trainer_state(out)["step"] == 4
    assert _entries(tmp_path) == ["run", "shakespeare.txt"]  # the lock file went with the run


SLOW_RUN = """
import sys, time
from pathlib import Path
from gptlearn import GPTConfig
from gptlearn.tokenizers import CharTokenizer
from gptlearn.train import train
text_file, out, ready, go = sys.argv[1:5]
tok = CharTokenizer.from_text(open(text_file).read())
cfg = GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16, n_positions=16)

def wait(event, hist):
    if event == "step" and hist.step[-1] == 1:
        Path(ready).touch()
        while not Path(go).exists():
            time.sleep(0.05)

train(cfg, text_file, tokenizer=tok, out_dir=out, steps=3, eval_every=3, batch_size=2, block_size=16, eval_iters=1,
      sample_tokens=0, progress=False, callback=wait)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_two_processes_one_folder(text_file, tmp_path):
    """Two `gptlearn train --out same` processes at once: the second is one line, exit 2; the first ends well."""
    script = tmp_path / "slow.py"
    script.write_text(SLOW_RUN)
    out, ready, go = tmp_path / "run", tmp_path / "ready", tmp_path / "go"
    first = subprocess.Popen([sys.executable, str(script), str(text_file), str(out), str(ready), str(go)],
                             env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        second = subprocess.run([sys.executable, "-m", "gptlearn", "train", "--data", str(text_file), "--out", str(out),
                                 *CLI_MODEL, "--steps", "2"], env=_env(), cwd=REPO, capture_output=True, text=True,
                                timeout=300)
        assert second.returncode == 2
        assert f"another training run (process {first.pid}) is writing to" in _one_line(second.stderr)
    finally:
        go.touch()
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert read_trainer_state(out)["step"] == 3


# ---- class 7: killed checkpoints leave nothing behind ----------------------------------------------------
KILL_IN_SAVE = """
import importlib, os, signal, sys
from gptlearn import GPTConfig
from gptlearn.tokenizers import CharTokenizer
from gptlearn.train import train
text_file, out, arm_at, target, nth, when = sys.argv[1:7]
module_name, name = target.rsplit(".", 1)
module = importlib.import_module(module_name)
real, calls = getattr(module, name), []

def dying(*a, **k):  # SIGKILL before or after the nth call: no finally block runs, nothing is flushed
    calls.append(1)
    if len(calls) == int(nth) and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = real(*a, **k)
    if len(calls) == int(nth):
        os.kill(os.getpid(), signal.SIGKILL)
    return result

def arm(event, hist):  # the eval of step arm_at comes just before its checkpoint
    if event == "eval" and hist.step[-1] == int(arm_at):
        setattr(module, name, dying)

tok = CharTokenizer.from_text(open(text_file).read())
cfg = GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16, n_positions=16)
train(cfg, text_file, tokenizer=tok, out_dir=out, steps=4, eval_every=2, batch_size=2, block_size=16, eval_iters=1,
      sample_tokens=0, progress=False, seed=3, lr=3e-3, warmup=2, callback=arm)
"""

KILLS = [  # (the checkpoint, what to wrap, at which call in it, before or after the call): one per stage of a save
    (2, "safetensors.torch.save_file", 1, "after"),  # the first checkpoint, half-written: no run yet
    (4, "safetensors.torch.save_file", 2, "after"),  # the model and the tensors written, the JSON not yet
    (4, "gptlearn.atomic._carry_over", 1, "after"),  # old entries carried into the new folder
    (4, "os.rename", 1, "after"),  # the old folder stepped aside, the new one not yet in its place
    (4, "os.rename", 2, "after"),  # the new one in place, the old one not yet removed
]


@pytest.mark.slow
@pytest.mark.parametrize("arm_at, target, nth, when", KILLS)
def test_a_checkpoint_killed_mid_write_leaves_nothing_after_the_next_start(text_file, tmp_path, arm_at, target,
                                                                          nth, when):
    script = tmp_path / "kill.py"
    script.write_text(KILL_IN_SAVE)
    runs = tmp_path / "runs"
    out = runs / "run"
    killed = subprocess.run([sys.executable, str(script), str(text_file), str(out), str(arm_at), target, str(nth),
                             when], env=_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    left = [p.name for p in runs.iterdir() if p.name not in ("run", ".run.lock")]
    left += [p.name for p in out.iterdir() if p.name.startswith(".")] if out.is_dir() else []
    assert left, "the kill left nothing half-written: it did not land inside the checkpoint"
    resume = (out / gtrain.STATE_FILE).is_file() or not out.is_dir()  # a first checkpoint killed: nothing to resume
    tok = CharTokenizer.from_text(text_file.read_text())
    config = GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16, n_positions=16)
    train(config, text_file, tokenizer=None if resume else tok, out_dir=out, steps=4, eval_every=2, resume=resume,
          **FAST)
    assert _entries(runs) == ["run"], left  # no .run.tmp-*, .run.old-* nor .run.lock
    assert [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != MANIFEST] == []
    assert read_trainer_state(out)["step"] == 4
