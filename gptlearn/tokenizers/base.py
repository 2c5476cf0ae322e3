"""What every gptlearn tokenizer shares: tiktoken's ``Encoding`` surface, written once (book chapter 1).

The names, arguments and defaults are tiktoken's, so code moves between ``tiktoken.Encoding`` and a
gptlearn tokenizer unchanged:

* encoding: ``encode``, ``encode_ordinary``, ``encode_batch``, ``encode_ordinary_batch``,
  ``encode_single_token``;
* decoding: ``decode``, ``decode_bytes``, ``decode_batch``, ``decode_bytes_batch``,
  ``decode_single_token_bytes``, ``decode_tokens_bytes``, ``decode_with_offsets``;
* sizes and special tokens: ``n_vocab``, ``max_token_value``, ``eot_token``, ``special_tokens_set``,
  ``is_special_token``.

**Special tokens are refused by default.** ``encode(text)`` raises ValueError when ``text`` contains
the text of a special token such as ``<|endoftext|>``: a user who types it into a prompt must not be able
to inject a control token. ``allowed_special={"<|endoftext|>"}`` (or ``"all"``) encodes it as the special
token; ``disallowed_special=()`` (or :meth:`~BaseTokenizer.encode_ordinary`) as plain text.

A tokenizer subclasses :class:`BaseTokenizer` and writes four things: how plain text (no special tokens)
becomes ids, the bytes each id stands for, ``vocab_size``, and saving/loading. :class:`TokenizerLike` is
the smaller protocol the rest of the package asks for.
"""
from __future__ import annotations

import functools
import operator
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import AbstractSet, Any, Collection, Iterable, Literal, Protocol, Sequence, Union, runtime_checkable

import regex

from ..errors import InvalidTypeError, TokenIdError
from ..atomic import write_folder
from ..checks import check_bool, check_path
from ..folders import kind_of

__all__ = [
    "ENDOFTEXT",
    "AllowedSpecial",
    "DisallowedSpecial",
    "TOKENIZER_FILES",
    "TokenizerLike",
    "BaseTokenizer",
    "check_text",
    "check_ids",
    "encode_document",
]

ENDOFTEXT = "<|endoftext|>"
AllowedSpecial = Union[Literal["all"], AbstractSet[str]]  # as tiktoken types them
DisallowedSpecial = Union[Literal["all"], Collection[str]]

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


def encode_document(tokenizer: TokenizerLike, text: str) -> list[int]:
    """The ids of a document (a corpus, a text to measure): special-token text in it is plain text, as
    tiktoken's ``encode_ordinary`` reads it. Works for any :class:`TokenizerLike`."""
    return getattr(tokenizer, "encode_ordinary", tokenizer.encode)(text)


@functools.lru_cache(maxsize=64)
def _special_regex(tokens: frozenset[str]) -> regex.Pattern:
    """One pattern matching any of ``tokens``, longest first."""
    return regex.compile("|".join(regex.escape(t) for t in sorted(tokens, key=len, reverse=True)))


class BaseTokenizer(ABC):
    """tiktoken's ``Encoding`` surface. Subclasses write ``_encode_ordinary``, ``_token_bytes``,
    ``vocab_size``, ``save`` and ``from_directory``, and fill ``special_tokens`` (text -> id)."""

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
    def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write this tokenizer's files into ``directory``; :meth:`from_directory` reads them back.
        The folder rule of :mod:`gptlearn.folders` applies (see :func:`save_files`)."""

    @classmethod
    @abstractmethod
    def from_directory(cls, directory: str | os.PathLike) -> BaseTokenizer:
        """Load the files :meth:`save` wrote."""

    # ---- encoding --------------------------------------------------------------------------------
    def encode(self, text: str, *, allowed_special: AllowedSpecial = frozenset(),
               disallowed_special: DisallowedSpecial = "all") -> list[int]:
        """Text -> token ids, as ``tiktoken.Encoding.encode``.

        The text of a special token (``<|endoftext|>``) becomes that token only if it is in
        ``allowed_special`` (a set, or ``"all"``). Otherwise, if it is in ``disallowed_special`` (by
        default every special token not allowed) the text is refused with ValueError; pass
        ``disallowed_special=()`` to encode it as plain text instead.

        >>> Tokenizer.gpt2().encode("hello <|endoftext|>", allowed_special="all")   # doctest: +SKIP
        [31373, 220, 50256]
        """
        text = check_text(text)
        allowed, disallowed = self._special_sets(allowed_special, disallowed_special)
        self._refuse(text, disallowed)
        return self._encode(text, allowed)

    def encode_ordinary(self, text: str) -> list[int]:
        """Text -> token ids with every special token's text read as plain text
        (``encode(text, disallowed_special=())``)."""
        return self._encode(check_text(text, "encode_ordinary"), set())

    def encode_batch(self, text: Sequence[str], *, num_threads: int = 8,
                     allowed_special: AllowedSpecial = frozenset(),
                     disallowed_special: DisallowedSpecial = "all") -> list[list[int]]:
        """:meth:`encode` each text of a list; one list of ids per text."""
        texts = self._check_batch(text, "encode_batch")
        allowed, disallowed = self._special_sets(allowed_special, disallowed_special)
        for t in texts:  # every text is checked before any is encoded
            self._refuse(t, disallowed)
        return self._encode_batch(texts, allowed, num_threads)

    def encode_ordinary_batch(self, text: Sequence[str], *, num_threads: int = 8) -> list[list[int]]:
        """:meth:`encode_ordinary` each text of a list."""
        return self._encode_batch(self._check_batch(text, "encode_ordinary_batch"), set(), num_threads)

    def encode_single_token(self, text_or_bytes: str | bytes) -> int:
        """The id of the one token whose text (or bytes) this is; KeyError if it is not a single token.

        >>> Tokenizer.gpt2().encode_single_token(" world"), Tokenizer.gpt2().encode_single_token(b"<|endoftext|>")
        (995, 50256)
        """
        key = text_or_bytes.encode("utf-8") if isinstance(text_or_bytes, str) else bytes(text_or_bytes)
        index = self.__dict__.get("_single_token_ids")
        if index is None:  # bytes -> id for every token, built on first use
            index = {}
            for i in range(self.vocab_size):
                index.setdefault(self._token_bytes(i), i)
            self.__dict__["_single_token_ids"] = index
        try:
            return index[key]
        except KeyError:
            raise KeyError(f"{text_or_bytes!r} is not a single token of this tokenizer; use encode()") from None

    def _encode(self, text: str, allowed: set[str]) -> list[int]:
        """Encode, splitting around the ``allowed`` special tokens (the refusal check is already done)."""
        ids: list[int] = []
        for chunk, special in self._split_special(text, allowed):
            ids.extend([self.special_tokens[chunk]] if special else self._encode_ordinary(chunk))
        return ids

    @staticmethod
    def _split_special(text: str, allowed: set[str]) -> list[tuple[str, bool]]:
        """Split ``text`` into (chunk, is_special) around the allowed special tokens."""
        chunks: list[tuple[str, bool]] = []
        start = 0
        for m in _special_regex(frozenset(allowed)).finditer(text) if allowed else ():
            if m.start() > start:
                chunks.append((text[start:m.start()], False))
            chunks.append((m.group(), True))
            start = m.end()
        if start < len(text):
            chunks.append((text[start:], False))
        return chunks

    def _encode_batch(self, texts: list[str], allowed: set[str], num_threads: int) -> list[list[int]]:
        return [self._encode(t, allowed) for t in texts]

    @staticmethod
    def _check_batch(texts: Sequence[str], what: str) -> list[str]:
        if isinstance(texts, str):
            raise TypeError(f"{what} expects a list of str, got a single str; use {what.replace('_batch', '')}()")
        return [check_text(t, what) for t in texts]

    def _special_set(self, tokens: Any, what: str) -> set[str]:
        """``"all"`` or a collection of this tokenizer's special tokens, as a set (else a clear error)."""
        if tokens == "all":
            return set(self.special_tokens)
        if isinstance(tokens, str):
            raise TypeError(f"{what} takes 'all' or a set of special tokens, got the str {tokens!r}; "
                            f"write {what}={{{tokens!r}}}")
        chosen = set(tokens)
        unknown = chosen - set(self.special_tokens)
        if unknown:
            raise ValueError(f"unknown special token(s) {sorted(unknown)} in {what}; "
                             f"this tokenizer has {sorted(self.special_tokens)}")
        return chosen

    def _special_sets(self, allowed_special: Any, disallowed_special: Any) -> tuple[set[str], set[str]]:
        """(allowed, disallowed) special tokens; ``disallowed_special="all"`` means all not allowed."""
        allowed = self._special_set(allowed_special, "allowed_special")
        if disallowed_special == "all":
            return allowed, set(self.special_tokens) - allowed
        return allowed, self._special_set(disallowed_special, "disallowed_special")

    @staticmethod
    def _refuse(text: str, disallowed: set[str]) -> None:
        """ValueError if ``text`` contains the text of a disallowed special token."""
        found = _special_regex(frozenset(disallowed)).search(text) if disallowed else None
        if found:
            token = found.group()
            raise ValueError(
                f"the text contains the special token {token!r}, which encode() refuses by default (as tiktoken "
                f"does); pass allowed_special={{{token!r}}} to encode it as that token, or disallowed_special=() "
                "to encode it as plain text")

    # ---- decoding --------------------------------------------------------------------------------
    def _decode_bytes(self, ids: list[int]) -> bytes:
        return b"".join(map(self._token_bytes, ids))

    def decode_bytes(self, tokens: Sequence[int]) -> bytes:
        """Token ids -> the exact bytes they stand for."""
        return self._decode_bytes(check_ids(tokens, self.vocab_size))

    def decode(self, tokens: Sequence[int], errors: str = "replace") -> str:
        """Token ids -> text. Bytes that are not valid UTF-8 (half an emoji) follow ``errors`` of
        ``bytes.decode``: by default they become U+FFFD."""
        return self.decode_bytes(tokens).decode("utf-8", errors=errors)

    def decode_single_token_bytes(self, token: int) -> bytes:
        """The bytes of one token: ``decode_single_token_bytes(995) == b" world"``."""
        return self._token_bytes(check_ids([token], self.vocab_size)[0])

    def decode_tokens_bytes(self, tokens: Sequence[int]) -> list[bytes]:
        """The bytes of each token, one entry per token."""
        return [self._token_bytes(i) for i in check_ids(tokens, self.vocab_size)]

    def decode_with_offsets(self, tokens: Sequence[int]) -> tuple[str, list[int]]:
        """The text and, for each token, the index of the character it starts in. A token that begins
        inside a character (its first byte is a UTF-8 continuation byte) points at that character.
        The tokens must decode to valid UTF-8.

        >>> Tokenizer.gpt2().decode_with_offsets([31373, 995])                 # doctest: +SKIP
        ('hello world', [0, 5])
        """
        pieces = self.decode_tokens_bytes(tokens)
        offsets: list[int] = []
        chars = 0  # characters started so far
        for piece in pieces:
            inside = bool(piece) and 0x80 <= piece[0] < 0xC0  # continues a character begun earlier
            offsets.append(max(chars - inside, 0))
            chars += sum(1 for b in piece if not 0x80 <= b < 0xC0)  # bytes that start a character
        return b"".join(pieces).decode("utf-8", errors="strict"), offsets

    def decode_batch(self, batch: Sequence[Sequence[int]], *, errors: str = "replace",
                     num_threads: int = 8) -> list[str]:
        """:meth:`decode` each list of ids."""
        return [self.decode(ids, errors=errors) for ids in batch]

    def decode_bytes_batch(self, batch: Sequence[Sequence[int]], *, num_threads: int = 8) -> list[bytes]:
        """:meth:`decode_bytes` each list of ids."""
        return [self.decode_bytes(ids) for ids in batch]

    def str_tokens(self, ids: Sequence[int]) -> list[str]:
        """Each token's own text, e.g. for coloured spans: ``[15496, 995] -> ['Hello', ' world']``."""
        return [b.decode("utf-8", errors="replace") for b in self.decode_tokens_bytes(ids)]

    # ---- sizes and special tokens ------------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        """tiktoken's name for :attr:`vocab_size`."""
        return self.vocab_size

    @property
    def max_token_value(self) -> int:
        """The largest token id (``n_vocab - 1``)."""
        return self.vocab_size - 1

    @property
    def eot_token(self) -> int | None:
        """Id of ``<|endoftext|>`` (50256 for GPT-2), or None if there is no such token."""
        return self.special_tokens.get(ENDOFTEXT)

    @property
    def special_tokens_set(self) -> set[str]:
        """The special tokens' texts: ``{"<|endoftext|>"}`` for GPT-2."""
        return set(self.special_tokens)

    def is_special_token(self, token: int) -> bool:
        """Whether id ``token`` is a special token."""
        return token in self.special_tokens.values()

    def __len__(self) -> int:
        return self.vocab_size


def save_files(directory: str | os.PathLike, files: dict[str, str], *, overwrite: bool = False) -> Path:
    """Write a tokenizer's ``files`` (name -> text) into ``directory`` under the folder rule of
    :mod:`gptlearn.folders`: a missing or empty folder, or one gptlearn made (a model, a run, ...), takes
    them, replacing only tokenizer files gptlearn wrote there; a folder that holds other things is refused
    unless ``overwrite``, and a ``vocab.json`` or ``merges.txt`` gptlearn did not write is never replaced.
    Inside a save of a whole folder (``save_pretrained``) the files go straight into that save's folder."""

    check_path(directory, "directory")
    check_bool(overwrite, "overwrite")
    directory = Path(directory)

    def write(tmp: Path) -> None:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")

    kind = kind_of(directory) or "model"  # a model folder is where a tokenizer's files belong
    write_folder(directory, write, owns=TOKENIZER_FILES, kind=kind, overwrite=overwrite)
    return directory
