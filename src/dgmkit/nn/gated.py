"""Gated dense and convolutional layers (Dauphin et al. 2017), as in the VampPrior reference
networks, and the multi-input networks of its two-level HVAE."""

from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import nn

from dgmkit.errors import sizes_at_least

__all__ = ["GatedDense", "GatedMLP", "GatedBranches", "GatedConv2d", "ImageBranch"]


class GatedDense(nn.Module):
    """h = (W x + b) * sigmoid(V x + c), computed with one matrix product."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        sizes_at_least("GatedDense", {"in_features": in_features, "out_features": out_features})
        self.out_features = out_features
        self.linear = nn.Linear(in_features, 2 * out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, g = self.linear(x).split(self.out_features, dim=-1)
        return h * torch.sigmoid(g)


class GatedConv2d(nn.Module):
    """h = conv_h(x) * sigmoid(conv_g(x)), both convolutions in one."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.cout = cout
        self.conv = nn.Conv2d(cin, 2 * cout, kernel, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, g = self.conv(x).split(self.cout, dim=1)
        return h * torch.sigmoid(g)


class ImageBranch(nn.Module):
    """Flat images (..., C*H*W) -> a network on (N, C, H, W) -> flat features (..., F): a
    convolutional branch that reads the same flat inputs as a dense one."""

    def __init__(self, net: nn.Module, event_shape: Sequence[int], out_features: int):
        super().__init__()
        self.net = net
        self.event_shape = tuple(int(v) for v in event_shape)
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        h = self.net(x.reshape(-1, *self.event_shape))
        return h.reshape(*lead, -1)


class GatedMLP(nn.Sequential):
    """Gated dense layers followed by one affine output layer.

    >>> GatedMLP(784, [300, 300], 80)(torch.zeros(2, 784)).shape
    torch.Size([2, 80])
    """

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int):
        sizes = [in_features, *hidden]
        sizes_at_least("GatedMLP", {"out_features": out_features})
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

    def __init__(
        self,
        in_sizes: Sequence[int],
        width: int,
        out_features: int,
        branches: Sequence[nn.Module | None] | None = None,
        out: nn.Module | None = None,
    ):
        """``branches``: a module per input in place of its gated layer (None: the gated layer),
        each with an ``out_features``; ``out``: the output module in place of the affine layer."""
        super().__init__()
        self.in_sizes = [int(s) for s in in_sizes]
        own = list(branches) if branches is not None else [None] * len(self.in_sizes)
        if len(own) != len(self.in_sizes):
            raise ValueError("one branch per input")
        self.branches = nn.ModuleList(GatedDense(s, width) if b is None else b for s, b in zip(self.in_sizes, own))
        self.joint = GatedDense(sum(cast(int, b.out_features) for b in self.branches), width)
        self.out = nn.Linear(width, out_features) if out is None else out
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
