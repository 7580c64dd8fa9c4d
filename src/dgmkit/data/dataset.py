"""The in-memory dataset: three splits of images and what their values mean."""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from dgmkit.errors import DataError, shown_value

__all__ = ["Split", "Dataset"]

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Split:
    """Images ``x`` of shape (N, C, H, W), optional integer labels ``y`` of shape (N,) and,
    for data made from known generative factors, their value indices ``factors`` (N, K).

    ``x`` holds integers (uint8) for quantized data and float32 for continuous data. Continuous
    data that are each a Gaussian rather than a point (a run's posterior over its latents: the
    data of M1+M2) give its standard deviation per entry in ``x_scale`` (the shape of ``x``),
    beside its mean in ``x``: training may then draw x + x_scale * eps afresh for every batch.
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    factors: torch.Tensor | None = None
    x_scale: torch.Tensor | None = None
    # where the split was drawn from the rows of one file (``from_array``'s seeded 80/10/10): the
    # row of the file of each input (N,), so that a result can name it; None elsewhere
    rows: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.x.ndim < 1:
            raise DataError(f"a split needs a batch of images, got a tensor of shape {tuple(self.x.shape)}")
        if self.y is not None:
            if self.y.ndim != 1 or len(self.y) != len(self.x):
                raise DataError(f"{len(self.x)} images need one label each, got labels of shape {tuple(self.y.shape)}")
            if self.y.is_floating_point() or self.y.is_complex():
                raise DataError(f"labels must be integers, not {self.y.dtype}")
        if self.factors is not None:
            f = self.factors
            if f.ndim != 2 or len(f) != len(self.x) or f.is_floating_point() or f.is_complex() or f.dtype == torch.bool:
                raise DataError(
                    f"{len(self.x)} images need one row of integer factor indices each, "
                    f"got {f.dtype} of shape {tuple(f.shape)}"
                )
        if self.x_scale is not None:
            v = self.x_scale
            if v.shape != self.x.shape or v.dtype != self.x.dtype or not v.is_floating_point():
                raise DataError(
                    f"the spread of continuous data needs one float per entry of float data {tuple(self.x.shape)}, "
                    f"got {v.dtype} of shape {tuple(v.shape)} beside {self.x.dtype} data"
                )
            if not bool(torch.isfinite(v).all()) or bool((v < 0).any()):
                raise DataError("the spread of continuous data (standard deviations) must be finite and >= 0")
        if self.rows is not None and (
            self.rows.shape != (len(self.x),) or self.rows.dtype != torch.int64 or bool((self.rows < 0).any())
        ):
            raise DataError(f"{len(self.x)} inputs need one row index (int64, >= 0) each, got {tuple(self.rows.shape)}")

    def __len__(self) -> int:
        return self.x.shape[0]

    def __repr__(self) -> str:  # (the dataclass's own printed every tensor in full)
        parts = [f"x: {self.x.dtype} {tuple(self.x.shape)}"]
        parts += [f"{n}: {t.dtype} {tuple(t.shape)}" for n, t in (("y", self.y), ("factors", self.factors)) if t is not None]
        return f"Split({', '.join(parts)}{', with x_scale' if self.x_scale is not None else ''})"

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(
            self.x[index],
            None if self.y is None else self.y[index],
            None if self.factors is None else self.factors[index],
            None if self.x_scale is None else self.x_scale[index],
            None if self.rows is None else self.rows[index],
        )


@dataclass(frozen=True)
class Dataset:
    """Train, validation and test splits, none of them empty, of images of the same shape.

    ``num_levels`` is the number of distinct values of quantized data (2 for binary images,
    17 for the 8x8 digits, 256 for 8-bit images) and None for continuous data. Generated data
    (the 2-D densities, the sprites) say what defines them in ``generator``. Data made from
    known generative factors names them (``factor_names``) and gives each one's number of
    values (``factor_sizes``); every split then holds each image's factor indices, and
    ``render`` (where the data are drawn from their factors) makes the images of any factor
    index rows (N, K), as the disentanglement metrics need.
    """

    name: str
    train: Split
    valid: Split
    test: Split
    num_levels: int | None
    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()
    render: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, compare=False, repr=False)
    columns: tuple = ()  # a table's columns (``data.table.Column``): names, kinds, standardization, categories
    generator: str | None = None  # generated data: what defines it (name, generator version, sizes, seeds)
    units: tuple[int, ...] | None = None  # another run's latents: the units kept of them (--active-latents)

    def __repr__(self) -> str:
        levels = "continuous" if self.num_levels is None else f"{self.num_levels} levels"
        sizes = ", ".join(f"{s} {len(self.split(s))}" for s in SPLITS)
        shape = tuple(self.train.x.shape[1:])
        labelled = ", labelled" if self.train.y is not None else ""
        factors = f", factors {', '.join(self.factor_names)}" if self.factor_names else ""
        return f"Dataset({self.name!r}: {sizes} of {shape}, {levels}{labelled}{factors})"

    def __post_init__(self) -> None:
        for s in SPLITS:
            if len(self.split(s)) == 0:
                raise DataError(f"{self.name}: the {s} split is empty")
        shapes = {tuple(self.split(s).x.shape[1:]) for s in SPLITS}
        if len(shapes) > 1:
            raise DataError(f"{self.name}: the splits hold images of different shapes {sorted(shapes)}")
        if len(self.factor_names) != len(self.factor_sizes):
            raise DataError(f"{self.name}: {len(self.factor_names)} factor names for {len(self.factor_sizes)} factor sizes")
        for s in SPLITS:
            f = self.split(s).factors
            if not self.factor_names:
                if f is not None:
                    raise DataError(f"{self.name}: the {s} split holds factors, but the dataset names none")
                continue
            if f is None or f.shape[1] != len(self.factor_names):
                raise DataError(f"{self.name}: the {s} split needs {len(self.factor_names)} factor indices per image")
            if len(f) and (f.min() < 0 or (f >= torch.tensor(self.factor_sizes)).any()):
                raise DataError(f"{self.name}: the {s} split holds factor indices outside 0..size-1")

    def fingerprint(self) -> str:
        """What a run records to recognise its data again, wherever the data are read from: for
        data read from files, SHA-256 of every split's images, labels and factors (values, dtype
        and shape); for generated data (``generator`` set), SHA-256 of what defines them, since
        the last bits of generated floats may differ on another CPU or library build."""
        if self.generator is not None:
            return hashlib.sha256(f"generated:{self.generator}".encode()).hexdigest()
        return self.content_digest()

    def content_digest(self, columns: bool = True) -> str:
        """SHA-256 of every split's images, labels and factors (values, dtype and shape) and, for a
        table (``columns``), of each column's name, kind, standardization and categories: the
        standardized values alone are the same for a column shifted or scaled as a whole."""
        h = hashlib.sha256()
        for s in SPLITS:
            split = self.split(s)
            for t in (split.x, split.y, split.factors):
                if t is None:
                    h.update(b"none;")
                    continue
                t = t.detach().cpu().contiguous()
                h.update(f"{t.dtype}{tuple(t.shape)};".encode())
                h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        if columns and self.columns:
            h.update(
                repr([(c.name, c.kind, float(c.mean), float(c.std), tuple(c.categories)) for c in self.columns]).encode()
            )
        return h.hexdigest()

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    def split(self, name: str) -> Split:
        if not isinstance(name, str) or name not in SPLITS:
            raise DataError(f"unknown split {shown_value(name)}; choose train, valid or test")
        return getattr(self, name)
