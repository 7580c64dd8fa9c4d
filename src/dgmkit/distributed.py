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

How a rank ends matters. gloo runs each collective on a worker thread of its own, which drops
its reference to the operation (and to the tensors in it) a moment after the operation
completes. Where that reference is the last, the tensors are freed on gloo's thread, which takes
Python's lock to free their Python objects; if the interpreter is shutting down by then, the
thread is ended inside a C++ destructor and the process aborts with "terminate called without
an active exception" (SIGABRT). A collective still in flight when a rank raises makes this
likely (gloo finishes it after the interpreter has begun to exit); one that just completed makes
it possible on a loaded machine. So: an asynchronous collective is always waited for
(``settle``), also when the step fails, and a rank process ends with ``end_process``, which
leaves the process group and exits without the interpreter's shutdown, after flushing what
Python buffers. ``dgm`` ends its torchrun ranks that way.
"""

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist

from dgmkit._io import sigterm_interrupts
from dgmkit.errors import ConfigError

__all__ = [
    "Context",
    "current",
    "init_from_environment",
    "launched_by_torchrun",
    "all_reduce_sum",
    "host_max",
    "broadcast_object",
    "all_gather_object",
    "gather_rows",
    "shard",
    "barrier",
    "settle",
    "shutdown",
    "end_process",
    "sigterm_unwinds",
    "sigterm_held",
    "sigterm_sent",
    "sigterm_ignored",
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
    """Whether this process is one of several that torchrun started (``WORLD_SIZE`` > 1; a
    ``WORLD_SIZE`` that is not a whole number from 1 is refused with ConfigError)."""
    text = os.environ.get("WORLD_SIZE", "1").strip() or "1"
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 1_000_000:
        raise ConfigError(f"the environment's WORLD_SIZE ({text[:40]!r}) is not a number of processes from 1")
    return int(text) > 1


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
        if not os.environ.get(key, "").strip():  # (an empty one is unset to torch's rendezvous)
            how = "empty" if key in os.environ else "not"
            raise ConfigError(f"WORLD_SIZE is set but {key} is {how}: start several processes with torchrun")
    world = int(os.environ["WORLD_SIZE"])
    for key in ("RANK", "LOCAL_RANK"):
        text = os.environ[key].strip()
        if not (text.isascii() and text.isdigit()) or int(text) >= world:
            raise ConfigError(
                f"the environment's {key} ({text[:40]!r}) is not a rank from 0 to WORLD_SIZE - 1 ({world - 1})"
            )
    # (port 0, a free port of the system's choosing, is the master's alone: the other ranks cannot reach it, and every
    # rank waited for the rendezvous until its timeout)
    port = os.environ["MASTER_PORT"].strip()
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ConfigError(f"the environment's MASTER_PORT ({port[:40]!r}) is not a TCP port from 1 to 65535")
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


def host_max(values: list[int]) -> list[int]:
    """The element-wise maximum of ``values`` (whole numbers, as many on every rank) over the
    ranks (``values`` in one process); every rank calls it at the same point. The numbers are the
    host's, all-reduced through gloo, which waits for no GPU, where the process group has gloo
    (dgmkit's and torchrun's default groups have); in a group of NCCL alone, on the rank's GPU."""
    if not current().parallel:
        return list(values)
    on_host = "gloo" in str(dist.get_backend())
    t = torch.tensor(values, dtype=torch.int64, device="cpu" if on_host else torch.cuda.current_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [int(v) for v in t.tolist()]


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank ``src``'s ``obj`` on every rank (picklable objects)."""
    if not current().parallel:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: object) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank (``[obj]`` in one process)."""
    ctx = current()
    if not ctx.parallel:
        return [obj]
    parts: list = [None] * ctx.world_size
    dist.all_gather_object(parts, obj)
    return parts


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


def settle(work: dist.Work | None, quietly: bool = False) -> None:
    """Wait for an asynchronous collective (``async_op=True``; None: nothing to wait for), so
    that none is in flight when this rank moves on or stops. ``quietly``: its own failure is
    not raised (for use while another exception is on its way up, which is the one to report)."""
    if work is None:
        return
    try:
        work.wait()
    except Exception:
        if not quietly:
            raise


def shutdown() -> None:
    """Leave the process group (where one was joined). This does not stop gloo's threads: a
    process that then exits through the interpreter's shutdown can still abort in them (see
    the module's docstring); a rank ends with ``end_process``."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


LEAVE_SECONDS = 10.0  # how long a rank that ends waits to leave its process group


def end_process(status: int) -> NoReturn:
    """End this rank's process with exit ``status``: leave the process group (within
    ``LEAVE_SECONDS``: under torch 2.6 a gloo rank whose peers had already exited waited in
    ``destroy_process_group`` for ever), flush Python's output streams and logging, and exit at
    once (``os._exit``) instead of through the interpreter's shutdown, during which gloo's threads
    can abort the process (the module's docstring). Files must already be closed: what this
    process wrote is complete."""
    failed: list[BaseException] = []

    def leave() -> None:
        try:
            shutdown()
        except Exception as e:  # noqa: BLE001 - leaving a broken group: said below, and the status kept
            failed.append(e)

    leaving = threading.Thread(target=leave, name="dgmkit-leave-group", daemon=True)
    leaving.start()
    leaving.join(LEAVE_SECONDS)
    if failed or leaving.is_alive():
        why = f"{failed[0]}" if failed else f"still waiting after {LEAVE_SECONDS:g} s (its peers had ended)"
        print(f"dgm: note: rank {os.environ.get('RANK', '?')} could not leave the process group: {why}", file=sys.stderr)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: nothing more to deliver
            pass
    measured = sys.modules.get("coverage")  # under `make coverage`: os._exit skips coverage.py's own save
    current = measured.Coverage.current() if measured is not None else None
    if current is not None:
        current.save()
    os._exit(status)


TERM_SECONDS = 10.0  # how long a rank sent SIGTERM may take to unwind before it is ended

# set while a fit holds SIGTERM back (``sigterm_held``): the watch of ``sigterm_unwinds`` counts from its end
_HELD = threading.Event()


@contextlib.contextmanager
def sigterm_held() -> Iterator[None]:
    """Within the block a fit holds a SIGTERM back and stops by itself (``Trainer._sigterm_deferred``:
    after a step, or after the epoch's validation and files, with a checkpoint), which may take
    longer than the watch's seconds: the watch of ``sigterm_unwinds`` counts them from the block's
    end, not from the signal (it ended a rank that was validating, and its peers lost contact)."""
    _HELD.set()
    try:
        yield
    finally:
        _HELD.clear()


# whether this rank was itself sent the SIGTERM that stopped its fit, before the ranks agreed to stop (not one that
# reached it after, as torchrun's agent passes one on): ``dgm train --nproc``'s launcher names those ranks
_SENT = threading.Event()


def sigterm_sent(sent: bool | None = None) -> bool:
    """Whether this rank was itself sent the SIGTERM that stopped its fit (``Trainer._stop_agreed``
    sets it, ``sent``, at the vote that agreed to stop; a fit clears it as it starts)."""
    if sent:
        _SENT.set()
    elif sent is not None:
        _SENT.clear()
    return _SENT.is_set()


def sigterm_ignored() -> None:
    """From now on this process ignores SIGTERM (where it can: in the main thread): a rank that
    lost contact with a peer ends with that error, and torchrun's agent, once it finds the peer
    gone, sends this rank a SIGTERM that could come while it reads the run's checkpoint to say
    what the run keeps, or before its line was written, and ended it with no such line (the
    launcher then named no checkpoint). The rank ends by itself (``end_process``, within
    ``LEAVE_SECONDS``); the agent's SIGKILL still comes 30 s after its SIGTERM."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _watch(heard: socket.socket, seconds: float) -> None:
    """``sigterm_unwinds``'s watch: ``seconds`` after a SIGTERM (after the end of a ``sigterm_held``
    block meanwhile), the rank is ended; nothing where the block of ``sigterm_unwinds`` ends first.
    ``heard`` stays open once it has heard one: a later signal is written into it, where a closed
    one made Python print "Exception ignored when trying to write to the signal wakeup fd"."""
    with heard:
        while signal.SIGTERM not in (got := heard.recv(64)):
            if not got:  # the block ended
                return
        end = time.monotonic() + seconds
        while (now := time.monotonic()) < end or _HELD.is_set():
            end = now + seconds if _HELD.is_set() else end
            time.sleep(min(0.05, max(0.0, end - now)))
    print(f"dgm: note: rank {os.environ.get('RANK', '?')} had not stopped {seconds:g} s after SIGTERM: ended",
          file=sys.stderr, flush=True)  # fmt: skip
    os._exit(128 + signal.SIGTERM)


# the socket pair of the watch that ``sigterm_unwinds`` runs, while it runs: a process forked meanwhile
# (a data loader's worker, a pool's) drops it, so that a SIGTERM to that child is not taken for the rank's
_WATCH: dict[str, socket.socket | None] = {"wake": None, "heard": None}


def _forget_watch_in_child() -> None:
    wake, heard = _WATCH["wake"], _WATCH["heard"]
    if wake is None or heard is None:
        return
    _WATCH.update(wake=None, heard=None)
    with contextlib.suppress(ValueError, OSError):  # (the child's signal wakeup, written at the signal in C)
        old = signal.set_wakeup_fd(-1)
        if old != wake.fileno():  # (not ours: set by the child's code meanwhile)
            signal.set_wakeup_fd(old)
    wake.close()
    heard.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_watch_in_child)


@contextlib.contextmanager
def sigterm_unwinds(seconds: float = TERM_SECONDS) -> Iterator[None]:
    """In a rank: a SIGTERM (torchrun's, which passes on the user's or a scheduler's, or ends the
    ranks once one has failed) raises ``dgmkit._io.Terminated`` where the main thread is, so that
    the command unwinds (the temporaries of its writes removed, the run folder's lock released)
    and can say what it keeps; the rank then ends by the signal (``sigterm_interrupts``). A fit
    takes it over (``Trainer._sigterm_deferred``: the ranks stop together after a step, with a
    checkpoint, then raise Terminated). Python runs the handler only once the main thread is back
    from C++: a rank held in a collective that does not return is ended by a watch ``seconds``
    after the signal, or after a fit that held it back hands it back (``sigterm_held``), with
    status 143, the shell's for SIGTERM. Only where SIGTERM has its default action, in the main
    thread: a handler of the caller's, or another's signal wakeup fd (an event loop's), is left to
    it, without the watch. A forked process has no watch, and its own SIGTERM."""
    own = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with sigterm_interrupts():
        if not own:
            yield
            return
        heard, wake = socket.socketpair()
        watching = False
        try:
            wake.setblocking(False)
            previous = signal.set_wakeup_fd(wake.fileno(), warn_on_full_buffer=False)  # written at the signal, from C
            if previous != -1:  # (another's: left as it was, and no watch)
                signal.set_wakeup_fd(previous)
            else:
                _WATCH.update(wake=wake, heard=heard)
                try:
                    threading.Thread(target=_watch, args=(heard, seconds), name="dgmkit-sigterm-watch", daemon=True).start()
                    watching = True
                finally:
                    if not watching:
                        _set_wakeup_back(wake)
            yield
        finally:
            if watching:
                _set_wakeup_back(wake)
            _WATCH.update(wake=None, heard=None)
            wake.close()  # (the watch, if any, then reads the end and closes ``heard``)
            if not watching:
                heard.close()


def _set_wakeup_back(wake: socket.socket) -> None:
    """No signal wakeup fd, where ``wake`` is still the one set (one set meanwhile stays)."""
    old = signal.set_wakeup_fd(-1)
    if old != wake.fileno():
        signal.set_wakeup_fd(old)
