"""Convolutional encoder and decoder stacks for small square images.

The encoder halves the resolution with strided 3x3 convolutions until the feature map is
small, then maps to a vector; the decoder mirrors it with transposed convolutions. Both work
for 28x28 (28 -> 14 -> 7) and 8x8 (8 -> 4 -> 2) images, and any size divisible by 4.
"""

from collections.abc import Iterable, Sequence
from typing import cast

import torch
from torch import nn

from dgmkit.errors import plural, sizes_at_least
from dgmkit.nn.mlp import activation

__all__ = ["he_init", "ConvEncoderNet", "ConvDecoderNet", "ResidualStack", "DownsamplingEncoder", "UpsamplingDecoder"]


def he_init(layers: Iterable[nn.Module], zero_bias: bool = True) -> None:
    """He initialisation (zero-mean normal, variance 2 / fan-in, zero bias) for layers followed by
    a ReLU-like activation, so that a signal keeps its scale through the stack. PyTorch's default
    (variance 1 / (3 fan-in)) shrinks it at every layer by about 1/sqrt(6), and through a
    transposed convolution, whose fan-in it takes from the wrong weight axis, by far more: at that
    default a conv decoder's output on the 8x8 digits moved 30 times less with z than an MLP
    decoder's, and the posterior collapsed before the networks learned to use z. The fan-in of a
    transposed convolution is its input channels times the kernel taps that reach each output
    pixel (k^2 / stride^2). ``zero_bias=False`` keeps the biases as they are (the VampPrior reference code's way)."""
    for m in layers:
        if isinstance(m, nn.ConvTranspose2d):
            c_in, _, kh, kw = m.weight.shape
            fan_in = c_in * kh * kw / (m.stride[0] * m.stride[1])
        elif isinstance(m, nn.Conv2d | nn.Linear):
            fan_in = m.weight[0].numel()
        else:
            continue
        nn.init.normal_(m.weight, 0.0, (2.0 / fan_in) ** 0.5)
        if zero_bias and m.bias is not None:
            nn.init.zeros_(m.bias)


def _quarter(event_shape: Sequence[int]) -> tuple[int, int, int]:
    """(C, H/4, W/4) of images (C, H, W): the channels, and the grid after two stride-2 stages."""
    if len(event_shape) != 3 or min(event_shape) < 1:  # (a side of 0 failed in he_init: "float division by zero")
        raise ValueError(f"conv networks take images (C, H, W) of positive sizes, got {tuple(event_shape)}")
    c, h, w = event_shape
    if h % 4 or w % 4:
        raise ValueError(f"conv networks need height and width divisible by 4, got {h}x{w}")
    return c, h // 4, w // 4


def _two_channels(owner: str, channels: Sequence[int]) -> tuple[int, int]:
    """The channels of the two stride-2 stages, each a whole number >= 1."""
    pair = tuple(channels)
    if len(pair) != 2:
        raise ValueError(f"{owner} takes the channels of its two stages, got {list(pair)}")
    sizes_at_least(owner, {"channels[0]": pair[0], "channels[1]": pair[1]})
    return pair[0], pair[1]


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
        c, h4, w4 = _quarter(event_shape)
        c1, c2 = _two_channels("ConvEncoderNet", channels)
        sizes_at_least("ConvEncoderNet", {"out_features": out_features, "hidden": hidden})
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, 3, stride=2, padding=1),  # H/2
            activation(act),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),  # H/4
            activation(act),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(c2 * h4 * w4, hidden), activation(act), nn.Linear(hidden, out_features))
        he_init([*self.features, self.head[0]])  # the output layer keeps PyTorch's smaller default

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
        _, h4, w4 = _quarter(event_shape)
        c2, c1 = _two_channels("ConvDecoderNet", channels)
        sizes_at_least("ConvDecoderNet", {"in_features": in_features, "out_channels": out_channels, "hidden": hidden})
        self._grid = (c2, h4, w4)
        self.head = nn.Sequential(
            nn.Linear(in_features, hidden), activation(act), nn.Linear(hidden, c2 * h4 * w4), activation(act)
        )
        self.up = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),  # H/2
            activation(act),
            nn.ConvTranspose2d(c1, c1, 4, stride=2, padding=1),  # H
            activation(act),
            nn.Conv2d(c1, out_channels, 3, padding=1),
        )
        he_init([*self.head, *cast(nn.Sequential, self.up[:-1])])  # the output layer keeps PyTorch's smaller default

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]
        h = self.head(z.reshape(-1, z.shape[-1])).view(-1, *self._grid)
        out = self.up(h)
        return out.view(*batch, *out.shape[1:])


class ResidualStack(nn.Module):
    """``blocks`` residual blocks x + conv1x1(relu(conv3x3(relu(x)))) at constant width, then a
    ReLU (the VQ-VAE's, van den Oord et al. 2017).

    >>> ResidualStack(8, 4, 2)(torch.zeros(1, 8, 5, 5)).shape
    torch.Size([1, 8, 5, 5])
    """

    def __init__(self, channels: int, hidden: int, blocks: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, channels, 1))
            for _ in range(blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return torch.relu(x)


class DownsamplingEncoder(nn.Module):
    """(B, C, H, W) -> (B, out_channels, H / 2^d, W / 2^d): ``downsample`` stride-2 4x4
    convolutions, a 3x3 convolution, a residual stack and a 1x1 projection (the VQ-VAE encoder).

    >>> DownsamplingEncoder(1, 16, 32, 2)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 16, 7, 7])
    """

    def __init__(self, in_channels: int, out_channels: int, width: int, downsample: int, res_blocks: int = 2):
        super().__init__()
        if downsample < 1:
            raise ValueError(f"need at least one halving, got {downsample}")
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(downsample):
            layers += [nn.Conv2d(c, width, 4, stride=2, padding=1), nn.ReLU()]
            c = width
        layers += [nn.Conv2d(width, width, 3, padding=1), ResidualStack(width, max(1, width // 4), res_blocks)]
        layers.append(nn.Conv2d(width, out_channels, 1))
        self.net = nn.Sequential(*layers)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (else an odd side was floored, 7 -> 3, which the mirroring decoder made 6; a side of 1 failed in torch's words)
        f = 2**self.downsample
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(
                f"a DownsamplingEncoder of {plural(self.downsample, 'halving')} needs height and width divisible by {f}, "
                f"got {x.shape[-2]}x{x.shape[-1]}"
            )
        return self.net(x)


class UpsamplingDecoder(nn.Module):
    """(B, in_channels, h, w) -> (B, out_channels, h 2^d, w 2^d), mirroring
    :class:`DownsamplingEncoder` with stride-2 4x4 transposed convolutions.

    >>> UpsamplingDecoder(16, 1, 32, 2)(torch.zeros(2, 16, 7, 7)).shape
    torch.Size([2, 1, 28, 28])
    """

    def __init__(self, in_channels: int, out_channels: int, width: int, upsample: int, res_blocks: int = 2):
        super().__init__()
        if upsample < 1:  # (0 gave ``width`` channels, not ``out_channels``)
            raise ValueError(f"need at least one doubling, got {upsample}")
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, width, 3, padding=1),
            ResidualStack(width, max(1, width // 4), res_blocks),
        ]
        for i in range(upsample):
            last = i == upsample - 1
            layers.append(nn.ConvTranspose2d(width, out_channels if last else width, 4, stride=2, padding=1))
            if not last:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
