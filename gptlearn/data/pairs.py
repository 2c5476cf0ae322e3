"""Sentence-pair and sentence files (chapter "Training embeddings") and the topic benchmark (chapters 9
and 10). The package ships sentence pairs written for the book (``book-pairs``, ``book-pairs-dev``);
STS-B cannot be shipped, its licence does not clearly allow it, so it is a named data set found or
downloaded like the others.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import GptlearnError, InvalidFileError, InvalidValueError
from ..folders import expand_path
from ..safeio import read_regular
from .datasets import ASSETS, dataset_path


# ---- sentence-pair files (training embedders, chapter 10) ----------------------------------------------
PAIRS_HEADER = ["id", "sentence1", "sentence2", "label"]
STSB_COLUMNS = ["genre", "file", "year", "id", "score", "sentence1", "sentence2"]
STSB_PAIRS = {"stsb": "sts-train.csv", "stsb-train": "sts-train.csv", "stsb-dev": "sts-dev.csv"}
# Written for this book and shipped with it (MIT, like the code): 160 everyday sentences, each with a
# paraphrase (label 1), a sentence on the same topic that means something else (0), and for half of
# them a sentence on another topic (0); 16 topics. The dev split holds other sentences than train.
BOOK_PAIRS = {"book-pairs": "book-pairs-train.tsv", "book-pairs-train": "book-pairs-train.tsv",
              "book-pairs-dev": "book-pairs-dev.tsv"}
NAMED_PAIRS = {**STSB_PAIRS, **BOOK_PAIRS}


@dataclass
class PairData:
    """Sentence pairs with gold similarities in [0, 1] (STS-B's 0-5 scores divided by 5; 0/1 labels as is).

    ``line_numbers[i]`` is the file line of pair ``i``; ``skipped`` lists ``(line number, reason)``
    for every malformed row that was left out.
    """

    sentences1: list[str]
    sentences2: list[str]
    scores: list[float]
    format: str = "pairs"  # "pairs" (id, sentence1, sentence2, label) or "stsb"
    source: str = ""
    line_numbers: list[int] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.scores)

    def __repr__(self) -> str:
        return (f"PairData({len(self)} pairs, format={self.format!r}, source={self.source!r}, "
                f"skipped={len(self.skipped)})")

    def select(self, indices: Sequence[int]) -> "PairData":
        """The pairs at ``indices`` (in that order), keeping their line numbers."""
        lines = self.line_numbers or list(range(len(self)))
        return PairData([self.sentences1[i] for i in indices], [self.sentences2[i] for i in indices],
                        [self.scores[i] for i in indices], self.format, self.source,
                        [lines[i] for i in indices], list(self.skipped))

    def head(self, n: int) -> "PairData":
        """The first ``n`` pairs."""
        return self.select(range(min(n, len(self))))

    def positives(self, threshold: float = 0.8) -> "PairData":
        """The pairs whose score is at least ``threshold`` (STS-B 4/5 and up; label 1)."""
        return self.select([i for i, s in enumerate(self.scores) if s >= threshold])

    def unique_sentences(self) -> list[str]:
        """Every distinct sentence, in order of first appearance."""
        return list(dict.fromkeys(self.sentences1 + self.sentences2))


def _named_pairs_path(name: str) -> Path:
    """``book-pairs`` / ``book-pairs-dev`` -> the file shipped in the package; ``stsb`` / ``stsb-dev`` ->
    the STS-B file, through :func:`dataset_path` (found locally or downloaded)."""
    if name in BOOK_PAIRS:
        return ASSETS / BOOK_PAIRS[name]
    return Path(dataset_path("stsb")) / STSB_PAIRS[name]


def _parse_float(text: str) -> float | None:
    try:
        x = float(text)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _detect_format(fields_by_line: list[list[str]]) -> str | None:
    """"pairs" if the first row is our header, "stsb" if an early row looks like STS-B, else None."""
    if not fields_by_line:
        return None
    if [f.strip().lower() for f in fields_by_line[0]] == PAIRS_HEADER:
        return "pairs"
    for fields in fields_by_line[:50]:
        if len(fields) >= 7 and _parse_float(fields[4]) is not None:
            return "stsb"
    return None


def read_pairs(path: str | os.PathLike, *, warn: bool = True) -> PairData:
    """Read sentence pairs, detecting the format from the file itself.

    * pairs format: a header ``id<TAB>sentence1<TAB>sentence2<TAB>label``, then rows with label 1
      (similar) or 0 (different);
    * STS-B: ``genre, file, year, id, score (0-5), sentence1, sentence2`` with tabs, no header; extra
      trailing columns (a few rows carry sources) are ignored; scores become ``score / 5``.

    Fields are split on tabs only: quote characters are ordinary text (STS-B has unbalanced ones).
    A malformed row (wrong column count, a label or score that is not a number in range, an empty
    sentence, bytes that are not UTF-8) is skipped, and listed with its line number in a warning
    and in ``PairData.skipped``; blank lines are ignored. ``path`` may also be a named set:
    ``"stsb"`` (train) or ``"stsb-dev"`` (found locally or downloaded), or ``"book-pairs"`` (train) or
    ``"book-pairs-dev"`` (shipped in the package, labels 0/1).
    """
    key = str(path)
    p = expand_path(path, "the file")
    if not p.exists() and key in NAMED_PAIRS:
        p = _named_pairs_path(key)
    if p.is_dir():
        raise GptlearnError(f"{p} is a folder; pass a pair file (TSV) or one of {sorted(NAMED_PAIRS)}")
    if not p.is_file():
        raise GptlearnError(f"pair file {key!r} not found; pass a TSV file or one of {sorted(NAMED_PAIRS)}")
    data = read_regular(p)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise GptlearnError(f"{p} is UTF-16 text; save it as UTF-8 (tab-separated) and try again")
    raw_lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")  # a UTF-8 byte-order mark is not text

    skipped: list[tuple[int, str]] = []
    rows: list[tuple[int, list[str]]] = []  # (line number, fields) of decodable, non-blank lines
    for number, raw in enumerate(raw_lines, start=1):
        raw = raw.removesuffix(b"\r")
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            skipped.append((number, "not valid UTF-8"))
            continue
        rows.append((number, line.split("\t")))

    fmt = _detect_format([fields for _, fields in rows])
    if fmt is None:
        raise GptlearnError(
            f"{p} is not a pair file: expected a header 'id<TAB>sentence1<TAB>sentence2<TAB>label' or STS-B rows "
            "(genre, file, year, id, score, sentence1, sentence2, tab-separated)")
    if fmt == "pairs":
        rows = rows[1:]  # the header

    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    lines: list[int] = []
    for number, fields in rows:
        if fmt == "pairs":
            if len(fields) != 4:
                skipped.append((number, f"{len(fields)} columns, expected 4"))
                continue
            _, a, b, label = fields
            y = _parse_float(label.strip())
            if y not in (0.0, 1.0):
                skipped.append((number, f"label {label.strip()!r} is not 0 or 1"))
                continue
        else:
            if len(fields) < 7:
                skipped.append((number, f"{len(fields)} columns, expected 7 (or more)"))
                continue
            a, b, score = fields[5], fields[6], fields[4]
            y = _parse_float(score.strip())
            if y is None or not 0.0 <= y <= 5.0:
                skipped.append((number, f"score {score.strip()!r} is not a number from 0 to 5"))
                continue
            y = y / 5.0
        a, b = a.strip(), b.strip()
        if not a or not b:
            skipped.append((number, "empty sentence"))
            continue
        s1.append(a)
        s2.append(b)
        scores.append(float(y))
        lines.append(number)

    skipped.sort()
    if not scores:
        raise GptlearnError(f"{p} has no valid pairs ({len(skipped)} malformed rows, first: "
                            f"{_describe_skipped(skipped[:3]) or 'none'}); check its format")
    if skipped and warn:
        warnings.warn(f"{p}: skipped {len(skipped)} malformed row(s): {_describe_skipped(skipped)}",
                      stacklevel=2)
    return PairData(s1, s2, scores, fmt, str(p), lines, skipped)


def _describe_skipped(skipped: list[tuple[int, str]], limit: int = 10) -> str:
    text = "; ".join(f"line {n} ({why})" for n, why in skipped[:limit])
    return text + (f"; and {len(skipped) - limit} more" if len(skipped) > limit else "")


def read_sentences(path: str | os.PathLike) -> list[str]:
    """Unlabelled sentences for distillation: one a line, UTF-8, blank lines skipped, spaces trimmed.

    A file that is missing, not UTF-8, or holds no sentence raises :class:`GptlearnError`."""
    p = expand_path(path, "the file")
    if not p.is_file():
        raise GptlearnError(f"sentence file {str(path)!r} not found; pass a text file with one sentence a line")
    raw = read_regular(p)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise GptlearnError(f"{p} is not UTF-8 text (line {line}, byte {e.start}); save it as UTF-8") from None
    sentences = [s.strip() for s in text.splitlines() if s.strip()]
    if not sentences:
        raise GptlearnError(f"{p} holds no sentences; write one sentence a line")
    return sentences


# ---- the topic benchmark (chapters 9 and 10, docs/gptlearn-embed.md) ----------------------------------------
# Written for gptlearn and shipped with it (MIT, like the code): 600 everyday sentences on 20 topics, 30 a
# topic, split at random within each topic into 15 dev and 15 test. Choose on dev; score the test split
# once per finished candidate.
TOPIC_SPLITS = {"dev": "topics-dev.tsv", "test": "topics-test.tsv"}


def load_topics(split: str = "dev") -> tuple[list[str], list[str]]:
    """The topic benchmark's ``split`` ("dev" or "test") as ``(sentences, topics)``, 300 of each.

    Score an embedder with ``gptlearn.analysis.neighbour_accuracy(embedder.encode(sentences), topics)``
    (chance: ``neighbour_chance(topics)``, 14 in 299) and ``topic_gap``. Tune on "dev" only; a score on
    "test" that chose anything is no longer a held-out score.

    >>> sentences, topics = load_topics("test")
    >>> len(sentences), len(set(topics))
    (300, 20)
    """
    if split not in TOPIC_SPLITS:
        raise InvalidValueError(f"split must be one of {', '.join(map(repr, TOPIC_SPLITS))}, got {split!r}")
    path = ASSETS / TOPIC_SPLITS[split]
    lines = path.read_text("utf-8").splitlines()
    if not lines or lines[0] != "topic\tsentence":
        raise InvalidFileError(f"{path}, line 1: expected the header topic<TAB>sentence; reinstall gptlearn")
    sentences: list[str] = []
    topics: list[str] = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 2 or not all(f.strip() for f in fields):
            raise InvalidFileError(f"{path}, line {number}: expected topic<TAB>sentence; reinstall gptlearn")
        topics.append(fields[0].strip())
        sentences.append(fields[1].strip())
    return sentences, topics
