"""Amortized Gaussian posterior q(z|x) = N(mu(x), diag(sigma(x)^2))."""

import torch
from torch import nn
from torch.distributions import Independent

from dgmkit.conditional.base import ConditionalDistribution, width_error
from dgmkit.distributions import diagonal_normal
from dgmkit.errors import whole_at_least
from dgmkit.nn.scale import SoftplusScale

__all__ = ["GaussianEncoder"]


class GaussianEncoder(ConditionalDistribution):
    """q(z|x) with a network that outputs 2M numbers: the mean and a raw scale.

    The scale is ``scale_map(raw)`` (``nn.scale``), by default softplus(raw) + ``min_scale``:
    smooth, positive and bounded away from zero (``min_scale`` > 0 is that default's floor; it
    has no part in a ``scale_map`` given).
    """

    def __init__(self, net: nn.Module, latent_dim: int, min_scale: float = 1e-4, scale_map: nn.Module | None = None):
        super().__init__()
        self.net = net
        self.latent_dim = whole_at_least("latent_dim", latent_dim, 1)
        self.scale_map = SoftplusScale(min_scale) if scale_map is None else scale_map

    def forward(self, x: torch.Tensor) -> Independent:
        h = self.net(x)  # (B, 2M)
        if h.shape[-1] != 2 * self.latent_dim:
            m = self.latent_dim
            needs = f"a GaussianEncoder of latent_dim {m} needs 2 * {m} = {2 * m}: the means, then the raw scales"
            raise width_error(h, h.shape[-1], "encoder", "datapoint", needs)
        if h.dtype in (torch.float16, torch.bfloat16):
            h = h.float()
        loc, raw = h.split(self.latent_dim, dim=-1)
        return diagonal_normal(loc, self.scale_map(raw))
