"""The in-memory dataset: three splits of images and what their values mean."""

from dataclasses import dataclass

import torch

__all__ = ["Split", "Dataset"]


@dataclass(frozen=True)
class Split:
    """Images ``x`` of shape (N, C, H, W) and optional integer labels ``y`` of shape (N,).

    ``x`` holds integers (uint8) for quantized data and float32 for continuous data.
    """

    x: torch.Tensor
    y: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(self.x[index], None if self.y is None else self.y[index])


@dataclass(frozen=True)
class Dataset:
    """Train, validation and test splits.

    ``num_levels`` is the number of distinct values of quantized data (2 for binary images,
    17 for the 8x8 digits, 256 for 8-bit images) and None for continuous data.
    """

    name: str
    train: Split
    valid: Split
    test: Split
    num_levels: int | None

    @property
    def event_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])

    def split(self, name: str) -> Split:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"unknown split {name!r}; choose train, valid or test")
        return getattr(self, name)
