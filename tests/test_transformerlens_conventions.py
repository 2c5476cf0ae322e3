"""TransformerLens' conventions in gptlearn's hooks, cache and ``to_tokens``.

Two kinds of test. The first kind holds gptlearn to TransformerLens' documented semantics and always runs.
The second runs TransformerLens itself (``transformer_lens`` 4.x: ``TransformerBridge`` around the same
weights, built offline from a saved folder) beside gptlearn and is skipped when it is not installed (it is
not a project requirement: its dependencies include ``datasets``, ``accelerate`` and ``wandb``).
Tolerance: 1e-5 in fp32 (the activations agree to ~3e-7).
"""
from __future__ import annotations

import importlib.util

import pytest
import torch

from gptlearn.hooks import get_act_name

ATOL = 1e-5
TEXTS = ["The big red car drove quickly", "A cat", "<|endoftext|> starts a document"]


@pytest.fixture(scope="module")
def model(random_gpt):
    """2 layers, GPT-2's vocabulary (so text works), every weight moved off its initial value."""
    return random_gpt(n_positions=64, vocab_size=50257)


@pytest.fixture(scope="module")
def ids(model):
    return model.to_tokens("The big red car drove quickly")


# ---- names_filter: one name, a list of names, or a predicate ----------------------------------------------
def test_names_filter_one_name_is_one_name_not_its_characters(model, ids):
    """The silent wrong result: a str was iterated as characters, and the one-letter name "k" matched."""
    _, cache = model.run_with_cache(ids, names_filter="blocks.0.attn.hook_pattern")
    assert list(cache.keys()) == ["blocks.0.attn.hook_pattern"]


def test_names_filter_list_shorthand_and_predicate(model, ids):
    _, cache = model.run_with_cache(ids, names_filter=["blocks.1.hook_resid_post", "pattern", "scale0ln1"])
    assert set(cache.keys()) == {"blocks.1.hook_resid_post", "blocks.0.attn.hook_pattern",
                                 "blocks.1.attn.hook_pattern", "blocks.0.ln_1.hook_scale"}
    _, by_fn = model.run_with_cache(ids, names_filter=lambda name: name.endswith("hook_scale"))
    assert sorted(by_fn.keys()) == ["blocks.0.ln_1.hook_scale", "blocks.0.ln_2.hook_scale",
                                    "blocks.1.ln_1.hook_scale", "blocks.1.ln_2.hook_scale", "ln_f.hook_scale"]
    _, tl_spelling = model.run_with_cache(ids, names_filter="blocks.1.ln2.hook_scale")  # TransformerLens' name
    assert list(tl_spelling.keys()) == ["blocks.1.ln_2.hook_scale"]


@pytest.mark.parametrize("bad, nearest", [("blocks.0.attn.hook_patern", "'blocks.0.attn.hook_pattern'"),
                                          (["blocks.1.hook_resid_post", "blocks.0.hook_resid_psot"],
                                           "'blocks.0.hook_resid_post'"),
                                          ("nope", "valid names look like 'blocks.0.attn.hook_pattern'")])
def test_unknown_name_is_an_error_naming_the_nearest(model, ids, bad, nearest):
    with pytest.raises(KeyError, match="no hook point named") as info:
        model.run_with_cache(ids, names_filter=bad)
    assert nearest in str(info.value) and "lambda" not in str(info.value)
    with pytest.raises(KeyError, match="no hook point named"):
        model.add_hook(bad if isinstance(bad, str) else bad[1], lambda act, hook: None)
    assert not any(p.active for p in model.hook_points())


def test_bad_names_filter_and_inputs_are_type_errors(model, ids):
    with pytest.raises(TypeError, match="names_filter must be"):
        model.run_with_cache(ids, names_filter=3)
    with pytest.raises(TypeError, match="run_with_cache takes token ids"):
        model.run_with_cache(None)


# ---- hook functions: fn(activation, hook=hook_point) ----------------------------------------------------------
def test_hooks_are_called_with_the_hook_point_as_keyword(model, ids):
    seen = []

    def tl_style(act, *, hook):  # TransformerLens' documented signature, keyword-only `hook`
        seen.append((hook.name, tuple(act.shape)))

    model.run_with_hooks(ids, fwd_hooks=[("blocks.1.attn.hook_z", tl_style), ("hook_embed", tl_style)])
    assert seen == [("hook_embed", (1, 6, 32)), ("blocks.1.attn.hook_z", (1, 6, 4, 8))]
    with pytest.raises(TypeError):  # the hook is passed by keyword, so its parameter must be named `hook`
        model.run_with_hooks(ids, fwd_hooks=[("hook_embed", lambda act, h: None)])
    assert all(p.name == name for name, p in model.hook_dict.items())


# ---- cache keys: get_act_name's shorthand ----------------------------------------------------------------------
def test_cache_aliases(model, ids):
    _, cache = model.run_with_cache(ids)
    for layer in (0, 1, -1):
        assert cache["attn", layer] is cache["pattern", layer]
        assert cache["attn_logits", layer] is cache["attn_scores", layer]
        assert cache["pre", layer] is cache["mlp_pre", layer] is cache[f"blocks.{layer % 2}.mlp.hook_pre"]
        assert cache["post", layer] is cache["mlp_post", layer]
        assert cache["key", layer] is cache["k", layer] and cache["query", layer] is cache["q", layer]
    assert cache["k1"] is cache["k", 1] and cache["scale1ln2"] is cache["scale", 1, "ln2"]
    assert cache["blocks.0.ln1.hook_scale"] is cache["scale", 0, "ln1"]  # TransformerLens' full name
    assert cache["ln_final.hook_scale"] is cache["scale"] is cache["ln_f.hook_scale"]


def test_layernorm_scale_is_the_spread_it_divides_by(model, ids):
    _, cache = model.run_with_cache(ids)
    eps = model.config.layer_norm_epsilon
    for layer in range(2):
        for ln, stream in (("ln1", cache["resid_pre", layer]), ("ln2", cache["resid_mid", layer])):
            expected = (stream.var(-1, unbiased=False, keepdim=True) + eps).sqrt()  # (B, T, 1)
            torch.testing.assert_close(cache["scale", layer, ln], expected, rtol=0, atol=ATOL)
    expected = (cache["resid_post", 1].var(-1, unbiased=False, keepdim=True) + eps).sqrt()
    torch.testing.assert_close(cache["scale"], expected, rtol=0, atol=ATOL)
    # written out only while hooked: the same output as the fused LayerNorm
    with torch.no_grad():
        torch.testing.assert_close(model.run_with_hooks(ids, [("scale", lambda a, hook: None)]), model(ids),
                                   rtol=0, atol=ATOL)


def test_missing_keys_say_why(model, ids):
    _, cache = model.run_with_cache(ids, names_filter="pattern")
    with pytest.raises(KeyError, match="was not cached"):
        cache["z", 0]
    with pytest.raises(KeyError, match=r"every block: ask for it with a layer, e\.g\. cache\['z', 0\]"):
        cache["z"]
    with pytest.raises(KeyError, match="nearest valid names are 'blocks.0.attn.hook_pattern'"):
        cache["blocks.0.attn.hook_patern"]


def test_stack_activation(model, ids):
    _, cache = model.run_with_cache(ids)
    stacked = cache.stack_activation("resid_post")  # (L, B, T, C)
    assert stacked.shape == (2, 1, 6, 32)
    assert torch.equal(stacked[1], cache["resid_post", 1]) and torch.equal(cache.stack("resid_post"), stacked)
    assert torch.equal(cache.stack_activation("scale", 1, "ln1"), cache["scale", 0, "ln1"][None])  # layers < 1


def test_remove_batch_dim(model, ids):
    logits, cache = model.run_with_cache(ids, remove_batch_dim=True)
    assert logits.shape == (6, 50257) and cache["pattern", 0].shape == (4, 6, 6) and not cache.has_batch_dim
    with pytest.raises(ValueError, match="batch of one"):
        model.run_with_cache(ids.repeat(2, 1), remove_batch_dim=True)


# ---- hook management: add_hook, reset_hooks, hook_dict ------------------------------------------------------
def test_add_hook_stays_until_reset_hooks(model, ids):
    with torch.no_grad():
        clean = model(ids)
        model.add_hook("blocks.0.hook_resid_post", lambda act, hook: act * 0)
        hooked = model(ids)
        assert (hooked - clean).abs().max() > 1e-3
        torch.testing.assert_close(model(ids), hooked, rtol=0, atol=0)  # still there on the next run
        model.add_hook(lambda name: name.endswith("hook_z"), lambda act, hook: act, is_permanent=True)
        model.reset_hooks()  # removes the first, keeps the permanent one
        assert [p.name for p in model.hook_points() if p.active] == ["blocks.0.attn.hook_z", "blocks.1.attn.hook_z"]
        torch.testing.assert_close(model(ids), clean, rtol=0, atol=ATOL)
        model.reset_hooks(including_permanent=True)
        assert not any(p.active for p in model.hook_points())


def test_hooks_context_and_reset_hooks_end(model, ids):
    with model.hooks(fwd_hooks=[("blocks.1.hook_mlp_out", lambda act, hook: act * 0)], reset_hooks_end=False):
        pass
    assert model.hook_dict["blocks.1.hook_mlp_out"].active  # left on, as asked
    model.reset_hooks()
    assert not any(p.active for p in model.hook_points())


def test_hook_dict(model):
    names = list(model.hook_dict)
    assert {"hook_embed", "hook_pos_embed", "ln_f.hook_scale", "hook_ln_final",
            "blocks.1.ln_2.hook_scale"} <= set(names)
    assert len(names) == 2 * 15 + 4 and all(model.hook_dict[n].name == n for n in names)
    assert list(model.hook_points()) == list(model.hook_dict.values())


def test_backward_hooks_see_the_gradient(model, ids):
    got = {}
    target = ids[:, 1:]
    model.add_hook("blocks.0.hook_resid_post", lambda grad, hook: got.setdefault("grad", grad), dir="bwd")
    kept = {}
    model.add_hook("blocks.0.hook_resid_post", lambda act, hook: kept.setdefault("act", act.retain_grad() or act))
    try:
        model(ids[:, :-1], targets=target).backward()
    finally:
        model.reset_hooks()
        model.zero_grad(set_to_none=True)
    torch.testing.assert_close(got["grad"], kept["act"].grad, rtol=0, atol=0)


# ---- to_tokens: no BOS by default, prepend_bos, padding and the attention mask ---------------------------
def test_to_tokens_default_prepend_bos_and_special_text(model):
    tok = model.tokenizer
    assert model.to_tokens(TEXTS[0]).tolist() == [tok.encode(TEXTS[0])]  # Hugging Face's default: no BOS
    assert model.to_tokens(TEXTS[0], prepend_bos=True).tolist() == [[50256, *tok.encode(TEXTS[0])]]
    assert model.to_tokens(TEXTS[2])[0, 0].item() == 50256  # written <|endoftext|> is the token, as in HF and TL


def test_to_tokens_pads_right_and_returns_the_mask(model):
    ids, mask = model.to_tokens(TEXTS, return_attention_mask=True)
    rows = [model.tokenizer.encode(t, allowed_special="all") for t in TEXTS]
    T = max(map(len, rows))
    assert ids.shape == mask.shape == (3, T) and mask.dtype == torch.long
    for i, row in enumerate(rows):
        assert ids[i, :len(row)].tolist() == row and (ids[i, len(row):] == 50256).all()
        assert mask[i].tolist() == [1] * len(row) + [0] * (T - len(row))
    assert torch.equal(model.to_tokens(TEXTS), ids)
    with torch.no_grad():  # real tokens never see the padding after them
        batch = model(ids)
        for i, row in enumerate(rows):
            torch.testing.assert_close(batch[i, :len(row)], model(torch.tensor([row]))[0], rtol=0, atol=ATOL)
        logits, cache = model.run_with_cache(TEXTS)  # a list of texts works everywhere text does
        torch.testing.assert_close(logits, batch, rtol=0, atol=ATOL)
    assert model.to_str_tokens(TEXTS[:2])[1] == ["A", " cat"]


def test_to_tokens_matches_hugging_face_padding(model, tmp_path):
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2TokenizerFast.from_pretrained(str(model.tokenizer.save(tmp_path)))
    hf.pad_token = hf.eos_token  # right padding is the default
    ours_ids, ours_mask = model.to_tokens(TEXTS, return_attention_mask=True)
    theirs = hf(TEXTS, padding=True, return_tensors="pt")
    assert torch.equal(ours_ids, theirs["input_ids"]) and torch.equal(ours_mask, theirs["attention_mask"])


# ---- against TransformerLens itself ------------------------------------------------------------------------
needs_tl = pytest.mark.skipif(importlib.util.find_spec("transformer_lens") is None,
                              reason="transformer_lens is not installed (optional: pip install transformer-lens)")


@pytest.fixture(scope="module")
def bridge(model, tmp_path_factory):
    """TransformerLens' TransformerBridge around the same weights (a Hugging Face GPT2LMHeadModel)."""
    transformers = pytest.importorskip("transformers")
    from transformer_lens.model_bridge import TransformerBridge

    folder = model.save_pretrained(tmp_path_factory.mktemp("tl-model"))
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder)
    tok = transformers.GPT2TokenizerFast.from_pretrained(folder)
    return TransformerBridge.boot_transformers(str(folder), hf_model=hf, tokenizer=tok, device="cpu")


def _tl_to_gptlearn(name: str) -> str:
    return name.replace(".ln1.", ".ln_1.").replace(".ln2.", ".ln_2.").replace("ln_final.", "ln_f.")


@needs_tl
def test_get_act_name_agrees_with_transformer_lens():
    from transformer_lens.utilities import get_act_name as tl_get_act_name

    keys = [("pattern", 3), ("attn", 3), ("attn_scores", 0), ("attn_logits", 0), ("q", 1), ("key", 2), ("value", 2),
            ("z", 0), ("pre", 5), ("mlp_pre", 5), ("post", 5), ("mlp_post", 5), ("resid_pre", 1), ("resid_mid", 1),
            ("resid_post", 1), ("attn_out", 1), ("mlp_out", 1), ("scale", 2, "ln1"), ("scale", 2, "ln2"), ("scale",),
            ("embed",), ("pos_embed",), ("k6",), ("pre5",), ("scale4ln1",), ("blocks.0.attn.hook_z",),
            ("blocks.3.ln2.hook_scale",), ("ln_final.hook_scale",)]
    for key in keys:
        assert get_act_name(*key) == _tl_to_gptlearn(tl_get_act_name(*key)), key


@needs_tl
def test_shared_activations_equal_transformer_lens(model, bridge):
    ids = model.to_tokens(TEXTS, prepend_bos=True)
    assert torch.equal(bridge.to_tokens(TEXTS), ids)  # TL prepends BOS and pads right with it
    tl_logits, tl_cache = bridge.run_with_cache(ids)
    logits, cache = model.run_with_cache(ids)
    torch.testing.assert_close(logits, tl_logits, rtol=0, atol=ATOL)
    shared = [k for k in tl_cache.keys() if get_act_name(k) in cache]
    assert len(shared) == 2 * 15 + 3  # per block: 13 + two LayerNorm scales; embed, pos_embed, ln_final scale
    for key in shared:
        ours, theirs = cache[key], tl_cache[key]
        if key.endswith("hook_attn_scores"):  # masked entries: -inf here, a large negative number there
            keep = torch.ones(ids.size(1), ids.size(1)).tril().bool()
            ours, theirs = ours[..., keep], theirs[..., keep]
        torch.testing.assert_close(ours, theirs, rtol=0, atol=ATOL, msg=key)
    for name in ("pattern", "attn", "pre", "post", "resid_post"):
        torch.testing.assert_close(cache.stack_activation(name), tl_cache.stack_activation(name), rtol=0, atol=ATOL)
    torch.testing.assert_close(cache["scale", 1, "ln1"], tl_cache["scale", 1, "ln1"], rtol=0, atol=ATOL)


@needs_tl
def test_hook_management_behaves_as_in_transformer_lens(model, bridge):
    ids = model.to_tokens(TEXTS[0], prepend_bos=True)

    def run_script(m) -> list[torch.Tensor]:
        out = []
        with torch.no_grad():
            m.reset_hooks(including_permanent=True)
            out.append(m(ids))
            m.add_hook("blocks.0.hook_resid_post", lambda act, hook: act * 0.5)
            out.append(m(ids))
            m.add_hook(lambda name: name.endswith("attn.hook_z"), lambda act, hook: act * 0, is_permanent=True)
            out.append(m(ids))
            m.reset_hooks()
            out.append(m(ids))  # only the permanent hook is left
            m.reset_hooks(including_permanent=True)
            out.append(m.run_with_hooks(ids, fwd_hooks=[("blocks.1.hook_mlp_out", lambda act, hook: act + 1)]))
            out.append(m(ids))  # run_with_hooks removed it
            _, c = m.run_with_cache(ids, names_filter="blocks.0.attn.hook_pattern")
            assert list(c.keys()) == ["blocks.0.attn.hook_pattern"]
            out.append(c["blocks.0.attn.hook_pattern"])
        return out

    ours, theirs = run_script(model), run_script(bridge)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        torch.testing.assert_close(a, b, rtol=0, atol=ATOL, msg=f"step {step}")
    assert (ours[1] - ours[0]).abs().max() > 1e-3 and (ours[3] - ours[0]).abs().max() > 1e-3
    names = {_tl_to_gptlearn(n) for n in bridge.hook_dict}
    assert set(model.hook_dict) - names == {"hook_ln_final"}  # TL calls it ln_final.hook_normalized/hook_out


@needs_tl
def test_one_hook_function_runs_in_both(model, bridge):
    """The same keyword-only hook function, ``fn(act, *, hook)``, works unchanged in both libraries."""
    ids = model.to_tokens(TEXTS[1], prepend_bos=True)
    shared = ["hook_embed", "blocks.0.attn.hook_pattern", "blocks.1.hook_resid_post"]

    def record(m) -> list[tuple[int, ...]]:
        seen = []
        m.run_with_hooks(ids, fwd_hooks=[(n, lambda act, *, hook: seen.append(tuple(act.shape))) for n in shared])
        return seen

    assert record(model) == record(bridge) == [(1, 3, 32), (1, 4, 3, 3), (1, 3, 32)]
