"""Text as token batches (book chapter "Training a GPT"): :class:`TokenDataset` tokenizes once into a
memory-mapped file and draws (B, T) batches from it.

>>> ds = TokenDataset(load_text("tinyshakespeare"), Tokenizer.gpt2())  # doctest: +SKIP
>>> x, y = ds.get_batch("train", 8, 64, generator)  # (B, T) each; y is x shifted by one  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from ..atomic import write_file
from ..checks import check_choice, check_generator, check_int, check_number, check_path, describe
from ..errors import GptlearnError, InvalidFileError, InvalidTypeError, InvalidValueError
from ..folders import expand_path
from ..safeio import check_regular, read_regular
from ..tokenizers.base import TOKENIZER_FILES, encode_document

from .datasets import cache_dir, split_text

if TYPE_CHECKING:
    from ..tokenizers import TokenizerLike


MAX_BATCH_TOKENS = 1 << 28  # the most ids one get_batch draws (x and y as int64: 4 GiB); more is a mistake

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
