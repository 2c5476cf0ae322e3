"""The induction chapter's toy: its batches repeat one block with the period they report, its loss counts only
what copying predicts, and the shipped checkpoint (before the circuit) loads with its optimizer state, trains,
and carries the record of its own run."""
from __future__ import annotations

import math

import torch

from gptlearn.analysis import (TOY_STEP, TOY_T, TOY_V, induction_scores, induction_toy_history, load_induction_toy,
                               new_induction_toy, toy_batch, toy_loss, toy_scores)


def test_toy_batch_repeats_one_block():
    g = torch.Generator().manual_seed(0)
    periods = set()
    for _ in range(20):
        x, p = toy_batch(g, batch=3)
        assert x.shape == (3, TOY_T) and 4 <= p <= TOY_T // 2 and int(x.max()) < TOY_V
        assert torch.equal(x[:, p:], x[:, :-p])  # every token equals the one p back
        periods.add(p)
    assert len(periods) > 3  # the period changes from batch to batch


def test_toy_loss_counts_only_copyable_tokens():
    model, _, _ = load_induction_toy()
    x, p = toy_batch(torch.Generator().manual_seed(1), batch=2)
    logits = model(x[:, :-1])
    want = torch.nn.functional.cross_entropy(logits[:, p - 1:].reshape(-1, TOY_V), x[:, p:].reshape(-1))
    torch.testing.assert_close(toy_loss(model, x, p), want)


def test_shipped_checkpoint_is_on_the_plateau_and_trains():
    model, opt, step = load_induction_toy()
    assert step == TOY_STEP
    assert model.lm_head.weight is model.wte.weight  # still tied after loading
    assert induction_scores(model, seq_len=TOY_T // 2)[1].max() < 0.3  # no induction head yet
    state = opt.state[opt.param_groups[0]["params"][0]]
    assert int(state["step"]) == TOY_STEP and state["exp_avg_sq"].abs().sum() > 0
    before = [p.detach().clone() for p in model.parameters()]
    x, p = toy_batch(torch.Generator().manual_seed(2))
    loss = toy_loss(model, x, p)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_shipped_history_is_the_record_of_this_checkpoints_run():
    history = induction_toy_history()
    steps = [row[0] for row in history]
    assert steps == list(range(0, TOY_STEP + 1, 25))
    fresh = new_induction_toy()  # the script's start: the same initial weights
    torch.testing.assert_close(torch.tensor(toy_scores(fresh)), torch.tensor(history[0][1:3]))
    model, _, _ = load_induction_toy()
    torch.testing.assert_close(torch.tensor(toy_scores(model)), torch.tensor(history[-1][1:3]))
    assert max(row[1] for row in history) < 0.3  # no induction head anywhere on the record
    losses = [row[3] for row in history[1:]]
    assert abs(losses[0] - math.log(TOY_V)) < 0.1 and losses[-1] < losses[0] - 0.3  # from uniform, falling
