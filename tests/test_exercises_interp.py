"""The interpretability exercises' checkers: a right answer passes, and each known mistake fails with
the hint that names it."""
from __future__ import annotations

import pytest
import torch

from gptlearn import exercises as ex
from gptlearn.patching import ablate_heads


def fails_with(result, words):
    assert not result.passed, result.message
    assert words in result.message, result.message


# ---- the logit lens --------------------------------------------------------------------------------------
def test_logit_lens():
    assert ex.check_logit_lens(lambda m, r: m.lm_head(m.ln_f(r)), quiet=True)
    fails_with(ex.check_logit_lens(lambda m, r: m.lm_head(r), quiet=True), "apply the final LayerNorm")
    fails_with(ex.check_logit_lens(lambda m, r: m.lm_head(m.ln_f(m.ln_f(r))), quiet=True), "twice")

    def bare(m, r):
        c = r - r.mean(-1, keepdim=True)
        return m.lm_head(c / (c.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt())
    fails_with(ex.check_logit_lens(bare, quiet=True), "gamma, beta")


# ---- the logit difference --------------------------------------------------------------------------------
def test_logit_diff():
    good = lambda lg, c, w: lg[torch.arange(len(c)), -1, c] - lg[torch.arange(len(c)), -1, w]  # noqa: E731
    assert ex.check_logit_diff(good, quiet=True)
    fails_with(ex.check_logit_diff(lambda lg, c, w: -good(lg, c, w), quiet=True), "wrong sign")
    fails_with(ex.check_logit_diff(lambda lg, c, w: good(lg[:, :1], c, w), quiet=True), "first position")
    fails_with(ex.check_logit_diff(lambda lg, c, w: good(lg.softmax(-1), c, w), quiet=True), "probabilities")
    fails_with(ex.check_logit_diff(lambda lg, c, w: lg[:, -1, c] - lg[:, -1, w], quiet=True), "(B, B) block")


# ---- heads add up to attn_out ----------------------------------------------------------------------------
def test_attn_out_from_heads():
    assert ex.check_attn_out_from_heads(lambda m, c, l: c.head_results(l).sum(2) + m.blocks[l].attn.c_proj.bias,
                                        quiet=True)
    fails_with(ex.check_attn_out_from_heads(lambda m, c, l: c.head_results(l).sum(2), quiet=True), "forgot b_O")
    fails_with(ex.check_attn_out_from_heads(lambda m, c, l: (c.head_results(l) + m.blocks[l].attn.c_proj.bias).sum(2),
                                            quiet=True), "once per head")


# ---- residual directions and direct logit attribution ----------------------------------------------------
def test_residual_direction():
    assert ex.check_residual_direction(lambda m, t: m.lm_head.weight[t] * m.ln_f.weight, quiet=True)
    fails_with(ex.check_residual_direction(lambda m, t: m.lm_head.weight[t], quiet=True), "gamma")
    fails_with(ex.check_residual_direction(lambda m, t: m.lm_head.weight[:, t], quiet=True), "ROW")


def _dla(model, cache, token, *, scale=True, gamma=True, beta=False):
    stack = cache.decompose_resid()[:, 0, -1]  # (N, C)
    x = stack - stack.mean(-1, keepdim=True)
    if scale:
        x = x / cache["ln_f.hook_scale"][0, -1]
    if gamma:
        x = x * model.ln_f.weight
    if beta:
        x = x + model.ln_f.bias
    return x @ model.lm_head.weight[token]


def test_direct_logit_attribution():
    assert ex.check_direct_logit_attribution(_dla, quiet=True)
    fails_with(ex.check_direct_logit_attribution(lambda m, c, t: _dla(m, c, t, scale=False), quiet=True),
               "not divided by the LayerNorm's scale")
    fails_with(ex.check_direct_logit_attribution(lambda m, c, t: _dla(m, c, t, gamma=False), quiet=True), "gamma")
    fails_with(ex.check_direct_logit_attribution(lambda m, c, t: _dla(m, c, t, beta=True), quiet=True),
               "beta was added")
    fails_with(ex.check_direct_logit_attribution(
        lambda m, c, t: m.lm_head(m.ln_f(c.decompose_resid()[:, 0, -1]))[:, t], quiet=True), "ran ln_f on each")


# ---- patching and ablation -------------------------------------------------------------------------------
def _patch(model, corrupted, cache, layer, pos, shift=0, act="resid_pre"):
    def hook(x, hook):
        x = x.clone()
        x[:, pos + shift] = cache[act, layer][:, pos + shift]
        return x
    return model.run_with_hooks(corrupted, fwd_hooks=[(f"blocks.{layer}.hook_{act}", hook)])


def test_patch_resid_pre():
    assert ex.check_patch_resid_pre(_patch, quiet=True)
    fails_with(ex.check_patch_resid_pre(lambda *a: _patch(*a, shift=1), quiet=True), "pos + 1")
    fails_with(ex.check_patch_resid_pre(lambda *a: _patch(*a, shift=-1), quiet=True), "pos - 1")
    fails_with(ex.check_patch_resid_pre(lambda *a: _patch(*a, act="resid_post"), quiet=True), "resid_post")


def _ablate(model, tokens, layer, head):
    with ablate_heads(model, [(layer, head)]):
        return model(tokens)


def test_ablate_head():
    assert ex.check_ablate_head(_ablate, quiet=True)
    fails_with(ex.check_ablate_head(lambda m, t, l, h: _ablate(m, t, l, h + 1), quiet=True), "head + 1")

    def whole_layer(m, t, l, h):
        with ablate_heads(m, [(l, k) for k in range(m.config.n_head)]):
            return m(t)
    fails_with(ex.check_ablate_head(whole_layer, quiet=True), "every head of the layer")

    def attn_out(m, t, l, h):
        return m.run_with_hooks(t, fwd_hooks=[(f"blocks.{l}.hook_attn_out", lambda x, hook: x * 0)])
    fails_with(ex.check_ablate_head(attn_out, quiet=True), "removes b_O")


def _mean(z, ref, head, dims=(0, 1)):
    z = z.clone()
    z[:, :, head] = ref[:, :, head].mean(dim=dims)
    return z


def test_mean_ablation():
    assert ex.check_mean_ablation(_mean, quiet=True)
    fails_with(ex.check_mean_ablation(lambda z, r, h: _mean(z, r, h, dims=0), quiet=True), "batch only")
    fails_with(ex.check_mean_ablation(lambda z, r, h: _mean(z, r * 0, h), quiet=True), "zero-ablation")
    fails_with(ex.check_mean_ablation(lambda z, r, h: _mean(z, z, h), quiet=True), "reference inputs")


def _induction(pattern, S, back=None, first=None):
    back = S - 1 if back is None else back
    first = S if first is None else first
    stripe = pattern.diagonal(offset=-back, dim1=-2, dim2=-1)  # (B, H, 2S - back)
    keep = torch.arange(back, 2 * S) >= first
    return stripe[..., keep].mean(dim=(0, 2))


def test_induction_score():
    assert ex.check_induction_score(_induction, quiet=True)
    fails_with(ex.check_induction_score(lambda p, S: _induction(p, S, back=S), quiet=True), "AFTER it")
    fails_with(ex.check_induction_score(lambda p, S: _induction(p, S, first=S - 1), quiet=True), "query S - 1")
    fails_with(ex.check_induction_score(lambda p, S: _induction(p, S, back=1, first=1), quiet=True), "previous-token")


@pytest.mark.parametrize("name", ["check_logit_lens", "check_ablate_head", "check_induction_score"])
def test_a_crash_or_none_is_a_hint(name):
    fails_with(getattr(ex, name)(lambda *a: None, quiet=True), "return")
