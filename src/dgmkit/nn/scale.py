"""A Gaussian's standard deviation from an unconstrained network output: sigma = g(raw).

- ``SoftplusScale``: sigma = softplus(raw) + ``min_scale``; smooth, unbounded above, floored.
- ``ClippedLogVariance``: log sigma^2 = clamp(raw, ``low``, ``high``), sigma = exp(clamp(raw) / 2); the
  VampPrior reference code's parametrisation (Tomczak & Welling 2018: a hardtanh to [-6, 2] on
  the log-variance, so 0.050 <= sigma <= 2.72). The gradient is zero where the clamp holds.

Both are modules without parameters, so a model's state dict does not depend on which it uses.
"""

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SoftplusScale", "ClippedLogVariance", "ScaleKind", "scale_map", "inverse_softplus"]

ScaleKind = Literal["softplus", "clipped-log-variance"]


def inverse_softplus(y: float) -> float:
    """The raw x with softplus(x) = y > 0: log(e^y - 1), written y + log(1 - e^-y), which holds for
    every finite y (log(expm1(y)) overflowed from y ~ 710: an initial scale of 1000 raised
    OverflowError).

    >>> round(inverse_softplus(1000.0), 6), round(inverse_softplus(math.log(2.0)), 12)
    (1000.0, 0.0)
    """
    return y + math.log(-math.expm1(-y))


class SoftplusScale(nn.Module):
    """sigma = softplus(raw) + ``min_scale``."""

    def __init__(self, min_scale: float = 1e-3):
        super().__init__()
        if not (math.isfinite(min_scale) and min_scale > 0):
            raise ValueError(f"min_scale must be a positive number, got {min_scale!r}")
        self.min_scale = float(min_scale)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return F.softplus(raw) + self.min_scale

    def extra_repr(self) -> str:
        return f"min_scale={self.min_scale:g}"


class ClippedLogVariance(nn.Module):
    """sigma = exp(clamp(raw, ``low``, ``high``) / 2): raw is the log-variance, clipped."""

    def __init__(self, low: float = -6.0, high: float = 2.0):
        super().__init__()
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"need finite bounds low < high on the log-variance, got {low!r}, {high!r}")
        self.low, self.high = float(low), float(high)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.exp(0.5 * raw.clamp(self.low, self.high))

    def extra_repr(self) -> str:
        return f"low={self.low:g}, high={self.high:g}"


def scale_map(kind: ScaleKind, min_scale: float = 1e-3) -> nn.Module:
    """The map of a setting's name: ``softplus`` (floored at ``min_scale``) or
    ``clipped-log-variance`` (the reference code's [-6, 2])."""
    if kind == "softplus":
        return SoftplusScale(min_scale)
    if kind == "clipped-log-variance":
        return ClippedLogVariance()
    raise ValueError(f"unknown scale parametrisation {kind!r}: softplus or clipped-log-variance")
