"""``--compile``: the training forward pass (the objective's terms of a batch, reduced to what
the step needs: ``training.step``) compiled with ``torch.compile``, opt-in.

Compilation happens at the first call (and again for a batch of a new shape, such as a short
last batch). Where it fails (a family that dynamo or inductor cannot handle, no C++ compiler for
inductor's CPU code, an unsupported device), the run says so once, in one line with the
reason, and continues with the eager forward pass: the same numbers as without ``--compile``
from that step on. Errors of dgmkit's own checks (``DgmError``) are not compilation failures
and are raised as they are.

On a CUDA device the compiled step is also captured as CUDA graphs (``mode="reduce-overhead"``):
its kernels are replayed in one launch, where a small model would otherwise wait on Python to
launch each of them. The KL weight reaches the compiled step as a tensor (``weight``), so that
a warm-up, which changes it in every step, does not compile the step again for each value.

The first call of a run (or of a resumed run) is eager. What a model or library fills in
Python on its first pass is then filled before dynamo traces the step: torch.distributions'
KL lookup (traced while empty, it breaks the graph, and dynamo leaves the KL function eager
in every later step), a lazily made tensor, the data-dependent initialisation of ActNorm and
of a k-means codebook.

Where inductor skips CUDA graphs for a graph of the step (an input it mutates, an operation on
the CPU), the step still runs compiled but launches each kernel from Python, much slower for a
small model on a GPU; the run says so once, with inductor's reason where it recorded one.

Compiled code draws its random numbers with its own generator (inductor's), seeded from the
global one: a compiled run is repeatable from its seed but does not draw what the eager run
draws, so its numbers are of the same kind, not the same bits.
"""

import logging
from collections.abc import Callable

import torch

from dgmkit.errors import DgmError, described, first_line
from dgmkit.training.step import DeviceNumber

__all__ = ["CompiledOrEager"]

log = logging.getLogger(__name__)


class CompiledOrEager:
    """Calls ``torch.compile(module)`` (with CUDA graphs where ``graphs``, by default on a CUDA
    ``device``); after its first failure, ``module`` itself."""

    def __init__(
        self,
        module: Callable,
        compiler: Callable[..., Callable] = torch.compile,
        device: torch.device | None = None,
        graphs: bool | None = None,
    ):
        device = device if device is not None else torch.device("cpu")
        self.module = module
        self.graphs = device.type == "cuda" if graphs is None else graphs
        self.compiled: Callable | None = None
        self._compiler = compiler
        self.failure: str | None = None  # why compilation was given up, once it was
        try:
            self.compiled = compiler(module, mode="reduce-overhead") if self.graphs else compiler(module)
        except Exception as e:  # noqa: BLE001 - torch.compile itself refused (an unsupported set-up): said once
            self._give_up(e)
        self._weight = DeviceNumber(device)  # the KL weight, as the compiled step reads it
        self._eager_first = True  # (see the module)
        # inductor's count of CUDA-graph skips in the process when the step was made (None: said, or no graphs)
        self._skips: int | None = _cudagraph_skips() if self.graphs else None

    def __call__(self, x: torch.Tensor, beta: float | torch.Tensor, *args):
        if self._eager_first:
            self._eager_first = False
            return self.module(x, beta, *args)
        if self.compiled is not None:
            try:
                if self.graphs:
                    torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs are no longer read
                # (a tensor already: the captured step's, GraphStep)
                weight = beta if isinstance(beta, torch.Tensor) else self._weight.set(beta)
                if self._skips is not None:  # (a backward pass compiles after the call: seen at the next)
                    self._say_skipped_graphs()
                return self.compiled(x, weight, *args)
            except DgmError:
                raise
            except Exception as e:  # noqa: BLE001 - whatever dynamo or inductor raise: fall back, said once
                if torch.cuda.is_initialized() and (  # (not is_available: a CPU run would initialise CUDA here)
                    torch.cuda.is_current_stream_capturing() or torch.cuda.get_sync_debug_mode() == 2
                ):  # (GraphStep's capture of the whole step, or its strict warm-up: the step is given up, not compile)
                    raise
                self._give_up(e)
        return self.module(x, beta, *args)

    def without_graphs(self) -> None:
        """Compile without CUDA graphs (where the whole step is captured as one: ``GraphStep``);
        before the first call."""
        if self.graphs and self.failure is None:
            self.graphs, self._skips = False, None
            try:
                self.compiled = self._compiler(self.module)
            except Exception as e:  # noqa: BLE001 - as at construction
                self._give_up(e)

    def _say_skipped_graphs(self) -> None:
        """Say once that inductor skipped CUDA graphs since this step was made, and why (the
        last reason torch recorded for a compilation; a skip decided at run time records none)."""
        if self._skips is None or _cudagraph_skips() <= self._skips:
            return
        self._skips = None
        reasons = [getattr(m, "cudagraph_skip_reason", None) for m in _compilation_metrics()]
        reason = next((r for r in reversed(reasons) if r), None)
        log.warning(
            "--compile: CUDA graphs were skipped for part of the training step (%s); it runs compiled, "
            "its kernels launched one by one",
            "TORCH_LOGS=cudagraphs shows why" if reason is None else f"the last reason torch recorded: {first_line(reason)}",
        )

    def _give_up(self, e: BaseException) -> None:
        self.compiled = None
        self.failure = described(e)
        log.warning("--compile: this model cannot be compiled (%s); training goes on without it", self.failure)


def _cudagraph_skips() -> int:
    """The CUDA-graph skips inductor has counted in this process (a private counter of torch's:
    0 where it has none)."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["inductor"]["cudagraph_skips"])
    except Exception:  # noqa: BLE001 - another torch's internals: nothing to say
        return 0


def _compilation_metrics() -> list:
    """torch's records of its recent compilations (private: empty where it has none)."""
    try:
        from torch._dynamo.utils import get_compilation_metrics

        return list(get_compilation_metrics())
    except Exception:  # noqa: BLE001 - another torch's internals
        return []
