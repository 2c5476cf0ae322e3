"""A checkpoint is untrusted input: tampered states, sealed again with their sha256 recomputed, are refused in
one line before any of their tensors reaches torch's or NumPy's native code (gptlearn/checkpoint.py).

The crafted states are edits a checksum cannot catch: AdamW moments of the wrong size or layout, a parameter
listed twice or out of range, options that change the update, random states that crash NumPy, sizes that
would hang the run or fill the memory, and special files where the state's files belong.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from data_kit import shared_data
from train_kit import FAST, REPO, _quiet_and_single_threaded, seal_state, text_file  # noqa: F401 (fixtures)

from gptlearn import GPTConfig
from gptlearn.checkpoint import STATE_FILE, STATE_TENSORS, run_lock
from gptlearn.data import TokenDataset
from gptlearn.errors import GptlearnError
from gptlearn.tokenizers import CharTokenizer
from gptlearn.train import read_trainer_state, train


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A finished 4-step run of a 1-layer character model (its folder is copied by each test)."""
    text = shared_data("tinyshakespeare.txt").read_text(encoding="utf-8")[:20_000]
    tok = CharTokenizer.from_text(text)
    config = GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16, n_positions=16)
    data = TokenDataset(text, tok, cache=tmp_path_factory.mktemp("tokens"))
    out = tmp_path_factory.mktemp("run") / "run"
    torch.set_num_threads(1)
    train(config, data, out_dir=out, steps=4, eval_every=2, **FAST)
    return config, data, out


@pytest.fixture
def run(saved_run, tmp_path):
    import shutil

    config, data, out = saved_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    return config, data, copy


def _first(prefix: str, name: str):
    """The key of the optimizer tensor ``name`` of the first matrix (2-D) parameter."""
    def pick(tensors):
        key = next(k for k, v in tensors.items() if k.startswith(prefix) and k.endswith(".exp_avg") and v.dim() == 2)
        return key[:-len("exp_avg")] + name
    return pick


def _tensor_edit(name: str, fn):
    def change(tensors):
        key = _first("optimizer.", name)(tensors)
        tensors[key] = fn(tensors[key])
    return change


def _group_edit(key, value):
    def change(meta):
        meta["optimizer"]["param_groups"][0][key] = value
    return change


def _numpy_pos(value):
    def change(meta):
        meta["rng"][0]["numpy"]["pos"] = value
    return change


# name -> (what the forger changes in the JSON, in the tensors)
TAMPERS = {
    # crashed in native code (SIGSEGV) before: AdamW's kernels and NumPy trust their input
    "exp_avg of the wrong size": (None, _tensor_edit("exp_avg", lambda t: t.flatten()[:-1])),
    "a parameter listed twice": (lambda m: m["optimizer"]["param_groups"][0]["params"].__setitem__(1, 0), None),
    "NumPy position 1e8": (_numpy_pos(10**8), None),
    # tracebacks before
    "betas as strings": (_group_edit("betas", ["0.9", "0.95"]), None),
    "amsgrad without max_exp_avg_sq": (_group_edit("amsgrad", True), None),
    "a step tensor of 2 elements": (None, _tensor_edit("step", lambda t: torch.zeros(2))),
    # accepted silently before
    "a transposed exp_avg": (None, _tensor_edit("exp_avg", lambda t: t.T.contiguous() if t.shape[0] != t.shape[1]
                                                 else t[:, :-1])),
    "exp_avg of another dtype": (None, _tensor_edit("exp_avg", lambda t: t.double())),
    "maximize": (_group_edit("maximize", True), None),
    "an out-of-range parameter index": (lambda m: m["optimizer"]["param_groups"][1]["params"].append(10_000), None),
    "a state for a parameter the model lacks": (lambda m: m["optimizer"]["state"].__setitem__("999", {}), None),
    "NumPy position negative": (_numpy_pos(-1), None),
    "Python random state of another version": (lambda m: m["rng"][0]["python"].__setitem__("version", 2), None),
    "an empty torch random state": (None, lambda t: t.__setitem__("rng.0.torch", torch.zeros(0, dtype=torch.uint8))),
    "a step as a string": (lambda m: m.__setitem__("step", "4"), None),
    "a step of 3e8": (lambda m: m.__setitem__("step", 300_000_000), None),
    "a fractional step": (lambda m: m.__setitem__("step", 3.5), None),
    "a negative AdamW step": (None, _tensor_edit("step", lambda t: torch.tensor(-1.0))),
    "an AdamW step past the run's": (None, _tensor_edit("step", lambda t: torch.tensor(1e9))),
    "negative exp_avg_sq": (None, _tensor_edit("exp_avg_sq", lambda t: -t - 1)),
    "eval_iters 1e9": (lambda m: m["settings"].__setitem__("eval_iters", 10**9), None),
    "grad_accum 1e9": (lambda m: m["settings"].__setitem__("grad_accum", 10**9), None),
    "sample_tokens 1e9": (lambda m: m["settings"].__setitem__("sample_tokens", 10**9), None),
}


def _resume(config, data, out: Path, **extra):
    return train(config, data, out_dir=out, resume=True, **{**FAST, "steps": 6, **extra})


@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_a_tampered_state_is_refused_in_one_line(run, tamper):
    config, data, out = run
    change_meta, change_tensors = TAMPERS[tamper]
    seal_state(out, change_meta, change_tensors)
    with pytest.raises(GptlearnError) as e:
        _resume(config, data, out)
    assert "\n" not in str(e.value) and str(out) in str(e.value), str(e.value)


def test_the_untampered_copy_resumes(run):
    """The control: the same copy, sealed again without a change, resumes (so the refusals above are the edits')."""
    config, data, out = run
    seal_state(out)
    assert _resume(config, data, out).step[-1] == 6


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["exp_avg", "exp_avg_sq", "step"]),
       shape=st.lists(st.integers(0, 40), min_size=0, max_size=3),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int64, torch.uint8, torch.bool]))
def test_any_optimizer_tensor_of_another_shape_or_dtype_is_refused(run, which, shape, dtype):
    """Any shape or dtype but the parameter's own (for step: one float32 number) is refused before loading."""
    config, data, out = run
    original = {n: (out / n).read_bytes() for n in (STATE_FILE, STATE_TENSORS)}
    key = _first("optimizer.", which)(load_file(out / STATE_TENSORS))
    good = load_file(out / STATE_TENSORS)[key]
    bad = torch.ones(shape).to(dtype)
    if bad.shape == good.shape and bad.dtype == good.dtype:
        return  # the parameter's own layout: not a tamper
    try:
        seal_state(out, None, lambda t: t.__setitem__(key, bad))
        with pytest.raises(GptlearnError) as e:
            _resume(config, data, out, steps=4)  # 4: the run is finished, so nothing trains
        assert "\n" not in str(e.value)
    finally:
        for n, b in original.items():
            (out / n).write_bytes(b)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True), st.text(max_size=3), st.none()),
       has_gauss=st.one_of(st.integers(-3, 3), st.floats(allow_nan=True)),
       cached=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none(), st.text(max_size=2)))
def test_any_numpy_random_state_is_checked_before_numpy_sees_it(run, pos, has_gauss, cached):
    """NumPy crashes in native code on a position past its key; any position, flag or cached value the
    checks let through is one NumPy takes, and anything else is refused in one line."""
    config, data, out = run
    original = (out / STATE_FILE).read_bytes()

    def change(meta):
        meta["rng"][0]["numpy"].update(pos=pos, has_gauss=has_gauss, cached_gaussian=cached)

    try:
        try:
            seal_state(out, change)
        except ValueError:
            return  # NaN or infinity: not JSON, so no state file can hold it
        try:
            state = read_trainer_state(out)
        except GptlearnError as e:
            assert "\n" not in str(e)
        else:
            ok = 0 <= pos <= 624 and has_gauss in (0, 1)
            assert ok, (pos, has_gauss, cached)
            import numpy as np

            np.random.set_state(state["rng"][0]["numpy"])  # what the trainer does with it: no crash
    finally:
        (out / STATE_FILE).write_bytes(original)


@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "/dev/urandom", "a folder"])
@pytest.mark.parametrize("which", [STATE_FILE, STATE_TENSORS])
def test_special_files_in_place_of_the_state_are_refused_without_reading(run, special, which):
    """A FIFO would hang a reader and /dev/zero would fill the memory: neither is read."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    config, data, out = run
    path = out / which
    path.unlink()
    if special == "fifo":
        os.mkfifo(path)
    elif special == "a folder":
        path.mkdir()
    else:
        if not os.path.exists(special):
            pytest.skip(f"no {special} here")
        path.symlink_to(special)
    with pytest.raises(GptlearnError) as e:
        read_trainer_state(out)
    assert "\n" not in str(e.value) and ("regular file" in str(e.value) or "damaged" in str(e.value))


def test_utf16_json_is_refused(run):
    config, data, out = run
    (out / STATE_FILE).write_bytes((out / STATE_FILE).read_text().encode("utf-16"))
    with pytest.raises(GptlearnError, match="not valid JSON"):
        read_trainer_state(out)


def test_the_lock_never_follows_a_symlink(tmp_path):
    """A lock file that is a symlink to another file is refused; the file it names is left as it was."""
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    out = tmp_path / "run"
    (tmp_path / ".run.lock").symlink_to(victim)
    with pytest.raises(GptlearnError, match="symlink"):
        with run_lock(out):
            pass
    assert victim.read_text() == "keep me"


SEGV = r'''
import json, sys
from pathlib import Path
from gptlearn import cli
sys.exit(cli.main(["train", "--data", sys.argv[1], "--out", sys.argv[2], "--resume", "--steps", "6", "--no-progress"]))
'''


@pytest.mark.parametrize("tamper", ["exp_avg of the wrong size", "a parameter listed twice", "NumPy position 1e8"])
def test_states_that_crashed_in_native_code_exit_2_in_one_line(run, text_file, tamper):
    """The three states that crashed the process (SIGSEGV) end the CLI with one error line and exit 2."""
    config, data, out = run
    change_meta, change_tensors = TAMPERS[tamper]
    seal_state(out, change_meta, change_tensors)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", SEGV, str(text_file), str(out)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gptlearn: error: "), p.stderr
