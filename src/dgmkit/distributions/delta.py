"""A point mass: the 'posterior' of a deterministic encoder."""

import torch
from torch.distributions import Distribution, constraints

from dgmkit.distributions.shapes import event_split

__all__ = ["Delta"]


class Delta(Distribution):
    """All mass at ``value``; event shape is its last ``event_dims`` dimensions. ``rsample``
    returns the value itself (with its gradient), so an autoencoder trains through it."""

    arg_constraints = {}
    support = constraints.real
    has_rsample = True
    location_name = "codes z = f(x)"  # (what its location, the value itself, is: a posterior mean of nothing)

    def __init__(self, value: torch.Tensor, event_dims: int = 1):
        self.value = value
        split = event_split(value.dim(), event_dims)
        super().__init__(value.shape[:split], value.shape[split:], validate_args=False)

    def rsample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        return self.value.expand(torch.Size(sample_shape) + self.value.shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(-len(self.event_shape), 0))
        equal = (value == self.value).all(dim=dims) if dims else value == self.value
        zero = torch.zeros((), dtype=torch.promote_types(value.dtype, self.value.dtype), device=equal.device)
        return torch.where(equal, zero, -torch.inf)  # (of the values' dtype: 0.0 alone made float32)

    @property
    def mean(self) -> torch.Tensor:
        return self.value

    @property
    def stddev(self) -> torch.Tensor:
        return torch.zeros_like(self.value)
