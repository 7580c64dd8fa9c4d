"""Convolutional encoder and decoder stacks for small square images.

The encoder halves the resolution with strided 3x3 convolutions until the feature map is
small, then maps to a vector; the decoder mirrors it with transposed convolutions. Both work
for 28x28 (28 -> 14 -> 7) and 8x8 (8 -> 4 -> 2) images, and any size divisible by 4.
"""

from collections.abc import Sequence

import torch
from torch import nn

from dgmkit.nn.mlp import activation

__all__ = ["ConvEncoderNet", "ConvDecoderNet"]


def _check_size(height: int, width: int) -> None:
    if height % 4 or width % 4:
        raise ValueError(f"conv networks need height and width divisible by 4, got {height}x{width}")


class ConvEncoderNet(nn.Module):
    """(B, C, H, W) -> (B, out_features) with two stride-2 stages.

    ``channels`` gives the width of the two stages; ``hidden`` the dense layer after them.

    >>> ConvEncoderNet((1, 28, 28), 64)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 64])
    """

    def __init__(
        self,
        event_shape: Sequence[int],
        out_features: int,
        channels: Sequence[int] = (32, 64),
        hidden: int = 256,
        act: str = "relu",
    ):
        super().__init__()
        c, h, w = event_shape
        _check_size(h, w)
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, 3, stride=2, padding=1),  # H/2
            activation(act),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),  # H/4
            activation(act),
            nn.Flatten(),
        )
        flat = c2 * (h // 4) * (w // 4)
        self.head = nn.Sequential(nn.Linear(flat, hidden), activation(act), nn.Linear(hidden, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ConvDecoderNet(nn.Module):
    """(B, in_features) -> (B, out_channels, H, W) mirroring :class:`ConvEncoderNet`.

    >>> ConvDecoderNet(16, (1, 8, 8), 1)(torch.zeros(2, 16)).shape
    torch.Size([2, 1, 8, 8])
    """

    def __init__(
        self,
        in_features: int,
        event_shape: Sequence[int],
        out_channels: int,
        channels: Sequence[int] = (64, 32),
        hidden: int = 256,
        act: str = "relu",
    ):
        super().__init__()
        _, h, w = event_shape
        _check_size(h, w)
        c2, c1 = channels
        self._grid = (c2, h // 4, w // 4)
        flat = c2 * (h // 4) * (w // 4)
        self.head = nn.Sequential(nn.Linear(in_features, hidden), activation(act), nn.Linear(hidden, flat), activation(act))
        self.up = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),  # H/2
            activation(act),
            nn.ConvTranspose2d(c1, c1, 4, stride=2, padding=1),  # H
            activation(act),
            nn.Conv2d(c1, out_channels, 3, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]
        h = self.head(z.reshape(-1, z.shape[-1])).view(-1, *self._grid)
        out = self.up(h)
        return out.view(*batch, *out.shape[1:])
