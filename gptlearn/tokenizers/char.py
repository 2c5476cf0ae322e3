"""One token per character: the smallest tokenizer, for tiny models (book chapters 1 and 7).

>>> tok = CharTokenizer.from_text("hello")
>>> tok.encode("hole"), tok.vocab_size
([1, 3, 2, 0], 4)
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from ..atomic import write_file
from .base import CHAR_FILE, BaseTokenizer, check_ids, check_text

__all__ = ["CharTokenizer"]


class CharTokenizer(BaseTokenizer):
    """One token per character; ids follow the sorted characters of the training text. No special tokens."""

    def __init__(self, chars: Sequence[str]) -> None:
        if any(not isinstance(c, str) or len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise ValueError("chars must be distinct single characters")
        self.chars: list[str] = list(chars)
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The vocabulary is every distinct character of ``text``, sorted."""
        return cls(sorted(set(check_text(text, "from_text"))))

    @classmethod
    def from_directory(cls, directory: str | os.PathLike) -> CharTokenizer:
        """Load ``char_tokenizer.json`` written by :meth:`save`."""
        path = Path(directory) / CHAR_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{directory} has no {CHAR_FILE}; save a CharTokenizer there first")
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(data["chars"])

    def _encode_ordinary(self, text: str) -> list[int]:
        """One id per character; a character not in the vocabulary raises ValueError."""
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            c = e.args[0]
            raise ValueError(
                f"character {c!r} (U+{ord(c):04X}) is not in this CharTokenizer's vocabulary; "
                "build it from text that contains it"
            ) from None

    def _token_bytes(self, i: int) -> bytes:
        return self.chars[i].encode("utf-8")

    def decode(self, tokens: Sequence[int], errors: str = "replace") -> str:
        """Token ids -> text, one character each (every id is a whole character: ``errors`` never applies)."""
        return "".join(self.chars[i] for i in check_ids(tokens, self.vocab_size))

    def str_tokens(self, ids: Sequence[int]) -> list[str]:
        """Each token's character."""
        return [self.chars[i] for i in check_ids(ids, self.vocab_size)]

    @property
    def vocab_size(self) -> int:
        """Number of distinct characters (V)."""
        return len(self.chars)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``char_tokenizer.json`` into ``directory``."""
        directory = Path(directory)
        write_file(directory / CHAR_FILE, json.dumps({"type": "char", "chars": self.chars}, ensure_ascii=False))
        return directory

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"
