"""What every gptlearn tokenizer shares: tiktoken's names (``encode``, ``encode_batch``, ``decode``,
``decode_bytes``, ``eot_token``, ``special_tokens``), the checks on their inputs, and the
:class:`TokenizerLike` protocol the rest of the package asks for (book chapter 1).

A tokenizer subclasses :class:`BaseTokenizer` and writes four things: how plain text (no special tokens)
becomes ids, the bytes each id stands for, ``vocab_size``, and saving/loading. Special tokens, batches, input
checks and decoding to text are written here, once.
"""
from __future__ import annotations

import operator
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterable, Literal, Protocol, Sequence, runtime_checkable

import regex

from ..errors import InvalidTypeError, InvalidValueError, TokenIdError

__all__ = [
    "ENDOFTEXT",
    "AllowedSpecial",
    "TOKENIZER_FILES",
    "TokenizerLike",
    "BaseTokenizer",
    "check_text",
    "check_ids",
]

ENDOFTEXT = "<|endoftext|>"
AllowedSpecial = Literal["all"] | Iterable[str]

# File names written by save() and read by from_directory(), as in Hugging Face GPT-2 folders.
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
CHAR_FILE = "char_tokenizer.json"
TOKENIZER_FILES = (VOCAB_FILE, MERGES_FILE, CHAR_FILE)


@runtime_checkable
class TokenizerLike(Protocol):
    """What gptlearn needs from a tokenizer (a model's ``tokenizer``, a :class:`~gptlearn.data.TokenDataset`'s):
    any object with these members will do, a gptlearn tokenizer or your own."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def eot_token(self) -> int | None: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def str_tokens(self, ids: Sequence[int]) -> list[str]: ...

    def save(self, directory: str | os.PathLike) -> Path: ...


def check_text(text: object, what: str = "encode") -> str:
    """``text`` if it is a str, else a TypeError that says what was passed."""
    if not isinstance(text, str):
        hint = " (decode bytes first with .decode('utf-8'))" if isinstance(text, (bytes, bytearray)) else ""
        raise InvalidTypeError(f"{what} expects a str, got {type(text).__name__}{hint}")
    return text


def check_ids(ids: Any, vocab_size: int) -> list[int]:
    """``ids`` (a list, tensor or array) as a list of ints in ``range(vocab_size)``, or a helpful error."""
    if hasattr(ids, "tolist"):  # torch.Tensor / numpy array
        ids = ids.tolist()
    if isinstance(ids, (str, bytes, int)) or not isinstance(ids, Iterable):
        raise InvalidTypeError(f"decode expects a sequence of token ids, got {type(ids).__name__}")
    ids = list(ids)
    if not all(type(i) is int for i in ids):
        try:
            ids = [operator.index(i) for i in ids]
        except TypeError:
            bad = next(i for i in ids if not hasattr(i, "__index__"))
            raise InvalidTypeError(f"token ids must be ints, got {bad!r} ({type(bad).__name__})") from None
    if ids:
        lo, hi = min(ids), max(ids)
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise TokenIdError(f"token id {bad} is out of range for this tokenizer (vocab_size={vocab_size})")
    return ids


class BaseTokenizer(ABC):
    """The shared surface. Subclasses write ``_encode_ordinary``, ``_token_bytes``, ``vocab_size``,
    ``save`` and ``from_directory``, and fill ``special_tokens`` (text -> id)."""

    special_tokens: dict[str, int] = {}

    # ---- what each tokenizer writes --------------------------------------------------------------
    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of token ids (V), special tokens included."""

    @abstractmethod
    def _encode_ordinary(self, text: str) -> list[int]:
        """Text with no special tokens in it -> ids."""

    @abstractmethod
    def _token_bytes(self, i: int) -> bytes:
        """The bytes token ``i`` stands for (a special token: its UTF-8 text)."""

    @abstractmethod
    def save(self, directory: str | os.PathLike) -> Path:
        """Write this tokenizer's files into ``directory``; :meth:`from_directory` reads them back."""

    @classmethod
    @abstractmethod
    def from_directory(cls, directory: str | os.PathLike) -> BaseTokenizer:
        """Load the files :meth:`save` wrote."""

    # ---- encoding --------------------------------------------------------------------------------
    def encode(self, text: str, *, allowed_special: AllowedSpecial = ()) -> list[int]:
        """Text -> token ids. Special tokens in ``text`` are plain text unless in ``allowed_special``
        (a set of them, or ``"all"``), as in tiktoken."""
        return self._encode(check_text(text), self._allowed(allowed_special))

    def encode_batch(self, texts: Sequence[str], *, allowed_special: AllowedSpecial = (),
                     num_threads: int = 8) -> list[list[int]]:
        """Encode each text in ``texts``; one list of ids per text."""
        if isinstance(texts, str):
            raise InvalidTypeError("encode_batch expects a list of str, got a single str; use encode()")
        texts = [check_text(t, "encode_batch") for t in texts]
        return self._encode_batch(texts, self._allowed(allowed_special), num_threads)

    def _encode(self, text: str, allowed: set[str]) -> list[int]:
        ids: list[int] = []
        for chunk, special in self._split_special(text, allowed):
            ids.extend([self.special_tokens[chunk]] if special else self._encode_ordinary(chunk))
        return ids

    def _encode_batch(self, texts: list[str], allowed: set[str], num_threads: int) -> list[list[int]]:
        return [self._encode(t, allowed) for t in texts]

    def _allowed(self, allowed_special: AllowedSpecial) -> set[str]:
        """``allowed_special`` as a set of this tokenizer's special tokens (an unknown one is an error)."""
        if allowed_special == "all":
            return set(self.special_tokens)
        allowed = {allowed_special} if isinstance(allowed_special, str) else set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise InvalidValueError(
                f"unknown special token(s) {sorted(unknown)}; this tokenizer has {sorted(self.special_tokens)}"
            )
        return allowed

    @staticmethod
    def _split_special(text: str, allowed: set[str]) -> list[tuple[str, bool]]:
        """Split ``text`` into (chunk, is_special) around the allowed special tokens."""
        if not allowed:
            return [(text, False)] if text else []
        pattern = "(" + "|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True)) + ")"
        return [(c, i % 2 == 1) for i, c in enumerate(regex.split(pattern, text)) if c]

    # ---- decoding --------------------------------------------------------------------------------
    def _decode_bytes(self, ids: list[int]) -> bytes:
        return b"".join(map(self._token_bytes, ids))

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """Token ids -> the exact bytes they stand for."""
        return self._decode_bytes(check_ids(ids, self.vocab_size))

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids -> text (invalid UTF-8, e.g. half an emoji, becomes U+FFFD)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def str_tokens(self, ids: Sequence[int]) -> list[str]:
        """Each token's own text, e.g. for coloured spans: ``[15496, 995] -> ['Hello', ' world']``."""
        return [self._token_bytes(i).decode("utf-8", errors="replace") for i in check_ids(ids, self.vocab_size)]

    @property
    def eot_token(self) -> int | None:
        """Id of ``<|endoftext|>`` (50256 for GPT-2), or None if there is no such token."""
        return self.special_tokens.get(ENDOFTEXT)

    def __len__(self) -> int:
        return self.vocab_size
