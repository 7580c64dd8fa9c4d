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
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, constraints

from dgmkit.distributions.logit_normal import LogitNormal
from dgmkit.errors import whole_at_least
from dgmkit.models.base import JointTerms, VariationalModel, data_batch
from dgmkit.models.flow import FlowModel

__all__ = ["LogitNormalDequantizer", "VariationallyDequantizedFlow"]


class LogitNormalDequantizer(nn.Module):
    """q(u | k) for integer images k (B, C, H, W) with L levels."""

    def __init__(self, channels: int, num_levels: int, hidden: int = 32):
        super().__init__()
        whole_at_least("channels", channels, 1)
        whole_at_least("hidden", hidden, 1)
        self.num_levels = whole_at_least("num_levels", num_levels, 2)
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, 2 * channels, 3, padding=1),
        )  # fmt: skip

    def forward(self, k: torch.Tensor) -> LogitNormal:
        dtype = cast(nn.Conv2d, self.net[0]).weight.dtype
        loc, raw = self.net(k.to(dtype) / (self.num_levels - 1)).chunk(2, dim=1)
        return LogitNormal(loc, F.softplus(raw) + 1e-3)


class VariationallyDequantizedFlow(VariationalModel):
    """A flow on y in [0, 1]^D with a learned dequantizer: a model of integer images k scored
    through the noise u as its latent variable, p(k, u) = p_flow((k + u) / L) / L^D and
    q(u | k). Its importance-weighted estimates are lower bounds on log P(k)."""

    estimate_kind = "bound"
    estimate_draws = "the dequantization samples"  # (its bound: importance samples of q(u|x))
    sample_temperature = True

    def __init__(self, flow: FlowModel, dequantizer: LogitNormalDequantizer):
        super().__init__()
        channels = cast(nn.Conv2d, dequantizer.net[0]).in_channels
        if len(flow.event_shape) != 3 or flow.event_shape[0] != channels:  # (else conv2d's words, from deep inside)
            raise ValueError(
                f"the dequantizer q(u | k) of {channels} channels reads images (C, H, W) of {channels} channels; the flow "
                f"models data of shape {flow.event_shape} (points of D values are images (1, 1, D))"
            )
        self.flow, self.dequantizer = flow, dequantizer
        self.num_levels = dequantizer.num_levels
        self.event_shape = flow.event_shape

    @property
    def data_support(self) -> constraints.Constraint:
        """The integers 0..L-1 it dequantizes."""
        return constraints.integer_interval(0, self.num_levels - 1)

    def posterior(self, k: torch.Tensor) -> LogitNormal:
        """q(u | k)."""
        return self.dequantizer(data_batch(k, self.event_shape, "q(u|k)"))

    def log_joint(self, k: torch.Tensor, u: torch.Tensor, prior: Distribution | None = None) -> JointTerms:
        """log p((k + u) / L) - D log L for k (B, *event) and u of shape (*sample, B, *event), and 0 for
        the noise's own term (its density is inside the flow's): (*sample, B) each."""
        k = data_batch(k, self.event_shape, "log_joint's k")
        lead = u.shape[: u.dim() - len(self.event_shape)]
        if u.dim() <= len(self.event_shape) or u.shape[len(lead) :] != k.shape[1:] or lead[-1] != len(k):
            # (else the flow's words about data of a shape never given: u (B, *event) was read as n = B draws)
            raise ValueError(
                f"log_joint takes noise u of shape (*sample, {len(k)}, *{self.event_shape}) for {len(k)} datapoints k, "
                f"got u of shape {tuple(u.shape)}"
            )
        y = (k.to(u.dtype) + u) / self.num_levels
        log_p = self.flow.log_prob(y.reshape(-1, *self.event_shape)).view(lead)
        log_p = log_p - self.flow.num_dims * math.log(self.num_levels)
        return JointTerms(log_p, torch.zeros_like(log_p))

    sample_kind = "float"

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` images of levels: the flow's draws y floored to the level they fall in; the flow's
        density outside [0, 1] (its logit margin puts a little there) goes to the nearest level, 0
        or L - 1, as the .npy samples of a uniformly dequantized flow do (not renormalised)."""
        y, _ = self.flow.sample(n, generator, temperature)
        k = (y * self.num_levels).floor().clamp(0, self.num_levels - 1)
        return k, k
