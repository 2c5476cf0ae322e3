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

from .base import (
                   CHAR_FILE,
                   ENDOFTEXT,
                   MERGES_FILE,
                   TOKENIZER_FILES,
                   VOCAB_FILE,
                   BaseTokenizer,
                   TokenizerLike,
                   encode_document,
)
from .bpe import (
                   GPT2_ASSET_SHA256,
                   GPT2_ASSETS_DIR,
                   GPT2_SPLIT_PATTERN,
                   BPETokenizer,
                   bytes_to_unicode,
                   get_stats,
                   merge,
)
from .char import CharTokenizer
from .fast import Tokenizer
from .spec import load_tokenizer, load_tokenizer_spec, tokenizer_problem

__all__ = [
    # the shared surface (and its file names)
    "CHAR_FILE", "MERGES_FILE", "VOCAB_FILE", "TokenizerLike", "BaseTokenizer", "ENDOFTEXT", "TOKENIZER_FILES",
    "load_tokenizer", "encode_document",
    # the teaching BPE: its steps and its tokenizer
    "GPT2_SPLIT_PATTERN", "bytes_to_unicode", "get_stats", "merge", "BPETokenizer",
    "GPT2_ASSETS_DIR", "GPT2_ASSET_SHA256",
    # the fast one and the smallest one
    "Tokenizer", "CharTokenizer",
    # a tokenizer named as `gptlearn train --tokenizer` names one
    "load_tokenizer_spec", "tokenizer_problem",
]
