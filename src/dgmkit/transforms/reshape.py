"""Squeeze and the multi-scale architecture (Dinh et al. 2017, arXiv 1605.08803)."""

import itertools
import math
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn
from torch.distributions import constraints

from dgmkit.transforms.base import Bijection, check_event_shape

__all__ = ["Squeeze", "MultiScale"]


class Squeeze(Bijection):
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 block of pixels becomes 4 channels."""

    @staticmethod
    def _images(x: torch.Tensor, what: str) -> None:
        if x.dim() != 4:  # (else "not enough values to unpack (expected 4, got 3)")
            raise ValueError(f"squeeze takes {what} (B, C, H, W), got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self._images(x, "images")
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"squeeze needs even height and width, got {h}x{w}")
        z = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)
        return z, x.new_zeros(b)

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self._images(z, "squeezed images")
        b, c4, h, w = z.shape
        if c4 % 4:  # (else torch's "shape '[2, 1, 2, 2, 2, 2]' is invalid for input of size 48")
            raise ValueError(f"squeeze's inverse needs a number of channels divisible by 4, got {c4}")
        x = z.view(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, 2 * h, 2 * w)
        return x, z.new_zeros(b)


class MultiScale(Bijection):
    """Levels of bijections on (B, C, H, W); after each level but the last, half the channels
    are factored out: they go straight to the base distribution and later levels see the rest.
    The output is the (B, D) concatenation of the factored parts and the last level's output.

    ``event_shape`` (C, H, W) of the input fixes the shapes of the parts (found by one pass
    of a zero image through the levels in eval mode, so ActNorm is not initialised by it)."""

    def __init__(self, levels: Sequence[Bijection], event_shape: tuple[int, int, int]):
        super().__init__()
        self.levels = nn.ModuleList(levels)
        self.event_shape = tuple(event_shape)
        self.shapes = self._part_shapes()  # per level: (factored-out shape or None, shape seen by the next)

    @torch.no_grad()
    def _part_shapes(self) -> list[tuple[int, ...]]:
        modes = [m.training for m in self.modules()]
        self.eval()
        try:
            dtype = next((p.dtype for p in self.parameters()), torch.get_default_dtype())
            device = next((t.device for t in itertools.chain(self.parameters(), self.buffers())), None)
            h, shapes = torch.zeros(1, *self.event_shape, dtype=dtype, device=device), []  # (levels built on a GPU)
            for i, level in enumerate(self.levels):
                h, _ = level(h)
                if i < len(self.levels) - 1:
                    c = h.shape[1] // 2
                    shapes.append(tuple(h[:, :c].shape[1:]))
                    h = h[:, c:]
            shapes.append(tuple(h.shape[1:]))
        finally:
            for m, mode in zip(self.modules(), modes):
                m.training = mode
        return shapes

    @property
    def domain(self) -> constraints.Constraint | None:
        """The first level's: the data meet it first (a logit there keeps its [0, 1], which integers
        given to the flow are refused by name against, not scored as NaN)."""
        return cast(Bijection, self.levels[0]).domain if len(self.levels) else None

    def passes(self, inverse: bool = False) -> int:
        return sum(cast(Bijection, level).passes(inverse) for level in self.levels)

    def _check(self, t: torch.Tensor, event: tuple[int, ...], what: str) -> None:
        """Refuses ``t`` not of shape (B, *event): its levels met it in torch's words (a conv's channels, a
        mask's size), and an inverse's z of another width in split_with_sizes'."""
        check_event_shape(f"this MultiScale flow of images {self.event_shape}", t, event, what)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(x, self.event_shape, "images x")
        parts, ladj = [], x.new_zeros(x.shape[0])
        h = x
        for i, level in enumerate(self.levels):
            h, level_ladj = level(h, context)
            ladj = ladj + level_ladj
            if i < len(self.levels) - 1:
                c = h.shape[1] // 2
                parts.append(h[:, :c].flatten(1))
                h = h[:, c:]
        parts.append(h.flatten(1))
        return torch.cat(parts, 1), ladj

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        sizes = [math.prod(s) for s in self.shapes]
        self._check(z, (sum(sizes),), "base variables z")
        parts = [p.reshape(z.shape[0], *s) for p, s in zip(z.split(sizes, dim=1), self.shapes)]
        ladj = z.new_zeros(z.shape[0])
        h = parts[-1]
        for i in range(len(self.levels) - 1, -1, -1):
            if i < len(self.levels) - 1:
                h = torch.cat([parts[i], h], 1)
            h, level_ladj = cast(Bijection, self.levels[i]).inverse(h, context)
            ladj = ladj + level_ladj
        return h, ladj
