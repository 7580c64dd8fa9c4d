"""q(z|x) with inverse autoregressive flow (Kingma et al. 2016, arXiv 1606.04934).

The network outputs a mean, a raw scale and a context h(x); z_0 = mu + sigma * eps and
z_T = f_T(... f_1(z_0; h) ...; h) with IAF layers. A sample and its log q(z|x) come from one
pass; log q of any other point would need the sequential inverse.
"""

import torch
from torch import nn

from dgmkit.conditional.base import ConditionalDistribution, width_error
from dgmkit.distributions import diagonal_normal
from dgmkit.distributions.flow import FlowDistribution
from dgmkit.errors import whole_at_least
from dgmkit.nn.scale import SoftplusScale
from dgmkit.transforms import Bijection

__all__ = ["IAFEncoder"]


class IAFEncoder(ConditionalDistribution):
    """``net`` outputs 2M + C numbers (mean, raw scale, context); ``flow`` is a Bijection on
    (B, M) taking a (B, C) context whose inverse is the cheap direction (see ``transforms.iaf``).
    The base's scale is ``scale_map(raw)`` (``nn.scale``), by default softplus(raw) + ``min_scale``
    (``min_scale`` > 0 is that default's floor; it has no part in a ``scale_map`` given). x of
    shape (S, B, D) gives batch shape (S, B), as a GaussianEncoder's (the flow sees S B rows)."""

    def __init__(
        self,
        net: nn.Module,
        latent_dim: int,
        context_features: int,
        flow: Bijection,
        min_scale: float = 1e-4,
        scale_map: nn.Module | None = None,
    ):
        super().__init__()
        self.net, self.flow = net, flow
        self.latent_dim = whole_at_least("latent_dim", latent_dim, 1)
        self.context_features = whole_at_least("context_features", context_features, 0)
        self.scale_map = SoftplusScale(min_scale) if scale_map is None else scale_map

    def forward(self, x: torch.Tensor) -> FlowDistribution:
        h = self.net(x)
        m, c = self.latent_dim, self.context_features
        if h.shape[-1] != 2 * m + c:
            needs = (
                f"an IAFEncoder of latent_dim {m} and {c} context features needs 2 * {m} + {c} = {2 * m + c}: the means, "
                "the raw scales, the context"
            )
            raise width_error(h, h.shape[-1], "encoder", "datapoint", needs)
        if h.dtype in (torch.float16, torch.bfloat16):
            h = h.float()
        loc, raw, c = h.split([self.latent_dim, self.latent_dim, self.context_features], dim=-1)
        base = diagonal_normal(loc, self.scale_map(raw))
        return FlowDistribution(base, self.flow, context=c)
