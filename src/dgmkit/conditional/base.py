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


# the words of torch's errors of an input's shape (a matmul's, a broadcast's, a convolution's), not of
# its dtype, device or memory (whose errors are RuntimeErrors too)
_SHAPE_WORDS = ("shapes cannot be multiplied", "size of tensor", "must match the size", "expected input", "input to conv")


def is_shape_error(e: RuntimeError) -> bool:
    """Whether torch's ``e`` is of the shape of a network's input: what a refusal that names the
    input's shape may say in its place (any other error is passed on as torch raised it)."""
    words = str(e).lower()
    return any(w in words for w in _SHAPE_WORDS)


class ConditionalDistribution(nn.Module, ABC):
    """A module whose ``forward(context)`` returns a ``torch.distributions.Distribution``."""

    @abstractmethod
    def forward(self, context: torch.Tensor) -> Distribution: ...
