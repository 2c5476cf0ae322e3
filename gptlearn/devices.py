"""Device and precision choices that work the same on a laptop CPU, Apple GPUs and CUDA.

``gptlearn.device()`` is the function below; this module is ``gptlearn.devices``.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from .checks import check_device
from .errors import UnavailableError

__all__ = ["device", "resolve_device", "autocast", "autocast_enabled"]


def device() -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(requested: str | torch.device | None) -> torch.device:
    """``None``/"auto" picks :func:`device`; an explicit request is honoured or refused, never
    silently replaced by the CPU."""
    if requested is None or (isinstance(requested, str) and requested == "auto"):
        return device()
    dev = check_device(requested, "device")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UnavailableError(
            f"device {str(requested)!r} was requested but CUDA is not available; "
            "use device='cpu' or install a CUDA build of PyTorch"
        )
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UnavailableError(f"device {str(requested)!r} was requested but MPS is not available; use device='cpu'")
    return dev


def autocast(dev: str | torch.device, dtype: torch.dtype | None = None) -> ContextManager:
    """Mixed precision on CUDA (bf16 where supported, else fp16); a no-op elsewhere.

    Pass ``dtype=torch.float32`` to switch it off explicitly.
    """
    dev = torch.device(dev)
    if dev.type != "cuda" or dtype == torch.float32:
        return contextlib.nullcontext()
    if dtype is None:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for this device type (CPU autocast too, not only CUDA's)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_enabled() or (device_type == "cpu" and torch.is_autocast_cpu_enabled())
