r"""Causal 1-D convolutions for an autoregressive model of a sequence (WaveNet-style,
van den Oord et al. 2016, arXiv 1609.03499).

The first layer excludes the current position (its output at t sees x_{t-k} .. x_{t-1});
later layers are causal with dilations 1, 2, 4, ... and include it. The receptive field,
and so the model's memory, is ``receptive_field`` positions: finite, growing with depth and
dilation (k = 3 and 8 layers, dilations 1, 1, 2, ..., 64, see the previous 257 positions).
"""

from collections.abc import Iterable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from dgmkit.errors import sizes_at_least

__all__ = ["CausalConvNet"]


class CausalConvNet(nn.Module):
    """x (B, C, T) -> (B, out_channels, T) with output t depending on x_{<t} only."""

    def __init__(self, in_channels: int, out_channels: int, channels: int = 64, layers: int = 6, kernel: int = 3):
        super().__init__()
        if kernel < 2:
            raise ValueError(f"kernel must be >= 2, got {kernel}")
        # (layers = 0 or less built one layer, of [1] + [2**i for i in range(layers - 1)] dilations)
        sizes: dict[str, object] = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "channels": channels,
            "layers": layers,
        }
        sizes_at_least("CausalConvNet", sizes)
        self.kernel = kernel
        self.dilations = [1] + [2**i for i in range(layers - 1)]
        self.convs = nn.ModuleList(
            nn.Conv1d(in_channels if i == 0 else channels, 2 * channels, kernel, dilation=d)
            for i, d in enumerate(self.dilations)
        )
        self.mix = nn.ModuleList(nn.Conv1d(channels, channels, 1) for _ in self.dilations)
        self.head = nn.Sequential(nn.ReLU(), nn.Conv1d(channels, out_channels, 1))

    @property
    def receptive_field(self) -> int:
        """How many previous positions output t can see."""
        return sum((self.kernel - 1) * d for d in self.dilations) + 1

    def _layer(self, i: int, a: torch.Tensor, h_in: torch.Tensor | None) -> torch.Tensor:
        t, s = a.chunk(2, dim=1)
        out = self.mix[i](torch.tanh(t) * torch.sigmoid(s))
        return out if h_in is None else h_in + out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h: torch.Tensor | None = None
        for i, (conv, d) in enumerate(zip(self.convs, self.dilations)):
            if i == 0:  # shift right by one: position t sees x_{t-k} .. x_{t-1}
                a = conv(F.pad(x, ((self.kernel - 1) * d + 1, -1)))
            else:
                assert h is not None  # set by the layer before
                a = self._dilated(cast(nn.Conv1d, conv), h, d)
            h = self._layer(i, a, None if i == 0 else h)
        return self.head(h)

    def _dilated(self, conv: nn.Conv1d, h: torch.Tensor, d: int) -> torch.Tensor:
        """The causal convolution of dilation d, without the taps that reach back past the sequence's
        start at every position (they read padding alone): the same outputs, where 40 layers' dilation
        of 2**38 padded the sequence with 2**39 zeros (torch: can't allocate memory)."""
        m = min(self.kernel, (h.shape[-1] - 1) // d + 1)  # the last m taps (offsets (m-1) d .. 0) can reach x
        return F.conv1d(F.pad(h, ((m - 1) * d, 0)), conv.weight[..., self.kernel - m :], conv.bias, dilation=d)

    def step(self, cache: list[torch.Tensor], x: torch.Tensor, t: int) -> torch.Tensor:
        """Output at position t alone, (B, out_channels), from x (B, C, T) (positions < t set)
        and ``cache``: per layer, the (B, channels, T) outputs computed at earlier steps, which
        this call fills in at t. Costs O(layers * kernel), not a pass over the sequence."""
        h: torch.Tensor | None = None
        for i, (conv, d) in enumerate(zip(cast("Iterable[nn.Conv1d]", self.convs), self.dilations)):
            src = x if i == 0 else cache[i - 1]
            shift = 1 if i == 0 else 0
            idx = [t - shift - (self.kernel - 1 - j) * d for j in range(self.kernel)]
            cols = torch.stack([src[:, :, j] if j >= 0 else torch.zeros_like(src[:, :, 0]) for j in idx], -1)
            a = F.conv1d(cols, conv.weight, conv.bias).squeeze(-1)  # (B, 2p)
            h = self._layer_vec(i, a, None if i == 0 else cache[i - 1][:, :, t])
            cache[i][:, :, t] = h
        assert h is not None  # there is at least one layer
        return self.head(h.unsqueeze(-1)).squeeze(-1)

    def _layer_vec(self, i: int, a: torch.Tensor, h_in: torch.Tensor | None) -> torch.Tensor:
        return self._layer(i, a.unsqueeze(-1), None if h_in is None else h_in.unsqueeze(-1)).squeeze(-1)
