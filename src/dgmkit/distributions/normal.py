"""Diagonal Gaussian, the usual q(z|x) and p(z), and its KL per latent dimension."""

import torch
from torch.distributions import Distribution, Independent, Normal, kl_divergence

__all__ = ["diagonal_normal", "kl_per_dimension"]


def diagonal_normal(loc: torch.Tensor, scale: torch.Tensor) -> Independent:
    """N(loc, diag(scale^2)) over the last dimension; ``log_prob`` sums it.

    The closed-form KL between two of these comes from torch's KL registry.
    """
    return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)


def kl_per_dimension(q: Distribution, p: Distribution) -> torch.Tensor | None:
    """KL(q || p) for each latent dimension, shape (..., M), where both factorize over
    dimensions and a closed form is registered; otherwise None (no per-dimension split exists).
    """
    if not (isinstance(q, Independent) and isinstance(p, Independent)):
        return None
    try:
        return kl_divergence(q.base_dist, p.base_dist)
    except NotImplementedError:
        return None
