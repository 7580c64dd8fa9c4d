"""Convolutional conditioner networks for coupling layers on images."""

from typing import cast

import torch
from torch import nn

from dgmkit.errors import sizes_at_least

__all__ = ["ConvConditioner", "zero_init"]


def zero_init(layer: nn.Module) -> nn.Module:
    """Zero weights and bias: a coupling layer that starts as the identity map."""
    nn.init.zeros_(cast(torch.Tensor, layer.weight))  # a layer with weights (Conv, Linear)
    if layer.bias is not None:
        nn.init.zeros_(cast(torch.Tensor, layer.bias))
    return layer


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class ConvConditioner(nn.Sequential):
    """conv3x3 -> residual blocks (ReLU, conv3x3, ReLU, conv1x1) -> ReLU -> zero-initialised
    conv3x3 (RealNVP used ResNets). Glow's network (openai/glow: conv3x3, ReLU, conv1x1, ReLU,
    zero conv3x3) has a hidden 1x1 layer that ``blocks = 0`` leaves out and one block replaces
    by a residual pair.

    >>> ConvConditioner(2, 8, hidden=16)(torch.zeros(1, 2, 6, 6)).shape
    torch.Size([1, 8, 6, 6])
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 64, blocks: int = 1):
        sizes_at_least("ConvConditioner", {"in_channels": in_channels, "out_channels": out_channels, "hidden": hidden})
        sizes_at_least("ConvConditioner", {"blocks": blocks}, low=0)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden, 3, padding=1)]
        layers += [_ResidualBlock(hidden) for _ in range(blocks)]
        layers += [nn.ReLU(), zero_init(nn.Conv2d(hidden, out_channels, 3, padding=1))]
        super().__init__(*layers)
