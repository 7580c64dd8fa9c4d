"""The interface of a conditional distribution module."""

from abc import ABC, abstractmethod

import torch
from torch import nn
from torch.distributions import Distribution

__all__ = ["ConditionalDistribution", "width_error"]


def width_error(out: torch.Tensor, got: int, network: str, per: str, needs: str) -> ValueError:
    """The refusal of a ``network``'s output ``out`` that gives ``got`` numbers per ``per`` (a
    datapoint, a latent) where the module needs another number (``needs``: how many, and what
    they are, in words): a reshape would read other widths as other batch sizes, or fail in
    torch's words."""
    return ValueError(f"the {network} network gave {got} numbers per {per} (output shape {tuple(out.shape)}); {needs}")


class ConditionalDistribution(nn.Module, ABC):
    """A module whose ``forward(context)`` returns a ``torch.distributions.Distribution``."""

    @abstractmethod
    def forward(self, context: torch.Tensor) -> Distribution: ...
