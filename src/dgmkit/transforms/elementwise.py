"""Element-wise bijections: the logit pre-processing of data in (0, 1) and NICE's scaling."""

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import constraints

from dgmkit.transforms.base import Bijection, check_event_shape, sum_except_batch

__all__ = ["Logit", "DiagonalScaling"]


class Logit(Bijection):
    r"""y in (0, 1) -> logit(alpha + (1 - 2 alpha) y) (Dinh et al. 2017, arXiv 1605.08803).

    ``alpha`` keeps the logit away from the boundary. Its log|det J| per dimension is
    log(1 - 2 alpha) - log s - log(1 - s) with s = alpha + (1 - 2 alpha) y; a flow's log p(y)
    includes it, so the NLL it reports is of y itself, not of the logit-space data.
    """

    def __init__(self, alpha: float = 0.05):
        super().__init__()
        if not 0 < alpha < 0.5:  # at 0: data on the boundary (uniformly dequantized 255 + u rounds to 1.0) have no logit
            raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
        self.alpha = alpha

    @property
    def domain(self) -> constraints.Constraint:
        return constraints.unit_interval

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.alpha + (1 - 2 * self.alpha) * x
        # 1 - s formed as alpha + (1 - 2 alpha)(1 - x), not by cancellation: in float32 a tiny alpha (1e-8)
        # made s of y = 1.0 (255 + u rounds to 256) exactly 1, so z and log|det J| inf and log p NaN
        log_s, log_1ms = torch.log(s), torch.log(self.alpha + (1 - 2 * self.alpha) * (1 - x))
        z = log_s - log_1ms
        ladj = sum_except_batch(math.log1p(-2 * self.alpha) - log_s - log_1ms)
        return z, ladj

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.sigmoid(z)
        x = (s - self.alpha) / (1 - 2 * self.alpha)
        # log ds/dz = log s + log(1 - s) = -softplus(-z) - softplus(z)
        ladj = sum_except_batch(-F.softplus(-z) - F.softplus(z) - math.log1p(-2 * self.alpha))
        return x, ladj


class DiagonalScaling(Bijection):
    """z = x * exp(s) with a learned log-scale per dimension: NICE's final layer
    (Dinh et al. 2015, arXiv 1410.8516), which lets the volume change."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(shape))

    def _check(self, x: torch.Tensor) -> None:
        """x of (B, *shape): another broadcast against the scales (an image (B, 1, 3, 3) against 3 of them
        kept its shape, and its log|det J| was that of 3 entries, not 9)."""
        check_event_shape(f"DiagonalScaling of shape {tuple(self.log_scale.shape)}", x, tuple(self.log_scale.shape))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x)
        return x * self.log_scale.exp(), self.log_scale.sum().expand(x.shape[0])

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(z)
        return z * (-self.log_scale).exp(), (-self.log_scale.sum()).expand(z.shape[0])
