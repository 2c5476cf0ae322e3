"""The trainer state on disk (no pickle, damage caught) and the NaN guard (a checkpoint is always a good one).

A planted ``trainer_state.pt`` is never unpickled; a garbage, empty or truncated
state is one clear line; a run that diverges never writes, nor replaces, a checkpoint that is not finite.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from train_kit import CLI_MODEL, FAST, REPO, _quiet_and_single_threaded, text_file  # noqa: F401 (fixtures)
from train_kit import one_line as _one_line
from train_kit import run_cli as _cli

from gptlearn import GPT, GPTConfig
from gptlearn.checkpoint import LEGACY_STATE_FILE, STATE_FILE, STATE_TENSORS, _checksum
from gptlearn.data import TokenDataset
from gptlearn.errors import GptlearnError
from gptlearn.model import from_pretrained
from gptlearn.tokenizers import CharTokenizer
from gptlearn.train import TrainConfig, read_trainer_state, train


@pytest.fixture
def tiny(text_file, tmp_path):
    """(config, dataset) of a 1-layer, 16-wide character model."""
    tok = CharTokenizer.from_text(text_file.read_text())
    config = GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16, n_positions=16)
    return config, TokenDataset(text_file.read_text(), tok, cache=tmp_path / "tokens")


def _folder_bytes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


# ---- nothing is unpickled -------------------------------------------------------------------------------
def test_the_state_is_json_and_safetensors_and_reads_back_as_written(tiny, tmp_path):
    config, data = tiny
    train(config, data, out_dir=tmp_path / "run", steps=4, eval_every=2, **FAST)
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert STATE_FILE in names and STATE_TENSORS in names and LEGACY_STATE_FILE not in names
    meta = json.loads((tmp_path / "run" / STATE_FILE).read_text())
    assert meta["step"] == 4 and meta["settings"]["lr"] == 3e-3 and meta["history"]["step"] == [1, 2, 3, 4]
    from safetensors.torch import load_file

    tensors = load_file(tmp_path / "run" / STATE_TENSORS)
    assert {"rng.0.torch", "rng.0.data", "rng.0.python", "rng.0.numpy"} <= set(tensors)
    assert any(k.endswith(".exp_avg_sq") for k in tensors)
    state = read_trainer_state(tmp_path / "run")
    assert state["step"] == 4 and state["history"].step == [1, 2, 3, 4]
    for i, entry in state["optimizer"]["state"].items():
        torch.testing.assert_close(entry["exp_avg"], tensors[f"optimizer.{i}.exp_avg"], rtol=0, atol=0)
    assert state["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.95)  # a tuple again, as torch made it
    assert len(state["rng"][0]["python"][1]) == 625 and state["rng"][0]["numpy"][1].dtype.name == "uint32"


class _Planted:
    """Unpickling this writes a marker file: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pickle ran')",))


@pytest.fixture
def planted(tmp_path, tiny):
    """A run folder with a model and, as its trainer state, a pickle that writes a marker when loaded."""
    config, data = tiny
    out, marker = tmp_path / "run", tmp_path / "PICKLE-RAN"
    train(config, data, out_dir=out, steps=2, eval_every=2, **FAST)
    for name in (STATE_FILE, STATE_TENSORS):
        (out / name).unlink()
    with open(out / LEGACY_STATE_FILE, "wb") as f:
        pickle.dump({"step": 2, "history": {}, "evil": _Planted(marker)}, f)
    return out, marker


@pytest.mark.parametrize("how", ["--resume", "a new run", "read_trainer_state", "TrainConfig.from_run"])
def test_a_planted_pickle_is_refused_and_never_run(planted, text_file, capsys, how):
    out, marker = planted
    if how.startswith("--") or how == "a new run":
        code, err = _cli(capsys, "--data", text_file, "--out", out, *CLI_MODEL, "--steps", "4",
                         *(["--resume"] if how == "--resume" else []))
        line = _one_line(err)
        assert code == 2
        assert "pickle" in line and ("never loads" in line if how == "--resume" else
                                     "older gptlearn" in line and "--overwrite" in line and "--resume" not in line)
    else:
        with pytest.raises(GptlearnError, match=r"trainer_state\.pt .* a pickle, which gptlearn never loads"):
            read_trainer_state(out) if how == "read_trainer_state" else TrainConfig.from_run(out)
    assert not marker.exists()
    assert (out / LEGACY_STATE_FILE).is_file()  # left as it was


def test_overwrite_replaces_a_planted_pickle_without_loading_it(planted, text_file, capsys):
    out, marker = planted
    code, err = _cli(capsys, "--data", text_file, "--out", out, *CLI_MODEL, "--steps", "2", "--eval-every", "2",
                     "--overwrite")
    assert code == 0, err
    assert not marker.exists() and read_trainer_state(out)["step"] == 2
    assert (out / LEGACY_STATE_FILE).is_file()  # never loaded, and kept: gptlearn cannot prove it wrote it


def test_the_package_never_unpickles():
    """No weights_only=False, pickle.load(s), torch.load without weights_only=True or allow_pickle=True."""
    offenders = []
    for path in sorted((REPO / "gptlearn").rglob("*.py")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"weights_only\s*=\s*False|pickle\.loads?\(|allow_pickle\s*=\s*True|Unpickler", code) or (
                    "torch.load(" in code and "weights_only=True" not in code):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []


# ---- a damaged state is one clear line ------------------------------------------------------------------
def _rewrite(out: Path, change) -> None:
    """Change trainer_state.json with ``change(meta)`` and seal it again (a crafted file, not a damaged one)."""
    meta = json.loads((out / STATE_FILE).read_text())
    change(meta)
    meta["sha256"] = _checksum(meta)
    (out / STATE_FILE).write_text(json.dumps(meta))


def _set(path: str, value):
    def change(meta):
        *parents, last = path.split(".")
        d = meta
        for k in parents:
            d = d[int(k)] if isinstance(d, list) else d[k]
        d[last] = value
    return change


DAMAGE = {  # what is done to a good state -> what the message names
    "empty json": (lambda out: (out / STATE_FILE).write_bytes(b""), "not valid JSON"),
    "empty tensors": (lambda out: (out / STATE_TENSORS).write_bytes(b""), "sha256 differs"),
    "json cut in half": (lambda out: (out / STATE_FILE).write_bytes((out / STATE_FILE).read_bytes()[:500]),
                         "not valid JSON"),
    "tensors cut in half": (lambda out: (out / STATE_TENSORS).write_bytes((out / STATE_TENSORS).read_bytes()[:999]),
                            "sha256 differs"),
    "garbage json": (lambda out: (out / STATE_FILE).write_bytes(bytes(range(256)) * 4), "not valid JSON"),
    "garbage tensors": (lambda out: (out / STATE_TENSORS).write_bytes(b"\x89PNG" * 300), "sha256 differs"),
    "a json list": (lambda out: (out / STATE_FILE).write_text("[1, 2, 3]"), "not a gptlearn trainer state"),
    "json null": (lambda out: (out / STATE_FILE).write_text("null"), "not a gptlearn trainer state"),
    "nested 100,000 deep": (lambda out: (out / STATE_FILE).write_text("[" * 100_000 + "]" * 100_000),
                            "not valid JSON"),
    "a digit changed": (lambda out: (out / STATE_FILE).write_text(
        (out / STATE_FILE).read_text().replace('"step": 4', '"step": 3', 1)), "sha256 differs"),
    "tensors missing": (lambda out: (out / STATE_TENSORS).unlink(), "is missing"),
    "another version": (lambda out: _rewrite(out, _set("version", 99)), "version 99"),
    "step a string": (lambda out: _rewrite(out, _set("step", "4")), "step is '4'"),
    "step negative": (lambda out: _rewrite(out, _set("step", -1)), "step is -1"),
    "history short": (lambda out: _rewrite(out, _set("history.train_loss", [1.0])), "history"),
    "history of strings": (lambda out: _rewrite(out, _set("history.lr", ["a", "b", "c", "d"])), "wrong type"),
    "settings a list": (lambda out: _rewrite(out, _set("settings", [])), "no settings"),
    "rng missing": (lambda out: _rewrite(out, _set("rng", None)), "TypeError"),
    "optimizer groups a string": (lambda out: _rewrite(out, _set("optimizer.param_groups", "x")), "damaged"),
    "huge integer": (lambda out: (out / STATE_FILE).write_text('{"step": ' + "9" * 5000 + "}"), "not valid JSON"),
}


@pytest.fixture
def good_run(tiny, tmp_path):
    config, data = tiny
    out = tmp_path / "run"
    train(config, data, out_dir=out, steps=4, eval_every=2, **FAST)
    return out


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_state_is_one_clear_line(good_run, text_file, capsys, damage):
    do, message = DAMAGE[damage]
    do(good_run)
    with pytest.raises(GptlearnError, match=re.escape(message)) as e:
        read_trainer_state(good_run)
    assert "\n" not in str(e.value)
    code, err = _cli(capsys, "--data", text_file, "--out", good_run, "--resume", "--steps", "6")
    assert code == 2 and message in _one_line(err)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from([STATE_FILE, STATE_TENSORS]), cut=st.floats(0, 1), flips=st.lists(
    st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), max_size=3))
def test_any_truncation_or_corruption_is_refused_or_changes_nothing(good_run, which, cut, flips):
    """Truncate one of the two files anywhere and flip some of its bytes: reading it either refuses in
    one line, or (no byte changed) gives the state as saved."""
    path = good_run / which
    original = path.read_bytes()
    data = bytearray(original[:round(len(original) * cut)])
    for where, xor in flips:
        if data:
            data[int(where * len(data))] ^= xor
    path.write_bytes(bytes(data))
    try:
        if bytes(data) == original:
            assert read_trainer_state(good_run)["step"] == 4
        else:
            try:
                state = read_trainer_state(good_run)
            except GptlearnError as e:
                assert "\n" not in str(e)
            else:  # the only damage that may read: white space around the JSON (e.g. its last newline cut)
                assert which == STATE_FILE and bytes(data).strip() == original.strip() and state["step"] == 4
    finally:
        path.write_bytes(original)


# ---- a checkpoint is written only when it is finite ------------------------------------------------------
POISONS = {  # name -> (what a callback does at the eval of step 4, just before its checkpoint; the message)
    "a NaN weight": (lambda m: m.wte.weight.data.__setitem__((0, 0), float("nan")),
                     r"the weight wte\.weight is not finite"),
    "an infinite bias": (lambda m: m.blocks[0].mlp.c_fc.bias.data.fill_(float("inf")),
                         r"the weight blocks\.0\.mlp\.c_fc\.bias is not finite"),
    "finite weights, 1e30 times too big": (lambda m: [p.data.mul_(1e30) for p in m.parameters()],
                                           r"the loss at its weights is (nan|inf)"),
}


@pytest.mark.parametrize("poison", list(POISONS))
def test_a_non_finite_checkpoint_is_never_written(tiny, tmp_path, poison):
    config, data = tiny
    do, message = POISONS[poison]
    model = GPT(config)
    model.tokenizer = data.tokenizer
    out = tmp_path / "run"

    def at_eval(event, history):
        if event == "eval" and history.step[-1] == 4:
            with torch.no_grad():
                do(model)

    with pytest.raises(GptlearnError, match=message + r" at step 4; .*last good checkpoint \(step 2\)"):
        train(model, data, out_dir=out, steps=8, eval_every=2, callback=at_eval, **FAST)
    assert read_trainer_state(out)["step"] == 2
    assert all(torch.isfinite(p).all() for p in from_pretrained(out).parameters())


def test_a_non_finite_evaluation_stops_the_run_at_the_last_good_checkpoint(tiny, tmp_path):
    """An evaluation whose loss is not finite (here the model's loss is made NaN after the checkpoint of
    step 4) stops the run at that evaluation, step 6, naming it, instead of recording a NaN in the history."""
    config, data = tiny
    model = GPT(config)
    model.tokenizer = data.tokenizer

    def after_step_4(event, history):
        if event == "step" and history.step[-1] == 4:
            model.loss = lambda x, y: torch.tensor(float("nan"))  # what evaluations call; training calls forward

    with pytest.raises(GptlearnError, match=r"the train loss of the evaluation became nan at step 6; .*\(step 4\)"):
        train(model, data, out_dir=tmp_path / "run", steps=8, eval_every=2, save_every=4, callback=after_step_4,
              **FAST)
    assert read_trainer_state(tmp_path / "run")["step"] == 4


def test_non_finite_adamw_moments_are_never_saved(tiny, tmp_path, monkeypatch):
    import gptlearn.train as gtrain

    config, data = tiny
    made = []
    real = gtrain.make_optimizer

    def spy(*a, **k):
        made.append(real(*a, **k))
        return made[-1]

    monkeypatch.setattr(gtrain, "make_optimizer", spy)

    def at_eval(event, history):
        if event == "eval" and history.step[-1] == 4:
            next(iter(made[0].state.values()))["exp_avg_sq"].fill_(float("inf"))

    with pytest.raises(GptlearnError, match=r"AdamW's exp_avg_sq of .* is not finite at step 4; .*\(step 2\)"):
        train(config, data, out_dir=tmp_path / "run", steps=8, eval_every=2, callback=at_eval, **FAST)
    assert read_trainer_state(tmp_path / "run")["step"] == 2


def test_a_diverging_run_names_a_finite_last_good_and_never_replaces_it(tiny, tmp_path, text_file, capsys):
    """The issue's case: a good run stops at step 20; a run with a huge learning rate into the same folder
    (--overwrite, since --resume may not change --lr) stops, names no checkpoint of its own, and leaves every
    byte of the good run."""
    out = tmp_path / "run"
    assert _cli(capsys, "--data", text_file, "--out", out, *CLI_MODEL, "--steps", "20", "--eval-every", "10")[0] == 0
    good = _folder_bytes(out)
    code, err = _cli(capsys, "--data", text_file, "--out", out, *CLI_MODEL, "--steps", "30", "--eval-every", "1",
                     "--lr", "1e30", "--overwrite")
    line = _one_line(err)
    assert code == 2 and "at step 1; training stopped and no checkpoint was written" in line, line
    assert _folder_bytes(out) == good
    state = read_trainer_state(out)
    assert state["step"] == 20 and all(torch.isfinite(p).all() for p in from_pretrained(out).parameters())
    code, err = _cli(capsys, "--data", text_file, "--out", out, "--resume", "--steps", "25")  # and it resumes
    assert code == 0, err
    assert read_trainer_state(out)["step"] == 25


def test_ctrl_c_on_non_finite_weights_keeps_the_last_good_checkpoint(tiny, tmp_path, capsys):
    config, data = tiny
    model = GPT(config)
    model.tokenizer = data.tokenizer

    def nan_then_ctrl_c(event, history):
        if event == "step" and history.step[-1] == 3:
            with torch.no_grad():
                model.wte.weight.fill_(float("nan"))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(model, data, out_dir=tmp_path / "run", steps=8, eval_every=2, callback=nan_then_ctrl_c, **FAST)
    assert "the last good checkpoint (step 2)" in capsys.readouterr().err
    assert read_trainer_state(tmp_path / "run")["step"] == 2


def test_resume_refuses_a_checkpoint_that_is_not_finite(good_run, text_file, capsys):
    """A state written before this guard (or edited) with a NaN in it: refused, not resumed."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(good_run / STATE_TENSORS)
    key = next(k for k in tensors if k.endswith("exp_avg"))
    tensors[key][0] = float("nan")
    save_file(tensors, good_run / STATE_TENSORS)
    _rewrite(good_run, _set("tensors_sha256", hashlib.sha256((good_run / STATE_TENSORS).read_bytes()).hexdigest()))
    code, err = _cli(capsys, "--data", text_file, "--out", good_run, "--resume", "--steps", "6")
    assert code == 2 and f"holds non-finite values ({key})" in _one_line(err)
