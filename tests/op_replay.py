"""A CUDA graph's semantics on the CPU, for the tests of ``--graph-step`` (``training.graphed``):
``capture_recorded(step, stream)`` runs ``step`` once while recording every operation that
reaches the dispatcher (the forward and backward passes, the optimizer's, the moving average's),
and returns a replay that runs those operations again on the same tensors, writing each result
into the tensor the recorded call made, without running any Python. As in a CUDA graph, what
Python computed during the capture (a number read from a tensor, a learning rate held as a
float, a counter on the host) is frozen, random draws are drawn anew, and an operation that
reads a value back to the host (``.item()``, ``bool(tensor)``, a data-dependent shape) is an
error during the capture. ``capture_rerun`` is the reference: it runs the Python again at every
replay. As ``CudaCapture`` does, both run the captured call on the side stream they are given
(the warm-ups' stream; on CUDA), and the replays on the current one; and the recording holds the
step's tensors without their autograd graph (a CUDA graph holds memory, no graph: a graph kept
alive would keep the parameters' gradient accumulators, which a later uncaptured step reuses)."""

import contextlib
import traceback
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map_only
from torch.utils.weak import WeakIdKeyDictionary

aten = torch.ops.aten

# operations whose result reaches the host (forbidden in a capture) or whose output size depends on the data
READS_BACK = {
    aten._local_scalar_dense.default,
    aten.is_nonzero.default,
    aten.equal.default,
    aten.allclose.default,
    aten.nonzero.default,
    aten.masked_select.default,
    aten._unique2.default,
    aten.unique_dim.default,
    aten.unique_consecutive.default,
    aten.bincount.default,
}


class _Recording(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, tuple, dict, Any]] = []
        self._aliases = WeakIdKeyDictionary()  # each tensor's one alias without its graph (an in-place op's is its input's)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in READS_BACK:
            raise RuntimeError(f"operation not permitted when stream is capturing: {func} reads a value back{_where()}")
        out = func(*args, **kwargs)
        self.calls.append((func, *tree_map_only(torch.Tensor, self._alias, (args, kwargs, out))))
        return out

    def _alias(self, t: torch.Tensor) -> torch.Tensor:
        """``t``'s memory without its autograd graph (the replay writes into that memory)."""
        alias = self._aliases.get(t)
        if alias is None:
            alias = self._aliases[t] = t.detach()
        return alias


def _where() -> str:
    """Where in dgmkit the read was made (the innermost frame of its source), for the message."""
    frames = [f for f in traceback.extract_stack() if "/dgmkit/" in f.filename and "/tests/" not in f.filename]
    return f" (at {frames[-1].filename.split('/dgmkit/')[-1]}:{frames[-1].lineno})" if frames else ""


class _Strict(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in READS_BACK:
            raise RuntimeError(f"operation not permitted when stream is capturing: {func} reads a value back{_where()}")
        return func(*args, **(kwargs or {}))


class RecordedCapture:
    """A CUDA graph's semantics on the CPU (the module's docstring); ``strict()``: a read of a
    value back is an error, as ``torch.cuda.set_sync_debug_mode("error")`` makes it on CUDA."""

    def __call__(self, step: Callable[[], Any], stream: Any = None) -> tuple[Any, Callable[[], None]]:
        recording = _Recording()

        def recorded() -> Any:
            with recording:
                return step()

        out = _on_side_stream(recorded, stream)
        calls = recording.calls

        def replay() -> None:
            with torch.no_grad():
                for func, args, kwargs, made in calls:
                    again = func(*args, **kwargs)
                    for into, new in zip(tree_flatten(made)[0], tree_flatten(again)[0]):
                        if isinstance(into, torch.Tensor) and into is not new:
                            into.copy_(new)

        return out, replay

    def strict(self) -> contextlib.AbstractContextManager:
        return _Strict()


class RerunCapture(RecordedCapture):
    """The reference: every replay runs the step's Python again."""

    def __call__(self, step: Callable[[], Any], stream: Any = None) -> tuple[Any, Callable[[], None]]:
        out = _on_side_stream(step, stream)

        def replay() -> None:
            again = step()
            with torch.no_grad():
                for into, new in zip(tree_flatten(out)[0], tree_flatten(again)[0]):
                    if isinstance(into, torch.Tensor):
                        into.copy_(new)

        return out, replay


def _on_side_stream(call: Callable[[], Any], stream: Any) -> Any:
    """``call()`` on ``stream`` where there is one (CUDA), as ``CudaCapture`` captures: on the side
    stream that the warm-up steps ran on; the current stream then waits for it."""
    if stream is None:
        return call()
    torch.cuda.synchronize(stream.device)
    with torch.cuda.stream(stream):
        out = call()
    torch.cuda.current_stream(stream.device).wait_stream(stream)
    return out


capture_recorded, capture_rerun = RecordedCapture(), RerunCapture()
