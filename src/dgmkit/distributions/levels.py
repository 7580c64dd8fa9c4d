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

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self._reduce(self.log_prob_elements(value))
