"""The same byte-level BPE run by ``tiktoken``, for real workloads: ids identical to the readable
:class:`~gptlearn.tokenizers.bpe.BPETokenizer` it is built from (book chapter 1).

>>> tok = Tokenizer.gpt2()
>>> tok.encode("Hello world"), tok.decode([15496, 995])
([15496, 995], 'Hello world')
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from ..errors import InvalidFileError, InvalidValueError
from .base import MERGES_FILE, BaseTokenizer
from .bpe import BPETokenizer

__all__ = ["Tokenizer"]

# GPT-2's pre-tokenization regex with possessive quantifiers, which tiktoken's Rust regex runs faster:
# the same splits as GPT2_SPLIT_PATTERN (this is tiktoken's ``r50k_pat_str``).
_GPT2_SPLIT_PATTERN_FAST = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)


class Tokenizer(BaseTokenizer):
    """Fast byte-level BPE backed by ``tiktoken``; ids identical to its :class:`BPETokenizer` twin.

    The ``tiktoken.Encoding`` is built offline from the merge ranks (``tiktoken.get_encoding``
    would download files). ``tok.bpe`` is the readable twin, e.g. for ``encode_and_show_work``.

    >>> tok = Tokenizer.gpt2()
    >>> tok.encode_batch(["Hello world", "<|endoftext|>"])
    [[15496, 995], [27, 91, 437, 1659, 5239, 91, 29]]
    """

    def __init__(self, bpe: BPETokenizer, *, name: str | None = None) -> None:
        import tiktoken

        # tiktoken merges the lowest-ranked byte string first and returns ranks as ids, so the id
        # of each merge's result must grow with the merge's rank (true for GPT-2 and train()).
        ids = [bpe.encoder[a + b] for a, b in bpe.merges]
        if any(x >= y for x, y in zip(ids, ids[1:])):
            raise InvalidValueError("tiktoken needs token ids that increase with merge rank; this vocab's do not")
        ranks = bpe.mergeable_ranks()
        if len(ranks) != len(bpe.encoder):
            raise InvalidValueError("two tokens stand for the same bytes; tiktoken needs unique tokens")
        self.bpe = bpe
        self.encoding = tiktoken.Encoding(
            name=name or f"gptlearn-bpe-{bpe.vocab_size}",
            pat_str=_GPT2_SPLIT_PATTERN_FAST,
            mergeable_ranks=ranks,
            special_tokens=dict(bpe.special_tokens),
        )

    @classmethod
    def gpt2(cls) -> Tokenizer:
        """GPT-2's tokenizer (cached), built from the shipped, hash-checked files."""
        return _fast_twin(BPETokenizer.gpt2(), "gpt2")

    @classmethod
    def from_bpe(cls, bpe: BPETokenizer) -> Tokenizer:
        """A fast twin of ``bpe`` (e.g. one from :meth:`BPETokenizer.train`), giving identical ids."""
        return cls(bpe)

    @classmethod
    def from_directory(cls, directory: str | os.PathLike) -> Tokenizer:
        """Load ``vocab.json`` + ``merges.txt`` (see :meth:`BPETokenizer.save`)."""
        try:
            return cls(BPETokenizer.from_directory(directory))
        except InvalidFileError:
            raise
        except InvalidValueError as e:  # readable as BPE, but not by tiktoken
            raise InvalidFileError(f"{Path(directory) / MERGES_FILE} does not fit tiktoken: {e}") from None

    # tiktoken does the work; the shared surface (BaseTokenizer) checks the inputs
    def _encode_ordinary(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def _encode(self, text: str, allowed: set[str]) -> list[int]:
        if not allowed:
            return self.encoding.encode_ordinary(text)
        return self.encoding.encode(text, allowed_special=allowed, disallowed_special=())

    def _encode_batch(self, texts: list[str], allowed: set[str], num_threads: int) -> list[list[int]]:
        if not allowed:
            return self.encoding.encode_ordinary_batch(texts, num_threads=num_threads)
        return self.encoding.encode_batch(texts, num_threads=num_threads, allowed_special=allowed,
                                          disallowed_special=())

    def _token_bytes(self, i: int) -> bytes:
        return self.encoding.decode_single_token_bytes(i)

    def _decode_bytes(self, ids: list[int]) -> bytes:
        return self.encoding.decode_bytes(ids)

    @property
    def vocab_size(self) -> int:
        """Number of token ids (V), special tokens included."""
        return self.bpe.vocab_size

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token text -> id (GPT-2: ``{"<|endoftext|>": 50256}``)."""
        return self.bpe.special_tokens

    def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write ``vocab.json`` + ``merges.txt`` (see :meth:`BPETokenizer.save`)."""
        return self.bpe.save(directory, overwrite=overwrite)

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, merges={len(self.bpe.merges)}, "
            f"special_tokens={list(self.special_tokens)})"
        )


@functools.lru_cache(maxsize=None)
def _fast_twin(bpe: BPETokenizer, name: str) -> Tokenizer:
    return Tokenizer(bpe, name=name)
