"""Sentence embeddings from a GPT: one vector per sentence, pooled from its tokens' hidden states
(book chapter 8).

Legend: B batch, T tokens, C n_embd, N sentences, D embedding width (C, or the projection's output).

A GPT gives one vector per *token*. To get one per *sentence* we pool them: average them ("mean"),
take each feature's largest value ("max"), keep the last token's vector (the only one that has seen
the whole sentence, "last"), the first token's ("first"), or a mean that weights later tokens more
("weighted_mean", as in SGPT, since later tokens have read more of the sentence).

>>> embedder = Embedder(GPT(GPTConfig.from_preset("tiny")))             # doctest: +SKIP
>>> embedder.encode(["A cat sat.", "A dog ran."]).shape                 # doctest: +SKIP
(2, 128)
"""
from __future__ import annotations

import json
import logging
import operator
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_bool, check_device, check_int, check_path, check_texts, describe
from .errors import InvalidFileError, InvalidTypeError, InvalidValueError, MissingFileError
from .safeio import read_json
from .model import GPT, from_pretrained
from .tokenizers.base import encode_document
from .similarity import SIMILARITY_FNS, pairwise
from .pretrained import BUNDLED, load_weights_file, save_pretrained
from .devices import resolve_device
from .atomic import recover_folder, write_folder
from .tokenizers import BPETokenizer, TOKENIZER_FILES, Tokenizer
from .folders import expand_path

if TYPE_CHECKING:
    from .tokenizers import TokenizerLike

__all__ = ["POOLING", "pool", "token_batches", "Embedder"]

POOLING = ("mean", "max", "last", "first", "weighted_mean")
_SETTINGS = ("pooling", "layer", "max_length", "similarity_fn_name")
# gptlearn's pooling -> sentence-transformers' Pooling mode (its config key in 1_Pooling/config.json)
_ST_POOLING = {"mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens", "last": "pooling_mode_lasttoken",
               "first": "pooling_mode_cls_token", "weighted_mean": "pooling_mode_weightedmean_tokens"}
_ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "tokenizer_config.json",
             "1_Pooling", "2_Dense")
_log = logging.getLogger(__name__)
_PAD_ID = 0  # any valid id: padding sits after the real tokens, so no real token ever reads it


def pool(hidden: torch.Tensor, mask: torch.Tensor, strategy: str = "mean") -> torch.Tensor:
    """Pool token vectors into one vector per sequence: hidden (B, T, C), mask (B, T) -> (B, C).

    ``mask`` is True for real tokens and False for padding; padding never changes the result.

    >>> h = torch.tensor([[[1.0], [3.0], [100.0]]])        # (B=1, T=3, C=1), the last token is padding
    >>> m = torch.tensor([[True, True, False]])
    >>> [pool(h, m, s).item() for s in POOLING]            # mean, max, last, first, (1*1 + 2*3) / 3
    [2.0, 3.0, 3.0, 1.0, 2.3333332538604736]
    """
    if strategy not in POOLING:
        raise InvalidValueError(f"unknown pooling {strategy!r}; choose one of {', '.join(POOLING)}")
    if hidden.dim() != 3 or mask.shape != hidden.shape[:2]:
        raise InvalidValueError(f"expected hidden (B, T, C) and mask (B, T), got {tuple(hidden.shape)} and "
                                f"{tuple(mask.shape)}")
    mask = mask.bool()
    if strategy in ("mean", "weighted_mean"):
        w = mask.cumsum(dim=1) * mask if strategy == "weighted_mean" else mask  # weights 1..n on real tokens
        w = w.to(hidden.dtype).unsqueeze(-1)  # (B, T) -> (B, T, 1)
        return (hidden * w).sum(dim=1) / w.sum(dim=1).clamp(min=1e-9)  # (B, T, C) -> (B, C)
    if strategy == "max":
        filled = hidden.masked_fill(~mask.unsqueeze(-1), torch.finfo(hidden.dtype).min)  # (B, T, C)
        return filled.amax(dim=1)  # (B, T, C) -> (B, C)
    positions = torch.arange(mask.size(1), device=mask.device)  # (T,)
    if strategy == "last":
        where = (positions * mask).argmax(dim=1)  # (B,) index of the last real token
    else:
        where = mask.int().argmax(dim=1)  # (B,) index of the first real token
    return hidden[torch.arange(hidden.size(0), device=hidden.device), where]  # (B, T, C) -> (B, C)


def token_batches(lengths: Sequence[int], batch_size: int) -> list[tuple[int, int]]:
    """Split sentences sorted longest first into ``(start, stop)`` batches of at most
    ``batch_size * lengths[0]`` padded tokens: the first batch holds ``batch_size`` sentences, later
    ones as many as fit (a batch pads to its first, longest sentence).

    Matrix products run faster on more rows, so packing many short sentences into one batch lifts
    ``encode``'s sentences per second (bench/README.md has the measurements).

    >>> token_batches([6, 5, 3, 3, 2, 2, 2, 1], batch_size=2)    # 12 tokens a batch
    [(0, 2), (2, 6), (6, 8)]
    """
    if batch_size < 1:
        raise InvalidValueError(f"batch_size must be >= 1, got {batch_size}")
    budget = batch_size * max(lengths[0], 1) if lengths else 0
    batches, start = [], 0
    while start < len(lengths):
        longest = max(lengths[start], 1)
        stop = start + max(1, min(len(lengths) - start, budget // longest))
        batches.append((start, stop))
        start = stop
    return batches


class Embedder(nn.Module):
    """A GPT turned into a sentence encoder (book chapter 8).

    Args:
        model: the :class:`~gptlearn.GPT` whose hidden states are pooled.
        tokenizer: defaults to ``model.tokenizer``.
        pooling: one of ``POOLING``: "mean", "max", "last", "first", "weighted_mean".
        layer: which hidden states to pool: ``-1`` is after the final LayerNorm (Hugging Face's
            ``last_hidden_state``), ``i`` is the residual stream after block ``i``.
        max_length: longer sentences keep their first ``max_length`` tokens, with a warning that
            says how many were cut; defaults to the model's context, ``n_positions``.
        projection: an optional learned ``nn.Linear`` applied after pooling (e.g. trained with
            :mod:`gptlearn.embed_train`); it sets the embedding width ``D``.
        similarity_fn_name: what :meth:`similarity` computes, as in sentence-transformers v3+:
            "cosine" (the default), "dot", "euclidean" or "manhattan".

    ``embedder(sentences)`` -> (N, D) tensor with gradients, for training; :meth:`encode` -> numpy,
    batched and without gradients, for use. :meth:`encode`, :meth:`similarity` and
    :meth:`save_pretrained` follow sentence-transformers, and a saved embedder loads there as
    ``SentenceTransformer(folder)``.
    """

    def __init__(self, model: GPT, tokenizer: TokenizerLike | None = None, pooling: str = "mean", layer: int = -1,
                 max_length: int | None = None, projection: nn.Linear | None = None,
                 similarity_fn_name: str | None = None) -> None:
        super().__init__()
        if not isinstance(model, GPT):
            raise InvalidTypeError(f"model must be a gptlearn GPT (e.g. gptlearn.from_pretrained('gptlearn-mini')), "
                                   f"got {describe(model)}; Embedder.from_pretrained(name) loads one by name")
        if projection is not None and not isinstance(projection, nn.Linear):
            raise InvalidTypeError(f"projection must be an nn.Linear (or None), got {describe(projection)}")
        config = model.config
        if not isinstance(pooling, str) or pooling not in POOLING:
            raise InvalidValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLING)}")
        if _integer(layer) is None or not -1 <= layer < config.n_layer:
            raise InvalidValueError(f"layer must be an integer in -1..{config.n_layer - 1} for this "
                                    f"{config.n_layer}-layer model, got {layer!r}")
        max_length = config.n_positions if max_length is None else max_length
        if _integer(max_length) is None or not 1 <= max_length <= config.n_positions:
            raise InvalidValueError(f"max_length must be an integer in 1..{config.n_positions} (the model's context), "
                                    f"got {max_length!r}")
        if projection is not None and projection.in_features != config.n_embd:
            raise InvalidValueError(f"projection takes {projection.in_features} features but the model's hidden "
                                    f"states have {config.n_embd}; build it as nn.Linear({config.n_embd}, D)")
        tokenizer = tokenizer if tokenizer is not None else model.tokenizer
        if getattr(tokenizer, "vocab_size", 0) > config.vocab_size:
            raise InvalidValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary has "
                                    f"{config.vocab_size}: its ids would not fit; use the model's own tokenizer")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.layer = int(layer)
        self.max_length = int(max_length)
        self.projection = projection
        self.similarity_fn_name = similarity_fn_name or "cosine"
        self.train(model.training)  # start in the model's mode (a loaded model is in eval mode)

    @property
    def similarity_fn_name(self) -> str:
        """What :meth:`similarity` computes: "cosine", "dot", "euclidean" or "manhattan"."""
        return self._similarity_fn_name

    @similarity_fn_name.setter
    def similarity_fn_name(self, name: str) -> None:
        if not isinstance(name, str) or name not in SIMILARITY_FNS:
            raise InvalidValueError(f"unknown similarity_fn_name {name!r}; choose one of {', '.join(SIMILARITY_FNS)}")
        self._similarity_fn_name = name

    @property
    def dimensions(self) -> int:
        """Width D of each embedding."""
        return self.projection.out_features if self.projection is not None else self.model.config.n_embd

    @property
    def device(self) -> torch.device:
        return self.model.device

    def estimate_flops(self, rows: Sequence[Sequence[int]], *, training: bool = False) -> int:
        """At least the floating-point operations of embedding the token-id ``rows`` once (a backward pass
        too with ``training``): :meth:`GPTConfig.estimate_flops` for each row's own length, through the
        layers up to ``layer``, without the unembedding. Padding and the pooling come on top."""
        config = self.model.config
        if self.layer != -1:
            config = config.replace(n_layer=self.layer + 1)
        lengths: dict[int, int] = {}
        for r in rows:
            lengths[len(r)] = lengths.get(len(r), 0) + 1
        return sum(config.estimate_flops(batch_size=n, seq_len=t, training=training, logits=False)
                   for t, n in lengths.items())

    # ---- tokens in, vectors out ------------------------------------------------------------------
    def tokenize(self, sentences: Sequence[str]) -> list[list[int]]:
        """Token ids of each sentence, cut to ``max_length`` (with a warning naming how many were cut)."""
        if isinstance(sentences, str):
            raise InvalidTypeError("expected a list of sentences, got one str; wrap it in a list: [sentence]")
        sentences = list(sentences)
        for i, s in enumerate(sentences):
            if not isinstance(s, str):
                raise InvalidTypeError(f"sentence {i + 1} (index {i}) is a {type(s).__name__}, not a str")
            if not s:
                raise InvalidValueError(f"sentence {i + 1} (index {i}) is empty; every sentence needs at least one "
                                        "token")
        # sentences are data: special-token text in them is plain text (tiktoken's encode_ordinary_batch)
        encode_batch = getattr(self.tokenizer, "encode_ordinary_batch", None)
        rows = encode_batch(sentences) if encode_batch else [encode_document(self.tokenizer, s) for s in sentences]
        cut = sum(len(r) > self.max_length for r in rows)
        if cut:
            warnings.warn(f"{cut} of {len(rows)} sentences were longer than {self.max_length} tokens and were "
                          f"truncated to their first {self.max_length} tokens", stacklevel=3)
        return [r[: self.max_length] for r in rows]

    def embed_tokens(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """Embed a batch of token-id lists -> (B, D), float32, on the model's device."""
        lengths = torch.tensor([len(r) for r in rows])  # (B,)
        T = int(lengths.max())
        idx = torch.tensor([list(r) + [_PAD_ID] * (T - len(r)) for r in rows], dtype=torch.long)  # (B, T)
        mask = torch.arange(T) < lengths[:, None]  # (B, T) True on real tokens
        # Right padding needs no attention mask: a causal model's token t attends only to tokens
        # <= t, so real tokens never see the pads after them; pool() then skips the pads.
        # lengths: the position-wise layers skip the padding (see GPT.hidden_states)
        hidden = self.model.hidden_states(idx.to(self.device), layer=self.layer, lengths=lengths)  # (B, T, C)
        out = pool(hidden.float(), mask.to(self.device), self.pooling)  # (B, T, C) -> (B, C)
        return self.projection(out) if self.projection is not None else out  # (B, C) -> (B, D)

    def forward(self, sentences: Sequence[str]) -> torch.Tensor:
        """Embed ``sentences`` as one batch -> (N, D), with gradients (for training)."""
        rows = self.tokenize(sentences)
        if not rows:
            return torch.empty(0, self.dimensions, device=self.device)
        return self.embed_tokens(rows)

    def encode(self, sentences: str | Sequence[str], *, batch_size: int = 32, show_progress_bar: bool | None = None,
               convert_to_numpy: bool = True, convert_to_tensor: bool = False, normalize_embeddings: bool = False,
               device: str | torch.device | None = None) -> np.ndarray | torch.Tensor | list[torch.Tensor]:
        """Embed many sentences -> (N, D), without gradients; sentence-transformers' ``encode``, with its
        names and defaults. A single str gives one (D,) vector.

        Returns a numpy array (``convert_to_numpy``, the default); one tensor on the model's device
        (``convert_to_tensor=True``, which wins); or, with both False, a list of (D,) tensors.
        ``normalize_embeddings=True`` scales each row to length 1 (then the dot product is the cosine).
        ``show_progress_bar`` shows a tqdm bar; ``None`` shows it when the ``gptlearn.embeddings``
        logger is at INFO or DEBUG. ``device`` moves the embedder there first (as sentence-transformers
        moves its model); ``None`` keeps it where it is.

        Sentences are sorted by length so each batch pads little, and the rows come back in the
        order given. ``batch_size`` sentences of the longest length set the batch's size in tokens;
        shorter sentences share batches of that many tokens (see :func:`token_batches`), so memory
        peaks as in the first batch and short sentences run in bigger, faster matrix products.
        Sentences longer than ``max_length`` tokens are truncated with a ``UserWarning`` that says
        how many were cut. An empty sentence raises ``ValueError``; an empty list gives (0, D).
        """
        sentences_list = check_texts(sentences, "sentences")
        batch_size = check_int(batch_size, "batch_size", low=1)
        for flag, name in ((convert_to_numpy, "convert_to_numpy"), (convert_to_tensor, "convert_to_tensor"),
                           (normalize_embeddings, "normalize_embeddings")):
            check_bool(flag, name)
        if show_progress_bar is not None:
            check_bool(show_progress_bar, "show_progress_bar")
        if device is not None:
            self.to(resolve_device(check_device(device, "device")))
        if show_progress_bar is None:
            show_progress_bar = _log.getEffectiveLevel() in (logging.INFO, logging.DEBUG)
        single = isinstance(sentences, str)
        rows = self.tokenize(sentences_list)
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))  # longest first
        out = torch.empty(len(rows), self.dimensions, device=self.device)  # (N, D)
        batches = token_batches([len(rows[i]) for i in order], batch_size)
        if show_progress_bar:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="Embedding", unit="batch")
        modes = {m: m.training for m in self.modules()}  # put back exactly as found
        self.eval()
        try:
            with torch.inference_mode():
                for start, stop in batches:
                    batch = order[start:stop]
                    out[torch.tensor(batch, device=self.device)] = self.embed_tokens([rows[i] for i in batch])
        finally:
            for m, mode in modes.items():
                m.training = mode
        if normalize_embeddings:
            out = F.normalize(out, dim=-1)
        if single:
            out = out[0]
        if convert_to_tensor:
            return out
        if convert_to_numpy:
            return out.cpu().numpy()
        return out if single else list(out)

    def similarity(self, embeddings1: np.ndarray | torch.Tensor | Sequence[torch.Tensor],
                   embeddings2: np.ndarray | torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Every row of ``embeddings1`` (N, D) against every row of ``embeddings2`` (M, D) -> an (N, M)
        tensor, by :attr:`similarity_fn_name`, as sentence-transformers' ``similarity``: larger is more
        similar. So "euclidean" and "manhattan" give *negative* distances (its ``euclidean_sim`` and
        ``manhattan_sim``), where :mod:`gptlearn.similarity` and ``gptlearn similarity`` give distances.
        A 1-D vector counts as one row."""
        return SIMILARITY_FNS[self.similarity_fn_name](_rows(embeddings1), _rows(embeddings2))  # (N, M)

    def similarity_pairwise(self, embeddings1: np.ndarray | torch.Tensor | Sequence[torch.Tensor],
                            embeddings2: np.ndarray | torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Row ``i`` against row ``i`` only -> (N,), by :attr:`similarity_fn_name` (larger is more similar)."""
        sign = -1.0 if self.similarity_fn_name in ("euclidean", "manhattan") else 1.0
        return sign * pairwise(_rows(embeddings1), _rows(embeddings2), self.similarity_fn_name)  # (N,)

    # ---- saving and loading ----------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, *, sentence_transformers: bool | None = None,
                        overwrite: bool = False) -> Path:
        """Write the model folder (:meth:`GPT.save_pretrained`) plus ``embedder.json`` (pooling, layer,
        max_length, similarity_fn_name, has_projection) and, if there is a projection,
        ``projection.safetensors``; the folder is replaced as a whole (:func:`gptlearn.atomic.write_folder`).

        The folder also loads in sentence-transformers, ``SentenceTransformer(directory)``, with the same
        embeddings: ``modules.json`` lists its Transformer (Hugging Face's ``GPT2Model`` reads
        ``config.json`` + ``model.safetensors``; ``tokenizer_config.json`` gives the tokenizer a padding
        token, on the right), a Pooling module with this pooling, and a Dense module for the
        projection. That needs a byte-level BPE tokenizer with ``<|endoftext|>`` and ``layer=-1``
        (sentence-transformers pools the last hidden state). ``sentence_transformers=None`` writes those
        files when this embedder can be exported and skips them otherwise; ``True`` insists (a
        ValueError says why it cannot); ``False`` never writes them. A folder holding anything gptlearn did
        not write there for an embedder is refused unless ``overwrite`` (:mod:`gptlearn.folders`).
        """
        from safetensors.torch import save_file

        check_path(directory, "directory")
        if sentence_transformers is not None:
            check_bool(sentence_transformers, "sentence_transformers")
        check_bool(overwrite, "overwrite")
        directory = Path(directory)
        why_not = self._why_not_sentence_transformers()
        if sentence_transformers and why_not:
            raise ValueError(f"this embedder cannot be saved for sentence-transformers: {why_not}")
        export = sentence_transformers is not False and why_not is None
        settings = {"pooling": self.pooling, "layer": self.layer, "max_length": self.max_length,
                    "similarity_fn_name": self.similarity_fn_name, "has_projection": self.projection is not None}

        def write(tmp: Path) -> None:
            save_pretrained(self.model, tmp, save_tokenizer=False)  # into this save's folder: one swap for all
            if hasattr(self.tokenizer, "save"):
                self.tokenizer.save(tmp)
            (tmp / "embedder.json").write_text(json.dumps(settings, indent=2) + "\n")
            if self.projection is not None:
                state = {k: v.detach().cpu().contiguous() for k, v in self.projection.state_dict().items()}
                save_file(state, str(tmp / "projection.safetensors"))
            if export:
                self._write_sentence_transformers_files(tmp)

        tokenizer_files = TOKENIZER_FILES if hasattr(self.tokenizer, "save") else ()
        write_folder(directory, write, owns=("embedder.json", "projection.safetensors", *tokenizer_files, *_ST_FILES),
                     kind="embedder", overwrite=overwrite)
        return directory

    def _why_not_sentence_transformers(self) -> str | None:
        """Why sentence-transformers could not load this embedder as it is, or None if it can."""
        if not isinstance(self.tokenizer, (BPETokenizer, Tokenizer)):
            return (f"its tokenizer is a {type(self.tokenizer).__name__}, and Hugging Face's loaders read only "
                    "byte-level BPE (vocab.json + merges.txt)")
        if self.tokenizer.eot_token is None:
            return "its BPE tokenizer has no <|endoftext|> token to pad batches with; train it with that special token"
        if self.layer != -1:
            return (f"it pools layer {self.layer}, and sentence-transformers pools the last hidden state "
                    "(layer=-1, after the final LayerNorm)")
        return None

    def _write_sentence_transformers_files(self, folder: Path) -> None:
        """modules.json and each module's config, in the layout sentence-transformers v3+ reads."""
        from safetensors.torch import save_file

        def dump(path: Path, data: Any) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=2) + "\n")

        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        dump(folder / "sentence_bert_config.json", {"max_seq_length": self.max_length, "do_lower_case": False})
        dump(folder / "1_Pooling" / "config.json",
             {"word_embedding_dimension": self.model.config.n_embd,
              **{key: key == _ST_POOLING[self.pooling] for key in _ST_POOLING.values()},
              "include_prompt": True})
        if self.projection is not None:
            modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
            dump(folder / "2_Dense" / "config.json", {
                "in_features": self.projection.in_features, "out_features": self.projection.out_features,
                "bias": self.projection.bias is not None, "activation_function": "torch.nn.modules.linear.Identity"})
            state = {f"linear.{k}": v.detach().cpu().contiguous() for k, v in self.projection.state_dict().items()}
            save_file(state, str(folder / "2_Dense" / "model.safetensors"))
        dump(folder / "modules.json", modules)
        dump(folder / "config_sentence_transformers.json", {"model_type": "SentenceTransformer", "prompts": {},
                                                            "default_prompt_name": None,
                                                            "similarity_fn_name": self.similarity_fn_name})
        eot = "<|endoftext|>"  # GPT-2's: beginning, end, unknown and (here) padding token; padding on the right
        dump(folder / "tokenizer_config.json", {
            "tokenizer_class": "GPT2Tokenizer", "bos_token": eot, "eos_token": eot, "unk_token": eot, "pad_token": eot,
            "padding_side": "right", "add_prefix_space": False, "model_max_length": self.max_length,
            "errors": "replace"})

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "gptlearn-embed", *, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, **overrides: Any) -> "Embedder":
        """Load a folder written by :meth:`save_pretrained`, a plain model folder, or a model name
        (``"gptlearn-english"``, ``"gpt2"``, ...; see :func:`gptlearn.from_pretrained`). With no argument: the
        bundled sentence embedder ``gptlearn-embed`` (docs/gptlearn-embed.md).

        ``overrides`` (``pooling``, ``layer``, ``max_length``, ``tokenizer``, ``projection``) replace
        the saved settings; ``None`` keeps the saved value. A plain model pools with "mean".
        """

        allowed = {*_SETTINGS, "tokenizer", "projection"}
        unknown = set(overrides) - allowed
        if unknown:
            raise InvalidTypeError(f"unknown option(s) {sorted(unknown)}; Embedder.from_pretrained takes "
                                   f"{sorted(allowed)}")
        folder = _folder(name_or_path)
        model = from_pretrained(name_or_path, device=device, dtype=dtype)
        settings: dict[str, Any] = {}
        if _settings_in(folder):
            settings = _read_settings(folder, model.config)  # a FIFO or a device there: refused, named
        settings.update({k: v for k, v in overrides.items() if v is not None})
        embedder = cls(model, **settings)
        if embedder.projection is not None:
            embedder.projection.to(model.device)
        return embedder

    def extra_repr(self) -> str:
        return (f"pooling={self.pooling!r}, layer={self.layer}, max_length={self.max_length}, "
                f"dimensions={self.dimensions}")


def _folder(name_or_path: str | Path) -> Path:
    """The folder a name or path loads from: the path, or a bundled model's folder (a half-written save is
    recovered first)."""
    folder = recover_folder(expand_path(name_or_path, "name_or_path (the model)"), remove=False)
    if not folder.is_dir() and str(name_or_path) in BUNDLED:
        folder = BUNDLED[str(name_or_path)]  # a bundled embedder carries its pooling in embedder.json
    return folder


def _settings_in(folder: Path) -> bool:
    settings = folder / "embedder.json"
    return settings.exists() or settings.is_symlink()  # a link is read (and refused if it must be) by _read_settings


def has_settings(name_or_path: str | Path) -> bool:
    """Whether ``name_or_path`` (a folder or a bundled name) holds an embedder's settings (embedder.json),
    rather than being a plain language model."""
    return _settings_in(_folder(name_or_path))


def _rows(x: np.ndarray | torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Embeddings as a 2-D tensor: a 1-D vector is one row; a list of (D,) tensors is stacked."""
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], torch.Tensor):
        x = torch.stack(list(x))  # N x (D,) -> (N, D)
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.unsqueeze(0) if t.dim() == 1 else t  # (D,) -> (1, D)


def _integer(value: Any) -> int | None:
    """``value`` as an int if it is an integer (numpy's and torch's too, not a bool), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _read_settings(folder: Path, config) -> dict[str, Any]:
    """``embedder.json`` (+ ``projection.safetensors``) -> keyword arguments for :class:`Embedder`, each field
    checked against the model's ``config``."""
    path = folder / "embedder.json"

    what = "a valid embedder.json"
    raw = read_json(path, what)
    if not isinstance(raw, dict):
        raise InvalidFileError(f"{path} is not {what}: it must be a JSON object, got a JSON {type(raw).__name__}; "
                               "save the embedder again with Embedder.save_pretrained")
    rules = {
        "pooling": (f"one of {', '.join(POOLING)}", lambda v: isinstance(v, str) and v in POOLING),
        "layer": (f"an integer from -1 to {config.n_layer - 1}", lambda v: type(v) is int and -1 <= v < config.n_layer),
        "max_length": (f"an integer from 1 to {config.n_positions}",
                       lambda v: type(v) is int and 1 <= v <= config.n_positions),
        "has_projection": ("true or false", lambda v: isinstance(v, bool)),
        "similarity_fn_name": (f"one of {', '.join(SIMILARITY_FNS)}",
                               lambda v: isinstance(v, str) and v in SIMILARITY_FNS),
    }
    for key, (rule, ok) in rules.items():
        if raw.get(key) is not None and not ok(raw[key]):
            raise InvalidFileError(f"{path} is not {what}: {key} must be {rule}, got "
                                   f"{json.dumps(raw[key], ensure_ascii=False)[:60]}")
    settings = {k: raw[k] for k in _SETTINGS if raw.get(k) is not None}
    if raw.get("has_projection"):
        settings["projection"] = _read_projection(folder / "projection.safetensors", path, config.n_embd)
    return settings


def _read_projection(weights: Path, settings_path: Path, width: int) -> nn.Linear:
    """The (D, C) projection saved beside an embedder.json that sets has_projection."""
    if not weights.is_file():
        raise MissingFileError(f"{settings_path} sets has_projection but {weights.name} is missing from "
                               f"{weights.parent}; save the embedder again")
    state = load_weights_file(weights)
    w, b = state.get("weight"), state.get("bias")
    if (w is None or w.dim() != 2 or w.size(1) != width or set(state) - {"weight", "bias"}
            or (b is not None and b.shape != (w.size(0),))):
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        raise InvalidFileError(f"{weights} must hold a (D, {width}) 'weight' and an optional (D,) 'bias', got "
                               f"{str(shapes)[:100]}; save the embedder again")
    projection = nn.Linear(width, w.size(0), bias=b is not None)
    projection.load_state_dict(state, strict=True)
    return projection
