"""The topic benchmark shipped in gptlearn/assets/data: its size, and that its splits are clean."""
from __future__ import annotations

import re
from collections import Counter

import pytest

from gptlearn.analysis import TOPIC_SENTENCES, neighbour_chance
from gptlearn.data import load_topics, read_pairs
from gptlearn.errors import InvalidValueError


def _key(sentence: str) -> str:
    """A sentence without case, punctuation or spacing: near-copies compare equal."""
    return re.sub(r"[^a-z0-9]+", " ", sentence.lower()).strip()


@pytest.fixture(scope="module")
def splits() -> dict[str, tuple[list[str], list[str]]]:
    return {split: load_topics(split) for split in ("dev", "test")}


def test_twenty_topics_of_thirty_sentences_split_in_half(splits):
    counts = {split: Counter(topics) for split, (_, topics) in splits.items()}
    assert set(counts["dev"]) == set(counts["test"]) and len(counts["dev"]) >= 20
    assert all((counts["dev"] + counts["test"])[t] >= 30 for t in counts["dev"])
    assert all(n == 15 for c in counts.values() for n in c.values())  # half of each topic in each split
    for sentences, topics in splits.values():
        assert len(sentences) == len(topics) and all(s and s == s.strip() and "\t" not in s for s in sentences)
    assert neighbour_chance(splits["test"][1]) == pytest.approx(14 / 299)


def test_no_duplicates_no_overlap_and_nothing_from_the_book(splits):
    dev, test = ([_key(s) for s in sentences] for sentences, _ in splits.values())
    assert len(set(dev)) == len(dev) and len(set(test)) == len(test), "a sentence appears twice in a split"
    assert not set(dev) & set(test), "a sentence is in both splits"
    chapter_9 = {_key(s) for sents in TOPIC_SENTENCES.values() for s in sents}
    book_pairs = {_key(s) for name in ("book-pairs", "book-pairs-dev")
                  for s in read_pairs(name).unique_sentences()}
    assert not (set(dev) | set(test)) & (chapter_9 | book_pairs), "the benchmark repeats a sentence of the book"


def test_lengths_vary(splits):
    words = [len(s.split()) for sentences, _ in splits.values() for s in sentences]
    assert min(words) <= 2 and max(words) >= 20  # one-word exclamations to long sentences


def test_unknown_split_is_a_clear_error():
    with pytest.raises(InvalidValueError, match="'dev', 'test'"):
        load_topics("train")
