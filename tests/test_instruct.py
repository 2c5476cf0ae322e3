"""Instruction tuning: the template, the masked targets, padding, and a tiny model that learns to answer."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gptlearn import GPT, GPTConfig
from gptlearn.instruct import (IGNORE_INDEX, Example, collate, encode_example, exact_match, format_prompt,
                               instruction_tune, single_token_words, synthetic_instructions)
from gptlearn.tokenizers import Tokenizer

WORDS = ["king", "queen", "love", "night", "day", "heart", "house", "water", "fire", "time", "man", "good"]


def test_synthetic_examples_follow_their_task():
    data = synthetic_instructions(WORDS, 50, seed=3)
    assert data == synthetic_instructions(WORDS, 50, seed=3)
    for e in data:
        words = e.input.split()
        want = {"repeat": words, "reverse": words[::-1], "first word": words[:1], "last word": words[-1:]}
        assert e.response.split() == want[e.instruction]
        assert 2 <= len(words) <= 4 and len(set(words)) == len(words)
    assert {e.instruction for e in data} == {"repeat", "reverse", "first word", "last word"}


def test_encoding_ends_with_eot_and_collate_masks_prompt_and_padding():
    tok = Tokenizer.gpt2()
    a, b = Example("reverse", "king queen", "queen king"), Example("repeat", "love", "love")
    ids, n_prompt = encode_example(tok, a)
    assert ids[-1] == tok.eot_token and tok.decode(ids[:n_prompt]) == format_prompt("reverse", "king queen")
    assert tok.decode(ids[n_prompt:-1]) == " queen king"
    rows = [encode_example(tok, a), encode_example(tok, b)]
    x, y = collate(rows, pad_id=tok.eot_token)
    T = max(len(r[0]) for r in rows) - 1
    assert x.shape == y.shape == (2, T)
    for row, (ids, n) in enumerate(rows):
        kept = (y[row] != IGNORE_INDEX).nonzero().flatten().tolist()
        assert kept == list(range(n - 1, len(ids) - 1))  # exactly the response's tokens and the end-of-text
        assert y[row, kept].tolist() == ids[n:]
        assert x[row, :len(ids) - 1].tolist() == ids[:-1]
    x_all, y_all = collate(rows, pad_id=tok.eot_token, mask_prompt=False)
    assert torch.equal(x_all, x)
    assert (y_all[0] != IGNORE_INDEX).sum() == len(rows[0][0]) - 1  # every real token, no padding


def test_masked_loss_is_the_mean_over_response_tokens_only(random_gpt):
    tok = Tokenizer.gpt2()
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, n_positions=64)).eval()
    rows = [encode_example(tok, e) for e in synthetic_instructions(WORDS, 3, seed=0)]
    x, y = collate(rows, pad_id=tok.eot_token)
    logits = model(x)  # (B, T, V)
    keep = y != IGNORE_INDEX
    by_hand = -logits.log_softmax(-1).gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)[keep].mean()
    torch.testing.assert_close(model.loss(x, y), by_hand, rtol=0, atol=1e-5)
    torch.testing.assert_close(F.cross_entropy(logits.transpose(1, 2), y), by_hand, rtol=0, atol=1e-5)


@pytest.mark.slow  # about a hundred training steps of the bundled model
def test_the_bundled_model_learns_to_answer():
    from gptlearn.pretrained import BUNDLED

    if not (BUNDLED["gptlearn-mini"] / "config.json").is_file():
        pytest.skip("the bundled gptlearn-mini is absent")
    model = GPT.from_pretrained("gptlearn-mini")
    tok = model.tokenizer
    words = single_token_words(tok, WORDS)
    assert len(words) >= 8
    data = synthetic_instructions(words, 300, tasks=("first word", "last word"), seed=0)
    held = [e for e in synthetic_instructions(words, 100, tasks=("first word", "last word"), seed=1)
            if e not in set(data)][:20]
    before = exact_match(model, tok, held, max_new_tokens=3)
    losses = instruction_tune(model, tok, data, steps=80, lr=2e-3, batch_size=8)
    assert sum(losses[-10:]) < sum(losses[:10]) / 4
    after = exact_match(model, tok, held, max_new_tokens=3)
    assert before <= 0.1 and after >= 0.8, (before, after)
