"""The prior interface: the seam where mixture, VampPrior and flow priors plug in."""

from abc import ABC, abstractmethod

from torch import nn
from torch.distributions import Distribution

__all__ = ["Prior"]


class Prior(nn.Module, ABC):
    """A module whose ``forward()`` returns p(z) with event shape (latent_dim,)."""

    latent_dim: int

    @abstractmethod
    def forward(self) -> Distribution: ...
