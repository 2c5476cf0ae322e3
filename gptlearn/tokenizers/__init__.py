"""Tokenizers: text -> token ids -> text (book chapter 1, "From text to numbers", explains every step).

Split the way minbpe splits them:

* :mod:`~gptlearn.tokenizers.base` - the surface all of them share (tiktoken's names) and the
  :class:`TokenizerLike` protocol the rest of the package asks for;
* :mod:`~gptlearn.tokenizers.bpe` - :class:`BPETokenizer`, GPT-2's byte-level BPE in plain Python, with
  its trainer and :meth:`~BPETokenizer.encode_and_show_work`;
* :mod:`~gptlearn.tokenizers.fast` - :class:`Tokenizer`, the same BPE (identical ids) run by tiktoken;
* :mod:`~gptlearn.tokenizers.char` - :class:`CharTokenizer`, one token per character, for tiny models.

>>> tok = Tokenizer.gpt2()
>>> tok.encode("Hello world")
[15496, 995]
>>> BPETokenizer.gpt2().str_tokens([15496, 995])
['Hello', ' world']
"""
from __future__ import annotations

import os
from pathlib import Path

from .base import (CHAR_FILE, ENDOFTEXT, MERGES_FILE, TOKENIZER_FILES, VOCAB_FILE, BaseTokenizer,
                   TokenizerLike, encode_document)
from .bpe import (GPT2_ASSET_SHA256, GPT2_ASSETS_DIR, GPT2_SPLIT_PATTERN, BPETokenizer, bytes_to_unicode,
                  get_stats, merge)
from .char import CharTokenizer
from .fast import Tokenizer

__all__ = [
    # the shared surface
    "TokenizerLike", "BaseTokenizer", "ENDOFTEXT", "TOKENIZER_FILES", "load_tokenizer", "encode_document",
    # the teaching BPE: its steps and its tokenizer
    "GPT2_SPLIT_PATTERN", "bytes_to_unicode", "get_stats", "merge", "BPETokenizer",
    "GPT2_ASSETS_DIR", "GPT2_ASSET_SHA256",
    # the fast one and the smallest one
    "Tokenizer", "CharTokenizer",
]


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
        raise FileNotFoundError(
            f"{str(path_or_name)!r} is neither 'gpt2' nor a directory with tokenizer files"
        )
    if (path / VOCAB_FILE).is_file() and (path / MERGES_FILE).is_file():
        return Tokenizer.from_directory(path) if fast else BPETokenizer.from_directory(path)
    if (path / CHAR_FILE).is_file():
        return CharTokenizer.from_directory(path)
    raise FileNotFoundError(
        f"{path} has no tokenizer files ({VOCAB_FILE} + {MERGES_FILE}, or {CHAR_FILE}); "
        "a model saved without them uses GPT-2's tokenizer: load_tokenizer('gpt2')"
    )
