"""A fused decoding step for the CPU: one new token's whole forward pass in one C++ call.

Legend: C n_embd, V vocab, L layers.

Decoding one sequence multiplies every weight matrix by a single vector, so a token costs one read of
all the weights from memory, and the fastest a CPU can decode is its memory bandwidth divided by the
model's bytes (book chapter "Making it fast"). The eager model spends a good part of each token
elsewhere: about 40 small operator calls a block, each with Python, dispatch and thread wake-ups around
a few microseconds of work. ``gptlearn/fast/csrc/decode_cpu.cpp`` does the same arithmetic in one call
per token, with each product's bias, residual add or GELU applied by the thread that made those rows,
and writes keys and values into the same :class:`~gptlearn.kv_cache.KVCache`. It is built on first use
with PyTorch's C++ extension loader (a C++ compiler with OpenMP and ``ninja`` are needed; the build is
cached).

It is opt-in: ``model.generate(..., fused=True)`` or ``gptlearn generate --fused``; generation imports
this module only then. It skips the hook points, so it refuses a model with hooks attached; it takes
one fp32 sequence on the CPU. The numbers equal the eager model's within float rounding (the sums run
in another order). Its speed against the bandwidth bound is in ``bench/README.md``.

>>> model.generate("The cat", 20, do_sample=False, fused=True)   # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..devices import autocast_enabled
from ..errors import InvalidValueError, UnavailableError
from .hooks import hooks_attached

if TYPE_CHECKING:  # pragma: no cover
    from ..kv_cache import KVCache
    from ..model import GPT

__all__ = ["FusedDecoder", "FusedUnavailable", "load_kernel", "build_directory"]

SOURCE = Path(__file__).parent / "csrc" / "decode_cpu.cpp"
STALE_LOCK_S = 15 * 60  # without fcntl (Windows): a build takes a minute or two; a lock this old is a killed one's


class FusedUnavailable(UnavailableError):
    """The fused kernel could not be built here (no C++ compiler, OpenMP or ninja)."""


def _cpu_flags() -> list[str]:
    """Vector instructions to compile for: AVX2 + FMA where this CPU has them (torch says which)."""
    capability = torch.backends.cpu.get_cpu_capability()  # "AVX2", "AVX512", "DEFAULT", ...
    return ["-mavx2", "-mfma"] if capability in ("AVX2", "AVX512") else []


@functools.lru_cache(maxsize=None)
def load_kernel():
    """Build (first call) or load (cached) the C++ extension; raise :class:`FusedUnavailable`."""
    from torch.utils import cpp_extension

    flags = _cpu_flags()
    name = "gptlearn_decode_cpu" + ("_avx2" if flags else "")  # a build per instruction set
    try:
        build = build_directory(name)
        build.mkdir(parents=True, exist_ok=True)
        with _one_build_at_a_time(build):
            return cpp_extension.load(name=name, sources=[str(SOURCE)], extra_cflags=["-O3", "-fopenmp", *flags],
                                      extra_ldflags=["-fopenmp"], build_directory=str(build), verbose=False)
    except Exception as e:  # compiler, ninja or OpenMP missing; the loader's messages are long
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        why = next((line for line in lines if "error:" in line), lines[0])  # the compiler's own complaint
        raise FusedUnavailable(
            "the fused CPU decoding step could not be built (it needs a C++ compiler with OpenMP and "
            f"`pip install ninja`): {why[:300]}"
        ) from e


@contextlib.contextmanager
def _one_build_at_a_time(build: Path):
    """Hold an OS lock on the build folder while PyTorch's loader runs.

    The loader marks a build in progress with a plain file, ``lock``, and waits for it to go; a build that
    was killed leaves it behind and every later load would wait forever. The OS lock (``fcntl.flock``)
    dies with its process, so while we hold it a ``lock`` file can only be a killed build's: remove it.
    Without fcntl (Windows), a ``lock`` older than STALE_LOCK_S is taken for a killed build's."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    with open(build / "gptlearn-build.lock", "w") as held:
        if fcntl is not None:
            fcntl.flock(held, fcntl.LOCK_EX)  # waits while another process builds here
        lock = build / "lock"
        if lock.exists() and (fcntl is not None or time.time() - lock.stat().st_mtime > STALE_LOCK_S):
            lock.unlink(missing_ok=True)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(held, fcntl.LOCK_UN)


def build_directory(name: str) -> Path:
    """Where the extension is built and cached: ``$TORCH_EXTENSIONS_DIR`` (else PyTorch's default,
    ``~/.cache/torch_extensions``), one folder per build, Python and torch version."""
    from torch.utils import cpp_extension

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
    return Path(root) / f"{name}_py{sys.version_info.major}{sys.version_info.minor}_torch{torch.__version__}"


class FusedDecoder:
    """Decodes one token at a time for a model and its KV cache (batch 1).

    >>> dec = FusedDecoder(model, cache)      # after the prompt filled the cache  # doctest: +SKIP
    >>> logits = dec.step(next_token)         # (1, V); the cache advanced by one  # doctest: +SKIP
    """

    def __init__(self, model: "GPT", cache: "KVCache") -> None:
        c = model.config
        if model.device.type != "cpu":
            raise InvalidValueError(f"the fused decoding step runs on the CPU; this model is on {model.device}")
        if any(p.dtype != torch.float32 for p in model.parameters()) or cache.k.dtype != torch.float32:
            raise InvalidValueError("the fused decoding step needs an fp32 model (model.float())")
        if autocast_enabled("cpu"):
            raise InvalidValueError("the fused decoding step computes in fp32: leave torch.autocast off, or use "
                                    "fused=False")
        if cache.k.size(1) != 1:
            raise InvalidValueError(f"the fused decoding step decodes one sequence at a time, not {cache.k.size(1)}")
        if hooks_attached(model):
            raise InvalidValueError("the fused decoding step skips the hook points: remove the hooks, or use "
                                    "fused=False")
        if model.training:
            raise InvalidValueError("the fused decoding step has no dropout: call model.eval() first")
        params = [model.wte.weight, model.wpe.weight, model.ln_f.weight, model.ln_f.bias, model.lm_head.weight]
        for b in model.blocks:
            params += [b.ln_1.weight, b.ln_1.bias, b.attn.c_attn.weight, b.attn.c_attn.bias,
                       b.attn.c_proj.weight, b.attn.c_proj.bias, b.ln_2.weight, b.ln_2.bias,
                       b.mlp.c_fc.weight, b.mlp.c_fc.bias, b.mlp.c_proj.weight, b.mlp.c_proj.bias]
        self.params = [p.detach().contiguous() for p in params]  # views of the model's own weights
        self.model, self.cache = model, cache
        self.n_head, self.eps = c.n_head, c.layer_norm_epsilon
        self.exact_gelu = c.activation_function == "gelu"
        self.kernel = load_kernel()

    @torch.inference_mode()
    def step(self, token: int | torch.Tensor) -> torch.Tensor:
        """Feed one token at the cache's next position -> next-token logits (1, V)."""
        cache, n_ctx = self.cache, self.model.config.n_positions
        if cache.pos >= min(cache.max_len, n_ctx):
            raise InvalidValueError(f"KV cache is full ({cache.pos} positions)")
        token = int(token)
        if not 0 <= token < self.params[0].size(0):
            raise InvalidValueError(f"token id {token} is outside the vocabulary (0..{self.params[0].size(0) - 1})")
        logits = self.kernel.decode_step(token, cache.pos, self.params, cache.k, cache.v, self.n_head,
                                         self.eps, self.exact_gelu)  # (1, V)
        cache.advance(1)
        return logits
