"""Two-dimensional densities for flows: two moons, rings, checkerboard, Gaussian mixture.

Generated, not downloaded: each split is drawn with its own fixed seed (20000 train, 5000
valid, 5000 test points), stored as (N, 1, 1, 2) float32 like any other continuous data. A run
recognises them by that definition (``Dataset.generator``), not by the bits of the floats. A
change to a generator that moves its points must change its version ("v1").
"""

import math

import torch

from dgmkit.data.dataset import Dataset, Split
from dgmkit.errors import DataError

__all__ = ["TOY_2D", "toy_2d"]


def _two_moons(n: int, g: torch.Generator) -> torch.Tensor:
    t = torch.rand(n, generator=g) * math.pi
    upper = torch.rand(n, generator=g) < 0.5
    x = torch.where(upper, torch.cos(t), 1 - torch.cos(t))
    y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
    pts = torch.stack([x - 0.5, y - 0.25], 1) * 2
    return pts + 0.1 * torch.randn(n, 2, generator=g)


def _rings(n: int, g: torch.Generator) -> torch.Tensor:
    radius = (torch.randint(1, 5, (n,), generator=g) * 0.75).float()
    angle = torch.rand(n, generator=g) * 2 * math.pi
    pts = torch.stack([torch.cos(angle), torch.sin(angle)], 1) * radius[:, None]
    return pts + 0.08 * torch.randn(n, 2, generator=g)


def _checkerboard(n: int, g: torch.Generator) -> torch.Tensor:
    """Uniform on the 8 black squares of a 4x4 board over [-2, 2]^2."""
    x1 = torch.rand(n, generator=g) * 4 - 2
    col = torch.floor(x1 + 2).long()  # 0..3
    row = 2 * torch.randint(0, 2, (n,), generator=g) + (col % 2)  # rows of the same colour
    x2 = row.float() - 2 + torch.rand(n, generator=g)
    return torch.stack([x1, x2], 1)


def _gaussian_mixture(n: int, g: torch.Generator) -> torch.Tensor:
    """Eight Gaussians (standard deviation 0.15) evenly spaced on a circle of radius 2."""
    k = torch.randint(0, 8, (n,), generator=g).float()
    centres = torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], 1) * 2
    return centres + 0.15 * torch.randn(n, 2, generator=g)


TOY_2D = {"two-moons": _two_moons, "rings": _rings, "checkerboard": _checkerboard, "gaussian-mixture": _gaussian_mixture}


def toy_2d(name: str) -> Dataset:
    """A 2-D toy dataset by name.

    >>> toy_2d("two-moons").train.x.shape
    torch.Size([20000, 1, 1, 2])
    """
    if name not in TOY_2D:
        raise DataError(f"no 2-D toy dataset named {name!r}; choose from {sorted(TOY_2D)}")
    draw = TOY_2D[name]
    train, valid, test = [
        Split(draw(n, torch.Generator().manual_seed(seed)).view(n, 1, 1, 2))
        for n, seed in ((20000, 0), (5000, 1), (5000, 2))
    ]
    return Dataset(name, train, valid, test, num_levels=None, generator=f"{name} v1, 20000/5000/5000 points, seeds 0/1/2")
