"""The interface of a conditional distribution module."""

from abc import ABC, abstractmethod

import torch
from torch import nn
from torch.distributions import Distribution

__all__ = ["ConditionalDistribution"]


class ConditionalDistribution(nn.Module, ABC):
    """A module whose ``forward(context)`` returns a ``torch.distributions.Distribution``."""

    @abstractmethod
    def forward(self, context: torch.Tensor) -> Distribution: ...
