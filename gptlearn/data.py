"""Data for training: named data sets with pinned hashes, text loading, token batches (book chapter
"Training a GPT") and sentence-pair and sentence files (chapter "Training embeddings").

>>> text = load_text("tinyshakespeare")                       # doctest: +SKIP
>>> ds = TokenDataset(text, Tokenizer.gpt2())                  # doctest: +SKIP
>>> x, y = ds.get_batch("train", 8, 64, generator)             # (B, T) each; y is x shifted by one  # doctest: +SKIP

Named data sets are looked up in ``GPTLEARN_DATA_DIR`` first, then in a cache folder
(``GPTLEARN_CACHE`` or ``~/.cache/gptlearn``); if missing, a copy shipped in the package
(TinyShakespeare, public domain, gzip-compressed in ``gptlearn/assets/data/``) is unpacked there, and
anything else is downloaded there (never with ``GPTLEARN_OFFLINE=1``). Every file is checked against
its SHA-256 before use. The package also ships sentence pairs written for the book (``book-pairs``,
``book-pairs-dev``; :func:`read_pairs`); STS-B cannot be shipped, its licence does not clearly allow it.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import math
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from .atomic import write_file
from .checks import check_choice, check_generator, check_int, check_number, check_path, describe, sha256
from .errors import GptlearnError, InvalidFileError, InvalidTypeError, InvalidValueError
from .folders import expand_path
from .safeio import check_regular, read_regular
from .tokenizers.base import TOKENIZER_FILES, encode_document

if TYPE_CHECKING:
    from .tokenizers import TokenizerLike

__all__ = [
    # named data sets, found or downloaded, hash-checked
    "DATASETS", "Dataset", "cache_dir", "dataset_path",
    # text, and text as token batches
    "load_text", "split_text", "tokenizer_id", "TokenDataset",
    # sentence pairs with similarity scores, and unlabelled sentences
    "NAMED_PAIRS", "PairData", "read_pairs", "read_sentences",
    # the topic benchmark: everyday sentences labelled by topic
    "TOPIC_SPLITS", "load_topics",
]

DATA_DIR_ENV = "GPTLEARN_DATA_DIR"
CACHE_ENV = "GPTLEARN_CACHE"
DOWNLOAD_TIMEOUT_S = 60.0  # a server silent this long has failed
DOWNLOAD_MAX_BYTES = 1 << 30  # every named data set is far smaller: a longer reply is not the file
OFFLINE_ENV = "GPTLEARN_OFFLINE"  # "1": never download a data set (fail at once, with the fix)
ASSETS = Path(__file__).parent / "assets" / "data"
MAX_BATCH_TOKENS = 1 << 28  # the most ids one get_batch draws (x and y as int64: 4 GiB); more is a mistake


@dataclass(frozen=True)
class Dataset:
    """A named data set: ``files`` maps a path relative to the data folder to its SHA-256.

    ``url`` is a single file (when there is one file) or a ``.tar.gz`` holding the files under any
    folder (matched by file name). ``path`` is what :func:`dataset_path` returns, relative to the folder.
    ``bundled`` names a gzip copy of the single file in ``gptlearn/assets/data/`` (only for data sets
    whose licence allows shipping them), used instead of a download.
    """

    name: str
    url: str
    files: dict[str, str]
    path: str
    description: str = ""
    bundled: str = ""


DATASETS: dict[str, Dataset] = {
    "tinyshakespeare": Dataset(
        name="tinyshakespeare",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        files={"tinyshakespeare.txt": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"},
        path="tinyshakespeare.txt",
        description="1,115,394 characters of Shakespeare, the corpus of char-rnn and nanoGPT",
        bundled="tinyshakespeare.txt.gz",  # public domain: shipped, so chapter 7 needs no network
    ),
    "stsb": Dataset(
        name="stsb",
        # the STS Benchmark page is http://ixa2.si.ehu.eus/stswiki; this is its Stsbenchmark.tar.gz
        url="http://ixa2.si.ehu.eus/stswiki/images/4/48/Stsbenchmark.tar.gz",
        files={
            "stsb/sts-train.csv": "0f71910b59aa1ad973c5897f0791f3b0965a92b8f82b1a95f3eea9f4162fda82",
            "stsb/sts-dev.csv": "5d7e944d8b02734b07bfdb5df67db3420c64bed153fcaa1ba47ad03480cf4234",
        },
        path="stsb",
        description="STS Benchmark train (5,749 pairs) and dev (1,500 pairs), tab-separated",
    ),
}


def cache_dir() -> Path:
    """``GPTLEARN_CACHE`` or ``~/.cache/gptlearn``."""
    return expand_path(os.environ.get(CACHE_ENV) or os.path.join("~", ".cache", "gptlearn"), CACHE_ENV)


def _check_sha(path: Path, expected: str, name: str) -> None:
    got = sha256(path)
    if got != expected:
        raise GptlearnError(
            f"{path} (data set {name!r}) has sha256 {got}, expected {expected}; the file is corrupt or a "
            "different version: delete it so it is downloaded again, or fix the copy in $GPTLEARN_DATA_DIR"
        )


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "0") not in ("0", "", "false", "False")


def _fetch(url: str, name: str, dest_hint: str) -> bytes:
    """The whole body at ``url``. Every way a transfer fails (refused, reset, silent, cut short, a reply
    that is not HTTP, an error status, too long) is one :class:`GptlearnError` saying what to do instead;
    nothing is written until the body is complete and its hash checked."""
    def failed(why: str) -> GptlearnError:
        why = " ".join(why.split())
        return GptlearnError(
            f"could not download data set {name!r} from {url} ({why[:160]}); with no network, put {dest_hint} in a "
            f"folder and set {DATA_DIR_ENV} to that folder")

    if _offline():
        raise GptlearnError(f"data set {name!r} is not on this machine and {OFFLINE_ENV} forbids downloading it; "
                            f"put {dest_hint} in a folder and set {DATA_DIR_ENV} to that folder")
    chunks, total = [], 0
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            while chunk := response.read(1 << 16):
                total += len(chunk)
                if total > DOWNLOAD_MAX_BYTES:
                    raise failed(f"the reply is longer than {DOWNLOAD_MAX_BYTES:,} bytes")
                chunks.append(chunk)
            expected = response.headers.get("Content-Length", "") if hasattr(response, "headers") else ""
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        raise failed(f"{type(e).__name__}: {e}") from None
    if expected.isdigit() and total != int(expected):  # a body cut short (some servers close early)
        raise failed(f"the connection closed after {total:,} of {int(expected):,} bytes")
    return b"".join(chunks)


def _unpack_bundled(ds: Dataset, root: Path) -> None:
    """Write the package's gzip copy of ``ds`` into ``root``, after checking its SHA-256."""
    ((rel, sha),) = ds.files.items()
    try:
        data = gzip.decompress((ASSETS / ds.bundled).read_bytes())
    except (OSError, EOFError) as e:  # missing or damaged installation
        raise GptlearnError(f"the copy of data set {ds.name!r} shipped in the package ({ASSETS / ds.bundled}) cannot "
                            f"be read ({e}); reinstall gptlearn") from None
    got = hashlib.sha256(data).hexdigest()
    if got != sha:
        raise GptlearnError(f"the copy of data set {ds.name!r} shipped in the package has sha256 {got}, expected "
                            f"{sha}; "
                            "reinstall gptlearn")
    write_file(root / rel, data)


def _extract_from_tar(blob: bytes, wanted: dict[str, str], name: str) -> dict[str, bytes]:
    """Pull the files named in ``wanted`` (relative path -> sha256) out of a .tar.gz, matching by file
    name wherever they sit in the archive. Nothing else is extracted, so no path in the archive is
    ever written to disk."""
    by_name = {Path(rel).name: rel for rel in wanted}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
            for member in tar:
                base = Path(member.name).name
                if member.isfile() and base in by_name and by_name[base] not in found:
                    f = tar.extractfile(member)
                    if f is not None:
                        found[by_name[base]] = f.read()
    except (tarfile.TarError, EOFError, OSError) as e:
        why = " ".join(str(e).split())[:160]
        raise GptlearnError(f"the download of data set {name!r} is not a readable .tar.gz ({why}); try again later, or "
                            f"put {' and '.join(wanted)} in a folder and set {DATA_DIR_ENV}") from None
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise GptlearnError(f"the archive of data set {name!r} lacks {missing}; the source may have changed")
    for rel, data in found.items():
        got = hashlib.sha256(data).hexdigest()
        if got != wanted[rel]:
            raise GptlearnError(
                f"{rel} in the download of data set {name!r} has sha256 {got}, expected {wanted[rel]}; "
                "the source changed: put the expected files in a folder and set " + DATA_DIR_ENV
            )
    return found


def _download(ds: Dataset, root: Path) -> None:
    hint = " and ".join(ds.files)
    blob = _fetch(ds.url, ds.name, hint)
    if len(ds.files) == 1 and not ds.url.endswith((".tar.gz", ".tgz")):
        ((rel, sha),) = ds.files.items()
        got = hashlib.sha256(blob).hexdigest()
        if got != sha:
            raise GptlearnError(
                f"the download of data set {ds.name!r} from {ds.url} has sha256 {got}, expected {sha}; "
                f"the source changed: put the expected {rel} in a folder and set {DATA_DIR_ENV}"
            )
        contents = {rel: blob}
    else:
        contents = _extract_from_tar(blob, ds.files, ds.name)
    for rel, data in contents.items():
        write_file(root / rel, data)


def dataset_path(name: str, *, download: bool = True) -> Path:
    """Local path of a named data set (see ``DATASETS``), unpacked from the package or downloaded into
    the cache if needed.

    Looks in ``$GPTLEARN_DATA_DIR`` first, then in :func:`cache_dir`; files are checked against their
    pinned SHA-256 either way.
    """
    try:
        ds = DATASETS[name]
    except KeyError:
        raise GptlearnError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)} or pass a file") from None
    data_dir = os.environ.get(DATA_DIR_ENV)
    roots = ([expand_path(data_dir, "the data folder")] if data_dir else []) + [cache_dir()]
    for root in roots:
        if all((root / rel).is_file() for rel in ds.files):
            for rel, sha in ds.files.items():
                _check_sha(root / rel, sha, name)
            return root / ds.path
    root = cache_dir()
    if ds.bundled:
        _unpack_bundled(ds, root)
        return root / ds.path
    if not download:
        raise GptlearnError(f"data set {name!r} is not in {' or '.join(map(str, roots))}; set {DATA_DIR_ENV}")
    _download(ds, root)
    return root / ds.path


def _read_utf8(path: Path) -> str:
    data = read_regular(path)  # a FIFO or a device is refused, not read
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GptlearnError(
            f"{path} is not UTF-8 text: byte offset {e.start} (0x{data[e.start]:02x}) cannot be decoded; "
            "convert it with e.g. iconv -t UTF-8"
        ) from None


def load_text(path_or_name: str | os.PathLike) -> str:
    """A UTF-8 text file, a folder of ``.txt`` files (sorted, joined by a blank line), or a named
    data set such as ``"tinyshakespeare"``."""
    path = expand_path(path_or_name, "the data")
    if not path.exists() and str(path_or_name) in DATASETS:
        path = dataset_path(str(path_or_name))
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise GptlearnError(f"{path} holds no .txt files; pass a text file or a folder of .txt files")
        text = "\n\n".join(_read_utf8(p) for p in files)
    elif path.is_file():
        text = _read_utf8(path)
    else:
        raise GptlearnError(
            f"{str(path_or_name)!r} is not a file, a folder, or a named data set ({', '.join(sorted(DATASETS))})")
    if not text.strip():
        raise GptlearnError(f"{path} is empty; training needs some text")
    return text


def split_text(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """(train, val): the last ``val_fraction`` of the characters is held out."""
    if not 0 <= val_fraction < 1:
        raise InvalidValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    cut = len(text) - int(len(text) * val_fraction)
    return text[:cut], text[cut:]


def tokenizer_id(tokenizer: TokenizerLike) -> str:
    """A short hash that changes whenever the tokenizer's vocabulary or merges change."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save(tmp)
        h = hashlib.sha256(type(tokenizer).__name__.encode())
        for p in sorted(p for p in Path(tmp).iterdir() if p.name in TOKENIZER_FILES):  # not the save's manifest
            h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


TOKEN_META_MAX_BYTES = 1 << 16


def _read_meta(meta_path: Path, bin_path: Path, dtype: Any, vocab_size: int) -> dict[str, Any] | None:
    """The token cache's ``stem.json`` if it describes ``bin_path`` (regular files both, the right fields,
    counts that add up to the ``.bin``'s size); None otherwise (missing, not JSON, a FIFO, wrong fields)."""
    try:
        meta = json.loads(read_regular(meta_path, max_bytes=TOKEN_META_MAX_BYTES).decode("utf-8"))
        size = check_regular(bin_path)
    except (OSError, GptlearnError, ValueError, RecursionError):
        return None
    if not (isinstance(meta, dict) and meta.get("dtype") == np.dtype(dtype).name
            and meta.get("vocab_size") == vocab_size
            and all(type(meta.get(k)) is int and meta[k] >= 0 for k in ("n_train", "n_val"))
            and (meta["n_train"] + meta["n_val"]) * np.dtype(dtype).itemsize == size):
        return None
    return meta


class TokenDataset:
    """Text tokenized once into a memory-mapped ``.bin`` file (uint16, or uint32 for vocabularies
    above 65,535), cached by (text sha256, tokenizer id). The last ``val_fraction`` of the text is the
    validation split; train and val are tokenized separately so no token straddles the cut.

    >>> ds = TokenDataset("some text " * 100, CharTokenizer.from_text("some text "))   # doctest: +SKIP
    >>> x, y = ds.get_batch("train", 4, 8, torch.Generator().manual_seed(0))            # doctest: +SKIP
    """

    def __init__(self, text: str, tokenizer: TokenizerLike, *, val_fraction: float = 0.1,
                 cache: str | os.PathLike | None = None) -> None:
        if not isinstance(text, str):
            raise InvalidTypeError(f"TokenDataset takes text (str), got {type(text).__name__}; use load_text(path) "
                                   "first")
        if not text:
            raise GptlearnError("the text is empty; training needs some text")
        if not callable(getattr(tokenizer, "encode", None)) or not hasattr(tokenizer, "vocab_size"):
            raise InvalidTypeError("tokenizer must be a tokenizer (with encode and vocab_size), got "
                                   f"{describe(tokenizer)}")
        check_number(val_fraction, "val_fraction", low=0, high=1)
        if cache is not None:
            check_path(cache, "cache")
        text_sha = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

        def ids() -> tuple[list[int], list[int]]:
            train_text, val_text = split_text(text, val_fraction)
            # a corpus is text: "<|endoftext|>" written in it is read as plain text
            return encode_document(tokenizer, train_text), encode_document(tokenizer, val_text) if val_text else []

        self._open(tokenizer, f"{text_sha}-{tokenizer_id(tokenizer)}-val{val_fraction:g}", ids, cache)
        self.val_fraction = val_fraction

    @classmethod
    def from_documents(cls, train_docs: Sequence[str], val_docs: Sequence[str], tokenizer: TokenizerLike, *,
                       cache: str | os.PathLike | None = None) -> TokenDataset:
        """Documents joined GPT-2's way: each one starts after an ``<|endoftext|>`` token, so the model
        learns that token as "a new text begins here" (the BOS that chapter 4 prepends).

        >>> ds = TokenDataset.from_documents(["a cat", "a dog"], ["a cow"], tok)   # doctest: +SKIP
        """
        eot = getattr(tokenizer, "eot_token", None)
        if eot is None:
            raise InvalidValueError("from_documents needs a tokenizer with an <|endoftext|> token (eot_token)")
        docs = {"train": list(train_docs), "val": list(val_docs)}
        for split, items in docs.items():
            if not all(isinstance(d, str) for d in items):
                raise InvalidTypeError(f"from_documents takes lists of str for {split}")
        if not any(docs["train"]):
            raise GptlearnError("the training documents are empty; training needs some text")
        h = hashlib.sha256()
        for split in ("train", "val"):
            for d in docs[split]:
                h.update(split.encode() + b"\0" + d.encode("utf-8") + b"\0")

        def ids() -> tuple[list[int], list[int]]:
            return tuple([t for d in docs[split] for t in [eot, *encode_document(tokenizer, d)]]
                         for split in ("train", "val"))

        self = cls.__new__(cls)
        self._open(tokenizer, f"docs-{h.hexdigest()[:16]}-{tokenizer_id(tokenizer)}", ids, cache)
        self.val_fraction = len(docs["val"]) / max(1, len(docs["train"]) + len(docs["val"]))
        return self

    def _open(self, tokenizer: TokenizerLike, stem: str, ids: Callable[[], tuple[list[int], list[int]]],
              cache: str | os.PathLike | None) -> None:
        """Memory-map the cached ``stem.bin``, tokenizing (``ids()`` -> train, val) on the first use."""
        self.tokenizer = tokenizer
        self._ordinary_ids: torch.Tensor | None = None  # ids but the special tokens (induction rows), made once
        self.dtype = np.uint16 if tokenizer.vocab_size <= 65536 else np.uint32
        root = expand_path(cache, "the token cache") if cache is not None else cache_dir() / "tokens"
        self.path = root / f"{stem}.bin"
        meta_path = root / f"{stem}.json"
        meta = _read_meta(meta_path, self.path, self.dtype, tokenizer.vocab_size)
        self.cached = meta is not None  # a missing or damaged cache entry is tokenized again and replaced
        if meta is None:
            for path in (self.path, meta_path):  # a file replaces a FIFO or a damaged file, never a folder
                if path.is_dir():
                    raise InvalidFileError(f"the token cache holds a folder at {path}, where gptlearn keeps a "
                                           "file; move it away or pass another cache folder")
            train_ids, val_ids = ids()
            arr = np.asarray(list(train_ids) + list(val_ids), dtype=self.dtype)
            root.mkdir(parents=True, exist_ok=True)
            write_file(self.path, arr.tobytes())
            meta = {"n_train": len(train_ids), "n_val": len(val_ids), "dtype": np.dtype(self.dtype).name,
                    "vocab_size": tokenizer.vocab_size}
            write_file(meta_path, json.dumps(meta).encode())
        self.tokens = np.memmap(self.path, dtype=np.dtype(meta["dtype"]), mode="r")
        n_train = meta["n_train"]
        self.splits = {"train": self.tokens[:n_train], "val": self.tokens[n_train:]}

    def __len__(self) -> int:
        return len(self.tokens)

    def check_block_size(self, block_size: int) -> None:
        for split, ids in self.splits.items():
            if split == "val" and len(ids) == 0:
                continue
            if len(ids) < block_size + 1:
                raise GptlearnError(
                    f"the {split} split has {len(ids)} tokens, fewer than one block of {block_size} + 1; "
                    "use more text or a smaller --block-size"
                )

    def get_batch(self, split: str, batch_size: int, block_size: int,
                  generator: torch.Generator | None = None, *,
                  repeat_frac: float = 0.0, induction_frac: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows: x (B, T) and the next tokens y (B, T), as int64 on the CPU.

        ``repeat_frac``: the share of rows whose second half repeats their first half (a passage
        read twice), a curriculum that rewards copying from context: induction heads.
        ``induction_frac``: the share of rows made of random tokens (a period of 8 to min(64, T/2))
        written over and over; their targets are ignored (-100) until the first repeat begins, so
        those rows train nothing but copying from context (chapter "Many heads": induction heads).
        """
        check_choice(split, "split", ("train", "val"))
        batch_size = check_int(batch_size, "batch_size", low=1)
        block_size = check_int(block_size, "block_size", low=1)
        if batch_size * (block_size + 1) > MAX_BATCH_TOKENS:
            raise InvalidValueError(f"batch_size × (block_size + 1) must be at most {MAX_BATCH_TOKENS:,} tokens "
                                    f"(x and y: 4 GiB of int64 ids), got {batch_size:,} × {block_size + 1:,}; use a "
                                    "smaller batch")
        check_generator(generator)
        check_number(repeat_frac, "repeat_frac", low=0, high=1)
        check_number(induction_frac, "induction_frac", low=0, high=1)
        ids = self.splits[split]
        if len(ids) < block_size + 1:
            raise GptlearnError(
                f"the {split} split has {len(ids)} tokens, fewer than one block of {block_size} + 1; "
                "use more text or a smaller block size"
            )
        starts = torch.randint(len(ids) - block_size, (batch_size,), generator=generator).tolist()  # (B,)
        rows = np.stack([ids[s: s + block_size + 1] for s in starts]).astype(np.int64)  # (B, T + 1)
        rows = torch.from_numpy(rows)
        if repeat_frac > 0:
            half = (block_size + 2) // 2
            twice = torch.cat([rows[:, :half], rows[:, :half]], dim=1)[:, : block_size + 1]  # (B, T + 1)
            pick = torch.rand(batch_size, generator=generator) < repeat_frac  # (B,)
            rows = torch.where(pick[:, None], twice, rows)
        x, y = rows[:, :-1], rows[:, 1:].clone()  # (B, T), (B, T)
        if induction_frac > 0:
            self._induction_rows(x, y, induction_frac, generator)
        return x, y

    def _induction_rows(self, x: torch.Tensor, y: torch.Tensor, frac: float,
                        generator: torch.Generator | None) -> None:
        """Overwrite about ``frac`` of the rows of x, y (B, T) in place with repeated random tokens."""
        B, T = x.shape
        pick = (torch.rand(B, generator=generator) < frac).nonzero().flatten().tolist()
        if self._ordinary_ids is None:
            special = set(getattr(self.tokenizer, "special_tokens", {}).values())
            self._ordinary_ids = torch.tensor([i for i in range(self.tokenizer.vocab_size) if i not in special])
        allowed = self._ordinary_ids
        for b in pick:
            n = int(torch.randint(8, max(9, min(64, T // 2) + 1), (1,), generator=generator))  # period
            seq = allowed[torch.randint(len(allowed), (n,), generator=generator)]  # (n,)
            row = seq.repeat(T // n + 2)[: T + 1]  # (T + 1,)
            x[b], y[b] = row[:-1], row[1:]
            y[b, : n - 1] = -100  # the first copy is unpredictable: no loss there


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
