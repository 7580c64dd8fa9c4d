"""Standard Gaussian prior p(z) = N(0, I)."""

import torch
from torch.distributions import Independent

from dgmkit.distributions import diagonal_normal
from dgmkit.priors.base import Prior

__all__ = ["StandardNormalPrior"]


class StandardNormalPrior(Prior):
    """p(z) = N(0, I_M). Buffers follow the module's device, so the prior does too.

    >>> StandardNormalPrior(2)().log_prob(torch.zeros(2)).item()  # -log(2 pi)
    -1.8378770351409912
    """

    loc: torch.Tensor
    scale: torch.Tensor

    def __init__(self, latent_dim: int):
        super().__init__(latent_dim)
        self.register_buffer("loc", torch.zeros(latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(latent_dim), persistent=False)

    def forward(self, context: None = None) -> Independent:
        return diagonal_normal(self.loc, self.scale)
