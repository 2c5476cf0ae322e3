"""gptlearn.train: lr schedule, AdamW groups, loss falls, exact resume, atomic checkpoints, NaN stop,
DDP (2 gloo processes) and the command line."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptlearn import GPT, GPTConfig
from gptlearn.errors import GptlearnError
from gptlearn.model import from_pretrained
from gptlearn.tokenizers import CharTokenizer
from gptlearn.train import TrainConfig, add_arguments, lr_at, param_groups, read_trainer_state, train

REPO = Path(__file__).resolve().parents[1]
TINY = dict(n_layer=2, n_head=2, n_embd=32, n_positions=32, resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
FAST = dict(batch_size=4, block_size=32, eval_iters=2, sample_tokens=8, progress=False, lr=3e-3, warmup=5)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GPTLEARN_CACHE", str(tmp_path_factory.getbasetemp() / "gptlearn-cache"))


@pytest.fixture
def text_file(data_dir, tmp_path) -> Path:
    """The first 30,000 characters of TinyShakespeare."""
    path = tmp_path / "shakespeare.txt"
    path.write_text((data_dir / "tinyshakespeare.txt").read_text(encoding="utf-8")[:30_000], encoding="utf-8")
    return path


def _tiny(text_file: Path) -> GPTConfig:
    chars = CharTokenizer.from_text(text_file.read_text())
    return GPTConfig(vocab_size=chars.vocab_size, **TINY)


def test_lr_schedule_values():
    kw = dict(max_lr=1e-3, warmup=10, total=110, min_lr=1e-4)
    assert lr_at(0, **kw) == pytest.approx(1e-4)  # (0 + 1) / 10 of the peak
    assert lr_at(4, **kw) == pytest.approx(5e-4)
    assert lr_at(9, **kw) == pytest.approx(1e-3)  # warmup ends at the peak
    assert lr_at(10, **kw) == pytest.approx(1e-3)  # cosine starts at the peak
    assert lr_at(60, **kw) == pytest.approx(1e-4 + 0.5 * 9e-4)  # halfway: the mean of peak and floor
    assert lr_at(35, **kw) == pytest.approx(1e-4 + 0.5 * (1 + math.cos(math.pi / 4)) * 9e-4)
    assert lr_at(110, **kw) == pytest.approx(1e-4) and lr_at(500, **kw) == pytest.approx(1e-4)
    lrs = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # never rises after warmup


def test_param_groups_decay_matrices_only(tiny_model):
    decay, no_decay = param_groups(tiny_model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "wte.weight" in decay["names"] and "wpe.weight" in decay["names"]
    assert "blocks.0.attn.c_attn.weight" in decay["names"] and "blocks.1.mlp.c_proj.weight" in decay["names"]
    assert "blocks.0.attn.c_attn.bias" in no_decay["names"] and "blocks.0.ln_1.weight" in no_decay["names"]
    assert "ln_f.bias" in no_decay["names"]
    assert "lm_head.weight" not in decay["names"]  # tied to wte: counted once
    n = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert n == tiny_model.num_parameters()
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])


def test_loss_falls_on_tinyshakespeare(data_dir, tmp_path):
    calls = []
    h = train(GPTConfig(vocab_size=65, **TINY), "tinyshakespeare", tokenizer="char", steps=40, eval_every=20,
              callback=lambda event, hist: calls.append(event), **{**FAST, "batch_size": 8})
    assert len(h.step) == 40 and h.step[-1] == 40 and len(h.lr) == len(h.train_loss) == 40
    assert calls.count("eval") == 2 and calls.count("step") == 40
    assert h.train_loss[0] > math.log(65) - 0.3  # starts near uniform over 65 characters (4.17 nats)
    assert h.val_loss[-1] < h.val_loss[19] < h.train_loss[0] - 0.5  # and falls, on held-out text too
    assert isinstance(h.samples[-1], str) and h.samples[-1]


def test_interrupted_and_resumed_run_equals_uninterrupted(text_file, tmp_path):
    cfg = _tiny(text_file)
    kw = dict(tokenizer="char", steps=20, eval_every=5, seed=3, **FAST)
    full = train(cfg, text_file, out_dir=tmp_path / "full", **kw)

    def stop_at_10(event, hist):
        if event == "step" and hist.step[-1] == 10:
            raise KeyboardInterrupt  # as if Ctrl-C were pressed right after step 10

    with pytest.raises(KeyboardInterrupt):
        train(cfg, text_file, out_dir=tmp_path / "cut", callback=stop_at_10, **{**kw, "eval_every": 7})
    assert read_trainer_state(tmp_path / "cut")["step"] == 10
    resumed = train(cfg, text_file, out_dir=tmp_path / "cut", resume=True, **{**kw, "eval_every": 7})
    a = from_pretrained(tmp_path / "full").state_dict()
    b = from_pretrained(tmp_path / "cut").state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0
    assert resumed.step == full.step
    assert resumed.train_loss == full.train_loss


KILL_SCRIPT = """
import os, signal, sys
from gptlearn import GPTConfig
from gptlearn.tokenizers import CharTokenizer
from gptlearn.train import train
text_file, out, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
tok = CharTokenizer.from_text(open(text_file).read())
cfg = GPTConfig(vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32, n_positions=32)

def die(event, hist):  # SIGKILL: no finally blocks, no Ctrl-C checkpoint, nothing flushed
    if event == "step" and hist.step[-1] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

train(cfg, text_file, out_dir=out, tokenizer=tok, steps=20, eval_every=5, seed=3, batch_size=4, block_size=32,
      eval_iters=2, sample_tokens=0, progress=False, lr=3e-3, warmup=5, callback=die if kill_at else None,
      resume=kill_at == 0 and os.path.exists(os.path.join(out, "trainer_state.json")))
"""


@pytest.mark.slow
def test_killed_process_resumes_to_the_uninterrupted_weights(text_file, tmp_path):
    """SIGKILL at step 13 (last checkpoint: step 10), then --resume: the same weights as a run never killed."""
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    killed = _run([sys.executable, str(script), str(text_file), str(tmp_path / "cut"), "13"])
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert read_trainer_state(tmp_path / "cut")["step"] == 10
    for out in ("cut", "full"):  # resume the killed run; run the other one start to end
        r = _run([sys.executable, str(script), str(text_file), str(tmp_path / out), "0"])
        assert r.returncode == 0, r.stderr[-2000:]
    a = from_pretrained(tmp_path / "full").state_dict()
    b = from_pretrained(tmp_path / "cut").state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0
    assert read_trainer_state(tmp_path / "cut")["step"] == 20


def test_crash_during_save_keeps_previous_checkpoint(text_file, tmp_path, monkeypatch):
    import safetensors.torch

    real_save, calls = safetensors.torch.save_file, []

    def flaky_save(tensors, path, *a, **k):
        calls.append(path)
        if len(calls) == 4:  # the second checkpoint (model, then trainer state) dies half-written
            Path(path).write_bytes(b"half a checkpoint")
            raise OSError("disk full")
        return real_save(tensors, path, *a, **k)

    monkeypatch.setattr(safetensors.torch, "save_file", flaky_save)
    with pytest.raises(OSError, match="disk full"):
        train(_tiny(text_file), text_file, tokenizer="char", steps=10, eval_every=5, out_dir=tmp_path / "run", **FAST)
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    assert Path(calls[-1]).name == "trainer_state.safetensors"
    assert read_trainer_state(tmp_path / "run")["step"] == 5
    assert sorted(p.name for p in (tmp_path / "run").iterdir()
                  if p.name.startswith(".") and p.name != ".gptlearn-manifest.json") == []  # no temp files left
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".run.")) == []  # nor temp folders
    train(_tiny(text_file), text_file, tokenizer="char", steps=10, eval_every=5, out_dir=tmp_path / "run",
          resume=True, **FAST)
    assert read_trainer_state(tmp_path / "run")["step"] == 10


def test_nan_loss_stops_and_keeps_last_good_checkpoint(text_file, tmp_path):
    torch.manual_seed(0)
    model = GPT(_tiny(text_file))
    model.tokenizer = CharTokenizer.from_text(text_file.read_text())

    def poison(event, hist):
        if event == "step" and hist.step[-1] == 12:
            with torch.no_grad():
                model.wte.weight.fill_(float("nan"))

    with pytest.raises(GptlearnError, match=r"nan at step 13.*step 10"):
        train(model, text_file, steps=30, eval_every=5, out_dir=tmp_path / "run", callback=poison, **FAST)
    assert read_trainer_state(tmp_path / "run")["step"] == 10
    good = from_pretrained(tmp_path / "run")
    assert all(torch.isfinite(p).all() for p in good.parameters())


def test_unwritable_out_dir_fails_before_training(text_file, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    calls = []
    with pytest.raises(GptlearnError, match="cannot write"):
        train(_tiny(text_file), text_file, tokenizer="char", steps=5, out_dir=blocker / "run",
              callback=lambda e, h: calls.append(e), **FAST)
    assert calls == []


def test_fine_tune_from_folder(text_file, tmp_path):
    train(_tiny(text_file), text_file, tokenizer="char", steps=5, eval_every=5, out_dir=tmp_path / "base", **FAST)
    base = from_pretrained(tmp_path / "base")
    h = train(None, text_file, init=tmp_path / "base", steps=5, eval_every=5, out_dir=tmp_path / "ft", **FAST)
    tuned = from_pretrained(tmp_path / "ft")
    assert tuned.config == base.config and len(h.step) == 5
    assert not torch.equal(tuned.wte.weight, base.wte.weight)
    assert tuned.tokenizer.encode("To be") == base.tokenizer.encode("To be")


def test_bpe_tokenizer_is_saved_with_the_model(text_file, tmp_path):
    args = TrainConfig(tokenizer="bpe:300", steps=2, eval_every=2, **{**FAST, "block_size": 16})
    train("tiny", text_file, args, out_dir=tmp_path / "bpe")  # a TrainConfig, and a keyword on top
    model = from_pretrained(tmp_path / "bpe")
    assert model.config.vocab_size == 300 and model.tokenizer.vocab_size == 300
    s = "First Citizen: we are accounted poor"
    assert model.tokenizer.decode(model.tokenizer.encode(s)) == s


def _run(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env, timeout=600, **kw)


@pytest.mark.slow
def test_cli_train_and_bad_input(text_file, tmp_path):
    try:
        from gptlearn.cli import main as cli_main
    except ImportError:
        from gptlearn.train import main as cli_main
        prefix = []
    else:
        prefix = ["train"]
    out = tmp_path / "cli"
    code = cli_main([*prefix, "--data", str(text_file), "--out", str(out), "--preset", "tiny",
                     "--config", json.dumps({"n_embd": 32, "n_layer": 1}), "--tokenizer", "char", "--steps", "3",
                     "--batch-size", "2", "--block-size", "16", "--eval-every", "3", "--eval-iters", "1",
                     "--induction-frac", "0.5", "--no-progress"])
    assert code == 0
    model = from_pretrained(out)
    assert model.config.n_layer == 1 and model.config.vocab_size == model.tokenizer.vocab_size
    bad = _run([sys.executable, "-m", "gptlearn.train", "--data", str(tmp_path / "missing.txt"), "--out",
                str(tmp_path / "x")])
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "missing.txt" in bad.stderr
    bad = _run([sys.executable, "-m", "gptlearn.train", "--data", str(text_file), "--out", str(tmp_path / "x"),
                "--config", "{n_layer: 2"])
    assert bad.returncode == 2 and "JSON" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


DDP_SCRIPT = """
import os, sys, json, torch
from gptlearn import GPT, GPTConfig
from gptlearn.tokenizers import CharTokenizer
from gptlearn.train import train
text_file, out = sys.argv[1], sys.argv[2]
tok = CharTokenizer.from_text(open(text_file).read())
torch.manual_seed(int(os.environ["RANK"]))  # different seeds: DDP must broadcast rank 0's weights
model = GPT(GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32, n_positions=32))
model.tokenizer = tok
h = train(model, text_file, steps=12, eval_every=12, eval_iters=2, batch_size=4, block_size=32, lr=3e-3,
          warmup=2, progress=False, sample_tokens=0, out_dir=out)
torch.save({"state": model.state_dict(), "loss": h.train_loss, "val": h.val_loss[-1]},
           os.path.join(out, f"rank{os.environ['RANK']}.pt"))
"""


@pytest.mark.slow
def test_ddp_two_cpu_processes(text_file, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    r = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
              str(text_file), str(out)])
    assert r.returncode == 0, r.stderr[-2000:]
    r0, r1 = (torch.load(out / f"rank{i}.pt", weights_only=False) for i in (0, 1))
    for k in r0["state"]:
        torch.testing.assert_close(r0["state"][k], r1["state"][k], rtol=0, atol=0)
    assert r0["loss"] == r1["loss"]  # the all-reduced loss
    assert r0["loss"][-1] < r0["loss"][0] - 0.3
    saved = from_pretrained(out)  # rank 0 wrote the folder
    torch.testing.assert_close(saved.wte.weight, r0["state"]["wte.weight"])


# ---- TrainConfig: one source for train()'s settings and the command line ------------------------------------
CLI_FLAGS = {  # gptlearn train's flags: a promise to users, so spelled out here
    "--data", "--preset", "--config", "--init", "--out", "--tokenizer", "--steps", "--batch-size", "--block-size",
    "--lr", "--min-lr", "--warmup", "--weight-decay", "--eval-every", "--eval-iters", "--grad-accum", "--seed",
    "--device", "--compile", "--resume", "--overwrite", "--pos-init", "--repeat-frac", "--induction-frac",
    "--no-progress", "--max-days",
}


def _parser():
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    return p


def test_the_command_line_is_built_from_train_config():
    p = _parser()
    assert {s for a in p._actions for s in a.option_strings} - {"-h", "--help"} == CLI_FLAGS
    args = p.parse_args(["--data", "d", "--out", "o"])
    assert TrainConfig.from_args(args) == TrainConfig(out_dir="o")  # every default comes from the dataclass
    args = p.parse_args(["--data", "d", "--out", "o", "--batch-size", "8", "--min-lr", "1e-4", "--compile",
                         "--no-progress", "--pos-init", "sinusoidal", "--block-size", "64", "--init", "gpt2"])
    assert TrainConfig.from_args(args) == TrainConfig(out_dir="o", batch_size=8, min_lr=1e-4, compile=True,
                                                      progress=False, pos_init="sinusoidal", block_size=64, init="gpt2")
    with pytest.raises(SystemExit):
        p.parse_args(["--data", "d", "--out", "o", "--preset", "tiny", "--init", "gpt2"])  # one or the other
    help_text = p.format_help()
    assert "(default: 1000)" in help_text and "--pos-init {normal,sinusoidal}" in help_text


@pytest.mark.parametrize("setting, value, message", [
    ("lr", float("nan"), "lr must be a positive number"),
    ("lr", -1e-3, "lr must be a positive number"),
    ("min_lr", -1.0, "min_lr must be a number, 0 or more"),
    ("warmup", -5, "warmup must be an integer, 0 or more"),
    ("weight_decay", float("inf"), "weight_decay must be a number"),
    ("steps", 0, "steps must be a positive integer"),
    ("batch_size", 2.5, "batch_size must be a positive integer"),
    ("eval_every", True, "eval_every must be a positive integer"),
    ("block_size", 0, "block_size must be a positive integer or None"),
    ("repeat_frac", 1.5, "repeat_frac must be a fraction from 0 to 1"),
    ("induction_frac", -0.1, "induction_frac must be a fraction from 0 to 1"),
    ("val_fraction", 1.0, "val_fraction must be a fraction"),
    ("betas", (0.9, 1.0), "betas must be two numbers in"),
    ("seed", 2**64, "seed must be an integer from 0 to 2\\*\\*32 - 1"),
    ("pos_init", "sine", "pos_init must be 'normal' or 'sinusoidal'"),
])
def test_bad_settings_are_refused_before_any_work(tmp_path, setting, value, message):
    with pytest.raises(GptlearnError, match=message):
        TrainConfig(**{setting: value}).validate()
    with pytest.raises(GptlearnError, match=message):  # before the (missing) data is even looked at
        train(None, tmp_path / "missing.txt", **{setting: value})


def test_unknown_settings_name_the_nearest_field():
    with pytest.raises(TypeError, match="unknown training setting 'stepz'; did you mean 'steps'"):
        train(None, "x", stepz=3)
    assert TrainConfig(steps=3).replace(lr=1.0) == TrainConfig(steps=3, lr=1.0)
