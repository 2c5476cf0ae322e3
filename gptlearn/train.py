"""Training a GPT on text: AdamW, warmup + cosine learning rate, checkpoints that resume exactly,
and DDP under ``torchrun`` (book chapter "Training a GPT").

>>> history = train("mini", "tinyshakespeare", tokenizer="bpe:2048", steps=200, out_dir="runs/mini")  # doctest: +SKIP
>>> history.val_loss[-1]                                                                               # doctest: +SKIP

One entry point works in a notebook, from ``gptlearn train`` and under
``torchrun --nproc_per_node=N -m gptlearn.train ...`` (one process per device, DDP). Every setting of a
run is a field of :class:`TrainConfig`, which also builds the command line's flags and checks them all.

A run writes to ``out_dir`` a model folder ``GPT.from_pretrained(out_dir)`` loads (Hugging Face layout)
and, for ``resume=True``, the trainer state: ``trainer_state.json`` (the step, the settings, the
history, the random generators' scalars) and ``trainer_state.safetensors`` (AdamW's moments and the
generators' state arrays). Nothing is pickled; a ``trainer_state.pt`` of older versions is refused,
never loaded. A checkpoint is written only when its weights, AdamW's state and the loss they give are
finite, so the last checkpoint is always a good one. docs/training.md has the rules of a run folder:
what it holds, the settings a resumed run may change, the lock, ``--overwrite``.

Legend: B batch, T tokens, C n_embd, H n_head, hs head size, V vocab, L layers.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import hashlib
import json
import math
import numbers
import os
import random
import signal
import sys
import tempfile
import threading
import time
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .atomic import recover_folder, write_folder
from .folders import check_folder, check_name, kind_of
from .safeio import JSON_MAX_BYTES, read_regular
from .config import PRESETS, GPTConfig, gib
from .data import TokenDataset, load_text, split_text
from .errors import GptlearnError
from .model import GPT, sinusoidal_positions
from .tokenizers import BPETokenizer, CharTokenizer, Tokenizer, TokenizerLike, load_tokenizer

try:
    import fcntl
except ImportError:  # Windows: runs into one folder are not locked
    fcntl = None

__all__ = [
    # the settings and the result of a run
    "TrainConfig", "TrainHistory", "STATE_FILE", "STATE_TENSORS", "RESUME_MAY_CHANGE",
    # its pure pieces
    "lr_at", "param_groups", "make_optimizer", "load_tokenizer_spec",
    # the trainer state on disk
    "write_trainer_state", "read_trainer_state",
    # the run, and its command line
    "train", "add_arguments", "register_cli", "main",
]

STATE_FILE = "trainer_state.json"  # the step, the settings, the history, scalars of the RNG states
STATE_TENSORS = "trainer_state.safetensors"  # AdamW's moments and the RNG states' arrays
LEGACY_STATE_FILE = "trainer_state.pt"  # older versions' pickle: refused, never loaded
STATE_FILES = (STATE_FILE, STATE_TENSORS, LEGACY_STATE_FILE)
STATE_FORMAT, STATE_VERSION = "gptlearn trainer state", 1


# ---- the settings of a run: one dataclass, from which the command line is built ----------------------
POS_INITS = ("normal", "sinusoidal")
DEVICE_TYPES = ("cpu", "cuda", "mps")


def _setting(default: Any, help: str, *, flag: str | None = None, cli: bool = True, group: str | None = None,
             **options: Any) -> Any:
    """A :class:`TrainConfig` field and its command-line flag: ``flag`` replaces ``--field-name``, ``cli=False``
    keeps the field off the command line, ``group="model"`` makes it exclusive with ``--preset``, and
    ``options`` go to ``add_argument`` (``required``, ``choices``)."""
    return field(default=default, metadata={"help": help, "flag": flag, "cli": cli, "group": group, "options": options})


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
        for names, ok, rule in _RULES:
            for name in names:
                if not ok(getattr(self, name)):
                    raise GptlearnError(f"{name} must be {rule}, got {_shown(getattr(self, name))}")
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
        :data:`RESUME_MAY_CHANGE` (``.replace(steps=2000)``) and pass it to :func:`train` to continue it."""
        saved = _read_state_json(Path(out_dir).expanduser())["settings"]
        names = {f.name for f in fields(cls)}
        kept = {k: tuple(v) if k == "betas" and isinstance(v, list) else v for k, v in saved.items() if k in names}
        return cls(**kept).replace(out_dir=out_dir, resume=True, overwrite=False)


# What a resumed run may change: how long it goes on, how it reports, where it runs. Every other setting
# decides which steps it takes, so it must be the run's own (train() names any that differ).
RESUME_MAY_CHANGE = ("steps", "eval_every", "eval_iters", "save_every", "sample_tokens", "sample_prompt",
                     "device", "compile", "progress", "out_dir", "resume", "overwrite")  # the last 3: what to do


def _is_int(x: Any, lo: int | None = None, hi: int | None = None) -> bool:
    return (isinstance(x, numbers.Integral) and not isinstance(x, bool) and (lo is None or x >= lo)
            and (hi is None or x <= hi))


def _is_number(x: Any, lo: float = -math.inf, hi: float = math.inf) -> bool:
    """A finite real number in [lo, hi] (bools are not numbers here)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) and lo <= x <= hi


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike)) and str(os.fspath(x)).strip() != "" and "\0" not in str(os.fspath(x))


def _tokenizer_problem(spec: Any) -> str | None:
    """Why ``spec`` names no tokenizer (see :func:`load_tokenizer_spec`), or None."""
    if spec is None or not isinstance(spec, (str, os.PathLike)):
        ok = spec is None or all(hasattr(spec, a) for a in ("encode", "decode", "vocab_size"))
        return None if ok else "not a tokenizer (it needs encode, decode and vocab_size)"
    s = str(os.fspath(spec))
    if s in ("gpt2", "char"):
        return None
    if s.startswith("bpe:"):
        n = s[4:]
        if not (n.isascii() and n.isdigit()):
            return "write bpe:N with N the vocabulary size, e.g. bpe:2048"
        return None if int(n) >= 257 else "N must be at least 257 (256 bytes + <|endoftext|>)"
    if s.strip() and "\0" not in s and Path(s).expanduser().is_dir():  # Path("") is the working folder
        return None
    return "use gpt2, bpe:N, char or a folder with tokenizer files"


def _is_device(x: Any) -> bool:
    if x is None or x == "auto":
        return True
    try:
        return torch.device(x).type in DEVICE_TYPES
    except (RuntimeError, TypeError, ValueError):
        return False


def _optional(ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda x: x is None or ok(x)


# (fields, the test each value must pass, what it must be): one place for every field's rule
_RULES: tuple[tuple[tuple[str, ...], Callable[[Any], bool], str], ...] = (
    (("steps", "batch_size", "grad_accum", "eval_every", "eval_iters"), lambda x: _is_int(x, 1), "a positive integer"),
    (("block_size", "save_every"), _optional(lambda x: _is_int(x, 1)), "a positive integer or None"),
    (("warmup", "sample_tokens"), lambda x: _is_int(x, 0), "an integer, 0 or more"),
    (("seed",), lambda x: _is_int(x, 0, 2**32 - 1), "an integer from 0 to 2**32 - 1"),
    (("lr",), lambda x: _is_number(x) and x > 0, "a positive number"),
    (("min_lr",), _optional(lambda x: _is_number(x, 0)), "a number, 0 or more (or None for lr/10)"),
    (("weight_decay", "grad_clip"), lambda x: _is_number(x, 0), "a number, 0 or more"),
    (("betas",), lambda x: isinstance(x, (tuple, list)) and len(x) == 2 and all(_is_number(b, 0) and b < 1 for b in x),
     "two numbers in [0, 1)"),
    (("repeat_frac", "induction_frac"), lambda x: _is_number(x, 0, 1), "a fraction from 0 to 1"),
    (("val_fraction",), lambda x: _is_number(x, 0) and x < 1, "a fraction from 0 up to (not including) 1"),
    (("pos_init",), lambda x: x in POS_INITS, " or ".join(map(repr, POS_INITS))),
    (("compile", "resume", "overwrite", "progress"), lambda x: isinstance(x, bool), "True or False"),
    (("sample_prompt",), lambda x: isinstance(x, str), "a string"),
    (("init", "out_dir"), _optional(_is_path), "a path or a name (a non-empty string)"),
    (("tokenizer",), lambda x: _tokenizer_problem(x) is None,
     "gpt2, bpe:N (N at least 257), char, a folder with tokenizer files, or a tokenizer"),
    (("device",), _is_device, "auto, cpu, cuda, cuda:N or mps"),
)


def _shown(value: Any) -> str:
    """``repr(value)``, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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


# ---- pure pieces ------------------------------------------------------------------------------------
def lr_at(step: int, *, max_lr: float, warmup: int, total: int, min_lr: float = 0.0) -> float:
    """Learning rate for (0-based) ``step``: linear warmup to ``max_lr`` over ``warmup`` steps, then a
    cosine down to ``min_lr`` at ``total``; ``min_lr`` after that.

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


def load_tokenizer_spec(spec: str | os.PathLike | TokenizerLike, train_text: str | None = None) -> TokenizerLike:
    """``"gpt2"``, ``"bpe:N"`` (byte-level BPE with N tokens learned on ``train_text``), ``"char"``
    (the characters of ``train_text``), a folder with tokenizer files, or a tokenizer object."""
    problem = _tokenizer_problem(spec)
    if problem is not None:
        raise GptlearnError(f"tokenizer {_shown(spec)}: {problem}")
    if not isinstance(spec, (str, os.PathLike)):
        return spec
    s = str(os.fspath(spec))
    if s == "gpt2":
        return Tokenizer.gpt2()
    if s.startswith("bpe:"):
        return Tokenizer.from_bpe(BPETokenizer.train(train_text or "", int(s[4:])))
    if s == "char":
        return CharTokenizer.from_text(train_text or "")
    try:
        return load_tokenizer(Path(s).expanduser())
    except FileNotFoundError as e:
        raise GptlearnError(str(e)) from None


# ---- the trainer state on disk: every tensor in safetensors, the rest in JSON; nothing is pickled ----------
def _rng_state(data_gen: torch.Generator) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "data": data_gen.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict[str, Any], data_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    data_gen.set_state(state["data"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _json_value(v: Any) -> Any:
    """A setting or an optimizer option as JSON: a path or device as text, a tuple as a list, a one-number
    tensor as its number, anything else (a tokenizer object) as None."""
    if isinstance(v, (os.PathLike, torch.device)):
        return str(os.fspath(v) if isinstance(v, os.PathLike) else v)
    if isinstance(v, (tuple, list)):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    if torch.is_tensor(v) and v.numel() == 1:
        return v.item()
    return v if v is None or isinstance(v, (bool, int, float, str)) else None


def write_trainer_state(folder: str | os.PathLike, *, step: int, settings: dict[str, Any], history: TrainHistory,
                        optimizer: dict[str, Any], rngs: list[dict[str, Any]], data_sha256: str | None = None) -> None:
    """Write the trainer state into ``folder`` (a checkpoint's temporary folder): every tensor (AdamW's
    moments, the RNG states' arrays) in ``trainer_state.safetensors``, the rest in ``trainer_state.json``
    with that file's sha256, so that a damaged or swapped file is caught when read.

    ``optimizer``: a torch optimizer's ``state_dict()``; ``rngs``: one :func:`_rng_state` a process.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    tensors: dict[str, torch.Tensor] = {}
    opt_state: dict[str, dict[str, Any]] = {}
    for i, entry in optimizer["state"].items():
        opt_state[str(i)] = {}
        for name, v in entry.items():
            if torch.is_tensor(v):
                tensors[f"optimizer.{i}.{name}"] = v.detach().cpu().contiguous()
            else:
                opt_state[str(i)][name] = _json_value(v)
    rng_scalars = []
    for r, rng in enumerate(rngs):
        version, mt, gauss_next = rng["python"]
        kind, key, pos, has_gauss, cached_gaussian = rng["numpy"]
        tensors[f"rng.{r}.torch"], tensors[f"rng.{r}.data"] = rng["torch"].cpu(), rng["data"].cpu()
        tensors[f"rng.{r}.python"] = torch.tensor(mt, dtype=torch.int64)  # 624 words + the position
        tensors[f"rng.{r}.numpy"] = torch.from_numpy(np.asarray(key, dtype=np.int64))  # 624 uint32 words
        for d, s in enumerate(rng["cuda"] or []):
            tensors[f"rng.{r}.cuda.{d}"] = s.cpu()
        rng_scalars.append({"python": {"version": version, "gauss_next": gauss_next},
                            "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss),
                                      "cached_gaussian": float(cached_gaussian)},
                            "cuda_devices": len(rng["cuda"] or [])})
    save_file(tensors, str(folder / STATE_TENSORS), metadata={"format": STATE_FORMAT})
    meta = {"format": STATE_FORMAT, "version": STATE_VERSION, "step": step, "settings": settings,
            "data_sha256": data_sha256,
            "tensors_sha256": hashlib.sha256((folder / STATE_TENSORS).read_bytes()).hexdigest(),
            "optimizer": {"param_groups": _json_value(optimizer["param_groups"]), "state": opt_state},
            "rng": rng_scalars, "history": history.to_dict()}
    meta["sha256"] = _checksum(meta)
    (folder / STATE_FILE).write_text(json.dumps(meta, indent=1, allow_nan=False) + "\n", encoding="utf-8")


def _checksum(meta: dict[str, Any]) -> str:
    """The sha256 of ``meta`` (but its own ``sha256`` field) as canonical JSON: any change to the file shows."""
    body = json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True, separators=(",", ":"),
                      allow_nan=False)
    return hashlib.sha256(body.encode()).hexdigest()


def _damaged(folder: Path, why: str) -> GptlearnError:
    return GptlearnError(f"the trainer state in {folder} is damaged: {why}; resume from a copy of the run, or "
                         "start it again with --overwrite")


def _read_state_json(folder: Path) -> dict[str, Any]:
    """``trainer_state.json`` of the run in ``folder``, checked to be one (its tensors are not read)."""
    path = folder / STATE_FILE
    if not os.path.lexists(path):  # a FIFO or a device there is refused by name when read
        if (folder / LEGACY_STATE_FILE).exists():
            raise GptlearnError(
                f"{folder / LEGACY_STATE_FILE} is the trainer state of an older gptlearn, a pickle, which gptlearn "
                f"never loads (unpickling can run any code); start the run again with --overwrite, or fine-tune "
                f"its weights with --init {folder} --out NEW_FOLDER")
        raise GptlearnError(f"nothing to resume: {folder} holds no {STATE_FILE}; drop --resume to start a new run")
    try:
        meta = json.loads(read_regular(path, max_bytes=JSON_MAX_BYTES))  # a FIFO or a device: refused, not read
    except GptlearnError:
        raise
    except (ValueError, RecursionError) as e:  # not JSON (JSONDecodeError), not text, or nested too deep
        raise _damaged(folder, f"{STATE_FILE} is not valid JSON ({type(e).__name__})") from None
    except OSError as e:
        raise GptlearnError(f"cannot read {path} ({e.strerror or e})") from None
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        raise _damaged(folder, f"{STATE_FILE} is not a gptlearn trainer state")
    if meta.get("version") != STATE_VERSION:
        raise GptlearnError(f"{path} is version {_shown(meta.get('version'))} of the trainer state, which this "
                            f"gptlearn (version {STATE_VERSION}) does not read; resume it with the gptlearn that "
                            "wrote it")
    try:
        same = meta.get("sha256") == _checksum(meta)
    except ValueError:  # NaN or infinity, which the JSON of a trainer state never holds
        same = False
    if not same:
        raise _damaged(folder, f"{STATE_FILE} is not as it was saved (its sha256 differs)")
    if not isinstance(meta.get("settings"), dict):
        raise _damaged(folder, f"{STATE_FILE} has no settings")
    return meta


def read_trainer_state(folder: str | os.PathLike) -> dict[str, Any]:
    """The trainer state saved in the run folder ``folder``, checked: ``step``, ``settings``,
    ``data_sha256``, ``history`` (a :class:`TrainHistory`), ``optimizer`` (a torch ``state_dict``) and
    ``rng`` (one dict a process). A missing, legacy (``trainer_state.pt``), damaged or non-finite state is
    a :class:`GptlearnError` in one line."""
    from safetensors.torch import load

    folder = Path(folder).expanduser()
    meta = _read_state_json(folder)
    try:
        blob = read_regular(folder / STATE_TENSORS)  # a FIFO or /dev/zero: refused, not read
    except FileNotFoundError:
        raise _damaged(folder, f"{STATE_TENSORS} is missing") from None
    if hashlib.sha256(blob).hexdigest() != meta.get("tensors_sha256"):
        raise _damaged(folder, f"{STATE_TENSORS} is not the file saved with {STATE_FILE} (its sha256 differs)")
    try:
        tensors = load(blob)
        state = _state_from(meta, tensors)
    except Exception as e:  # whatever the parsers say of bytes that hold no trainer state: damaged
        raise _damaged(folder, f"{type(e).__name__}: {_shown(str(e))}") from None
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise GptlearnError(f"the trainer state in {folder} holds non-finite values ({bad[0]}), so it is no good "
                            "checkpoint; start the run again with --overwrite")
    return state


def _state_from(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The pieces of ``trainer_state.json`` and its tensors, in the shapes torch, numpy and random take."""
    step = meta["step"]
    if not _is_int(step, 0):
        raise ValueError(f"step is {_shown(step)}")
    history = TrainHistory(**meta["history"])
    if history.step != list(range(1, step + 1)) or any(len(v) != step for v in history.to_dict().values()):
        raise ValueError(f"the history does not hold the {step} steps")
    kinds = {"train_loss": _is_number, "lr": _is_number, "tokens_per_sec": _is_number,
             "val_loss": _optional(_is_number), "eval_train_loss": _optional(_is_number),
             "samples": _optional(lambda x: isinstance(x, str))}
    if not all(ok(x) for name, ok in kinds.items() for x in getattr(history, name)):
        raise ValueError("the history holds values of the wrong type")
    opt = meta["optimizer"]
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
              for g in opt["param_groups"]]
    opt_state = {int(i): dict(entry) for i, entry in opt["state"].items()}
    for key, t in tensors.items():
        kind, *rest = key.split(".")
        if kind == "optimizer":
            i, name = rest
            opt_state[int(i)][name] = t
        elif kind != "rng":
            raise ValueError(f"unexpected tensor {key!r}")
    rngs = []
    for r, s in enumerate(meta["rng"]):
        py, npy = s["python"], s["numpy"]
        rngs.append({
            "torch": tensors[f"rng.{r}.torch"], "data": tensors[f"rng.{r}.data"],
            "python": (py["version"], tuple(tensors[f"rng.{r}.python"].tolist()), py["gauss_next"]),
            "numpy": (npy["kind"], tensors[f"rng.{r}.numpy"].numpy().astype(np.uint32), npy["pos"],
                      npy["has_gauss"], npy["cached_gaussian"]),
            "cuda": [tensors[f"rng.{r}.cuda.{d}"] for d in range(s["cuda_devices"])] or None})
    return {"step": step, "settings": meta["settings"], "data_sha256": meta.get("data_sha256"), "history": history,
            "optimizer": {"state": opt_state, "param_groups": groups}, "rng": rngs}


def _settings_record(args: TrainConfig, **resolved: Any) -> dict[str, Any]:
    """The run's settings as JSON values, with the ``resolved`` ones (block_size, min_lr) in place of None."""
    return {**{f.name: _json_value(getattr(args, f.name)) for f in fields(args)}, **resolved}


def _resume_differences(args: TrainConfig, saved: dict[str, Any], **resolved: Any) -> list[str]:
    """The settings of a resumed run that differ from the run's own and may not (see RESUME_MAY_CHANGE)."""
    now = _settings_record(args, **resolved)
    return [f"{name} {now[name]!r} (the run's: {saved.get(name)!r})" for name in now
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
def _check_writable(out_dir: Path, *, parent_only: bool = False) -> None:
    """Refuse an output folder that is a file, or that (or, with ``parent_only``, whose parent) cannot be
    created and written."""
    if out_dir.exists() and not out_dir.is_dir():
        raise GptlearnError(f"the output folder {out_dir} is a file; choose a folder for --out")
    folder = out_dir.parent if parent_only else out_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise GptlearnError(f"cannot write to the output folder {out_dir} ({e.strerror or e}); "
                            "choose another --out") from None


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an OS lock on the run folder ``out`` while the run lasts: a second run into it is refused.

    The lock file, ``.NAME.lock``, sits beside the folder (the folder itself is swapped at every checkpoint;
    where its parent cannot be written, checkpoints are written in place and the lock is ``.gptlearn.lock``
    inside it) and is removed at the end. The kernel drops the lock however the process ends, even when
    it is killed, so the file a killed run leaves behind locks nothing.
    """
    if fcntl is None:
        yield
        return
    real = Path(os.path.realpath(out))  # one lock however the folder is spelled (a symlink, "..")
    lock = real.parent / f".{real.name}.lock" if os.access(real.parent, os.W_OK) else real / ".gptlearn.lock"
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise GptlearnError(f"cannot write to the output folder {out} ({e.strerror or e}); "
                                "choose another --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 20, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise GptlearnError(f"another training run{f' (process {holder})' if holder.isdigit() else ''} is "
                                f"writing to {out}; wait for it to end, or choose another --out") from None
        except OSError:  # a file system without locks: run unlocked, as before
            os.close(fd)
            yield
            return
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # its last holder removed the file between our open and our lock: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)  # while still locked: a run waiting on this file sees it gone and retries
        os.close(fd)


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
        meta = _read_state_json(out)
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
        _check_writable(out, parent_only=True)  # its parent must take it (and the lock)
    stack.enter_context(_locked(out))
    recover_folder(out)
    _check_writable(out)
    return _check_out(out, args)


# ---- memory: refuse what cannot fit before allocating it ---------------------------------------------
def _free_bytes(dev: torch.device) -> int | None:
    """The memory a run on ``dev`` can still take: CUDA's free memory; on the CPU what the kernel calls
    available plus free swap, within the container's limit (Linux), else the physical memory; None where
    unknown (MPS)."""
    if dev.type == "cuda":
        return torch.cuda.mem_get_info(dev)[0]
    if dev.type != "cpu":
        return None
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        free = (int(info["MemAvailable"].split()[0]) + int(info.get("SwapFree", "0 kB").split()[0])) * 1024
    except (OSError, KeyError, ValueError):
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None
    try:  # a cgroup (v2) limit, as in a container
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return free


def _check_memory(config: GPTConfig, args: TrainConfig, block_size: int, dev: torch.device,
                  source: str = "this run") -> None:
    """Refuse a model and batch that cannot fit in ``dev``'s memory (:meth:`GPTConfig.estimate_bytes`, a
    lower bound), before a single weight or batch is allocated."""
    need = config.estimate_bytes(batch_size=args.batch_size, seq_len=block_size, training=True,
                                 activation_bytes=2 if dev.type == "cuda" else 4)  # CUDA trains under bf16 autocast
    free = _free_bytes(dev)
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
    path = Path(os.fspath(folder)).expanduser() / "config.json"
    try:
        config = GPTConfig.from_hf_dict(json.loads(read_regular(path, max_bytes=JSON_MAX_BYTES).decode("utf-8")))
        config.estimate_bytes(training=True)  # its sizes are numbers
    except (OSError, ValueError, TypeError, AttributeError, RecursionError):
        return
    _check_memory(config, args, _block_size(args, config), dev, source=f"training the model {path} describes")


# ---- Ctrl-C: never between a step's update and its bookkeeping -----------------------------------------
class _Interrupts:
    """While a run trains, Ctrl-C (SIGINT) raises KeyboardInterrupt at once, as usual, except inside
    ``held()``: there it waits until the block ends, so that the update of a step and its bookkeeping (the
    step count, the RNG states, the history) happen together or not at all, and a checkpoint written on
    Ctrl-C is always one the run could have written. Signal handlers live in the main thread: elsewhere
    this changes nothing."""

    def __init__(self) -> None:
        self.holding = self.pending = False
        self.previous: Any = None
        self.installed = False

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
            self.installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.installed:
            signal.signal(signal.SIGINT, self.previous)
            self.installed = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.holding:
            self.pending = True
        else:
            self._deliver(signum, frame)

    def _deliver(self, signum: int, frame: Any) -> None:
        if callable(self.previous):
            self.previous(signum, frame)  # Python's default handler raises KeyboardInterrupt; Jupyter's too
        elif self.previous != signal.SIG_IGN:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending:
            self.pending = False
            self._deliver(signal.SIGINT, None)


# ---- distributed helpers ----------------------------------------------------------------------------
def _dist_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) otherwise."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"])
    return 0, 0, 1


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
                                f"{model.config.vocab_size} embeddings; build the model with vocab_size={tok.vocab_size}")
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


def _resumed_model(out: Path, args: TrainConfig, dev: torch.device) -> tuple[GPT, Any]:
    """The model saved in the run folder ``out`` and its tokenizer, checked to fit and to be finite."""
    _check_folder_memory(out, args, dev)
    saved = GPT.from_pretrained(out)
    try:
        tok = saved.tokenizer
    except AttributeError as e:
        raise GptlearnError(str(e)) from None
    bad = _non_finite(saved)
    if bad is not None:
        raise GptlearnError(f"the model in {out} is no good checkpoint: {bad}; start the run again with --overwrite")
    return saved.train(), tok


def _non_finite(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> str | None:
    """What is not finite in the weights or in AdamW's state ("the weight wte.weight is not finite"), or None."""
    names = {}
    for name, p in model.named_parameters():
        names[p] = name
        if not bool(torch.isfinite(p).all()):
            return f"the weight {name} is not finite"
    for p, entry in (optimizer.state.items() if optimizer is not None else ()):
        for key, v in entry.items():
            if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
                return f"AdamW's {key} of {names.get(p, 'a weight')} is not finite"
    return None


def _diverged(what: str, step: int, out: Path | None, last_good: int | None) -> GptlearnError:
    where = (f"the last good checkpoint (step {last_good}) is in {out}" if out is not None and last_good is not None
             else "no checkpoint was written")
    return GptlearnError(f"{what} at step {step}; training stopped and {where}; lower --lr or check the data")


# ---- the training loop -------------------------------------------------------------------------------
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
    On the CPU this calls :func:`gptlearn.fast.memory.keep_freed_memory`: the process keeps freed memory for
    reuse instead of faulting in fresh pages for every large tensor (bench/README.md has the numbers).

    With ``out_dir``, a checkpoint (the model folder with its trainer state, replaced as a whole) is
    written at every eval (or every ``save_every`` steps), at the end, and on Ctrl-C, each only if its
    weights, AdamW's state and their loss are finite; a run that diverges stops and names the last good
    one. ``resume=True`` continues the run in ``out_dir`` exactly where it stopped, with its settings
    (:meth:`TrainConfig.from_run`; those in :data:`RESUME_MAY_CHANGE` may change, any other that differs is
    refused); ``overwrite=True`` replaces the run (or model) there. The folder is locked while the run lasts.
    Everything is checked before any work: the settings, the folder, the memory the model and batch need.
    """
    args = (args or TrainConfig()).replace(**settings).validate()
    rank, local_rank, world = _dist_env()
    ddp = world > 1
    device = args.device
    if ddp:
        import torch.distributed as dist

        if device is None or str(device) == "auto":
            device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if str(device).startswith("cuda") else "gloo")
    from .devices import resolve_device
    from .fast.memory import keep_freed_memory

    try:
        dev = resolve_device(device)
    except RuntimeError as e:  # a device this machine does not have
        raise GptlearnError(str(e)) from None
    if dev.type == "cpu":
        keep_freed_memory()  # large tensors reuse freed memory instead of fresh pages (see its docstring)
    if dev.type == "cuda" and dev.index is None and ddp:
        dev = torch.device("cuda", local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    out = Path(args.out_dir).expanduser() if args.out_dir is not None else None
    with contextlib.ExitStack() as stack:  # holds the folder's lock until the run ends
        replaced: set[str] = set()
        if out is not None and not ddp:
            replaced = _open_run_folder(out, args, stack)
        elif out is not None:  # rank 0 opens the folder; every rank stops on its refusal
            import torch.distributed as dist

            refusal = [None]
            if rank == 0:
                try:
                    replaced = _open_run_folder(out, args, stack)
                except GptlearnError as e:
                    refusal = [str(e)]
            dist.broadcast_object_list(refusal, src=0)
            if refusal[0] is not None:
                raise GptlearnError(refusal[0])
        return _train(config_or_model, data, args, callback=callback, dev=dev, rank=rank, world=world, out=out,
                      replaced=replaced)


def _train(config_or_model, data, args: TrainConfig, *, callback, dev: torch.device, rank: int, world: int,
           out: Path | None, replaced: set[str]) -> TrainHistory:
    """:func:`train` once its settings, device and folder are checked."""
    from .devices import autocast

    ddp, master = world > 1, rank == 0
    if data is None:
        raise GptlearnError("no training data: pass a text file, a folder of .txt files or 'tinyshakespeare'")
    saved = read_trainer_state(out) if args.resume else None

    # 1. the model and its tokenizer: the run's own on resume (its shape and settings checked first)
    if saved is not None:
        model, tok = _resumed_model(out, args, dev)
        given = config_or_model if isinstance(config_or_model, GPT) else _as_config(config_or_model)
        min_lr = args.lr / 10 if args.min_lr is None else args.min_lr
        differences = (_model_differences(given, model.config) + _resume_differences(
            args, saved["settings"], block_size=_block_size(args, model.config), min_lr=min_lr))
        if differences:
            raise GptlearnError(
                f"--resume continues the run in {out} with its own settings, but {'; '.join(differences)}; leave "
                f"those out (the run's values are kept), or start a new run (another --out, or --overwrite); a "
                f"resumed run may change only {', '.join(RESUME_MAY_CHANGE[:-3])}")
        if isinstance(config_or_model, GPT):  # train the model given, in place
            config_or_model.load_state_dict(model.state_dict())
            config_or_model.tokenizer = tok
            model = config_or_model.train()
    tokenizer, init = args.tokenizer, args.init
    if isinstance(data, TokenDataset):
        dataset, text = data, None
        if tokenizer is None:
            tokenizer = data.tokenizer
    else:
        text = load_text(data)
    train_text = split_text(text, args.val_fraction)[0] if text is not None else None
    if saved is None:
        if isinstance(tokenizer, str) and (tokenizer.startswith("bpe:") or tokenizer == "char") and train_text is None:
            raise GptlearnError(f"tokenizer {tokenizer!r} is learned from text; pass the text, not a TokenDataset")
        model, tok = _build_model(config_or_model, init, tokenizer, train_text or "", args=args, dev=dev)
    if text is not None:
        dataset = TokenDataset(text, tok, val_fraction=args.val_fraction)
    block_size = _block_size(args, model.config)
    min_lr = args.lr / 10 if args.min_lr is None else args.min_lr
    dataset.check_block_size(block_size)
    _check_memory(model.config, args, block_size, dev)
    data_sha256 = hashlib.sha256(np.ascontiguousarray(dataset.tokens)).hexdigest()
    if saved is not None and saved["data_sha256"] not in (None, data_sha256):
        raise GptlearnError(f"--resume continues the run in {out}, but its training tokens differ from the run's "
                            "(another text, or another split of it); resume with the run's data, or start a new run")
    has_val = len(dataset.splits["val"]) >= block_size + 1

    # 2. the optimizer and the random streams: fresh, or where the run stopped
    model.to(dev)
    optimizer = make_optimizer(model, lr=args.lr, weight_decay=args.weight_decay, betas=args.betas)
    history = TrainHistory()
    data_gen = torch.Generator().manual_seed(args.seed + rank)  # each rank its own batches
    torch.manual_seed(args.seed + rank)  # dropout
    np.random.seed((args.seed + rank) % 2**32)  # numpy takes seeds below 2**32
    random.seed(args.seed + rank)
    start = 0
    if saved is not None:
        try:
            optimizer.load_state_dict(saved["optimizer"])
            if rank < len(saved["rng"]):
                _set_rng_state(saved["rng"][rank], data_gen)
            else:  # a run resumed with more processes: fresh, distinct streams for the new ranks
                data_gen.manual_seed(args.seed + rank + 1_000_003 * saved["step"])
        except (ValueError, TypeError, RuntimeError, KeyError, IndexError) as e:
            raise _damaged(out, f"its optimizer or random state does not fit this model ({_shown(str(e))})") from None
        start, history = saved["step"], saved["history"]

    raw = model
    fwd = torch.compile(model) if args.compile else model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        fwd = DDP(fwd, device_ids=[dev.index] if dev.type == "cuda" else None)
    settings = _settings_record(args, block_size=block_size, min_lr=min_lr)

    @contextlib.contextmanager
    def eval_mode() -> Iterator[None]:
        raw.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            raw.train()

    def mean_loss(split: str, iters: int, gen: torch.Generator) -> float:
        """The loss at the current weights on ``iters`` batches drawn with ``gen``, a generator of its own:
        measuring never touches the training streams."""
        total = 0.0
        for _ in range(iters):
            x, y = dataset.get_batch(split, args.batch_size, block_size, gen)
            with autocast(dev):
                total += raw.loss(x.to(dev), y.to(dev)).item()
        return total / iters

    def eval_generator(step: int) -> torch.Generator:
        return torch.Generator().manual_seed(args.seed + 7919 * step)

    def evaluate(step: int) -> None:
        """Fill ``step``'s eval fields of the history: both losses and a sample."""
        with eval_mode():
            gen = eval_generator(step)
            tr = mean_loss("train", args.eval_iters, gen)
            va = mean_loss("val", args.eval_iters, gen) if has_val else None
            sample = ""
            if args.sample_tokens > 0 and master:
                try:
                    prompt = tok.encode(args.sample_prompt) or [tok.eot_token or 0]
                    ids = raw.generate(torch.tensor([prompt], device=dev), args.sample_tokens, top_k=40,
                                       seed=args.seed + step)
                    sample = tok.decode(ids[0].tolist())
                except Exception as e:  # a sample is a nicety; never let it stop training
                    sample = f"<no sample: {e}>"
        for name, value in (("train", tr), ("validation", va)):
            if value is not None and not math.isfinite(value):  # the weights diverged since the last checkpoint
                raise _diverged(f"the {name} loss of the evaluation became {value}", step, out, last_good)
        history.eval_train_loss[-1], history.val_loss[-1], history.samples[-1] = tr, va, sample
        if master:
            msg = f"step {step}: train loss {tr:.4f}" + (f", val loss {va:.4f}" if va is not None else "")
            (bar.write if bar is not None else print)(msg + (f"\n{sample!r}" if sample else ""))
        if callback is not None:
            callback("eval", history)

    def save(step: int, rng: dict[str, Any]) -> str | None:
        """Write the checkpoint of ``step`` finished steps (the model folder with its trainer state, replaced
        as one) if it is good: its weights, AdamW's state and the loss they give are finite. Returns None,
        or what is not finite; then nothing is written, and the last checkpoint stays the last good one."""
        nonlocal replaced
        if out is None:
            return None
        problem = _non_finite(raw, optimizer)
        if problem is None:  # finite weights can still give a non-finite loss (1e30 everywhere)
            with eval_mode():
                loss = mean_loss("train", 1, eval_generator(step))  # the first batch an eval at `step` draws
            if not math.isfinite(loss):
                problem = f"the loss at its weights is {loss}"
        if problem is not None:
            return problem
        rngs = [rng]
        if ddp:
            import torch.distributed as dist

            rngs = [None] * world
            dist.all_gather_object(rngs, rng)
        if master:
            state = dict(step=step, settings=settings, history=history, optimizer=optimizer.state_dict(), rngs=rngs,
                         data_sha256=data_sha256)

            def write(tmp: Path) -> None:
                raw.save_pretrained(tmp)
                write_trainer_state(tmp, **state)

            write_folder(out, write, owns=(*STATE_FILES, *replaced), kind="run",  # the first save of --overwrite:
                         overwrite=args.overwrite)  # every file gptlearn wrote there goes; yours stay
            replaced = set()
        if ddp:
            dist.barrier()  # no rank goes on (or writes into the folder) while rank 0 swaps it
        return None

    bar = None
    if args.progress and master:
        from tqdm.auto import tqdm

        bar = tqdm(total=args.steps, initial=start, desc="train", dynamic_ncols=True)

    def eval_due(step: int) -> bool:
        return step % args.eval_every == 0 or step == args.steps

    save_every = args.save_every or args.eval_every
    tokens_per_step = args.batch_size * block_size * args.grad_accum * world
    last_good = start if saved is not None else None
    raw.train()
    step = start
    rng_at_step_start = _rng_state(data_gen)  # what a checkpoint of `step` finished steps holds
    whole = True  # the weights, AdamW's state, `step`, the RNG states and the history agree
    try:
        with _Interrupts() as interrupts:
            if start and eval_due(start) and history.eval_train_loss[-1] is None:
                evaluate(start)  # an interrupt cut this eval short: the uninterrupted run made it
            if start >= args.steps and master:
                print(f"the run in {out} already finished {start} steps; raise --steps to train longer")
            while step < args.steps:
                t0 = time.perf_counter()
                lr_now = lr_at(step, max_lr=args.lr, warmup=args.warmup, total=args.steps, min_lr=min_lr)
                for g in optimizer.param_groups:
                    g["lr"] = lr_now
                optimizer.zero_grad(set_to_none=True)
                loss_sum = torch.zeros((), device=dev)
                for micro in range(args.grad_accum):
                    x, y = dataset.get_batch("train", args.batch_size, block_size, data_gen,
                                             repeat_frac=args.repeat_frac, induction_frac=args.induction_frac)
                    x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                    sync = not ddp or micro == args.grad_accum - 1
                    with fwd.no_sync() if not sync else contextlib.nullcontext():
                        with autocast(dev):
                            loss = fwd(x, targets=y) / args.grad_accum  # (B, T) -> scalar; no (B, T, V) logits kept
                        loss.backward()
                    loss_sum += loss.detach()
                if ddp:
                    import torch.distributed as dist

                    dist.all_reduce(loss_sum)
                    loss_sum /= world
                loss_value = loss_sum.item()
                if not math.isfinite(loss_value):
                    raise _diverged(f"the loss became {loss_value}", step + 1, out, last_good)
                if args.grad_clip:
                    torch.nn.utils.clip_grad_norm_(raw.parameters(), args.grad_clip)
                with interrupts.held():  # the update and its bookkeeping happen together: Ctrl-C waits for both
                    whole = False
                    optimizer.step()
                    if dev.type == "cuda":
                        torch.cuda.synchronize(dev)
                    step += 1
                    rng_at_step_start = _rng_state(data_gen)  # for a checkpoint of `step` finished steps
                    history.record(step, loss_value, lr_now, tokens_per_step / max(time.perf_counter() - t0, 1e-9))
                    whole = True
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr_now:.2e}",
                                    tok_s=f"{history.tokens_per_sec[-1]:,.0f}")
                if eval_due(step):
                    evaluate(step)
                if step % save_every == 0 or step == args.steps:
                    problem = save(step, rng_at_step_start)
                    if problem is not None:
                        raise _diverged(problem, step, out, last_good)
                    last_good = step
                if callback is not None:
                    callback("step", history)
    except KeyboardInterrupt:
        if out is None:
            note = f"interrupted at step {step}"
        elif not whole:  # cut inside an update: what is in memory is no step's state
            note = (f"interrupted inside step {step + 1}; " + (f"the checkpoint of step {last_good} in {out} stands"
                    if last_good is not None else "no checkpoint was written"))
        elif step == last_good:
            note = f"interrupted at step {step}, whose checkpoint is in {out}"
        else:
            problem = save(step, rng_at_step_start)
            note = (f"interrupted at step {step}; a checkpoint is in {out}" if problem is None else
                    f"interrupted at step {step}, where {problem}; " + (
                        f"the last good checkpoint (step {last_good}) is in {out}" if last_good is not None
                        else "no checkpoint was written"))
        if master:
            print(f"\n{note}" + (" (continue with --resume)" if out is not None else ""), file=sys.stderr)
        raise
    finally:
        if bar is not None:
            bar.close()
    return history


# ---- command line: built from TrainConfig's fields -----------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``gptlearn train``: the data and the model's shape, then one flag per :class:`TrainConfig`
    field (its name with dashes, its default, its help)."""
    p.add_argument("--data", required=True, help="a text file, a folder of .txt files, or tinyshakespeare")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--preset", default=None, help=f"model size: {', '.join(PRESETS)} (default mini)")
    p.add_argument("--config", default=None, help="JSON overrides of the preset, e.g. '{\"n_layer\": 6}', or a .json file")
    groups = {"model": model}
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        if not f.metadata["cli"]:
            continue
        flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
        to = groups.get(f.metadata["group"], p)
        # default=SUPPRESS: a flag left out is absent from the parsed namespace, so that TrainConfig's default
        # (or, on --resume, the run's own value) applies
        if hints[f.name] is bool:  # a switch: --compile turns a False default on, --no-progress a True one off
            to.add_argument(flag, dest=f.name, action="store_false" if f.default else "store_true",
                            default=argparse.SUPPRESS, help=f.metadata["help"])
            continue
        types = typing.get_args(hints[f.name]) or (hints[f.name],)  # `int | None` -> int
        help = f.metadata["help"] + (f" (default: {f.default})" if f.default is not None
                                     and "default" not in f.metadata["help"] else "")
        metavar = None if "choices" in f.metadata["options"] else flag[2:].upper().replace("-", "_")
        to.add_argument(flag, dest=f.name, type=next((t for t in (int, float, str) if t in types), str),
                        default=argparse.SUPPRESS, metavar=metavar, help=help, **f.metadata["options"])


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
    if _dist_env()[0] == 0:
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
        try:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
        except Exception:
            pass
    return code


if __name__ == "__main__":
    sys.exit(main())
