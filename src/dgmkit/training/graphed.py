"""``--graph-step``: the whole training step (forward, backward, the step guard's clipping and
skipping, the optimizer's update, the moving average of the weights, the epoch's sums) captured
once as one CUDA graph and replayed for every later batch of the same shape.

Why: a small model's step on a GPU is a few hundred short kernels, and launching them from
Python (eager) or replaying the forward and backward graphs of ``--compile`` with the
optimizer's and the moving average's launches around them leaves the GPU idle most of the
step. One replay launches them all at once, and the step costs the host a copy of the batch
into the graph's input and one launch.

How: the step's first calls (``WARMUP``, on a side stream) run it as it is, which also compiles
it under ``--compile`` and makes the state that the step keeps on the device (Adam's moments and
step counts, the moving average's update count); the next call captures it
(``torch.cuda.CUDAGraph``) and replays it, and every later batch of that shape is copied into the
captured input and replayed. A batch of another shape (a short last batch) runs uncaptured.
What the step reads that changes between steps is a tensor that the loop changes in place
outside the graph: the batch, the KL weight, the learning rate (each parameter group's ``lr``
becomes a tensor on the device when training starts), the objective's own schedules (the Gumbel-softmax
temperature). An update is taken on the device where the loss is finite (a replay cannot stop
halfway), and such steps are counted there: the loop reads the count every
``FiniteLossCheck.every`` steps and at the end of an epoch, and stops the run where it is not 0
(the updates of the finite steps in between are kept).

The last warm-up call runs the model's forward and backward passes strictly
(``torch.cuda.set_sync_debug_mode("error")``): an operation that a capture cannot hold (a read of
a value back to the host, a copy from it that waits for the device) raises there, before the
update, and the run says why once and goes on with the uncaptured step. A capture that fails
nonetheless stops the run with an error (a failed CUDA capture can leave the process's random
generator unusable). The capture backend is a parameter (``capture``) so that the tests can
replay a recording of the step's operations on the CPU.
"""

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch

from dgmkit.errors import DgmError, TrainingError, described, first_line

__all__ = ["StepGraph", "Capture", "CudaCapture", "capture_cuda", "WARMUP"]

log = logging.getLogger(__name__)

WARMUP = 3  # uncaptured calls before the capture (compilation, lazily made state, cuBLAS' workspaces)


class Capture(Protocol):
    """A capture backend: ``capture(step, stream)`` captures ``step`` and runs it once,
    returning (what it returned, whose tensors each replay rewrites; the replay); ``strict()``
    is a context in which an operation that a capture cannot hold (a read of a value back to the
    host, a copy from it that waits) raises at once, before anything is captured."""

    def __call__(self, step: Callable[[], Any], stream: Any) -> tuple[Any, Callable[[], None]]: ...

    def strict(self) -> contextlib.AbstractContextManager: ...


class CudaCapture:
    """CUDA graphs: ``torch.cuda.CUDAGraph`` captured on the side stream; ``strict()`` makes
    every synchronising call an error (``torch.cuda.set_sync_debug_mode``)."""

    def __call__(self, step: Callable[[], Any], stream: Any) -> tuple[Any, Callable[[], None]]:
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize(stream.device)
        # (torch.cuda.graph's own context leaves the side stream current where the capture fails)
        with torch.cuda.stream(stream):
            graph.capture_begin()
            try:
                out = step()
            except BaseException:
                with contextlib.suppress(Exception):  # (its own error would hide the one that ended the capture)
                    graph.capture_end()
                raise
            graph.capture_end()
        graph.replay()
        return out, graph.replay

    @contextlib.contextmanager
    def strict(self) -> Iterator[None]:
        before = torch.cuda.get_sync_debug_mode()
        try:
            _set_sync_debug_mode("error")
            yield
        finally:
            _set_sync_debug_mode(before)


capture_cuda = CudaCapture()


def _set_sync_debug_mode(mode: int | str) -> None:
    """``torch.cuda.set_sync_debug_mode`` without the warning that torch gives each time (the
    mode is a prototype): where warnings are errors, it would leave the mode set and raise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Synchronization debug mode is a prototype")
        torch.cuda.set_sync_debug_mode(mode)


class StepGraph:
    """Runs ``step(x, y)`` (a whole training step on the batch ``x`` and its labels ``y`` or
    None) for the trainer: ``WARMUP`` calls as they are, then captured by ``capture`` (default:
    ``capture_cuda``) and replayed. ``takes(x, y)`` says whether a batch goes through it (the
    shape it was captured for, and no failure); ``__call__`` returns the step's output (after a
    capture, the same tensors each call) or None where the capture failed: the caller then runs
    the step itself. A warm-up call that fails (other than with dgmkit's own errors) is such a
    failure too, said once; ``undo`` then puts back what the caller set up for the capture, and
    what ``keep()`` kept before the strict call (the random streams, the model's buffers: what
    the passes changed before the read stopped them) is put back, so that the step runs again
    uncaptured as it would have run the first time."""

    def __init__(
        self,
        step: Callable[[torch.Tensor, torch.Tensor | None], Any],
        capture: Capture | None = None,
        undo: Callable[[], None] | None = None,
        keep: Callable[[], Callable[[], None]] | None = None,
    ):
        self.step = step
        self.capture: Capture = capture if capture is not None else capture_cuda
        self.undo = undo  # called where it gives up: what the caller set up for the capture is put back
        self.keep = keep  # before the strict call: keeps what it may change, returns what puts it back
        self.failure: str | None = None  # why the step could not be captured, once it could not
        self.captures = 0  # steps captured (one, unless the batch's shape changed before the capture)
        self._shape: tuple | None = None  # the batch's (shape, dtype, labels' shape) that was captured
        self._runs: dict[tuple, int] = {}  # uncaptured calls of each shape so far
        self._strict = False  # (within the last warm-up call)
        self._replay: Callable[[], None] | None = None
        self._x: torch.Tensor | None = None  # the captured input
        self._y: torch.Tensor | None = None
        self._out: Any = None
        self._stream: Any = None  # the side stream of the warm-up and the capture (CUDA)

    @property
    def captured(self) -> bool:
        return self._replay is not None

    def takes(self, x: torch.Tensor, y: torch.Tensor | None) -> bool:
        """Whether this batch's step goes through the graph: until the capture, any batch (each
        shape warms up on its own; the first to finish is captured); after it, those of the
        captured shape."""
        if self.failure is not None:
            return False
        return self._replay is None or _shape(x, y) == self._shape

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None) -> Any:
        if self._replay is not None:
            assert self._x is not None  # (captured with it)
            self._x.copy_(x)
            if y is not None and self._y is not None:
                self._y.copy_(y)
            self._replay()
            return self._out
        shape = _shape(x, y)
        runs = self._runs.get(shape, 0)
        if runs < WARMUP:  # (each shape counts its own: a short last batch does not start the warm-up again)
            self._runs[shape] = runs + 1
            self._strict = runs + 1 == WARMUP  # the last one: a read back to the host is an error (``strict``)
            # (what the passes change before a strict read stops them: random streams, buffers; put back for the rerun)
            restore = self.keep() if self._strict and self.keep is not None else None
            try:
                return self._on_side_stream(x, lambda: self.step(x, y))
            except DgmError:
                raise
            except Exception as e:  # noqa: BLE001 - the step as set up for a capture fails: said once, run uncaptured
                if restore is not None:
                    restore()
                self._give_up(e)
                return None
            finally:
                self._strict = False
        static_x, static_y = x.clone(), None if y is None else y.clone()
        self._x, self._y, self._shape = static_x, static_y, shape
        try:
            out, replay = self.capture(lambda: self.step(static_x, static_y), self._side_stream(x))
        except Exception as e:  # (a failed CUDA capture can leave the device's random generator unusable)
            raise TrainingError(
                f"--graph-step: the training step could not be captured as a CUDA graph ({first_line(str(e))}), though "
                "its warm-up steps ran; train without --graph-step"
            ) from e
        self._out, self._replay = out, replay
        self.captures += 1
        return out

    def strict(self) -> contextlib.AbstractContextManager:
        """Around the part of the step that calls the model (forward and backward): in the last
        warm-up call, an operation that a capture cannot hold raises there, before the update,
        so that the step can run again uncaptured; elsewhere nothing."""
        return self.capture.strict() if self._strict else contextlib.nullcontext()

    def _side_stream(self, x: torch.Tensor) -> Any:
        """The side stream of the warm-up and the capture, on CUDA (None on a CPU)."""
        if self._stream is None and x.is_cuda:
            self._stream = torch.cuda.Stream(x.device)
        return self._stream

    def _on_side_stream(self, x: torch.Tensor, call: Callable[[], Any]) -> Any:
        """``call()``, on CUDA on the side stream that the capture will use (what a stream makes
        lazily, such as cuBLAS' workspace, is then made before the capture)."""
        stream = self._side_stream(x)
        if stream is None:
            return call()
        current = torch.cuda.current_stream(x.device)
        stream.wait_stream(current)
        with torch.cuda.stream(stream):
            out = call()
        current.wait_stream(stream)
        return out

    def _give_up(self, e: BaseException) -> None:
        self.failure = described(e)
        self._x = self._y = self._out = None
        if self.undo is not None:
            self.undo()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        log.warning("--graph-step: the training step cannot be captured as a CUDA graph (%s); it runs uncaptured",
                    self.failure)  # fmt: skip


def _shape(x: torch.Tensor, y: torch.Tensor | None) -> tuple:
    return (tuple(x.shape), x.dtype, x.device, None if y is None else (tuple(y.shape), y.dtype))
