"""Ctrl-C at any instant of a step: the checkpoint it leaves resumes to exactly the uninterrupted run.

Each test interrupts step 2 of a 3-step run at one point, resumes the run, and compares the final weights
and history with a run never interrupted (max difference 0.0). The points are every line the step runs in
gptlearn/train.py (the loop and its Run: the update, the eval, the checkpoint) and the first line of each
helper it calls (there and in gptlearn/checkpoint.py and gptlearn/checks.py), found by tracing one
uninterrupted step. The interrupt is a real SIGINT raised at that line (what Ctrl-C does), and, inside the
update, also a KeyboardInterrupt raised there directly (an interrupt the signal handler cannot hold back).
"""
from __future__ import annotations

import inspect
import signal
import sys
from pathlib import Path

import pytest
import torch
from data_kit import shared_data

import gptlearn.checkpoint as gcheckpoint
import gptlearn.checks as gchecks
import gptlearn.train as gtrain
from gptlearn import GPTConfig
from gptlearn.data import TokenDataset
from gptlearn.model import from_pretrained
from gptlearn.tokenizers import CharTokenizer
from gptlearn.train import read_trainer_state, train

TRAIN_FILES = {gtrain.__file__, gcheckpoint.__file__, gchecks.__file__}
SETTINGS = dict(steps=3, eval_every=2, save_every=1, batch_size=2, block_size=16, eval_iters=1, sample_tokens=2,
                progress=False, lr=3e-3, warmup=1, seed=5)
AFTER = 1  # interrupt the step that follows step 1: step 2, which evaluates and writes a checkpoint


@pytest.fixture(autouse=True)
def _one_thread(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GPTLEARN_CACHE", str(tmp_path_factory.getbasetemp() / "gptlearn-cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add waiting on a shared machine
    # Ctrl-C as a terminal delivers it, whatever handler an earlier test in this process left behind
    # (one that swallows SIGINT made the first interrupt of a full-suite run vanish)
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, handler)
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def run_parts(tmp_path_factory):
    """(config, dataset, the final weights and history of a run never interrupted, the step's points)."""
    text = shared_data("tinyshakespeare.txt").read_text(encoding="utf-8")[:20_000]
    tok = CharTokenizer.from_text(text)
    dataset = TokenDataset(text, tok, cache=tmp_path_factory.mktemp("tokens"))
    config = GPTConfig(vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16, n_positions=16)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    tracer = _Tracer(fire_at=None)
    out = tmp_path_factory.mktemp("full") / "run"
    with tracer:
        history = train(config, dataset, out_dir=out, **SETTINGS)
    torch.set_num_threads(before)
    return config, dataset, from_pretrained(out).state_dict(), history, tracer.points


class _Tracer:
    """Counts the line events of step AFTER + 1 in the frames of the trainer's files (``points``: each distinct
    (function, line) with the index of its first event), or interrupts the run at event ``fire_at``:
    ``how="signal"`` raises SIGINT, as Ctrl-C does; ``how="raise"`` raises KeyboardInterrupt at that line."""

    def __init__(self, fire_at: int | None, how: str = "signal") -> None:
        self.fire_at, self.how = fire_at, how
        self.points: dict[tuple[str, int], int] = {}
        self.events = 0
        self.armed = self.fired = False
        source, first = inspect.getsourcelines(gtrain._loop)
        self.loop_line = first + next(i for i, line in enumerate(source) if "while step < steps" in line)

    def _global(self, frame, event, arg):
        return self._local if frame.f_code.co_filename in TRAIN_FILES and not self.fired else None

    def _local(self, frame, event, arg):
        if event != "line" or self.fired:
            return None if self.fired else self._local
        if frame.f_code is gtrain._loop.__code__ and frame.f_lineno == self.loop_line:
            self.armed = frame.f_locals["step"] == AFTER
        if self.armed:
            self.events += 1
            self.points.setdefault((frame.f_code.co_qualname, frame.f_lineno), self.events)
            if self.events == self.fire_at:
                self.fired = True
                if self.how == "signal":
                    signal.raise_signal(signal.SIGINT)  # the handler runs at the next instruction it can
                else:
                    raise KeyboardInterrupt
        return self._local

    def __enter__(self):
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc):
        sys.settrace(None)
        return False


def _chosen(points: dict[tuple[str, int], int]) -> list[tuple[str, int, int]]:
    """Every line of the loop and its closures, and of the update's helpers; the first line of the others."""
    own = ("_loop", "Run.", "Interrupts", "TrainHistory.record")
    firsts: dict[str, tuple[str, int, int]] = {}
    chosen = []
    for (name, line), index in sorted(points.items(), key=lambda kv: kv[1]):
        if name.startswith(own):
            chosen.append((name, line, index))
        else:
            firsts.setdefault(name, (name, line, index))
    return chosen + list(firsts.values())


def _interrupt_and_resume(run_parts, tmp_path: Path, index: int, how: str) -> int:
    """Interrupt the run at line event ``index`` of its step 2, resume it, and compare it with the run
    never interrupted; returns the step of the checkpoint the interrupt left."""
    config, dataset, full_weights, full, _ = run_parts
    out = tmp_path / f"cut-{how}-{index}"
    tracer = _Tracer(fire_at=index, how=how)
    with pytest.raises(KeyboardInterrupt), tracer:
        train(config, dataset, out_dir=out, **SETTINGS)
    assert tracer.fired
    saved_step = read_trainer_state(out)["step"]
    resumed = train(config, dataset, out_dir=out, resume=True, **SETTINGS)
    weights = from_pretrained(out).state_dict()
    assert max((weights[k] - full_weights[k]).abs().max().item() for k in full_weights) == 0.0
    assert resumed.step == full.step and resumed.train_loss == full.train_loss and resumed.lr == full.lr
    assert resumed.val_loss == full.val_loss and resumed.eval_train_loss == full.eval_train_loss
    return saved_step


def test_the_traced_step_runs_the_update_eval_and_checkpoint(run_parts):
    points = run_parts[-1]
    names = {name for name, _ in points}
    for inside in ("Interrupts.held", "TrainHistory.record", "Run.evaluate", "Run.save", "Run.step", "Run.update",
                   "write_trainer_state", "non_finite", "warmup_cosine_lr", "rng_state"):
        assert inside in names, inside
    assert len(_chosen(points)) >= 80


@pytest.mark.slow
def test_sigint_at_every_line_of_a_step_resumes_exactly(run_parts, tmp_path):
    """A SIGINT at any line: the run stops within that step and leaves the checkpoint of step 1 or 2 (the
    one held inside the update lands after it), and the resumed run equals the uninterrupted one."""
    saved = {}
    for name, line, index in _chosen(run_parts[-1]):
        saved[name, line] = _interrupt_and_resume(run_parts, tmp_path, index, "signal")
    assert set(saved.values()) == {AFTER, AFTER + 1}, saved
    held = [k for k in saved if k[0] == "TrainHistory.record"]
    assert held and all(saved[k] == AFTER + 1 for k in held)  # held until the update was whole, then saved


@pytest.mark.slow
def test_keyboard_interrupt_inside_the_update_resumes_exactly(run_parts, tmp_path):
    """A KeyboardInterrupt raised inside the update itself (after optimizer.step(), before the step count
    moves on), which no signal handler can defer: nothing of that half-made step is saved."""
    source, first = inspect.getsourcelines(gtrain._loop)
    update = [first + i for i, line in enumerate(source) if "run.update(" in line or "whole = True" in line]
    inside = [(name, line, index) for name, line, index in _chosen(run_parts[-1])
              if name in ("Run.update", "TrainHistory.record", "rng_state")
              or (name == "_loop" and update[0] <= line <= update[-1])]
    assert len(inside) >= 8
    steps = {(name, line): _interrupt_and_resume(run_parts, tmp_path, index, "raise") for name, line, index in inside}
    assert all(s == AFTER for s in steps.values()), steps  # the checkpoint of step 1 stands
