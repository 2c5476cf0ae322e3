"""Device and precision choices that work the same on a laptop CPU, Apple GPUs and CUDA.

``gptlearn.device()`` is the function below; this module is ``gptlearn.devices``.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import ContextManager

import torch

from .checks import check_device
from .errors import UnavailableError

__all__ = ["device", "resolve_device", "autocast", "autocast_enabled", "free_bytes"]


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


def free_bytes(dev: str | torch.device) -> int | None:
    """The memory a job on ``dev`` can still take: CUDA's free memory; on the CPU what the kernel calls
    available plus free swap, within the container's limit (Linux), else the physical memory; None where
    unknown (MPS)."""
    dev = torch.device(dev)
    if dev.type == "cuda":
        return torch.cuda.mem_get_info(dev)[0]
    if dev.type != "cpu":
        return None
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        free = (int(info["MemAvailable"].split()[0]) + int(info.get("SwapFree", "0 kB").split()[0])) * 1024
    except (OSError, KeyError, ValueError):
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None
    try:  # a cgroup (v2) limit, as in a container
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            free = min(free, int(limit) - used)
    except (OSError, ValueError):
        pass
    return free
