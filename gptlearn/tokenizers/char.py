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

from ..errors import InvalidFileError, InvalidValueError, MissingFileError
from ..safeio import read_json
from .base import CHAR_FILE, BaseTokenizer, save_files, check_ids, check_text

__all__ = ["CharTokenizer"]


class CharTokenizer(BaseTokenizer):
    """One token per character; ids follow the sorted characters of the training text. No special tokens."""

    def __init__(self, chars: Sequence[str]) -> None:
        if not _distinct_characters(chars):
            raise InvalidValueError("chars must be a non-empty sequence of distinct single characters")
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
            raise MissingFileError(f"{directory} has no {CHAR_FILE}; save a CharTokenizer there first")
        data = read_json(path, "a CharTokenizer file")
        if not isinstance(data, dict) or "chars" not in data:
            got = "an object without chars" if isinstance(data, dict) else f"a JSON {type(data).__name__}"
            raise InvalidFileError(f"{path} is not a CharTokenizer file: it must be a JSON object with a list "
                                   f"\"chars\", got {got}")
        if not isinstance(data["chars"], list) or not _distinct_characters(data["chars"]):
            raise InvalidFileError(f"{path} is not a CharTokenizer file: chars must be a non-empty list of distinct "
                                   f"single characters, got {json.dumps(data['chars'], ensure_ascii=False)[:60]}")
        return cls(data["chars"])

    def _encode_ordinary(self, text: str) -> list[int]:
        """One id per character; a character not in the vocabulary raises ValueError."""
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            c = e.args[0]
            raise InvalidValueError(
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

    def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write ``char_tokenizer.json`` into ``directory``, under the folder rule
        (:func:`~gptlearn.tokenizers.base.save_files`)."""
        return save_files(directory, {CHAR_FILE: json.dumps({"type": "char", "chars": self.chars}, ensure_ascii=False)},
                          overwrite=overwrite)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def _distinct_characters(chars: object) -> bool:
    return (isinstance(chars, Sequence) and not isinstance(chars, str) and len(chars) > 0
            and all(isinstance(c, str) and len(c) == 1 for c in chars) and len(set(chars)) == len(chars))
