"""What the per-pixel distributions over the integers 0..L-1 share (the categorical and the
discretized logistic mixture): their shapes, support and the sum of ``log_prob`` over the event."""

import torch
from torch.distributions import Distribution, constraints

from dgmkit.distributions.shapes import event_split

__all__ = ["LevelPixels"]


class LevelPixels(Distribution):
    """Independent pixels over the integers 0..``num_levels``-1, from parameters of shape
    (*batch, *event, P) whose last ``event_dims`` dimensions before P are the event's.
    ``log_prob`` sums ``log_prob_elements`` over the event dimensions."""

    arg_constraints = {}
    has_rsample = False

    def __init__(self, params: torch.Tensor, num_levels: int, event_dims: int):
        self.num_levels = num_levels
        shape = params.shape[:-1]
        split = event_split(len(shape), event_dims)
        super().__init__(shape[:split], shape[split:], validate_args=False)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.integer_interval(0, self.num_levels - 1)

    def _reduce(self, t: torch.Tensor) -> torch.Tensor:
        return t.sum(dim=tuple(range(-len(self.event_shape), 0))) if self.event_shape else t

    def log_prob_elements(self, value: torch.Tensor) -> torch.Tensor:
        """log P(x_d) of every element (not summed over the event): (*batch, *event)."""
        raise NotImplementedError

    def in_support(self, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``value`` with every entry that is not one of the integers 0..L-1 (nor NaN) set to 0, a
        level that indexes and scores safely, and where those entries were: their probability is 0,
        log -inf (``outside_support``). Elementwise, with no read of the values (no wait for a GPU):
        a categorical's gather raised a raw RuntimeError for a level of L (an assert on a GPU),
        and the logistic mixture scored a level past L - 1 as its top bin and 0.5 as a bin of its own."""
        outside = (value < 0) | (value > self.num_levels - 1)
        if value.is_floating_point():
            outside = outside | (value != value.round())  # true of NaN too
        return torch.where(outside, torch.zeros((), dtype=value.dtype, device=value.device), value), outside

    @staticmethod
    def outside_support(log_p: torch.Tensor, value: torch.Tensor, outside: torch.Tensor) -> torch.Tensor:
        """``log_p`` with -inf where ``outside`` (``in_support``) and NaN where ``value`` is NaN
        (a missing entry has no probability to give; ``pixels.observed_log_prob`` leaves it out)."""
        log_p = torch.where(outside, torch.full((), -torch.inf, dtype=log_p.dtype, device=log_p.device), log_p)
        if value.is_floating_point():
            log_p = torch.where(torch.isnan(value), torch.full((), torch.nan, dtype=log_p.dtype, device=log_p.device), log_p)
        return log_p

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self._reduce(self.log_prob_elements(value))
