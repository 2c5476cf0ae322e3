"""Naming a tokenizer: :func:`load_tokenizer` (``gpt2`` or a folder), and :func:`load_tokenizer_spec`, the way
``gptlearn train --tokenizer`` names one: ``gpt2``, ``bpe:N`` (learned from the training text), ``char`` (its
characters), or a folder with tokenizer files.

>>> tokenizer_problem("bpe:100")
'N must be at least 257 (256 bytes + <|endoftext|>)'
>>> load_tokenizer_spec("char", "abca").vocab_size
3
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..checks import shown
from ..errors import GptlearnError, MissingFileError
from .base import CHAR_FILE, MERGES_FILE, VOCAB_FILE, TokenizerLike
from .bpe import BPETokenizer
from .char import CharTokenizer
from .fast import Tokenizer

__all__ = ["load_tokenizer", "tokenizer_problem", "load_tokenizer_spec"]


def load_tokenizer(path_or_name: str | os.PathLike = "gpt2", *, fast: bool = True
                   ) -> Tokenizer | BPETokenizer | CharTokenizer:
    """``"gpt2"`` or a directory holding ``vocab.json`` + ``merges.txt`` or ``char_tokenizer.json``.

    ``fast=True`` gives a :class:`Tokenizer`, ``fast=False`` the readable :class:`BPETokenizer`.

    >>> load_tokenizer("gpt2").encode("Hello world")
    [15496, 995]
    """
    if str(path_or_name) == "gpt2" and not Path(path_or_name).is_dir():
        return Tokenizer.gpt2() if fast else BPETokenizer.gpt2()
    path = Path(path_or_name)
    if path.is_file() and path.name == CHAR_FILE:
        path = path.parent
    if not path.is_dir():
        raise MissingFileError(
            f"{str(path_or_name)!r} is neither 'gpt2' nor a directory with tokenizer files"
        )
    if (path / VOCAB_FILE).is_file() and (path / MERGES_FILE).is_file():
        return Tokenizer.from_directory(path) if fast else BPETokenizer.from_directory(path)
    if (path / CHAR_FILE).is_file():
        return CharTokenizer.from_directory(path)
    raise MissingFileError(
        f"{path} has no tokenizer files ({VOCAB_FILE} + {MERGES_FILE}, or {CHAR_FILE}); "
        "a model saved without them uses GPT-2's tokenizer: load_tokenizer('gpt2')"
    )


def tokenizer_problem(spec: Any) -> str | None:
    """Why ``spec`` names no tokenizer (see :func:`load_tokenizer_spec`), or None."""
    if spec is None or not isinstance(spec, (str, os.PathLike)):
        ok = spec is None or all(hasattr(spec, a) for a in ("encode", "decode", "vocab_size"))
        return None if ok else "not a tokenizer (it needs encode, decode and vocab_size)"
    s = str(os.fspath(spec))
    if s in ("gpt2", "char"):
        return None
    if s.startswith("bpe:"):
        n = s[4:]
        if not (n.isascii() and n.isdigit()):
            return "write bpe:N with N the vocabulary size, e.g. bpe:2048"
        return None if int(n) >= 257 else "N must be at least 257 (256 bytes + <|endoftext|>)"
    try:
        if s.strip() and "\0" not in s and Path(s).expanduser().is_dir():  # Path("") is the working folder
            return None
    except RuntimeError:  # "~nosuchuser/...": no such home folder
        pass
    return "use gpt2, bpe:N, char or a folder with tokenizer files"


def load_tokenizer_spec(spec: str | os.PathLike | TokenizerLike, train_text: str | None = None) -> TokenizerLike:
    """``"gpt2"``, ``"bpe:N"`` (byte-level BPE with N tokens learned on ``train_text``), ``"char"``
    (the characters of ``train_text``), a folder with tokenizer files, or a tokenizer object."""
    problem = tokenizer_problem(spec)
    if problem is not None:
        raise GptlearnError(f"tokenizer {shown(spec)}: {problem}")
    if not isinstance(spec, (str, os.PathLike)):
        return spec
    s = str(os.fspath(spec))
    if s == "gpt2":
        return Tokenizer.gpt2()
    if s.startswith("bpe:"):
        return Tokenizer.from_bpe(BPETokenizer.train(train_text or "", int(s[4:])))
    if s == "char":
        return CharTokenizer.from_text(train_text or "")
    try:
        return load_tokenizer(Path(s).expanduser())
    except (FileNotFoundError, MissingFileError) as e:
        raise GptlearnError(str(e)) from None
