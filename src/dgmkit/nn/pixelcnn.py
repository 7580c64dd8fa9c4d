r"""Gated PixelCNN layers (van den Oord et al. 2016, arXiv 1606.05328) without a blind spot.

Two stacks. The vertical stack v at row r sees only rows strictly above r; the horizontal
stack h at (r, c) sees the pixels of row r strictly left of c and, through v, every row
above. The first layer (mask A) excludes the current pixel; later layers (mask B) include
their input's current position, which by induction holds only earlier pixels. Convolutions are
"shifted" rather than masked, so no weight is wasted on zeros:

    vertical:   kernel (k//2 + 1) x k on rows r - k//2 .. r (first layer: then shifted down)
    horizontal: kernel 1 x (k//2 + 1) on columns c - k//2 .. c (first layer: shifted right)

Each layer has the gated activation tanh(a) * sigmoid(b); v feeds h through a 1x1 convolution;
h has residual connections.
"""

from collections.abc import Iterable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GatedPixelCNNLayer", "GatedPixelCNNNet", "down_shift", "right_shift"]


def down_shift(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (1, 0))[..., :-1]


def _gate(a: torch.Tensor) -> torch.Tensor:
    t, s = a.chunk(2, dim=1)
    return torch.tanh(t) * torch.sigmoid(s)


class GatedPixelCNNLayer(nn.Module):
    def __init__(self, in_channels: int, channels: int, kernel: int, first: bool):
        super().__init__()
        if kernel % 2 == 0 or kernel < 3:
            raise ValueError(f"kernel must be odd and >= 3, got {kernel}")
        self.k, self.first = kernel // 2, first
        self.v_conv = nn.Conv2d(in_channels, 2 * channels, (self.k + 1, kernel))
        self.h_conv = nn.Conv2d(in_channels, 2 * channels, (1, self.k + 1))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)

    def vertical(self, v: torch.Tensor) -> torch.Tensor:
        """Pre-activation of the vertical stack (B, 2p, H, W) from the layer input."""
        a = self.v_conv(F.pad(v, (self.k, self.k, self.k, 0)))
        return down_shift(a) if self.first else a

    def horizontal(self, h: torch.Tensor, v_pre: torch.Tensor) -> torch.Tensor:
        """The layer's h output from its h input and this layer's vertical pre-activation;
        works on any run of whole rows (or a row cropped at its right end)."""
        a = self.h_conv(F.pad(h, (self.k, 0, 0, 0)))
        if self.first:
            a = right_shift(a)
        out = self.h_out(_gate(a + self.v_to_h(v_pre)))
        return out if self.first else h + out

    def horizontal_at(self, window: torch.Tensor, h_here: torch.Tensor | None, v_col: torch.Tensor, c: int) -> torch.Tensor:
        """The layer's h output at one column c, (B, p, 1, 1), from the k + 1 input columns that
        end at c (first layer: at c - 1), left-padded with zeros, and v's pre-activation at c.
        Equal to ``horizontal(...)[..., c]`` at a cost independent of the width."""
        if self.first and c == 0:  # the right shift puts zero pre-activation at column 0
            a = torch.zeros_like(v_col)
        else:
            a = self.h_conv(window)
        out = self.h_out(_gate(a + self.v_to_h(v_col)))
        return out if self.first else h_here + out


class GatedPixelCNNNet(nn.Module):
    """x (B, C, H, W) -> per-pixel outputs (B, out_channels, H, W), autoregressive in raster order."""

    def __init__(self, in_channels: int, out_channels: int, channels: int = 64, layers: int = 6, kernel: int = 3):
        super().__init__()
        self.layers = nn.ModuleList(
            GatedPixelCNNLayer(in_channels if i == 0 else channels, channels, kernel, first=i == 0) for i in range(layers)
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, out_channels, 1)
        )

    def vertical_stack(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's vertical pre-activation; row r depends on rows < r of x only."""
        out, v = [], x
        for layer in cast("Iterable[GatedPixelCNNLayer]", self.layers):
            a = layer.vertical(v)
            out.append(a)
            v = _gate(a)
        return out

    def horizontal_stack(self, x: torch.Tensor, v_pre: list[torch.Tensor]) -> torch.Tensor:
        h = x
        for layer, a in zip(cast("Iterable[GatedPixelCNNLayer]", self.layers), v_pre):
            h = layer.horizontal(h, a)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.horizontal_stack(x, self.vertical_stack(x)))

    def horizontal_column(self, rows: list[torch.Tensor], v_pre: list[torch.Tensor], c: int) -> torch.Tensor:
        """The head's output at column c of one row, (B, out), computing each layer at c only.

        ``rows[0]`` is the input row (B, C, 1, W) with columns < c set; ``rows[l]`` (l >= 1)
        holds layer l's h outputs at earlier columns, and this call writes column c of each."""
        for i, (layer, a) in enumerate(zip(cast("Iterable[GatedPixelCNNLayer]", self.layers), v_pre)):
            k = layer.k
            end = c if layer.first else c + 1  # exclusive end of the window
            src = rows[i]
            window = src[..., max(0, end - k - 1) : end]
            if window.shape[-1] < k + 1:
                window = F.pad(window, (k + 1 - window.shape[-1], 0))
            h_here = None if layer.first else src[..., c : c + 1]
            rows[i + 1][..., c : c + 1] = layer.horizontal_at(window, h_here, a[..., c : c + 1], c)
        return self.head(rows[-1][..., c : c + 1]).flatten(1)
