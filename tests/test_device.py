"""Device choice and mixed precision: explicit requests are honoured or refused, never silently replaced."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptlearn import GPT, GPTConfig, autocast, device, resolve_device

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
