"""Fixed permutations of the feature (or channel) dimension, dim 1: volume preserving."""

import torch

from dgmkit._rng import checked_generator
from dgmkit.transforms.base import Bijection, check_width

__all__ = ["Permutation"]


class Permutation(Bijection):
    """z[:, i] = x[:, perm[i]]. ``Permutation.reverse(D)`` or ``Permutation.random(D, generator)``."""

    perm: torch.Tensor
    inv_perm: torch.Tensor

    def __init__(self, perm: torch.Tensor):
        super().__init__()
        given = torch.as_tensor(perm, device="cpu")
        if given.is_floating_point() or given.is_complex() or given.dtype == torch.bool or given.dim() != 1:
            raise ValueError(f"perm must be a 1-D tensor of integers, got {given.dtype} of shape {tuple(given.shape)}")
        perm = given.long()  # (a structure, on the CPU: also where built on meta)
        if sorted(perm.tolist()) != list(range(len(perm))):
            raise ValueError("perm must be a permutation of range(len(perm))")
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    @classmethod
    def reverse(cls, features: int) -> "Permutation":
        return cls(torch.arange(features - 1, -1, -1, device="cpu"))

    @classmethod
    def random(cls, features: int, generator: torch.Generator | None = None) -> "Permutation":
        return cls(torch.randperm(features, generator=checked_generator(generator), device="cpu"))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_width(self, x, len(self.perm))  # (a wider x lost its entries beyond: z (2, 3) of x (2, 5))
        return x[:, self.perm], x.new_zeros(x.shape[0])

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_width(self, z, len(self.perm))
        return z[:, self.inv_perm], z.new_zeros(z.shape[0])
