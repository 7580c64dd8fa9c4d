"""Uniform prior over V independent categorical latent variables with K classes each."""

import torch
from torch.distributions import Independent

from dgmkit.distributions.categorical import one_hot_categorical
from dgmkit.errors import whole_at_least
from dgmkit.priors.base import Prior

__all__ = ["UniformCategoricalPrior"]


class UniformCategoricalPrior(Prior):
    """p(z) = prod_v Cat(z_v; 1/K), z_v one-hot: event shape (V, K)."""

    logits: torch.Tensor

    def __init__(self, num_vars: int, num_classes: int):
        super().__init__(num_vars)
        self.num_classes = whole_at_least("num_classes", num_classes, 2)  # (one class: a constant, no latent)
        self.register_buffer("logits", torch.zeros(num_vars, num_classes), persistent=False)

    def forward(self, context: None = None) -> Independent:
        return Independent(one_hot_categorical(self.logits), 1, validate_args=False)
