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
from typing import Generic, TypeVar, overload

import torch
import torch.distributed as dist

from dgmkit import distributed
from dgmkit.errors import TrainingError

__all__ = ["GradientGuard", "FiniteLossCheck", "WINDOW"]

T = TypeVar("T")

WINDOW = 100  # updates taken whose median the relative threshold scales


class _ReadBack(Generic[T]):
    """A read-only record of what the guard's steps saw (their norms, counts, the lowest
    threshold): ``guard.NAME`` is ``guard._NAME`` once the steps pending on the device are read
    back (``GradientGuard._flush``)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = f"_{name}"

    @overload
    def __get__(self, guard: None, owner: type) -> "_ReadBack[T]": ...
    @overload
    def __get__(self, guard: "GradientGuard", owner: type) -> T: ...
    def __get__(self, guard: "GradientGuard | None", owner: type) -> "T | _ReadBack[T]":
        if guard is None:
            return self
        guard._flush()
        return getattr(guard, self.attr)

    def __set__(self, guard: "GradientGuard", value: T) -> None:
        raise AttributeError(f"{self.attr[1:]} is what the steps saw: it cannot be set")


def _total_norm(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """The norm of all the gradients of ``params`` together, as ``clip_grad_norm_`` computes it
    (torch >= 2.6 names that computation ``get_total_norm``; before, clip_grad_norm_ with no
    limit, which multiplies every gradient by 1)."""
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)
    if get_total_norm is None:
        return torch.nn.utils.clip_grad_norm_(params, math.inf)
    return get_total_norm([p.grad for p in params if p.grad is not None])


class GradientGuard:
    """Clips (``clip``) and decides whether each update is taken (``skip_norm``,
    ``skip_factor``); counts what it skipped, in the epoch and in the run.

    ``on_device``: the decision is a boolean tensor computed where the gradients are, never read
    back within a step (on a GPU a read waits for the device): the optimizer skips the update on
    the device (``MixedPrecision.step``), and the norms, thresholds and counts of the steps are
    read back in one go when they are asked for (at the end of an epoch, or for a checkpoint).
    The decisions are those of the host-side rule (``on_device=False``), the same median and the
    same window."""

    def __init__(
        self,
        clip: float | None = None,
        skip_norm: float | None = None,
        skip_factor: float | None = None,
        window: int = WINDOW,
        on_device: bool = False,
    ):
        for name, v in (("clip", clip), ("skip_norm", skip_norm), ("skip_factor", skip_factor)):
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number or None, got {v}")
        if skip_factor is not None and skip_factor <= 1:
            raise ValueError(f"skip_factor must exceed 1 (a multiple of the median norm), got {skip_factor}")
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.clip, self.skip_norm, self.skip_factor, self.window = clip, skip_norm, skip_factor, window
        self.on_device = on_device
        self._recent: list[float] = []  # norms of the last updates taken (for skip_factor)
        self._ring: torch.Tensor | None = None  # on_device: those norms, a ring of ``window`` (built at the first step)
        self._taken: torch.Tensor | None = None  # on_device: updates taken into the ring (its next place: mod window)
        # on_device: what the steps saw, rows (norm, limit, taken) of a log on the device, and how many it holds (a
        # count on the device: a step captured as a CUDA graph writes its row in every replay, unseen by the host)
        self._log: torch.Tensor | None = None
        self._logged: torch.Tensor | None = None
        self._unread = 0  # rows written by the calls the host saw since the last read (a replay is not seen)
        self._skipped_total = 0
        self.start_epoch()

    @property
    def active(self) -> bool:
        """Whether the norm is computed at all (clipping or skipping asked for)."""
        return self.clip is not None or self.skips

    @property
    def skips(self) -> bool:
        return self.skip_norm is not None or self.skip_factor is not None

    def start_epoch(self) -> None:
        self._flush()
        self._epoch_norms: list[float] = []
        self._epoch_skipped = 0
        self._epoch_threshold = math.inf  # the lowest threshold in force during the epoch

    def load_epoch(self, skipped: int, norms: list[float], threshold: float | None) -> None:
        """Go on with an epoch that stopped within: what it had seen (``Trainer``'s checkpoint)."""
        self._flush()
        self._epoch_skipped, self._epoch_norms = skipped, list(norms)
        self._epoch_threshold = math.inf if threshold is None else float(threshold)

    # what the steps so far saw (on_device: read back here, once for all the steps not yet read)
    epoch_norms: "_ReadBack[list[float]]" = _ReadBack()
    epoch_skipped: "_ReadBack[int]" = _ReadBack()
    epoch_threshold: "_ReadBack[float]" = _ReadBack()
    skipped_total: "_ReadBack[int]" = _ReadBack()

    @property
    def recent(self) -> list[float]:
        if self._ring is None:
            return list(self._recent)
        assert self._taken is not None  # made with the ring
        taken = int(self._taken)
        n = min(taken, self.window)
        order = [(taken - n + i) % self.window for i in range(n)]
        return self._ring[order].tolist()

    def threshold(self) -> float:
        """The norm above which the next update is skipped (inf: none would be)."""
        limit = self.skip_norm if self.skip_norm is not None else math.inf
        recent = self.recent
        if self.skip_factor is not None and len(recent) >= self.window:
            limit = min(limit, self.skip_factor * statistics.median(recent))
        return limit

    def take(self, parameters: Iterable[torch.nn.Parameter]) -> bool | torch.Tensor:
        """Clip the gradients (where asked) and say whether the update is to be taken, from
        their norm before clipping: a bool, or (``on_device``) a boolean tensor."""
        if not self.active:
            return True
        params = list(parameters)
        if self.clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, self.clip)
        else:  # the same norm, without clip_grad_norm_'s multiplication of every gradient by 1
            norm = _total_norm(params)
        if not self.skips:
            return True
        if self.on_device:
            return self._take_on_device(norm.detach())
        value, limit = float(norm), self.threshold()
        taken = math.isfinite(value) and value <= limit  # a NaN or infinite norm is never taken
        self._record(value, limit, taken)
        if taken and self.skip_factor is not None:
            self._recent = [*self._recent, value][-self.window :]  # (not [-(window - 1):]: [-0:] is all of it)
        return taken

    def _record(self, norm: float, limit: float, taken: bool) -> None:
        self._epoch_norms.append(norm)
        self._epoch_threshold = min(self._epoch_threshold, limit)
        if not taken:
            self._epoch_skipped += 1
            self._skipped_total += 1

    def _take_on_device(self, norm: torch.Tensor) -> torch.Tensor:
        # float64 throughout, as the host rule's Python floats: the same decisions at the boundary too
        norm = norm.double()
        if self._ring is None:  # the window so far (a resumed run's), as a ring on the device
            self._ring = torch.zeros(self.window, dtype=torch.float64, device=norm.device)
            self._ring[: len(self._recent)] = torch.tensor(self._recent, dtype=torch.float64, device=norm.device)
            self._taken = torch.tensor(len(self._recent), device=norm.device)
        assert self._taken is not None  # made with the ring
        limit = torch.full((), self.skip_norm if self.skip_norm is not None else math.inf, dtype=torch.float64,
                           device=norm.device)  # fmt: skip
        if self.skip_factor is not None:
            ordered = self._ring.sort().values  # statistics.median's: the mean of the two middle values
            median = (ordered[(self.window - 1) // 2] + ordered[self.window // 2]) / 2
            limit = torch.where(self._taken >= self.window, torch.minimum(limit, self.skip_factor * median), limit)
        taken = torch.isfinite(norm) & (norm <= limit)  # a NaN or infinite norm is never taken
        if self.skip_factor is not None:
            place = torch.remainder(self._taken, self.window).view(1)
            self._ring.scatter_(0, place, torch.where(taken, norm, self._ring.gather(0, place)[0]).view(1))
            self._taken += taken
        self._write(torch.stack([norm, limit, taken.double()]))
        return taken

    def reserve(self, rows: int, device: torch.device) -> None:
        """Room on ``device`` for ``rows`` steps between two reads (what a step captured as a CUDA
        graph needs: its replays cannot make more). Before the capture, on_device only."""
        if self._log is None or len(self._log) < rows:
            self._grow(rows, device)

    def _grow(self, rows: int, device: torch.device | None = None) -> None:
        log = torch.zeros(rows, 3, dtype=torch.float64, device=device if self._log is None else self._log.device)
        if self._log is not None:
            log[: len(self._log)] = self._log
        self._log = log
        if self._logged is None:
            self._logged = torch.zeros((), dtype=torch.long, device=log.device)

    def _write(self, row: torch.Tensor) -> None:
        if self._log is None or self._unread >= len(self._log):
            self._grow(max(64, 2 * (0 if self._log is None else len(self._log))), row.device)
        assert self._log is not None and self._logged is not None  # (made by _grow)
        # (a count beyond the log, which reserve() prevents, overwrites its last row: _flush says so)
        place = torch.clamp(self._logged, max=len(self._log) - 1).view(1)
        self._log.index_copy_(0, place, row.view(1, 3))
        self._logged += 1
        self._unread += 1

    def _flush(self) -> None:
        """Read back what the steps decided on the device (one synchronisation)."""
        if self._log is None or self._logged is None:
            return
        n = int(self._logged)
        if n == 0:
            return
        if n > len(self._log):
            raise TrainingError(f"the step guard logged {n} steps in room for {len(self._log)}: some were lost")
        rows = self._log[:n].tolist()
        self._logged.zero_()
        self._unread = 0
        for norm, limit, taken in rows:
            self._record(norm, limit, taken > 0.5)

    def epoch_problem(self) -> str | None:
        """What is wrong when every update of the epoch was skipped (None otherwise)."""
        norms = self.epoch_norms
        if not norms or self.epoch_skipped < len(norms):
            return None
        finite = sorted(v for v in norms if math.isfinite(v))
        seen = (
            f"from {finite[0]:.4g} to {finite[-1]:.4g} (median {statistics.median(finite):.4g})" if finite else "none finite"
        )
        rules = []
        if self.skip_norm is not None:
            rules.append(f"skip_grad_norm = {self.skip_norm:g}")
        if self.skip_factor is not None:
            rules.append(f"skip_grad_factor = {self.skip_factor:g} times the recent median")
        return (
            f"every one of the epoch's {len(norms)} updates was skipped: their gradient norms were {seen}, "
            f"above the threshold ({' and '.join(rules)}; lowest in force {self.epoch_threshold:.4g})"
        )

    def state(self) -> dict:
        """What a checkpoint keeps so that a resumed run decides as the uninterrupted one."""
        return {"skipped_steps": self.skipped_total, "recent_grad_norms": self.recent}

    def load_state(self, skipped_total: int, recent: list[float]) -> None:
        if len(recent) > self.window or not all(isinstance(v, float) and math.isfinite(v) and v >= 0 for v in recent):
            raise ValueError(f"recent gradient norms must be at most {self.window} finite norms")
        self._flush()
        self._skipped_total, self._recent, self._ring, self._taken = skipped_total, list(recent), None, None


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
    def around_backward(self, i: int, loss: torch.Tensor, losses: torch.Tensor | None, rows: int) -> Iterator[None]:
        """Around step ``i``'s backward pass; ``loss`` this process's mean loss, ``losses`` its
        per-example losses (data-parallel training), ``rows`` the global batch's."""
        pending = None
        if (i + 1) % self.every == 0:
            if self.parallel:
                assert losses is not None  # (a data-parallel step returns them)
                checked = losses.detach().sum()
                pending = dist.all_reduce(checked, async_op=True)
            else:
                checked = loss.detach()
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
