"""Multi-layer perceptron."""

from collections.abc import Sequence

import torch
from torch import nn

from dgmkit.errors import sizes_at_least

__all__ = ["MLP", "activation"]

_ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}


def activation(name: str, inplace: bool = False) -> nn.Module:
    """Return a fresh activation module by name (relu, elu, tanh, gelu, silu)."""
    if name == "relu" and inplace:
        return nn.ReLU(inplace=True)
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(_ACTIVATIONS)}") from None


class MLP(nn.Sequential):
    """Affine layers with an activation between them and none after the last.

    >>> MLP(784, [512, 256], 64)(torch.zeros(3, 784)).shape
    torch.Size([3, 64])
    """

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int, act: str = "relu"):
        sizes = [in_features, *hidden, out_features]
        sizes_at_least(
            "MLP", dict(zip(["in_features", *(f"hidden[{i}]" for i in range(len(hidden))), "out_features"], sizes))
        )
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                # in place: an affine layer's backward needs its input, not its output
                layers.append(activation(act, inplace=True))
        super().__init__(*layers)
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        return super().forward(x)
