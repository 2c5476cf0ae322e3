"""Generation: greedy parity with transformers, the KV cache, sampling rules, streaming, stopping.

Greedy outputs are compared token for token (exact): the random models below were checked to keep a
gap of >1e-3 between their two best logits, far above fp32 noise (~1e-6).
"""
from __future__ import annotations

import pytest
import torch

from gptlearn import GPT, GPTConfig
from gptlearn.generate import generate, generate_stream, next_token_logits, sample_next
from gptlearn.kv_cache import KVCache

V = 1000  # also the vocabulary of conftest.py's hf_and_model


@pytest.fixture(scope="module")
def model():
    """A small random model, large weights so that sampling is not degenerate; 16-token context."""
    torch.manual_seed(1)
    m = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, n_positions=16, vocab_size=V, initializer_range=0.2)).eval()
    return m


def prompt(T, B=1, seed=0):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


# ---- greedy ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("T", [1, 5, 12])
def test_greedy_matches_transformers_with_and_without_cache(hf_and_model, T):
    hf, model = hf_and_model
    p = prompt(T, seed=T)
    ref = hf.generate(p, max_new_tokens=40, do_sample=False)
    with_cache = model.generate(p, 40, do_sample=False)
    without = model.generate(p, 40, do_sample=False, use_cache=False)
    assert with_cache.shape == (1, T + 40)
    assert torch.equal(with_cache, ref)
    assert torch.equal(without, ref)
    assert len(set(ref[0, T:].tolist())) > 5  # not a degenerate repeat of one token


def test_greedy_batch_of_two(hf_and_model):
    hf, model = hf_and_model
    p = prompt(6, B=2, seed=7)
    out = model.generate(p, 20, do_sample=False)
    assert torch.equal(out, hf.generate(p, max_new_tokens=20, do_sample=False))
    for b in range(2):  # each row as if alone
        assert torch.equal(out[b:b + 1], model.generate(p[b:b + 1], 20, do_sample=False))
    assert not torch.equal(out[0, 6:], out[1, 6:])


def test_first_token_is_argmax_of_forward(model):
    p = prompt(7)
    with torch.no_grad():
        expected = model(p)[0, -1].argmax()
    assert model.generate(p, 1, do_sample=False)[0, -1] == expected


def test_long_prompt_cropped_and_past_context_cache_equals_no_cache(model):
    n_ctx = model.config.n_positions  # 16
    p = prompt(n_ctx + 5, B=2, seed=3)
    a = model.generate(p, 20, do_sample=False)
    b = model.generate(p, 20, do_sample=False, use_cache=False)
    assert a.shape == (2, n_ctx + 5 + 20)
    assert torch.equal(a[:, : n_ctx + 5], p)  # the whole prompt is returned
    assert torch.equal(a, b)
    with torch.no_grad():  # the model only ever saw the last n_ctx tokens
        assert torch.equal(a[:, n_ctx + 5], model(p[:, -n_ctx:])[:, -1].argmax(-1))
    # the cached path is also right step by step: each token is the argmax over the last n_ctx tokens
    with torch.no_grad():
        for t in range(n_ctx + 5, a.size(1)):
            assert torch.equal(a[:, t], model(a[:, t - n_ctx:t])[:, -1].argmax(-1))
    # sampling past the context: cache and no cache draw the same tokens from the same generator
    s1 = model.generate(p, 20, temperature=1.5, seed=11)
    s2 = model.generate(p, 20, temperature=1.5, seed=11, use_cache=False)
    assert torch.equal(s1, s2)


def test_top_k_one_and_temperature_zero_are_greedy(model):
    p = prompt(4, B=2, seed=5)
    greedy = model.generate(p, 12, do_sample=False)
    assert torch.equal(model.generate(p, 12, top_k=1, temperature=3.0, seed=0), greedy)
    assert torch.equal(model.generate(p, 12, temperature=0, seed=0), greedy)
    assert torch.equal(model.generate(p, 12, temperature=0.0, top_p=0.5), greedy)


# ---- sampling -------------------------------------------------------------------------------------
def test_seeded_sampling_is_reproducible(model):
    p = prompt(3, B=2, seed=9)
    a = model.generate(p, 24, temperature=2.0, seed=123)
    b = model.generate(p, 24, temperature=2.0, seed=123)
    c = model.generate(p, 24, temperature=2.0, seed=124)
    g = model.generate(p, 24, temperature=2.0, generator=torch.Generator().manual_seed(123))
    assert torch.equal(a, b) and torch.equal(a, g)
    # 48 draws at temperature 2 from a 1000-token vocabulary: identical outputs would mean the seed is ignored
    assert (a[:, 3:] != c[:, 3:]).sum() > 24
    assert not torch.equal(a, model.generate(p, 24, do_sample=False))


# A known distribution over 10 tokens, shuffled so that sorting matters.
PROBS = torch.tensor([0.30, 0.20, 0.15, 0.12, 0.09, 0.06, 0.04, 0.02, 0.015, 0.005])
PERM = torch.tensor([7, 2, 9, 0, 5, 3, 8, 1, 6, 4])  # token PERM[i] has probability PROBS[i]
N_DRAWS = 2000
FREQ_TOL = 0.05  # > 4.5 standard deviations of a frequency over 2,000 draws (sd <= 0.0112)


def _draw(**kwargs):
    probs = torch.empty(10).scatter_(0, PERM, PROBS)
    logits = probs.log().expand(N_DRAWS, 10)  # (B, V): 2,000 independent rows
    ids = sample_next(logits, generator=torch.Generator().manual_seed(0), **kwargs)
    assert ids.shape == (N_DRAWS,)
    return torch.bincount(ids, minlength=10).float() / N_DRAWS, probs


def _check(freq, allowed_probs):
    allowed = allowed_probs > 0
    assert freq[~allowed].sum() == 0, "a token outside the allowed set was drawn"
    expected = allowed_probs / allowed_probs.sum()  # renormalised over the set
    assert (freq - expected).abs().max() < FREQ_TOL, (freq, expected)


def test_sample_plain_follows_distribution():
    freq, probs = _draw()
    _check(freq, probs)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_top_k_never_leaves_top_k_set(k):
    freq, probs = _draw(top_k=k)
    allowed = torch.zeros(10).scatter_(0, PERM[:k], PROBS[:k])
    _check(freq, allowed)


@pytest.mark.parametrize("top_p, n_kept", [(1e-300, 1), (1e-30, 1), (0.25, 1), (0.29, 1), (0.31, 2), (0.6, 3),
                                           (0.66, 4), (0.9, 6)])
def test_top_p_never_leaves_nucleus(top_p, n_kept):
    # nucleus: the fewest most-likely tokens whose probability reaches top_p
    freq, probs = _draw(top_p=top_p)
    allowed = torch.zeros(10).scatter_(0, PERM[:n_kept], PROBS[:n_kept])
    _check(freq, allowed)


def test_temperature_reshapes_distribution():
    freq, probs = _draw(temperature=0.5)  # p ** 2, renormalised
    _check(freq, probs ** 2)
    freq, probs = _draw(temperature=2.0, top_k=4)  # sqrt(p) over the top 4
    _check(freq, torch.zeros(10).scatter_(0, PERM[:4], PROBS[:4].sqrt()))


def test_top_k_and_top_p_together():
    freq, probs = _draw(top_k=5, top_p=0.6)  # top-5, renormalised, then nucleus 0.6: 0.3/0.86+0.2/0.86 < 0.6
    allowed = torch.zeros(10).scatter_(0, PERM[:3], PROBS[:3])
    _check(freq, allowed)


def test_sample_next_greedy_and_shapes():
    logits = torch.randn(4, 50)
    assert torch.equal(sample_next(logits, do_sample=False), logits.argmax(-1))
    assert torch.equal(sample_next(logits, temperature=0), logits.argmax(-1))
    assert sample_next(logits.half(), top_k=3).dtype == torch.long


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(temperature=-0.1), "temperature"),
    (dict(top_k=0), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
])
def test_bad_sampling_arguments_raise(model, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        sample_next(torch.randn(1, 10), **kwargs)
    with pytest.raises(ValueError, match=pattern):
        model.generate(prompt(2), 3, **kwargs)


def test_bad_generate_arguments_raise(model):
    with pytest.raises(ValueError, match="at least one token"):
        model.generate(torch.zeros(1, 0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="at least one token"):
        model.generate([], 3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(prompt(2), -1)


# ---- stopping, streaming, inputs ------------------------------------------------------------------
def test_eos_stops_early_and_pads_finished_rows(model):
    p = prompt(4, B=2, seed=21)
    greedy = model.generate(p, 20, do_sample=False)
    new = greedy[:, 4:]
    # an eos that row 0 produces at some step s > 0 and not before
    s = next(i for i in range(1, 20) if new[0, i].item() not in new[0, :i].tolist())
    eos = new[0, s].item()
    out = model.generate(p, 20, do_sample=False, eos_token_id=eos)
    for b in range(2):
        row = new[b].tolist()
        stop = row.index(eos) if eos in row else None
        got = out[b, 4:].tolist()
        if stop is None:
            assert got == row[: len(got)]
        else:  # the same tokens up to eos, then only eos
            assert got[: stop + 1] == row[: stop + 1] and set(got[stop:]) == {eos}
    # a single row stops as soon as it emits eos
    single = model.generate(p[:1], 20, do_sample=False, eos_token_id=eos)
    assert single.shape == (1, 4 + s + 1) and single[0, -1] == eos
    streamed = list(model.generate_stream(p[:1], 20, do_sample=False, eos_token_id=eos))
    assert len(streamed) == s + 1


def test_generate_stream_yields_generate_tokens(model):
    p = prompt(5, B=2, seed=4)
    for kwargs in (dict(do_sample=False), dict(temperature=1.3, top_k=50, seed=5),
                   dict(top_p=0.9, seed=6, use_cache=False)):
        steps = list(model.generate_stream(p, 12, **kwargs))
        assert len(steps) == 12 and all(s.shape == (2,) for s in steps)
        assert torch.equal(torch.stack(steps, dim=1), model.generate(p, 12, **kwargs)[:, 5:])


def test_generate_accepts_lists_and_restores_training_mode(model):
    ids = prompt(4)[0].tolist()
    out = generate(model, ids, 5, do_sample=False)
    assert out.shape == (1, 9) and out[0, :4].tolist() == ids
    assert torch.equal(out, model.generate(torch.tensor(ids), 5, do_sample=False))
    model.train()
    try:
        model.generate(ids, 2, do_sample=False)
        assert model.training
    finally:
        model.eval()
    assert torch.equal(model.generate(prompt(3), 0), prompt(3))  # nothing new asked for


def test_string_prompt_returns_string(tiny_model):
    text = tiny_model.generate("Hello, my name is", 8, do_sample=False)
    assert isinstance(text, str) and text.startswith("Hello, my name is")
    ids = tiny_model.to_tokens("Hello, my name is")
    assert text == tiny_model.to_string(tiny_model.generate(ids, 8, do_sample=False)[0])
    assert list(generate_stream(tiny_model, "Hello", 3, do_sample=False))[0].shape == (1,)


def test_next_token_logits_is_the_last_position_of_the_forward_pass(model):
    p = prompt(9, B=2, seed=8)
    cache = KVCache.for_model(model, batch=2)
    with torch.no_grad():
        full = model(p)  # (B, T, V)
        torch.testing.assert_close(next_token_logits(model, p), full[:, -1], rtol=0, atol=1e-5)
        torch.testing.assert_close(next_token_logits(model, p[:, :6], cache), full[:, 5], rtol=0, atol=1e-5)
        torch.testing.assert_close(next_token_logits(model, p[:, 6:], cache), full[:, -1], rtol=0, atol=1e-5)
    assert cache.pos == 9


def test_plain_model_generates_the_same_tokens(model):
    """The speed wing off (model.py's plain layers): the same greedy and seeded tokens."""
    import copy

    from gptlearn import fast

    plain = fast.disable(copy.deepcopy(model))
    p = prompt(5, B=2, seed=12)
    assert torch.equal(plain.generate(p, 20, do_sample=False), model.generate(p, 20, do_sample=False))
    assert torch.equal(plain.generate(p, 20, temperature=1.5, seed=3), model.generate(p, 20, temperature=1.5, seed=3))
