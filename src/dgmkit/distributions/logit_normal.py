r"""Logit-normal noise in (0, 1)^(C, H, W): v ~ N(loc, scale^2) per pixel, u = sigmoid(v), so

    log q(u) = sum [ log N(v; loc, scale^2) - log sigmoid(v) - log sigmoid(-v) ],  v = logit(u)

the variational dequantizer's q(u | k) (Ho et al. 2019, arXiv 1902.00275).
"""

import math

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints

from dgmkit._rng import randn
from dgmkit.distributions.sampling import JointSampler

__all__ = ["LogitNormal"]

_EPS = 1e-6
_LOGIT_EPS = math.log((1 - _EPS) / _EPS)  # logit(1 - EPS)


class LogitNormal(Distribution, JointSampler):
    """Batch shape loc.shape[:-3], event shape loc.shape[-3:]."""

    arg_constraints: dict = {}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor):
        self.loc, self.scale = loc, scale
        super().__init__(loc.shape[:-3], loc.shape[-3:], validate_args=False)

    def _log_density(self, v: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        log_q = -0.5 * eps.pow(2) - self.scale.log() - 0.5 * math.log(2 * math.pi) - F.logsigmoid(v) - F.logsigmoid(-v)
        return log_q.flatten(-3).sum(-1)

    def rsample_and_log_prob(
        self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size(), generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        eps = randn((*sample_shape, *self.loc.shape), generator, device=self.loc.device, dtype=self.loc.dtype)
        v = self.loc + self.scale * eps
        # u is kept within [EPS, 1 - EPS], and log q is the density of the draw v itself, also past the clip:
        # an importance weight p(u) / q needs the density the draws come from. The clip's u is an atom of
        # mass P(|v| > 13.8), and its log_prob(u), a density, made the dequantization bound grow without
        # limit as loc passed the clip (+25 nats a pixel above log P(k) at loc 20, its gradient pushing on)
        return torch.sigmoid(v.clamp(-_LOGIT_EPS, _LOGIT_EPS)), self._log_density(v, eps)

    def rsample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def log_prob(self, u: torch.Tensor) -> torch.Tensor:
        u = u.clamp(_EPS, 1 - _EPS)
        v = torch.log(u) - torch.log1p(-u)
        return self._log_density(v, (v - self.loc) / self.scale)

    @property
    def mean(self) -> torch.Tensor:
        raise NotImplementedError("a logit-normal's mean has no closed form")
