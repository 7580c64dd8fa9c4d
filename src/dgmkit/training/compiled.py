"""``--compile``: the training forward pass (the objective's terms of a batch) compiled with
``torch.compile``, opt-in.

Compilation happens at the first call (and again for a batch of a new shape, such as a short
last batch). Where it fails (a family that dynamo or inductor cannot handle, no C++ compiler for
inductor's CPU code, an unsupported device), the run says so once, in one line with the
reason, and continues with the eager forward pass: the same numbers as without ``--compile``
from that step on. Errors of dgmkit's own checks (``DgmError``) are not compilation failures
and are raised as they are.

Compiled code draws its random numbers with its own generator (inductor's), seeded from the
global one: a compiled run is repeatable from its seed but does not draw what the eager run
draws, so its numbers are of the same kind, not the same bits.
"""

import logging
from collections.abc import Callable

import torch

from dgmkit.errors import DgmError

__all__ = ["CompiledOrEager"]

log = logging.getLogger(__name__)


class CompiledOrEager:
    """Calls ``torch.compile(module)``; after its first failure, ``module`` itself."""

    def __init__(self, module: torch.nn.Module, compiler: Callable[[torch.nn.Module], Callable] = torch.compile):
        self.module = module
        self.compiled: Callable | None = compiler(module)
        self.failure: str | None = None  # why compilation was given up, once it was

    def __call__(self, *args):
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except DgmError:
                raise
            except Exception as e:  # noqa: BLE001 - whatever dynamo or inductor raise: fall back, said once
                self.compiled = None
                self.failure = _first_line(e)
                log.warning("--compile: this model cannot be compiled (%s); training goes on without it", self.failure)
        return self.module(*args)


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]
