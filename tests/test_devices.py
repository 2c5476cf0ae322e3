"""gptlearn.devices: device choice and mixed precision; explicit requests are honoured or refused, never
silently replaced."""
from __future__ import annotations

import contextlib

import pytest
import torch

import gptlearn
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
    with pytest.raises(ValueError, match="device must be a device name"):  # InvalidValueError, named
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




def test_the_module_and_the_function_have_different_names():
    import gptlearn.devices as devices_module

    assert callable(gptlearn.device) and gptlearn.device is devices_module.device
    assert devices_module.__name__ == "gptlearn.devices" and gptlearn.devices is devices_module
