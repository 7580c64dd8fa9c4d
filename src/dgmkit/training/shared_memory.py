"""Gradient averaging through shared memory, for data-parallel ranks on one machine: a
DistributedDataParallel communication hook (``register_comm_hook``) that replaces gloo's
all-reduce over TCP loopback for CPU tensors.

Each rank writes its gradient bucket, divided by the number of ranks, into its own slot of a
memory-mapped file in ``/dev/shm`` that every rank maps; after a barrier each rank adds the
slots in rank order into its bucket, so that every rank holds the same bits. The buckets of a
backward pass are gathered into the slots and averaged together when DDP hands over its last
bucket (one barrier per step), in pieces when they outgrow the slots. Two sets of slots are used
in turn: a rank can write the next set only after the next barrier, which every rank reaches
only after reading the last set, so no rank overwrites what another still reads.

On this 2-core machine, for the 784-512-256-32 MLP VAE's 4.4 MB of gradients, gloo's all-reduce
added about 8.5 ms to a step and the shared-memory average about 5 ms (benchmarks/ddp_ceiling.py,
benchmarks/RESULTS.md).

The file is unlinked as soon as every rank has mapped it (or set-up fails), so nothing is left
in /dev/shm when the processes end, unless rank 0 is killed within that set-up. ``attach``
returns None (and DDP keeps gloo's all-reduce) when the ranks are not all on this machine
(torchrun's LOCAL_WORLD_SIZE), /dev/shm is missing or too small, or a rank cannot map the file
or read back what rank 0 wrote into it; every rank agrees on the outcome.
"""

import logging
import mmap
import os
import secrets
import stat
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["SharedMemoryAllReduce", "shared_memory_hook", "attach"]

log = logging.getLogger(__name__)
SHM_DIR = Path("/dev/shm")
MAX_SLOT_BYTES = 64 * 2**20  # per rank and set of slots: gradients larger than this go in pieces
_ALIGN = 64  # bytes: every bucket starts on a cache line


def _aligned(nbytes: int) -> int:
    return -(-nbytes // _ALIGN) * _ALIGN


class SharedMemoryAllReduce:
    """The hook's state: ``memory`` (2, world_size, slot_bytes) uint8 tensor mapped by every rank,
    ``group`` a process group for the barriers. ``ddp.register_comm_hook(state, shared_memory_hook)``."""

    mapping: object  # set by _share: the mmap that holds ``memory``

    def __init__(self, memory: torch.Tensor, group: dist.ProcessGroup, rank: int, world_size: int):
        if memory.dim() != 3 or memory.shape[:2] != (2, world_size) or memory.dtype != torch.uint8:
            raise ValueError(f"memory must be a (2, {world_size}, bytes) uint8 tensor, got {tuple(memory.shape)}")
        self.memory, self.group, self.rank, self.world_size = memory, group, rank, world_size
        self.slot_bytes = memory.shape[2] // _ALIGN * _ALIGN  # whole cache lines: a full piece fills a slot
        self._set = 0  # which set of slots the next exchange writes
        self._used = 0  # bytes of this set's slots already holding buckets
        self._waiting: list[tuple[torch.Tensor, int, torch.futures.Future]] = []
        self.exchanges = 0  # barriers passed: one per step when the gradients fit in a slot

    def _slots(self, offset: int, like: torch.Tensor) -> torch.Tensor:
        """(world_size, like.numel()) views of the current set's slots at ``offset`` bytes."""
        nbytes = like.numel() * like.element_size()
        return self.memory[self._set, :, offset : offset + nbytes].view(like.dtype)

    def _exchange(self) -> None:
        """Wait for every rank's slots, then average the waiting buckets in place."""
        dist.barrier(group=self.group)
        for bucket, offset, future in self._waiting:
            slots = self._slots(offset, bucket)
            torch.add(slots[0], slots[1], out=bucket)
            for r in range(2, self.world_size):
                bucket.add_(slots[r])
            future.set_result(bucket)
        self._waiting, self._used, self._set = [], 0, 1 - self._set
        self.exchanges += 1

    def _put(self, tensor: torch.Tensor, future: torch.futures.Future) -> None:
        flat = tensor.view(-1)
        nbytes = _aligned(flat.numel() * flat.element_size())
        if self._used + nbytes > self.slot_bytes:
            self._exchange()
        torch.div(flat, self.world_size, out=self._slots(self._used, flat)[self.rank])
        self._waiting.append((flat, self._used, future))
        self._used += nbytes

    def average(self, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        """DDP's bucket, averaged over the ranks in place (now or with the step's last bucket)."""
        grads = bucket.buffer()
        future: torch.futures.Future = torch.futures.Future()
        per_piece = self.slot_bytes // grads.element_size()
        if grads.numel() <= per_piece:
            self._put(grads, future)
        else:  # a bucket larger than a slot: averaged piece by piece, then handed back whole
            for i in range(0, grads.numel(), per_piece):
                self._put(grads[i : i + per_piece], torch.futures.Future())
                self._exchange()
            future.set_result(grads)
        if bucket.is_last() and self._waiting:
            self._exchange()
        return future


def shared_memory_hook(state: SharedMemoryAllReduce, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP's communication hook: ``state.average(bucket)``."""
    return state.average(bucket)


def _all_agree(ok: bool) -> bool:
    flag = torch.tensor([0 if ok else 1], dtype=torch.int64)
    dist.all_reduce(flag)  # the number of ranks that could not
    return int(flag) == 0


def _create(size: int) -> Path:
    """A new file of ``size`` bytes in /dev/shm that only this user can open."""
    free = os.statvfs(SHM_DIR)
    if free.f_bavail * free.f_frsize < 2 * size:  # leave as much again for everything else
        raise OSError(f"{SHM_DIR} has {free.f_bavail * free.f_frsize} bytes free, and {size} are needed twice")
    path = SHM_DIR / f"dgmkit-ddp-{os.getpid()}-{secrets.token_hex(8)}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:  # the pages reserved now: a /dev/shm that fills up later cannot fault a write into the mapping
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, size)
        else:
            os.ftruncate(fd, size)
    except OSError:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return path


def _map(path: str, size: int) -> mmap.mmap:
    """The existing regular file ``path`` of exactly ``size`` bytes, mapped shared (never created)."""
    fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != size:
            raise OSError(f"{path} is not a regular file of {size} bytes")
        return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)


def attach(
    ddp: torch.nn.parallel.DistributedDataParallel, gradient_bytes: int, enabled: bool = True
) -> SharedMemoryAllReduce | None:
    """Register the shared-memory hook on ``ddp`` (CPU ranks, all on this machine) for gradients
    of ``gradient_bytes`` in all; None, with gloo's all-reduce kept, where it cannot be used or
    rank 0's ``enabled`` is False. Every rank must call it, in the same order as its other
    collectives: rank 0 decides, and the others follow."""
    rank, world = dist.get_rank(), dist.get_world_size()
    slot = min(_aligned(gradient_bytes) + _ALIGN * 64, MAX_SLOT_BYTES)  # room for each bucket's alignment
    size = 2 * world * slot
    path = None
    local = os.environ.get("LOCAL_WORLD_SIZE")  # torchrun's count of the ranks on this machine
    if rank == 0 and enabled and (local is None or local == str(world)):  # else some ranks are elsewhere
        try:
            path = _create(size)
        except OSError as e:
            log.info("shared-memory gradient averaging not used: %s", e)
    try:
        return _share(ddp, path, size, slot)
    finally:  # once every rank has mapped it (or given up), the file goes: nothing stays in /dev/shm
        if path is not None:
            path.unlink(missing_ok=True)


def _share(ddp: torch.nn.parallel.DistributedDataParallel, path: Path | None, size: int, slot: int):
    """Every rank maps rank 0's file ``path`` (None: none was made) and checks that it sees what
    rank 0 wrote; then the hook is registered, or on every rank not."""
    rank, world = dist.get_rank(), dist.get_world_size()
    box: list[Any] = [None if path is None else str(path)]
    dist.broadcast_object_list(box, src=0)
    mapped, memory, token = None, None, None
    if box[0] is not None:
        try:
            mapped = _map(box[0], size)
            memory = torch.frombuffer(mapped, dtype=torch.uint8).view(2, world, slot)
        except (OSError, ValueError) as e:
            log.info("shared-memory gradient averaging not used: rank %d could not map %s: %s", rank, box[0], e)
        if memory is not None and rank == 0:  # a token that every rank must read back from the mapping
            token = torch.frombuffer(bytearray(secrets.token_bytes(16)), dtype=torch.uint8)
            memory[0, 0, :16] = token
    if not _all_agree(memory is not None):
        return None
    assert memory is not None  # _all_agree is False where any rank, this one included, has none
    box = [token]
    dist.broadcast_object_list(box, src=0)
    if not _all_agree(torch.equal(memory[0, 0, :16], box[0])):  # the same memory on every rank
        log.info("shared-memory gradient averaging not used: the ranks do not share %s", SHM_DIR)
        return None
    state = SharedMemoryAllReduce(memory, dist.new_group(backend="gloo"), rank, world)
    state.mapping = mapped  # the tensor's memory: kept open as long as the state lives
    ddp.register_comm_hook(state, shared_memory_hook)
    return state
