"""The Trainer's batch source: the global training batches of an epoch, drawn from one seeded
generator in a fixed order (so that a resumed run draws what the uninterrupted one draws, and
every data-parallel rank draws the same global batch).

Per epoch: a permutation of the rows; per step: the rows of the step, then (semi-supervised
training) ``labelled_batch`` more rows drawn from the labelled ones, then (Ren et al.'s
background model) mutated pixels, then (data given as Gaussians: M1+M2's latents) a draw
x + scale * eps, then the data transform's noise (binarization, dequantization). Labels come
with the rows (-1: hidden) where the objective takes them.
"""

from collections.abc import Iterator

import torch

from dgmkit.data import DataTransform
from dgmkit.data.labels import labels_shown
from dgmkit.data.mutation import mutate
from dgmkit.errors import ConfigError

__all__ = ["BatchSource", "in_precision"]


class BatchSource:
    """Global batches of ``batch_size`` rows of ``x`` (and ``y``), ``steps`` per epoch."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None,
        transform: DataTransform,
        generator: torch.Generator,
        batch_size: int,
        steps: int,
        *,
        scale: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        self.x, self.y, self.transform, self.generator = x, y, transform, generator
        self.dtype = dtype  # the model's floating-point precision, which its batches are given in
        self.batch_size, self.steps = batch_size, steps
        self.labelled = None if y is None else torch.nonzero(labels_shown(y)).flatten()  # (N_l,) rows with a label
        self.mutation_rate, self.labelled_batch = 0.0, 0
        if scale is not None and scale.shape != x.shape:
            raise ConfigError(f"the data's spread has shape {tuple(scale.shape)}, the data {tuple(x.shape)}")
        self.scale = scale  # (N, *event) standard deviations: each batch draws x + scale * eps

    @property
    def labelled_count(self) -> int:
        """How many training rows hold a label."""
        return 0 if self.labelled is None else len(self.labelled)

    def mutate(self, rate: float) -> None:
        """Replace each pixel of a batch by a random level with probability ``rate``."""
        if rate > 0 and self.transform.num_levels is None:
            raise ConfigError("mutation replaces pixels by random levels: it needs quantized data, not continuous ones")
        self.mutation_rate = rate

    def add_labelled(self, rows: int) -> None:
        """Add ``rows`` rows drawn (with replacement) from the labelled ones to every batch."""
        if rows and not self.labelled_count:
            raise ConfigError("labelled rows are drawn into every batch, and no training label is kept")
        self.labelled_batch = rows

    @property
    def rows_per_epoch(self) -> int:
        """Rows an epoch trains on, the drawn labelled ones included."""
        return min(len(self.x), self.steps * self.batch_size) + self.steps * self.labelled_batch

    def epoch(self, perm: torch.Tensor | None = None, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """The epoch's (x, y) global batches, x transformed as the model scores it; or, to go on
        with an epoch that stopped after ``start`` steps, its permutation ``perm`` and the
        batches from step ``start`` on (the generator must hold the state it had then)."""
        g, bs = self.generator, self.batch_size
        if perm is None:
            perm = torch.randperm(len(self.x), generator=g, device=self.x.device)
        self.perm = perm  # the current epoch's order (a checkpoint within the epoch keeps it)
        for i in range(start, self.steps):
            idx = perm[i * bs : (i + 1) * bs]
            if self.labelled_batch:
                assert self.labelled is not None  # add_labelled refused rows without labelled ones
                pick = torch.randint(len(self.labelled), (self.labelled_batch,), generator=g, device=self.x.device)
                idx = torch.cat([idx, self.labelled[pick]])
            x = self.x[idx]
            if self.mutation_rate > 0:
                assert self.transform.num_levels is not None  # mutate refused continuous data
                x = mutate(x, self.mutation_rate, self.transform.num_levels, g)
            if self.scale is not None:
                x = x + self.scale[idx] * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
            yield in_precision(self.transform(x, g), self.dtype), None if self.y is None else self.y[idx]


def in_precision(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Floating-point data in ``dtype`` (a model made float64 trains on the transforms' float32
    values in float64); integer data as they are."""
    return x.to(dtype) if x.is_floating_point() and x.dtype != dtype else x
