r"""Coupling layers (Dinh et al. 2015 NICE, arXiv 1410.8516; 2017 RealNVP, arXiv 1605.08803).

A binary mask b splits x into a part that passes unchanged and a part transformed
conditionally on it:

    additive:  z = b x + (1 - b) (x + t(b x))                         log|det J| = 0
    affine:    z = b x + (1 - b) (x exp(s(b x)) + t(b x))              log|det J| = sum (1 - b) s

The log-scale is bounded softly, s = bound * tanh(raw / bound): an unbounded exp(s) is the
usual source of overflow and NaN in these models. The conditioner's last layer starts at zero,
so every coupling starts as the identity.
"""

import torch
from torch import nn

from dgmkit.transforms.base import Bijection, sum_except_batch

__all__ = ["AdditiveCoupling", "AffineCoupling", "alternating_mask", "checkerboard_mask", "channel_mask", "soft_clamp"]


def soft_clamp(raw: torch.Tensor, bound: float) -> torch.Tensor:
    return bound * torch.tanh(raw / bound)


def alternating_mask(features: int, parity: int = 0) -> torch.Tensor:
    """(D,) mask 1, 0, 1, ... (or 0, 1, 0, ... with parity 1)."""
    return ((torch.arange(features) + parity) % 2 == 0).float()


def checkerboard_mask(height: int, width: int, parity: int = 0) -> torch.Tensor:
    """(1, H, W) checkerboard mask of an image (RealNVP's spatial partition)."""
    i, j = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return ((i + j + parity) % 2 == 0).float().unsqueeze(0)


def channel_mask(channels: int, parity: int = 0) -> torch.Tensor:
    """(C, 1, 1) mask of the first (parity 0) or second half of the channels."""
    first = (torch.arange(channels) < channels // 2).float()
    return (first if parity == 0 else 1 - first).view(-1, 1, 1)


class _Coupling(Bijection):
    """``net`` maps (b * x) (and the context, for vector conditioners) to the transform's
    parameters: ``n_params`` tensors of x's shape stacked along dim 1."""

    n_params: int

    def __init__(self, mask: torch.Tensor, net: nn.Module, context_features: int = 0):
        super().__init__()
        self.register_buffer("mask", mask.float())
        self.net = net
        self.context_features = context_features

    def _params(self, x: torch.Tensor, context: torch.Tensor | None) -> list[torch.Tensor]:
        h = x * self.mask
        if self.context_features:
            if context is None:
                raise ValueError("this coupling layer is conditional: pass a context")
            h = torch.cat([h, context], dim=-1)
        out = self.net(h)
        if x.dim() == 2:  # vector: (B, P * D)
            return list(out.unflatten(-1, (self.n_params, x.shape[-1])).unbind(1))
        return list(out.chunk(self.n_params, dim=1))  # image: (B, P * C, H, W)


class AdditiveCoupling(_Coupling):
    n_params = 1

    def forward(self, x, context=None):
        (t,) = self._params(x, context)
        return x + (1 - self.mask) * t, x.new_zeros(x.shape[0])

    def inverse(self, z, context=None):
        (t,) = self._params(z, context)  # b * z = b * x
        return z - (1 - self.mask) * t, z.new_zeros(z.shape[0])


class AffineCoupling(_Coupling):
    n_params = 2

    def __init__(self, mask: torch.Tensor, net: nn.Module, context_features: int = 0, scale_bound: float = 3.0):
        super().__init__(mask, net, context_features)
        self.scale_bound = scale_bound

    def _scale_shift(self, x, context):
        raw, t = self._params(x, context)
        keep = 1 - self.mask
        return soft_clamp(raw, self.scale_bound) * keep, t * keep

    def forward(self, x, context=None):
        s, t = self._scale_shift(x, context)
        return x * s.exp() + t, sum_except_batch(s)

    def inverse(self, z, context=None):
        s, t = self._scale_shift(z, context)
        return (z - t) * (-s).exp(), -sum_except_batch(s)
