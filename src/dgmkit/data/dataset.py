"""The in-memory dataset: three splits of images and what their values mean."""

from dataclasses import dataclass

import torch

from dgmkit.errors import DataError

__all__ = ["Split", "Dataset"]

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Split:
    """Images ``x`` of shape (N, C, H, W) and optional integer labels ``y`` of shape (N,).

    ``x`` holds integers (uint8) for quantized data and float32 for continuous data.
    """

    x: torch.Tensor
    y: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.x.ndim < 1:
            raise DataError(f"a split needs a batch of images, got a tensor of shape {tuple(self.x.shape)}")
        if self.y is not None:
            if self.y.ndim != 1 or len(self.y) != len(self.x):
                raise DataError(f"{len(self.x)} images need one label each, got labels of shape {tuple(self.y.shape)}")
            if self.y.is_floating_point() or self.y.is_complex():
                raise DataError(f"labels must be integers, not {self.y.dtype}")

    def __len__(self) -> int:
        return self.x.shape[0]

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(self.x[index], None if self.y is None else self.y[index])


@dataclass(frozen=True)
class Dataset:
    """Train, validation and test splits, none of them empty, of images of the same shape.

    ``num_levels`` is the number of distinct values of quantized data (2 for binary images,
    17 for the 8x8 digits, 256 for 8-bit images) and None for continuous data.
    """

    name: str
    train: Split
    valid: Split
    test: Split
    num_levels: int | None

    def __post_init__(self) -> None:
        for s in SPLITS:
            if len(self.split(s)) == 0:
                raise DataError(f"{self.name}: the {s} split is empty")
        shapes = {tuple(self.split(s).x.shape[1:]) for s in SPLITS}
        if len(shapes) > 1:
            raise DataError(f"{self.name}: the splits hold images of different shapes {sorted(shapes)}")

    @property
    def event_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; choose train, valid or test")
        return getattr(self, name)
