"""Training a GPT on text: AdamW, warmup + cosine learning rate, checkpoints that resume exactly,
and DDP under ``torchrun`` (book chapter "Training a GPT").

>>> history = train("mini", "tinyshakespeare", tokenizer="bpe:2048", steps=200, out_dir="runs/mini")  # doctest: +SKIP
>>> history.val_loss[-1]                                                                               # doctest: +SKIP

One entry point works in a notebook, from ``gptlearn train`` and under
``torchrun --nproc_per_node=N -m gptlearn.train ...`` (one process per device, DDP). Every setting of a
run is a field of :class:`TrainConfig`, which also builds the command line's flags and checks them all.

The file reads top to bottom: the settings, the pure pieces (the schedule, the parameter groups), a
:class:`Run` (the model, AdamW, the data and the history, with ``step``, ``evaluate`` and ``save``), the
loop that drives it (:func:`_loop`, on one screen, in nanoGPT's order), and the command line. What a
checkpoint holds and how it is checked lives in :mod:`gptlearn.checkpoint`; :class:`gptlearn.dist.Dist`
hides the difference between one process and many.

A run writes to ``out_dir`` a model folder ``GPT.from_pretrained(out_dir)`` loads (Hugging Face layout)
and, for ``resume=True``, the trainer state (:mod:`gptlearn.checkpoint`). A checkpoint is written only when
its weights, AdamW's state and the loss they give are finite, so the last checkpoint is always a good one.
docs/training.md has the rules of a run folder: what it holds, the settings a resumed run may change, the
lock, ``--overwrite``.

Legend: B batch, T tokens, C n_embd, H n_head, hs head size, V vocab, L layers.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import checkpoint
from .checkpoint import (LEGACY_STATE_FILE, STATE_FILE, STATE_FILES, STATE_TENSORS, Interrupts, json_value,
                         read_state_json, rng_state)
from .checks import (Rule, add_config_arguments, check_rules, is_int, is_number, is_path, non_finite, optional,
                     setting, sha256, shown)
from .config import PRESETS, GPTConfig, gib
from .data import TokenDataset, load_text, split_text
from .devices import autocast, check_duration, free_bytes
from .dist import Dist
from .errors import GptlearnError
from .folders import check_folder, check_name, kind_of
from .fast.memory import freed_memory_kept
from .model import GPT, sinusoidal_positions
from .safeio import JSON_MAX_BYTES, read_regular
from .tokenizers import TokenizerLike, load_tokenizer_spec, tokenizer_problem
from .atomic import recover_folder, write_folder

__all__ = [
    # the settings and the result of a run
    "TrainConfig", "TrainHistory", "STATE_FILE", "STATE_TENSORS", "RESUME_MAY_CHANGE",
    # its pure pieces
    "lr_at", "warmup_cosine_lr", "warmup_linear_lr", "param_groups", "make_optimizer", "load_tokenizer_spec",
    # the trainer state on disk
    "write_trainer_state", "read_trainer_state",
    # the run, and its command line
    "Run", "train", "run_flops", "add_arguments", "register_cli", "main",
]

# ---- the settings of a run: one dataclass, from which the command line is built ----------------------
POS_INITS = ("normal", "sinusoidal")
DEVICE_TYPES = ("cpu", "cuda", "mps")


_setting = setting


@dataclass
class TrainConfig:
    """Every setting of a training run, with its one default: the keyword arguments of :func:`train` and
    the flags of ``gptlearn train`` (``batch_size`` is ``--batch-size``; ``out_dir`` is ``--out``).

    >>> TrainConfig(steps=300, lr=3e-3).replace(batch_size=8).batch_size
    8
    """

    init: str | os.PathLike | None = _setting(
        None, "fine-tune from pretrained weights: gpt2 or a model folder", group="model")
    out_dir: str | os.PathLike | None = _setting(
        None, "output folder (the model and its trainer state)", flag="--out", required=True)
    tokenizer: str | os.PathLike | TokenizerLike | None = _setting(None, "gpt2 (default), bpe:N, char, or a folder")
    steps: int = _setting(1000, "optimizer steps in all (a resumed run counts its earlier ones)")
    batch_size: int = _setting(32, "sequences a step, per process")
    block_size: int | None = _setting(None, "tokens per sequence, at most the model's context (default: the context)")
    lr: float = _setting(1e-3, "peak learning rate, reached after the warm-up")
    min_lr: float | None = _setting(None, "end of the cosine, at most --lr (default lr/10)")
    warmup: int = _setting(100, "steps of linear warm-up")
    weight_decay: float = _setting(0.1, "AdamW weight decay (matrices and embeddings only)")
    eval_every: int = _setting(100, "steps between evaluations (and checkpoints)")
    eval_iters: int = _setting(20, "batches averaged by each evaluation")
    grad_accum: int = _setting(1, "micro-batches whose gradients add up to one step")
    seed: int = _setting(1337, "seed of the initial weights, the batches and dropout (0 to 2**32 - 1)")
    device: str | torch.device | None = _setting(None, "cpu, cuda, mps (default: the best available)")
    compile: bool = _setting(False, "torch.compile the model")
    resume: bool = _setting(False, "continue the run in --out (flags left out keep the run's values)")
    overwrite: bool = _setting(False, "replace the run (or model) in --out with a new one")
    pos_init: str = _setting("normal", "start a fresh model's position embeddings from noise (GPT-2) or "
                             "sine/cosine codes", choices=list(POS_INITS))
    repeat_frac: float = _setting(0.0, "share of training rows that repeat a passage twice "
                                  "(teaches copying: induction heads)")
    induction_frac: float = _setting(0.0, "share of training rows of random tokens repeated, loss only on "
                                     "the repeats (induction heads)")
    progress: bool = _setting(True, "no progress bar", flag="--no-progress")
    max_days: float = _setting(30.0, "refuse a run estimated to take longer than this many days (the estimate is a "
                               "lower bound: it is for runs that cannot finish)")
    # settings of the Python API only
    betas: tuple[float, float] = _setting((0.9, 0.95), "AdamW's moment decay rates", cli=False)
    grad_clip: float = _setting(1.0, "largest gradient norm (0: no clipping)", cli=False)
    save_every: int | None = _setting(None, "steps between checkpoints (default: eval_every)", cli=False)
    sample_tokens: int = _setting(64, "tokens sampled at each evaluation (0: none)", cli=False)
    sample_prompt: str = _setting("\n", "the prompt of those samples", cli=False)
    val_fraction: float = _setting(0.1, "share of the text held out for validation (its end)", cli=False)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``; an unknown name is a TypeError that suggests the nearest field."""
        names = [f.name for f in fields(self)]
        for name in changes:
            if name not in names:
                near = difflib.get_close_matches(name, names, n=1)
                raise TypeError(f"unknown training setting {name!r}" + (f"; did you mean {near[0]!r}?" if near else "")
                                + " (the settings are TrainConfig's fields)")
        return dataclasses.replace(self, **changes)

    def validate(self) -> TrainConfig:
        """Refuse a setting that cannot work, in one line naming it (:class:`GptlearnError`); returns self.
        Every field has its rule in ``_RULES`` (a test checks that none is missing)."""
        check_rules(self, _RULES)
        if self.min_lr is not None and self.min_lr > self.lr:
            raise GptlearnError(f"min_lr must be at most lr (the cosine falls from lr to min_lr), got min_lr="
                                f"{self.min_lr!r} > lr={self.lr!r}")
        if self.resume and self.overwrite:
            raise GptlearnError("resume continues the run in out_dir and overwrite replaces it; choose one")
        if (self.resume or self.overwrite) and self.out_dir is None:
            raise GptlearnError(f"{'resume' if self.resume else 'overwrite'} needs out_dir, the folder of the run")
        return self

    @classmethod
    def from_args(cls, args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
        """The settings parsed by a parser that :meth:`add_arguments` built: the flags given replace those
        of ``base`` (default: the defaults)."""
        given = vars(args)
        return (base or cls()).replace(**{f.name: given[f.name] for f in fields(cls) if f.name in given})

    @classmethod
    def from_run(cls, out_dir: str | os.PathLike) -> TrainConfig:
        """The settings of the run saved in ``out_dir``, with ``resume=True``: change the ones in
        :data:`RESUME_MAY_CHANGE` (``.replace(steps=2000)``) and pass it to :func:`train` to continue it.
        ``max_days`` is left at its default: a limit on time is the caller's, never the checkpoint's."""
        saved = read_state_json(Path(out_dir).expanduser())["settings"]
        names = {f.name for f in fields(cls)} - {"max_days"}  # the time limit is the caller's: a state never lifts it
        kept = {k: tuple(v) if k == "betas" and isinstance(v, list) else v for k, v in saved.items() if k in names}
        return cls(**kept).replace(out_dir=out_dir, resume=True, overwrite=False)


# What a resumed run may change: how long it goes on, how it reports, where it runs. Every other setting
# decides which steps it takes, so it must be the run's own (train() names any that differ).
RESUME_MAY_CHANGE = ("steps", "eval_every", "eval_iters", "save_every", "sample_tokens", "sample_prompt", "device",
                     "compile", "progress", "max_days", "out_dir", "resume", "overwrite")  # the last 3: what to do


def _is_device(x: Any) -> bool:
    if x is None or x == "auto":
        return True
    try:
        return torch.device(x).type in DEVICE_TYPES
    except (RuntimeError, TypeError, ValueError):
        return False


# (fields, the test each value must pass, what it must be): one place for every field's rule; the upper bounds
# keep a run (or a tampered checkpoint's settings) from asking for a loop that never ends
MAX_STEPS = 10**8
_RULES: tuple[Rule, ...] = (
    (("steps", "eval_every"), lambda x: is_int(x, 1, MAX_STEPS), f"a positive integer, at most {MAX_STEPS:,}"),
    (("batch_size",), lambda x: is_int(x, 1), "a positive integer"),  # bounded by the memory it needs
    (("grad_accum",), lambda x: is_int(x, 1, 4096), "a positive integer, at most 4096"),
    (("eval_iters",), lambda x: is_int(x, 1, 10_000), "a positive integer, at most 10,000"),
    (("block_size",), optional(lambda x: is_int(x, 1)), "a positive integer or None"),  # the model's context bounds it
    (("save_every",), optional(lambda x: is_int(x, 1, MAX_STEPS)),
     f"a positive integer or None, at most {MAX_STEPS:,}"),
    (("warmup",), lambda x: is_int(x, 0, MAX_STEPS), f"an integer, 0 or more, at most {MAX_STEPS:,}"),
    (("sample_tokens",), lambda x: is_int(x, 0, 100_000), "an integer, 0 or more, at most 100,000"),
    (("seed",), lambda x: is_int(x, 0, 2**32 - 1), "an integer from 0 to 2**32 - 1"),
    (("lr",), lambda x: is_number(x) and x > 0, "a positive number"),
    (("max_days",), lambda x: is_number(x) and x > 0, "a positive number of days"),
    (("min_lr",), optional(lambda x: is_number(x, 0)), "a number, 0 or more (or None for lr/10)"),
    (("weight_decay", "grad_clip"), lambda x: is_number(x, 0), "a number, 0 or more"),
    (("betas",), lambda x: isinstance(x, (tuple, list)) and len(x) == 2 and all(is_number(b, 0) and b < 1 for b in x),
     "two numbers in [0, 1)"),
    (("repeat_frac", "induction_frac"), lambda x: is_number(x, 0, 1), "a fraction from 0 to 1"),
    (("val_fraction",), lambda x: is_number(x, 0) and x < 1, "a fraction from 0 up to (not including) 1"),
    (("pos_init",), lambda x: x in POS_INITS, " or ".join(map(repr, POS_INITS))),
    (("compile", "resume", "overwrite", "progress"), lambda x: isinstance(x, bool), "True or False"),
    (("sample_prompt",), lambda x: isinstance(x, str), "a string"),
    (("init", "out_dir"), optional(is_path), "a path or a name (a non-empty string)"),
    (("tokenizer",), lambda x: tokenizer_problem(x) is None,
     "gpt2, bpe:N (N at least 257), char, a folder with tokenizer files, or a tokenizer"),
    (("device",), _is_device, "auto, cpu, cuda, cuda:N or mps"),
)


@dataclass
class TrainHistory:
    """What a run measured; ``val_loss``/``samples`` hold ``None`` at steps without an eval."""

    step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    tokens_per_sec: list[float] = field(default_factory=list)
    samples: list[str | None] = field(default_factory=list)
    eval_train_loss: list[float | None] = field(default_factory=list)

    def record(self, step: int, train_loss: float, lr: float, tokens_per_sec: float) -> None:
        """Append one step (its eval fields ``None`` until an eval fills them)."""
        for name, value in (("step", step), ("train_loss", train_loss), ("lr", lr), ("tokens_per_sec", tokens_per_sec),
                            ("val_loss", None), ("eval_train_loss", None), ("samples", None)):
            getattr(self, name).append(value)

    def evals(self) -> list[tuple[int, float, float]]:
        """(step, eval train loss, val loss) at each eval."""
        return [(s, t, v) for s, t, v in zip(self.step, self.eval_train_loss, self.val_loss) if v is not None]

    def to_dict(self) -> dict[str, list]:
        return dataclasses.asdict(self)

    @classmethod
    def from_saved(cls, saved: Any, step: int) -> TrainHistory:
        """The history a checkpoint of ``step`` steps holds, checked: one entry a step, each of its type
        (a ValueError or TypeError says what is wrong)."""
        if not isinstance(saved, dict) or set(saved) != {f.name for f in fields(cls)}:
            raise TypeError("the history is not a TrainHistory")
        if any(not isinstance(v, list) or len(v) != step for v in saved.values()):  # before anything is built
            raise ValueError(f"the history does not hold the {step} steps")
        history = cls(**saved)
        if any(s != i for i, s in enumerate(history.step, 1)):
            raise ValueError(f"the history does not hold the {step} steps")
        kinds = {"train_loss": is_number, "lr": is_number, "tokens_per_sec": is_number,
                 "val_loss": optional(is_number), "eval_train_loss": optional(is_number),
                 "samples": optional(lambda x: isinstance(x, str))}
        if not all(ok(x) for name, ok in kinds.items() for x in getattr(history, name)):
            raise ValueError("the history holds values of the wrong type")
        return history


# ---- pure pieces ------------------------------------------------------------------------------------
def warmup_cosine_lr(step: int, *, max_lr: float, warmup: int, total: int, min_lr: float = 0.0) -> float:
    """Learning rate for (0-based) ``step``: linear warmup to ``max_lr`` over ``warmup`` steps, then a
    cosine down to ``min_lr`` at ``total``; ``min_lr`` after that. ``train()``'s schedule (nanoGPT's).

    >>> lr_at(0, max_lr=1.0, warmup=10, total=100), lr_at(9, max_lr=1.0, warmup=10, total=100)
    (0.1, 1.0)
    >>> lr_at(55, max_lr=1.0, warmup=10, total=100, min_lr=0.1)   # halfway down the cosine
    0.55
    """
    if step < warmup:
        return max_lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    ratio = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (max_lr - min_lr)


lr_at = warmup_cosine_lr  # its first name


def warmup_linear_lr(step: int, *, max_lr: float, warmup: int, total: int) -> float:
    """Learning rate for (0-based) ``step``: linear warmup to ``max_lr`` over ``warmup`` steps, then a
    straight line down to 0 at ``total``. ``train_embeddings()``'s schedule (sentence-transformers').

    >>> warmup_linear_lr(0, max_lr=1.0, warmup=10, total=100), warmup_linear_lr(55, max_lr=1.0, warmup=10, total=100)
    (0.1, 0.5)
    """
    if step < warmup:
        return max_lr * (step + 1) / warmup
    return max_lr * max(0.0, (total - step) / max(1, total - warmup))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """nanoGPT's rule: weight decay on every parameter with 2 or more dimensions (matrices and
    embeddings), none on biases and LayerNorm gains (1-D). Tied weights are counted once.
    Each group also lists its parameter ``names``."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append((name, p))
    return [
        {"params": [p for _, p in decay], "names": [n for n, _ in decay], "weight_decay": weight_decay},
        {"params": [p for _, p in no_decay], "names": [n for n, _ in no_decay], "weight_decay": 0.0},
    ]


def make_optimizer(model: torch.nn.Module, *, lr: float, weight_decay: float = 0.1,
                   betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`, fused (one kernel for all tensors instead of a Python loop over
    them) where this PyTorch and device allow; it computes AdamW's update either way. bench/README.md
    ("Fused AdamW") has the speed-up."""
    groups = [{k: v for k, v in g.items() if k != "names"} for g in param_groups(model, weight_decay)]
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch, or a device without the fused kernel
        return torch.optim.AdamW(groups, lr=lr, betas=betas)


# ---- the trainer state on disk (gptlearn.checkpoint), in TrainHistory's shape --------------------------------
def write_trainer_state(folder: str | os.PathLike, *, step: int, settings: dict[str, Any], history: TrainHistory,
                        optimizer: dict[str, Any], rngs: list[dict[str, Any]], data_sha256: str | None = None) -> None:
    """Write the trainer state into ``folder`` (:func:`gptlearn.checkpoint.write_state`)."""
    checkpoint.write_state(folder, step=step, settings=settings, history=history.to_dict(), optimizer=optimizer,
                           rngs=rngs, data_sha256=data_sha256)


def read_trainer_state(folder: str | os.PathLike) -> dict[str, Any]:
    """The trainer state saved in the run folder ``folder``, every field checked: ``step``, ``settings``,
    ``data_sha256``, ``history`` (a :class:`TrainHistory`), ``optimizer`` (a torch ``state_dict``) and
    ``rng`` (one dict a process). A missing, legacy (``trainer_state.pt``), damaged or non-finite state is
    a :class:`GptlearnError` in one line."""
    state = checkpoint.read_state(folder, TrainHistory.from_saved)
    saved = {k: tuple(v) if k == "betas" and isinstance(v, list) else v for k, v in state["settings"].items()}
    try:  # the settings a resumed run takes from the state obey the rules of the command line
        check_rules(saved, [(tuple(n for n in names if n in saved), ok, rule) for names, ok, rule in _RULES])
    except GptlearnError as e:
        raise checkpoint.damaged(Path(folder).expanduser(), f"its setting {e}") from None
    return state


def _settings_record(args: TrainConfig, **resolved: Any) -> dict[str, Any]:
    """The run's settings as JSON values, with the ``resolved`` ones (block_size, min_lr) in place of None."""
    return {**{f.name: json_value(getattr(args, f.name)) for f in fields(args)}, **resolved}


def _resume_differences(args: TrainConfig, saved: dict[str, Any], **resolved: Any) -> list[str]:
    """The settings of a resumed run that differ from the run's own and may not (see RESUME_MAY_CHANGE)."""
    now = _settings_record(args, **resolved)
    return [f"{name} {now[name]!r} (the run's: {shown(saved.get(name))})" for name in now
            if name not in RESUME_MAY_CHANGE and now[name] != saved.get(name)
            and not (name in ("tokenizer", "init") and now[name] is None)]  # not given: the run's own


def _model_differences(given: GPTConfig | GPT | None, saved: GPTConfig) -> list[str]:
    """How the model given to a resumed run differs in shape from the run's (its vocabulary is the tokenizer's)."""
    if given is None:
        return []
    config = given.config if isinstance(given, GPT) else given
    same_anyway = () if isinstance(given, GPT) else ("vocab_size", "bos_token_id", "eos_token_id")
    return [f"{f.name} {getattr(config, f.name)!r} (the run's: {getattr(saved, f.name)!r})" for f in fields(GPTConfig)
            if f.name not in same_anyway and getattr(config, f.name) != getattr(saved, f.name)]


# ---- the run folder: one run at a time, and never over another's work -------------------------------------
def _check_out(out: Path, args: TrainConfig) -> set[str]:
    """Refuse an output folder the run must not write into; returns the names a replaced run leaves there
    (the first checkpoint of an ``overwrite`` run removes them): only files gptlearn wrote there
    (:func:`gptlearn.folders.check_folder`)."""
    names = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    if args.resume:
        return set()  # resume: read_trainer_state says what is wrong with the run, if anything
    if args.overwrite or not names:  # the folder rule (gptlearn/folders.py): only files gptlearn wrote are replaced
        return check_folder(out, kind="run", overwrite=args.overwrite, what="--out", hint="pass --overwrite")
    if kind_of(out) is None:  # not gptlearn's: refused, naming what is there
        check_folder(out, kind="run", what="--out", hint="pass --overwrite")
    is_run = (out / STATE_FILE).is_file() or (out / LEGACY_STATE_FILE).is_file()
    is_model = (out / "config.json").is_file()
    if is_run and not (out / STATE_FILE).is_file():  # only an older version's pickle: --resume would refuse it
        raise GptlearnError(f"{out} holds the training run of an older gptlearn ({LEGACY_STATE_FILE}, a pickle, "
                            "never loaded); replace it with --overwrite, or choose another --out")
    if is_run:
        raise GptlearnError(f"{out} already holds a training run{_run_progress(out)}; continue it with --resume, "
                            "or replace it with --overwrite")
    if is_model:
        raise GptlearnError(f"{out} already holds a model (config.json); replace it with --overwrite, or choose "
                            "another --out")
    raise GptlearnError(f"{out} is not empty and holds no training run ({len(names)} entries, e.g. "
                        f"{sorted(names)[0]!r}); choose a new or empty folder for --out, or pass --overwrite (which "
                        "keeps them and replaces only files gptlearn wrote)")


def _run_progress(out: Path) -> str:
    """" (300 of 1000 steps)" for the run in ``out``, or "" where its state says nothing readable."""
    try:
        meta = read_state_json(out)
        step, steps = meta["step"], meta["settings"]["steps"]
        return f" ({step} of {steps} steps{', finished' if step >= steps else ''})"
    except (GptlearnError, KeyError, TypeError):
        return ""


def _open_run_folder(out: Path, args: TrainConfig, stack: contextlib.ExitStack) -> set[str]:
    """Make ``out`` ready for this run before any work: locked (until ``stack`` closes), a checkpoint killed
    half-way finished or undone and its leftovers removed (before the folder is created, since a killed
    swap may have moved it aside), writable, and free for this run (:func:`_check_out`)."""
    check_name(out, "--out")  # a name too long for the temporary folder beside it: before any work
    if not out.is_dir():
        checkpoint.check_writable(out, parent_only=True)  # its parent must take it (and the lock)
    stack.enter_context(checkpoint.run_lock(out))
    recover_folder(out)
    checkpoint.check_writable(out)
    return _check_out(out, args)


# ---- memory: refuse what cannot fit before allocating it ---------------------------------------------
def _check_memory(config: GPTConfig, args: TrainConfig, block_size: int, dev: torch.device,
                  source: str = "this run") -> None:
    """Refuse a model and batch that cannot fit in ``dev``'s memory (:meth:`GPTConfig.estimate_bytes`, a
    lower bound), before a single weight or batch is allocated."""
    need = config.estimate_bytes(batch_size=args.batch_size, seq_len=block_size, training=True,
                                 activation_bytes=2 if dev.type == "cuda" else 4)  # CUDA trains under bf16 autocast
    free = free_bytes(dev)
    if free is not None and need > free:
        raise GptlearnError(
            f"{source} needs at least {gib(need)} (a GPT with n_layer={config.n_layer}, "
            f"n_embd={config.n_embd}, n_inner={config.d_mlp}, n_positions={config.n_positions}, "
            f"vocab_size={config.vocab_size}: {config.num_parameters():,} parameters with their gradients and AdamW's "
            f"moments, and the activations of {args.batch_size:,} × {block_size:,} tokens) "
            f"but {dev} has {max(free, 0) / 2**30:,.1f} GiB free; lower --batch-size (--grad-accum keeps the tokens "
            "a step) or --block-size, or choose a smaller model")


def _check_folder_memory(folder: str | os.PathLike, args: TrainConfig, dev: torch.device) -> None:
    """:func:`_check_memory` for the model a folder's ``config.json`` describes, before the model is built (a
    hostile ``"n_layer": 200000`` would take minutes to build, even without its weights). A name that is no
    folder (``gpt2``) or a config.json that does not read is left to ``GPT.from_pretrained``, which says why."""
    config = _folder_config(folder)
    if config is not None:
        _check_memory(config, args, _block_size(args, config), dev,
                      source=f"training the model {Path(os.fspath(folder)).expanduser() / 'config.json'} describes")


def _folder_config(folder: str | os.PathLike) -> GPTConfig | None:
    """The shape a model folder's ``config.json`` gives, read without building anything; None where there is no
    such file or it does not read (``GPT.from_pretrained`` then says why)."""
    path = Path(os.fspath(folder)).expanduser() / "config.json"
    try:
        config = GPTConfig.from_hf_dict(json.loads(read_regular(path, max_bytes=JSON_MAX_BYTES).decode("utf-8")))
        config.estimate_bytes(training=True)  # its sizes are numbers
    except (OSError, ValueError, TypeError, AttributeError, RecursionError):
        return None
    return config


# ---- time: refuse a run that cannot finish before starting it ---------------------------------------------
def _count_due(every: int, start: int, end: int) -> int:
    """How many of the steps start+1 .. end are due for something done every ``every`` steps and at the end."""
    if end <= start:
        return 0
    return end // every - start // every + (end % every != 0)


def run_flops(config: GPTConfig, args: TrainConfig, block_size: int, start: int = 0) -> int:
    """At least the floating-point operations a run makes from step ``start`` to ``args.steps`` in one process
    (:meth:`GPTConfig.estimate_flops`): ``grad_accum`` forward and backward passes a step, a forward pass
    over ``eval_iters`` batches of the training split at every evaluation, one batch at every checkpoint (its
    finite-loss check) and the sample's tokens."""
    steps = max(args.steps - start, 0)
    evals = _count_due(args.eval_every, start, args.steps)
    saves = _count_due(args.save_every or args.eval_every, start, args.steps)
    batch = dict(batch_size=args.batch_size, seq_len=block_size)
    return (steps * args.grad_accum * config.estimate_flops(**batch, training=True)
            + (evals * args.eval_iters + saves) * config.estimate_flops(**batch)
            + evals * args.sample_tokens * config.estimate_flops(batch_size=1, seq_len=1))


def _check_time(config: GPTConfig, args: TrainConfig, block_size: int, dev: torch.device, start: int = 0,
                vocab: str = "=") -> None:
    """Refuse a run whose :func:`run_flops` would take ``dev`` longer than ``args.max_days`` even at the most
    this device does (:func:`gptlearn.devices.check_duration`), before any step is taken."""
    steps = max(args.steps - start, 0)
    evals = _count_due(args.eval_every, start, args.steps)
    check_duration(
        run_flops(config, args, block_size, start), dev, max_days=args.max_days,
        what=(f"this run ({steps:,} steps of {args.grad_accum:,} × {args.batch_size:,} × {block_size:,} tokens and "
              f"{evals:,} evaluations of {args.eval_iters:,} batches, for a GPT with n_layer={config.n_layer}, "
              f"n_embd={config.n_embd}, vocab_size{vocab}{config.vocab_size:,})"),
        advice="lower --steps, --grad-accum, --batch-size or --eval-iters (or raise --eval-every), or choose a "
               "smaller model")


def _vocab_at_least(tokenizer: Any) -> int:
    """The fewest tokens a fresh run's tokenizer can have, known before it is loaded or learned."""
    if isinstance(tokenizer, str) and tokenizer == "gpt2":
        return 50257
    if isinstance(tokenizer, str) and tokenizer.startswith("bpe:") and tokenizer[4:].isdigit():
        return int(tokenizer[4:])
    vocab = getattr(tokenizer, "vocab_size", None)
    return vocab if is_int(vocab, 1) else 1


def _check_time_early(config_or_model, data, args: TrainConfig, dev: torch.device) -> None:
    """:func:`_check_time` for a new run from what is known before any work (before the folder is made, the
    text read or a tokenizer learned): the model's shape from the GPT, the config or the ``init`` folder,
    and the fewest tokens its tokenizer can have. :meth:`Run.start` checks again with the model built."""
    if args.resume:
        return  # the run's step and model are read in Run.start
    vocab = "="
    if args.init is not None:
        config = _folder_config(args.init)
    elif isinstance(config_or_model, GPT):
        config = config_or_model.config
    else:
        config = _as_config(config_or_model) or GPTConfig.from_preset("mini")
        spec = args.tokenizer if args.tokenizer is not None else (
            data.tokenizer if isinstance(data, TokenDataset) else "gpt2")
        config, vocab = config.replace(vocab_size=min(config.vocab_size, _vocab_at_least(spec))), " >= "
    if config is not None:
        _check_time(config, args, _block_size(args, config), dev, vocab=vocab)


# ---- the model a run trains ---------------------------------------------------------------------------
def _as_config(config_or_model: GPTConfig | str | None) -> GPTConfig | None:
    if config_or_model is None or isinstance(config_or_model, GPTConfig):
        return config_or_model
    if isinstance(config_or_model, str):
        try:
            return GPTConfig.from_preset(config_or_model)
        except ValueError as e:
            raise GptlearnError(str(e)) from None
    raise TypeError(f"train() takes a GPTConfig, a preset name or a GPT, got {type(config_or_model).__name__}")


def _block_size(args: TrainConfig, config: GPTConfig) -> int:
    """The tokens a training row holds: ``args.block_size``, never longer than the model's context."""
    if args.block_size is not None and args.block_size > config.n_positions:
        raise GptlearnError(f"block_size {args.block_size} is longer than the model's context ({config.n_positions} "
                            f"tokens); use --block-size {config.n_positions} or less, or a model with a longer "
                            "context (n_positions)")
    return args.block_size or config.n_positions


def _build_model(config_or_model, init, tokenizer_spec, train_text: str, *, args: TrainConfig,
                 dev: torch.device, pos_init_std: float = 0.05) -> tuple[GPT, Any]:
    """The model of a new run and its tokenizer: pretrained weights (``init``), the GPT given, or a fresh
    one of the given shape, whose size is checked against the memory before it is built."""
    if init is not None:
        _check_folder_memory(init, args, dev)
        model = GPT.from_pretrained(init)
        tok = load_tokenizer_spec(tokenizer_spec, train_text) if tokenizer_spec is not None else model.tokenizer
        if tok.vocab_size != model.config.vocab_size:
            raise GptlearnError(f"the tokenizer has {tok.vocab_size} tokens but {init} was trained with "
                                f"{model.config.vocab_size}; fine-tune with the model's own tokenizer")
        model.tokenizer = tok
        return model.train(), tok
    if isinstance(config_or_model, GPT):
        model = config_or_model
        if tokenizer_spec is not None:
            tok = load_tokenizer_spec(tokenizer_spec, train_text)
        else:
            try:
                tok = model.tokenizer
            except AttributeError as e:
                raise GptlearnError(str(e)) from None
        if tok.vocab_size > model.config.vocab_size:
            raise GptlearnError(f"the tokenizer has {tok.vocab_size} tokens but the model only "
                                f"{model.config.vocab_size} embeddings; build the model with "
                                f"vocab_size={tok.vocab_size}")
        model.tokenizer = tok
        return model, tok
    config = _as_config(config_or_model) or GPTConfig.from_preset("mini")
    _check_memory(config, args, _block_size(args, config), dev)  # before the tokenizer is even learned
    tok = load_tokenizer_spec(tokenizer_spec if tokenizer_spec is not None else "gpt2", train_text)
    eot = tok.eot_token if tok.eot_token is not None else 0
    config = config.replace(vocab_size=tok.vocab_size, bos_token_id=eot, eos_token_id=eot)
    _check_memory(config, args, _block_size(args, config), dev)  # and with its vocabulary
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model = GPT(config)
    if args.pos_init == "sinusoidal":
        with torch.no_grad():
            pe = sinusoidal_positions(config.n_positions, config.n_embd)  # (n_positions, C)
            model.wpe.weight.copy_(pe * (pos_init_std / pe.std()))
    model.tokenizer = tok
    return model, tok


def _resumed_model(config_or_model, out: Path, args: TrainConfig, saved: dict[str, Any], dev: torch.device
                   ) -> tuple[GPT, Any]:
    """The model saved in the run folder ``out`` and its tokenizer, checked to fit, to be finite, and to be run
    with the run's own settings (the GPT given is trained in place, loaded with the run's weights)."""
    _check_folder_memory(out, args, dev)
    model = GPT.from_pretrained(out)
    try:
        tok = model.tokenizer
    except AttributeError as e:
        raise GptlearnError(str(e)) from None
    bad = non_finite(model)
    if bad is not None:
        raise GptlearnError(f"the model in {out} is no good checkpoint: {bad}; start the run again with --overwrite")
    given = config_or_model if isinstance(config_or_model, GPT) else _as_config(config_or_model)
    differences = (_model_differences(given, model.config) + _resume_differences(
        args, saved["settings"], block_size=_block_size(args, model.config), min_lr=_min_lr(args)))
    if differences:
        raise GptlearnError(
            f"--resume continues the run in {out} with its own settings, but {'; '.join(differences)}; leave "
            f"those out (the run's values are kept), or start a new run (another --out, or --overwrite); a "
            f"resumed run may change only {', '.join(RESUME_MAY_CHANGE[:-3])}")
    if isinstance(config_or_model, GPT):  # train the model given, in place
        config_or_model.load_state_dict(model.state_dict())
        config_or_model.tokenizer = tok
        model = config_or_model
    return model.train(), tok


def _min_lr(args: TrainConfig) -> float:
    return args.lr / 10 if args.min_lr is None else args.min_lr


def _diverged(what: str, step: int, out: Path | None, last_good: int | None) -> GptlearnError:
    where = (f"the last good checkpoint (step {last_good}) is in {out}" if out is not None and last_good is not None
             else "no checkpoint was written")
    return GptlearnError(f"{what} at step {step}; training stopped and {where}; lower --lr or check the data")


# ---- a run: what the loop drives ----------------------------------------------------------------------------
@dataclass(eq=False)
class Run:
    """One training run: the model, AdamW, the data and the history, and the few things the loop asks of
    them (:meth:`step`, :meth:`update`, :meth:`evaluate`, :meth:`save`). Built by :meth:`start`."""

    args: TrainConfig
    model: GPT  # the weights (what is saved and evaluated)
    fwd: torch.nn.Module  # what the training forward calls: the model, compiled and/or wrapped in DDP
    optimizer: torch.optim.Optimizer
    dataset: TokenDataset
    history: TrainHistory
    tokenizer: Any
    dev: torch.device
    dist: Dist
    data_gen: torch.Generator  # the training batches' random stream (each process its own)
    out: Path | None = None
    start_step: int = 0
    last_good: int | None = None  # the step of the last checkpoint written (or resumed from)
    callback: Callable[[str, TrainHistory], None] | None = None
    replaced: set[str] = field(default_factory=set)  # what the first checkpoint of --overwrite removes
    data_sha256: str | None = None
    whole: bool = True  # the weights, AdamW's state, the step, the RNG states and the history agree
    bar: Any = None

    def __post_init__(self) -> None:
        a = self.args
        self.block_size = _block_size(a, self.model.config)
        self.min_lr = _min_lr(a)
        self.save_every = a.save_every or a.eval_every
        self.tokens_per_step = a.batch_size * self.block_size * a.grad_accum * self.dist.world
        self.has_val = len(self.dataset.splits["val"]) >= self.block_size + 1
        self.settings = _settings_record(a, block_size=self.block_size, min_lr=self.min_lr)
        self.rng = rng_state(self.data_gen)  # what a checkpoint of the steps finished so far holds
        if a.progress and self.dist.master:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=a.steps, initial=self.start_step, desc="train", dynamic_ncols=True)

    # -- one step ---------------------------------------------------------------------------------------
    def lr(self, step: int) -> float:
        """Set and return the learning rate of (0-based) ``step``."""
        lr = lr_at(step, max_lr=self.args.lr, warmup=self.args.warmup, total=self.args.steps, min_lr=self.min_lr)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr

    def step(self, step: int) -> float:
        """The gradients of step ``step + 1`` (``grad_accum`` micro-batches, clipped); returns its mean loss."""
        a = self.args
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.dev)
        for micro in range(a.grad_accum):
            x, y = self.dataset.get_batch("train", a.batch_size, self.block_size, self.data_gen,
                                          repeat_frac=a.repeat_frac, induction_frac=a.induction_frac)
            x, y = x.to(self.dev, non_blocking=True), y.to(self.dev, non_blocking=True)
            with self.dist.no_sync(self.fwd, last=micro == a.grad_accum - 1):  # DDP averages on the last one
                with autocast(self.dev):
                    loss = self.fwd(x, targets=y) / a.grad_accum  # (B, T) -> scalar; no (B, T, V) logits kept
                loss.backward()
            loss_sum += loss.detach()
        loss = self.dist.mean(loss_sum).item()
        if not math.isfinite(loss):
            raise _diverged(f"the loss became {loss}", step + 1, self.out, self.last_good)
        if a.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), a.grad_clip)
        return loss

    def update(self, step: int, loss: float, lr: float, t0: float) -> None:
        """AdamW's update, then its bookkeeping: the step count ``step`` in the history, the RNG states."""
        self.optimizer.step()
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        self.rng = rng_state(self.data_gen)  # for a checkpoint of `step` finished steps
        self.history.record(step, loss, lr, self.tokens_per_step / max(time.perf_counter() - t0, 1e-9))

    def report(self, step: int) -> None:
        h = self.history
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{h.train_loss[-1]:.3f}", lr=f"{h.lr[-1]:.2e}",
                                 tok_s=f"{h.tokens_per_sec[-1]:,.0f}")

    def notify(self, event: str) -> None:
        """Call the user's ``callback(event, history)``: after each ``"step"`` (its eval and checkpoint
        included) and each ``"eval"``."""
        if self.callback is not None:
            self.callback(event, self.history)

    # -- measuring and saving -----------------------------------------------------------------------------
    def eval_due(self, step: int) -> bool:
        return step % self.args.eval_every == 0 or step == self.args.steps

    def save_due(self, step: int) -> bool:
        return step % self.save_every == 0 or step == self.args.steps

    @contextlib.contextmanager
    def eval_mode(self):
        self.model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.model.train()

    def eval_generator(self, step: int) -> torch.Generator:
        """The batches of the eval at ``step`` come from a generator of their own: measuring never touches the
        training streams."""
        return torch.Generator().manual_seed(self.args.seed + 7919 * step)

    def mean_loss(self, split: str, iters: int, gen: torch.Generator) -> float:
        """The loss at the current weights on ``iters`` batches drawn with ``gen``."""
        total = 0.0
        for _ in range(iters):
            x, y = self.dataset.get_batch(split, self.args.batch_size, self.block_size, gen)
            with autocast(self.dev):
                total += self.model.loss(x.to(self.dev), y.to(self.dev)).item()
        return total / iters

    def evaluate(self, step: int) -> None:
        """Fill ``step``'s eval fields of the history: both losses and a sample."""
        a = self.args
        with self.eval_mode():
            gen = self.eval_generator(step)
            tr = self.mean_loss("train", a.eval_iters, gen)
            va = self.mean_loss("val", a.eval_iters, gen) if self.has_val else None
            sample = self.sample(step) if a.sample_tokens > 0 and self.dist.master else ""
        for name, value in (("train", tr), ("validation", va)):
            if value is not None and not math.isfinite(value):  # the weights diverged since the last checkpoint
                raise _diverged(f"the {name} loss of the evaluation became {value}", step, self.out, self.last_good)
        self.history.eval_train_loss[-1], self.history.val_loss[-1], self.history.samples[-1] = tr, va, sample
        if self.dist.master:
            msg = f"step {step}: train loss {tr:.4f}" + (f", val loss {va:.4f}" if va is not None else "")
            (self.bar.write if self.bar is not None else print)(msg + (f"\n{sample!r}" if sample else ""))
        self.notify("eval")

    def sample(self, step: int) -> str:
        try:
            prompt = self.tokenizer.encode(self.args.sample_prompt) or [self.tokenizer.eot_token or 0]
            ids = self.model.generate(torch.tensor([prompt], device=self.dev), self.args.sample_tokens, top_k=40,
                                      seed=self.args.seed + step)
            return self.tokenizer.decode(ids[0].tolist())
        except Exception as e:  # a sample is a nicety; never let it stop training
            return f"<no sample: {e}>"

    def problem(self, step: int) -> str | None:
        """Why the state after ``step`` steps is no good checkpoint (a weight, a moment or the loss they give is
        not finite), or None."""
        problem = non_finite(self.model, self.optimizer)
        if problem is None:  # finite weights can still give a non-finite loss (1e30 everywhere)
            with self.eval_mode():
                loss = self.mean_loss("train", 1, self.eval_generator(step))  # the first batch an eval draws
            if not math.isfinite(loss):
                problem = f"the loss at its weights is {loss}"
        return problem

    def save(self, step: int) -> str | None:
        """Write the checkpoint of ``step`` finished steps (the model folder with its trainer state, replaced
        as one) if it is good. Returns None, or what is not finite; then nothing is written, and the last
        checkpoint stays the last good one."""
        problem = self.problem(step) if self.out is not None else None
        if self.out is None or problem is not None:
            return problem
        rngs = self.dist.gather(self.rng)
        if self.dist.master:
            def write(tmp: Path) -> None:
                self.model.save_pretrained(tmp)
                write_trainer_state(tmp, step=step, settings=self.settings, history=self.history,
                                    optimizer=self.optimizer.state_dict(), rngs=rngs, data_sha256=self.data_sha256)

            write_folder(self.out, write, owns=(*STATE_FILES, *self.replaced), kind="run",  # --overwrite: every file
                         overwrite=self.args.overwrite)  # gptlearn wrote there goes; yours stay
            self.replaced = set()
        self.dist.barrier()  # no process goes on (or writes into the folder) while rank 0 swaps it
        self.last_good = step
        return None

    def interrupted(self, step: int) -> None:
        """Ctrl-C at ``step`` finished steps: save them if that is possible and useful, and say where things are."""
        out, last_good = self.out, self.last_good
        if out is None:
            note = f"interrupted at step {step}"
        elif not self.whole:  # cut inside an update: what is in memory is no step's state
            note = (f"interrupted inside step {step + 1}; " + (f"the checkpoint of step {last_good} in {out} stands"
                    if last_good is not None else "no checkpoint was written"))
        elif step == last_good:
            note = f"interrupted at step {step}, whose checkpoint is in {out}"
        else:
            problem = self.save(step)
            note = (f"interrupted at step {step}; a checkpoint is in {out}" if problem is None else
                    f"interrupted at step {step}, where {problem}; " + (
                        f"the last good checkpoint (step {last_good}) is in {out}" if last_good is not None
                        else "no checkpoint was written"))
        if self.dist.master:
            print(f"\n{note}" + (" (continue with --resume)" if out is not None else ""), file=sys.stderr)

    # -- building one ----------------------------------------------------------------------------------------
    @classmethod
    def start(cls, config_or_model, data, args: TrainConfig, *, dev: torch.device, dist: Dist, out: Path | None,
              replaced: set[str], callback=None) -> Run:
        """The run :func:`train` describes, fresh or resumed from the checkpoint in ``out``, every size and
        setting checked before the optimizer is made."""
        if data is None:
            raise GptlearnError("no training data: pass a text file, a folder of .txt files or 'tinyshakespeare'")
        saved = read_trainer_state(out) if args.resume else None
        if saved is not None:  # the run's own model (its shape and settings checked first)
            model, tok = _resumed_model(config_or_model, out, args, saved, dev)
        dataset, text, tokenizer = (data, None, args.tokenizer or data.tokenizer) if isinstance(data, TokenDataset) \
            else (None, load_text(data), args.tokenizer)
        train_text = split_text(text, args.val_fraction)[0] if text is not None else None
        if saved is None:
            if isinstance(tokenizer, str) and tokenizer.startswith(("bpe:", "char")) and train_text is None:
                raise GptlearnError(f"tokenizer {tokenizer!r} is learned from text; pass the text, not a TokenDataset")
            model, tok = _build_model(config_or_model, args.init, tokenizer, train_text or "", args=args, dev=dev)
        if text is not None:
            dataset = TokenDataset(text, tok, val_fraction=args.val_fraction)
        block_size = _block_size(args, model.config)
        dataset.check_block_size(block_size)
        _check_memory(model.config, args, block_size, dev)
        dist.on_master(lambda: _check_time(model.config, args, block_size, dev, saved["step"] if saved else 0), None)
        data_sha256 = sha256(np.ascontiguousarray(dataset.tokens).tobytes())
        if saved is not None and saved["data_sha256"] not in (None, data_sha256):
            raise GptlearnError(f"--resume continues the run in {out}, but its training tokens differ from the run's "
                                "(another text, or another split of it); resume with the run's data, or start a new "
                                "run")
        model.to(dev)
        optimizer = make_optimizer(model, lr=args.lr, weight_decay=args.weight_decay, betas=args.betas)
        data_gen = _seed_streams(args.seed + dist.rank)
        history = TrainHistory()
        if saved is not None:
            _restore(optimizer, data_gen, saved, out, args, dist)
            history = saved["history"]
        fwd = dist.wrap(torch.compile(model) if args.compile else model, dev)
        return cls(args, model, fwd, optimizer, dataset, history, tok, dev, dist, data_gen, out=out,
                   start_step=saved["step"] if saved else 0, last_good=saved["step"] if saved else None,
                   callback=callback, replaced=replaced, data_sha256=data_sha256)


def _seed_streams(seed: int) -> torch.Generator:
    """Seed dropout's, NumPy's and Python's random streams; returns the batches' own generator."""
    torch.manual_seed(seed)  # dropout
    np.random.seed(seed % 2**32)  # numpy takes seeds below 2**32
    random.seed(seed)
    return torch.Generator().manual_seed(seed)


def _restore(optimizer: torch.optim.Optimizer, data_gen: torch.Generator, saved: dict[str, Any], out: Path,
             args: TrainConfig, dist: Dist) -> None:
    """Put AdamW's moments and the random streams where the run in ``out`` stopped, each checked first."""
    try:
        checkpoint.load_optimizer(optimizer, saved["optimizer"], saved["step"])
        if dist.rank < len(saved["rng"]):
            checkpoint.set_rng_state(saved["rng"][dist.rank], data_gen)
        else:  # a run resumed with more processes: fresh, distinct streams for the new ranks
            data_gen.manual_seed(args.seed + dist.rank + 1_000_003 * saved["step"])
    except (ValueError, TypeError, RuntimeError, KeyError, IndexError) as e:
        raise checkpoint.damaged(out, f"its optimizer or random state does not fit this model ({shown(str(e))})"
                                 ) from None


# ---- the training loop -------------------------------------------------------------------------------
def _loop(run: Run) -> TrainHistory:
    """Train ``run`` to ``args.steps`` steps: set the learning rate, compute the step's gradients, update,
    then evaluate and checkpoint when due. Ctrl-C waits while an update and its bookkeeping happen, so the
    checkpoint it leaves is one the run could have written."""
    step, steps = run.start_step, run.args.steps
    try:
        with Interrupts() as interrupts:
            if step and run.eval_due(step) and run.history.eval_train_loss[-1] is None:
                run.evaluate(step)  # an interrupt cut this eval short: the uninterrupted run made it
            if step >= steps and run.dist.master:
                print(f"the run in {run.out} already finished {step} steps; raise --steps to train longer")
            while step < steps:
                t0 = time.perf_counter()
                lr = run.lr(step)
                loss = run.step(step)
                with interrupts.held():  # the update and its bookkeeping happen together: Ctrl-C waits for both
                    run.whole = False
                    run.update(step + 1, loss, lr, t0)
                    step += 1
                    run.whole = True
                run.report(step)
                if run.eval_due(step):
                    run.evaluate(step)
                if run.save_due(step) and (problem := run.save(step)) is not None:
                    raise _diverged(problem, step, run.out, run.last_good)
                run.notify("step")
    except KeyboardInterrupt:
        run.interrupted(step)
        raise
    finally:
        if run.bar is not None:
            run.bar.close()
    return run.history


def train(
    config_or_model: GPTConfig | GPT | str | None = None,
    data: str | os.PathLike | TokenDataset | None = None,
    args: TrainConfig | None = None,
    *,
    callback: Callable[[str, TrainHistory], None] | None = None,
    **settings: Any,
) -> TrainHistory:
    """Train (or fine-tune) a GPT on ``data`` and return its :class:`TrainHistory`.

    ``config_or_model``: a preset name (``"mini"``), a :class:`GPTConfig` or a :class:`GPT` to train in
    place; ``init="gpt2"`` or a folder starts from pretrained weights instead (fine-tuning).
    ``data``: a file, a folder of ``.txt``, a named data set (``"tinyshakespeare"``) or a
    :class:`TokenDataset`. ``args``: a :class:`TrainConfig`; keyword ``settings`` replace its fields,
    so ``train(cfg, "tinyshakespeare", steps=300, lr=3e-3)`` works without one.
    ``tokenizer``: ``"gpt2"``, ``"bpe:N"``, ``"char"``, a folder or an object.
    ``pos_init="sinusoidal"`` starts a fresh model's learned position embeddings from scaled sine/cosine
    codes (:func:`sinusoidal_positions`) instead of noise; positional heads then form within minutes.
    ``repeat_frac`` > 0 makes that share of training rows a passage read twice (see
    :meth:`TokenDataset.get_batch`); ``induction_frac`` > 0 makes that share random tokens written over
    and over, with loss only where they can be copied; evaluation always uses plain text.
    ``callback(event, history)`` runs after every ``"step"`` and every ``"eval"`` (draw a live curve).
    On the CPU the run holds :func:`gptlearn.fast.memory.freed_memory_kept`, a process-wide allocator
    setting: freed memory is kept for reuse instead of fresh pages for every large tensor, and glibc's
    defaults are back when the run ends.

    With ``out_dir``, a checkpoint (the model folder with its trainer state, replaced as a whole) is
    written at every eval (or every ``save_every`` steps), at the end, and on Ctrl-C, each only if its
    weights, AdamW's state and their loss are finite; a run that diverges stops and names the last good
    one. ``resume=True`` continues the run in ``out_dir`` exactly where it stopped, with its settings
    (:meth:`TrainConfig.from_run`; those in :data:`RESUME_MAY_CHANGE` may change, any other that differs is
    refused); ``overwrite=True`` replaces the run (or model) there. The folder is locked while the run lasts.
    Everything is checked before any work: the settings, the folder, the memory the model and batch need,
    and the time the run takes: a run estimated to take longer than ``max_days`` (30) even at the most the
    device does (:func:`run_flops`, :func:`gptlearn.devices.check_duration`) is refused.
    """
    args = (args or TrainConfig()).replace(**settings).validate()
    dist = Dist.from_env()
    dev = dist.device(args.device)
    out = Path(args.out_dir).expanduser() if args.out_dir is not None else None
    dist.on_master(lambda: _check_time_early(config_or_model, data, args, dev), None)  # before the folder is made
    with contextlib.ExitStack() as stack:  # holds the folder's lock and the allocator setting until the run ends
        replaced = dist.on_master(lambda: _open_run_folder(out, args, stack), set()) if out is not None else set()
        if dev.type == "cpu":
            stack.enter_context(freed_memory_kept())  # large tensors reuse freed memory instead of fresh pages
        run = Run.start(config_or_model, data, args, dev=dev, dist=dist, out=out, replaced=replaced,
                        callback=callback)
        return _loop(run)


# ---- command line: built from TrainConfig's fields -----------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``gptlearn train``: the data and the model's shape, then one flag per :class:`TrainConfig`
    field (its name with dashes, its default, its help)."""
    p.add_argument("--data", required=True, help="a text file, a folder of .txt files, or tinyshakespeare")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--preset", default=None, help=f"model size: {', '.join(PRESETS)} (default mini)")
    p.add_argument("--config", default=None,
                   help="JSON overrides of the preset, e.g. '{\"n_layer\": 6}', or a .json file")
    add_config_arguments(p, TrainConfig, groups={"model": model})


def _config_from_args(args: argparse.Namespace) -> GPTConfig:
    overrides: dict[str, Any] = {}
    if args.config:
        src = args.config
        try:
            overrides = json.loads(Path(src).read_text() if src.endswith(".json") and Path(src).is_file() else src)
        except json.JSONDecodeError as e:
            raise GptlearnError(f"--config is not valid JSON ({e.msg} at character {e.pos}); "
                                "write it like '{\"n_layer\": 6}'") from None
        if not isinstance(overrides, dict):
            raise GptlearnError("--config must be a JSON object of GPTConfig fields, e.g. '{\"n_layer\": 6}'")
    try:
        return GPTConfig.from_preset(args.preset or "mini", **overrides)
    except TypeError as e:
        raise GptlearnError(f"--config: {e}; use GPTConfig field names such as n_layer, n_head, n_embd") from None
    except ValueError as e:
        raise GptlearnError(str(e)) from None


def run_from_args(args: argparse.Namespace) -> int:
    if getattr(args, "init", None) and args.config:
        raise GptlearnError("--config changes a fresh model's shape; it cannot be combined with --init")
    # the flags given replace the defaults, or on --resume the run's own settings
    resume = getattr(args, "resume", False) and not getattr(args, "overwrite", False)  # both: validate() refuses
    base = TrainConfig.from_run(args.out_dir) if resume else None
    settings = TrainConfig.from_args(args, base)
    same_model = settings.init is not None or (settings.resume and args.preset is None and args.config is None)
    config = None if same_model else _config_from_args(args)
    history = train(config, args.data, settings)
    if Dist.from_env().master:
        evals = history.evals()
        final = f"; final val loss {evals[-1][2]:.4f}" if evals and evals[-1][2] is not None else ""
        print(f"trained {history.step[-1] if history.step else 0} steps{final}; model saved in {settings.out_dir}")
    return 0


def register_cli(subparsers) -> argparse.ArgumentParser:
    """Add ``gptlearn train`` to the ``gptlearn`` command."""
    p = subparsers.add_parser("train", help="train or fine-tune a GPT on text",
                              description="Train a GPT from scratch or fine-tune one on a text file or folder.")
    add_arguments(p)
    p.set_defaults(func=run_from_args)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m gptlearn.train ...`` (also under ``torchrun --nproc_per_node=N -m gptlearn.train``)."""
    parser = argparse.ArgumentParser(prog="gptlearn.train", description="Train a GPT on text.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        code = run_from_args(args)
    except (GptlearnError, OSError, UnicodeDecodeError) as e:  # the user's mistake (a bug keeps its traceback)
        print(f"gptlearn.train: error: {e}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    finally:
        Dist().close()
    return code


if __name__ == "__main__":
    sys.exit(main())
