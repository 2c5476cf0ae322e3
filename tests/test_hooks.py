"""Hook points, run_with_cache and the activation cache: every cached tensor must be the real thing.

Legend: B batch, T tokens, C n_embd, H n_head, hs head size. Tolerance 1e-5 in fp32 throughout.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gptlearn import GPT, GPTConfig
from gptlearn.hooks import ActivationCache, HookPoint, get_act_name

ATOL = 1e-5
PER_LAYER = ["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "q", "k", "v", "attn_scores",
             "pattern", "z", "mlp_pre", "mlp_post"]
GLOBAL = ["embed", "pos_embed", "ln_final"]
SCALES = ["ln1", "ln2"]  # cache["scale", l, "ln1"]; plus the final LayerNorm's, cache["scale"]


@pytest.fixture(params=[True, False], ids=["fast", "plain"])
def model(request, random_gpt):
    """3 layers, 4 heads, C=32, small vocab; biases and LayerNorms randomised so they are exercised.
    With the speed wing's hook points and with model.py's plain ones."""
    return random_gpt(seed=0, noise=0.1, n_layer=3, vocab_size=97, fast=request.param)


@pytest.fixture
def tokens():
    torch.manual_seed(1)
    return torch.randint(0, 97, (2, 9))


def test_cache_has_every_hook_point_with_shapes(model, tokens):
    logits, cache = model.run_with_cache(tokens)
    B, T, C, H, hs = 2, 9, 32, 4, 8
    assert set(cache.keys()) == set(model.hook_dict)
    assert len(cache) == 3 * (len(PER_LAYER) + len(SCALES)) + len(GLOBAL) + 1
    shapes = {"resid_pre": (B, T, C), "resid_mid": (B, T, C), "resid_post": (B, T, C), "attn_out": (B, T, C),
              "mlp_out": (B, T, C), "q": (B, T, H, hs), "k": (B, T, H, hs), "v": (B, T, H, hs),
              "attn_scores": (B, H, T, T), "pattern": (B, H, T, T), "z": (B, T, H, hs),
              "mlp_pre": (B, T, 4 * C), "mlp_post": (B, T, 4 * C)}
    for layer in range(3):
        for name, shape in shapes.items():
            assert ("blocks.%d" % layer) in get_act_name(name, layer)
            assert cache[name, layer].shape == shape, (name, layer)
            assert not cache[name, layer].requires_grad
        for ln in SCALES:
            assert cache["scale", layer, ln].shape == (B, T, 1)
    for name in GLOBAL:
        assert cache[name].shape == (B, T, C)
    assert cache["scale"].shape == (B, T, 1)
    assert cache.stack("pattern").shape == (3, B, H, T, T)
    assert ("pattern", 2) in cache and ("pattern", 3) not in cache and "embed" in cache


def test_cached_values_are_consistent(model, tokens):
    logits, cache = model.run_with_cache(tokens)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(tokens), rtol=0, atol=ATOL)  # same as a plain forward
        torch.testing.assert_close(cache["embed"], model.wte(tokens), rtol=0, atol=0)
        torch.testing.assert_close(cache["resid_pre", 0], cache["embed"] + cache["pos_embed"], rtol=0, atol=ATOL)
        torch.testing.assert_close(model.lm_head(cache["ln_final"]), logits, rtol=0, atol=ATOL)
        for l, block in enumerate(model.blocks):
            torch.testing.assert_close(cache["resid_mid", l], cache["resid_pre", l] + cache["attn_out", l],
                                       rtol=0, atol=ATOL)
            torch.testing.assert_close(cache["resid_post", l], cache["resid_mid", l] + cache["mlp_out", l],
                                       rtol=0, atol=ATOL)
            if l:
                torch.testing.assert_close(cache["resid_pre", l], cache["resid_post", l - 1], rtol=0, atol=0)
            torch.testing.assert_close(cache["resid_post", l], model.hidden_states(tokens, layer=l),
                                       rtol=0, atol=ATOL)
            torch.testing.assert_close(cache["mlp_post", l], F.gelu(cache["mlp_pre", l], approximate="tanh"),
                                       rtol=0, atol=ATOL)
            # q comes from ln_1 of the residual stream through W_Q
            q = block.attn.c_attn(block.ln_1(cache["resid_pre", l]))[..., :32].view(2, 9, 4, 8)
            torch.testing.assert_close(cache["q", l], q, rtol=0, atol=ATOL)


def test_pattern_is_softmax_of_scores(model, tokens):
    _, cache = model.run_with_cache(tokens)
    for l in range(3):
        scores, pattern = cache["attn_scores", l], cache["pattern", l]
        torch.testing.assert_close(pattern, scores.softmax(-1), rtol=0, atol=ATOL)
        torch.testing.assert_close(pattern.sum(-1), torch.ones(2, 4, 9), rtol=0, atol=ATOL)
        assert (pattern.triu(diagonal=1) == 0).all()
        # scores are q.k / sqrt(hs) from the cached q and k
        q, k = cache["q", l].transpose(1, 2), cache["k", l].transpose(1, 2)  # (B, H, T, hs)
        expected = (q @ k.transpose(-2, -1) / 8 ** 0.5).masked_fill(~torch.ones(9, 9).tril().bool(), float("-inf"))
        torch.testing.assert_close(scores, expected, rtol=0, atol=ATOL)
        # z is the pattern applied to v
        z = (pattern @ cache["v", l].transpose(1, 2)).transpose(1, 2)  # (B, T, H, hs)
        torch.testing.assert_close(cache["z", l], z, rtol=0, atol=ATOL)


def test_z_through_w_o_is_attn_out_and_sums_over_heads(model, tokens):
    _, cache = model.run_with_cache(tokens)
    H, hs = 4, 8
    for l, block in enumerate(model.blocks):
        z = cache["z", l]  # (B, T, H, hs)
        attn_out = cache["attn_out", l]
        torch.testing.assert_close(block.attn.c_proj(z.reshape(2, 9, H * hs)), attn_out, rtol=0, atol=ATOL)
        W_O = block.attn.c_proj.weight.T  # (C_in = H*hs, C_out)
        per_head = sum(z[:, :, h] @ W_O[h * hs:(h + 1) * hs] for h in range(H))  # (B, T, C)
        torch.testing.assert_close(per_head + block.attn.c_proj.bias, attn_out, rtol=0, atol=ATOL)


def test_names_filter_short_full_callable_and_negative_layer(model, tokens):
    _, cache = model.run_with_cache(tokens, names_filter=["pattern", "blocks.1.hook_resid_post", "embed"])
    expected = {f"blocks.{l}.attn.hook_pattern" for l in range(3)} | {"blocks.1.hook_resid_post", "hook_embed"}
    assert set(cache.keys()) == expected
    torch.testing.assert_close(cache["pattern", -1], cache["blocks.2.attn.hook_pattern"], rtol=0, atol=0)
    torch.testing.assert_close(cache["pattern", -3], cache["pattern", 0], rtol=0, atol=0)
    with pytest.raises(KeyError, match="was not cached"):
        cache["z", 0]
    with pytest.raises(KeyError, match=r"cache\['pattern', 0\]"):
        cache["pattern"]  # needs a layer
    _, only_z = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_z"))
    assert sorted(only_z.keys()) == [f"blocks.{l}.attn.hook_z" for l in range(3)]


def test_get_act_name():
    assert get_act_name("pattern", 3) == "blocks.3.attn.hook_pattern"
    assert get_act_name("embed") == "hook_embed"
    assert get_act_name("blocks.0.hook_mlp_out") == "blocks.0.hook_mlp_out"
    assert get_act_name("mlp_pre", 1) == get_act_name("pre", 1) == "blocks.1.mlp.hook_pre"


@pytest.mark.parametrize("names_filter", [["nope"], ["pattern", "patern"], "blocks.9.attn.hook_z", ["hook_pattern"]])
def test_names_filter_with_an_unknown_name_says_which(model, tokens, names_filter):
    from gptlearn import GptlearnError

    with pytest.raises(GptlearnError) as info:
        model.run_with_cache(tokens, names_filter=names_filter)
    wanted = [names_filter] if isinstance(names_filter, str) else names_filter
    bad = [n for n in wanted if n not in ("pattern",)]
    assert isinstance(info.value, KeyError) and all(repr(n) in str(info.value) for n in bad), str(info.value)
    assert "lambda" not in str(info.value)
    assert not any(p.active for p in model.hook_dict.values())


def test_cache_device_and_to(model, tokens):
    _, cache = model.run_with_cache(tokens, device="cpu")
    moved = cache.to("cpu")
    assert isinstance(moved, ActivationCache) and len(moved) == len(cache)
    assert "ActivationCache" in repr(cache)


def test_hooks_removed_afterwards_even_on_error(model, tokens):
    points = list(model.hook_points())
    model.run_with_cache(tokens)
    assert not any(p.active for p in points)

    def boom(t, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.run_with_hooks(tokens, [("blocks.1.hook_resid_mid", boom)])
    assert not any(p.active for p in points)
    with pytest.raises(RuntimeError, match="boom"):
        with model.hooks([("blocks.0.attn.hook_z", boom)]):
            model(tokens)
    assert not any(p.active for p in points)
    with pytest.raises(KeyError, match="no hook point named"):  # a bad name after a good one
        with model.hooks([("blocks.0.hook_resid_pre", lambda t, hook: None),
                          ("blocks.9.hook_z", lambda t, hook: None)]):
            pass
    assert not any(p.active for p in points)
    with pytest.raises(ValueError):  # a forward that raises inside run_with_cache
        model.run_with_cache(torch.zeros(1, 40, dtype=torch.long))
    assert not any(p.active for p in points)


def test_head_ablation_via_hook_z_changes_logits(model, tokens):
    with torch.no_grad():
        clean = model(tokens)

        def kill_head(z, hook):
            z = z.clone()
            z[:, :, 2] = 0.0  # head 2
            return z

        ablated = model.run_with_hooks(tokens, [("blocks.1.attn.hook_z", kill_head)])
        assert (ablated - clean).abs().max() > 1e-3
        # only from layer 1's output on: earlier activations are unchanged
        _, c0 = model.run_with_cache(tokens)
        with model.hooks([("blocks.1.attn.hook_z", kill_head)]):
            _, c1 = model.run_with_cache(tokens)
        torch.testing.assert_close(c1["resid_mid", 0], c0["resid_mid", 0], rtol=0, atol=0)
        torch.testing.assert_close(c1["pattern", 1], c0["pattern", 1], rtol=0, atol=0)
        assert (c1["z", 1][:, :, 2] == 0).all() and (c1["z", 1][:, :, 1] == c0["z", 1][:, :, 1]).all()
        # the removed contribution is exactly head 2's slice of W_O
        W_O = model.blocks[1].attn.c_proj.weight.T
        torch.testing.assert_close(c0["attn_out", 1] - c1["attn_out", 1], c0["z", 1][:, :, 2] @ W_O[16:24],
                                   rtol=0, atol=ATOL)


def test_zero_ablating_all_heads_equals_removing_attention(model, tokens):
    with torch.no_grad():
        ablated = model.run_with_hooks(tokens,
                                       [(lambda n: n.endswith("attn.hook_z"), lambda z, hook: torch.zeros_like(z))])
        # the same network written out without attention: only W_O's bias reaches the residual stream
        pos = torch.arange(tokens.size(1))
        x = model.wte(tokens) + model.wpe(pos)
        for block in model.blocks:
            x = x + block.attn.c_proj.bias
            x = x + block.mlp(block.ln_2(x))
        expected = model.lm_head(model.ln_f(x))
    torch.testing.assert_close(ablated, expected, rtol=0, atol=ATOL)


def test_no_hooks_means_sdpa_path(model, tokens, monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    with torch.no_grad():
        plain = model(tokens)
        assert len(calls) == 3  # one fused call per layer
        calls.clear()
        logits, _ = model.run_with_cache(tokens)  # patterns requested: explicit path everywhere
        assert calls == []
        torch.testing.assert_close(logits, plain, rtol=0, atol=ATOL)
        model.run_with_cache(tokens, names_filter=["z", "resid_post"])  # no pattern asked: stays fused
        assert len(calls) == 3
        calls.clear()
        model.run_with_cache(tokens, names_filter=["blocks.1.attn.hook_pattern"])  # only layer 1 explicit
        assert len(calls) == 2


def test_hook_point_is_identity_and_add_hook():
    hp = HookPoint()
    x = torch.randn(3)
    assert hp(x) is x and not hp.active
    handle = hp.add_hook(lambda t, hook: t * 2)
    assert hp.active
    torch.testing.assert_close(hp(x), x * 2)
    handle.remove()
    assert not hp.active


def test_hook_points_run_pre_hooks_and_hooks_registered_for_every_module(model, tokens):
    hp = HookPoint()
    x = torch.randn(3)
    handle = hp.register_forward_pre_hook(lambda module, args: (args[0] + 1,))
    torch.testing.assert_close(hp(x), x + 1)
    handle.remove()
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: seen.append(module.name) if isinstance(module, HookPoint) else None)
    try:
        with torch.no_grad():
            model(tokens)
    finally:
        handle.remove()
    assert seen[:2] == ["hook_embed", "hook_pos_embed"] and "blocks.1.attn.hook_z" in seen
    assert hp(x) is x


def test_run_with_cache_string_input():
    torch.manual_seed(2)
    gpt = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, n_positions=32)).eval()
    logits, cache = gpt.run_with_cache("The big red car")
    ids = gpt.to_tokens("The big red car")
    assert ids.shape == (1, 4) and cache["pattern", 0].shape == (1, 2, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(logits, gpt(ids), rtol=0, atol=ATOL)
