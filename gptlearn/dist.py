"""Data-parallel training under ``torchrun``, behind one small object: :class:`Dist`.

In a single process every method does nothing (``mean`` returns its argument, ``gather`` a list of one),
so the training loop reads the same with one process or many and holds no ``if ddp`` branches.
Under ``torchrun --nproc_per_node=N`` each process trains on its own batches, and DDP averages the
gradients; only rank 0 writes files and prints.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, TypeVar

import torch

from .devices import resolve_device
from .errors import GptlearnError

__all__ = ["Dist"]

T = TypeVar("T")


def _env_int(name: str, lo: int, hi: int | None = None) -> int:
    value = os.environ[name]
    if not (value.strip().isascii() and value.strip().isdigit()) or int(value) < lo or (hi is not None and
                                                                                         int(value) > hi):
        upper = f" to {hi}" if hi is not None else " or more"
        raise GptlearnError(f"the environment variable {name} must be an integer from {lo}{upper}, got {value!r}; "
                            "launch with torchrun, or unset it for one process")
    return int(value)


@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel run: ``rank`` of ``world`` processes, on device ``local_rank``
    of its machine. ``Dist()`` is a single process."""

    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> Dist:
        """Read torchrun's ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` (and check ``MASTER_ADDR``/``MASTER_PORT``),
        refusing values that cannot be one process of a run in one line; a single process without them."""
        if "WORLD_SIZE" not in os.environ and "RANK" not in os.environ:
            return cls()
        world = _env_int("WORLD_SIZE", 1, 65_536) if "WORLD_SIZE" in os.environ else 1
        rank = _env_int("RANK", 0, world - 1) if "RANK" in os.environ else 0
        local = _env_int("LOCAL_RANK", 0, world - 1) if "LOCAL_RANK" in os.environ else 0
        if world > 1:
            missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v, "").strip()]
            if missing:
                raise GptlearnError(f"WORLD_SIZE={world} asks for {world} processes but {' and '.join(missing)} "
                                    f"{'is' if len(missing) == 1 else 'are'} not set; launch with torchrun "
                                    "--nproc_per_node=N, or unset WORLD_SIZE for one process")
        return cls(rank, local, world)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def master(self) -> bool:
        """Whether this process writes files and prints (rank 0)."""
        return self.rank == 0

    def device(self, requested: str | torch.device | None) -> torch.device:
        """The device this process trains on (its own GPU under torchrun), joining the process group first."""
        if self.active:
            import torch.distributed as dist

            if requested is None or str(requested) == "auto":
                requested = f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"
            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if str(requested).startswith("cuda") else "gloo")
        try:
            dev = resolve_device(requested)
        except RuntimeError as e:  # a device this machine does not have
            raise GptlearnError(str(e)) from None
        if dev.type == "cuda" and dev.index is None and self.active:
            dev = torch.device("cuda", self.local_rank)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        return dev

    def wrap(self, model: torch.nn.Module, dev: torch.device) -> torch.nn.Module:
        """``model`` wrapped in DDP (gradients averaged across processes); itself in one process."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    def no_sync(self, model: torch.nn.Module, last: bool) -> ContextManager:
        """Skip DDP's gradient exchange on every micro-batch but the ``last`` of a step."""
        return model.no_sync() if self.active and not last else contextlib.nullcontext()

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean of ``t`` over the processes (in place)."""
        if self.active:
            import torch.distributed as dist

            dist.all_reduce(t)
            t /= self.world
        return t

    def gather(self, obj: T) -> list[T]:
        """Every process's ``obj``, in rank order."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def on_master(self, fn: Callable[[], T], default: T) -> T:
        """``fn()`` on rank 0 (``default`` elsewhere); a GptlearnError it raises is raised on every rank."""
        if not self.active:
            return fn()
        import torch.distributed as dist

        refusal, result = [None], default
        if self.master:
            try:
                result = fn()
            except GptlearnError as e:
                refusal = [str(e)]
        dist.broadcast_object_list(refusal, src=0)
        if refusal[0] is not None:
            raise GptlearnError(refusal[0])
        return result

    def close(self) -> None:
        """Leave the process group (after a run launched by torchrun)."""
        try:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
        except Exception:
            pass
