"""ActNorm (Kingma & Dhariwal 2018, Glow, arXiv 1807.03039)."""

import math

import torch
from torch import nn

from dgmkit.errors import ConfigError, whole_at_least
from dgmkit.nn.data_init import DataInitialised
from dgmkit.transforms.base import Bijection, check_width

__all__ = ["ActNorm"]


class ActNorm(DataInitialised, Bijection):
    """z = (x - bias) * exp(log_scale), one bias and scale per channel (dim 1).

    Data-dependent initialisation: the first forward pass in training mode sets them so that
    that batch has zero mean and unit variance per channel. ``initialized`` is saved with the
    weights, so a loaded model is not initialised again (``DataInitialised``: read by the host
    until it is seen set).
    """

    def __init__(self, channels: int):
        super().__init__()
        whole_at_least("channels", channels, 1)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self._register_initialized(False)

    def _view(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return t.view(1, -1, *[1] * (x.dim() - 2))

    def _spatial(self, x: torch.Tensor) -> int:
        return math.prod(x.shape[2:])

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        flat = x.transpose(0, 1).reshape(x.shape[1], -1)  # (C, B * H * W)
        if flat.shape[1] < 2:  # (a scale of 1 / 1e-6 from a spread of 0 sent every other point to -1e12)
            raise ConfigError(
                f"ActNorm (Glow) sets its scale from the spread of its first training batch, and a batch of {len(x)} "
                f"holds {flat.shape[1]} value(s) a channel: train with batches of at least 2 datapoints (--batch-size)"
            )
        self.bias.copy_(flat.mean(1))
        self.log_scale.copy_(-torch.log(flat.std(1, unbiased=False).clamp_min(1e-6)))
        self._mark_initialized()

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_width(self, x, len(self.bias))  # (x of 1 channel broadcast into 3: z (B, 3, H, W), its ladj 3 times)
        if self.training and self.needs_initialising():
            self.initialize(x)
        z = (x - self._view(self.bias, x)) * self._view(self.log_scale.exp(), x)
        return z, (self.log_scale.sum() * self._spatial(x)).expand(x.shape[0])

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_width(self, z, len(self.bias))
        x = z * self._view((-self.log_scale).exp(), z) + self._view(self.bias, z)
        return x, (-self.log_scale.sum() * self._spatial(z)).expand(z.shape[0])
