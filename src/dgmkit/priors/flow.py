"""Flow prior p(z): a standard normal pushed through a learned bijection (for example a MAF
or RealNVP over the latent vector), so the prior can match the aggregate posterior."""

import torch

from dgmkit.distributions.flow import FlowDistribution, standard_normal
from dgmkit.priors.base import Prior
from dgmkit.transforms import Bijection

__all__ = ["FlowPrior"]


class FlowPrior(Prior):
    """p(z) = N(T(z); 0, I) |det dT/dz| with T a Bijection on (B, latent_dim)."""

    _zero: torch.Tensor

    def __init__(self, latent_dim: int, bijection: Bijection):
        super().__init__(latent_dim)
        self.bijection = bijection
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    def untaken_sample_note(self, option: str) -> str | None:
        return "flow prior over z draws at temperature 1" if option == "temperature" else None

    def forward(self, context: None = None) -> FlowDistribution:
        base = standard_normal(self.latent_dim, device=self._zero.device, dtype=self._zero.dtype)
        return FlowDistribution(base, self.bijection)
