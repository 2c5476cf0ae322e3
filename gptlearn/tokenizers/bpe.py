"""GPT-2's byte-level BPE written out in plain Python, and its trainer (book chapter 1).

The pure helpers come first, each a step of the algorithm: :func:`get_stats` counts neighbouring
pairs, :func:`merge` replaces one pair. :class:`BPETokenizer` applies GPT-2's learned merges in one
loop, :meth:`~BPETokenizer.apply_merges`, which also powers :meth:`~BPETokenizer.encode_and_show_work`
(the "show your work" twin of ``encode``), and learns new merges with :meth:`~BPETokenizer.train`.
Its ids are GPT-2's; :class:`gptlearn.Tokenizer` runs the same merges in tiktoken for real workloads.

>>> tok = BPETokenizer.gpt2()
>>> tok.encode("Hello world"), tok.str_tokens([15496, 995])
([15496, 995], ['Hello', ' world'])

GPT-2's ``encoder.json`` and ``vocab.bpe`` ship in ``gptlearn/assets/gpt2/``; they are checked
against the SHA-256 hashes that tiktoken pins the first time they are loaded.
"""
from __future__ import annotations

import functools
import heapq
import json
import math
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Sequence, TypeVar

import regex

from ..checks import sha256
from ..errors import InvalidFileError, InvalidValueError, MissingFileError, UnavailableError
from ..safeio import JSON_MAX_BYTES, read_json, read_regular
from .base import (ENDOFTEXT, save_files, MERGES_FILE, VOCAB_FILE, AllowedSpecial, BaseTokenizer, DisallowedSpecial,
                   check_ids, check_text)

__all__ = [
    "GPT2_SPLIT_PATTERN",
    "GPT2_ASSETS_DIR",
    "GPT2_ASSET_SHA256",
    "bytes_to_unicode",
    "get_stats",
    "merge",
    "BPETokenizer",
]

T = TypeVar("T")

# GPT-2's pre-tokenization regex, exactly as in OpenAI's encoder.py: contractions, runs of letters,
# runs of digits, runs of other symbols (each optionally led by one space), and whitespace.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_SPLIT_RE = regex.compile(GPT2_SPLIT_PATTERN)
# The trainer cuts pre-tokens longer than this (a line of millions of letters with no space) into pieces of
# this many bytes: a merge rewrites every word holding its pair, and a word of L bytes is rewritten at most
# L - 1 times, so with words of at most W bytes training costs at most W times the text's length.
MAX_TRAIN_WORD_BYTES = 64

# The shipped GPT-2 files and the SHA-256 hashes tiktoken pins for them (tiktoken_ext/openai_public.py).
GPT2_ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets" / "gpt2"
GPT2_ASSET_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}


# ----------------------------------------------------------------------------------------------
# Pure helpers


@functools.lru_cache(maxsize=None)
def bytes_to_unicode() -> dict[int, str]:
    """Map each of the 256 byte values to a printable unicode character (GPT-2's trick).

    BPE merges strings, and GPT-2's files store tokens as text, so every byte needs a visible,
    non-whitespace stand-in. Printable bytes map to themselves; the other 68 (control characters,
    space, ...) are shifted to code points 256 and up, so a space becomes "Ġ" and a newline "Ċ".

    >>> b2u = bytes_to_unicode()
    >>> b2u[ord("A")], b2u[ord(" ")], b2u[ord("\\n")]
    ('A', 'Ġ', 'Ċ')
    """
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


@functools.lru_cache(maxsize=None)
def _unicode_to_bytes() -> dict[str, int]:
    """The inverse of :func:`bytes_to_unicode`."""
    return {u: b for b, u in bytes_to_unicode().items()}


def get_stats(ids: Sequence[T], counts: dict[tuple[T, T], int] | None = None) -> dict[tuple[T, T], int]:
    """Count each pair of neighbours in ``ids`` (adding to ``counts`` if given).

    >>> get_stats([1, 2, 3, 1, 2])
    {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    """
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: Sequence[T], pair: tuple[T, T], new: T) -> list[T]:
    """Replace every non-overlapping occurrence of ``pair`` in ``ids`` (left to right) by ``new``.

    >>> merge([1, 2, 3, 1, 2], (1, 2), 4)
    [4, 3, 4]
    >>> merge(["h", "e", "l", "l", "o"], ("l", "l"), "ll")
    ['h', 'e', 'll', 'o']
    """
    out: list[T] = []
    i = 0
    while i < len(ids):
        if i < len(ids) - 1 and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _fix_surrogates(text: str) -> str:
    """Replace lone surrogates (which UTF-8 cannot encode) by U+FFFD, as tiktoken does."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


@functools.lru_cache(maxsize=None)
def _verified_gpt2_files(directory: str) -> tuple[Path, Path]:
    """Return the (encoder.json, vocab.bpe) paths in ``directory`` after checking their SHA-256."""
    paths = []
    for name, expected in GPT2_ASSET_SHA256.items():
        path = Path(directory) / name
        if not path.is_file():
            raise MissingFileError(
                f"GPT-2 tokenizer file {path} is missing; reinstall gptlearn to restore it"
            )
        got = sha256(path)
        if got != expected:
            raise UnavailableError(
                f"GPT-2 tokenizer file {path} is corrupt (sha256 {got}, expected {expected}); "
                "reinstall gptlearn or restore the file from git"
            )
        paths.append(path)
    return paths[0], paths[1]


def _read_merges(path: Path) -> list[tuple[str, str]]:
    """Parse a GPT-2 ``vocab.bpe`` / HF ``merges.txt``: a ``#version`` line, then one "a b" pair a line."""
    data = read_regular(path, max_bytes=JSON_MAX_BYTES)  # a FIFO or a device is refused, not read
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InvalidFileError(f"{path} is not a list of BPE merges: it is not UTF-8 text (byte 0x{data[e.start]:02x} "
                               f"at offset {e.start})") from None
    merges = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line or (lineno == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise InvalidFileError(f"{path}:{lineno}: expected two tokens separated by one space, got {line[:60]!r}")
        merges.append((parts[0], parts[1]))
    return merges


def _merge_counting(word: list[int], pair: tuple[int, int], new_id: int, count: int, index: int,
                    stats: dict[tuple[int, int], int], where: dict[tuple[int, int], set[int]],
                    changed: set[tuple[int, int]]) -> list[int]:
    """:func:`merge` for the trainer: replace ``pair`` in ``word`` (which occurs ``count`` times, as word
    number ``index``) and update the pair counts ``stats`` and the index ``where`` at each occurrence's
    neighbours only, so a merge costs its occurrences, not the word's length.

    Each occurrence ``x a b y`` loses ``(x, a)``, ``(a, b)`` and ``(b, y)`` and gains ``(x, ab)`` and
    ``(ab, y)``; ``x`` is read from the merged output, so ``a b a b`` gives one ``(ab, ab)``.
    """
    a, b = pair
    out: list[int] = []
    start, n = 0, len(word)
    while True:
        try:
            j = word.index(a, start)
        except ValueError:
            break
        if j + 1 >= n:
            break
        if word[j + 1] != b:
            out.extend(word[start:j + 1])
            start = j + 1
            continue
        out.extend(word[start:j])
        stats[pair] -= count
        if out:
            left = out[-1]
            stats[(left, a)] -= count
            stats[(left, new_id)] += count
            where[(left, new_id)].add(index)
            changed.update(((left, a), (left, new_id)))
        if j + 2 < n:
            right = word[j + 2]
            stats[(b, right)] -= count
            stats[(new_id, right)] += count
            where[(new_id, right)].add(index)
            changed.update(((b, right), (new_id, right)))
        out.append(new_id)
        start = j + 2
    if not out:
        return word  # no occurrence (the word was listed under a pair it no longer holds)
    out.extend(word[start:])
    return out


# ----------------------------------------------------------------------------------------------
# BPETokenizer: readable, show-your-work


class BPETokenizer(BaseTokenizer):
    """GPT-2's byte-level BPE in plain Python (minGPT's ``bpe.py`` style).

    Text is split into pre-tokens by :data:`GPT2_SPLIT_PATTERN`; each pre-token's UTF-8 bytes are
    written as unicode characters (:func:`bytes_to_unicode`), then neighbouring pieces are merged,
    lowest merge rank first, until no learned merge applies. Results are cached per pre-token.

    Args:
        vocab: token string (in the :func:`bytes_to_unicode` alphabet) -> id, for all tokens,
            as in GPT-2's ``encoder.json``. Ids must be exactly ``0 .. len(vocab) - 1``.
        merges: the learned pairs in rank order, as in GPT-2's ``vocab.bpe``.

    Tokens that are neither one of the 256 bytes nor the result of a merge are special tokens
    (GPT-2 has one, ``<|endoftext|>`` = 50256).

    >>> tok = BPETokenizer.gpt2()
    >>> tok.encode("Hello world"), tok.vocab_size, tok.eot_token
    ([15496, 995], 50257, 50256)
    """

    def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]]) -> None:
        if sorted(vocab.values()) != list(range(len(vocab))):
            raise InvalidValueError("token ids must be exactly 0 .. len(vocab) - 1 (each used once)")
        u2b = _unicode_to_bytes()
        missing = [u for u in u2b if u not in vocab]
        if missing:
            raise InvalidValueError(f"vocab lacks single-byte tokens {missing[:5]}...; byte-level BPE needs all 256")
        self.merges: list[tuple[str, str]] = [tuple(m) for m in merges]  # type: ignore[misc]
        self.bpe_ranks: dict[tuple[str, str], int] = {pair: rank for rank, pair in enumerate(self.merges)}
        regular = set(u2b)
        for a, b in self.merges:
            for piece in (a, b, a + b):
                if piece not in vocab:
                    raise InvalidValueError(f"merge ({a!r}, {b!r}) uses {piece!r}, which is not in the vocab")
            regular.add(a + b)
        self.encoder: dict[str, int] = {s: i for s, i in vocab.items() if s in regular}
        self.special_tokens: dict[str, int] = {s: i for s, i in vocab.items() if s not in regular}
        self.decoder: dict[int, str] = {i: s for s, i in self.encoder.items()}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = u2b
        # id -> the bytes it stands for (special tokens: their UTF-8 text)
        self._id_bytes: list[bytes] = [b""] * len(vocab)
        for s, i in self.encoder.items():
            self._id_bytes[i] = bytes(u2b[c] for c in s)
        for s, i in self.special_tokens.items():
            self._id_bytes[i] = s.encode("utf-8")
        self.merge_history: list[tuple[tuple[str, str], str, int]] = []  # filled by train()
        self._cache: dict[str, list[int]] = {}

    # -- constructors ------------------------------------------------------------------------

    @classmethod
    def gpt2(cls) -> BPETokenizer:
        """GPT-2's tokenizer from the shipped ``encoder.json`` + ``vocab.bpe`` (cached, checked)."""
        return _gpt2_bpe(str(GPT2_ASSETS_DIR))

    @classmethod
    def from_files(cls, vocab_file: str | os.PathLike, merges_file: str | os.PathLike) -> BPETokenizer:
        """Load a GPT-2 style ``encoder.json``/``vocab.json`` and ``vocab.bpe``/``merges.txt`` pair."""
        vocab = read_json(vocab_file, "a BPE vocabulary")
        if not isinstance(vocab, dict) or not all(type(i) is int for i in vocab.values()):
            raise InvalidFileError(f"{vocab_file} is not a BPE vocabulary: it must be a JSON object of token -> "
                                   f"integer id, got {_kind(vocab)}")
        merges = _read_merges(Path(merges_file))
        try:
            return cls(vocab, merges)
        except InvalidValueError as e:
            raise InvalidFileError(f"{vocab_file} and {Path(merges_file).name} do not make a BPE tokenizer: "
                                   f"{e}") from None

    @classmethod
    def from_directory(cls, directory: str | os.PathLike) -> BPETokenizer:
        """Load ``vocab.json`` + ``merges.txt`` written by :meth:`save` (or a Hugging Face GPT-2 folder)."""
        directory = Path(directory)
        vocab_file, merges_file = directory / VOCAB_FILE, directory / MERGES_FILE
        if not (vocab_file.is_file() and merges_file.is_file()):
            raise MissingFileError(
                f"{directory} has no {VOCAB_FILE} + {MERGES_FILE}; save a BPE tokenizer there first"
            )
        return cls.from_files(vocab_file, merges_file)

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        *,
        special_tokens: Sequence[str] = (ENDOFTEXT,),
        verbose: bool = False,
    ) -> BPETokenizer:
        """Learn byte-level BPE merges on ``text`` until the vocabulary has ``vocab_size`` tokens.

        Ids: 0..255 are the raw bytes (id == byte value), then one id per merge in the order learned,
        then ``special_tokens``. The text is pre-tokenized with GPT-2's regex (merges never cross a
        pre-token) and counted once per unique pre-token, so each step only revisits the words that
        contain the chosen pair. A pre-token longer than :data:`MAX_TRAIN_WORD_BYTES` bytes is cut into
        pieces of that many bytes, which keeps the time linear in the text's length (no token learned is
        longer than that). Ties between equally frequent pairs go to the smaller pair of ids.
        ``merge_history`` records ``((left, right), merged, count)`` for each step, as text.

        >>> tok = BPETokenizer.train("low lower lowest " * 20, 256 + 3 + 1)
        >>> tok.merge_history[0]
        (('l', 'o'), 'lo', 60)
        """
        check_text(text, "train")
        special_tokens = list(dict.fromkeys(special_tokens))
        n_merges = vocab_size - 256 - len(special_tokens)
        if n_merges < 0:
            raise InvalidValueError(
                f"vocab_size={vocab_size} is too small for 256 byte tokens + "
                f"{len(special_tokens)} special tokens"
            )

        # 1. Pre-tokenize (never across a special token) and count each unique pre-token once.
        if special_tokens:
            text_parts = regex.split("|".join(regex.escape(s) for s in special_tokens), text)
        else:
            text_parts = [text]
        word_counts: Counter[str] = Counter()
        for part in text_parts:
            word_counts.update(_SPLIT_RE.findall(_fix_surrogates(part)))
        pieces: Counter[bytes] = Counter()
        for w, c in word_counts.items():
            b = w.encode("utf-8")
            for start in range(0, len(b), MAX_TRAIN_WORD_BYTES):
                pieces[b[start:start + MAX_TRAIN_WORD_BYTES]] += c
        words: list[list[int]] = [list(w) for w in pieces]
        counts: list[int] = list(pieces.values())

        # 2. Pair counts over all words, which words hold each pair, and a max-heap of pairs by count.
        stats: dict[tuple[int, int], int] = defaultdict(int)
        where: dict[tuple[int, int], set[int]] = defaultdict(set)
        for i, (word, count) in enumerate(zip(words, counts)):
            for pair in zip(word, word[1:]):
                stats[pair] += count
                where[pair].add(i)
        heap = [(-c, pair) for pair, c in stats.items()]
        heapq.heapify(heap)

        token_bytes: list[bytes] = [bytes([b]) for b in range(256)]
        known = set(token_bytes)
        merges: list[tuple[int, int]] = []
        history: list[tuple[tuple[str, str], str, int]] = []
        while len(merges) < n_merges:
            # 3. The most frequent pair (heap entries go stale as counts change; skip those).
            while heap:
                neg_count, pair = heapq.heappop(heap)
                is_current = stats.get(pair, 0) == -neg_count > 0
                if is_current and token_bytes[pair[0]] + token_bytes[pair[1]] not in known:
                    break  # (a pair spelling an existing token is skipped: tokens stay unique)
            else:
                raise InvalidValueError(
                    f"text too small: only {len(merges)} merges possible, {n_merges} needed for "
                    f"vocab_size={vocab_size}; use more text or a smaller vocab_size"
                )
            count = -neg_count
            new_id = 256 + len(merges)
            merges.append(pair)
            token_bytes.append(token_bytes[pair[0]] + token_bytes[pair[1]])
            known.add(token_bytes[-1])
            left, right, new = (token_bytes[i].decode("utf-8", "replace") for i in (*pair, new_id))
            history.append(((left, right), new, count))
            if verbose:
                print(f"merge {len(merges)}/{n_merges}: {left!r} + {right!r} -> {new!r} ({count} times)")

            # 4. Merge the pair inside every word that holds it, updating the pair counts around each
            #    occurrence only (a word may stay listed under a pair it no longer holds: it is skipped).
            changed: set[tuple[int, int]] = {pair}
            for i in sorted(where.pop(pair)):
                words[i] = _merge_counting(words[i], pair, new_id, counts[i], i, stats, where, changed)
            for p in changed:
                if stats.get(p, 0) > 0:
                    heapq.heappush(heap, (-stats[p], p))
                else:
                    stats.pop(p, None)
                    where.pop(p, None)

        # 5. Write the result in GPT-2's format: tokens as bytes_to_unicode strings.
        b2u = bytes_to_unicode()
        as_str = ["".join(b2u[b] for b in tb) for tb in token_bytes]
        vocab = {s: i for i, s in enumerate(as_str)}
        for j, s in enumerate(special_tokens):
            if s in vocab:
                raise InvalidValueError(
                    f"special token {s!r} was also learned as an ordinary token; pick another name"
                )
            vocab[s] = len(as_str) + j
        tok = cls(vocab, [(as_str[a], as_str[b]) for a, b in merges])
        tok.merge_history = history
        return tok

    # -- encoding ----------------------------------------------------------------------------

    def apply_merges(self, parts: Sequence[str], steps: list[dict[str, Any]] | None = None) -> list[str]:
        """Merge neighbouring pieces of one pre-token, lowest merge rank first, until no learned merge
        applies; each merge is appended to ``steps`` (if given) as ``{"pair", "rank", "parts"}``.

        >>> BPETokenizer.gpt2().apply_merges("Ġhi")        # a pre-token " hi", in bytes_to_unicode letters
        ['Ġhi']
        """
        parts = list(parts)
        while len(parts) >= 2:
            pair = min(get_stats(parts), key=lambda p: self.bpe_ranks.get(p, math.inf))
            if pair not in self.bpe_ranks:
                break  # no learned merge applies any more
            parts = merge(parts, pair, pair[0] + pair[1])
            if steps is not None:
                steps.append({"pair": pair, "rank": self.bpe_ranks[pair], "parts": parts})
        return parts

    def _encode_word(self, word: str) -> list[int]:
        ids = self._cache.get(word)
        if ids is None:
            ids = [self.encoder[t] for t in self.apply_merges([self.byte_encoder[b] for b in word.encode("utf-8")])]
            if len(self._cache) > 200_000:
                self._cache.clear()
            self._cache[word] = ids
        return ids

    def _encode_ordinary(self, text: str) -> list[int]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _fix_surrogates(text)
        return [i for word in _SPLIT_RE.findall(text) for i in self._encode_word(word)]

    def encode_and_show_work(self, text: str, *, allowed_special: AllowedSpecial = frozenset(),
                             disallowed_special: DisallowedSpecial = "all") -> dict[str, Any]:
        """:meth:`encode`, returning every intermediate step (one list entry per pre-token).

        Keys: ``text``; ``pre_tokens`` (regex pieces); ``bytes`` (their UTF-8 bytes); ``unicode``
        (bytes written with :func:`bytes_to_unicode`); ``merges`` (per pre-token, the steps
        ``{"pair", "rank", "parts"}`` of :meth:`apply_merges`); ``tokens`` (final pieces); ``ids`` (flat, as
        from :meth:`encode`); ``str_tokens``.

        >>> work = BPETokenizer.gpt2().encode_and_show_work(" hello")
        >>> work["unicode"], work["ids"]
        (['Ġhello'], [23748])
        >>> for step in work["merges"][0]:
        ...     print(step["rank"], step["pair"], step["parts"])
        2 ('h', 'e') ['Ġ', 'he', 'l', 'l', 'o']
        41 ('l', 'l') ['Ġ', 'he', 'll', 'o']
        83 ('Ġ', 'he') ['Ġhe', 'll', 'o']
        5712 ('Ġhe', 'll') ['Ġhell', 'o']
        23492 ('Ġhell', 'o') ['Ġhello']
        """
        text = check_text(text, "encode_and_show_work")
        allowed, disallowed = self._special_sets(allowed_special, disallowed_special)
        self._refuse(text, disallowed)
        work: dict[str, Any] = {"text": text, "pre_tokens": [], "bytes": [], "unicode": [], "merges": [],
                                "tokens": [], "ids": []}
        for chunk, special in self._split_special(_fix_surrogates(text), allowed):
            for word in [chunk] if special else _SPLIT_RE.findall(chunk):
                raw = word.encode("utf-8")
                unicode = word if special else "".join(self.byte_encoder[b] for b in raw)
                steps: list[dict[str, Any]] = []
                parts = [word] if special else self.apply_merges(unicode, steps)
                for key, value in zip(("pre_tokens", "bytes", "unicode", "merges", "tokens"),
                                      (word, raw, unicode, steps, parts)):
                    work[key].append(value)
                work["ids"].extend([self.special_tokens[word]] if special else [self.encoder[t] for t in parts])
        work["str_tokens"] = self.str_tokens(work["ids"])
        return work

    # -- decoding ----------------------------------------------------------------------------

    def _token_bytes(self, i: int) -> bytes:
        return self._id_bytes[i]

    # -- properties & saving -----------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of token ids (V), special tokens included."""
        return len(self._id_bytes)

    def token_bytes(self, i: int) -> bytes:
        """The bytes of token ``i``."""
        return self._id_bytes[check_ids([i], self.vocab_size)[0]]

    def mergeable_ranks(self) -> dict[bytes, int]:
        """Each ordinary token's bytes -> its id (= its merge rank): what ``tiktoken.Encoding`` is built from."""
        return {self._id_bytes[i]: i for i in self.encoder.values()}

    def vocab(self) -> dict[str, int]:
        """All tokens (byte-unicode strings and special tokens) -> ids, ordered by id."""
        return dict(sorted({**self.encoder, **self.special_tokens}.items(), key=lambda kv: kv[1]))

    def save(self, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write ``vocab.json`` + ``merges.txt`` (GPT-2 / Hugging Face format) into ``directory``, under the
        folder rule (:func:`~gptlearn.tokenizers.base.save_files`: files gptlearn did not write are never replaced).

        For GPT-2 these files are byte-identical to ``encoder.json`` and ``vocab.bpe``, and
        ``transformers.GPT2Tokenizer.from_pretrained(directory)`` can load them.
        """
        lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in self.merges]
        return save_files(directory, {VOCAB_FILE: json.dumps(self.vocab()), MERGES_FILE: "\n".join(lines) + "\n"},
                          overwrite=overwrite)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
            f"special_tokens={list(self.special_tokens)})"
        )


def _kind(vocab: Any) -> str:
    """What a vocabulary file holds instead of token -> id, in a few words."""
    if not isinstance(vocab, dict):
        return f"a JSON {type(vocab).__name__}"
    token, i = next((t, i) for t, i in vocab.items() if type(i) is not int)
    return f"{token!r}: {i!r}"[:60]


@functools.lru_cache(maxsize=None)
def _gpt2_bpe(directory: str) -> BPETokenizer:
    encoder_json, vocab_bpe = _verified_gpt2_files(directory)
    return BPETokenizer.from_files(encoder_json, vocab_bpe)


