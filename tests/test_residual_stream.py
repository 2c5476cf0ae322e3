"""The activation cache's residual-stream methods (TransformerLens' names): each identity must hold on a
random model whose biases and LayerNorms are all moved off their initial values.

Legend: N stacked components, B batch, T tokens, C n_embd, H n_head, V vocab. Tolerance 1e-4 in fp32
(the sums agree to ~1e-6).
"""
from __future__ import annotations

import pytest
import torch

from gptlearn.errors import GptlearnError, InvalidValueError

ATOL = 1e-4
L, H, C, V = 3, 4, 32, 97


@pytest.fixture(scope="module", params=[True, False], ids=["fast", "plain"])
def model(request):
    from tests.conftest import _random_gpt

    return _random_gpt(seed=0, noise=0.1, n_layer=L, vocab_size=V, fast=request.param)


@pytest.fixture(scope="module")
def tokens():
    torch.manual_seed(1)
    return torch.randint(0, V, (2, 9))


@pytest.fixture(scope="module")
def run(model, tokens):
    return model.run_with_cache(tokens)


def test_decompose_resid_sums_to_each_stream(run):
    logits, cache = run
    stack, labels = cache.decompose_resid(return_labels=True)
    assert labels[:2] == ["embed", "pos_embed"] and labels[-1] == f"{L - 1}_mlp_out" and len(labels) == 2 + 2 * L
    torch.testing.assert_close(stack.sum(0), cache["resid_post", L - 1], atol=ATOL, rtol=0)
    for layer in range(L):
        torch.testing.assert_close(cache.decompose_resid(layer).sum(0), cache["resid_pre", layer], atol=ATOL, rtol=0)
        mid = cache.decompose_resid(layer, mlp_input=True)
        torch.testing.assert_close(mid.sum(0), cache["resid_mid", layer], atol=ATOL, rtol=0)
    attn, attn_labels = cache.decompose_resid(mode="attn", incl_embeds=False, return_labels=True)
    assert attn_labels == [f"{l}_attn_out" for l in range(L)]
    torch.testing.assert_close(attn, torch.stack([cache["attn_out", l] for l in range(L)]))


def test_each_layers_heads_plus_b_o_are_its_attn_out(model, run):
    _, cache = run
    heads, labels = cache.stack_head_results(return_labels=True)  # (L * H, B, T, C)
    assert heads.shape == (L * H, 2, 9, C) and labels[:2] == ["L0H0", "L0H1"] and labels[-1] == f"L{L - 1}H{H - 1}"
    for layer in range(L):
        total = heads[layer * H:(layer + 1) * H].sum(0) + model.blocks[layer].attn.c_proj.bias
        torch.testing.assert_close(total, cache["attn_out", layer], atol=ATOL, rtol=0)
    # by hand: head h's slice of z through its rows of W_O
    z = cache["z", 1]  # (B, T, H, hs)
    W = model.blocks[1].attn.c_proj.weight  # (C, C) as nn.Linear stores it: out x in
    hs = C // H
    torch.testing.assert_close(heads[H + 2], z[:, :, 2] @ W[:, 2 * hs:3 * hs].T, atol=ATOL, rtol=0)
    cache.compute_head_results()
    torch.testing.assert_close(cache["result", 1][:, :, 2], heads[H + 2])


def test_stack_head_results_remainder_completes_the_stream(run):
    _, cache = run
    for layer in (0, 1, L):
        stack, labels = cache.stack_head_results(layer, incl_remainder=True, return_labels=True)
        assert labels[-1] == "remainder" and stack.shape[0] == layer * H + 1
        want = cache["resid_post", L - 1] if layer == L else cache["resid_pre", layer]
        torch.testing.assert_close(stack.sum(0), want, atol=ATOL, rtol=0)


def test_accumulated_resid_labels_and_values(run):
    _, cache = run
    stack, labels = cache.accumulated_resid(incl_mid=True, return_labels=True)
    assert labels == [x for l in range(L) for x in (f"{l}_pre", f"{l}_mid")] + ["final_post"]
    torch.testing.assert_close(stack[1], cache["resid_mid", 0])
    torch.testing.assert_close(stack[-1], cache["resid_post", L - 1])
    two, labels2 = cache.accumulated_resid(1, return_labels=True)
    assert labels2 == ["0_pre", "1_pre"] and two.shape == (2, 2, 9, C)


def test_logit_lens_is_ln_f_then_unembedding(model, run):
    logits, cache = run
    lens = cache.accumulated_resid(apply_ln=True)  # (L + 1, B, T, C), each state normalised by its own scale
    every = torch.arange(V)
    read = lens @ model.tokens_to_residual_directions(every).T + model.ln_final_bias_logits(every)  # (L + 1, B, T, V)
    for layer in range(L):
        want = model.lm_head(model.ln_f(cache["resid_pre", layer]))
        torch.testing.assert_close(read[layer], want, atol=ATOL, rtol=0)
    torch.testing.assert_close(read[-1], logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("stack_of", ["decompose", "heads", "accumulated_last"])
def test_with_the_scale_frozen_attributions_sum_to_the_logit(model, run, tokens, stack_of):
    logits, cache = run
    if stack_of == "decompose":
        stack = cache.decompose_resid()
    elif stack_of == "heads":
        stack = cache.stack_head_results(incl_remainder=True)
    else:
        stack = cache.accumulated_resid()[-1:]
    target = tokens[:, -1]  # (B,): one token per row, every position
    attrs = cache.logit_attrs(stack, target)  # (N, B, T)
    total = attrs.sum(0) + model.ln_final_bias_logits(target)[:, None]
    want = logits.gather(-1, target[:, None, None].expand(-1, logits.shape[1], 1))[..., 0]  # (B, T)
    torch.testing.assert_close(total, want, atol=ATOL, rtol=0)
    # a logit difference at the last position: the constant terms cancel only when subtracted too
    wrong = (target + 1) % V
    diff = cache.logit_attrs(stack[:, :, -1], target, incorrect_tokens=wrong, pos_slice=-1)  # (N, B)
    bias = model.ln_final_bias_logits(target) - model.ln_final_bias_logits(wrong)
    want_diff = logits[torch.arange(2), -1, target] - logits[torch.arange(2), -1, wrong]
    torch.testing.assert_close(diff.sum(0) + bias, want_diff, atol=ATOL, rtol=0)


def test_apply_ln_to_stack_by_hand(model, run):
    _, cache = run
    stack = cache.decompose_resid(1)  # the input of layer 1's attention
    normed = cache.apply_ln_to_stack(stack, 1)
    x = cache["resid_pre", 1]
    torch.testing.assert_close(normed.sum(0) * model.blocks[1].ln_1.weight + model.blocks[1].ln_1.bias,
                               model.blocks[1].ln_1(x), atol=ATOL, rtol=0)
    mlp = cache.apply_ln_to_stack(cache.decompose_resid(1, mlp_input=True), 1, mlp_input=True)
    torch.testing.assert_close(mlp.sum(0) * model.blocks[1].ln_2.weight + model.blocks[1].ln_2.bias,
                               model.blocks[1].ln_2(cache["resid_mid", 1]), atol=ATOL, rtol=0)
    # positions and rows picked: the scale is sliced to match
    some = cache.apply_ln_to_stack(stack[:, :, [2, 5]], 1, pos_slice=[2, 5])
    torch.testing.assert_close(some, normed[:, :, [2, 5]])
    one = cache.apply_ln_to_stack(stack[:, 1], 1, batch_slice=1, has_batch_dim=False)
    torch.testing.assert_close(one, normed[:, 1])


def test_tokens_to_residual_directions(model):
    d = model.tokens_to_residual_directions(5)
    torch.testing.assert_close(d, model.lm_head.weight[5] * model.ln_f.weight)
    assert model.tokens_to_residual_directions(torch.tensor([[1, 2], [3, 4]])).shape == (2, 2, C)


def test_bad_input_is_one_clear_error(model, run):
    _, cache = run
    with pytest.raises(InvalidValueError, match="layer must be 0..3"):
        cache.decompose_resid(7)
    with pytest.raises(InvalidValueError, match="does not match the cached scale"):
        cache.apply_ln_to_stack(cache.decompose_resid()[:, :, :3])
    with pytest.raises(InvalidValueError, match="outside this model's vocabulary"):
        model.tokens_to_residual_directions(V)
    with pytest.raises(GptlearnError, match="mode must be"):
        cache.decompose_resid(mode="heads")
    with pytest.raises(GptlearnError, match="same shape"):
        cache.logit_attrs(cache.decompose_resid(), torch.tensor([1, 2]), incorrect_tokens=3)
    _, empty = model.run_with_cache(torch.zeros(1, 0, dtype=torch.long))  # an empty text runs, to zero positions
    for method in ("accumulated_resid", "decompose_resid", "stack_head_results"):
        with pytest.raises(InvalidValueError, match="no tokens"):
            getattr(empty, method)(apply_ln=True)
    from gptlearn.hooks import ActivationCache

    with pytest.raises(GptlearnError, match="needs the model"):
        ActivationCache(dict(cache.items()), L).stack_head_results()


def test_a_string_names_one_token(model):
    from gptlearn import GPT, GPTConfig

    gpt2_vocab = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, n_positions=8, vocab_size=50257)).eval()
    ids = gpt2_vocab.to_tokens(" Paris")[0]
    torch.testing.assert_close(gpt2_vocab.tokens_to_residual_directions(" Paris"),
                               gpt2_vocab.tokens_to_residual_directions(int(ids[0])))
    with pytest.raises(InvalidValueError, match="not one"):
        gpt2_vocab.tokens_to_residual_directions(" Parisian skyline")
