"""Which updates are taken: a non-finite loss stops training (``FiniteLossCheck``), the
gradient norm is clipped, and an update is skipped when its norm is too large (VDVAE's guard
against the rare huge gradients of deep hierarchical VAEs).

Two thresholds, either or both: an absolute one (``skip_norm``, VDVAE's per-data-set value,
which does not carry over to another width or depth of the same model) and a relative one
(``skip_factor``: this many times the median norm of the last ``window`` updates taken, which
follows the run's own scale; no update is skipped by it before ``window`` updates were taken).
A norm that is not finite is always skipped where skipping is on.

Skipping must not stop learning silently: each epoch's count is reported, and an epoch in which
every update was skipped is an error that names the threshold and the norms seen
(``GradientGuard.epoch_problem``).
"""

import contextlib
import math
import statistics
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.distributed as dist

from dgmkit import distributed
from dgmkit.errors import TrainingError

__all__ = ["GradientGuard", "FiniteLossCheck", "WINDOW"]

WINDOW = 100  # updates taken whose median the relative threshold scales


class GradientGuard:
    """Clips (``clip``) and decides whether each update is taken (``skip_norm``,
    ``skip_factor``); counts what it skipped, in the epoch and in the run."""

    def __init__(
        self,
        clip: float | None = None,
        skip_norm: float | None = None,
        skip_factor: float | None = None,
        window: int = WINDOW,
    ):
        for name, v in (("clip", clip), ("skip_norm", skip_norm), ("skip_factor", skip_factor)):
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number or None, got {v}")
        if skip_factor is not None and skip_factor <= 1:
            raise ValueError(f"skip_factor must exceed 1 (a multiple of the median norm), got {skip_factor}")
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.clip, self.skip_norm, self.skip_factor, self.window = clip, skip_norm, skip_factor, window
        self.recent: list[float] = []  # norms of the last updates taken (for skip_factor)
        self.skipped_total = 0
        self.start_epoch()

    @property
    def active(self) -> bool:
        """Whether the norm is computed at all (clipping or skipping asked for)."""
        return self.clip is not None or self.skips

    @property
    def skips(self) -> bool:
        return self.skip_norm is not None or self.skip_factor is not None

    def start_epoch(self) -> None:
        self.epoch_norms: list[float] = []
        self.epoch_skipped = 0
        self.epoch_threshold = math.inf  # the lowest threshold in force during the epoch

    def load_epoch(self, skipped: int, norms: list[float], threshold: float | None) -> None:
        """Go on with an epoch that stopped within: what it had seen (``Trainer``'s checkpoint)."""
        self.epoch_skipped, self.epoch_norms = skipped, list(norms)
        self.epoch_threshold = math.inf if threshold is None else threshold

    def threshold(self) -> float:
        """The norm above which the next update is skipped (inf: none would be)."""
        limit = self.skip_norm if self.skip_norm is not None else math.inf
        if self.skip_factor is not None and len(self.recent) >= self.window:
            limit = min(limit, self.skip_factor * statistics.median(self.recent))
        return limit

    def take(self, parameters: Iterable[torch.nn.Parameter]) -> bool:
        """Clip the gradients (where asked) and say whether the update is to be taken, from
        their norm before clipping."""
        if not self.active:
            return True
        norm = torch.nn.utils.clip_grad_norm_(list(parameters), self.clip if self.clip is not None else math.inf)
        if not self.skips:
            return True
        value, limit = float(norm), self.threshold()
        self.epoch_norms.append(value)
        self.epoch_threshold = min(self.epoch_threshold, limit)
        if not value <= limit:  # also NaN and inf
            self.epoch_skipped += 1
            self.skipped_total += 1
            return False
        if self.skip_factor is not None:
            self.recent = [*self.recent[-(self.window - 1) :], value]
        return True

    def epoch_problem(self) -> str | None:
        """What is wrong when every update of the epoch was skipped (None otherwise)."""
        if not self.epoch_norms or self.epoch_skipped < len(self.epoch_norms):
            return None
        finite = sorted(v for v in self.epoch_norms if math.isfinite(v))
        seen = (
            f"from {finite[0]:.4g} to {finite[-1]:.4g} (median {statistics.median(finite):.4g})" if finite else "none finite"
        )
        rules = []
        if self.skip_norm is not None:
            rules.append(f"skip_grad_norm = {self.skip_norm:g}")
        if self.skip_factor is not None:
            rules.append(f"skip_grad_factor = {self.skip_factor:g} times the recent median")
        return (
            f"every one of the epoch's {len(self.epoch_norms)} updates was skipped: their gradient norms were {seen}, "
            f"above the threshold ({' and '.join(rules)}; lowest in force {self.epoch_threshold:.4g})"
        )

    def state(self) -> dict:
        """What a checkpoint keeps so that a resumed run decides as the uninterrupted one."""
        return {"skipped_steps": self.skipped_total, "recent_grad_norms": list(self.recent)}

    def load_state(self, skipped_total: int, recent: list[float]) -> None:
        if len(recent) > self.window or not all(isinstance(v, float) and math.isfinite(v) and v >= 0 for v in recent):
            raise ValueError(f"recent gradient norms must be at most {self.window} finite norms")
        self.skipped_total, self.recent = skipped_total, list(recent)


class FiniteLossCheck:
    """Stops training before the update on a non-finite loss: every ``every`` steps (every
    step on a CPU, where reading a value costs nothing; less often on a GPU, where it waits for
    the device). Under data parallelism the ranks' loss sums are added by an all-reduce that
    runs while the backward pass computes, so that every rank stops at the same step; the
    all-reduce is waited for whatever happens in between (``distributed.settle``). ``message``
    turns the offending mean loss into the error's text."""

    def __init__(self, every: int, parallel: bool, message: Callable[[torch.Tensor], str]):
        self.every, self.parallel, self.message = every, parallel, message

    @contextlib.contextmanager
    def around_backward(self, i: int, losses: torch.Tensor, rows: int) -> Iterator[None]:
        """Around step ``i``'s backward pass; ``losses`` this process's per-example losses,
        ``rows`` the global batch's."""
        pending = None
        if (i + 1) % self.every == 0:
            if self.parallel:
                checked = losses.detach().sum()
                pending = dist.all_reduce(checked, async_op=True)
            else:
                checked = losses.detach().mean()
                if not torch.isfinite(checked).all():
                    raise TrainingError(self.message(checked))
        try:
            yield
        except BaseException:
            distributed.settle(pending, quietly=True)
            raise
        distributed.settle(pending)
        if pending is not None and not torch.isfinite(checked):
            raise TrainingError(self.message(checked / rows))
