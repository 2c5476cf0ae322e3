"""The bundled gptlearn-mini: loads offline, its tokenizer round-trips, and it is worth looking at
(measured on the held-out last 10% of TinyShakespeare; numbers in docs/gptlearn-mini.md)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from data_kit import shared_data

import gptlearn
from gptlearn.analysis import (bits_per_byte, induction_scores, previous_token_scores, repeated_passage_loss,
                               unigram_bits_per_byte)
from gptlearn.data import split_text

ASSET = Path(gptlearn.__file__).parent / "assets" / "gptlearn-mini"
pytestmark = pytest.mark.skipif(not (ASSET / "config.json").is_file(), reason="gptlearn-mini asset is absent")


@pytest.fixture(scope="module")
def mini():
    return gptlearn.GPT.from_pretrained("gptlearn-mini")


@pytest.fixture(scope="module")
def held_out():
    return split_text(shared_data("tinyshakespeare.txt").read_text(encoding="utf-8"))


def test_loads_offline_in_float32(mini, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert mini.wte.weight.dtype == torch.float32 and not mini.training
    total = sum(p.stat().st_size for p in ASSET.iterdir())
    assert total <= 25 * 2**20
    c = mini.config
    assert c.vocab_size == mini.tokenizer.vocab_size and c.n_positions >= 256


@pytest.mark.parametrize("text", ["", "To be, or not to be: that is the question.", "ROMEO:\nO, she doth teach",
                                  "naïve café 🤖 한국어"])
def test_tokenizer_round_trips(mini, text):
    ids = mini.tokenizer.encode(text)
    assert mini.tokenizer.decode(ids) == text
    assert all(0 <= i < mini.config.vocab_size for i in ids)


def test_generates_text(mini):
    out = mini.generate("ROMEO:", 20, seed=0)
    assert isinstance(out, str) and out.startswith("ROMEO:") and len(out) > len("ROMEO:")


def test_beats_unigram(mini, held_out):
    train_text, val_text = held_out
    sample = val_text[:20_000]
    bpb = bits_per_byte(mini, sample)
    unigram = unigram_bits_per_byte(train_text, sample, mini.tokenizer)
    assert bpb < unigram - 0.5, (bpb, unigram)


def _previous_token_best(mini, val_text) -> float:
    tokens = mini.to_tokens(val_text[:6000])[:, :256]  # (1, 256)
    prev = previous_token_scores(mini, tokens)  # (L, H)
    assert prev.shape == (mini.config.n_layer, mini.config.n_head)
    return prev.max().item()


def test_has_a_positional_head(mini, held_out):
    """A head far above uniform attention (uniform over 256 positions scores about 0.02)."""
    assert _previous_token_best(mini, held_out[1]) >= 0.2


def test_previous_token_head_goal(mini, held_out):
    """The course's goal for the bundled model: a head with at least half its attention on the previous token."""
    assert _previous_token_best(mini, held_out[1]) >= 0.5


def test_induction_head_goal(mini):
    """A real induction head (TransformerLens' score, 8 x 50 random tokens repeated): at least 0.3, where
    uniform attention scores about 0.01; and it sits above layer 0, after a previous-token head."""
    scores = induction_scores(mini, seq_len=50, batch=8)  # (L, H)
    assert scores.max().item() >= 0.3
    assert scores[0].max().item() < 0.1 < scores[1:].max().item()


def test_copies_a_repeated_held_out_passage(mini, held_out):
    """Held-out passages read twice: the second reading is predicted better (induction on real text).
    The mean gain over 32 passages of 100 tokens is 0.11 nats per token for the shipped model (0.03 for
    the earlier one without induction heads)."""
    first, second = repeated_passage_loss(mini, held_out[1])
    assert second < first - 0.06, (first, second)
    with pytest.raises(ValueError, match="fewer than 32 passages"):
        repeated_passage_loss(mini, "To be, or not to be")


def test_induction_scores_shape_and_range(mini):
    scores = induction_scores(mini, seq_len=50, batch=4)
    assert scores.shape == (mini.config.n_layer, mini.config.n_head)
    assert 0.0 <= scores.min().item() and scores.max().item() <= 1.0
