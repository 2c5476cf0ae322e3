"""The speed wing (gptlearn.fast): the seam that swaps layers, and each faster layer against its plain one.

A model with the wing and the same model without it must give the same numbers within float rounding:
logits and hidden states within 1e-5, losses within 1e-6 relative, gradients within 1e-4 relative (the
blocked loss sums its softmax in another order), and identical greedy tokens.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gptlearn
from gptlearn import GPT, GPTConfig, fast
from gptlearn.fast.embedding import Embedding
from gptlearn.fast.gelu import MIN_NUMEL, gelu
from gptlearn.fast.unembed import unembed, unembed_loss
from gptlearn.hooks import HookPoint
from gptlearn.model import LMHead


def plain_loss(x, w, t):
    """The loss model.py computes: F.cross_entropy on the whole (N, V) logits."""
    return F.cross_entropy(F.linear(x, w).reshape(-1, w.size(0)), t.reshape(-1))


# ---- the seam ----------------------------------------------------------------------------------
def test_enable_swaps_layers_in_place_and_disable_puts_them_back(random_gpt):
    model = random_gpt()
    plain = random_gpt(fast=False)
    params = {n: p for n, p in model.named_parameters()}
    assert fast.is_enabled(model) and not fast.is_enabled(plain)
    assert type(model.lm_head) is fast.Unembedding and type(plain.lm_head) is LMHead
    for name, module in plain.named_modules():  # every plain layer of model.py has its wing class
        if type(module) in fast.SWAPS:
            assert type(model.get_submodule(name)) is fast.SWAPS[type(module)], name
    assert sum(type(m) is fast.Linear for m in model.modules()) == 4 * 2  # c_attn, c_proj, c_fc, c_proj a block
    assert fast.disable(model) is model and not fast.is_enabled(model)
    assert [type(m) for m in model.modules()] == [type(m) for m in plain.modules()]
    assert {n: p for n, p in model.named_parameters()} == params  # the same Parameter objects throughout
    assert model.lm_head.weight is model.wte.weight
    fast.enable(fast.enable(model))  # twice is once
    assert type(model.lm_head) is fast.Unembedding and fast.disable(model) is model
    assert type(model.lm_head) is LMHead


def test_a_users_own_layer_is_left_alone(random_gpt):
    class MyLinear(nn.Linear):
        pass

    model = random_gpt(fast=False)
    model.blocks[0].mlp.c_fc.__class__ = MyLinear
    fast.enable(model)
    assert type(model.blocks[0].mlp.c_fc) is MyLinear and type(model.blocks[1].mlp.c_fc) is fast.Linear


@pytest.mark.parametrize("vocab", [1000, 9000])  # 9000 > 4096: the blocked unembedding and loss
def test_with_and_without_the_wing_the_numbers_agree(random_gpt, vocab):
    """Logits, hidden states, caches, the loss and every gradient of a training step, and greedy tokens."""
    wing = random_gpt(seed=3, noise=0.1, vocab_size=vocab, n_positions=64, n_embd=64,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    plain = fast.disable(copy.deepcopy(wing))
    idx = torch.randint(0, vocab, (3, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # 3 x 40 x 256 MLP activations: the x·σ(2z) GELU
        torch.testing.assert_close(wing(idx), plain(idx), rtol=0, atol=1e-5)
        torch.testing.assert_close(wing.hidden_states(idx, layer=0), plain.hidden_states(idx, layer=0), rtol=0,
                                   atol=1e-5)
    logits_w, cache_w = wing.run_with_cache(idx)
    logits_p, cache_p = plain.run_with_cache(idx)
    torch.testing.assert_close(logits_w, logits_p, rtol=0, atol=1e-5)
    for name in cache_p:
        torch.testing.assert_close(cache_w[name], cache_p[name], rtol=0, atol=1e-5, msg=name)
    for m in (wing, plain):
        m.train()
        m.zero_grad()
        (m(idx[:, :-1], targets=idx[:, 1:]) / 2).backward()  # a scaled loss, as grad_accum makes
        m.eval()
    assert wing.loss(idx[:, :-1], idx[:, 1:]).item() == \
        pytest.approx(plain.loss(idx[:, :-1], idx[:, 1:]).item(), rel=1e-6)
    for (name, pw), pp in zip(wing.named_parameters(), plain.parameters()):
        torch.testing.assert_close(pw.grad, pp.grad, rtol=1e-4, atol=1e-7, msg=name)
    prompt = idx[:1, :5]
    assert torch.equal(wing.generate(prompt, 30, do_sample=False), plain.generate(prompt, 30, do_sample=False))


def test_from_pretrained_gives_the_wing_and_saves_the_same_folder(random_gpt, tmp_path):
    model = random_gpt(fast=False)
    model.save_pretrained(tmp_path / "plain")
    loaded = GPT.from_pretrained(tmp_path / "plain")
    assert fast.is_enabled(loaded)
    loaded.save_pretrained(tmp_path / "wing")
    assert ((tmp_path / "plain" / "model.safetensors").read_bytes()
            == (tmp_path / "wing" / "model.safetensors").read_bytes())


# ---- the blocked unembedding and loss ------------------------------------------------------------
@pytest.mark.parametrize("N,C,V", [(5, 16, 300), (64, 32, 50257), (3000, 8, 2500)])
def test_unembed_loss_matches_the_plain_path_in_value_and_gradients(N, C, V):
    """The blocked loss (one to seven vocabulary blocks here) against F.cross_entropy on full logits,
    with ignored targets, a target in the last (short) block, and a scaled loss as grad_accum makes."""
    torch.manual_seed(N)
    x = torch.randn(N, C, dtype=torch.float64).float().requires_grad_()
    w = (torch.randn(V, C) * 0.3).requires_grad_()
    t = torch.randint(0, V, (N,))
    t[0], t[1:3] = V - 1, -100
    plain = plain_loss(x, w, t)
    gx, gw = torch.autograd.grad(plain / 3, (x, w))
    blocked = unembed_loss(x, w, t)
    assert blocked.item() == pytest.approx(plain.item(), rel=1e-6)
    fx, fw = torch.autograd.grad(blocked / 3, (x, w))
    torch.testing.assert_close(fx, gx, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(fw, gw, rtol=1e-4, atol=1e-8)
    # only one input needing a gradient, and no autograd at all, give the same numbers
    (fx_only,) = torch.autograd.grad(unembed_loss(x, w.detach(), t), (x,))
    torch.testing.assert_close(fx_only * (1 / 3), gx, rtol=1e-4, atol=1e-8)
    with torch.no_grad():
        assert unembed_loss(x, w, t).item() == pytest.approx(plain.item(), rel=1e-6)


def test_unembed_loss_under_cpu_autocast_takes_the_plain_path():
    """bf16 autocast makes bf16 logits: the blocked path must not run on them (it mixed dtypes)."""
    torch.manual_seed(7)
    x = torch.randn(40, 16, requires_grad=True)
    w = torch.randn(9000, 16, requires_grad=True)
    t = torch.randint(0, 9000, (40,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        blocked = unembed_loss(x, w, t)
        plain = F.cross_entropy(unembed(x, w).float(), t)
    assert blocked.item() == plain.item()
    blocked.backward()
    assert x.grad is not None and w.grad is not None and w.grad.dtype == torch.float32


@pytest.mark.parametrize("rows", [1, 7, 8, 40])  # fewer than 8 rows: the plain (or row-split) product
def test_unembed_in_vocabulary_blocks_equals_one_product(rows):
    """Values and gradients of the blocked unembedding are those of the single F.linear (fp32: the same
    dot products, so within 1e-5)."""
    torch.manual_seed(0)
    w = torch.randn(9000, 24, requires_grad=True)  # V > chunk: more than one block, a ragged last one
    x = torch.randn(rows, 24, requires_grad=True)
    g = torch.randn(rows, 9000)
    got = unembed(x, w, chunk=4096)
    torch.autograd.backward(got, g)
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    want = F.linear(x, w)
    torch.autograd.backward(want, g)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(gx, x.grad, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(gw, w.grad, atol=1e-4, rtol=1e-5)
    with torch.no_grad():  # the no-autograd path fills one preallocated output
        torch.testing.assert_close(unembed(x[None], w, chunk=4096), want[None], atol=1e-5, rtol=0)  # (B, T, V)


def test_logits_reuse_the_memory_of_dropped_logits_and_leave_held_ones_alone(small_pool, monkeypatch):
    monkeypatch.setattr(small_pool, "REUSE_MAX_BYTES", 64 << 20)
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny")).eval()
    idx = torch.randint(0, model.config.vocab_size, (2, 16))
    other = torch.randint(0, model.config.vocab_size, (2, 16))
    with torch.no_grad():
        first = model(idx)  # 2 x 16 x 50257 fp32, pooled under the test's threshold
        kept = first.clone()
        assert not first.untyped_storage().resizable() and len(small_pool.reused_blocks()) == 1  # from the pool
        second = model(other)  # first is still held: it must get other memory
        assert second.data_ptr() != first.data_ptr() and torch.equal(first, kept)
        ptr = first.data_ptr()
        del first, second
        third = model(idx)  # the loop `logits = model(x)` pattern: memory comes back
        assert third.data_ptr() == ptr
        assert torch.equal(third, F.linear(model.hidden_states(idx), model.wte.weight))


# ---- the embedding's gradient in reused memory ----------------------------------------------------
def test_embedding_gradient_comes_from_the_pool_and_matches_nn_embedding(small_pool):
    torch.manual_seed(0)
    emb = Embedding(500, 16)  # a (500, 16) gradient: 32 KB, pooled under the test's thresholds
    ref = nn.Embedding(500, 16)
    ref.weight.data.copy_(emb.weight.data)
    idx = torch.tensor([[3, 7, 3], [499, 0, 3]])  # repeated ids: their rows must add up
    r = torch.randn(2, 3, 16)
    (emb(idx) * r).sum().backward()
    (ref(idx) * r).sum().backward()
    torch.testing.assert_close(emb.weight.grad, ref.weight.grad, rtol=0, atol=1e-6)
    assert not emb.weight.grad.untyped_storage().resizable()  # from the pool, not torch.empty
    held, kept = emb.weight.grad, emb.weight.grad.clone()
    emb.weight.grad = None  # as zero_grad(set_to_none=True), but the user still holds the old gradient
    (emb(idx) * 2 * r).sum().backward()
    assert emb.weight.grad.data_ptr() != held.data_ptr() and torch.equal(held, kept)
    torch.testing.assert_close(emb.weight.grad, 2 * kept, rtol=0, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(emb(idx), ref(idx))


def test_tied_training_gradients_add_in_place_in_reused_memory_and_match_transformers(
        small_pool, monkeypatch, random_hf, to_gptlearn):
    """The blocked loss's (V, C) gradient and the embedding's are pooled, and autograd adds them in place
    (a pooled tensor is not a view, so it may): the sum never costs a fresh (V, C) allocation."""
    monkeypatch.setattr(small_pool, "REUSE_MAX_BYTES", 128 << 20)
    hf = random_hf(2, 4, 64, 64, 50257, seed=6, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0).train()
    model = to_gptlearn(hf).train()
    idx = torch.randint(0, 50257, (2, 33))
    hf(idx, labels=idx).loss.backward()
    for _ in range(2):  # as train() with grad_accum=2: the loss halved, gradients accumulated
        (model(idx[:, :-1], targets=idx[:, 1:]) / 2).backward()
    grad = model.wte.weight.grad
    assert not grad.untyped_storage().resizable()  # an out-of-place sum would be a torch.empty tensor
    torch.testing.assert_close(grad, hf.transformer.wte.weight.grad, rtol=1e-3, atol=1e-7)
    torch.testing.assert_close(model.wpe.weight.grad, hf.transformer.wpe.weight.grad, rtol=1e-3, atol=1e-7)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # torch's own
def test_compiled_training_step_gives_the_eager_gradients(small_pool, monkeypatch):
    """train(compile=True) wraps the model in torch.compile: the blocked loss and the pooled embedding
    gradient (custom autograd Functions) must trace, or fall back, to the same numbers."""
    monkeypatch.setattr(small_pool, "REUSE_MAX_BYTES", 128 << 20)  # the tiny model's (V, C) grads pooled
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).train()
    x, y = torch.randint(0, 50257, (2, 16)), torch.randint(0, 50257, (2, 16))
    model(x, targets=y).backward()
    eager = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    torch.compile(model)(x, targets=y).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, eager[n], rtol=1e-4, atol=1e-6, msg=n)


# ---- GELU as x·σ(2z) ---------------------------------------------------------------------------------
def test_gelu_is_torchs_tanh_gelu_with_and_without_autograd():
    x = torch.cat([torch.linspace(-12, 12, 20001), torch.tensor([float("inf"), float("-inf"), float("nan"), 0.0])])
    assert x.numel() >= MIN_NUMEL  # the x·σ(2z) path
    with torch.inference_mode():
        quick = gelu(x)
        torch.testing.assert_close(fast.GELU(approximate="tanh")(x), quick, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(quick, F.gelu(x, approximate="tanh"), atol=1e-6, rtol=1e-6, equal_nan=True)
    torch.testing.assert_close(gelu(x, "none"), F.gelu(x), equal_nan=True)
    xg = x[:20001].clone().requires_grad_(True)
    gelu(xg).sum().backward()  # with autograd: torch's own kernel and its backward
    ref = xg.detach().clone().requires_grad_(True)
    F.gelu(ref, approximate="tanh").sum().backward()
    torch.testing.assert_close(xg.grad, ref.grad)


# ---- hook points that skip the module call ----------------------------------------------------------
def test_hook_points_return_their_input_at_once_and_still_run_every_hook(random_gpt):
    hp = fast.HookPoint()
    x = torch.randn(3)
    assert hp(x) is x and isinstance(hp, HookPoint)
    handle = hp.add_hook(lambda t, hook: t * 2)
    torch.testing.assert_close(hp(x), x * 2)
    handle.remove()
    handle = hp.register_forward_pre_hook(lambda module, args: (args[0] + 1,))
    torch.testing.assert_close(hp(x), x + 1)
    handle.remove()
    model = random_gpt()
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: seen.append(module.name) if isinstance(module, HookPoint) else None)
    try:
        assert fast.hooks.global_hooks_active() and fast.hooks.hooks_attached(model)
        with torch.no_grad():
            model(torch.zeros(1, 4, dtype=torch.long))
    finally:
        handle.remove()
    assert seen[:2] == ["hook_embed", "hook_pos_embed"] and "blocks.1.attn.hook_z" in seen
    assert hp(x) is x and not fast.hooks.hooks_attached(model)


def test_the_package_exposes_the_wing():
    assert gptlearn.fast is fast and {"enable", "disable", "is_enabled"} <= set(fast.__all__)
