r"""Mixture of K diagonal Gaussians over vectors, with a log-density built on matrix products.

    log N(z; mu_k, diag(s_k^2)) = -1/2 sum_j (z_j - mu_kj)^2 / s_kj^2 - sum_j log s_kj - M/2 log 2 pi

and sum_j (z_j - mu_kj)^2 / s_kj^2 = (z^2) . (1/s_k^2) - 2 z . (mu_k / s_k^2) + sum_j mu_kj^2 / s_kj^2,
so all N x K component densities come from two (N, M) x (M, K) products instead of an
(N, K, M) tensor: the prior term of a VampPrior or MoG-prior VAE with K = 500 costs a few
matrix products rather than dominating the step. The three terms are each about
sum_j (mu_kj / s_kj)^2, far larger than their sum where a component is narrow and far from 0,
so they are formed in float64 (whatever the dtype, and under autocast too): in float32 a
component at 50 with scale 1e-3 lost 1023 nats, and a 40-D mixture of 50 such components up to 67.
"""

import math

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints

from dgmkit.distributions.shapes import check_event_width

__all__ = ["DiagonalGaussianMixture"]


class DiagonalGaussianMixture(Distribution):
    """p(z) = sum_k softmax(logits)_k N(z; loc_k, diag(scale_k^2)), event shape (M,).

    ``logits`` (K,), ``loc`` and ``scale`` (K, M). ``log_prob`` accepts z of shape (..., M).

    >>> d = DiagonalGaussianMixture(torch.zeros(2), torch.zeros(2, 3), torch.ones(2, 3))
    >>> round(d.log_prob(torch.zeros(3)).item(), 4)  # = log N(0; 0, I_3)
    -2.7568
    """

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor):
        if loc.dim() != 2 or loc.shape != scale.shape or logits.shape != loc.shape[:1]:
            raise ValueError(f"need logits (K,), loc and scale (K, M); got {logits.shape}, {loc.shape}, {scale.shape}")
        if loc.shape[0] == 0 or loc.shape[1] == 0:  # (no component: log p(z) = -inf everywhere; no dimension: no z)
            raise ValueError(f"a mixture needs a component or more over a dimension or more; got loc {tuple(loc.shape)}")
        self.logits, self.loc, self.scale = logits, loc, scale
        super().__init__(torch.Size(), loc.shape[1:], validate_args=False)

    def component_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; loc_k, scale_k) for every k: shape (..., K)."""
        m = self.loc.shape[1]
        check_event_width(z, m, "a mixture", "z")
        flat, loc = z.reshape(-1, m).double(), self.loc.double()  # (the cancellation of the module docstring)
        precision = self.scale.double().pow(-2)  # (K, M)
        quad = flat.pow(2) @ precision.T - 2 * flat @ (loc * precision).T  # (N, K)
        quad = quad + (loc.pow(2) * precision).sum(-1)
        # an infinite z (no NaN) is infinitely far from every component: inf - inf in the expansion made it NaN
        infinite = torch.isinf(flat).any(-1, keepdim=True) & ~torch.isnan(flat).any(-1, keepdim=True)
        quad = torch.where(infinite, math.inf, quad)
        const = -self.scale.log().sum(-1) - 0.5 * m * math.log(2 * math.pi)  # (K,)
        out = const - 0.5 * quad.clamp_min(0).to(const.dtype)  # (rounding within float64's precision: clamped)
        return out.reshape(*z.shape[:-1], -1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(F.log_softmax(self.logits, -1) + self.component_log_prob(z), dim=-1)

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            n = int(torch.Size(sample_shape).numel())
            weights = F.softmax(self.logits, -1)  # (multinomial refuses to draw none: sample((0,)) is empty, as a Normal's)
            k = (
                torch.multinomial(weights, n, replacement=True)
                if n
                else torch.zeros(0, dtype=torch.long, device=weights.device)
            )
            z = self.loc[k] + self.scale[k] * torch.randn(n, self.loc.shape[1], device=self.loc.device, dtype=self.loc.dtype)
            return z.reshape(*sample_shape, self.loc.shape[1])

    @property
    def mean(self) -> torch.Tensor:
        return (F.softmax(self.logits, -1)[:, None] * self.loc).sum(0)

    @property
    def variance(self) -> torch.Tensor:
        """Each dimension's variance, sum_k w_k (sigma_k^2 + (mu_k - mean)^2) (the law of total
        variance: within the components and between their means)."""
        w = F.softmax(self.logits, -1)[:, None]
        return (w * (self.scale.pow(2) + (self.loc - self.mean).pow(2))).sum(0)

    def entropy(self) -> torch.Tensor:
        raise NotImplementedError(
            "a mixture of Gaussians' entropy has no closed form: estimate it as -E[log p(z)] over draws z ~ p"
        )
