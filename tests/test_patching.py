"""Activation patching and head ablation, checked against a reference written with plain PyTorch
forward pre-hooks (no gptlearn hook points), on a random model. Tolerance 1e-4."""
from __future__ import annotations

import pytest
import torch

from gptlearn import patching
from gptlearn.errors import GptlearnError

ATOL = 1e-4
L, H, C, V, T = 2, 4, 32, 97, 6


@pytest.fixture(scope="module")
def model():
    from tests.conftest import _random_gpt

    return _random_gpt(seed=3, noise=0.2, n_layer=L, vocab_size=V)


@pytest.fixture(scope="module")
def prompts():
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, V, (2, T), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2] = (clean[:, 2] + 7) % V  # one token differs
    return clean, corrupted


def metric(logits):
    return logits[:, -1, 5].mean() - logits[:, -1, 9].mean()


def reference_run(model, tokens, module, replace):
    """Run with ``replace(input) -> input`` as a forward pre-hook on ``module`` (torch's own hooks)."""
    handle = module.register_forward_pre_hook(lambda mod, args: (replace(args[0]),) + tuple(args[1:]))
    try:
        with torch.no_grad():
            return float(metric(model(tokens)))
    finally:
        handle.remove()


def clean_inputs(model, tokens, module):
    seen = {}
    handle = module.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0].detach().clone()))
    with torch.no_grad():
        model(tokens)
    handle.remove()
    return seen["x"]


def test_resid_pre_grid_matches_reference(model, prompts):
    clean, corrupted = prompts
    _, cache = model.run_with_cache(clean)
    grid = patching.get_act_patch_resid_pre(model, corrupted, cache, metric)
    assert grid.shape == (L, T)
    for layer in range(L):
        block = model.blocks[layer]
        x_clean = clean_inputs(model, clean, block)
        for pos in range(T):
            def swap(x, pos=pos, x_clean=x_clean):
                x = x.clone()
                x[:, pos] = x_clean[:, pos]
                return x
            assert abs(grid[layer, pos] - reference_run(model, corrupted, block, swap)) <= ATOL
    # patching every position's stream into layer 0 gives the clean run; an untouched position nothing
    with torch.no_grad():
        assert abs(grid[0, 2] - grid[0, 0]) > 1e-3  # the differing token matters
        assert abs(grid[0, 0] - float(metric(model(corrupted)))) <= ATOL  # position 0 is the same in both


def test_head_grids_match_reference(model, prompts):
    clean, corrupted = prompts
    _, cache = model.run_with_cache(clean)
    all_pos = patching.get_act_patch_attn_head_out_all_pos(model, corrupted, cache, metric)
    by_pos = patching.get_act_patch_attn_head_out_by_pos(model, corrupted, cache, metric)
    assert all_pos.shape == (L, H) and by_pos.shape == (L, T, H)
    hs = C // H
    for layer in range(L):
        proj = model.blocks[layer].attn.c_proj  # its input is the heads' z side by side, (B, T, C)
        z_clean = clean_inputs(model, clean, proj)
        for head in range(H):
            cols = slice(head * hs, (head + 1) * hs)

            def swap_all(z, cols=cols, z_clean=z_clean):
                z = z.clone()
                z[..., cols] = z_clean[..., cols]
                return z
            assert abs(all_pos[layer, head] - reference_run(model, corrupted, proj, swap_all)) <= ATOL
            for pos in (1, 2, T - 1):
                def swap_one(z, cols=cols, z_clean=z_clean, pos=pos):
                    z = z.clone()
                    z[:, pos, cols] = z_clean[:, pos, cols]
                    return z
                assert abs(by_pos[layer, pos, head] - reference_run(model, corrupted, proj, swap_one)) <= ATOL


def test_block_every_stacks_the_three(model, prompts):
    clean, corrupted = prompts
    _, cache = model.run_with_cache(clean)
    every = patching.get_act_patch_block_every(model, corrupted, cache, metric)
    assert every.shape == (3, L, T)
    torch.testing.assert_close(every[1], patching.get_act_patch_attn_out(model, corrupted, cache, metric))
    mlp = model.blocks[1].mlp
    out_clean = {}
    h = mlp.register_forward_hook(lambda m, a, out: out_clean.setdefault("y", out.detach().clone()))
    with torch.no_grad():
        model(clean)
    h.remove()
    h = mlp.register_forward_hook(lambda m, a, out: torch.cat([out[:, :3], out_clean["y"][:, 3:4], out[:, 4:]], 1))
    with torch.no_grad():
        want = float(metric(model(corrupted)))
    h.remove()
    assert abs(every[2, 1, 3] - want) <= ATOL


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_ablate_heads_matches_reference(model, prompts, mode):
    clean, _ = prompts
    hs = C // H
    proj = model.blocks[1].attn.c_proj
    fill = torch.zeros(hs)
    if mode == "mean":
        fill = clean_inputs(model, clean, proj)[..., 2 * hs:3 * hs].mean(dim=(0, 1))

    def knock(z):
        z = z.clone()
        z[..., 2 * hs:3 * hs] = fill
        return z
    want = reference_run(model, clean, proj, knock)
    with patching.ablate_heads(model, [(1, 2)], mode=mode, reference=clean):
        with torch.no_grad():
            got = float(metric(model(clean)))
    assert abs(got - want) <= ATOL
    with torch.no_grad():
        assert abs(float(metric(model(clean))) - got) > 1e-4  # the hook is gone after the block


def test_bad_input_is_one_clear_error(model, prompts):
    clean, corrupted = prompts
    _, cache = model.run_with_cache(clean)
    with pytest.raises(GptlearnError, match="same number of tokens"):
        patching.get_act_patch_resid_pre(model, corrupted[:, :-1], cache, metric)
    with pytest.raises(GptlearnError, match=r"head \(2, 0\) does not exist"):
        with patching.ablate_heads(model, [(2, 0)]):
            pass
    with pytest.raises(GptlearnError, match=r"head \(0, 4\) does not exist"):
        patching.check_heads(model, [(0, 4)])
    with pytest.raises(GptlearnError, match="non-empty prompt"):
        patching.get_act_patch_resid_pre(model, torch.zeros(1, 0, dtype=torch.long), cache, metric)
    with pytest.raises(GptlearnError, match="one number"):
        patching.get_act_patch_resid_pre(model, corrupted, cache, lambda logits: logits[:, -1, :2])
    with pytest.raises(GptlearnError, match="mode must be"):
        with patching.ablate_heads(model, [(0, 1)], mode="resample"):
            pass
