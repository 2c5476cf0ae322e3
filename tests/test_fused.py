"""The fused C++ decoding step (gptlearn.fast.fused): the same logits, cache and tokens as the eager model,
the same greedy text as transformers, and clear refusals for what it does not do.

The first test to run builds the extension (then cached by PyTorch in ~/.cache/torch_extensions).
Without a C++ compiler or ninja these tests are skipped, except in CI (``CI`` set), where that fails.
"""
from __future__ import annotations

import os
import shutil

import pytest
import torch

from gptlearn.fast import fused as fused_mod
from gptlearn.fast.fused import FusedDecoder, FusedUnavailable
from gptlearn.generate import next_token_logits
from gptlearn.kv_cache import KVCache


@pytest.fixture(scope="module", autouse=True)
def kernel():
    """The built extension. Skipped where the tools are missing (a failure in CI); a source that does
    not compile is always a failure."""
    from torch.utils import cpp_extension

    if shutil.which(os.environ.get("CXX", "c++")) is None or not cpp_extension.is_ninja_available():
        if os.environ.get("CI"):
            pytest.fail("the fused step needs a C++ compiler and ninja (pip install ninja); CI must run its tests")
        pytest.skip("the fused step needs a C++ compiler and ninja")
    return fused_mod.load_kernel()


@pytest.fixture
def random_model(random_gpt):
    """Weights far from their init (biases and LayerNorms included), so every parameter matters."""
    return lambda seed=0, **cfg: random_gpt(seed, noise=0.1, **cfg)


# C=36 with 3 heads of 12 and an MLP of 150: widths that are not multiples of the kernel's 8 or 32 lanes;
# the last one has an MLP width of 70 and the exact (erf) GELU.
CONFIGS = {
    "odd-widths": dict(n_layer=2, n_head=3, n_embd=36, n_inner=150, vocab_size=101, n_positions=40),
    "gpt2-like": dict(n_layer=3, n_head=4, n_embd=64, vocab_size=1003, n_positions=40),
    "exact-gelu": dict(n_layer=2, n_head=2, n_embd=32, n_inner=70, vocab_size=97, n_positions=40,
                       activation_function="gelu"),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_step_equals_the_eager_step_and_fills_the_same_cache(name, random_model):
    cfg = CONFIGS[name]
    m = random_model(**cfg)
    prompt = torch.randint(0, cfg["vocab_size"], (1, 5), generator=torch.Generator().manual_seed(1))
    eager, fused = KVCache.for_model(m, 1), KVCache.for_model(m, 1)
    with torch.inference_mode():
        next_token_logits(m, prompt, eager)
        next_token_logits(m, prompt, fused)
        dec = FusedDecoder(m, fused)
        for i in range(12):
            tok = (7 * i + 3) % cfg["vocab_size"]
            want = next_token_logits(m, torch.tensor([[tok]]), eager)  # (1, V)
            got = dec.step(tok)
            assert got.shape == want.shape == (1, cfg["vocab_size"])
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert fused.pos == eager.pos == 17
    torch.testing.assert_close(fused.k[:, :, :, :17], eager.k[:, :, :, :17], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused.v[:, :, :, :17], eager.v[:, :, :, :17], rtol=1e-5, atol=1e-5)


def test_step_from_an_empty_cache_equals_the_forward_pass(random_model):
    m = random_model(**CONFIGS["gpt2-like"])
    ids = [5, 900, 17, 3]
    cache = KVCache.for_model(m, 1)
    dec = FusedDecoder(m, cache)
    got = torch.cat([dec.step(t) for t in ids])  # (4, V): every position fed by the kernel alone
    with torch.no_grad():
        want = m(torch.tensor([ids]))[0]  # (4, V)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_greedy_tokens_equal_eager_and_across_the_context_refill(random_model):
    """40 new tokens with a 32-token prompt and a 40-token context: the cache is refilled (eagerly)
    once the window is full, and the fused steps before that give the eager tokens."""
    m = random_model(**CONFIGS["gpt2-like"])
    prompt = torch.randint(0, 1003, (1, 32), generator=torch.Generator().manual_seed(2))
    eager = m.generate(prompt, 40, do_sample=False)
    assert torch.equal(m.generate(prompt, 40, do_sample=False, fused=True), eager)


def test_a_model_without_the_speed_wing_decodes_the_same(random_model):
    wing = random_model(**CONFIGS["gpt2-like"])
    plain = random_model(fast=False, **CONFIGS["gpt2-like"])
    prompt = torch.randint(0, 1003, (1, 7), generator=torch.Generator().manual_seed(5))
    assert torch.equal(plain.generate(prompt, 20, do_sample=False, fused=True),
                       wing.generate(prompt, 20, do_sample=False))


def test_seeded_sampling_equals_eager(random_model):
    m = random_model(**CONFIGS["odd-widths"])
    kw = dict(temperature=0.9, top_k=20, seed=3)
    assert torch.equal(m.generate([1, 2, 3], 25, fused=True, **kw), m.generate([1, 2, 3], 25, **kw))


def test_greedy_text_equals_transformers(hf_and_model):
    hf, m = hf_and_model
    prompt = torch.randint(0, 1000, (1, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = hf.generate(prompt, max_new_tokens=40, do_sample=False)
    got = m.generate(prompt, 40, do_sample=False, fused=True)
    assert torch.equal(got, want)
    assert len(set(got[0, 6:].tolist())) > 5  # the text varies, so equality means something


def test_refusals_are_clear_and_leave_the_model_as_it_was(random_model):
    m = random_model(**CONFIGS["odd-widths"])
    m.train()
    with m.hooks([("blocks.0.hook_resid_pre", lambda x, hook: x)]):
        with pytest.raises(ValueError, match="hook"):
            m.generate([1, 2], 3, fused=True)
    assert m.training  # generate put it back in training mode
    handle = m.blocks[1].mlp.register_forward_hook(lambda *a: None)  # a plain PyTorch hook counts too
    with pytest.raises(ValueError, match="hook"):
        m.generate([1, 2], 3, fused=True)
    handle.remove()
    with pytest.raises(ValueError, match="one sequence"):
        m.generate(torch.zeros(2, 3, dtype=torch.long), 3, fused=True)
    with pytest.raises(ValueError, match="use_cache"):
        m.generate([1, 2], 3, fused=True, use_cache=False)
    with pytest.raises(ValueError, match="fp32"):
        m.double().generate([1, 2], 3, fused=True)
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(ValueError, match="autocast"):
        m.float().generate([1, 2], 3, fused=True)
    m.float().eval()
    with pytest.raises(ValueError, match="model.eval"):
        FusedDecoder(m.train(), KVCache.for_model(m, 1))
    m.eval()
    dec = FusedDecoder(m, KVCache.for_model(m, 1, max_len=2))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        dec.step(101)
    dec.step(1), dec.step(2)
    with pytest.raises(ValueError, match="full"):
        dec.step(3)


def test_kernel_checks_its_arguments(kernel, random_model):
    """Called directly with wrong tensors, the C++ side refuses instead of reading out of bounds."""
    m = random_model(**CONFIGS["odd-widths"])
    dec = FusedDecoder(m, KVCache.for_model(m, 1))
    cache = dec.cache
    with pytest.raises(RuntimeError, match="caches"):
        kernel.decode_step(1, 0, dec.params, cache.k[:, :, :, :, :6], cache.v, 3, 1e-5, False)
    with pytest.raises(RuntimeError, match="position"):
        kernel.decode_step(1, 40, dec.params, cache.k, cache.v, 3, 1e-5, False)
    with pytest.raises(RuntimeError, match="parameters"):
        kernel.decode_step(1, 0, dec.params[:-1], cache.k, cache.v, 3, 1e-5, False)
    swapped = list(dec.params)
    swapped[5 + 12 + 2], swapped[5 + 12 + 4] = swapped[5 + 12 + 4], swapped[5 + 12 + 2]  # block 1's c_attn <-> c_proj
    with pytest.raises(RuntimeError, match="block 1 have the wrong shapes"):
        kernel.decode_step(1, 0, swapped, cache.k, cache.v, 3, 1e-5, False)
    with pytest.raises(RuntimeError, match="lm_head"):
        kernel.decode_step(1, 0, dec.params[:4] + [dec.params[4][:-1]] + dec.params[5:], cache.k, cache.v, 3, 1e-5,
                           False)


def test_unavailable_compiler_is_one_clear_error(monkeypatch):
    from torch.utils import cpp_extension

    def fail(**kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions\nmore lines of the loader")

    monkeypatch.setattr(cpp_extension, "load", fail)
    fused_mod.load_kernel.cache_clear()
    try:
        with pytest.raises(FusedUnavailable, match="pip install ninja.*Ninja is required") as e:
            fused_mod.load_kernel()
        assert "\n" not in str(e.value)
    finally:
        fused_mod.load_kernel.cache_clear()  # the next caller loads the real build again


def test_a_killed_builds_lock_is_cleared_and_a_running_builds_waited_for(monkeypatch, tmp_path):
    """PyTorch's loader waits for its lock file to go; one left by a killed build would hang every later load.
    A build running in another process (holding the OS lock) is waited for, then its lock file is left alone."""
    import threading

    pytest.importorskip("fcntl")
    from torch.utils import cpp_extension

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    seen = []
    monkeypatch.setattr(cpp_extension, "load", lambda **kw: seen.append(kw["build_directory"]) or "kernel")
    name = "gptlearn_decode_cpu" + ("_avx2" if fused_mod._cpu_flags() else "")
    build = fused_mod.build_directory(name)
    build.mkdir(parents=True)
    lock = build / "lock"
    try:
        lock.touch()  # a killed build's: nobody holds the OS lock
        fused_mod.load_kernel.cache_clear()
        assert fused_mod.load_kernel() == "kernel" and not lock.exists()
        assert seen == [str(build)] and build.parent == tmp_path

        fused_mod.load_kernel.cache_clear()
        with fused_mod._one_build_at_a_time(build):  # "another build" holds the folder
            lock.touch()
            loader = threading.Thread(target=fused_mod.load_kernel)
            loader.start()
            loader.join(timeout=0.5)
            assert loader.is_alive() and len(seen) == 1  # it waits, and does not load meanwhile
            lock.unlink()  # that build finishes
        loader.join(timeout=10)
        assert not loader.is_alive() and len(seen) == 2
    finally:
        fused_mod.load_kernel.cache_clear()  # the next caller loads the real build again
