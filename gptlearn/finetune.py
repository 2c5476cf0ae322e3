"""Fine-tuning a GPT to classify sentences (book chapter "Adapting a model").

A :class:`Classifier` is a GPT, a pooling of its hidden states into one vector per sentence (the last
token's, the only one that has read the whole sentence, or the mean of all of them: chapter 8's
:func:`~gptlearn.embeddings.pool`) and a linear head from that vector to one score per label.
:func:`finetune` trains it one of four ways, which differ only in what may change:

==============  ==========================================================================
method          what trains
==============  ==========================================================================
``probe``       the head only, on features computed once from the frozen model
``last_block``  the last block, the final LayerNorm and the head
``full``        everything
``lora``        the head and low-rank adapters on ``c_attn`` and ``c_fc`` (:mod:`gptlearn.lora`)
==============  ==========================================================================

Data comes as TSV files with a header ``sentence<TAB>label`` (GLUE SST-2's layout; labels are any
strings) or as (sentence, label) pairs. A run writes to ``out_dir`` a folder that
:meth:`Classifier.from_pretrained` loads: the model (Hugging Face layout, unmerged), ``classifier.json``
(the labels, the base model, the pooling, the LoRA settings) and ``classifier.safetensors`` (the head
and the adapters), plus the trainer state every trainer writes (:mod:`gptlearn.checkpoint`:
``trainer_state.json``/``.safetensors``, the epoch, the history, AdamW's moments, checked field by field when
read) so that ``resume=True`` continues it. Nothing is pickled, every folder is written atomically
(:mod:`gptlearn.atomic`), and a save happens only when every weight and moment is finite.

>>> result = finetune("train.tsv", "dev.tsv", out_dir="runs/topics", lora_rank=8)   # doctest: +SKIP
>>> Classifier.from_pretrained("runs/topics").predict(["The cat purred."])        # doctest: +SKIP
[{'label': 'animals', 'scores': {'animals': 0.91, 'food': 0.09}}]

Legend: B batch, T tokens, C n_embd, K labels.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import json
import math
import os
import time
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint
from .checkpoint import STATE_FILE, STATE_FILES
from .checks import non_finite, shown
from .embeddings import POOLING, Embedder
from .names import OFFLINE_MODEL
from .errors import GptlearnError, InvalidFileError, InvalidTypeError, InvalidValueError, MissingFileError
from .lora import add_lora, check_rank, lora_layers, merge_lora
from .model import GPT
from .safeio import read_json
from .atomic import recover_folder, write_folder
from .folders import check_folder, check_name, kind_of
from .devices import check_duration, resolve_device
from .pretrained import load_weights_file, save_pretrained

__all__ = ["METHODS", "CLASSIFIER_FILE", "HEAD_FILE", "FinetuneConfig", "FinetuneResult", "Classifier",
           "read_tsv", "wordnet_glosses", "load_glosses", "GLOSS_TOPICS", "is_classifier_folder",
           "trainable_parameters", "finetune", "register_cli"]

METHODS = ("probe", "last_block", "full", "lora")
CLASSIFIER_FILE = "classifier.json"  # labels, base model, pooling, LoRA settings
HEAD_FILE = "classifier.safetensors"  # the head, and the LoRA adapters (unmerged)
TRAINER = "finetune"  # the trainer state (gptlearn/checkpoint.py) of a run says which trainer wrote it
FORMAT, VERSION = "gptlearn classifier", 1


# ---- data ------------------------------------------------------------------------------------------
def read_tsv(path: str | os.PathLike, *, known_labels: Sequence[str] | None = None,
             known_from: str | None = None) -> tuple[list[str], list[str]]:
    """The sentences and labels of a TSV file whose first line is ``sentence<TAB>label``.

    Every other non-blank line holds a sentence, a tab and a label. A missing header, a line without
    a label, an empty sentence or (with ``known_labels``) a label the training file lacks is an
    :class:`~gptlearn.errors.InvalidFileError` naming the file and the line.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise MissingFileError(f"{path}: cannot read it ({e.strerror or e}); pass a TSV file with a "
                               "sentence<TAB>label header") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise InvalidFileError(f"{path}, line {line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save the file "
                               "as UTF-8") from None
    lines = text.splitlines()
    header = [h.strip().lower() for h in lines[0].split("\t")] if lines else []
    if header != ["sentence", "label"]:
        got = repr(lines[0][:60]) if lines else "an empty file"
        raise InvalidFileError(f"{path}, line 1: the first line must be the header sentence<TAB>label, got {got}; "
                               "add that header (GLUE SST-2's layout)")
    sentences, labels = [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        where = f"{path}, line {number}"
        if len(parts) < 2 or not parts[1].strip():
            raise InvalidFileError(f"{where}: no label; each line is a sentence, a tab and a label")
        if len(parts) > 2:
            raise InvalidFileError(f"{where}: {len(parts)} tab-separated fields where 2 belong (sentence, label); "
                                   "remove the extra tabs")
        sentence, label = parts[0].strip(), parts[1].strip()
        if not sentence:
            raise InvalidFileError(f"{where}: the sentence is empty; give each label a sentence")
        if known_labels is not None and label not in known_labels:
            raise InvalidFileError(f"{where}: the label {label!r} is not among the training file's labels "
                                   f"({', '.join(sorted(known_labels))}){' in ' + known_from if known_from else ''}; "
                                   "a classifier can only predict labels it was trained on")
        sentences.append(sentence)
        labels.append(label)
    if not sentences:
        raise InvalidFileError(f"{path}, line {len(lines) + 1}: no sentences after the header; add lines "
                               "sentence<TAB>label")
    return sentences, labels


def _pairs(data: Any, what: str, known: Sequence[str] | None = None,
           known_from: str | None = None) -> tuple[list[str], list[str]]:
    """A TSV path or a sequence of (sentence, label) pairs -> sentences, labels, checked alike."""
    if isinstance(data, (str, os.PathLike)):
        return read_tsv(data, known_labels=known, known_from=known_from)
    if not isinstance(data, Sequence):
        raise InvalidTypeError(f"{what} must be a TSV path or a list of (sentence, label) pairs, "
                               f"got {type(data).__name__}")
    sentences, labels = [], []
    for i, pair in enumerate(data):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise InvalidTypeError(f"{what}[{i}] must be a (sentence, label) pair of strings, got {pair!r:.60}")
        sentence, label = pair[0].strip(), pair[1].strip()
        if not sentence or not label:
            raise InvalidValueError(f"{what}[{i}]: the {'sentence' if not sentence else 'label'} is empty")
        if known is not None and label not in known:
            raise InvalidValueError(f"{what}[{i}]: the label {label!r} is not among the training labels "
                                    f"({', '.join(sorted(known))})")
        sentences.append(sentence)
        labels.append(label)
    if not sentences:
        raise InvalidValueError(f"{what} holds no examples")
    return sentences, labels


# WordNet's lexicographer files (lexnames(5WN)): the second field of a synset's line in data.noun/data.verb
GLOSS_TOPICS = {5: "noun.animal", 8: "noun.body", 13: "noun.food", 18: "noun.person", 20: "noun.plant",
                38: "verb.motion"}
GLOSS_FILES = {"train": "wordnet-glosses-train.tsv", "test": "wordnet-glosses-test.tsv"}


def wordnet_glosses(folder: str | os.PathLike = "/usr/share/wordnet", *, per_label: int = 60, test: int = 20,
                    seed: int = 0) -> dict[str, list[tuple[str, str]]]:
    """A topic-classification task from WordNet 3.0: each synset's definition (its gloss without the
    examples) labelled by its lexicographer file (``noun.animal``, ``verb.motion``, ...; :data:`GLOSS_TOPICS`).
    ``per_label`` definitions of 4 to 16 words a label, drawn with ``seed``; the first ``test`` of each
    label go to ``"test"``, the rest to ``"train"``. ``folder`` holds ``data.noun`` and ``data.verb``
    (Debian's wordnet-base); :func:`load_glosses` reads the copy shipped with gptlearn.
    """
    import random

    folder = Path(folder)
    by_label: dict[str, list[str]] = {name: [] for name in GLOSS_TOPICS.values()}
    for pos in ("noun", "verb"):
        path = folder / f"data.{pos}"
        if not path.is_file():
            raise MissingFileError(f"{path} is missing; install WordNet (Debian: apt-get install wordnet-base) or "
                                   "use load_glosses(), the copy shipped with gptlearn")
        for line in path.read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or " | " not in line:  # the licence at the top of the file
                continue
            label = GLOSS_TOPICS.get(int(line.split(" ", 2)[1]))
            gloss = line.split(" | ", 1)[1].split('; "', 1)[0].strip().rstrip(";").strip()
            if label is not None and 4 <= len(gloss.split()) <= 16 and "\t" not in gloss:
                by_label[label].append(gloss)
    rng = random.Random(seed)
    out: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    for label, glosses in by_label.items():
        picked = rng.sample(sorted(set(glosses)), per_label)
        out["test"] += [(g, label) for g in picked[:test]]
        out["train"] += [(g, label) for g in picked[test:]]
    return out


def load_glosses(split: str = "train") -> list[tuple[str, str]]:
    """The WordNet definitions shipped with gptlearn (:func:`wordnet_glosses` with its defaults): 40 a label
    in ``"train"``, 20 in ``"test"``; WordNet 3.0's licence is in ``assets/data/WORDNET-LICENSE.txt``."""
    if split not in GLOSS_FILES:
        raise InvalidValueError(f"split must be one of {', '.join(GLOSS_FILES)}, got {split!r}")
    sentences, labels = read_tsv(Path(__file__).parent / "assets" / "data" / GLOSS_FILES[split])
    return list(zip(sentences, labels))


# ---- the classifier ---------------------------------------------------------------------------------
class Classifier(nn.Module):
    """A GPT with a linear head on one pooled vector per sentence: sentences -> one score per label.

    Args:
        model: the :class:`~gptlearn.GPT` to read the sentences.
        labels: the label names, in the order of the head's outputs.
        pooling: how the tokens' vectors become one: ``"last"`` (the last token, which has read the whole
            sentence) or ``"mean"`` (chapter 8's choice), or any of :data:`~gptlearn.embeddings.POOLING`.
        layer: whose hidden states to pool (-1: after the final LayerNorm).
        max_length: longer sentences keep their first tokens (default: the model's context).
        base_model: the name or folder the model came from, recorded when saved.
    """

    def __init__(self, model: GPT, labels: Sequence[str], *, pooling: str = "mean", layer: int = -1,
                 max_length: int | None = None, base_model: str | None = None) -> None:
        super().__init__()
        labels = list(labels)
        if len(labels) < 2 or not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels):
            raise InvalidValueError(f"labels must be two or more distinct, non-empty strings, got {labels!r:.100}")
        self.embedder = Embedder(model, pooling=pooling, layer=layer, max_length=max_length)
        self.labels = labels
        self.head = nn.Linear(model.config.n_embd, len(labels), device=model.device)  # (C,) -> (K,)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.base_model = base_model or model.name_or_path
        self.train(model.training)

    @property
    def model(self) -> GPT:
        return self.embedder.model

    @property
    def pooling(self) -> str:
        return self.embedder.pooling

    @property
    def device(self) -> torch.device:
        return self.model.device

    def features(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """Token-id rows -> the pooled vector of each, (B, C)."""
        return self.embedder.embed_tokens(rows)  # (B, C)

    def logits(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """Token-id rows -> one score per label, (B, K)."""
        return self.head(self.features(rows))  # (B, C) -> (B, K)

    def forward(self, sentences: Sequence[str]) -> torch.Tensor:
        """Sentences -> logits (B, K), with gradients (for training)."""
        return self.logits(self.embedder.tokenize(sentences))

    @torch.inference_mode()
    def probabilities(self, sentences: Sequence[str], *, batch_size: int = 32) -> torch.Tensor:
        """Sentences -> the softmax over the labels, (N, K), without gradients, in eval mode."""
        rows = self.embedder.tokenize(sentences)
        was_training = self.training
        self.eval()
        try:
            out = [F.softmax(self.logits(rows[i:i + batch_size]).float(), dim=-1)
                   for i in range(0, len(rows), batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(out) if out else torch.empty(0, len(self.labels))  # (N, K)

    def predict(self, sentences: str | Sequence[str], *, batch_size: int = 32) -> list[dict[str, Any]]:
        """Each sentence's most likely label and every label's probability, as ``gptlearn classify`` prints
        them: ``{"label": ..., "scores": {label: p, ...}}``. One str gives a list of one."""
        if isinstance(sentences, str):
            sentences = [sentences]
        probs = self.probabilities(sentences, batch_size=batch_size)  # (N, K)
        if not probs.isfinite().all():
            raise GptlearnError("the classifier's scores are NaN or infinite; load a classifier that trained "
                                "without diverging")
        return [{"label": self.labels[int(p.argmax())], "scores": {k: float(v) for k, v in zip(self.labels, p)}}
                for p in probs]

    # ---- saving and loading -----------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """What ``classifier.json`` records (besides the format)."""
        adapters = lora_layers(self.model)
        first = next(iter(adapters.values()), None)
        lora = None if first is None else {
            "rank": first.rank, "alpha": first.alpha,
            "targets": sorted({name.rsplit(".", 1)[-1] for name in adapters})}
        return {"labels": self.labels, "base_model": None if self.base_model is None else str(self.base_model),
                "pooling": self.pooling, "layer": self.embedder.layer, "max_length": self.embedder.max_length,
                "lora": lora}

    def _head_tensors(self) -> dict[str, torch.Tensor]:
        state = {f"head.{k}": v for k, v in self.head.state_dict().items()}
        for name, adapter in lora_layers(self.model).items():
            state[f"{name}.lora_A"], state[f"{name}.lora_B"] = adapter.lora_A, adapter.lora_B
        return {k: v.detach().cpu().contiguous() for k, v in state.items()}

    def save_pretrained(self, directory: str | os.PathLike, *, extra: dict[str, Any] | None = None,
                        write_more=None, kind: str = "model", overwrite: bool = False) -> Path:
        """Write the classifier as one folder (atomically): the model in Hugging Face's layout (without the
        LoRA adapters), ``classifier.json`` and ``classifier.safetensors`` (the head and the adapters).
        Refused if a weight is NaN or infinite, so a good folder is never replaced by a diverged one, and
        refused (:mod:`gptlearn.folders`) for a folder gptlearn did not write as a ``kind`` (a model; a
        fine-tuning run saves a "run") unless ``overwrite``."""
        from safetensors.torch import save_file

        bad = non_finite(self)
        if bad is not None:
            raise GptlearnError(f"the classifier holds NaN or infinity ({bad}), so it was not saved; lower the "
                                "learning rate")
        directory = Path(directory)
        meta = {"format": FORMAT, "version": VERSION, **self.settings(), **(extra or {})}
        tensors = self._head_tensors()

        def write(tmp: Path) -> None:
            with _adapters_removed(self.model):
                save_pretrained(self.model, tmp)
            save_file(tensors, str(tmp / HEAD_FILE), metadata={"format": "pt"})
            (tmp / CLASSIFIER_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
            if write_more is not None:
                write_more(tmp)

        write_folder(directory, write, owns=(CLASSIFIER_FILE, HEAD_FILE, *STATE_FILES), kind=kind,
                     overwrite=overwrite)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, device: str | torch.device | None = None,
                        merge: bool = True) -> "Classifier":
        """Load a folder written by :meth:`save_pretrained` (or by ``gptlearn finetune``). ``merge=True``
        folds LoRA adapters into the weights (same outputs, faster); ``merge=False`` keeps them apart
        (to train them further). A language model's folder is refused: it has no head."""

        folder = recover_folder(Path(directory).expanduser())
        meta = read_classifier_json(folder, directory)
        model = GPT.from_pretrained(folder, device=device)
        if meta["lora"] is not None:
            add_lora(model, meta["lora"]["rank"], meta["lora"]["alpha"], targets=meta["lora"]["targets"])
        clf = cls(model, meta["labels"], pooling=meta["pooling"], layer=meta["layer"],
                  max_length=meta["max_length"], base_model=meta["base_model"])
        weights = folder / HEAD_FILE
        if not weights.is_file():
            raise MissingFileError(f"{folder} has {CLASSIFIER_FILE} but not {HEAD_FILE}; save the classifier again")
        state = load_weights_file(weights)
        want = {k: v.shape for k, v in clf._head_tensors().items()}
        got = {k: v.shape for k, v in state.items()}
        if want != got:
            diff = sorted(set(want.items()) ^ set(got.items()))[:3]
            raise InvalidFileError(f"{weights} does not match {CLASSIFIER_FILE} (e.g. {diff}); save the classifier "
                                   "again")
        with torch.no_grad():
            clf.head.weight.copy_(state["head.weight"])
            clf.head.bias.copy_(state["head.bias"])
            for name, adapter in lora_layers(model).items():
                adapter.lora_A.copy_(state[f"{name}.lora_A"])
                adapter.lora_B.copy_(state[f"{name}.lora_B"])
        if merge:
            merge_lora(model)
        clf.requires_grad_(True)
        return clf.eval()

    def extra_repr(self) -> str:
        return f"labels={self.labels!r:.80}, pooling={self.pooling!r}"


@contextlib.contextmanager
def _adapters_removed(model: nn.Module) -> Iterator[None]:
    """Put each LoRALinear's base layer back in its place for a while (to save the model as plain GPT-2)."""
    adapters = lora_layers(model)
    for name, adapter in adapters.items():
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, adapter.base)
    try:
        yield
    finally:
        for name, adapter in adapters.items():
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, adapter)


def is_classifier_folder(name_or_path: str | os.PathLike) -> bool:
    """Whether ``name_or_path`` is a folder holding a classifier (``classifier.json``)."""
    try:
        return (Path(name_or_path).expanduser() / CLASSIFIER_FILE).is_file()
    except (OSError, ValueError):
        return False


def read_classifier_json(folder: Path, given: Any = None) -> dict[str, Any]:
    """``classifier.json`` of ``folder``, every field checked; a folder without one is a language model."""
    path = folder / CLASSIFIER_FILE
    if not path.is_file():
        raise InvalidValueError(f"{given if given is not None else folder} is a language model, not a classifier "
                                f"(it has no {CLASSIFIER_FILE}); train one with gptlearn finetune, or pass the "
                                "folder it wrote")
    what = "a valid classifier.json"
    meta = read_json(path, what)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InvalidFileError(f"{path} is not {what}: its format is not {FORMAT!r}; save the classifier again")
    rules = {
        "labels": ("two or more distinct strings", lambda v: isinstance(v, list) and len(v) >= 2
                   and all(isinstance(x, str) and x for x in v) and len(set(v)) == len(v)),
        "pooling": (f"one of {', '.join(POOLING)}", lambda v: v in POOLING),
        "layer": ("an integer, -1 or more", lambda v: type(v) is int and v >= -1),
        "max_length": ("a positive integer", lambda v: type(v) is int and v >= 1),
        "base_model": ("a string or null", lambda v: v is None or isinstance(v, str)),
        "lora": ("null or {rank, alpha, targets}", lambda v: v is None or (
            isinstance(v, dict) and type(v.get("rank")) is int and v["rank"] >= 1
            and isinstance(v.get("alpha"), (int, float)) and not isinstance(v["alpha"], bool)
            and math.isfinite(v["alpha"]) and v["alpha"] > 0
            and isinstance(v.get("targets"), list) and v["targets"] and all(isinstance(t, str) for t in v["targets"]))),
    }
    for key, (rule, ok) in rules.items():
        if key not in meta or not ok(meta[key]):
            shown = json.dumps(meta.get(key), ensure_ascii=False)[:60] if key in meta else "nothing"
            raise InvalidFileError(f"{path} is not {what}: {key} must be {rule}, got {shown}")
    return meta


def trainable_parameters(module: nn.Module) -> int:
    """How many numbers an optimizer would change (parameters with ``requires_grad``), tied ones once."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ---- the settings of a run --------------------------------------------------------------------------
def _setting(default: Any, help: str, *, flag: str | None = None, cli: bool = True, **options: Any) -> Any:
    """A :class:`FinetuneConfig` field and its command-line flag (``flag`` replaces ``--field-name``;
    ``cli=False`` keeps it off the command line; ``options`` go to ``add_argument``)."""
    return field(default=default, metadata={"help": help, "flag": flag, "cli": cli, "options": options})


@dataclass
class FinetuneConfig:
    """Every setting of a fine-tuning run, with its one default: the keyword arguments of :func:`finetune`
    and the flags of ``gptlearn finetune`` (``lora_rank`` is ``--lora-rank``; ``out_dir`` is ``--out``).

    >>> FinetuneConfig(lora_rank=8).resolved_method()
    'lora'
    """

    model: str | os.PathLike = _setting(OFFLINE_MODEL, "the model to adapt: a name (gptlearn-mini, gpt2, ...) "
                                        "or a folder", flag="--model", metavar="NAME|DIR")
    out_dir: str | os.PathLike | None = _setting(None, "output folder (the classifier and its trainer state)",
                                                 flag="--out", required=True, metavar="DIR")
    method: str | None = _setting(None, "what trains: probe (the head), last_block, full, lora (default: lora "
                                  "with --lora-rank, else full)", choices=list(METHODS))
    lora_rank: int | None = _setting(None, "train LoRA adapters of this rank on each block's c_attn and c_fc (sets "
                                     "--method lora)", metavar="R")
    lora_alpha: float | None = _setting(None, "LoRA's scale is alpha/rank (default: 2 x rank)")
    lora_targets: tuple[str, ...] = _setting(("c_attn", "c_fc"), "the linear layers LoRA adapts", cli=False)
    pooling: str = _setting("mean", "one vector per sentence from its tokens: last or mean (or max, first, "
                            "weighted_mean)", choices=list(POOLING))
    epochs: int = _setting(20, "passes over the training file")
    batch_size: int = _setting(16, "sentences a step")
    lr: float | None = _setting(None, "peak learning rate (default: 1e-2 for probe and lora, else 1e-3)")
    weight_decay: float = _setting(0.0, "AdamW weight decay (matrices only)")
    seed: int = _setting(0, "seed of the head, the adapters, the order of examples and dropout")
    device: str | None = _setting(None, "cpu, cuda, mps (default: the best available)",
                                  choices=["auto", "cpu", "cuda", "mps"])
    resume: bool = _setting(False, "continue the run in --out (flags left out keep the run's values)")
    overwrite: bool = _setting(False, "replace the classifier in --out with a new one")
    progress: bool = _setting(True, "no progress bar", flag="--no-progress")
    max_days: float = _setting(30.0, "refuse a run estimated to take longer than this many days (the estimate is a "
                               "lower bound: it is for runs that cannot finish)")
    layer: int = _setting(-1, "which layer's hidden states to pool", cli=False)

    def replace(self, **changes: Any) -> FinetuneConfig:
        """A copy with ``changes``; an unknown name is a TypeError that suggests the nearest field."""
        names = [f.name for f in fields(self)]
        for name in changes:
            if name not in names:
                near = difflib.get_close_matches(name, names, n=1)
                raise InvalidTypeError(f"unknown fine-tuning setting {name!r}" +
                                       (f"; did you mean {near[0]!r}?" if near else ""))
        return dataclasses.replace(self, **changes)

    def resolved_method(self) -> str:
        return self.method or ("lora" if self.lora_rank is not None else "full")

    def resolved_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return {"probe": 1e-2, "lora": 1e-2}.get(self.resolved_method(), 1e-3)

    def validate(self) -> FinetuneConfig:
        """Refuse a setting that cannot work, in one line naming it (a flag's name on the command line)."""
        def bad(name: str, rule: str) -> GptlearnError:
            return InvalidValueError(f"{_flag(name)} must be {rule}, got {getattr(self, name)!r:.60}")

        def integer(v: Any, lo: int) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= lo

        def number(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        for name in ("epochs", "batch_size"):
            if not integer(getattr(self, name), 1):
                raise bad(name, "a positive integer")
        if not integer(self.seed, 0) or self.seed >= 2 ** 32:
            raise bad("seed", "an integer from 0 to 2**32 - 1")
        if self.lr is not None and not (number(self.lr) and self.lr > 0):
            raise bad("lr", "a positive number")
        if not (number(self.weight_decay) and self.weight_decay >= 0):
            raise bad("weight_decay", "a number, 0 or more")
        if not (number(self.max_days) and self.max_days > 0):
            raise bad("max_days", "a positive number of days")
        if self.method is not None and self.method not in METHODS:
            raise bad("method", " or ".join(METHODS))
        if self.lora_rank is not None and not integer(self.lora_rank, 1):
            raise bad("lora_rank", "a positive integer (the rank of each adapter)")
        if self.lora_rank is not None and self.method not in (None, "lora"):
            raise InvalidValueError(f"--lora-rank trains LoRA adapters, but --method is {self.method}; drop one")
        if self.lora_alpha is not None and not (number(self.lora_alpha) and self.lora_alpha > 0):
            raise bad("lora_alpha", "a positive number")
        if self.pooling not in POOLING:
            raise bad("pooling", " or ".join(POOLING))
        if self.resume and self.overwrite:
            raise InvalidValueError("--resume continues the run in --out and --overwrite replaces it; choose one")
        if self.out_dir is not None and not str(os.fspath(self.out_dir)).strip():
            raise bad("out_dir", "a folder")
        return self


def _flag(name: str) -> str:
    f = {f.name: f for f in fields(FinetuneConfig)}.get(name)
    return (f.metadata["flag"] if f is not None and f.metadata["flag"] else "--" + name.replace("_", "-"))


# what a resumed run may change; every other setting decides which steps it takes
RESUME_MAY_CHANGE = ("epochs", "device", "progress", "max_days", "out_dir", "resume", "overwrite")


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns: the trained classifier and what each epoch measured."""

    classifier: Classifier
    method: str
    trainable: int  # parameters the optimizer changed
    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    dev_accuracy: list[float | None] = field(default_factory=list)
    seconds: float = 0.0  # time spent training (this call)

    def history(self) -> dict[str, list]:
        return {"epoch": self.epoch, "train_loss": self.train_loss, "dev_accuracy": self.dev_accuracy}


# ---- training ----------------------------------------------------------------------------------------
def _prepare(clf: Classifier, method: str, cfg: FinetuneConfig) -> None:
    """Freeze what ``method`` keeps fixed; for ``lora``, add the adapters (their A from the seed)."""
    clf.requires_grad_(False)
    model = clf.model
    if method == "full":
        clf.requires_grad_(True)
    elif method == "last_block":
        for part in (model.blocks[-1], model.ln_f):
            part.requires_grad_(True)
    elif method == "lora" and not lora_layers(model):
        rank = cfg.lora_rank if cfg.lora_rank is not None else 8
        alpha = cfg.lora_alpha if cfg.lora_alpha is not None else 2.0 * rank
        add_lora(model, rank, alpha, targets=cfg.lora_targets)
    if method == "lora":
        for adapter in lora_layers(model).values():
            adapter.lora_A.requires_grad_(True)
            adapter.lora_B.requires_grad_(True)
    clf.head.requires_grad_(True)


def _check_lora_rank(model: GPT, cfg: FinetuneConfig) -> None:
    """Refuse a rank that does not fit every targeted layer, before anything is trained or written."""
    if cfg.resolved_method() != "lora" or cfg.lora_rank is None:
        return
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in cfg.lora_targets:
            check_rank(cfg.lora_rank, module, name, flag="--lora-rank")


def _accuracy(clf: Classifier, rows: list[list[int]], y: torch.Tensor, batch_size: int = 64) -> float:
    was_training = clf.training
    clf.eval()
    try:
        with torch.inference_mode():
            pred = torch.cat([clf.logits(rows[i:i + batch_size]).argmax(-1).cpu()
                              for i in range(0, len(rows), batch_size)])
    finally:
        clf.train(was_training)
    return int((pred == y).sum()) / len(y)


def _history(saved: Any, epochs: int) -> dict[str, list]:
    """The history a trainer state holds, checked: one entry an epoch, each a number of its kind (a
    ValueError names the first that is not)."""
    if not (isinstance(saved, dict) and all(isinstance(saved.get(k), list) and len(saved[k]) == epochs
                                            for k in ("epoch", "train_loss", "dev_accuracy"))):
        raise ValueError(f"the history does not hold one epoch, train_loss and dev_accuracy for each of {epochs} "
                         "epochs")
    if saved["epoch"] != list(range(1, epochs + 1)) or any(type(e) is not int for e in saved["epoch"]):
        raise ValueError(f"the history's epochs are not 1 to {epochs}")
    if not all(type(x) in (int, float) and math.isfinite(x) and x >= 0 for x in saved["train_loss"]):
        raise ValueError("a training loss in the history is not a finite number")
    if not all(x is None or (type(x) in (int, float) and 0 <= x <= 1) for x in saved["dev_accuracy"]):
        raise ValueError("a dev accuracy in the history is not a number from 0 to 1")
    return {k: list(saved[k]) for k in ("epoch", "train_loss", "dev_accuracy")}


def _check_out(out: Path, cfg: FinetuneConfig) -> dict[str, Any] | None:
    """What to do with ``out`` (locked by the caller): None for a fresh run; the saved trainer state for
    ``resume`` (:func:`gptlearn.checkpoint.read_state`, every field checked). Refuses a folder that holds
    something unless ``resume`` or ``overwrite`` says what to do with it, and a folder gptlearn did not
    write (:mod:`gptlearn.folders`), as ``gptlearn train`` does."""

    recover_folder(out)
    if out.exists() and not out.is_dir():
        raise InvalidValueError(f"--out {out} is a file; pass a folder for the classifier")
    if cfg.resume:
        if not (out / STATE_FILE).is_file():
            raise MissingFileError(f"--resume: {out} holds no fine-tuning run ({STATE_FILE} is missing); drop "
                                   "--resume to start one")
        return checkpoint.read_state(out, _history, trainer=TRAINER)
    names = {p.name for p in out.iterdir() if not p.name.startswith(".")} if out.is_dir() else set()
    if cfg.overwrite or not names:  # only files gptlearn wrote are replaced
        check_folder(out, kind="run", overwrite=cfg.overwrite, what="--out", hint="pass --overwrite")
    else:
        if kind_of(out) is None:  # not gptlearn's: refused, naming what is there
            check_folder(out, kind="run", what="--out", hint="pass --overwrite")
        raise InvalidValueError(f"--out {out} already holds files; pass --resume to continue its run or --overwrite "
                                "to replace it")
    if not os.access(out if out.is_dir() else _existing_parent(out), os.W_OK):
        raise InvalidValueError(f"--out {out} cannot be written (permission denied); choose another folder")
    return None


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _saved_settings(cfg: FinetuneConfig) -> dict[str, Any]:
    return {f.name: (list(v) if isinstance(v, tuple) else (os.fspath(v) if isinstance(v, os.PathLike) else v))
            for f in fields(cfg) for v in [getattr(cfg, f.name)]}


def finetune(train: Any, dev: Any = None, config: FinetuneConfig | None = None, **settings: Any) -> FinetuneResult:
    """Fine-tune a classifier on ``train`` (a TSV path with a ``sentence<TAB>label`` header, or a list of
    (sentence, label) pairs) and report its accuracy on ``dev`` after each epoch.

    ``settings`` are :class:`FinetuneConfig`'s fields (``method``, ``lora_rank``, ``epochs``, ``lr``, ...),
    applied over ``config``. ``model`` may also be a :class:`~gptlearn.GPT` (it is changed in place by
    every method but ``probe``). With ``out_dir`` the classifier is saved after every epoch, and
    ``resume=True`` continues the run saved there. Everything is checked before anything is trained
    or written, the time the run takes included: a run estimated to take longer than ``max_days`` (30)
    even at the most the device does is refused (:func:`gptlearn.devices.check_duration`).
    """
    cfg = (config or FinetuneConfig()).replace(**settings)
    model_given = isinstance(cfg.model, nn.Module)
    if model_given:
        model_obj, cfg = cfg.model, cfg.replace(model=getattr(cfg.model, "name_or_path", None) or "a GPT")
    cfg.validate()
    out = Path(cfg.out_dir).expanduser() if cfg.out_dir is not None else None
    with contextlib.ExitStack() as stack:
        if out is not None:  # one run at a time in a folder: the lock both trainers take

            check_name(out, "--out")
            if not out.is_dir():
                checkpoint.check_writable(out, parent_only=True)
            stack.enter_context(checkpoint.run_lock(out))
        return _finetune(train, dev, cfg, settings, out, model_obj if model_given else None)


def _finetune(train: Any, dev: Any, cfg: FinetuneConfig, settings: dict[str, Any], out: Path | None,
              model_obj: GPT | None) -> FinetuneResult:
    """:func:`finetune` once ``out`` is locked."""
    model_given = model_obj is not None
    saved = _check_out(out, cfg) if out is not None else None
    if saved is not None:  # resume: the run's own settings, but for those a resumed run may change
        differ = [k for k, v in saved["settings"].items()
                  if k not in RESUME_MAY_CHANGE and k in settings and _saved_settings(cfg).get(k) != v]
        if differ:
            raise InvalidValueError(f"--resume keeps the run's settings, but {', '.join(map(_flag, differ))} differ "
                                    f"from the saved run's; drop them or start again with --overwrite")
        known = {f.name for f in fields(FinetuneConfig)}
        kept = {k: tuple(v) if k == "lora_targets" else v for k, v in saved["settings"].items()
                if k in known and k not in RESUME_MAY_CHANGE}
        cfg = cfg.replace(**kept).validate()
    method = cfg.resolved_method()
    train_name = os.fspath(train) if isinstance(train, (str, os.PathLike)) else None
    sentences, labels = _pairs(train, "train")
    names = sorted(set(labels))
    if len(names) < 2:
        where = f"{train_name}: " if train_name else ""
        raise InvalidFileError(f"{where}every line has the label {names[0]!r}; a classifier needs two or more labels")
    dev_data = _pairs(dev, "dev", known=names, known_from=train_name) if dev is not None else None

    if model_given and cfg.device in (None, "auto"):
        device = model_obj.device  # a model handed over stays where it is
    else:
        device = resolve_device(cfg.device if cfg.device not in (None, "auto") else None)
    if saved is not None:
        clf = Classifier.from_pretrained(out, device=device, merge=False)
        if clf.labels != names:
            raise InvalidValueError(f"--resume: the training file's labels ({', '.join(names)}) are not the run's "
                                    f"({', '.join(clf.labels)}); start again with --overwrite")
    else:
        model = model_obj if model_given else GPT.from_pretrained(cfg.model, device=device)
        if model_given:
            model.to(device)
        _check_lora_rank(model, cfg)
        torch.manual_seed(cfg.seed)
        clf = Classifier(model, names, pooling=cfg.pooling, layer=cfg.layer,
                         base_model=None if model_given else os.fspath(cfg.model))
    bad = non_finite(clf)
    if bad is not None:
        raise GptlearnError(f"the model's weights hold NaN or infinity ({bad}); load a model that trained "
                            "without diverging")
    rows = clf.embedder.tokenize(sentences)
    y = torch.tensor([names.index(x) for x in labels])  # (N,)
    dev_rows = clf.embedder.tokenize(dev_data[0]) if dev_data else None
    dev_y = torch.tensor([names.index(x) for x in dev_data[1]]) if dev_data else None
    start = saved["step"] if saved is not None else 0  # a fine-tuning run's step is the epoch it finished
    _check_time(clf, method, rows, dev_rows, cfg, device, start)  # before the model given is changed
    torch.manual_seed(cfg.seed + 1)
    _prepare(clf, method, cfg)

    # here, not at the top: `import gptlearn` imports this module, and must not import gptlearn.train, which
    # `python -m gptlearn.train` runs as __main__
    from .train import lr_at, make_optimizer

    max_lr = cfg.resolved_lr()
    optimizer = make_optimizer(clf, lr=max_lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999))
    steps_per_epoch = -(-len(rows) // cfg.batch_size)
    steps = cfg.epochs * steps_per_epoch
    result = FinetuneResult(clf, method, trainable_parameters(clf))
    if saved is not None:
        if start > cfg.epochs:
            raise InvalidValueError(f"--resume: the run in {out} finished {start} epochs already; ask for "
                                    f"--epochs {start} or more")
        try:  # every AdamW tensor checked against this optimizer's parameters before torch sees it
            checkpoint.load_optimizer(optimizer, saved["optimizer"], max(1, start * steps_per_epoch))
        except (ValueError, TypeError, KeyError) as e:
            raise checkpoint.damaged(out, f"its optimizer state does not fit this run ({shown(str(e))})") from None
        h = saved["history"]
        result.epoch, result.train_loss, result.dev_accuracy = (list(h.get("epoch", [])), list(h.get("train_loss", [])),
                                                                 list(h.get("dev_accuracy", [])))

    began = time.perf_counter()
    features = dev_features = None
    if method == "probe":  # the body never changes: read every sentence once
        clf.eval()
        with torch.inference_mode():
            features = torch.cat([clf.features(rows[i:i + 64]) for i in range(0, len(rows), 64)]).clone()  # (N, C)
            if dev_rows is not None:
                dev_features = torch.cat([clf.features(dev_rows[i:i + 64])
                                          for i in range(0, len(dev_rows), 64)]).clone()  # (N_dev, C)
    bar = None
    if cfg.progress and start < cfg.epochs:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs, initial=start, desc=f"fine-tuning ({method})", unit="epoch")
    try:
        for epoch in range(start, cfg.epochs):
            clf.train(method != "probe")
            order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
            torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout
            total, count = 0.0, 0
            for i in range(0, len(rows), cfg.batch_size):
                step = epoch * steps_per_epoch + i // cfg.batch_size
                for group in optimizer.param_groups:  # warm-up, then a cosine down to a tenth
                    group["lr"] = lr_at(step, max_lr=max_lr, warmup=steps // 10, total=steps, min_lr=max_lr / 10)
                batch = order[i:i + cfg.batch_size]
                if features is not None:
                    logits = clf.head(features[batch.to(features.device)])  # (B, C) -> (B, K)
                else:
                    logits = clf.logits([rows[j] for j in batch.tolist()])  # (B, K)
                loss = F.cross_entropy(logits.float(), y[batch].to(logits.device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, count = total + loss.item() * len(batch), count + len(batch)
            train_loss = total / count
            if not math.isfinite(train_loss):
                raise GptlearnError(f"the loss became {train_loss} in epoch {epoch + 1}; lower --lr (nothing of this "
                                    "epoch was saved)")
            if dev_rows is None:
                dev_acc = None
            elif features is not None:  # the probe: the head on the dev sentences' fixed vectors
                with torch.no_grad():
                    dev_acc = int((clf.head(dev_features).argmax(-1).cpu() == dev_y).sum()) / len(dev_y)
            else:
                dev_acc = _accuracy(clf, dev_rows, dev_y)
            result.epoch.append(epoch + 1)
            result.train_loss.append(train_loss)
            result.dev_accuracy.append(dev_acc)
            if out is not None:
                _save_run(clf, out, cfg, optimizer, result, epoch + 1)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{train_loss:.3f}",
                                **({"dev_acc": f"{dev_acc:.3f}"} if dev_acc is not None else {}))
    finally:
        if bar is not None:
            bar.close()
    result.seconds = time.perf_counter() - began
    clf.eval()
    return result


def _check_time(clf: Classifier, method: str, rows: list[list[int]], dev_rows: list[list[int]] | None,
                cfg: FinetuneConfig, device: torch.device, start: int) -> None:
    """Refuse a run that would take ``device`` longer than ``cfg.max_days`` even at the most it does
    (:func:`gptlearn.devices.check_duration`), before anything is trained: for each remaining epoch, the
    training sentences through the model (forward and backward for ``full``; at least a forward for
    ``last_block`` and ``lora``) and the dev sentences forward; ``probe`` reads both once."""
    left = max(cfg.epochs - start, 0)
    dev = clf.embedder.estimate_flops(dev_rows) if dev_rows else 0
    if method == "probe":
        flops = (clf.embedder.estimate_flops(rows) + dev) * (left > 0)
    else:
        flops = left * (clf.embedder.estimate_flops(rows, training=method == "full") + dev)
    config = clf.model.config
    epochs = f"{left:,}" if left < 10**18 else f"10^{len(str(left)) - 1} or more"
    check_duration(flops, device, max_days=cfg.max_days,
                   what=(f"this fine-tuning ({epochs} epochs of {len(rows):,} sentences, {sum(map(len, rows)):,} "
                         f"tokens, method {method}, through a GPT with n_layer={config.n_layer}, "
                         f"n_embd={config.n_embd})"),
                   advice="lower --epochs, train on fewer sentences, or choose a smaller model")


def _save_run(clf: Classifier, out: Path, cfg: FinetuneConfig, optimizer: torch.optim.Optimizer,
              result: FinetuneResult, epoch: int) -> None:
    """The classifier and the trainer state (:func:`gptlearn.checkpoint.write_state`: the epoch as its step,
    the settings, the history, AdamW's moments, sha256 of both files) in one atomic save of a run folder;
    refused unless all is finite."""
    opt_state = optimizer.state_dict()
    for i, entry in opt_state["state"].items():
        bad = next((k for k, v in entry.items() if torch.is_tensor(v) and v.is_floating_point()
                    and not bool(v.isfinite().all())), None)
        if bad is not None:
            raise GptlearnError(f"AdamW's state {i}.{bad} holds NaN or infinity in epoch {epoch}, so it was not saved; "
                                "lower --lr")
    settings = {k: checkpoint.json_value(v) for k, v in _saved_settings(cfg).items()}

    def write_more(tmp: Path) -> None:  # every epoch reseeds its own generators: the RNG state is kept for the format
        checkpoint.write_state(tmp, step=epoch, settings=settings, history=result.history(), optimizer=opt_state,
                               rngs=[checkpoint.rng_state(torch.Generator())], trainer=TRAINER)

    last = result.dev_accuracy[-1] if result.dev_accuracy else None
    clf.save_pretrained(out, extra={"method": result.method, "epochs": epoch, "dev_accuracy": last},
                        write_more=write_more, kind="run", overwrite=cfg.overwrite)


# ---- command line ---------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``gptlearn finetune``: the data, then one flag per :class:`FinetuneConfig` field."""
    p.add_argument("--data", required=True, metavar="TRAIN.tsv", help="training sentences: a TSV file with the header "
                   "sentence<TAB>label")
    p.add_argument("--dev", default=None, metavar="DEV.tsv", help="held-out sentences, same layout: accuracy after "
                   "each epoch")
    hints = typing.get_type_hints(FinetuneConfig)
    for f in fields(FinetuneConfig):
        if not f.metadata["cli"]:
            continue
        flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
        if hints[f.name] is bool:
            p.add_argument(flag, dest=f.name, action="store_false" if f.default else "store_true",
                           default=argparse.SUPPRESS, help=f.metadata["help"])
            continue
        types = typing.get_args(hints[f.name]) or (hints[f.name],)
        kind = next((t for t in (int, float, str) if t in types), str)
        help = f.metadata["help"] + (f" (default: {f.default})" if f.default is not None
                                     and "default" not in f.metadata["help"] else "")
        options = dict(f.metadata["options"])
        metavar = options.pop("metavar", None if "choices" in options else flag[2:].upper().replace("-", "_"))
        p.add_argument(flag, dest=f.name, type=kind, default=argparse.SUPPRESS, metavar=metavar, help=help, **options)


def run_from_args(args: argparse.Namespace) -> int:
    given = {f.name: getattr(args, f.name) for f in fields(FinetuneConfig) if hasattr(args, f.name)}
    result = finetune(args.data, args.dev, **given)
    dev = result.dev_accuracy[-1] if result.dev_accuracy else None
    shown = f"; dev accuracy {dev:.4f}" if dev is not None else ""
    print(f"fine-tuned ({result.method}, {result.trainable:,} trainable parameters) for "
          f"{result.epoch[-1] if result.epoch else 0} "
          f"epochs{shown}; classifier saved in {given.get('out_dir')}")
    return 0


def classify_from_args(args: argparse.Namespace) -> int:
    import sys

    ascii_only = (getattr(sys.stdout, "encoding", None) or "utf-8").lower().replace("-", "") != "utf8"  # as cli's _json
    if not all(s.strip() for s in args.sentence):
        raise InvalidValueError("--sentence is empty; give some text to classify")
    clf = Classifier.from_pretrained(args.model, device=None if args.device == "auto" else args.device)
    for item in clf.predict(args.sentence):
        print(json.dumps(item, ensure_ascii=ascii_only, allow_nan=False))
    return 0


def register_cli(subparsers) -> None:
    """Add ``gptlearn finetune`` and ``gptlearn classify`` to the ``gptlearn`` command."""
    p = subparsers.add_parser("finetune", help="fine-tune a model to classify sentences (TSV: sentence<TAB>label)",
                              description="Fine-tune a GPT into a sentence classifier: a probe, the last block, all "
                              "of it, or LoRA adapters (--lora-rank).")
    add_arguments(p)
    p.set_defaults(func=run_from_args)
    p = subparsers.add_parser("classify", help="label sentences with a classifier from gptlearn finetune",
                              description="Print one JSON object a sentence: {\"label\": ..., \"scores\": {label: "
                              "probability, ...}}.")
    p.add_argument("--model", required=True, metavar="FOLDER", help="a folder written by gptlearn finetune")
    p.add_argument("--sentence", action="append", required=True, help="a sentence to label (repeat for several)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.set_defaults(func=classify_from_args)
