"""The training step's forward pass as the loop uses it: the objective's per-example terms of a
batch reduced, in the same call, to what the step needs (the mean loss to differentiate and to
check for NaN, the sums of the loss and the score for the epoch line; under data-parallel
training also the per-example losses, whose sum each process differentiates).

Reducing inside the call matters where the call is compiled (``--compile``): the reductions then
run inside the compiled graph (and, on CUDA, its graph replay), and the only output that needs a
gradient is the mean loss, so the compiled backward pass gets one gradient instead of one for
every term; outside it a small model's step spends more time launching the reductions and their
backward nodes than computing. In eager mode the numbers are the same as reducing outside: the
same operations in the same order, outside the autocast region as before.
"""

import contextlib
import math
from collections.abc import Callable
from typing import NamedTuple

import torch

__all__ = ["StepTerms", "ReducedStep", "DeviceNumber"]


class DeviceNumber:
    """A number that a compiled or captured step reads, held in a 0-d tensor on ``device``
    (a Python number that changes would compile the step again, or be frozen in a CUDA graph);
    ``set(v)`` fills it only where the number changed (a fill is a launch: a KL warm-up changes
    it every step, most runs never) and returns the tensor."""

    def __init__(self, device: torch.device | str):
        self.tensor = torch.zeros((), device=device)
        self._now = math.nan

    def set(self, value: float) -> torch.Tensor:
        if value != self._now:
            self.tensor.fill_(value)
            self._now = value
        return self.tensor


class StepTerms(NamedTuple):
    """``loss``: the batch's mean loss (what one process differentiates); ``losses``: the
    per-example losses with their graph under data-parallel training (whose loss is their sum),
    else None; ``loss_sum`` and ``score_sum``: the batch's share of the epoch's sums of the loss
    (its mean times the rows) and of the objective's score (detached)."""

    loss: torch.Tensor
    losses: torch.Tensor | None
    loss_sum: torch.Tensor
    score_sum: torch.Tensor


class ReducedStep:
    """``forward(x, beta, *args)``'s terms (computed under ``autocast()``) reduced to a
    ``StepTerms``; ``score``: the name of the objective's score term; ``keep_graph``: the
    per-example losses are returned, with their graph (data-parallel training differentiates
    their sum)."""

    def __init__(
        self,
        forward: Callable,
        score: str,
        keep_graph: bool = False,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ):
        self.forward, self.score, self.keep_graph, self.autocast = forward, score, keep_graph, autocast

    def __call__(self, x: torch.Tensor, beta: float | torch.Tensor, *args) -> StepTerms:
        with self.autocast():
            terms = self.forward(x, beta, *args)
        losses = terms.loss
        _check_per_example(terms, self.score, x.shape[0])
        loss = losses.mean()
        return StepTerms(
            loss,
            losses if self.keep_graph else None,
            loss.detach() * x.shape[0],
            getattr(terms, self.score).detach().sum(),
        )


def _check_per_example(terms: NamedTuple, score: str, rows: int) -> None:
    """The objective's ``loss`` and score are per-example, shape (rows,), as ``objectives.Objective``
    says: a batch's mean (or sum) as one number trained in one process with the epoch's numbers off
    by the batch size, and under data parallelism, whose step differentiates the per-example sum
    times the ranks over the global rows, with a gradient the batch size apart from one process's."""
    for name in ("loss", score):
        shape = tuple(getattr(terms, name).shape)
        if shape != (rows,):
            raise ValueError(
                f"the objective's {name!r} term has shape {shape}, and a batch of {rows} rows needs one value per "
                f"example, shape ({rows},): return the per-example terms, not their mean or sum (the Trainer averages "
                "them over the batch, and over the processes of data-parallel training)"
            )
