"""Device choice and mixed precision: explicit requests are honoured or refused, never silently replaced."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from gptlearn import GPT, GPTConfig, autocast, device, resolve_device
from gptlearn.model import Embedding

HAS_CUDA = torch.cuda.is_available()
HAS_MPS = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def test_auto_picks_best_available():
    expected = "cuda" if HAS_CUDA else "mps" if HAS_MPS else "cpu"
    assert device().type == expected
    assert resolve_device("auto") == device()
    assert resolve_device(None) == device()


@pytest.mark.skipif(HAS_CUDA or HAS_MPS, reason="this machine has an accelerator")
def test_auto_is_cpu_without_accelerator():
    assert resolve_device("auto") == torch.device("cpu")


def test_explicit_cpu_is_honoured():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is available here")
@pytest.mark.parametrize("requested", ["cuda", "cuda:0", torch.device("cuda", 1)])
def test_cuda_request_without_cuda_raises(requested):
    with pytest.raises(RuntimeError, match=r"CUDA is not available; use device='cpu'"):
        resolve_device(requested)


@pytest.mark.skipif(HAS_CUDA, reason="CUDA is available here")
def test_model_on_missing_cuda_raises():
    cfg = GPTConfig(n_layer=1, n_head=1, n_embd=8, n_positions=4, vocab_size=10)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        GPT(cfg, device="cuda")


@pytest.mark.skipif(HAS_MPS, reason="MPS is available here")
def test_mps_request_without_mps_raises():
    with pytest.raises(RuntimeError, match="MPS is not available"):
        resolve_device("mps")


def test_bad_device_string_raises():
    with pytest.raises(RuntimeError):
        resolve_device("not-a-device")


def test_autocast_is_a_no_op_off_cuda(tiny_model):
    assert isinstance(autocast("cpu"), contextlib.nullcontext)
    assert isinstance(autocast(torch.device("cpu"), torch.bfloat16), contextlib.nullcontext)
    assert isinstance(autocast("cuda", torch.float32), contextlib.nullcontext)  # explicitly off
    idx = torch.randint(0, 100, (1, 5))
    with torch.no_grad():
        plain = tiny_model(idx)
        with autocast("cpu"):
            out = tiny_model(idx)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, plain, rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_forward_under_autocast(tiny_model):
    """bf16/fp16 logits within 5e-2 of fp32 CPU logits (tiny model, |logits| < 1)."""
    idx = torch.randint(0, tiny_model.config.vocab_size, (2, 16))
    with torch.no_grad():
        ref = tiny_model(idx)
        model = GPT(tiny_model.config, device="cuda")
        model.load_state_dict(tiny_model.state_dict())
        model.eval()
        assert model.device.type == "cuda"
        with autocast("cuda"):
            logits = model(idx.cuda())
            _, cache = model.run_with_cache(idx.cuda())
            out = model.generate(idx.cuda(), 8, do_sample=False)
    assert logits.dtype in (torch.bfloat16, torch.float16)
    torch.testing.assert_close(logits.float().cpu(), ref, rtol=0, atol=5e-2)
    assert cache["pattern", 0].shape == (2, tiny_model.config.n_head, 16, 16)
    assert out.shape == (2, 24) and out.device.type == "cuda"
    with torch.no_grad():  # fp32 on the GPU matches the CPU closely
        torch.testing.assert_close(model(idx.cuda()).cpu(), ref, rtol=0, atol=1e-4)


FAULTS_SCRIPT = """
import resource, sys, torch
from gptlearn.device import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
def faults_for_a_fresh_100mb_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.ones(25 * 2**20)  # 100 MB, written once
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    del t
    return after - before
# warm up: the heap may need a second 100 MB block (the thread pool starting on the first fill can place
# a small allocation right after the first block, which then no longer fits a new aligned request)
for _ in range(4):
    faults_for_a_fresh_100mb_tensor()
print(sum(faults_for_a_fresh_100mb_tensor() for _ in range(4)))  # four more, after the warm-up
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator setting")
def test_keep_freed_memory_reuses_pages_instead_of_faulting_in_fresh_ones(tmp_path):
    """By default every new 100 MB tensor faults in ~25,600 fresh 4 KB pages; after keep_freed_memory()
    and a warm-up, new ones reuse the memory of those freed before them."""
    script = tmp_path / "faults.py"
    script.write_text(FAULTS_SCRIPT)

    def faults(mode: str) -> int:
        r = subprocess.run([sys.executable, str(script), mode], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        assert r.returncode == 0, r.stderr[-2000:]
        return int(r.stdout.strip().splitlines()[-1])

    default, kept = faults("default"), faults("keep")
    assert default > 4 * 20_000  # the premise: fresh pages every time
    assert kept < 2_000, (default, kept)


# ---- empty_reused: large outputs reuse memory nobody holds any more ------------------------------

def test_empty_reused_hands_memory_out_again_only_when_nothing_holds_it(small_pool):
    d = small_pool
    shape = (64, 256)  # 64 KB of fp32
    a = d.empty_reused(shape)
    assert a.shape == shape and a.dtype == torch.float32 and a.is_contiguous()
    first = a.data_ptr()
    a.fill_(1.0)
    view = a[10:20]  # a view keeps the memory in use after the tensor itself is gone
    del a
    b = d.empty_reused(shape)
    assert b.data_ptr() != first
    b.fill_(2.0)
    assert bool((view == 1.0).all())
    arr = view.numpy()  # so does a NumPy array of it
    del view
    c = d.empty_reused(shape)
    assert c.data_ptr() not in (first, b.data_ptr())
    c.fill_(3.0)
    assert (arr == 1.0).all()
    del arr
    again = d.empty_reused(shape)  # now the first block is free
    assert again.data_ptr() == first
    assert d.empty_reused((32, 256)).data_ptr() not in (first, b.data_ptr(), c.data_ptr())  # sizes must match


def test_empty_reused_leaves_small_and_huge_tensors_to_torch(small_pool):
    d = small_pool
    t = d.empty_reused((16,))  # 64 bytes: below the threshold
    assert not d._pool and t.untyped_storage().resizable()
    big = d.empty_reused((1 << 19,))  # 2 MB: above the cap
    assert not d._pool and big.shape == (1 << 19,)
    other = d.empty_reused((64, 256), device="meta")  # another device (here torch's shape-only one)
    assert not d._pool and other.device.type == "meta" and other.shape == (64, 256)
    pooled = d.empty_reused((1024,), torch.bfloat16)
    assert len(d._pool) == 1 and pooled.dtype == torch.bfloat16 and not pooled.untyped_storage().resizable()


def test_empty_reused_forgets_the_oldest_beyond_its_cap_without_freeing_tensors_in_use(small_pool):
    d = small_pool
    held = [d.empty_reused((64, 1024)).fill_(i) for i in range(5)]  # 5 x 256 KB held, cap 1 MB
    assert sum(e[0].nbytes for e in d._pool) <= d.REUSE_MAX_BYTES
    assert len({t.data_ptr() for t in held}) == 5
    assert all(bool((t == i).all()) for i, t in enumerate(held))  # the forgotten ones are still intact
    d.release_reused()
    assert not d._pool and bool((held[0] == 0).all())


def test_empty_reused_never_gives_two_threads_the_same_memory(small_pool):
    d = small_pool
    errors = []

    def work(k: int) -> None:
        try:
            for _ in range(200):
                t = d.empty_reused((16, 64))
                t.fill_(k)
                t.add_(0)  # a little time between the write and the check
                if not bool((t == k).all()):
                    errors.append(k)
        except Exception as e:  # noqa: BLE001  (a thread's exception would not fail the test by itself)
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors


def test_logits_reuse_the_memory_of_dropped_logits_and_leave_held_ones_alone(small_pool, monkeypatch):
    monkeypatch.setattr(small_pool, "REUSE_MAX_BYTES", 64 << 20)
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("tiny")).eval()
    idx = torch.randint(0, model.config.vocab_size, (2, 16))
    other = torch.randint(0, model.config.vocab_size, (2, 16))
    with torch.no_grad():
        first = model(idx)  # 2 x 16 x 50257 fp32, pooled under the test's threshold
        kept = first.clone()
        assert not first.untyped_storage().resizable() and len(small_pool._pool) == 1  # from the pool
        second = model(other)  # first is still held: it must get other memory
        assert second.data_ptr() != first.data_ptr() and torch.equal(first, kept)
        ptr = first.data_ptr()
        del first, second
        third = model(idx)  # the loop `logits = model(x)` pattern: memory comes back
        assert third.data_ptr() == ptr
        assert torch.equal(third, torch.nn.functional.linear(model.hidden_states(idx), model.wte.weight))


def test_embedding_gradient_comes_from_the_pool_and_matches_nn_embedding(small_pool):
    torch.manual_seed(0)
    emb = Embedding(500, 16)  # a (500, 16) gradient: 32 KB, pooled under the test's thresholds
    ref = torch.nn.Embedding(500, 16)
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
