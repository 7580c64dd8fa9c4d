"""Model interfaces."""

from abc import ABC, abstractmethod

import torch
from torch import nn

__all__ = ["ExactLikelihoodModel", "ExactLatentVariableModel"]


class ExactLikelihoodModel(nn.Module, ABC):
    """A model whose ``log_prob(x)`` is the exact log-likelihood, one value per example (in
    nats); evaluation uses it directly instead of a bound or an importance-sampled estimate."""

    @abstractmethod
    def log_prob(self, x: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples and the means they are drawn around (for display), each (n, *event)."""


class ExactLatentVariableModel(ExactLikelihoodModel):
    """An exact-likelihood model with latents whose posterior p(z|x) is exact too (PPCA, the
    log-linear model): evaluation splits log p(x) into reconstruction and KL terms."""

    @abstractmethod
    def posterior(self, x: torch.Tensor): ...

    @abstractmethod
    def prior(self): ...
