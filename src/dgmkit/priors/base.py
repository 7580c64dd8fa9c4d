"""The prior interface: the seam where mixture, VampPrior, flow and hierarchical priors plug in.

Priors share the signature of conditional distributions, ``forward(context=None)`` (zuko's
``LazyDistribution``): an unconditional prior ignores the context, a conditional one (the
VampPrior, whose mixture components are the encoder's posteriors at its pseudo-inputs; the
prior of a layer of a hierarchy, given the layer above) takes it. ``context`` says which
context a prior needs, so that a model passes it without knowing the prior's class.
"""

import operator
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn
from torch.distributions import Distribution

__all__ = ["Prior"]


class Prior(nn.Module, ABC):
    """A module whose ``forward(context=None)`` returns p(z) with event shape (latent_dim,).

    ``context``: None (unconditional), ``"encoder"`` (the model's q(z|x) module) or
    ``"latent"`` (the latent variable this prior is conditioned on).
    ``has_components``: p(z) is a mixture whose components can serve as clusters
    (``assign(z)``, ``components``)."""

    latent_dim: int
    context: ClassVar[str | None] = None
    has_components: ClassVar[bool] = False
    components: int  # where has_components: how many

    def untaken_sample_note(self, option: str) -> str | None:
        """Why a sampling option of flows of the data (``"temperature"``), which a model drawing from
        this prior does not take, would not apply to the prior either, in words that follow "the
        model's" (``GenerativeModel.untaken_sample_note``; None: nothing to add)."""
        return None

    def __init__(self, latent_dim: int | None = None):
        """``latent_dim``: set here, or by the subclass itself (as priors written before this took it)."""
        super().__init__()
        if latent_dim is not None:
            try:  # (a NumPy integer or a 0-d integer tensor: the int it holds; True is no count of dimensions)
                if isinstance(latent_dim, bool):
                    raise TypeError
                self.latent_dim = operator.index(latent_dim)
            except TypeError:
                raise TypeError(f"latent_dim must be an integer, got {type(latent_dim).__name__} {latent_dim!r}") from None
            if self.latent_dim < 1:
                raise ValueError(f"latent_dim must be >= 1, got {self.latent_dim}")

    @abstractmethod
    def forward(self, context: Any = None) -> Distribution: ...

    def assign(self, z: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} is not a mixture: it has no components to assign to")
