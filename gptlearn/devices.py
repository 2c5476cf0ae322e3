"""Device and precision choices that work the same on a laptop CPU, Apple GPUs and CUDA.

``gptlearn.device()`` is the function below; this module is ``gptlearn.devices``.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import ContextManager

import torch

from .checks import check_device
from .errors import InvalidValueError, UnavailableError

__all__ = ["device", "resolve_device", "autocast", "autocast_enabled", "free_bytes", "achievable_flops",
           "check_duration"]


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


# ---- speed: refuse a run that cannot finish before starting it --------------------------------------
# The most floating-point operations a second one device of each kind does, rounded up generously (the
# fastest data-centre GPU does about 2.3e15 of dense bf16; Apple's largest GPU a few times 1e13): an upper
# bound, so that a time estimate divided by it is a lower bound. The CPU is measured instead.
FLOPS_UPPER_BOUND = {"cuda": 5e15, "mps": 2e14}
PROBE_SIZE = 256  # the CPU probe multiplies two (256, 256) float32 matrices: 33.5 million operations
PROBE_HEADROOM = 8  # larger products, a busy moment during the probe: the CPU may do 8x better than measured
_measured: dict[str, float] = {}  # operations a second of one CPU thread


def achievable_flops(dev: str | torch.device) -> float:
    """An upper bound on the floating-point operations a second ``dev`` does in a model's matrix products.

    CUDA and MPS take :data:`FLOPS_UPPER_BOUND`. The CPU is measured once per process, on one thread
    (threads waiting for each other on a busy machine would make the probe slow, not the CPU): the
    fastest of a few products of two float32 (256, 256) matrices, times the threads torch uses (as if
    they shared the work perfectly), times :data:`PROBE_HEADROOM`, since larger products run faster and a
    busy moment slows the probe. A time estimate made with it errs towards too short, never too long.
    """
    dev = torch.device(dev)
    if dev.type != "cpu":
        return FLOPS_UPPER_BOUND.get(dev.type, max(FLOPS_UPPER_BOUND.values()))
    if "cpu" not in _measured:
        n, threads = PROBE_SIZE, torch.get_num_threads()
        a, b = torch.rand(n, n), torch.rand(n, n)
        best = math.inf
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                torch.mm(a, b)  # the first call pays for the library's set-up
                for _ in range(10):
                    t0 = time.perf_counter()
                    torch.mm(a, b)
                    best = min(best, time.perf_counter() - t0)
        finally:
            torch.set_num_threads(threads)
        _measured["cpu"] = 2 * n**3 / max(best, 1e-9)
    return _measured["cpu"] * torch.get_num_threads() * PROBE_HEADROOM


def check_duration(flops: int | float, dev: str | torch.device, *, max_days: float, what: str, advice: str) -> None:
    """Refuse (:class:`~gptlearn.errors.InvalidValueError`) work of ``flops`` floating-point operations that
    would take ``dev`` longer than ``max_days`` even at :func:`achievable_flops`, in one line naming the
    estimate, ``advice`` (what to lower) and the setting that raises the limit (``--max-days``)."""
    rate = achievable_flops(dev)
    days = int(flops) // math.ceil(rate * 86400)  # Python integers: an absurd count never overflows a float
    if days <= max_days:
        days = flops / rate / 86400
        if days <= max_days:
            return
    raise InvalidValueError(
        f"{what} would take at least {_sci(days, ',.0f')} days on {torch.device(dev).type} ({_sci(flops)} "
        f"floating-point "
        f"operations at {rate:.1e} a second, more than this device does), longer than --max-days "
        f"{max_days:g}; {advice}, or raise --max-days (max_days=...) if it really should run that long")


def _sci(n: int | float, small: str = ".2e") -> str:
    """A count for a message: ``small``'s format below 10^9 (``.2e``: always), a power of ten past a float's range."""
    if n >= 10**300:
        return f"about 10^{len(str(int(n))) - 1}"
    return format(n, small) if n < 1e9 or small == ".2e" else f"{n:.1e}"
