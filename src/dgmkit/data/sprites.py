r"""Sprites: binary images made on the spot from five known generative factors, in the style of
dSprites (Matthey et al. 2017): shape (square, ellipse, heart), scale, orientation and the x
and y position of one white sprite on a black square.

Every combination of factor values is one image (the full grid: 3 x 6 x 10 x 16 x 16 = 46080
images by default), so any factor can be held fixed while the others vary, which is what the
disentanglement metrics need (``evaluation.disentanglement``). Nothing is downloaded: the
images are drawn here, the same on every machine, and ``seed`` only decides which images go to
the train, validation and test splits.

Drawing. A sprite is the set of points (u, v) of its own frame inside its shape's outline,

    square:  max(|u|, |v|) <= 1
    ellipse: u^2 + (v / 0.55)^2 <= 1
    heart:   (X^2 + Y^2 - 1)^3 <= X^2 Y^3,  X = 1.1 u, Y = 0.1 - 1.1 v   (point down at angle 0)

seen in the image at half-size ``0.16 * scale * size`` pixels, turned by the orientation about
its centre. A pixel is white when at least half of its area (4 x 4 sample points) lies inside.
Positions are whole pixels (steps of ``size // 32``), so each image is one of the 180 drawn
(shape, scale, orientation) sprites moved by whole pixels: exact, and fast to make.

As in dSprites, orientation is not fully identifiable from the image: a square or an ellipse
turned by 180 degrees (a square also by 90) looks the same, so only 119 of the 180 drawn sprites
differ at 32x32 (120 at 64x64: at 32x32 the smallest square turned by 36 and by 144 degrees also
comes out as the same pixels), and no code can tell those orientations apart (the best MIG for
orientation is below 1).
"""

import functools
import math
from dataclasses import dataclass

import torch

from dgmkit.data.dataset import Dataset, Split

__all__ = ["SpritesGrid", "SHAPES", "FACTOR_NAMES", "sprites"]

SHAPES = ("square", "ellipse", "heart")
FACTOR_NAMES = ("shape", "scale", "orientation", "x", "y")
_HALF_SIZE = 0.16  # a sprite's half-size at scale 1, as a fraction of the image side
_SUPERSAMPLE = 4


def _inside(shape: str, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    if shape == "square":
        return torch.maximum(u.abs(), v.abs()) <= 1
    if shape == "ellipse":
        return u.square() + (v / 0.55).square() <= 1
    x, y = 1.1 * u, 0.1 - 1.1 * v
    return (x.square() + y.square() - 1).pow(3) <= x.square() * y.pow(3)


@dataclass(frozen=True)
class SpritesGrid:
    """The factors' values and the drawing of any combination of them.

    >>> g = SpritesGrid(size=32)
    >>> g.factor_sizes, len(g)
    ((3, 6, 10, 16, 16), 46080)
    >>> g.render(torch.tensor([[2, 5, 0, 8, 8]])).shape
    torch.Size([1, 1, 32, 32])
    """

    size: int = 32
    scales: int = 6
    orientations: int = 10
    positions: int = 16

    def __post_init__(self):
        if self.size not in (32, 64):
            raise ValueError(f"sprites are drawn at 32x32 or 64x64, not {self.size}")
        if not (2 <= self.scales <= 16 and 1 <= self.orientations <= 64 and 2 <= self.positions <= 16):
            raise ValueError("need 2..16 scales, 1..64 orientations and 2..16 positions")

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        return (len(SHAPES), self.scales, self.orientations, self.positions, self.positions)

    def __len__(self) -> int:
        return math.prod(self.factor_sizes)

    def values(self) -> dict[str, torch.Tensor]:
        """Each factor's values: shape index, scale (0.5..1), orientation (radians in [0, 2 pi)),
        x and y (the sprite's centre as a fraction of the image side)."""
        centre = (self._offsets().double() + self.size / 2) / self.size
        return {
            "shape": torch.arange(len(SHAPES), dtype=torch.float64),
            "scale": torch.linspace(0.5, 1.0, self.scales, dtype=torch.float64),
            "orientation": torch.arange(self.orientations, dtype=torch.float64) * (2 * math.pi / self.orientations),
            "x": centre,
            "y": centre,
        }

    def _offsets(self) -> torch.Tensor:
        """The positions as whole-pixel offsets of the sprite's centre from the image centre."""
        step = self.size // 32
        return (torch.arange(self.positions) - self.positions // 2) * step

    def _templates(self) -> torch.Tensor:
        """Every (shape, scale, orientation) sprite at the image centre: (3, S, O, size, size) uint8."""
        n, k = self.size, _SUPERSAMPLE
        t = (torch.arange(n * k, dtype=torch.float64) + 0.5) / k - n / 2  # sample points, pixels from the centre
        py, px = torch.meshgrid(t, t, indexing="ij")
        vals = self.values()
        out = torch.empty(len(SHAPES), self.scales, self.orientations, n, n, dtype=torch.uint8)
        for i, shape in enumerate(SHAPES):
            for j, scale in enumerate(vals["scale"].tolist()):
                half = _HALF_SIZE * scale * n
                for o, angle in enumerate(vals["orientation"].tolist()):
                    c, s = math.cos(angle), math.sin(angle)
                    u = (c * px + s * py) / half
                    v = (-s * px + c * py) / half
                    cover = _inside(shape, u, v).double().reshape(n, k, n, k).mean((1, 3))
                    out[i, j, o] = (cover >= 0.5).to(torch.uint8)
        return out

    def render(self, factors: torch.Tensor, templates: torch.Tensor | None = None) -> torch.Tensor:
        """The images (N, 1, size, size) uint8 of factor index rows (N, 5)."""
        factors = torch.as_tensor(factors)
        if factors.ndim != 2 or factors.shape[1] != len(FACTOR_NAMES) or factors.is_floating_point():
            raise ValueError(f"need integer factor indices of shape (N, {len(FACTOR_NAMES)}), got {tuple(factors.shape)}")
        sizes = torch.tensor(self.factor_sizes)
        if len(factors) and ((factors < 0).any() or (factors >= sizes).any()):
            raise ValueError(f"factor indices must lie in 0..size-1 for sizes {self.factor_sizes}")
        tpl = self._templates() if templates is None else templates
        flat = tpl.reshape(-1, self.size, self.size)
        which = (factors[:, 0] * self.scales + factors[:, 1]) * self.orientations + factors[:, 2]
        off = self._offsets()
        dx, dy = off[factors[:, 3]], off[factors[:, 4]]
        ar = torch.arange(self.size)
        rows = (ar[None, :] - dy[:, None]) % self.size  # the offsets keep every sprite inside the image
        cols = (ar[None, :] - dx[:, None]) % self.size
        return flat[which[:, None, None], rows[:, :, None], cols[:, None, :]].unsqueeze(1)

    def all_factors(self) -> torch.Tensor:
        """Every combination of factor indices, (len(self), 5), in row-major order."""
        grids = torch.meshgrid(*(torch.arange(s) for s in self.factor_sizes), indexing="ij")
        return torch.stack([g.reshape(-1) for g in grids], 1)


def sprites(size: int = 32, seed: int = 0, valid_fraction: float = 0.1, test_fraction: float = 0.1) -> Dataset:
    """The full grid of sprites (``SpritesGrid(size)``), split at random by ``seed``: 80% train,
    10% validation, 10% test by default. Labels ``y`` are the shapes; ``factors`` every
    image's five factor indices."""
    for name, f in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0 < f < 1:  # (NaN too)
            raise ValueError(f"{name} must lie strictly between 0 and 1, got {f!r}")
    if not valid_fraction + test_fraction < 1:
        raise ValueError(
            f"valid_fraction + test_fraction must leave a training split: {valid_fraction!r} + {test_fraction!r}"
        )
    grid = SpritesGrid(size=size)
    factors = grid.all_factors()
    templates = grid._templates()
    x = grid.render(factors, templates)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_valid, n_test = round(valid_fraction * len(x)), round(test_fraction * len(x))
    parts = perm[n_valid + n_test :], perm[:n_valid], perm[n_valid : n_valid + n_test]
    train, valid, test = [Split(x[p], factors[p, 0].clone(), factors[p]) for p in parts]
    name = "sprites" if size == 32 else f"sprites-{size}"
    return Dataset(
        name,
        train,
        valid,
        test,
        num_levels=2,
        factor_names=FACTOR_NAMES,
        factor_sizes=grid.factor_sizes,
        render=functools.partial(grid.render, templates=templates),
        generator=f"{name} v1, seed {seed}, valid {valid_fraction!r}, test {test_fraction!r}",
    )
