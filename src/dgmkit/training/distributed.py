"""Data parallelism across processes with PyTorch's own engine: ``torch.distributed`` and
``DistributedDataParallel`` (DDP), launched by ``torchrun`` (or ``dgm train --nproc N``).

Each process (a rank) holds the whole model. The Trainer shares one global batch between the
ranks: every rank draws the same permutation and transforms the same global batch (so that
binarization and dequantization noise are those of one process), then computes the objective on
its own contiguous part; DDP averages the gradients, each rank's loss being scaled so that the
average is the gradient of the mean over the global batch. The optimiser steps are then the
same on every rank. Only rank 0 writes the run folder and prints. Validation and evaluation
shard the data and gather the results. The backend is ``gloo`` on CPU and ``nccl`` on CUDA.

The process group comes from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); without it everything runs in one process.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dgmkit.errors import ConfigError

__all__ = [
    "Context",
    "current",
    "init_from_environment",
    "launched_by_torchrun",
    "all_reduce_sum",
    "broadcast_object",
    "gather_rows",
    "shard",
    "barrier",
    "shutdown",
]


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` of ``world_size`` (``local_rank`` on its machine)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """Whether this process is one of several that torchrun started."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def current() -> Context:
    """This process's place in the initialised process group (rank 0 of 1 without one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Context()
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def init_from_environment() -> Context:
    """Join the process group that torchrun's environment describes (once): ``gloo`` for CPU
    tensors, ``nccl`` for CUDA ones (each rank on GPU ``LOCAL_RANK``). Without torchrun: rank 0 of 1."""
    if not launched_by_torchrun():
        return Context()
    if dist.is_initialized():
        return current()
    for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise ConfigError(f"WORLD_SIZE is set but {key} is not: start several processes with torchrun")
    backend = "gloo"
    if torch.cuda.is_available():  # gloo for CPU tensors, nccl for CUDA ones: whichever device the run uses
        local, gpus = int(os.environ["LOCAL_RANK"]), torch.cuda.device_count()
        if local < gpus:  # (a rank beyond the GPUs may still train on the CPU; the Trainer checks)
            torch.cuda.set_device(local)
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend=backend)
    return current()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over the ranks (``t`` itself in one process)."""
    if current().parallel:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank ``src``'s ``obj`` on every rank (picklable objects)."""
    if not current().parallel:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shard(n: int, ctx: Context | None = None) -> slice:
    """This rank's contiguous part of n rows (parts differ in size by at most one)."""
    ctx = ctx or current()
    base, extra = divmod(n, ctx.world_size)
    start = ctx.rank * base + min(ctx.rank, extra)
    return slice(start, start + base + (ctx.rank < extra))


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """The ranks' row blocks (their ``shard``s, in rank order) concatenated on every rank."""
    ctx = current()
    if not ctx.parallel:
        return t
    parts: list = [None] * ctx.world_size
    dist.all_gather_object(parts, t.detach().cpu())
    return torch.cat(parts).to(t.device)


def barrier() -> None:
    if current().parallel:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (where one was joined). A process that exits without this can
    abort in gloo's threads as the interpreter tears down ("terminate called without an active
    exception", seen on a rank of a finished ``dgm eval`` under torchrun)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
