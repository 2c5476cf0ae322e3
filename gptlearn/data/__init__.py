"""Data for training, in three rooms: named data sets with pinned hashes and text loading
(:mod:`.datasets`), text as token batches (:mod:`.tokens`, book chapter "Training a GPT") and sentence-pair,
sentence and topic files (:mod:`.pairs`, chapters "Seeing embeddings" and "Training embeddings").
Every name is re-exported here, so ``gptlearn.data.X`` works for each of them.

>>> text = load_text("tinyshakespeare")                       # doctest: +SKIP
>>> ds = TokenDataset(text, Tokenizer.gpt2())                  # doctest: +SKIP
>>> x, y = ds.get_batch("train", 8, 64, generator)             # (B, T) each; y is x shifted by one  # doctest: +SKIP
"""
# ruff: noqa: F401  (a re-export module: every name imported here is re-exported, so gptlearn.data.X works)
from __future__ import annotations

from . import datasets, pairs, tokens
from .datasets import (ASSETS, CACHE_ENV, DATA_DIR_ENV, DATASETS, DOWNLOAD_MAX_BYTES, DOWNLOAD_TIMEOUT_S, OFFLINE_ENV,
                       Dataset, cache_dir, data_folder, dataset_path, load_text, split_text)
from .pairs import (BOOK_PAIRS, NAMED_PAIRS, PAIRS_HEADER, STSB_COLUMNS, STSB_PAIRS, TOPIC_SPLITS, PairData,
                    load_topics, read_pairs, read_sentences)
from .tokens import MAX_BATCH_TOKENS, TokenDataset, tokenizer_id

__all__ = [
    # named data sets, found or downloaded, hash-checked
    "DATASETS", "Dataset", "cache_dir", "data_folder", "dataset_path",
    # text, and text as token batches
    "load_text", "split_text", "tokenizer_id", "TokenDataset",
    # sentence pairs with similarity scores, and unlabelled sentences
    "NAMED_PAIRS", "PairData", "read_pairs", "read_sentences",
    # the topic benchmark: everyday sentences labelled by topic
    "TOPIC_SPLITS", "load_topics",
]
