"""Amortized posterior over V independent categorical latents: q(z|x) = prod_v Cat(z_v; pi_v(x))."""

import torch
from torch import nn
from torch.distributions import Independent

from dgmkit.conditional.base import ConditionalDistribution, width_error
from dgmkit.devices import widened
from dgmkit.distributions.categorical import one_hot_categorical
from dgmkit.errors import whole_at_least

__all__ = ["CategoricalEncoder"]


class CategoricalEncoder(ConditionalDistribution):
    """A network that outputs V * K logits; returns one-hot categoricals, event shape (V, K), batch
    shape the network output's leading dimensions (x of shape (S, B, D): (S, B), as a GaussianEncoder's)."""

    def __init__(self, net: nn.Module, num_vars: int, num_classes: int):
        super().__init__()
        self.net = net
        # (unchecked, num_classes "3" asked the network for "333" logits, and 0 variables for none)
        self.num_vars = whole_at_least("the CategoricalEncoder's num_vars", num_vars, 1)
        self.num_classes = whole_at_least("the CategoricalEncoder's num_classes", num_classes, 2)

    def forward(self, x: torch.Tensor) -> Independent:
        h = self.net(x)
        v, k = self.num_vars, self.num_classes
        if h.shape[-1] != v * k:
            needs = f"a CategoricalEncoder of {v} variables of {k} classes needs {v} * {k} = {v * k} logits"
            raise width_error(h, h.shape[-1], "encoder", "datapoint", needs)
        logits = widened(h).unflatten(-1, (v, k))  # (leading dimensions kept: a view(-1, V, K) merged them)
        return Independent(one_hot_categorical(logits), 1, validate_args=False)
