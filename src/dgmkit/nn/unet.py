"""A small U-Net denoiser for diffusion models (Ho et al. 2020; Kingma et al. 2021's VDM).

Residual blocks (GroupNorm, SiLU, 3x3 convolutions) conditioned on a scalar noise level
through a sinusoidal embedding, self-attention at the lowest resolution and in the middle,
downsampling by strided convolution while the image sides are even, and skip connections from
every block of the way down to the way up. Optional Fourier features of the input (VDM,
appendix C): sin and cos of 2^n 2 pi x for the given exponents n, which let the network see the
fine detail of a low-noise input. The output's last convolution starts at zero.
"""

import math
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from dgmkit.nn.resnet import zero_init

__all__ = ["UNet", "timestep_embedding", "fourier_features"]


def timestep_embedding(s: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal features (B, dim) of scalars s (B,) in about [0, 1000] (Transformer positions)."""
    half = dim // 2
    dtype = s.dtype if s.is_floating_point() else torch.float32
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=s.device, dtype=dtype) / half)
    args = s.to(dtype)[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, dim - 2 * half))


def fourier_features(x: torch.Tensor, exponents: list[int] | torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W) with sin(2^n 2 pi x) and cos(2^n 2 pi x) for each n appended as channels;
    ``exponents`` a list, or integers already on x's device (a list is copied there, in every
    call: the UNet keeps its own as a buffer)."""
    if len(exponents) == 0:
        return x
    n = torch.as_tensor(exponents, device=x.device)
    w = (2.0 ** n.to(x.dtype)) * (2 * math.pi)
    h = (x.unsqueeze(2) * w.view(1, 1, -1, 1, 1)).flatten(1, 2)
    return torch.cat([x, torch.sin(h), torch.cos(h)], dim=1)


class _GroupNorm(nn.GroupNorm):
    """GroupNorm that takes a batch of one image whose groups hold a single value each (one
    channel per group at a 1x1 resolution: a 1x1 image, or a side halved down to 1), which
    PyTorch refuses as too few values to normalise. Such a value normalises to 0 whatever it is,
    so the output is the bias, as PyTorch computes it for a batch of two or more up to rounding
    (its kernel's x * s + (b - mean * s) is not exactly b): one image is scored as it is in a
    larger batch. Any other batch is PyTorch's own, to the bit (the numbers of existing runs)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if input.dim() > 1 and input.shape[0] == 1 and input[0].numel() == self.num_groups:  # (what PyTorch refuses)
            out = torch.zeros_like(input)  # (x - mean) / sd of a single value
            if self.affine:
                shape = (1, -1) + (1,) * (input.dim() - 2)
                out = out * self.weight.view(shape) + self.bias.view(shape)
            return out
        return super().forward(input)


def _norm(channels: int) -> nn.GroupNorm:
    groups = math.gcd(channels, 8)
    return _GroupNorm(groups, channels)


class ResBlock(nn.Module):
    """GroupNorm, SiLU, conv3x3, + the embedding's projection, GroupNorm, SiLU, dropout,
    zero-initialised conv3x3; a 1x1 convolution on the skip path where the channels change."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = _norm(c_out), zero_init(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over the pixels, with a residual connection."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=2)  # (B, HW, C) each
        a = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(a.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """A U-Net from (B, C, H, W) images and noise levels s (B,) (in about [0, 1000]) to
    (B, out_channels, H, W).

    ``channels``: the width at each resolution, the first at full size; the image halves
    between consecutive entries while both sides are even (else the resolution stays).
    ``blocks``: residual blocks per resolution on the way down (one more on the way up).
    ``attention``: self-attention after the blocks of the lowest resolution and in the middle.

    >>> UNet(1, 1, [8, 16], blocks=1)(torch.zeros(2, 1, 28, 28), torch.zeros(2)).shape
    torch.Size([2, 1, 28, 28])
    """

    _fourier_exponents: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: list[int],
        blocks: int = 1,
        attention: bool = True,
        dropout: float = 0.0,
        fourier: list[int] | None = None,
        image_size: tuple[int, int] | None = None,
    ):
        super().__init__()
        if not channels or min(channels) < 1:
            raise ValueError(f"the U-Net needs at least one positive width, got {channels}")
        if blocks < 1:
            raise ValueError(f"the U-Net needs at least one block per resolution, got {blocks}")
        self.fourier = list(fourier or [])
        # the exponents where the data are (integers: a change of the model's dtype leaves them), not copied each step
        self.register_buffer("_fourier_exponents", torch.tensor(self.fourier, dtype=torch.long), persistent=False)
        c0 = channels[0]
        self._tdim = max(32, c0)  # sinusoidal features of the noise level: enough frequencies whatever the width
        self.emb_dim = 4 * self._tdim
        self.embed = nn.Sequential(nn.Linear(self._tdim, self.emb_dim), nn.SiLU(), nn.Linear(self.emb_dim, self.emb_dim))
        self.stem = nn.Conv2d(in_channels * (1 + 2 * len(self.fourier)), c0, 3, padding=1)
        c, skips = self._build_down(c0, channels, blocks, attention, dropout, image_size)
        self.mid1 = ResBlock(c, c, self.emb_dim, dropout)
        self.mid_attn = Attention(c) if attention else nn.Identity()
        self.mid2 = ResBlock(c, c, self.emb_dim, dropout)
        c = self._build_up(c, skips, channels, blocks, attention, dropout)
        self.head = nn.Sequential(_norm(c), nn.SiLU(), zero_init(nn.Conv2d(c, out_channels, 3, padding=1)))

    def _build_down(
        self,
        c0: int,
        channels: list[int],
        blocks: int,
        attention: bool,
        dropout: float,
        image_size: tuple[int, int] | None,
    ) -> tuple[int, list[int]]:
        """The contracting path: ``blocks`` residual blocks per width (attention at the last), a
        strided convolution between widths (unstrided where an odd side cannot halve). Returns
        its width and the widths of the skip connections, in the order they are made."""
        h, w = image_size if image_size is not None else (0, 0)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, c = [c0], c0
        self.halves: list[bool] = []
        for i, width in enumerate(channels):
            level = nn.ModuleList()
            for _ in range(blocks):
                level.append(ResBlock(c, width, self.emb_dim, dropout))
                c = width
                skips.append(c)
            if attention and i == len(channels) - 1:
                level.append(Attention(c))
            self.down.append(level)
            if i < len(channels) - 1:
                halve = image_size is None or (h % 2 == 0 and w % 2 == 0)
                self.halves.append(halve)
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2 if halve else 1, padding=1))
                if halve and image_size is not None:
                    h, w = h // 2, w // 2
                skips.append(c)
        return c, skips

    def _build_up(self, c: int, skips: list[int], channels: list[int], blocks: int, attention: bool, dropout: float) -> int:
        """The expanding path: ``blocks`` + 1 residual blocks per width, each taking one skip
        connection (popped from ``skips``), a convolution after each upsampling. Returns its width."""
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, width in reversed(list(enumerate(channels))):
            level = nn.ModuleList()
            for _ in range(blocks + 1):
                level.append(ResBlock(c + skips.pop(), width, self.emb_dim, dropout))
                c = width
            if attention and i == len(channels) - 1:
                level.append(Attention(c))
            self.up.append(level)
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        return c

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        # (in the weights' dtype: integer levels, embedded in float32, or float32 ones failed in a float64 model)
        emb = self.embed(timestep_embedding(s.to(self.stem.weight.dtype), self._tdim))
        h = self.stem(fourier_features(x, self._fourier_exponents))
        hs = [h]
        for i, level in enumerate(self.down):
            for layer in cast(nn.ModuleList, level):
                h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
                if isinstance(layer, ResBlock):
                    hs.append(h)
            if i < len(self.downsample):
                if self.halves[i] and (h.shape[-1] % 2 or h.shape[-2] % 2):
                    raise ValueError(f"the U-Net was built for sides that halve; got an image of {tuple(x.shape[-2:])}")
                h = self.downsample[i](h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for j, level in enumerate(self.up):
            for layer in cast(nn.ModuleList, level):
                if isinstance(layer, ResBlock):
                    h = layer(torch.cat([h, hs.pop()], dim=1), emb)
                else:
                    h = layer(h)
            if j < len(self.upsample):
                target = hs[-1].shape[-2:]
                if h.shape[-2:] != target:
                    h = F.interpolate(h, size=target, mode="nearest")
                h = self.upsample[j](h)
        return self.head(h)
