"""Mixture of Gaussians prior p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2)), all learnable."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from dgmkit.distributions import DiagonalGaussianMixture
from dgmkit.errors import whole_at_least
from dgmkit.nn.scale import inverse_softplus
from dgmkit.priors.base import Prior

__all__ = ["MixtureOfGaussiansPrior"]


class MixtureOfGaussiansPrior(Prior):
    """K diagonal Gaussian components with learnable weights, means and variances.

    The mixture is over whole latent vectors (one component per z, not per dimension), so
    ``log_prob`` and ``sample`` describe the same distribution. There is no closed-form KL to
    q(z|x); objectives estimate it by Monte Carlo. ``assign(z)`` gives each z its most
    probable component, which makes the model a clustering method.
    """

    has_components = True

    def __init__(self, latent_dim: int, components: int = 10, init_scale: float = 1.0, min_scale: float = 1e-3):
        super().__init__(latent_dim)
        self.components = whole_at_least("components", components, 1)
        if not (0 < min_scale < init_scale < math.inf):  # (NaN is neither)
            raise ValueError(f"need 0 < min_scale < init_scale, both finite; got {min_scale}, {init_scale}")
        self.min_scale = min_scale
        self.logits = nn.Parameter(torch.zeros(components))
        self.means = nn.Parameter(torch.randn(components, latent_dim))
        raw = inverse_softplus(init_scale - min_scale)
        self.raw_scales = nn.Parameter(torch.full((components, latent_dim), raw))

    def forward(self, context: None = None) -> DiagonalGaussianMixture:
        return DiagonalGaussianMixture(self.logits, self.means, F.softplus(self.raw_scales) + self.min_scale)

    def _log_joint(self, z: torch.Tensor) -> torch.Tensor:
        """log pi_k + log N(z; mu_k, sigma_k^2): (..., K), refused where a z has no finite value
        (NaN, or so far from every component that each density underflows): argmax and softmax
        would give it component 0 or NaN."""
        log_joint = F.log_softmax(self.logits, -1) + self().component_log_prob(z)
        lost = ~torch.isfinite(log_joint.max(-1).values)
        if bool(lost.any()):
            raise ValueError(
                f"{int(lost.sum())} of {lost.numel()} latent points have no finite density under any mixture component "
                "(NaN, or too far from all of them): no component can be assigned"
            )
        return log_joint

    def responsibilities(self, z: torch.Tensor) -> torch.Tensor:
        """p(k | z) for z of shape (..., M): shape (..., K)."""
        return torch.softmax(self._log_joint(z), dim=-1)

    def assign(self, z: torch.Tensor) -> torch.Tensor:
        """The most probable component of each z (..., M): (...,)."""
        return self._log_joint(z).argmax(-1)
