"""The Trainer's data-parallel part: DistributedDataParallel around the objective's forward
pass, for a Trainer on one rank of several (``dgmkit.distributed``).

Each rank holds the whole model and the same global batch; it scores its contiguous part
(``share``), and DDP averages the gradients, each rank's loss scaled so that the average is the
gradient of the mean over the global batch (``step_loss``). Data-dependent initialisation
(ActNorm) sees the whole first global batch on every rank, and every rank then takes rank 0's
weights and buffers. DDP runs without its search for unused parameters: every family's loss
reaches every trainable parameter in every step (tests/test_distributed.py checks each family),
and a step that leaves one out stops with its name (``check_gradients``) before the optimiser
steps. CPU ranks on one machine average through shared memory (``shared_memory``) unless rank
0's ``DGMKIT_SHM_ALLREDUCE`` is 0.
"""

import inspect
import os
import warnings
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from dgmkit import distributed
from dgmkit.errors import ConfigError, TrainingError
from dgmkit.nn.data_init import initialisation_pass
from dgmkit.objectives.base import Objective
from dgmkit.training import shared_memory

__all__ = ["DataParallel", "ObjectiveModule", "rank_device", "check_shares", "check_rows_per_step", "rows_needed"]


class ObjectiveModule(torch.nn.Module):
    """The model with its objective as ``forward``, so that DistributedDataParallel (and
    ``torch.compile``) see every parameter the objective uses, whichever of the model's methods
    it calls."""

    def __init__(self, model: torch.nn.Module, objective: Callable[..., tuple]):
        super().__init__()
        self.model = model
        self._objective = objective

    def forward(self, x: torch.Tensor, beta: float, y: torch.Tensor | None) -> tuple:
        return self._objective(x, beta, y)


class DataParallel:
    """DDP over ``ObjectiveModule(model, objective)`` on ``device``, for the ranks of ``ctx``."""

    def __init__(
        self, model: torch.nn.Module, objective: Callable[..., tuple], device: torch.device, ctx: distributed.Context
    ):
        self.model, self.objective, self.device, self.ctx = model, objective, device, ctx
        ids = [device.index] if device.type == "cuda" else None
        # Buffers are synced once, here, and not before every forward: the ones training changes
        # (ActNorm's initialisation, an EMA codebook) are made equal on every rank where they change;
        # the gradients are views into DDP's buckets (the averages need no copy back).
        # DDP warns (once, in the first backward pass) where a gradient's strides differ from its
        # bucket's, also where they differ only in a dimension of size 1, which lays out the same
        # memory: the weight gradient of a convolution of one input channel or of a 1x1 kernel can
        # come out so (a VQ-VAE's first convolution on grayscale images, the masked diffusion's
        # U-Net); DDP copies it into the bucket as it does any gradient. Nothing for the user to do.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides", category=UserWarning)
        self.module = DistributedDataParallel(ObjectiveModule(model, objective), device_ids=ids,
                                              find_unused_parameters=False, gradient_as_bucket_view=True,
                                              **_no_forward_buffer_sync(model))  # fmt: skip
        self.trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.transport = "nccl" if device.type == "cuda" else "gloo"  # how the gradients are averaged
        if device.type == "cpu":
            nbytes = sum(p.numel() * p.element_size() for _, p in self.trainable)
            enabled = os.environ.get("DGMKIT_SHM_ALLREDUCE", "1") != "0"
            if shared_memory.attach(self.module, nbytes, enabled) is not None:
                self.transport = "shared memory"
        self._uninitialised = True  # until no ActNorm-style buffer waits for data

    def share(self, x: torch.Tensor, y: torch.Tensor | None, beta: float) -> tuple:
        """This rank's part of the global batch (after initialising on the whole of it, once)."""
        self._initialise_on(x, beta, y)
        part = distributed.shard(x.shape[0], self.ctx)
        return x[part], None if y is None else y[part]

    def step_loss(self, losses: torch.Tensor, rows: int) -> torch.Tensor:
        """This rank's loss to differentiate: its sum times W / (global rows), which DDP's
        average over the ranks turns into the gradient of the global batch's mean."""
        return losses.sum() * (self.ctx.world_size / rows)

    def check_gradients(self, step: int) -> None:
        """A parameter that the step's loss did not reach was not all-reduced by DDP (its
        gradient would be this rank's alone): stop with its name instead of stepping. (Where the
        ranks' losses reach different parameters, a rank whose loss reached them all waits in
        the all-reduce instead, until torchrun ends it when this rank exits.)"""
        missing = [n for n, p in self.trainable if p.grad is None]
        if missing:
            raise TrainingError(
                f"data-parallel training needs a gradient for every trainable parameter in every step, and "
                f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} got none at step {step + 1} "
                f"(a part of the model that this objective does not use; train it in one process)"
            )

    def _initialise_on(self, x: torch.Tensor, beta: float, y: torch.Tensor | None) -> None:
        """Data-dependent initialisation (ActNorm) from the whole global batch, the same on every
        rank, before the ranks see only their parts (one process initialises on that batch too)."""
        if not self._uninitialised:
            return
        fresh = [b for name, b in self.model.named_buffers() if name.rsplit(".", 1)[-1] == "initialized" and not bool(b)]
        if not fresh:
            self._uninitialised = False  # initialisation happens once: no need to look again
            return
        with (
            torch.no_grad(),
            torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []),
            initialisation_pass(self.model),  # the step itself updates a codebook's averages, once
        ):
            self.objective(x, beta, y)
        # what the initialisation drew (a flow prior's ActNorm after the encoder's noise, a codebook's
        # k-means start) may differ between the ranks: all take rank 0's weights and buffers
        for t in self.model.state_dict().values():
            dist.broadcast(t, src=0)


def rank_device(ctx: distributed.Context, device: torch.device) -> torch.device:
    """The device of this rank: on CUDA, GPU ``local_rank`` of its machine (one process per GPU)."""
    if device.type != "cuda":
        return device
    if device.index is not None and device.index != ctx.local_rank:  # (each rank takes the GPU of its local rank)
        raise ConfigError(
            f"--device {device} in data-parallel training: each process takes a GPU of its own (process k of a "
            "machine its GPU k); give --device cuda (or auto), and CUDA_VISIBLE_DEVICES to choose the GPUs"
        )
    gpus = torch.cuda.device_count()
    if ctx.local_rank >= gpus:
        raise ConfigError(
            f"rank {ctx.rank} is process {ctx.local_rank + 1} on its machine, which has {gpus} "
            f"GPU{'s' if gpus != 1 else ''}: start one process per GPU, or train on the CPU with --device cpu"
        )
    return torch.device("cuda", ctx.local_rank)


def check_shares(ctx: distributed.Context, sizes: dict[str, int]) -> None:
    """Every rank needs a part of each of these (a batch, a split): none smaller than the ranks."""
    small = [(what, n) for what, n in sizes.items() if n < ctx.world_size]
    if small:
        raise ConfigError(f"{small[0][0]} ({small[0][1]}) is smaller than the {ctx.world_size} processes sharing it")


def rows_needed(objective: Objective, ctx: distributed.Context) -> int:
    """The fewest rows of a step's batch: the rows the objective's estimate needs together
    (``Objective.rows_per_step``) on each process. A shorter last batch is left out of an epoch."""
    return objective.rows_per_step * ctx.world_size


def check_rows_per_step(
    objective: Objective, batch_size: int, ctx: distributed.Context, train_rows: int | None = None
) -> None:
    """A batch, and each process's share of it (the smallest: batch_size // processes), holds at
    least the rows the objective's estimate needs together (``Objective.rows_per_step``): a WAE's
    MMD of one code is no penalty, so a share of one trained that process as a plain autoencoder.
    So does the training split (``train_rows``, where given), or no batch would be left."""
    need, share = objective.rows_per_step, batch_size // ctx.world_size
    shared = f" shared by {ctx.world_size} processes, a share of {share}" if ctx.world_size > 1 else ""
    if share < need:
        raise ConfigError(
            f"the {type(objective).__name__}'s estimate needs at least {need} datapoints of a batch together; "
            f"batch size {batch_size}{shared} (take a batch size of {need * ctx.world_size} or more)"
        )
    if train_rows is not None and train_rows < need * ctx.world_size:
        raise ConfigError(
            f"the {type(objective).__name__}'s estimate needs at least {need} datapoints of a batch together"
            f"{' on each of ' + str(ctx.world_size) + ' processes' if ctx.world_size > 1 else ''}; the training split "
            f"has {train_rows}"
        )


def _no_forward_buffer_sync(model: torch.nn.Module) -> dict:
    """DDP's option that copies rank 0's buffers once, at construction, and not before every
    forward: ``forward_sync_buffers=False`` (PyTorch 2.13 on). Before it, ``broadcast_buffers=False``
    copied none, so the buffers are broadcast here instead."""
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return {"forward_sync_buffers": False}
    for b in model.buffers():
        dist.broadcast(b, src=0)
    return {"broadcast_buffers": False}
