r"""Variational dequantization (Ho et al. 2019, Flow++, arXiv 1902.00275).

Uniform dequantization scores y = (k + u) / L with u ~ U[0, 1)^D and pays the gap between
E_u[log p(y)] and log P(k). A learned q(u | k) narrows it:

    log P(k) >= E_q(u|k)[ log p((k + u) / L) - D log L - log q(u | k) ]

and importance sampling with q tightens the bound towards log P(k) as the number of samples
grows. Here q(u | k) is a conditional logit-normal: v ~ N(mu(k), sigma(k)^2) per pixel from a
convolutional network of the image, u = sigmoid(v), so that
log q(u | k) = log N(v) - log sigmoid(v) - log sigmoid(-v).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from dgmkit.models.flow import FlowModel

__all__ = ["LogitNormalDequantizer", "VariationallyDequantizedFlow"]


class LogitNormalDequantizer(nn.Module):
    """q(u | k) for integer images k (B, C, H, W) with L levels."""

    def __init__(self, channels: int, num_levels: int, hidden: int = 32):
        super().__init__()
        self.num_levels = num_levels
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, 2 * channels, 3, padding=1),
        )  # fmt: skip

    def rsample_and_log_prob(self, k: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws u (n, B, C, H, W) in (0, 1) and log q(u | k) (n, B)."""
        dtype = self.net[0].weight.dtype
        loc, raw = self.net(k.to(dtype) / (self.num_levels - 1)).chunk(2, dim=1)
        scale = F.softplus(raw) + 1e-3
        eps = torch.randn((n, *loc.shape), device=loc.device, dtype=loc.dtype)
        v = loc + scale * eps
        log_q = -0.5 * eps.pow(2) - scale.log() - 0.5 * math.log(2 * math.pi) - F.logsigmoid(v) - F.logsigmoid(-v)
        u = torch.sigmoid(v).clamp(1e-6, 1 - 1e-6)
        return u, log_q.flatten(2).sum(-1)


class VariationallyDequantizedFlow(nn.Module):
    """A flow on y in [0, 1]^D with a learned dequantizer: a model of integer images whose
    ``log_prob_bound(k, n)`` is the n-sample importance-weighted lower bound on log P(k)."""

    def __init__(self, flow: FlowModel, dequantizer: LogitNormalDequantizer):
        super().__init__()
        self.flow, self.dequantizer = flow, dequantizer
        self.num_levels = dequantizer.num_levels
        self.event_shape = flow.event_shape

    def log_weights(self, k: torch.Tensor, n: int = 1) -> torch.Tensor:
        """log p((k + u) / L) - D log L - log q(u | k) for n draws: (n, B)."""
        u, log_q = self.dequantizer.rsample_and_log_prob(k, n)
        y = (k.to(u.dtype).unsqueeze(0) + u) / self.num_levels
        log_p = self.flow.log_prob(y.flatten(0, 1)).view(n, -1)
        return log_p - self.flow.num_dims * math.log(self.num_levels) - log_q

    def log_prob_bound(self, k: torch.Tensor, n: int = 1) -> torch.Tensor:
        return torch.logsumexp(self.log_weights(k, n), 0) - math.log(n)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0):
        y, _ = self.flow.sample(n, generator, temperature)
        k = (y * self.num_levels).floor().clamp(0, self.num_levels - 1)
        return k, k
