r"""The bijection interface and its compositions.

A bijection maps data x to base variables z (the normalizing direction) and back:

    forward(x, c) -> (z, log|det dz/dx|)        inverse(z, c) -> (x, log|det dx/dz|)

so that a flow's density is log p(x) = log p_Z(forward(x)) + ladj (the change of variables).
Tensors are (B, *event); the log|det J| (``ladj``) is one value per example, shape (B,).
``c`` is an optional context (B, *) for conditional flows (for example an IAF posterior).
"""

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import cast

import torch
from torch import nn
from torch.distributions import constraints

__all__ = ["Bijection", "Compose", "Inverse", "check_context", "check_event_shape", "check_width", "sum_except_batch"]


def sum_except_batch(t: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B,): the sum over each datapoint's entries (0 for an empty batch's none)."""
    return t.flatten(1).sum(-1) if t.dim() > 1 else t


def check_width(owner: nn.Module, x: torch.Tensor, width: int) -> None:
    """Refuses x whose dim 1 is not ``width``: an index of it (a permutation, a coupling's mask)
    would silently drop the entries beyond, or fail in torch's words on too few."""
    if x.dim() < 2 or x.shape[1] != width:
        raise ValueError(
            f"{type(owner).__name__} of {width} features (dim 1) was given x of shape {tuple(x.shape)}; "
            f"it takes (B, {width}, ...)"
        )


def check_event_shape(owner: str, x: torch.Tensor, event: tuple[int, ...], what: str = "x") -> None:
    """Refuses x not of shape (B, *event), naming ``owner`` (a description of the step) and ``what`` x
    is: a broadcast against the step's parameters, or torch's words further in, came out instead."""
    if x.dim() < 1 or tuple(x.shape[1:]) != tuple(event):
        raise ValueError(f"{owner} takes {what} of shape (B, {', '.join(map(str, event))}), got {tuple(x.shape)}")


def check_context(owner: nn.Module, x: torch.Tensor, context: torch.Tensor | None, features: int) -> torch.Tensor:
    """The context of a conditional step: a row of ``features`` for each row of x. (A MADE broadcast one
    row over x, and a context of 3 rows made z of 3 rows from an x of 1; a coupling failed in torch's words.)"""
    name = type(owner).__name__
    if context is None:
        raise ValueError(f"this {name} is conditional: pass a context")
    if context.shape != (len(x), features):
        raise ValueError(
            f"{name} of {features} context features was given a context of shape {tuple(context.shape)} for x of "
            f"{len(x)} rows; it takes one row of {features} a datapoint, ({len(x)}, {features})"
        )
    return context


class Bijection(nn.Module, ABC):
    """An invertible map with a tractable log|det J| (see the module docstring)."""

    def passes(self, inverse: bool = False) -> int:
        """The cost of one direction (``inverse``: z -> x) in passes over the batch, one after the
        other: 1 for a single pass; an autoregressive layer's sequential direction takes one a
        feature. (What scoring many points costs: ``evaluation.diagnostics``'s budget of them.)"""
        return 1

    @property
    def domain(self) -> constraints.Constraint | None:
        """The values an entry of x may take where the map is defined (``torch.distributions``
        constraints); None: the real line."""
        return None

    @abstractmethod
    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]: ...

    @abstractmethod
    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]: ...


class Compose(Bijection):
    """Bijections applied in order on the way to z (and in reverse order on the way back)."""

    def __init__(self, bijections: Iterable[Bijection]):
        super().__init__()
        self.steps = nn.ModuleList(bijections)

    @property
    def domain(self) -> constraints.Constraint | None:
        """The first step's: the data meet it first."""
        return cast(Bijection, self.steps[0]).domain if len(self.steps) else None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        ladj = x.new_zeros(x.shape[0])
        for step in self.steps:
            x, step_ladj = step(x, context)
            ladj = ladj + step_ladj
        return x, ladj

    def passes(self, inverse: bool = False) -> int:
        return sum(cast(Bijection, step).passes(inverse) for step in self.steps)

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        ladj = z.new_zeros(z.shape[0])
        for step in reversed(self.steps):
            z, step_ladj = cast(Bijection, step).inverse(z, context)
            ladj = ladj + step_ladj
        return z, ladj


class Inverse(Bijection):
    """The inverse of a bijection: swaps its two directions. IAF is ``Inverse(MAF layer)``:
    sampling becomes the single pass and density evaluation the sequential one."""

    def __init__(self, bijection: Bijection):
        super().__init__()
        self.bijection = bijection

    def passes(self, inverse: bool = False) -> int:
        return self.bijection.passes(not inverse)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.bijection.inverse(x, context)

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.bijection(z, context)
