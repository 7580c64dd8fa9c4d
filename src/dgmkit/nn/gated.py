"""Gated dense layers (Dauphin et al. 2017), as in the VampPrior reference networks."""

from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["GatedDense", "GatedMLP", "GatedBranches"]


class GatedDense(nn.Module):
    """h = (W x + b) * sigmoid(V x + c), computed with one matrix product."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.out_features = out_features
        self.linear = nn.Linear(in_features, 2 * out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, g = self.linear(x).split(self.out_features, dim=-1)
        return h * torch.sigmoid(g)


class GatedMLP(nn.Sequential):
    """Gated dense layers followed by one affine output layer.

    >>> GatedMLP(784, [300, 300], 80)(torch.zeros(2, 784)).shape
    torch.Size([2, 80])
    """

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int):
        sizes = [in_features, *hidden]
        layers = [GatedDense(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        super().__init__(*layers, nn.Linear(sizes[-1], out_features))
        self.in_features = in_features
        self.out_features = out_features


class GatedBranches(nn.Module):
    """Several inputs, concatenated along the last dimension with sizes ``in_sizes``: one gated
    layer of ``width`` units per input, their outputs joined by one more gated layer, then an
    affine output layer (the two-input networks of Tomczak & Welling's two-level HVAE,
    q(z1 | x, z2) and p(x | z1, z2)).

    >>> GatedBranches([784, 40], 300, 80)(torch.zeros(2, 824)).shape
    torch.Size([2, 80])
    """

    def __init__(self, in_sizes: Sequence[int], width: int, out_features: int):
        super().__init__()
        self.in_sizes = [int(s) for s in in_sizes]
        self.branches = nn.ModuleList(GatedDense(s, width) for s in self.in_sizes)
        self.joint = GatedDense(len(self.in_sizes) * width, width)
        self.out = nn.Linear(width, out_features)
        self.in_features = sum(self.in_sizes)
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.split(self.in_sizes, dim=-1)
        h = torch.cat([branch(p) for branch, p in zip(self.branches, parts)], -1)
        return self.out(self.joint(h))

    def partial(self, first: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The network with its first input fixed: ``partial(a)(b)`` is ``forward([a, b])``, with
        the first branch computed once for any number of leading sample dimensions of b."""
        h0 = self.branches[0](first)

        def rest(others: torch.Tensor) -> torch.Tensor:
            parts = others.split(self.in_sizes[1:], dim=-1)
            hs = [h0.expand(*others.shape[:-1], h0.shape[-1]), *(b(p) for b, p in zip(self.branches[1:], parts))]
            return self.out(self.joint(torch.cat(hs, -1)))

        return rest
