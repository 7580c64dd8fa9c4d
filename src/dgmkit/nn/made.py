r"""MADE: masked autoencoder for distribution estimation (Germain et al. 2015, arXiv 1502.03509).

An MLP whose weight matrices are masked so that output d depends only on the inputs that come
before d in an ordering: with input degrees m(d) (the position of d in the ordering, 1..D),
hidden degrees m(k) in [1, D-1], a hidden unit k sees input d iff m(k) >= m(d) and an output
unit for d sees hidden unit k iff m(d) > m(k). A conditional MADE (a context c, as in a
conditional MAF or an IAF step) has hidden degrees in [0, D-1]: units of degree 0 see c and no
input, so that the first output in the order, which sees no input, still depends on c (with
degrees from 1 it saw no hidden unit, and p(x_1 | c) of one step did not depend on c).
"""

from collections.abc import Iterable, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from dgmkit._rng import checked_generator
from dgmkit.errors import sizes_at_least
from dgmkit.nn.mlp import activation

__all__ = ["MaskedLinear", "MADE"]


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask of shape (out, in)."""

    mask: torch.Tensor

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self.register_buffer("mask", torch.ones(out_features, in_features))

    def set_mask(self, mask: torch.Tensor) -> None:
        self.mask.copy_(mask.to(self.mask.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Autoregressive network from D inputs to ``params_per_dim`` outputs per input.

    ``forward(x, c)`` returns (B, params_per_dim, D); entry [:, p, d] depends only on the inputs
    before d in ``order`` (and on the optional context c, which enters the first hidden layer
    through an unmasked linear map; hidden units of degree 0, which see no input, carry it to
    every output, the first in the order included).

    ``order``: a permutation of range(D), the position of each input; None is the natural order.
    ``direct``: also masked connections from the inputs straight to the outputs.
    ``resample(generator)`` draws a new random order and new hidden degrees (order-agnostic
    training); ``set_order`` chooses one.

    >>> made = MADE(5, [32], 2)
    >>> made(torch.zeros(3, 5)).shape
    torch.Size([3, 2, 5])
    """

    order: torch.Tensor

    def __init__(
        self,
        features: int,
        hidden: Sequence[int],
        params_per_dim: int,
        context_features: int = 0,
        act: str = "relu",
        order: torch.Tensor | None = None,
        direct: bool = False,
    ):
        super().__init__()
        if features < 1 or not hidden or min(hidden) < 1:
            raise ValueError(f"MADE needs features >= 1 and positive hidden sizes, got {features} and {list(hidden)}")
        # (whole numbers: a hidden size of 8.5 met torch's "empty(): argument 'size' ... must be tuple of ints")
        sizes_at_least("MADE", {"features": features, **{f"hidden[{i}]": h for i, h in enumerate(hidden)}})
        sizes_at_least("MADE", {"params_per_dim": params_per_dim})
        sizes_at_least("MADE", {"context_features": context_features}, low=0)
        self.features, self.params_per_dim = features, params_per_dim
        sizes = [features, *hidden]
        self.hidden_layers = nn.ModuleList(MaskedLinear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.output_layer = MaskedLinear(hidden[-1], params_per_dim * features)
        self.context = nn.Linear(context_features, hidden[0], bias=False) if context_features else None
        # optional masked input -> output connections (a fully visible sigmoid belief net alongside)
        self.direct = MaskedLinear(features, params_per_dim * features, bias=False) if direct else None
        self.act = activation(act)
        self.register_buffer("order", torch.arange(features))
        self.set_order(torch.arange(features, device="cpu") if order is None else order)

    def set_order(self, order: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Use input ``order`` (order[d] = position of input d, a permutation of range(D)).
        Hidden degrees are spread evenly over [1, D-1] ([0, D-1] with a context), or drawn at
        random with ``generator`` (with a context, each layer's first unit of degree 0: else the first
        output in the order missed c in about half the draws for D = 784).
        The masks are worked out on the CPU (also where the model is built on the meta device)."""
        checked_generator(generator)
        order = torch.as_tensor(order, dtype=torch.long, device="cpu")
        if sorted(order.tolist()) != list(range(self.features)):
            raise ValueError(f"order must be a permutation of range({self.features}), got {order.tolist()}")
        self.order.copy_(order)
        d = self.features
        deg_in = order + 1  # 1..D
        degrees = [deg_in]
        # hidden degrees from 1 (a unit of degree 0 sees no input), but from 0 in a conditional MADE:
        # those units carry the context alone, to the first output too (which sees no input)
        low = 0 if self.context is not None else min(1, d - 1)
        hidden = cast("Iterable[MaskedLinear]", self.hidden_layers)
        for layer in hidden:
            n = layer.out_features
            if generator is None:  # evenly over [1, D-1], both ends: every input reaches the last output
                deg = torch.linspace(low, max(low, d - 1), n, device="cpu").round().long()
            else:
                deg = torch.randint(low, max(low, d - 1) + 1, (n,), generator=generator, device="cpu")
                if self.context is not None:  # a unit of degree 0 in every layer: the chain that takes c to the first output
                    deg[0] = 0
            degrees.append(deg)
        for layer, (a, b) in zip(hidden, zip(degrees[:-1], degrees[1:])):
            layer.set_mask(b[:, None] >= a[None, :])
        out_deg = deg_in.repeat(self.params_per_dim)  # output p * D + d belongs to input d
        self.output_layer.set_mask(out_deg[:, None] > degrees[-1][None, :])
        if self.direct is not None:
            self.direct.set_mask(out_deg[:, None] > deg_in[None, :])

    def resample(self, generator: torch.Generator) -> None:
        """A random order and random hidden degrees (connectivity-agnostic training)."""
        self.set_order(torch.randperm(self.features, generator=checked_generator(generator)), generator=generator)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-1:] != (self.features,):  # (else torch's "mat1 and mat2 shapes cannot be multiplied")
            raise ValueError(f"this MADE of {self.features} inputs takes x (..., {self.features}), got {tuple(x.shape)}")
        if self.context is not None and context is not None and context.shape[-1:] != (self.context.in_features,):
            c = self.context.in_features
            raise ValueError(f"this MADE of {c} context features takes a context (..., {c}), got {tuple(context.shape)}")
        h = x
        for i, layer in enumerate(self.hidden_layers):
            h = layer(h)
            if i == 0 and self.context is not None:
                if context is None:
                    raise ValueError("this MADE is conditional: pass a context")
                h = h + self.context(context)
            h = self.act(h)
        out = self.output_layer(h)
        if self.direct is not None:
            out = out + self.direct(x)
        return out.unflatten(-1, (self.params_per_dim, self.features))  # (B, P, D)
