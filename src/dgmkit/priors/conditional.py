"""The prior of one layer of a hierarchy given the layer above: p(z_l | z_{l+1})."""

import torch
from torch import nn

from dgmkit.conditional.base import is_shape_error, width_error
from dgmkit.distributions import DiagonalNormal, diagonal_normal
from dgmkit.errors import first_line
from dgmkit.nn.scale import SoftplusScale
from dgmkit.priors.base import Prior

__all__ = ["GaussianLayerPrior"]


class GaussianLayerPrior(Prior):
    """p(z_l | z_{l+1}) = N(mu(z_{l+1}), diag(sigma(z_{l+1})^2)): ``net`` maps the layer above
    (..., M_above) to 2 * ``latent_dim`` numbers, a mean and a raw scale that ``scale_map`` makes
    the standard deviation (``nn.scale``; default softplus floored at ``min_scale``). Its context
    is the latent variable above (``context = "latent"``)."""

    context = "latent"

    def __init__(self, net: nn.Module, latent_dim: int, min_scale: float = 1e-3, scale_map: nn.Module | None = None):
        super().__init__(latent_dim)
        self.net = net
        self.scale_map = SoftplusScale(min_scale) if scale_map is None else scale_map

    def params(self, z_above: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            h = self.net(z_above)
        except RuntimeError as e:  # (a net of another width above: torch's "mat1 and mat2 shapes cannot be multiplied")
            if not is_shape_error(e):  # (a dtype's, a device's, the memory's: not of z_above's shape)
                raise
            raise ValueError(
                f"the prior network of this GaussianLayerPrior does not take the layer above's draws of shape "
                f"{tuple(z_above.shape)} ({first_line(str(e))}): its input is the layer above, of that layer's width"
            ) from e
        if h.shape[-1] != 2 * self.latent_dim:  # (2M + 1 made a scale of one number shared by every dimension)
            m = self.latent_dim
            needs = f"a GaussianLayerPrior of latent_dim {m} needs 2 * {m} = {2 * m}: the means, then the raw scales"
            raise width_error(h, h.shape[-1], "prior", "draw of the layer above", needs)
        loc, raw = h.split(self.latent_dim, dim=-1)
        return loc, self.scale_map(raw)

    def forward(self, context: torch.Tensor | None = None) -> DiagonalNormal:
        if context is None:
            raise TypeError("a layer's prior is conditional: call it with the latent variable above")
        return diagonal_normal(*self.params(context))
