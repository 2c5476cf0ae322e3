"""Training a GPT on text: AdamW, warmup + cosine learning rate, checkpoints that resume exactly,
and DDP under ``torchrun`` (book chapter "Training a GPT").

>>> history = train("mini", "tinyshakespeare", tokenizer="bpe:2048", steps=200, out_dir="runs/mini")  # doctest: +SKIP
>>> history.val_loss[-1]                                                                               # doctest: +SKIP

One entry point works in a notebook, from ``gptlearn train`` and under
``torchrun --nproc_per_node=N -m gptlearn.train ...`` (one process per device, DDP). Every setting of a
run is a field of :class:`TrainConfig`, which also builds the command line's flags.
A run writes to ``out_dir`` a model folder ``GPT.from_pretrained(out_dir)`` loads (Hugging Face
layout) and ``trainer_state.pt`` (model, optimizer, step, every RNG state, history) for ``resume=True``.

Legend: B batch, T tokens, C n_embd, H n_head, hs head size, V vocab, L layers.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import numbers
import os
import random
import sys
import tempfile
import time
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .atomic import recover_folder, write_folder
from .config import PRESETS, GPTConfig
from .data import TokenDataset, load_text, split_text
from .errors import GptlearnError
from .model import GPT, sinusoidal_positions
from .tokenizers import BPETokenizer, CharTokenizer, Tokenizer, TokenizerLike, load_tokenizer

__all__ = [
    # the settings and the result of a run
    "TrainConfig", "TrainHistory", "STATE_FILE",
    # its pure pieces
    "lr_at", "param_groups", "make_optimizer", "load_tokenizer_spec",
    # the run, and its command line
    "train", "add_arguments", "register_cli", "main",
]

STATE_FILE = "trainer_state.pt"


# ---- the settings of a run: one dataclass, from which the command line is built ----------------------
POS_INITS = ("normal", "sinusoidal")


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
        None, "output folder (model + trainer_state.pt)", flag="--out", required=True)
    tokenizer: str | os.PathLike | TokenizerLike | None = _setting(None, "gpt2 (default), bpe:N, char, or a folder")
    steps: int = _setting(1000, "optimizer steps in all (a resumed run counts its earlier ones)")
    batch_size: int = _setting(32, "sequences a step, per process")
    block_size: int | None = _setting(None, "tokens per sequence (default: the context)")
    lr: float = _setting(1e-3, "peak learning rate, reached after the warm-up")
    min_lr: float | None = _setting(None, "end of the cosine (default lr/10)")
    warmup: int = _setting(100, "steps of linear warm-up")
    weight_decay: float = _setting(0.1, "AdamW weight decay (matrices and embeddings only)")
    eval_every: int = _setting(100, "steps between evaluations (and checkpoints)")
    eval_iters: int = _setting(20, "batches averaged by each evaluation")
    grad_accum: int = _setting(1, "micro-batches whose gradients add up to one step")
    seed: int = _setting(1337, "seed of the initial weights, the batches and dropout")
    device: str | torch.device | None = _setting(None, "cpu, cuda, mps (default: the best available)")
    compile: bool = _setting(False, "torch.compile the model")
    resume: bool = _setting(False, "continue the run in --out")
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
        """Refuse a setting that cannot work, in one line naming it (:class:`GptlearnError`); returns self."""

        def fail(name: str, rule: str) -> None:
            raise GptlearnError(f"{name} must be {rule}, got {getattr(self, name)!r}")

        def is_int(x: Any) -> bool:
            return isinstance(x, numbers.Integral) and not isinstance(x, bool)

        def is_number(x: Any) -> bool:
            return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)

        for name in ("steps", "batch_size", "grad_accum", "eval_every", "eval_iters"):
            if not is_int(getattr(self, name)) or getattr(self, name) <= 0:
                fail(name, "a positive integer")
        for name in ("block_size", "save_every"):
            if getattr(self, name) is not None and (not is_int(getattr(self, name)) or getattr(self, name) <= 0):
                fail(name, "a positive integer or None")
        for name in ("warmup", "sample_tokens"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                fail(name, "an integer, 0 or more")
        if not is_int(self.seed) or not 0 <= self.seed < 2**32:
            fail("seed", "an integer from 0 to 2**32 - 1")
        if not is_number(self.lr) or self.lr <= 0:
            fail("lr", "a positive number")
        if self.min_lr is not None and (not is_number(self.min_lr) or self.min_lr < 0):
            fail("min_lr", "a number, 0 or more (or None for lr/10)")
        for name in ("weight_decay", "grad_clip"):
            if not is_number(getattr(self, name)) or getattr(self, name) < 0:
                fail(name, "a number, 0 or more")
        if len(self.betas) != 2 or not all(is_number(b) and 0 <= b < 1 for b in self.betas):
            fail("betas", "two numbers in [0, 1)")
        for name in ("repeat_frac", "induction_frac"):
            if not is_number(getattr(self, name)) or not 0 <= getattr(self, name) <= 1:
                fail(name, "a fraction from 0 to 1")
        if not is_number(self.val_fraction) or not 0 <= self.val_fraction < 1:
            fail("val_fraction", "a fraction from 0 up to (not including) 1")
        if self.pos_init not in POS_INITS:
            fail("pos_init", " or ".join(map(repr, POS_INITS)))
        return self

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainConfig:
        """The settings parsed by a parser that :meth:`add_arguments` built."""
        given = vars(args)
        return cls(**{f.name: given[f.name] for f in fields(cls) if f.name in given})


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
    if not isinstance(spec, (str, os.PathLike)):
        return spec
    s = str(spec)
    if s == "gpt2":
        return Tokenizer.gpt2()
    if s.startswith("bpe:"):
        try:
            n = int(s[4:])
        except ValueError:
            raise GptlearnError(f"tokenizer {s!r}: write bpe:N with N the vocabulary size, e.g. bpe:2048") from None
        if n < 257:
            raise GptlearnError(f"tokenizer {s!r}: N must be at least 257 (256 bytes + <|endoftext|>)")
        return Tokenizer.from_bpe(BPETokenizer.train(train_text or "", n))
    if s == "char":
        return CharTokenizer.from_text(train_text or "")
    path = Path(s).expanduser()
    if path.is_dir():
        try:
            return load_tokenizer(path)
        except FileNotFoundError as e:
            raise GptlearnError(str(e)) from None
    raise GptlearnError(f"unknown tokenizer {s!r}; use gpt2, bpe:N, char or a folder with tokenizer files")


# ---- distributed helpers ----------------------------------------------------------------------------
def _dist_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment; (0, 0, 1) otherwise."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"])
    return 0, 0, 1


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


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as e:
        raise GptlearnError(f"cannot write to the output folder {out_dir} ({e.strerror or e}); "
                            "choose another --out") from None


# ---- the training loop -------------------------------------------------------------------------------
def _build_model(config_or_model, init, tokenizer_spec, train_text: str, *, block_size: int | None,
                 seed: int, pos_init: str = "normal", pos_init_std: float = 0.05) -> tuple[GPT, Any]:
    if init is not None:
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
    if config_or_model is None:
        config_or_model = "mini"
    if isinstance(config_or_model, str):
        config = GPTConfig.from_preset(config_or_model)
    elif isinstance(config_or_model, GPTConfig):
        config = config_or_model
    else:
        raise TypeError(f"train() takes a GPTConfig, a preset name or a GPT, got {type(config_or_model).__name__}")
    tok = load_tokenizer_spec(tokenizer_spec if tokenizer_spec is not None else "gpt2", train_text)
    eot = tok.eot_token if tok.eot_token is not None else 0
    changes: dict[str, Any] = {"vocab_size": tok.vocab_size, "bos_token_id": eot, "eos_token_id": eot}
    if block_size is not None and block_size > config.n_positions:
        changes["n_positions"] = block_size
    config = config.replace(**changes)
    torch.manual_seed(seed)  # the same initial weights on every rank
    model = GPT(config)
    if pos_init == "sinusoidal":
        with torch.no_grad():
            pe = sinusoidal_positions(config.n_positions, config.n_embd)  # (n_positions, C)
            model.wpe.weight.copy_(pe * (pos_init_std / pe.std()))
    elif pos_init != "normal":
        raise GptlearnError(f"pos_init must be 'normal' or 'sinusoidal', got {pos_init!r}")
    model.tokenizer = tok
    return model, tok


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
    With ``out_dir``, a checkpoint (the model folder with ``trainer_state.pt``, replaced as a whole) is
    written at every eval (or every ``save_every`` steps), at the end, and on Ctrl-C; ``resume=True``
    continues from ``out_dir/trainer_state.pt`` exactly where it stopped.
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
    from .devices import autocast, resolve_device
    from .fast.memory import keep_freed_memory

    dev = resolve_device(device)
    if dev.type == "cpu":
        keep_freed_memory()  # large tensors reuse freed memory instead of fresh pages (see its docstring)
    if dev.type == "cuda" and dev.index is None and ddp:
        dev = torch.device("cuda", local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    master = rank == 0
    out = Path(args.out_dir).expanduser() if args.out_dir is not None else None
    if out is not None and master:
        recover_folder(out)  # a checkpoint killed half-way: finish or undo it
        _check_writable(out)
    if args.resume and (out is None or not (out / STATE_FILE).is_file()):
        raise GptlearnError(f"nothing to resume: {out}/{STATE_FILE} does not exist; drop --resume to start a new run")
    min_lr = args.lr / 10 if args.min_lr is None else args.min_lr

    # 1. data and model (on resume the tokenizer comes from the checkpoint folder)
    tokenizer, init = args.tokenizer, args.init
    if data is None:
        raise GptlearnError("no training data: pass a text file, a folder of .txt files or 'tinyshakespeare'")
    if isinstance(data, TokenDataset):
        dataset, text = data, None
        if tokenizer is None:
            tokenizer = data.tokenizer
    else:
        text = load_text(data)
    if args.resume:
        tokenizer = load_tokenizer_spec(out, None)
        state = torch.load(out / STATE_FILE, map_location="cpu", weights_only=False)
        if not isinstance(config_or_model, GPT):
            config_or_model, init = GPTConfig.from_hf_dict(state["config"]), None
    train_text = split_text(text, args.val_fraction)[0] if text is not None else None
    if isinstance(tokenizer, str) and (tokenizer.startswith("bpe:") or tokenizer == "char") and train_text is None:
        raise GptlearnError(f"tokenizer {tokenizer!r} is learned from text; pass the text, not a TokenDataset")
    model, tok = _build_model(config_or_model, init, tokenizer, train_text or "", block_size=args.block_size,
                              seed=args.seed, pos_init=args.pos_init)
    if text is not None:
        dataset = TokenDataset(text, tok, val_fraction=args.val_fraction)
    block_size = args.block_size or model.config.n_positions
    if block_size > model.config.n_positions:
        raise GptlearnError(f"block size {block_size} is longer than the model's context "
                            f"({model.config.n_positions}); use --block-size {model.config.n_positions} or less")
    dataset.check_block_size(block_size)
    model.config.check_fits(batch_size=args.batch_size, block_size=block_size, training=True)
    has_val = len(dataset.splits["val"]) >= block_size + 1
    model.to(dev)
    optimizer = make_optimizer(model, lr=args.lr, weight_decay=args.weight_decay, betas=args.betas)
    history = TrainHistory()
    data_gen = torch.Generator().manual_seed(args.seed + rank)  # each rank its own batches
    torch.manual_seed(args.seed + rank)  # dropout
    np.random.seed(args.seed + rank)
    random.seed(args.seed + rank)
    start = 0
    if args.resume:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        history = TrainHistory(**state["history"])
        if rank < len(state["rng"]):
            _set_rng_state(state["rng"][rank], data_gen)
        else:  # a run resumed with more processes: fresh, distinct streams for the new ranks
            data_gen.manual_seed(args.seed + rank + 1_000_003 * start)
        if start >= args.steps and master:
            print(f"the run in {out} already finished {start} steps; raise --steps to train longer")

    raw = model
    fwd = torch.compile(model) if args.compile else model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        fwd = DDP(fwd, device_ids=[dev.index] if dev.type == "cuda" else None)

    def save(step: int, rng: dict[str, Any]) -> None:
        """The model folder with trainer_state.pt in it, replaced as one; resume reads trainer_state.pt."""
        if out is None:
            return
        rngs = [rng]
        if ddp:
            import torch.distributed as dist

            rngs = [None] * world
            dist.all_gather_object(rngs, rng)
        if master:
            trainer_state = {"model": {k: v.detach().cpu() for k, v in raw.state_dict().items()},
                             "optimizer": optimizer.state_dict(), "step": step, "rng": rngs,
                             "history": history.to_dict(), "config": raw.config.to_hf_dict(),
                             "args": {"lr": args.lr, "min_lr": min_lr, "warmup": args.warmup, "steps": args.steps,
                                      "batch_size": args.batch_size, "block_size": block_size, "seed": args.seed,
                                      "grad_accum": args.grad_accum}}

            def write(tmp: Path) -> None:
                raw.save_pretrained(tmp)
                torch.save(trainer_state, tmp / STATE_FILE)

            write_folder(out, write, owns=(STATE_FILE,))
        if ddp:
            dist.barrier()  # no rank goes on (or writes into the folder) while rank 0 swaps it

    @torch.no_grad()
    def evaluate(step: int) -> tuple[float, float | None, str]:
        raw.eval()
        gen = torch.Generator().manual_seed(args.seed + 7919 * step)  # eval never touches the training streams
        losses = {}
        for split in ("train", "val") if has_val else ("train",):
            total = 0.0
            for _ in range(args.eval_iters):
                x, y = dataset.get_batch(split, args.batch_size, block_size, gen)
                with autocast(dev):
                    total += raw.loss(x.to(dev), y.to(dev)).item()
            losses[split] = total / args.eval_iters
        sample = ""
        if args.sample_tokens > 0 and master:
            try:
                prompt = tok.encode(args.sample_prompt) or [tok.eot_token or 0]
                ids = raw.generate(torch.tensor([prompt], device=dev), args.sample_tokens, top_k=40,
                                   seed=args.seed + step)
                sample = tok.decode(ids[0].tolist())
            except Exception as e:  # a sample is a nicety; never let it stop training
                sample = f"<no sample: {e}>"
        raw.train()
        return losses["train"], losses.get("val"), sample

    bar = None
    if args.progress and master:
        from tqdm.auto import tqdm

        bar = tqdm(total=args.steps, initial=start, desc="train", dynamic_ncols=True)
    save_every = args.save_every or args.eval_every
    tokens_per_step = args.batch_size * block_size * args.grad_accum * world
    last_good = start if args.resume else None
    raw.train()
    step = start
    rng_at_step_start = _rng_state(data_gen)
    try:
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
                ctx = fwd.no_sync() if not sync else _null()
                with ctx:
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
                where = (f"the last good checkpoint (step {last_good}) is in {out}" if out is not None and last_good
                         else "no checkpoint was written")
                raise GptlearnError(f"the loss became {loss_value} at step {step + 1}; training stopped and {where}; "
                                    "lower --lr or check the data")
            if args.grad_clip:
                torch.nn.utils.clip_grad_norm_(raw.parameters(), args.grad_clip)
            optimizer.step()
            step += 1
            rng_at_step_start = _rng_state(data_gen)  # what a checkpoint of `step` finished steps holds
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            tps = tokens_per_step / max(time.perf_counter() - t0, 1e-9)
            history.step.append(step)
            history.train_loss.append(loss_value)
            history.lr.append(lr_now)
            history.tokens_per_sec.append(tps)
            history.val_loss.append(None)
            history.eval_train_loss.append(None)
            history.samples.append(None)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr_now:.2e}", tok_s=f"{tps:,.0f}")
            if step % args.eval_every == 0 or step == args.steps:
                tr, va, sample = evaluate(step)
                history.eval_train_loss[-1], history.val_loss[-1], history.samples[-1] = tr, va, sample
                if master:
                    msg = f"step {step}: train loss {tr:.4f}" + (f", val loss {va:.4f}" if va is not None else "")
                    (bar.write if bar is not None else print)(msg + (f"\n{sample!r}" if sample else ""))
                if callback is not None:
                    callback("eval", history)
            if step % save_every == 0 or step == args.steps:
                save(step, rng_at_step_start)
                last_good = step
            if callback is not None:
                callback("step", history)
    except KeyboardInterrupt:
        # the weights are those after `step` finished steps; the RNG streams are rewound to that point
        save(step, rng_at_step_start)
        if master:
            print(f"\ninterrupted at step {step}; a checkpoint is in {out} (continue with --resume)"
                  if out is not None else f"\ninterrupted at step {step}", file=sys.stderr)
        raise
    finally:
        if bar is not None:
            bar.close()
    return history


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


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
        if hints[f.name] is bool:  # a switch: --compile turns a False default on, --no-progress a True one off
            to.add_argument(flag, dest=f.name, action="store_false" if f.default else "store_true",
                            help=f.metadata["help"])
            continue
        types = typing.get_args(hints[f.name]) or (hints[f.name],)  # `int | None` -> int
        help = f.metadata["help"] + (f" (default: {f.default})" if f.default is not None
                                     and "default" not in f.metadata["help"] else "")
        metavar = None if "choices" in f.metadata["options"] else flag[2:].upper().replace("-", "_")
        to.add_argument(flag, dest=f.name, type=next((t for t in (int, float, str) if t in types), str),
                        default=f.default, metavar=metavar, help=help, **f.metadata["options"])


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
    if args.init and args.config:
        raise GptlearnError("--config changes a fresh model's shape; it cannot be combined with --init")
    config = None if args.init else _config_from_args(args)
    settings = TrainConfig.from_args(args)
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
    except (GptlearnError, ValueError, FileNotFoundError, OSError, UnicodeDecodeError) as e:
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
